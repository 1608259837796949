"""Finetuning a stage-2 VLM on one task at a higher resolution (SHAKEUP Figure 3).

Known answers: the grid at R px with 8 px patches is (R / 8)^2 visual tokens; max_length grows
by exactly the image segment's growth; at the resolution a model was trained at, the
interpolated encoder gives its features to the last bit; EVA-02's position embeddings at a
new grid are the bicubic resampling of the trained ones; a killed finetune resumes to the
metrics of an uninterrupted one; the held-out results are the last evaluation's numbers.
"""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.cli import vlab
from vlab.config import deep_merge, to_dict
from vlab.errors import ConfigError, VlabError
from vlab.experiment import experiment
from vlab.fileio import read_jsonl
from vlab.models.vlm.batch import batch_of, pixel_values
from vlab.models.vlm.data.run_data import ShapesData
from vlab.models.vlm.model import build_vlm
from vlab.models.vlm.resolution import at_resolution, load_at_resolution
from vlab.rundir import RunDir
from vlab.vlm.config import config_from
from vlab.vlm.finetune import (
    finetune,
    finetune_config,
    finetune_model,
    paper_sources,
    source_tokenizer,
)
from vlab.vlm.train import train_vlm

# the smallest source run that trains in seconds: 2 + 10 steps on the tiny-shapes preset
# (64 px scenes, 8 px patches: an 8 x 8 grid, max_length 256)
SOURCE = {
    "stage1": {"steps": 2, "eval_every": 2, "batch_size": 4, "threads": 1, "eval_at_start": False},
    "stage2": {
        "steps": 10,
        "eval_every": 10,
        "batch_size": 8,
        "threads": 1,
        "eval_at_start": False,
    },
    "data": {"n_heldout": 6},
    "max_new_tokens": 8,
}
TRAIN = {"steps": 12, "batch_size": 8, "lr": 2e-3, "threads": 1, "eval_every": 6}


def quiet(*_):
    pass


def train_source(out: Path, arch: str = "mamba", overrides: dict | None = None) -> Path:
    """A finished tiny ``vlab vlm train`` run at ``out`` (both stages)."""
    cfg = config_from("tiny-shapes", arch, deep_merge(SOURCE, overrides or {}))
    results = train_vlm(cfg, out, progress=False, log=quiet)
    assert all(r is None or r.state == "done" for r in results.values())
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return train_source(tmp_path_factory.mktemp("source") / "run")


def ft_config(source: Path, **changes):
    base = {"source": str(source), "task": "vqa", "resolution": 96, "train": TRAIN}
    return finetune_config(deep_merge({**base, "n_heldout": 8}, changes))


def stamps(root: Path) -> dict:
    """Modification times of a run's files (not the writer lock a claim takes and drops)."""
    skip = ("writer.lock", ".guard")
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def finished(source, tmp_path_factory) -> tuple[Path, dict]:
    """One finished finetune at 96 px on the shapes VQA task, and its results."""
    out = tmp_path_factory.mktemp("finetune") / "vqa"
    before = stamps(source)
    results = finetune(ft_config(source), out, progress=False, log=quiet)
    assert stamps(source) == before  # the source run is only read
    return out, results


