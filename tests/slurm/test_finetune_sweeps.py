"""Finetune sweeps (kind ``vlm-finetune``): stage-2 VLMs finetuned on one task per resolution,
with the executors, status, resubmission and resume of the other kinds."""

import json
from pathlib import Path

import pytest

from tests.cli import vlab
from tests.vlm.test_finetune import train_source
from vlab.config import to_dict
from vlab.errors import VlabError
from vlab.fileio import read_jsonl
from vlab.rundir import RunDir
from vlab.slurm.spec import expand, load_spec
from vlab.slurm.status import format_table, sweep_status
from vlab.slurm.sweepdir import SweepDir
from vlab.vlm.config import config_from

FAST = {"steps": 4, "eval_every": 2, "batch_size": 4, "threads": 1, "lr": 2e-3}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return train_source(tmp_path_factory.mktemp("source") / "run")


def finetune_spec(tmp_path: Path, run: Path, axes=None, name="f", **base) -> str:
    path = tmp_path / f"{name}.json"
    spec = {
        "name": name,
        "kind": "vlm-finetune",
        "base": {
            "source": str(run),
            "task": "vqa",
            "train": FAST,
            "n_heldout": 4,
            "max_new_tokens": 8,
            **base,
        },
        "axes": axes or {"resolution": [64, 96]},
    }
    path.write_text(json.dumps(spec))
    return str(path)


