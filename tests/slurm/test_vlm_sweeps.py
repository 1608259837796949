"""VLM sweeps: both stages then the held-out evaluation per run, with the executors, status,
resubmission and resume of probe sweeps."""

import json
from pathlib import Path

import pytest

from tests.cli import vlab
from vlab.errors import VlabError
from vlab.fileio import read_jsonl
from vlab.models.vlm.metrics.captions import REGEX_TOKENS, java_problem
from vlab.slurm.spec import SweepSpec, expand, load_spec
from vlab.slurm.status import format_table, sweep_status
from vlab.slurm.sweepdir import SweepDir

# the tiny-shapes preset cut to seconds: 2 + 4 steps, 6 held-out scenes, short answers
FAST = {
    "stage1": {"steps": 2, "eval_every": 2, "batch_size": 4, "threads": 1, "eval_at_start": False},
    "stage2": {"steps": 4, "eval_every": 2, "batch_size": 4, "threads": 1, "eval_at_start": False},
    "data": {"n_heldout": 6},
    "max_new_tokens": 8,
}
SHAPES_BENCHMARKS = [
    f"shapes/{t}" for t in ("caption", "dense_caption", "grounding", "itm", "pope", "vqa")
]


def vlm_spec(tmp_path: Path, axes=None, name="v", base=None, **extra) -> str:
    path = tmp_path / f"{name}.json"
    spec = {
        "name": name,
        "kind": "vlm",
        "base": base or {"preset": "tiny-shapes", **FAST},
        "axes": axes or {"model.lm.arch": ["pythia", "mamba"]},
        **extra,
    }
    path.write_text(json.dumps(spec))
    return str(path)


def last_metrics(run: Path) -> dict:
    return read_jsonl(run / "stage2" / "metrics.jsonl")[-1]


@pytest.mark.parametrize("executor", ["debug", "local"])
def test_vlm_sweep_trains_both_stages_evaluates_and_resubmitting_skips_it(
    capsys, tmp_path, executor
):
    path, out = vlm_spec(tmp_path), tmp_path / "sw"
    argv = ["sweep", "submit", path, "--out", str(out), "--executor", executor]
    code, stdout, _ = vlab(capsys, *argv, *(["--workers", "2"] if executor == "local" else []))
    assert code == 0, stdout
    rows = sweep_status(SweepDir(out))
    assert [(r["name"], r["state"], r["stage"]) for r in rows] == [
        ("pythia", "done", "eval"),
        ("mamba", "done", "eval"),
    ]
    for r in rows:
        run = out / "runs" / r["name"]
        assert (r["step"], r["steps"], r["benchmarks"]) == (4, 4, SHAPES_BENCHMARKS)
        # the same layout as `vlab vlm train --out`: both stages, each done, of this arch
        for stage in ("stage1", "stage2"):
            status = json.loads((run / stage / "status.json").read_text())
            assert status["state"] == "done" and status["arch"] == r["name"]
        # stage 2's final weights scored on the preset's held-out scenes: what training's own
        # last held-out evaluation measured of the same weights, to the last digit
        results = json.loads((run / "eval" / "heldout" / "results.json").read_text())
        assert results["step"] == 4 and results["examples"] == 6
        assert results["sources"] == last_metrics(run)["sources"]
        assert results["eval_loss"] == last_metrics(run)["eval_loss"]
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/**/*.json*")}
    code, stdout, _ = vlab(capsys, *argv)
    assert code == 0 and "2 done (skipped)" in stdout and "0 to run" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/**/*.json*")} == stamps
    code, stdout, _ = vlab(capsys, "sweep", "status", str(out))
    header, pythia = stdout.splitlines()[:2]
    assert header.split() == [
        "run", "state", "stage", "step", "accuracy", "thr_step", "job", "benchmarks"
    ]  # fmt: skip
    assert pythia.split()[:4] == ["pythia", "done", "eval", "4/4"]
    assert pythia.split()[-1] == ",".join(SHAPES_BENCHMARKS)
    code, stdout, _ = vlab(capsys, "sweep", "resume", str(out))
    assert "nothing to resume" in stdout
    if executor == "debug":
        _inspect_the_sweep(capsys, out)