def test_a_finetune_at_higher_resolution_sees_more_visual_tokens_and_its_loss_falls(
    source, finished
):
    out, results = finished
    status = json.loads((out / "status.json").read_text())
    stage2 = json.loads((source / "stage2" / "status.json").read_text())
    assert status["state"] == "done" and (status["step"], status["steps"]) == (12, 12)
    assert json.loads((out / "run.json").read_text()) == {"kind": "vlm-finetune"}
    assert json.loads((source / "run.json").read_text()) == {"kind": "vlm"}
    assert stage2["state_size"]["tokens"] == (64 // 8) ** 2 == 64
    assert status["visual_tokens"] == (96 // 8) ** 2 == 144 and status["grid"] == [12, 12]
    # the image segment grows from 8 x (8 + 1) + 2 to 12 x (12 + 1) + 2 tokens (one row break
    # per row, start and end markers, each one token): max_length grows by as much
    cfg = ft_config(source)
    tok = source_tokenizer(cfg)
    marker, row_break = (tok.encode(m, add_special_tokens=False) for m in ("##", "&&"))
    assert len(marker) == len(row_break) == 1
    assert status["max_length"] == 256 + (12 * 13 + 2) - (8 * 9 + 2) == 340
    # what the model reads: the task alone, rendered at 96 px, 144 patch slots per sequence
    run_cfg, model = finetune_model(cfg, tok, log=quiet)
    samples = ShapesData(run_cfg.data).train(0, 4)
    assert {s.task for s in samples} == {"vqa"} and {s.image.size for s in samples} == {(96, 96)}
    batch = batch_of(samples, model, tok, run_cfg.model.sequence)
    assert (batch["patch_index"] >= 0).sum(1).tolist() == [144] * 4
    assert pixel_values(batch)[0].shape == (4, 3, 96, 96)
    ids = batch["input_ids"]
    assert (ids == row_break[0]).sum(1).tolist() == [12] * 4
    assert (ids == marker[0]).sum(1).tolist() == [2] * 4
    # step 0 scores the stage-2 weights at 96 px; finetuning on the task lowers the loss
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 6, 12]
    assert metrics[-1]["eval_loss"] < 0.6 * metrics[0]["eval_loss"]
    assert metrics[-1]["loss"] < metrics[1]["loss"]
    # the held-out results: the task's benchmark, the final weights' last evaluation
    assert results["sources"] == metrics[-1]["sources"] and list(results["sources"]) == [
        "shapes/vqa"
    ]
    assert results["eval_loss"] == metrics[-1]["eval_loss"]
    assert (results["examples"], results["grid"], results["step"]) == (8, [12, 12], 12)
    saved = json.loads((out / "eval" / "heldout" / "results.json").read_text())
    assert saved == results
    config = json.loads((out / "config.json").read_text())
    assert config == to_dict(cfg) and config["arch"] == "mamba"
    assert config["train"]["warmup_ratio"] == 0.03  # the paper's recipe under what was given


def test_a_second_call_is_a_no_op_and_another_config_is_refused(source, finished):
    out, results = finished
    before = stamps(out)
    assert finetune(ft_config(source), out, progress=False, log=quiet) == results
    assert stamps(out) == before
    with pytest.raises(VlabError, match="different config.*train.lr"):
        finetune(ft_config(source, train={"lr": 1e-3}), out, progress=False, log=quiet)


def test_at_the_trained_resolution_the_finetune_starts_from_the_stage2_model(source):
    cfg = ft_config(source, resolution=64)
    tok = source_tokenizer(cfg)
    run_cfg, model = finetune_model(cfg, tok, log=quiet)
    assert run_cfg.model.sequence.max_length == 256  # the image did not grow
    stage2 = build_vlm(cfg.source_config.model, vocab_size=len(tok), seed=0)
    stage2.load_state_dict(RunDir(source / "stage2").load_checkpoint()["model"])
    samples = ShapesData(run_cfg.data).heldout[:3]
    batch = batch_of(samples, model, tok, run_cfg.model.sequence)
    args = (batch["input_ids"], batch["patch_index"], pixel_values(batch))
    model.eval(), stage2.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(*args)["logits"], stage2(*args)["logits"], rtol=0, atol=0)


def _pixels(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(size))


