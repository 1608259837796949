"""SHAKEUP's tables from the runs' benchmark suites (``RUN/eval/<benchmark>/``), with known
answers: group sums over the benchmarks every run has (naming the missing ones), Table 11's
paired relative gain with its t interval, the slices; and the loader on tiny run directories of
plain JSON files, a sweep's run and a hand-made run (``vlab vlm train`` + ``vlab vlm eval``)
alike. No training: the files are written here as the evaluation writes them."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import math  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats as st  # noqa: E402

from tests.analysis.test_vlm_report import runs_table  # noqa: E402
from vlab.analysis import vlm, vlm_paper, vlm_plots, vlm_tables  # noqa: E402
from vlab.fileio import atomic_write_json  # noqa: E402
from vlab.models.vlm.data.paper_data import paper_benchmarks  # noqa: E402

TASK = {  # the task each paper reader scores, as results.json keys name it
    "coco_karpathy": "caption",
    "nocaps": "caption",
    "textcaps": "caption",
    "vqav2": "vqa",
    "gqa": "vqa",
    "textvqa": "vqa",
    "vizwiz": "vqa",
    "tallyqa": "vqa",
    "visual7w_telling": "mcvqa",
    "visual7w_pointing": "mcvqa",
    "ai2d": "mcvqa",
    "vsr": "itm",
    "pope": "pope",
    "refcoco": "grounding",
}


def test_every_shakeup_test_split_is_a_paper_column_and_vals_are_other():
    keys = [f"{s.get('name') or s['reader']}/{TASK[s['reader']]}" for s in paper_benchmarks("/d")]
    tables = {k: vlm_paper.paper_column(k).table for k in keys}
    other = sorted(k for k, t in tables.items() if t == vlm_paper.OTHER_TABLE)
    assert other == ["refcoco+_val/grounding", "refcoco_val/grounding", "refcocog_val/grounding"]
    columns = [k for g in vlm_paper.PAPER_GROUPS for k, _ in g.columns]
    assert sorted(columns) == sorted(k for k in keys if k not in other)
    assert vlm_paper.paper_column("nocaps/caption").group == "Image Captioning"
    assert vlm_paper.paper_column("visual7w_pointing/mcvqa").group == "Visual Grounding"
    assert vlm_paper.paper_column("ai2d/mcvqa").table == 2
    # MambaVLM's extra benchmarks: shown, never summed
    assert vlm_paper.paper_column("tallyqa_simple/vqa").group == vlm_paper.OTHER_GROUP
    assert vlm_paper.paper_order(["sum:General VQA", "gqa/vqa", "vizwiz/vqa", "coco/caption"]) == [
        "coco/caption",
        "gqa/vqa",
        "sum:General VQA",
        "vizwiz/vqa",
    ]


def suite_table(values: dict[str, dict[str, float]]) -> pd.DataFrame:
    rows = [
        [run, key, *key.split("/"), key, "g", "m", v, key.split("/")[0]]
        for run, by_key in values.items()
        for key, v in by_key.items()
    ]
    return pd.DataFrame(rows, columns=vlm.SUITE_COLUMNS)


RUNS = runs_table(
    [
        ("ag0", "mamba", "task_agnostic", "s=0"),
        ("ag1", "mamba", "task_agnostic", "s=1"),
        ("aw0", "mamba", "task_aware", "s=0"),
        ("aw1", "mamba", "task_aware", "s=1"),
    ]
)
# CIDEr 1.1 is 110 x100; accuracies are fractions
SUITE = suite_table(
    {
        "ag0": {
            "coco/caption": 1.0,
            "vqav2/vqa": 0.5,
            "gqa/vqa": 0.3,
            "refcoco_testA/grounding": 0.2,
        },
        "ag1": {
            "coco/caption": 1.2,
            "vqav2/vqa": 0.6,
            "gqa/vqa": 0.4,
            "refcoco_testA/grounding": 0.4,
        },
        "aw0": {
            "coco/caption": 1.1,
            "vqav2/vqa": 0.5,
            "gqa/vqa": 0.5,
            "refcoco_testA/grounding": 0.3,
        },
        "aw1": {"coco/caption": 1.2, "vqav2/vqa": 0.7, "gqa/vqa": 0.3},  # no RefCOCO testA
    }
)


def test_group_sums_cover_only_what_every_run_has_and_name_the_rest():
    wide = vlm_paper.suite_wide(RUNS, SUITE)
    sums, coverage = vlm_paper.group_sums(wide)
    # General VQA: VQAv2 + GQA, V7W telling missing
    assert sums.loc["ag0", "sum:General VQA"] == pytest.approx(80.0)
    assert sums.loc["aw0", "sum:General VQA"] == pytest.approx(100.0)
    assert sums.loc["ag1", "sum:Image Captioning"] == pytest.approx(120.0)  # CIDEr x100
    assert "sum:Visual Grounding" not in sums  # RefCOCO testA only in 3 of 4 runs
    c = coverage.set_index("group")
    assert c.loc["General VQA", "summed"] == ["VQAv2 val", "GQA test-dev"]
    assert c.loc["General VQA", "missing"] == ["V7W telling"]
    assert (c.loc["General VQA", "n_summed"], c.loc["General VQA", "n_columns"]) == (2, 3)
    assert c.loc["Visual Grounding", "partial"] == ["RefCOCO testA"]
    notes = vlm_paper.coverage_notes(coverage)
    vqa = next(n for n in notes if n.startswith("General VQA"))
    assert "Σ over VQAv2 val, GQA test-dev (2 of 3)" in vqa
    assert "missing V7W telling (no run has it)" in vqa
    ground = next(n for n in notes if n.startswith("Visual Grounding"))
    assert "left out RefCOCO testA (only some runs have it)" in ground


def test_table_2_groups_are_shown_unsummed_as_the_paper_shows_them():
    runs = runs_table([("a", "pythia", "task_agnostic", "0"), ("b", "mamba", "task_agnostic", "0")])
    scores = {"textvqa/vqa": 0.4, "ai2d/mcvqa": 0.5, "vsr/itm": 0.6, "coco/caption": 1.0}
    wide = vlm_paper.suite_wide(runs, suite_table({"a": scores, "b": scores}))
    both, coverage = vlm_paper.with_sums(wide)
    assert [c for c in both.columns if c.startswith("sum:")] == ["sum:Image Captioning"]
    assert both.loc["a", "textvqa/vqa"] == pytest.approx(40.0)  # the column itself is shown
    notes = vlm_paper.coverage_notes(coverage)
    reading = next(n for n in notes if n.startswith("Reading Comprehension"))
    assert reading == "Reading Comprehension (Table 2): missing TextCaps val (no run has it)"
    assert not any("Σ" in n for n in notes if "Table 2" in n)


def test_paper_tables_average_seeds_with_a_t_interval_and_mark_partial_sums():
    summary, coverage = vlm_paper.paper_summary(RUNS, SUITE)
    s = summary.set_index(["ordering", "benchmark"])
    row = s.loc[("task_agnostic", "sum:General VQA")]
    half = st.t.ppf(0.975, 1) * np.std([80.0, 100.0], ddof=1) / math.sqrt(2)
    assert row["values"] == (80.0, 100.0)
    assert (row["mean"], row["lo"], row["hi"]) == pytest.approx((90.0, 90 - half, 90 + half))
    assert s.loc[("task_aware", "refcoco_testA/grounding"), "n"] == 1
    t1 = vlm_paper.paper_table(summary, coverage, 1)
    assert t1.columns[:3].tolist() == [("", "arch"), ("", "ordering"), ("", "seeds")]
    groups = list(dict.fromkeys(g for g, _ in t1.columns[3:]))
    assert groups == ["Image Captioning", "General VQA", "Visual Grounding"]
    assert ("General VQA", "Σ (2 of 3)") in t1.columns
    assert ("Image Captioning", "Σ (1 of 2)") in t1.columns
    ag = t1.iloc[0]
    assert ag[("General VQA", "Σ (2 of 3)")] == f"90.0 [{90 - half:.1f}, {90 + half:.1f}]"
    assert ag[("Image Captioning", "COCO test")].startswith("110.0 [")
    assert vlm_paper.paper_table(summary, coverage, 2).empty  # no Table 2 benchmark


def test_table_11_pairs_seeds_and_gives_a_t_interval_of_the_relative_gain():
    gains = vlm_paper.paper_gains(RUNS, SUITE)
    g = gains.set_index(["seed", "benchmark"])
    assert g.loc[("s=0", "gqa/vqa"), "gain"] == pytest.approx(2 / 3)  # 0.3 -> 0.5
    assert g.loc[("s=1", "gqa/vqa"), "gain"] == pytest.approx(-0.25)  # 0.4 -> 0.3
    assert g.loc[("s=0", "sum:General VQA"), "gain"] == pytest.approx(0.25)  # 80 -> 100
    assert g.loc[("s=0", "sum:General VQA"), "label"] == "Σ General VQA"
    summary = vlm_tables.gain_summary(gains)
    gqa = summary.set_index("benchmark").loc["gqa/vqa"]
    x = [2 / 3, -0.25]
    lo, hi = st.t.interval(0.95, 1, loc=np.mean(x), scale=st.sem(x))
    assert (gqa["mean"], gqa["lo"], gqa["hi"]) == pytest.approx((np.mean(x), lo, hi))
    ref = summary.set_index("benchmark").loc["refcoco_testA/grounding"]
    assert (ref["pairs"], ref["n"]) == (2, 1)  # seed 1's task-aware run lacks it
    _, coverage = vlm_paper.paper_summary(RUNS, SUITE)
    table = vlm_paper.paper_gain_table(summary, coverage)
    assert table.iloc[0][("General VQA", "GQA test-dev")] == interval(x)
    assert table.iloc[0][("", "pairs")] == "2"
    # Figure 4: the grounding columns only
    keys = vlm_paper.grounding_keys(summary)
    assert keys == ["refcoco_testA/grounding"]
    fig = vlm_plots.gain_bars(summary, keys=keys, title="Visual grounding")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["RefCOCO testA"]


def interval(x: list[float]) -> str:
    lo, hi = st.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=st.sem(x))
    return f"{100 * np.mean(x):+.1f}% [{100 * lo:+.1f}%, {100 * hi:+.1f}%]"


# files -------------------------------------------------------------------------------------


def write_benchmark(run, name: str, task: str, score: float, **extra) -> None:
    """RUN/eval/<name>/ as a finished benchmark phase writes it: status.json done, then
    results.json (the keys of vlab.vlm.evaluate.write_evaluation)."""
    where = run / "eval" / name
    key = f"{name}/{task}"
    atomic_write_json(where / "status.json", {"state": "done", "benchmarks": [key]})
    results = {"run": str(run), "stage": 2, "benchmark": name, "step": 4, "examples": 10}
    results.update(per_source={name: 10}, accuracy=score, tasks={task: score})
    results.update(metrics={task: "vqa_accuracy"}, sources={key: score}, official={}, **extra)
    atomic_write_json(where / "results.json", results)


def write_run(root, name: str, arch: str, ordering: str, seed: int) -> None:
    """A VLM run directory as `vlab vlm train --out` leaves it: both stages done, the held-out
    evaluation done (its own scores)."""
    run = root / name
    config = {
        "model": {"lm": {"arch": arch}, "sequence": {"ordering": ordering}},
        "stage2": {"seed": seed, "steps": 4},
        "stage1": {"steps": 2},
    }
    for stage in (1, 2):
        atomic_write_json(run / f"stage{stage}" / "config.json", {**config, "stage": stage})
        atomic_write_json(run / f"stage{stage}" / "status.json", {"state": "done", "step": 4})
    atomic_write_json(run / "eval" / "heldout" / "status.json", {"state": "done"})
    heldout = {"sources": {"shapes/vqa": 0.5}, "metrics": {"vqa": "exact_match"}}
    atomic_write_json(run / "eval" / "heldout" / "results.json", heldout)


def test_suite_folders_load_apart_from_heldout_with_slices(tmp_path):
    write_run(tmp_path, "a", "pythia", "task_agnostic", 0)
    run = tmp_path / "a"
    types = {"vqav2/vqa": {"answer_type": {"yes/no": 0.8, "number": 0.25, "other": 0.5}}}
    write_benchmark(run, "vqav2", "vqa", 0.6, slices=types)
    write_benchmark(run, "gqa", "vqa", 0.4)
    write_benchmark(run, "pope_random", "pope", 0.7)
    (run / "eval" / "pope_random" / "results.json").unlink()  # removed: scored again later
    running = run / "eval" / "textvqa"
    atomic_write_json(running / "status.json", {"state": "running"})
    sweep = vlm.load_vlm_sweep(tmp_path)
    assert sweep.scores["benchmark"].tolist() == ["shapes/vqa"]  # held-out: its own table
    assert sorted(sweep.suite["benchmark"]) == ["gqa/vqa", "vqav2/vqa"]
    assert sweep.suite.set_index("benchmark").loc["gqa/vqa", "score"] == 0.4
    assert sweep.runs["n_suite"].tolist() == [2]
    sl = sweep.slices.set_index("value")["score"]
    assert sl.to_dict() == {"yes/no": 0.8, "number": 0.25, "other": 0.5}
    table = vlm_paper.slice_table(sweep.runs, sweep.slices)
    assert table.columns.tolist() == ["benchmark", "slice", "value", "pythia task-agnostic"]
    row = table.set_index("value").loc["number"]
    assert (row["benchmark"], row["slice"], row["pythia task-agnostic"]) == (
        "VQAv2 val",
        "answer_type",
        "25.0",
    )
    # the same run directory on its own (a hand-made run) reads the same
    alone = vlm.load_vlm_sweep(run)
    assert sorted(alone.suite["benchmark"]) == ["gqa/vqa", "vqav2/vqa"]


def test_a_damaged_suite_results_file_is_a_warning_not_an_error(tmp_path):
    write_run(tmp_path, "a", "mamba", "task_aware", 0)
    write_benchmark(tmp_path / "a", "gqa", "vqa", 0.4)
    (tmp_path / "a" / "eval" / "gqa" / "results.json").write_text("{not json")
    sweep = vlm.load_vlm_sweep(tmp_path)
    assert sweep.suite.empty
    assert any("gqa/results.json is unreadable" in w for w in sweep.warnings)
    notes = vlm_paper.suite_notes(sweep, vlm_paper.paper_summary(sweep.runs, sweep.suite)[1])
    assert notes[0].startswith("No run has benchmark-suite results")