def _inspect_the_sweep(capsys, out: Path) -> None:
    """``vlab inspect`` on a VLM sweep takes each run's stages, ``--only`` by run name, and the
    inside results read them back per run and stage."""
    from vlab.analysis.inside.results import load_inside

    argv = ["inspect", str(out), "--only", "mamba", "--examples", "4", "--no-progress"]
    argv += ["--analyses", "image_attention"]  # the others are tested in tests/analysis/inside
    code, stdout, _ = vlab(capsys, *argv)
    assert code == 0, stdout
    for stage in ("stage1", "stage2"):
        assert (
            len(list((out / "runs" / "mamba" / stage).glob("inside/step-*/image_attention.json")))
            == 1
        )
    assert not (out / "runs" / "pythia" / "stage2" / "inside").exists()
    inside = load_inside(out)
    table = inside.tables["image_attention"]
    assert sorted(set(zip(table["run"], table["stage"], strict=True))) == [
        ("mamba/stage1", 1),
        ("mamba/stage2", 2),
    ]


def test_a_vlm_run_stopped_in_stage_2_shows_its_stage_and_resumes_to_the_same_metrics(
    capsys, tmp_path
):
    from vlab.slurm.worker import run_one

    path = vlm_spec(tmp_path, axes={"model.lm.arch": ["mamba"]})
    full = tmp_path / "full"
    assert vlab(capsys, "sweep", "submit", path, "--executor", "debug", "--out", str(full))[0] == 0
    sweep = SweepDir(tmp_path / "cut")
    sweep.write("v", "vlm", expand(load_spec(path)), path)
    run = sweep.run_path("mamba")
    # as SIGTERM does in a worker: stop at the first stage-2 evaluation (step 2 of 4)
    status = run_one(
        str(sweep.path), "mamba", should_stop=lambda: bool(read_jsonl(run / "stage2/metrics.jsonl"))
    )
    assert (status["state"], status["stage"], status["step"]) == ("interrupted", "stage2", 2)
    (row,) = sweep_status(sweep)
    assert (row["state"], row["stage"], row["step"], row["steps"]) == (
        "interrupted",
        "stage2",
        2,
        4,
    )
    assert row["benchmarks"] == [] and not (run / "eval").exists()
    line = format_table([row]).splitlines()[1].split()
    assert line[:4] == ["mamba", "interrupted", "stage2", "2/4"] and line[-1] == "-"
    code, stdout, _ = vlab(capsys, "sweep", "resume", str(sweep.path), "--executor", "debug")
    assert code == 0 and "1 to run" in stdout
    for stage in ("stage1", "stage2"):
        name = f"{stage}/metrics.jsonl"
        assert read_jsonl(run / name) == read_jsonl(full / "runs" / "mamba" / name)
    assert sweep_status(sweep)[0]["benchmarks"] == SHAPES_BENCHMARKS


def test_a_run_whose_evaluation_is_missing_is_evaluated_again_and_not_retrained(capsys, tmp_path):
    path, out = vlm_spec(tmp_path, axes={"model.lm.arch": ["pythia"]}), tmp_path / "sw"
    argv = ["sweep", "submit", path, "--executor", "debug", "--out", str(out)]
    assert vlab(capsys, *argv)[0] == 0
    run = out / "runs" / "pythia"
    results = json.loads((run / "eval" / "heldout" / "results.json").read_text())
    (run / "eval" / "heldout" / "results.json").unlink()  # lost, or killed before writing
    (row,) = sweep_status(SweepDir(out))
    assert (row["state"], row["stage"], row["benchmarks"]) == ("interrupted", "eval", [])
    assert "evaluation not written" in row["reason"]
    trained = {p: p.stat().st_mtime_ns for p in run.glob("stage*/**/*") if p.is_file()}
    code, stdout, _ = vlab(capsys, *argv)
    assert code == 0 and "1 to run" in stdout
    assert {p: p.stat().st_mtime_ns for p in run.glob("stage*/**/*") if p.is_file()} == trained
    assert json.loads((run / "eval" / "heldout" / "results.json").read_text()) == results
    assert sweep_status(SweepDir(out))[0]["state"] == "done"


@pytest.mark.parametrize(
    ("where", "field"),
    [
        ({"axes": {"model.lm.arch": ["pythia"], "stage2.lrr": [1e-3]}}, "stage2.lrr"),
        ({"axes": {"model.lm.arch": ["pythia", "rwkv"]}}, "model.lm.arch"),
        ({"axes": {"model.sequence.ordering": ["sideways"]}}, "model.sequence.ordering"),
        ({"base": "tiny-shape"}, "preset"),
        ({"base": {"preset": "tiny-shapes", "data": {"tokenizer": "/no/such/dir"}}},
         "data.tokenizer"),
    ],
    ids=["unknown-key", "arch", "ordering", "preset", "tokenizer"],
)  # fmt: skip
def test_a_bad_vlm_setting_is_one_line_naming_the_field_before_anything_runs(
    capsys, tmp_path, where, field
):
    path = vlm_spec(tmp_path, **where)
    for argv in (["show", path], ["submit", path, "--out", str(tmp_path / "sw")]):
        code, stdout, err = vlab(capsys, "sweep", *argv)
        assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1, err
        assert f"config field '{field}'" in err, err
    assert not (tmp_path / "sw").exists()