@pytest.mark.parametrize("kind", ["eva02", "clip"])
def test_position_embeddings_are_interpolated_and_exact_at_the_trained_resolution(kind):
    vision = {"kind": kind, "preset": "tiny", "image_size": 64}  # native 32 px, 8 px patches
    cfg = config_from("tiny-shapes", "pythia", {"model": {"vision": vision}}).model
    trained = build_vlm(cfg, vocab_size=300, seed=1).eval()
    state = trained.state_dict()
    same = build_vlm(at_resolution(cfg, 64), vocab_size=300, seed=7).eval()
    load_at_resolution(same, state)
    x = _pixels(64)
    with torch.no_grad():
        torch.testing.assert_close(same.encoders[0](x), trained.encoders[0](x), rtol=0, atol=0)
        torch.testing.assert_close(
            same.visual_tokens([x]), trained.visual_tokens([x]), rtol=0, atol=0
        )
    big = build_vlm(at_resolution(cfg, 96), vocab_size=300, seed=7).eval()
    load_at_resolution(big, state)
    assert big.grid == (12, 12) and big.num_visual_tokens == 144
    x96 = _pixels(96)
    with torch.no_grad():
        feats = big.encoders[0](x96)
    assert feats.shape == (2, 12, 12, 32)
    resized = {"encoders.0.model.pos_embed"} if kind == "eva02" else set()
    for name, value in big.state_dict().items():
        if name not in resized:
            assert torch.equal(value, state[name]), name
    if kind == "eva02":  # absolute embeddings resampled once: class token kept, grid bicubic
        old, new = state["encoders.0.model.pos_embed"], big.encoders[0].model.pos_embed
        assert old.shape == (1, 1 + 64, 32) and new.shape == (1, 1 + 144, 32)
        torch.testing.assert_close(new[:, :1], old[:, :1], rtol=0, atol=0)
        grid = old[:, 1:].reshape(1, 8, 8, 32).permute(0, 3, 1, 2)
        expected = F.interpolate(grid, size=(12, 12), mode="bicubic", antialias=True)
        torch.testing.assert_close(new[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 144, 32))
    else:  # the Hugging Face tower interpolates its native 4 x 4 table in every forward
        tower = big.encoders[0].model
        with torch.no_grad():
            raw = tower(pixel_values=x96, interpolate_pos_encoding=True).last_hidden_state
        torch.testing.assert_close(feats, raw[:, 1:].reshape(2, 12, 12, 32), rtol=0, atol=0)


def test_an_eva02_vlm_finetunes_from_its_interpolated_position_embeddings(tmp_path):
    vision = {"kind": "eva02", "preset": "tiny", "image_size": 64}
    src = train_source(
        tmp_path / "src",
        arch="pythia",
        overrides={"model": {"vision": vision}, "stage1": {"steps": 1, "eval_every": 1}},
    )
    trained = RunDir(src / "stage2").load_checkpoint()["model"]["encoders.0.model.pos_embed"]
    cfg = ft_config(src, resolution=96, train={"steps": 2, "eval_every": 2}, n_heldout=2)
    results = finetune(cfg, tmp_path / "ft", progress=False, log=quiet)
    assert results["grid"] == [12, 12]
    tuned = RunDir(tmp_path / "ft").load_checkpoint()["model"]["encoders.0.model.pos_embed"]
    # the frozen encoder trained with the resampled embeddings and kept them
    grid = trained[:, 1:].reshape(1, 8, 8, 32).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(12, 12), mode="bicubic", antialias=True)
    torch.testing.assert_close(tuned[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 144, 32))
    torch.testing.assert_close(tuned[:, :1], trained[:, :1], rtol=0, atol=0)


def test_a_killed_finetune_resumes_to_the_same_metrics_and_results(source, finished, tmp_path):
    full, results = finished
    calls = {"n": 0}

    def stop_at_step_8():  # polled after every step, as a worker's SIGTERM flag is
        calls["n"] += 1
        return calls["n"] == 8

    cut = tmp_path / "cut"
    cfg = ft_config(source)
    assert finetune(cfg, cut, progress=False, log=quiet, should_stop=stop_at_step_8) is None
    status = json.loads((cut / "status.json").read_text())
    assert (status["state"], status["step"]) == ("interrupted", 8)
    assert not (cut / "eval").exists()
    resumed = finetune(cfg, cut, progress=False, log=quiet)
    assert read_jsonl(cut / "metrics.jsonl") == read_jsonl(full / "metrics.jsonl")
    assert {**resumed, "run": None} == {**results, "run": None}


