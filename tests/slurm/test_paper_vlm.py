"""paper-vlm: the paper's VLM grid, read from VLAB_DATA / VLAB_MODELS, refused without them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlab.cli import main
from vlab.config import from_dict
from vlab.errors import VlabError
from vlab.models.vlm.data.paper_data import paper_benchmarks, paper_data
from vlab.models.vlm.data.sources import SourceConfig
from vlab.slurm.spec import count_runs, expand, load_spec
from vlab.slurm.specs import paper_vlm

MODEL_TYPES = {"pythia": "gpt_neox", "mamba": "mamba"}


def fake_layout(tmp_path: Path, monkeypatch) -> Path:
    """Empty annotation files and image folders where paper_data and paper_benchmarks look,
    and checkpoint folders whose config.json names the right model type: all that expanding
    the spec checks (nothing is trained)."""
    data, models = tmp_path / "data", tmp_path / "models"
    spec = paper_data(data)
    sources = [s for part in ("stage1", "stage2", "heldout") for s in spec[part]["sources"]]
    for source in sources + paper_benchmarks(data):
        config = from_dict(SourceConfig, source)
        for path in config.files():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        for folder in config.image_dirs():
            folder.mkdir(parents=True, exist_ok=True)
    for arch, _, folder, _ in paper_vlm.PAIRS:
        (models / folder).mkdir(parents=True)
        (models / folder / "config.json").write_text(json.dumps({"model_type": MODEL_TYPES[arch]}))
        (models / folder / "tokenizer.json").touch()
    (models / paper_vlm.ENCODER).mkdir(parents=True)
    (models / paper_vlm.ENCODER / "open_clip_model.safetensors").touch()
    monkeypatch.setenv("VLAB_DATA", str(data))
    monkeypatch.setenv("VLAB_MODELS", str(models))
    return models


def test_without_its_paths_the_spec_says_what_to_set(monkeypatch, capsys):
    monkeypatch.delenv("VLAB_DATA", raising=False)
    monkeypatch.setenv("VLAB_MODELS", "/models")
    with pytest.raises(VlabError, match="set VLAB_DATA") as err:
        load_spec("paper-vlm")
    assert "\n" not in str(err.value)
    assert main(["sweep", "list"]) == 0  # the listing still works, and says it
    assert "paper-vlm" in capsys.readouterr().out


def test_each_run_gets_its_own_pretrained_lm_and_tokenizer(tmp_path, monkeypatch):
    models = fake_layout(tmp_path, monkeypatch)
    spec = load_spec("paper-vlm")
    runs = expand(spec)
    assert len(runs) == count_runs(spec) == 12
    pairs = set()
    for run in runs:
        lm = run.config["model"]["lm"]
        folder = Path(lm["pretrained"])
        assert folder.parent == models and run.config["data"]["tokenizer"] == str(folder)
        assert folder.name.startswith(lm["arch"]) and lm["preset"] in folder.name
        assert run.config["model"]["vision"]["kind"] == "eva02"
        pairs.add((lm["arch"], lm["preset"], run.config["model"]["sequence"]["ordering"]))
    assert {(a, p) for a, p, _ in pairs} == {(a, p) for a, p, _, _ in paper_vlm.PAIRS}
    assert {o for *_, o in pairs} == {"task_agnostic", "task_aware"}
    # every run ends with the paper's benchmark suite, every benchmark named in its config
    names = [s.get("name") or s["reader"] for s in paper_benchmarks(tmp_path / "data")]
    for run in runs:
        suite = run.config["benchmarks"]
        assert (suite["suite"], suite["names"]) == ("shakeup", names)
        assert suite["data_root"] == str(tmp_path / "data")


def test_a_benchmark_missing_from_the_data_root_is_one_line_naming_it(tmp_path, monkeypatch):
    fake_layout(tmp_path, monkeypatch)
    (tmp_path / "data" / "nocaps" / "nocaps_val_4500_captions.json").unlink()
    with pytest.raises(VlabError, match="benchmarks.data_root") as err:
        expand(load_spec("paper-vlm"))
    message = str(err.value)
    assert "\n" not in message and "lacks 1 benchmark(s) the run asks for: nocaps (" in message
    # asking for the others only, the spec expands
    spec = load_spec("paper-vlm")
    names = [s.get("name") or s["reader"] for s in paper_benchmarks(tmp_path / "data")]
    spec.base["benchmarks"]["names"] = [n for n in names if n != "nocaps"]
    assert len(expand(spec)) == 12


def test_a_checkpoint_of_the_wrong_arch_is_refused_before_work(tmp_path, monkeypatch):
    models = fake_layout(tmp_path, monkeypatch)
    (models / "mamba-1.4b-hf" / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(VlabError, match="model.lm.pretrained"):
        expand(load_spec("paper-vlm"))


def test_paper_grounding_trains_pretrained_arms_or_says_so_and_random_weights_only_when_asked(
    tmp_path, monkeypatch, capsys
):
    """No 1.4B model is trained from random weights by accident: without VLAB_MODELS the spec
    is one line saying what to set; VLAB_RANDOM_WEIGHTS=1 asks for the bare shapes."""
    from vlab.slurm.specs import paper_grounding

    monkeypatch.delenv("VLAB_MODELS", raising=False)
    monkeypatch.delenv("VLAB_RANDOM_WEIGHTS", raising=False)
    with pytest.raises(VlabError, match="set VLAB_MODELS.*VLAB_RANDOM_WEIGHTS=1") as err:
        load_spec("paper-grounding")
    assert "\n" not in str(err.value)
    assert main(["sweep", "show", "paper-grounding"]) == 2
    assert "VLAB_MODELS" in capsys.readouterr().err
    models = tmp_path / "models"
    for arch, folder in paper_grounding.CHECKPOINTS.items():
        (models / folder).mkdir(parents=True)
        config = {"model_type": MODEL_TYPES[arch], "vocab_size": 50_280}
        (models / folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("VLAB_MODELS", str(models))
    runs = expand(load_spec("paper-grounding"))
    assert len(runs) == 108
    for run in runs:
        model = run.config["model"]
        assert model["pretrained"] == str(models / paper_grounding.CHECKPOINTS[model["arch"]])
    monkeypatch.delenv("VLAB_MODELS")
    monkeypatch.setenv("VLAB_RANDOM_WEIGHTS", "1")
    runs = expand(load_spec("paper-grounding"))
    assert len(runs) == 108 and {r.config["model"]["pretrained"] for r in runs} == {None}


def test_each_run_asks_for_four_gpus_and_its_batches_split_over_them(tmp_path, monkeypatch):
    from vlab.experiment import experiment
    from vlab.slurm.options import SlurmOptions

    fake_layout(tmp_path, monkeypatch)
    spec = load_spec("paper-vlm")
    options = SlurmOptions(**spec.slurm)
    assert (options.ranks, options.gpus) == (4, 4)  # as the SHAKEUP runs were trained
    for run in expand(spec):
        experiment("vlm").check_ranks(run.config, options.ranks)  # raises if a batch does not