def test_a_finetune_sweep_runs_each_resolution_and_resubmitting_skips_it(capsys, source, tmp_path):
    path, out = finetune_spec(tmp_path, source), tmp_path / "sw"
    argv = ["sweep", "submit", path, "--out", str(out), "--executor", "debug"]
    code, stdout, _ = vlab(capsys, *argv)
    assert code == 0, stdout
    rows = sweep_status(SweepDir(out))
    assert [(r["name"], r["state"], r["stage"], r["step"], r["steps"]) for r in rows] == [
        ("r64", "done", "eval", 4, 4),
        ("r96", "done", "eval", 4, 4),
    ]
    for row, side in zip(rows, (8, 12), strict=True):
        run = out / "runs" / row["name"]
        assert row["benchmarks"] == ["shapes/vqa"]
        status = json.loads((run / "status.json").read_text())
        assert status["visual_tokens"] == side * side and status["arch"] == "mamba"
        results = json.loads((run / "eval" / "heldout" / "results.json").read_text())
        assert results["grid"] == [side, side] and results["examples"] == 4
        assert results["sources"] == read_jsonl(run / "metrics.jsonl")[-1]["sources"]
        assert row["accuracy"] == results["accuracy"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/**/*.json*")}
    code, stdout, _ = vlab(capsys, *argv)
    assert code == 0 and "2 done (skipped)" in stdout and "0 to run" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/**/*.json*")} == stamps
    code, stdout, _ = vlab(capsys, "sweep", "status", str(out))
    header, r64 = stdout.splitlines()[:2]
    assert header.split()[:4] == ["run", "state", "stage", "step"]
    assert r64.split()[:4] == ["r64", "done", "eval", "4/4"] and r64.split()[-1] == "shapes/vqa"


def test_a_stopped_finetune_shows_its_phase_and_resumes_to_the_same_metrics(
    capsys, source, tmp_path
):
    from vlab.slurm.worker import run_one

    path = finetune_spec(tmp_path, source, axes={"resolution": [96]})
    full = tmp_path / "full"
    assert vlab(capsys, "sweep", "submit", path, "--executor", "debug", "--out", str(full))[0] == 0
    sweep = SweepDir(tmp_path / "cut")
    sweep.write("f", "vlm-finetune", expand(load_spec(path)), path)
    run = sweep.run_path("r96")
    # as SIGTERM does in a worker: stop at the first evaluation after step 0 (step 2 of 4)
    status = run_one(
        str(sweep.path), "r96", should_stop=lambda: len(read_jsonl(run / "metrics.jsonl")) > 1
    )
    assert (status["state"], status["stage"], status["step"]) == ("interrupted", "finetune", 2)
    (row,) = sweep_status(sweep)
    assert (row["state"], row["stage"], row["step"], row["steps"]) == (
        "interrupted",
        "finetune",
        2,
        4,
    )
    assert format_table([row]).splitlines()[1].split()[:4] == [
        "r96",
        "interrupted",
        "finetune",
        "2/4",
    ]
    code, stdout, _ = vlab(capsys, "sweep", "resume", str(sweep.path), "--executor", "debug")
    assert code == 0 and "1 to run" in stdout
    assert read_jsonl(run / "metrics.jsonl") == read_jsonl(full / "runs" / "r96" / "metrics.jsonl")
    assert sweep_status(sweep)[0]["benchmarks"] == ["shapes/vqa"]
    # an evaluation lost after training: the run shows it and resuming only evaluates
    (run / "eval" / "heldout" / "results.json").unlink()
    (row,) = sweep_status(sweep)
    assert (row["state"], row["stage"]) == ("interrupted", "eval")
    trained = {p: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    assert vlab(capsys, "sweep", "resume", str(sweep.path), "--executor", "debug")[0] == 0
    assert {p: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == trained
    assert sweep_status(sweep)[0]["state"] == "done"


@pytest.mark.parametrize(
    ("base", "field"),
    [
        ({"resolution": 100}, "resolution"),
        ({"task": "colour"}, "task"),
        ({"train": {**FAST, "lr": 0}}, "train.lr"),
        ({"source": "/no/such/run"}, "source"),
        ({"arch": "pythia"}, "arch"),
    ],
    ids=["resolution", "task", "lr", "source", "arch"],
)
def test_a_bad_finetune_setting_is_one_line_naming_the_field_before_anything_runs(
    capsys, source, tmp_path, base, field
):
    axes = {"train.lr": [1e-3]} if "resolution" in base else {"resolution": [96]}
    path = finetune_spec(tmp_path, source, axes=axes, **base)
    for argv in (["show", path], ["submit", path, "--out", str(tmp_path / "sw")]):
        code, stdout, err = vlab(capsys, "sweep", *argv)
        assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1, err
        assert f"config field '{field}'" in err, err
    assert not (tmp_path / "sw").exists()


def _fake_sources(root: Path, runs: dict[str, dict]) -> None:
    """Stage-2 config.json files (nothing trained): what expanding a spec reads."""
    for name, cfg in runs.items():
        RunDir(root / "runs" / name / "stage2").write_config({**cfg, "stage": 2})


def test_the_shapes_finetune_spec_crosses_arms_tasks_resolutions_and_lrs(monkeypatch, tmp_path):
    monkeypatch.delenv("VLAB_VLM_SWEEP", raising=False)
    with pytest.raises(VlabError, match="set VLAB_VLM_SWEEP"):
        load_spec("vlm-finetune-shapes")
    archs = ("pythia", "mamba", "mamba2", "hybrid")
    _fake_sources(
        tmp_path, {f"{a}-task_agnostic": to_dict(config_from("tiny-shapes", a, {})) for a in archs}
    )
    monkeypatch.setenv("VLAB_VLM_SWEEP", str(tmp_path))
    runs = expand(load_spec("vlm-finetune-shapes"))
    assert len(runs) == 4 * 2 * 3 * 3
    assert runs[0].name == "pythia-vqa-r64-lr0.0005"
    for r in runs:
        c = r.config
        assert c["source"] == str(tmp_path / "runs" / f"{c['arch']}-task_agnostic")
        assert (c["train"]["batch_size"], c["train"]["warmup_ratio"]) == (64, 0.03)
    assert {r.config["resolution"] for r in runs} == {64, 96, 128}
    assert {r.config["task"] for r in runs} == {"vqa", "grounding"}


def test_the_paper_finetune_spec_is_figure_3s_grid(monkeypatch, tmp_path):
    monkeypatch.delenv("VLAB_DATA", raising=False)
    monkeypatch.delenv("VLAB_VLM_SWEEP", raising=False)
    with pytest.raises(VlabError, match="set VLAB_DATA and VLAB_VLM_SWEEP"):
        load_spec("paper-finetune")
    data = tmp_path / "data"
    for rel in (
        "vqav2/v2_OpenEnded_mscoco_train2014_questions.json",
        "vqav2/v2_mscoco_train2014_annotations.json",
        "vqav2/v2_OpenEnded_mscoco_val2014_questions.json",
        "vqav2/v2_mscoco_val2014_annotations.json",
        "refcocog/refs(umd).p",
        "refcocog/instances.json",
    ):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text("")  # expansion checks the files exist; nothing reads them
    for images in ("coco/train2014", "coco/val2014"):  # and the image folders
        (data / images).mkdir(parents=True, exist_ok=True)
    from vlab.models.vlm.data.paper_data import paper_data

    files = {"data": paper_data(data)}  # trained on the paper's datasets
    paper = {a: to_dict(config_from("paper-1.4b", a, files)) for a in ("pythia", "mamba")}
    _fake_sources(tmp_path / "vlm", {f"{a}-1.4b-task_agnostic": c for a, c in paper.items()})
    monkeypatch.setenv("VLAB_DATA", str(data))
    monkeypatch.setenv("VLAB_VLM_SWEEP", str(tmp_path / "vlm"))
    runs = expand(load_spec("paper-finetune"))
    assert len(runs) == 2 * 4 * 3 * 2
    grid = {
        (c["arch"], c["task"], c["epochs"], c["resolution"], c["train"]["lr"])
        for c in (r.config for r in runs)
    }
    assert grid == {
        (arch, task, epochs, res, lr)
        for arch in ("pythia", "mamba")
        for task, epochs in (("vqav2", 1.0), ("refcocog", 3.0))
        for res in (336, 448, 476, 560)
        for lr in (1e-5, 5e-5, 1e-4)
    }
    for c in (r.config for r in runs):
        assert (c["train"]["batch_size"], c["train"]["warmup_ratio"]) == (64, 0.03)
        assert c["train_source"]["split"] == "train" and c["heldout_source"]["split"] == "val"
        # scored besides on the split the paper reports: RefCOCOg test (VQAv2's is val)
        reported = [(b["name"], b["split"]) for b in c["benchmarks"] or []]
        assert reported == ([("refcocog_test", "test")] if c["task"] == "refcocog" else [])
    assert "pythia-refcocog-r560-lr0.0001" in {r.name for r in runs}
    # EVA-02-L/14 patches are 14 px: the paper's 480 would crop 4 px off every image
    from vlab.vlm.finetune import finetune_config

    source = str(tmp_path / "vlm" / "runs" / "mamba-1.4b-task_agnostic")
    with pytest.raises(VlabError, match=r"'resolution': 480 px .* 14 px patches \(use e.g. 476"):
        finetune_config({"source": source, "task": "vqav2", "resolution": 480, "data_root": "/d"})