@pytest.mark.parametrize(
    ("flags", "field", "words"),
    [
        (["--task", "colour"], "task", "not a task of the shapes dataset"),
        (["--resolution", "100"], "resolution", "multiple of the patch encoder's 8 px"),
        (["--lr", "0"], "train.lr", "must be > 0"),
        (["--lr=-1e-4"], "train.lr", "must be > 0"),
        (["--epochs", "1"], "epochs", "no epochs"),
        (["--set", "arch=pythia"], "arch", "is a mamba VLM"),
        (["--set", "train.lrr=1"], "train.lrr", "unknown key"),
        (["--run", "NOWHERE"], "source", "no stage-2 run"),
    ],
    ids=["task", "resolution", "lr-zero", "lr-negative", "epochs", "arch", "unknown", "source"],
)
def test_bad_inputs_are_one_line_errors_naming_the_field_before_any_work(
    capsys, source, tmp_path, flags, field, words
):
    argv = ["--run", str(source), "--task", "vqa", "--resolution", "96"]
    argv += ["--out", str(tmp_path / "ft")]
    flags = [str(tmp_path / f) if f == "NOWHERE" else f for f in flags]
    code, stdout, err = vlab(capsys, "vlm", "finetune", *argv, *flags)
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1, err
    assert f"config field '{field}'" in err and words in err, err
    assert not (tmp_path / "ft").exists()


def test_an_unfinished_source_is_refused_before_any_work(capsys, source, tmp_path):
    (tmp_path / "src" / "stage2").mkdir(parents=True)
    config = (source / "stage2" / "config.json").read_text()
    (tmp_path / "src" / "stage2" / "config.json").write_text(config)  # never trained
    argv = ["--run", str(tmp_path / "src"), "--task", "vqa", "--resolution", "96"]
    code, _, err = vlab(capsys, "vlm", "finetune", *argv, "--out", str(tmp_path / "ft"))
    assert code == 2 and "is not finished" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ft").exists()


def test_the_cli_writes_run_finetune_task_r_lr_and_a_second_call_does_nothing(capsys, source):
    argv = ["vlm", "finetune", "--run", str(source), "--task", "grounding", "--resolution", "80"]
    argv += ["--steps", "2", "--batch-size", "4", "--lr", "1e-3", "--no-progress"]
    argv += ["--set", "train.threads=1", "--set", "n_heldout=2", "--set", "train.eval_every=2"]
    code, stdout, _ = vlab(capsys, *argv)
    out = source / "finetune" / "grounding-r80-lr0.001"
    assert code == 0 and "shapes/grounding" in stdout and f"{out}/eval/heldout" in stdout
    status = json.loads((out / "status.json").read_text())
    assert status["visual_tokens"] == 10 * 10 and status["state"] == "done"
    before = stamps(out)
    code, again, _ = vlab(capsys, *argv)
    assert code == 0 and "already done" in again
    assert again.splitlines()[1:] == stdout.splitlines()[-2:]
    assert stamps(out) == before