def test_a_vlm_base_may_be_a_preset_name_and_the_preset_is_the_base_of_every_run():
    spec = SweepSpec(
        name="p",
        kind="vlm",
        base="tiny-shapes",
        axes={"stage2.lr": [1e-3, 3e-3], "model.sequence.ordering": ["task_aware"]},
    )
    runs = expand(spec)
    assert [r.name for r in runs] == ["s2lr0.001-task_aware", "s2lr0.003-task_aware"]
    for run, lr in zip(runs, (1e-3, 3e-3), strict=True):
        c = run.config
        assert c["stage2"]["lr"] == lr and c["stage1"]["lr"] == 3e-3  # the preset's stage 1
        assert c["model"]["vision"]["image_size"] == 64 and c["data"]["n_heldout"] == 120
        assert "preset" not in c  # resolved: config.json holds the settings, not the name
    with pytest.raises(VlabError, match="config field 'preset': unknown key"):
        expand(SweepSpec(name="p", base="tiny-shapes"))  # a probe base is never a VLM preset
    with pytest.raises(VlabError, match="base must be a mapping of settings or a VLM preset"):
        expand(SweepSpec(name="p", kind="vlm", base=["tiny-shapes"]))
    built_in = expand(load_spec("vlm-tiny-shapes"))
    assert len(built_in) == 8
    assert {
        (r.config["model"]["lm"]["arch"], r.config["model"]["sequence"]["ordering"])
        for r in built_in
    } == {
        (a, o)
        for a in ("pythia", "mamba", "mamba2", "hybrid")
        for o in ("task_agnostic", "task_aware")
    }
    shapes = expand(load_spec("vlm-shapes"))  # 2 arms x 2 orderings x 3 seeds
    cells: dict[tuple, set] = {}
    for run in shapes:
        c = run.config
        cells.setdefault((c["model"]["lm"]["arch"], c["model"]["sequence"]["ordering"]), set()).add(
            (c["stage1"]["seed"], c["stage2"]["seed"])
        )
        # the image is drawn and read at one size; both task groups are in every run
        assert c["model"]["vision"]["image_size"] == c["data"]["shapes"]["image_size"] == 48
        assert {"caption", "vqa"} <= set(c["data"]["shapes"]["tasks"])
        assert {"grounding", "dense_caption"} <= set(c["data"]["shapes"]["tasks"])
        assert c["stage1"]["threads"] == c["stage2"]["threads"] == 1
    assert len(shapes) == 12 and len({r.name for r in shapes}) == 12
    assert {k[0] for k in cells} == {"pythia", "mamba"}
    assert all(seeds == {(0, 0), (1, 1), (2, 2)} for seeds in cells.values())


def test_a_vlm_sweep_on_dataset_files_scores_every_held_out_benchmark(capsys, tmp_path):
    from tests.vlm.test_dataset_files import _sources, _write_images

    files = _sources(tmp_path / "images")
    _write_images(files)
    base = {
        **FAST,
        "data": {
            "dataset": "files",
            "stage2": {"sources": [files["coco"], files["vqav2"]]},
            "heldout": {"sources": [files["coco"], files["refcoco"]]},
            "n_heldout": 2,
        },
    }
    path, out = vlm_spec(tmp_path, axes={"model.lm.arch": ["mamba"]}, base=base), tmp_path / "sw"
    assert vlab(capsys, "sweep", "submit", path, "--executor", "debug", "--out", str(out))[0] == 0
    (row,) = sweep_status(SweepDir(out))
    # every example of each held-out source (captions merged per image), not training's
    # first n_heldout: 2 coco images, 4 refcoco regions as grounding and dense captions
    assert row["state"] == "done"
    assert row["benchmarks"] == ["coco/caption", "refcoco/dense_caption", "refcoco/grounding"]
    where = out / "runs" / "mamba" / "eval" / "heldout"
    results = json.loads((where / "results.json").read_text())
    cider = "CIDEr" if java_problem() is None else "CIDEr" + REGEX_TOKENS  # see captions.py
    assert results["examples"] == 2 + 4 and results["metrics"]["caption"] == cider
    assert len(read_jsonl(where / "predictions.jsonl")) == 6  # what a killed eval resumes from
