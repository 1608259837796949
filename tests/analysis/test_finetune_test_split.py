"""Figure 3 on the paper's splits: a finetune scored on a test split besides its held-out (val)
set (``RUN/eval/refcocog_test/``, as the finetune writes it) is plotted at the lr chosen on
the held-out score. Known answers on hand-written run directories (plain JSON, the files the
finetune and its evaluation write), read by the report's loader from files alone."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import json  # noqa: E402
import math  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vlab.analysis import finetune, finetune_plots  # noqa: E402
from vlab.analysis.stats import t_mean_ci  # noqa: E402
from vlab.analysis.vlm_tables import interval_text  # noqa: E402

VAL, TEST = "refcocog_val/grounding", "refcocog_test/grounding"
METRICS = {"grounding": "accuracy@0.5"}
BENCH = [{"reader": "refcocog", "name": "refcocog_test", "split": "test"}]

# (name, arch, task, resolution, lr, seed, val, test); test None: no test split in its config;
# "running": its test phase is under way (held-out done)
RUNS = [
    ("p336a0", "pythia", "refcocog", 336, 1e-5, 0, 0.50, 0.70),
    ("p336a1", "pythia", "refcocog", 336, 1e-5, 1, 0.60, 0.80),  # val mean 55: chosen
    ("p336b0", "pythia", "refcocog", 336, 5e-5, 0, 0.40, 0.90),  # best on test (90), not
    ("p336b1", "pythia", "refcocog", 336, 5e-5, 1, 0.50, 0.90),  # chosen: val mean 45
    ("p448a0", "pythia", "refcocog", 448, 1e-5, 0, 0.60, 0.65),
    ("p448a1", "pythia", "refcocog", 448, 1e-5, 1, 0.60, 0.75),
    ("p448b0", "pythia", "refcocog", 448, 5e-5, 0, 0.70, 0.80),  # val mean 75: chosen
    ("p448b1", "pythia", "refcocog", 448, 5e-5, 1, 0.80, "running"),
    ("m336a", "mamba", "refcocog", 336, 1e-5, 0, 0.30, 0.35),
    ("m336b", "mamba", "refcocog", 336, 5e-5, 0, 0.40, 0.20),  # chosen on val: 20
    ("m448a", "mamba", "refcocog", 448, 1e-5, 0, 0.50, None),  # chosen, but no test split
    ("m448b", "mamba", "refcocog", 448, 5e-5, 0, 0.45, 0.55),
    ("v336a", "pythia", "vqav2", 336, 1e-5, 0, 0.62, None),  # VQAv2: reported on held-out
    ("v336b", "pythia", "vqav2", 336, 5e-5, 0, 0.66, None),
]


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def hand_written(root: Path) -> Path:
    """The runs of :data:`RUNS` as the finetune leaves them (config.json, status.json,
    eval/heldout/, eval/refcocog_test/), plus a GQA benchmark scored by hand on one run."""
    for name, arch, task, r, lr, seed, val, test in RUNS:
        run = root / name
        held, bench = (VAL, BENCH) if task == "refcocog" else ("vqav2/vqa", [])
        config = {"source": f"/src/{arch}", "task": task, "resolution": r, "arch": arch}
        config |= {"train": {"lr": lr, "seed": seed}, "benchmarks": bench if test else []}
        write(run / "config.json", config)
        write(run / "status.json", {"state": "done", "step": 10, "visual_tokens": (r // 14) ** 2})
        metrics = METRICS if task == "refcocog" else {"vqa": "vqa accuracy"}
        results = {"sources": {held: val}, "metrics": metrics, "examples": 8, "accuracy": val}
        write(run / "eval" / "heldout" / "results.json", results | {"grid": [r // 14] * 2})
        write(run / "eval" / "heldout" / "status.json", {"state": "done", "step": 10})
        where = run / "eval" / "refcocog_test"
        if test == "running":
            write(where / "status.json", {"state": "running", "step": 10})
        elif test is not None:
            scored = {"run": str(run), "stage": 2, "benchmark": "refcocog_test"}
            scored |= {"sources": {TEST: test}, "metrics": METRICS, "examples": 8}
            write(where / "results.json", scored | {"accuracy": test})
            write(where / "status.json", {"state": "done", "step": 10})
    gqa = {"benchmark": "gqa", "sources": {"gqa/vqa": 0.5}, "metrics": {"vqa": "vqa"}}
    write(root / "v336a" / "eval" / "gqa" / "results.json", gqa)  # no status: read
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> finetune.FinetuneSweep:
    return finetune.load_finetune_sweep(hand_written(tmp_path_factory.mktemp("ft")))


def test_every_finished_eval_folder_is_read_and_paired_with_its_heldout_benchmark(sweep):
    runs = sweep.runs.set_index("name")
    # the run scoring its test split is running, its held-out results are final and read
    assert runs.loc["p448b1", "state"] == "running" and runs.loc["p448b1", "evaluated"]
    assert runs.loc["p336a0", "test_splits"] == "refcocog_test"
    assert runs.loc["m448a", "test_splits"] == ""
    tests = sweep.tests.set_index(["run", "benchmark"])
    assert len(tests) == 11  # 10 test scores and the GQA one
    assert tests.loc[("p336b1", TEST), "score"] == 0.90
    assert tests.loc[("p336b1", TEST), "heldout"] == VAL
    assert tests.loc[("p336b1", TEST), "label"] == "RefCOCOg test"
    assert pd.isna(tests.loc[("v336a", "gqa/vqa"), "heldout"])  # not a split of its task
    assert ("p448b1", TEST) not in tests.index  # status running: not read


def test_figure3_points_are_test_scores_at_the_lr_chosen_on_heldout(sweep):
    grid = finetune.finetune_grid(sweep.runs, sweep.scores)
    points = finetune.reported_points(grid, sweep.tests, sweep.runs)
    at = points.set_index(["benchmark", "arch", "resolution"])
    p336 = at.loc[(TEST, "pythia", 336)]
    assert (p336["lr"], p336["val"], p336["split"]) == (1e-5, 55.0, "test")
    assert (p336["score"], p336["lo"], p336["hi"]) == pytest.approx(t_mean_ci([70.0, 80.0]))
    assert (p336["n"], p336["seeds"]) == (2, 2)
    p448 = at.loc[(TEST, "pythia", 448)]  # one seed still scoring its test split
    assert (p448["lr"], p448["score"], p448["n"], p448["seeds"]) == (5e-5, 80.0, 1, 2)
    assert math.isnan(p448["lo"])
    m336 = at.loc[(TEST, "mamba", 336)]
    assert (m336["lr"], m336["score"], m336["seeds"]) == (5e-5, 20.0, 1)
    m448 = at.loc[(TEST, "mamba", 448)]  # the chosen lr's run has no test split
    assert (m448["lr"], m448["n"], m448["waiting"]) == (1e-5, 0, finetune.NO_TEST)
    assert math.isnan(m448["score"])
    vqa = at.loc[("vqav2/vqa", "pythia", 336)]  # no test split: the held-out score
    assert (vqa["split"], vqa["lr"], vqa["score"], vqa["val"]) == ("held-out", 5e-5, 66.0, 66.0)
    # the held-out figure's choice, reused: the same lr per arm and resolution
    best = finetune.best_lr(grid).set_index(["benchmark", "arch", "resolution"])["lr"]
    for (_, arch, r), p in at.iterrows():
        assert best.loc[(p["heldout"], arch, r)] == p["lr"]


def test_the_tables_show_test_scores_and_the_runs_without_one(sweep):
    grid = finetune.finetune_grid(sweep.runs, sweep.scores)
    points = finetune.reported_points(grid, sweep.tests, sweep.runs)
    table = finetune.reported_table(points)
    rows = {(r["benchmark"], r["arch"], r["resolution"]): r for _, r in table.iterrows()}
    p336 = rows[("RefCOCOg test", "pythia", 336)]
    assert p336["reported score"] == interval_text(*t_mean_ci([70.0, 80.0]))
    assert (p336["lr (chosen on held-out)"], p336["held-out at that lr"]) == (
        "1e-05",
        "55.0 [-8.5, 118.5]",
    )
    p448 = rows[("RefCOCOg test", "pythia", 448)]
    assert (p448["reported score"], p448["seeds"]) == ("80.0", "1 of 2")
    assert p448["gain over lowest resolution"] == "+5.0"  # 80 - 75
    assert rows[("RefCOCOg test", "mamba", 448)]["reported score"] == finetune.NO_TEST
    assert rows[("VQAv2", "pythia", 336)]["split"] == "held-out"
    runs = finetune.test_split_table(grid, sweep.tests, sweep.runs).set_index("run")
    assert len(runs) == 12 and "v336a" not in runs.index  # the runs of RefCOCOg alone
    assert runs.loc["p336a0", "lr"] == "1e-05*" and runs.loc["p336b0", "lr"] == "5e-05"
    assert (runs.loc["p336b0", "held-out"], runs.loc["p336b0", "test"]) == ("40.0", "90.0")
    assert (runs.loc["p448b1", "held-out"], runs.loc["p448b1", "test"]) == ("80.0", "running")
    assert runs.loc["m448a", "test"] == finetune.NO_TEST
    notes = " ".join(finetune.test_split_notes(sweep, grid))
    assert "chosen for its arm and resolution on the held-out (val) score" in notes
    assert "2 of 12 runs of a task with a test split have no test score" in notes
    assert "p448b1 (running), m448a (no test split)" in notes
    assert "VQAv2: no run has a test split" in notes
    assert "GQA (eval/gqa)" in notes


def test_the_figure_plots_the_test_points_per_arm(sweep):
    grid = finetune.finetune_grid(sweep.runs, sweep.scores)
    fig = finetune_plots.reported_curves(grid, sweep.tests, sweep.runs)
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {"RefCOCOg test (accuracy@0.5)", "VQAv2 (vqa accuracy)"}
    lines = {line.get_gid(): line for line in panels["RefCOCOg test (accuracy@0.5)"].get_lines()}
    assert lines["reported:pythia"].get_ydata().tolist() == pytest.approx([75.0, 80.0])
    assert lines["reported:mamba"].get_ydata().tolist() == [20.0]  # 448: no test split
    assert "held-out: no test split" in panels["VQAv2 (vqa accuracy)"].get_title()