def test_a_finetune_on_dataset_files_trains_one_source_for_epochs_and_scores_its_heldout_set(
    tmp_path,
):
    from tests.vlm.test_dataset_files import _sources, _write_images

    files = _sources(tmp_path / "images")
    _write_images(files)
    data = {
        "dataset": "files",
        "stage2": {"sources": [files["coco"], files["vqav2"], files["refcoco"]]},
        "heldout": {"sources": [files["coco"], files["vqav2"]]},
        "n_heldout": 2,
    }
    src = train_source(
        tmp_path / "src",
        overrides={"data": data, "stage2": {"steps": 4, "eval_every": 4, "batch_size": 4}},
    )
    bench = {**files["vqav2"], "name": "vqav2_test"}  # scored after the held-out set
    cfg = ft_config(
        src, task="vqav2", epochs=2.0, train={"batch_size": 4}, n_heldout=2, benchmarks=[bench]
    )
    assert cfg.train_source.label == "vqav2" and cfg.heldout_source.label == "vqav2"
    out = tmp_path / "ft"
    results = finetune(cfg, out, progress=False, log=quiet)
    sequences = len(read_jsonl(out / "data" / "stage2" / "sequences.jsonl"))
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["steps"] == math.ceil(2 * sequences / 4)
    stats = json.loads((out / "data" / "stage2" / "stats.json").read_text())
    assert list(stats) == ["vqav2"]  # the task's source alone
    # every held-out example of the task's source is scored, not training's first n_heldout
    heldout = read_jsonl(out / "data" / "heldout" / "sequences.jsonl")
    assert results["examples"] == len(heldout) > 2 and list(results["sources"]) == ["vqav2/vqa"]
    assert len(read_jsonl(out / "eval" / "heldout" / "predictions.jsonl")) == len(heldout)
    # the benchmark: its own phase and folder, the same answers as the held-out set's
    test = json.loads((out / "eval" / "vqav2_test" / "results.json").read_text())
    assert (test["benchmark"], list(test["sources"])) == ("vqav2_test", ["vqav2_test/vqa"])
    assert test["sources"]["vqav2_test/vqa"] == results["sources"]["vqav2/vqa"]
    state = experiment("vlm-finetune").status(out)
    assert (state["state"], state["benchmarks"]) == ("done", ["vqav2/vqa", "vqav2_test"])
    (out / "eval" / "vqav2_test" / "results.json").unlink()
    state = experiment("vlm-finetune").status(out)
    assert (state["state"], state["stage"]) == ("interrupted", "eval:vqav2_test")
    finetune(cfg, out, progress=False, log=quiet)  # resumes with the benchmark alone
    again = json.loads((out / "eval" / "vqav2_test" / "results.json").read_text())
    assert again == test
    with pytest.raises(ConfigError, match="'heldout_source'.*no source labelled 'refcoco'"):
        ft_config(src, task="refcoco", train={"batch_size": 4})
    with pytest.raises(ConfigError, match=r"'task'.*\(coco_captions, vqav2, refcoco\)"):
        ft_config(src, task="gqa")


def test_the_paper_tasks_train_on_their_training_sets_and_score_their_validation_sets():
    vqa = paper_sources("/data", "vqav2")
    assert (vqa["train_source"].reader, vqa["train_source"].split) == ("vqav2", "train")
    assert vqa["heldout_source"].split == "val"
    assert "val2014" in vqa["heldout_source"].paths[0]
    ref = paper_sources("/data", "refcocog")
    train, held = ref["train_source"], ref["heldout_source"]
    assert (train.reader, train.label, train.split) == ("refcoco", "refcocog", "train")
    assert train.options == {"source": "refcocog", "tasks": ["grounding"]}
    assert (held.label, held.split, held.options["tasks"]) == ("refcocog_val", "val", ["grounding"])
    assert train.paths[0] == held.paths[0] == "/data/refcocog/refs(umd).p"
    # scored besides on the split the paper reports, where that is not the held-out set
    assert vqa["benchmarks"] == ()
    (test,) = ref["benchmarks"]
    assert (test.label, test.split, test.options["tasks"]) == (
        "refcocog_test",
        "test",
        ["grounding"],
    )
    assert test.paths == held.paths


# vlab vlm eval and vlab vlm generate on a finetune directory ---------------------------------


def _by_hand(source: Path, out: Path):
    """The finetune's model as its own held-out evaluation builds it: the run config at 96 px,
    the finetune's checkpoint in a VLM built from it (the known answer for eval and generate)."""
    cfg = ft_config(source)
    tok = source_tokenizer(cfg)
    run_cfg, _ = finetune_model(cfg, tok, log=quiet)
    model = build_vlm(run_cfg.model, vocab_size=len(tok), seed=0)
    model.load_state_dict(RunDir(out).load_checkpoint()["model"])
    return run_cfg, model.eval(), tok


def test_eval_and_generate_open_a_finetune_directory_at_its_resolution(
    capsys, source, finished, tmp_path
):
    from tests.vlm.test_dataset_files import _sources, _write_images
    from vlab.models.vlm.data.prepared import PreparedMixture
    from vlab.models.vlm.generate import greedy_generate
    from vlab.vlm.trained import FINETUNE_RUN, load_trained

    out, _ = finished
    before = stamps(out)
    trained = load_trained(out, device="cpu")
    assert (trained.kind, trained.step, trained.model.grid) == (FINETUNE_RUN, 12, (12, 12))
    assert trained.config.model.sequence.max_length == 340  # grown with the image segment
    assert trained.about == {
        "source": str(source),
        "task": "vqa",
        "resolution": 96,
        "grid": [12, 12],
    }
    run_cfg, model, tok = _by_hand(source, out)
    assert trained.config == run_cfg and len(trained.tokenizer) == len(tok)
    for name, value in model.state_dict().items():
        assert torch.equal(trained.model.state_dict()[name], value), name
    # generate: a held-out VQA scene rendered at 96 px, asked as training asked it
    sample = next(s for s in ShapesData(run_cfg.data).heldout if s.task == "vqa")
    assert sample.image.size == (96, 96)
    image = tmp_path / "scene.png"
    sample.image.save(image)
    batch = batch_of([sample], model, tok, run_cfg.model.sequence)
    with torch.no_grad():
        want = greedy_generate(model, tok, batch, run_cfg.max_new_tokens)[0]
    argv = ["vlm", "generate", "--run", str(out), "--image", str(image), "--task", "vqa"]
    code, stdout, _ = vlab(capsys, *argv, "--prompt", sample.turns[0].prompt, "--device", "cpu")
    assert (code, stdout) == (0, want + "\n")
    # eval: benchmark files scored by the 96 px model, results beside the finetune's own
    files = _sources(tmp_path / "images")
    _write_images(files)
    (tmp_path / "b.json").write_text(json.dumps({"sources": [files["vqav2"]]}))
    argv = ["vlm", "eval", "--run", str(out), "--config", str(tmp_path / "b.json")]
    code, stdout, _ = vlab(capsys, *argv, "--no-progress", "--device", "cpu")
    where = out / "eval" / "vqav2"  # a folder per benchmark
    assert code == 0 and f"{where}/results.json" in stdout
    results = json.loads((where / "results.json").read_text())
    assert results["benchmark"] == "vqav2" and RunDir(where).is_done()
    assert (results["resolution"], results["grid"], results["step"]) == (96, [12, 12], 12)
    assert (results["task"], results["source"]) == ("vqa", str(source))
    samples = list(PreparedMixture(where / "data"))
    assert results["examples"] == len(samples) == 3
    batch = batch_of(samples, model, tok, run_cfg.model.sequence)
    with torch.no_grad():
        answers = greedy_generate(model, tok, batch, run_cfg.max_new_tokens)
    assert [p["prediction"] for p in read_jsonl(where / "predictions.jsonl")] == answers
    assert {p: t for p, t in stamps(out).items() if where not in p.parents} == before
    code, _, err = vlab(capsys, *argv, "--name", "heldout")  # the finetune's own: refused
    assert code == 2 and "is the finetune's own held-out evaluation" in err


def test_a_directory_that_is_no_trained_vlm_is_a_one_line_error_naming_it(
    capsys, source, finished, tmp_path
):
    out, _ = finished
    image = tmp_path / "red.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 20, 20)).save(image)
    ask = ["vlm", "generate", "--image", str(image), "--prompt", "What colour?", "--run"]

    def error(*argv: str) -> str:
        code, stdout, err = vlab(capsys, *argv)
        assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1, err
        return err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty} is not a trained VLM: no stage1/ or stage2/" in error(*ask, str(empty))
    assert f"{source / 'stage2'} is stage 2 of a vlab vlm train run; give the run directory " in (
        error(*ask, str(source / "stage2"))
    )
    assert f"{out} is a vlab vlm finetune directory" in error(*ask, str(out), "--stage", "1")
    moved = tmp_path / "moved"
    moved.mkdir()
    config = json.loads((out / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "source": str(tmp_path / "gone")}))
    err = error(*ask, str(moved))
    assert f"{moved} is a finetune whose config does not load" in err and "no stage-2 run" in err
