"""The VLM report: its tables as pure functions with known answers (group sums, relative gains,
t intervals, target patches), and ``vlab report`` end to end on a tiny real VLM sweep (both
orderings of one arch, trained and evaluated by the debug executor), rendered with papermill on
a real kernel, complete and partial."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats as st  # noqa: E402

from vlab.analysis import vlm, vlm_plots, vlm_tables  # noqa: E402
from vlab.analysis.stats import t_mean_ci  # noqa: E402
from vlab.cli import main  # noqa: E402
from vlab.fileio import atomic_write_json, read_json, read_jsonl  # noqa: E402
from vlab.models.vlm.data.paper_data import paper_benchmarks  # noqa: E402
from vlab.models.vlm.data.records import format_norm_box  # noqa: E402
from vlab.models.vlm.data.shapes import SHAPES_TASKS  # noqa: E402

FIGURES = ["curves_stage1", "curves_stage2", "ordering_gain", "grounding_heatmap"]
FIGURES += ["grounding_by_row", "grounding_gain"]


# benchmark groups ---------------------------------------------------------------------------


def test_every_shapes_task_and_paper_benchmark_has_a_coarse_or_fine_group():
    assert {vlm.benchmark(f"shapes/{t}").group for t in SHAPES_TASKS} == {vlm.COARSE, vlm.FINE}
    assert vlm.benchmark("shapes/grounding").group == vlm.FINE
    assert vlm.benchmark("shapes/dense_caption").group == vlm.FINE
    # the task of each reader `paper_benchmarks` uses, and the group SHAKEUP puts it in
    task = {
        "coco_karpathy": "caption",
        "nocaps": "caption",
        "textcaps": "caption",
        "vqav2": "vqa",
        "gqa": "vqa",
        "textvqa": "vqa",
        "vizwiz": "vqa",
        "tallyqa": "vqa",
        "visual7w_telling": "mcvqa",
        "visual7w_pointing": "mcvqa",  # the papers' four-way choice between boxes
        "ai2d": "mcvqa",
        "vsr": "itm",
        "pope": "pope",
        "refcoco": "grounding",
    }
    specs = paper_benchmarks("/d") + paper_benchmarks("/d", "mambavlm")
    keys = [f"{s.get('name') or s['reader']}/{task[s['reader']]}" for s in specs]
    groups = {k: vlm.benchmark(k).group for k in keys}
    fine = sorted(k for k, g in groups.items() if g == vlm.FINE)
    assert vlm.OTHER not in groups.values()
    assert vlm.benchmark("tallyqa_complex/vqa").label == "TallyQA complex"
    assert fine == sorted(
        ["visual7w_pointing/mcvqa"]
        + [f"refcoco_{s}/grounding" for s in ("val", "testA", "testB")]
        + [f"refcoco+_{s}/grounding" for s in ("val", "testA", "testB")]
        + [f"refcocog_{s}/grounding" for s in ("val", "test")]
    )
    assert vlm.benchmark("refcoco+_testA/grounding").label == "RefCOCO+ testA"
    assert vlm.benchmark("pope_adversarial/pope").label == "POPE adversarial"
    assert vlm.benchmark("coco/caption").label == "COCO"


def test_unknown_benchmarks_go_to_other_and_columns_follow_the_groups():
    assert vlm.benchmark("mydata/chat").group == vlm.OTHER
    assert vlm.benchmark("coco/vqa").group == vlm.OTHER  # a known source with another task
    keys = ["mydata/chat", "refcoco_val/grounding", "sum:fine", "vqav2/vqa", "coco/caption"]
    keys += ["sum:coarse", "refcoco_testB/grounding", "refcoco_testA/grounding"]
    assert vlm.column_order(keys) == [
        "coco/caption",
        "vqav2/vqa",
        "sum:coarse",
        "refcoco_val/grounding",
        "refcoco_testA/grounding",
        "refcoco_testB/grounding",
        "sum:fine",
        "mydata/chat",
    ]


# hand-made runs with known answers ----------------------------------------------------------


def runs_table(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """(name, arch, ordering, seed) -> a runs table as load_vlm_sweep makes it."""
    df = pd.DataFrame(rows, columns=["name", "arch", "ordering", "seed"])
    df["setting"], df["evaluated"] = "", True
    return df


def scores_table(values: dict[str, dict[str, float]]) -> pd.DataFrame:
    rows = [
        [run, key, *key.split("/"), vlm.column_label(key), vlm.column_group(key), "m", v]
        for run, by_key in values.items()
        for key, v in by_key.items()
    ]
    return pd.DataFrame(rows, columns=vlm.SCORE_COLUMNS)


RUNS = runs_table(
    [
        ("ag0", "mamba", "task_agnostic", "stage2.seed=0"),
        ("ag1", "mamba", "task_agnostic", "stage2.seed=1"),
        ("aw0", "mamba", "task_aware", "stage2.seed=0"),
        ("aw1", "mamba", "task_aware", "stage2.seed=1"),
        ("py0", "pythia", "task_agnostic", "stage2.seed=0"),
    ]
)
SCORES = scores_table(
    {
        "ag0": {"shapes/caption": 0.5, "shapes/vqa": 0.1, "shapes/grounding": 0.2},
        "ag1": {"shapes/caption": 0.7, "shapes/vqa": 0.3, "shapes/grounding": 0.4},
        "aw0": {"shapes/caption": 0.6, "shapes/vqa": 0.1, "shapes/grounding": 0.0},
        "aw1": {"shapes/caption": 0.7, "shapes/vqa": 0.2, "shapes/grounding": 0.3},
        "py0": {"shapes/caption": 0.9, "shapes/vqa": 0.0, "shapes/grounding": 0.8},
    }
)


def test_group_sums_per_run_and_mean_over_seeds_with_a_t_interval():
    wide = vlm_tables.run_scores(RUNS, SCORES)
    assert list(wide.columns) == [
        "shapes/caption",
        "shapes/vqa",
        "sum:coarse",
        "shapes/grounding",
        "sum:fine",
    ]
    assert wide.loc["ag0", "sum:coarse"] == pytest.approx(60.0)
    assert wide.loc["ag1", "sum:coarse"] == pytest.approx(100.0)
    assert wide.loc["py0", "sum:fine"] == pytest.approx(80.0)
    s = vlm_tables.benchmark_summary(RUNS, SCORES).set_index(["arch", "ordering", "benchmark"])
    row = s.loc[("mamba", "task_agnostic", "sum:coarse")]
    half = st.t.ppf(0.975, 1) * np.std([60.0, 100.0], ddof=1) / math.sqrt(2)  # 254.1
    assert (row["n"], row["values"]) == (2, (60.0, 100.0))
    assert (row["mean"], row["lo"], row["hi"]) == pytest.approx((80.0, 80 - half, 80 + half))
    assert row["label"] == "Σ coarse" and row["group"] == vlm.COARSE
    one = s.loc[("pythia", "task_agnostic", "shapes/grounding")]
    assert one["n"] == 1 and one["mean"] == pytest.approx(80.0) and math.isnan(one["lo"])
    # rows: vlab's arms in their order, task-agnostic before task-aware
    order = s.reset_index()[["arch", "ordering"]].drop_duplicates().values.tolist()
    assert order == [
        ["pythia", "task_agnostic"],
        ["mamba", "task_agnostic"],
        ["mamba", "task_aware"],
    ]


def test_a_run_missing_a_benchmark_of_its_group_has_no_group_sum():
    scores = SCORES[~((SCORES["run"] == "ag1") & (SCORES["benchmark"] == "shapes/vqa"))]
    wide = vlm_tables.run_scores(RUNS, scores)
    assert math.isnan(wide.loc["ag1", "sum:coarse"])
    assert wide.loc["ag1", "sum:fine"] == pytest.approx(40.0)


def test_benchmark_table_groups_columns_and_formats_mean_and_interval():
    table = vlm_tables.benchmark_table(vlm_tables.benchmark_summary(RUNS, SCORES))
    assert table.columns[:3].tolist() == [("", "arch"), ("", "ordering"), ("", "seeds")]
    assert ("coarse (summary)", "Σ coarse") in table.columns
    assert ("fine (retrieval)", "shapes grounding") in table.columns
    mamba = table[table[("", "arch")] == "mamba"].iloc[0]
    assert mamba[("coarse (summary)", "Σ coarse")] == "80.0 [-174.1, 334.1]"
    assert mamba[("", "seeds")] == 2
    pythia = table[table[("", "arch")] == "pythia"].iloc[0]
    assert pythia[("fine (retrieval)", "shapes grounding")] == "80.0"  # one seed: no interval


def test_relative_gain_is_paired_by_seed_with_a_t_interval_and_undefined_from_zero():
    gains = vlm_tables.relative_gains(RUNS, SCORES)
    assert set(gains["arch"]) == {"mamba"}  # pythia has no task-aware run: no gain
    g = gains.set_index(["seed", "benchmark"])
    assert g.loc[("stage2.seed=0", "shapes/caption"), "gain"] == pytest.approx(0.2)
    assert g.loc[("stage2.seed=1", "shapes/caption"), "gain"] == pytest.approx(0.0)
    assert g.loc[("stage2.seed=0", "shapes/grounding"), "gain"] == pytest.approx(-1.0)
    assert g.loc[("stage2.seed=1", "sum:coarse"), "gain"] == pytest.approx(-0.1)  # 90 vs 100
    assert g["paired"].all()
    summary = vlm_tables.gain_summary(gains)
    half = st.t.ppf(0.975, 1) * np.std([0.2, 0.0], ddof=1) / math.sqrt(2)
    cap = summary.set_index("benchmark").loc["shapes/caption"]
    assert (cap["pairs"], cap["n"], cap["undefined"]) == (2, 2, 0)
    assert (cap["mean"], cap["lo"], cap["hi"]) == pytest.approx((0.1, 0.1 - half, 0.1 + half))
    # a task-agnostic score of 0 makes that pair's gain undefined, not infinite
    zero = SCORES.copy()
    zero.loc[(zero["run"] == "ag0") & (zero["benchmark"] == "shapes/vqa"), "score"] = 0.0
    s = vlm_tables.gain_summary(vlm_tables.relative_gains(RUNS, zero)).set_index("benchmark")
    assert (s.loc["shapes/vqa", "n"], s.loc["shapes/vqa", "undefined"]) == (1, 1)
    assert s.loc["shapes/vqa", "mean"] == pytest.approx((0.2 - 0.3) / 0.3)
    table = vlm_tables.gain_table(summary)
    assert table.iloc[0][("coarse (summary)", "shapes caption")].startswith("+10.0% [")
    assert table.iloc[0][("", "pairs")] == "2"


def test_orderings_without_a_common_seed_are_compared_through_their_means():
    runs = runs_table([("a", "mamba", "task_agnostic", "s=0"), ("b", "mamba", "task_aware", "s=1")])
    scores = scores_table({"a": {"shapes/vqa": 0.4}, "b": {"shapes/vqa": 0.5}})
    gains = vlm_tables.relative_gains(runs, scores)
    row = gains[gains["benchmark"] == "shapes/vqa"].iloc[0]
    assert (row["seed"], row["paired"]) == ("(means)", False)
    assert row["gain"] == pytest.approx(0.25)
    table = vlm_tables.gain_table(vlm_tables.gain_summary(gains))
    assert table.iloc[0][("", "pairs")] == "means"


def test_t_interval_matches_scipy_and_needs_two_values():
    x = [0.3, 0.5, 0.4, 0.9]
    lo, hi = st.t.interval(0.9, len(x) - 1, loc=np.mean(x), scale=st.sem(x))
    assert t_mean_ci(x, 0.9) == pytest.approx((np.mean(x), lo, hi))
    assert t_mean_ci([0.5, float("nan")])[0] == 0.5 and math.isnan(t_mean_ci([0.5])[1])
    assert all(math.isnan(v) for v in t_mean_ci([]))


# target locations ---------------------------------------------------------------------------


def test_box_centres_map_to_patch_rows_and_columns_of_the_grid():
    cx = np.array([0.0, 0.2499, 0.25, 0.74, 1.0])
    cy = np.array([1.0, 0.5, 0.1, 0.99, 0.0])
    row, col = vlm.patch_cells(cx, cy, (4, 4))
    assert row.tolist() == [3, 2, 0, 3, 0]
    assert col.tolist() == [0, 0, 1, 2, 3]
    row, col = vlm.patch_cells(np.array([0.5]), np.array([0.51]), (24, 24))
    assert (row[0], col[0]) == (12, 12)


def vision_config(**vision) -> dict:
    return {"model": {"vision": {"kind": "patch", "preset": "tiny", "overrides": {}, **vision}}}


def test_encoder_grid_comes_from_the_run_config(tmp_path):
    assert vlm.encoder_grid(vision_config(image_size=64)) == (8, 8)  # tiny: 8 px patches
    assert vlm.encoder_grid(vision_config()) == (4, 4)  # tiny's own 32 px
    assert vlm.encoder_grid(vision_config(kind="eva02", preset="paper")) == (24, 24)
    assert vlm.encoder_grid(vision_config(kind="clip", preset="paper", image_size=448)) == (32, 32)
    big = vision_config(image_size=336, overrides={"patch_size": 14})
    assert vlm.encoder_grid(big) == (24, 24)
    hf = tmp_path / "siglip"
    hf.mkdir()
    atomic_write_json(hf / "config.json", {"vision_config": {"patch_size": 14, "image_size": 384}})
    assert vlm.encoder_grid(vision_config(kind="siglip", pretrained=str(hf))) == (27, 27)
    assert vlm.encoder_grid(vision_config(kind="siglip", pretrained=str(tmp_path / "x"))) is None
    assert vlm.encoder_grid({}) is None


def test_location_cells_pool_seeds_per_patch_and_rows_weigh_examples():
    runs = runs_table(
        [("a", "mamba", "task_agnostic", "s=0"), ("b", "mamba", "task_agnostic", "s=1")]
    )
    loc = pd.DataFrame(
        [
            # run, index, benchmark, task, score, cx, cy, row, col, patch, grid rows, cols
            ["a", 0, "shapes/grounding", "grounding", 1.0, 0.1, 0.1, 0, 0, 0, 2, 2],
            ["b", 0, "shapes/grounding", "grounding", 0.0, 0.1, 0.1, 0, 0, 0, 2, 2],
            ["a", 1, "shapes/grounding", "grounding", 1.0, 0.9, 0.1, 0, 1, 1, 2, 2],
            ["a", 2, "shapes/grounding", "grounding", 0.0, 0.9, 0.9, 1, 1, 3, 2, 2],
            ["a", 3, "shapes/dense_caption", "dense_caption", 0.5, 0.1, 0.9, 1, 0, 2, 2, 2],
        ],
        columns=vlm.LOCATION_COLUMNS,
    )
    cells = vlm_tables.location_cells(runs, loc).set_index(["row", "col"])
    assert cells.loc[(0, 0), "n"] == 2 and cells.loc[(0, 0), "accuracy"] == 0.5
    assert cells.loc[(0, 1), "accuracy"] == 1.0 and cells.loc[(1, 1), "accuracy"] == 0.0
    assert (1, 0) not in cells.index  # the dense caption is another task
    by_row = vlm_tables.location_by_row(cells.reset_index()).set_index("row")
    assert by_row.loc[0, "n"] == 3 and by_row.loc[0, "accuracy"] == pytest.approx(2 / 3)
    assert by_row.loc[1, "accuracy"] == 0.0
    for fig in (
        vlm_plots.location_heatmaps(cells.reset_index()),
        vlm_plots.location_rows(by_row.reset_index()),
    ):
        assert len(fig.axes) >= 1


def test_runs_without_a_directory_are_pending_unless_a_live_worker_holds_their_lock(tmp_path):
    import socket

    config = {"model": {"lm": {"arch": "mamba"}, "sequence": {"ordering": "task_aware"}}}
    runs = [{"name": n, "id": n, "config": config} for n in ("queued", "starting")]
    atomic_write_json(tmp_path / "sweep.json", {"name": "s", "kind": "vlm", "runs": runs})
    holder = {"host": socket.gethostname(), "pid": os.getpid()}  # this live process
    atomic_write_json(tmp_path / "locks" / "starting.lock", holder)
    sweep = vlm.load_vlm_sweep(tmp_path)
    assert sweep.runs["state"].tolist() == ["pending", "running"]
    assert sweep.runs["ordering"].tolist() == ["task_aware", "task_aware"]
    assert sweep.scores.empty and sweep.curves.empty and not sweep.runs["evaluated"].any()
    assert vlm_tables.vlm_notes(sweep)[0].startswith("No run has held-out results yet")


# end to end on a real tiny sweep ------------------------------------------------------------

# the tiny-shapes preset cut to seconds: 2 + 4 steps, 12 held-out scenes (2 grounding)
FAST = {
    "stage1": {"steps": 2, "eval_every": 2, "batch_size": 4, "threads": 1, "eval_at_start": False},
    "stage2": {"steps": 4, "eval_every": 2, "batch_size": 4, "threads": 1, "eval_at_start": False},
    "data": {"n_heldout": 12},
    "max_new_tokens": 8,
}


@pytest.fixture(scope="module")
def vlm_sweep(tmp_path_factory):
    """Two real VLM runs (pythia, task-agnostic and task-aware): both stages trained and the
    held-out benchmarks scored by the debug executor, as `vlab sweep submit` does."""
    root = tmp_path_factory.mktemp("vlm_sweep")
    spec = root / "tiny.json"
    spec.write_text(
        json.dumps(
            {
                "name": "tiny-vlm",
                "kind": "vlm",
                "base": {"preset": "tiny-shapes", **FAST},
                "axes": {"model.sequence.ordering": ["task_agnostic", "task_aware"]},
            }
        )
    )
    out = root / "sw"
    argv = ["sweep", "submit", str(spec), "--out", str(out), "--executor", "debug"]
    assert main(argv) == 0
    return out


# benchmark-suite scores (x1: fractions, CIDEr) of the two runs, written as RUN/eval/<name>/
SUITE = {
    "task_agnostic": {"coco/caption": 0.9, "vqav2/vqa": 0.5, "refcoco_testA/grounding": 0.2},
    "task_aware": {"coco/caption": 1.0, "vqav2/vqa": 0.6, "refcoco_testA/grounding": 0.3},
}


def write_suite(run, scores: dict[str, float]) -> None:
    """RUN/eval/<benchmark>/{status,results}.json as a finished benchmark phase leaves them
    (plain files: the report reads nothing else); VQAv2 with its answer-type slices."""
    for key, value in scores.items():
        name, task = key.split("/")
        atomic_write_json(run / "eval" / name / "status.json", {"state": "done"})
        results = {"benchmark": name, "step": 4, "sources": {key: value}}
        results["metrics"] = {task: "CIDEr" if task == "caption" else "accuracy"}
        if name == "vqav2":
            results["slices"] = {key: {"answer_type": {"yes/no": 0.9, "number": value / 2}}}
        atomic_write_json(run / "eval" / name / "results.json", results)


@pytest.fixture(scope="module")
def rendered(vlm_sweep):
    """`vlab report SWEEP` without --template, once, after both runs' suites scored a few
    benchmarks; returns (sweep dir, stdout)."""
    import contextlib
    import io

    for name, scores in SUITE.items():
        write_suite(vlm_sweep / "runs" / name, scores)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(vlm_sweep)]) == 0
    return vlm_sweep, out.getvalue()


def test_shapes_evaluation_writes_every_answer_with_the_target_box(vlm_sweep):
    run = vlm_sweep / "runs" / "task_aware"
    rows = read_jsonl(run / "eval" / "heldout" / "predictions.jsonl")
    assert [r["index"] for r in rows] == list(range(12))
    assert {r["task"] for r in rows} == set(SHAPES_TASKS)
    located = [r for r in rows if r["task"] in ("grounding", "dense_caption")]
    assert len(located) == 4 and all("target_box" in r for r in located)
    assert all("target_box" not in r for r in rows if r["task"] in ("caption", "itm", "pope"))
    for r in located:  # the box the example's text names, unrounded
        text = r["reference"] if r["task"] == "grounding" else r["prompt"]
        assert format_norm_box(*r["target_box"]) == text


def test_a_vlm_sweep_gets_the_vlm_report_by_default(rendered):
    root, stdout = rendered
    assert "VLM sweep 'tiny-vlm': 2 runs (2 done), 2 evaluated" in stdout
    assert f"report:   {root / 'vlm.html'}" in stdout
    assert not (root / "report.html").exists()
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (root / "figures-vlm" / f"{name}.{ext}").stat().st_size > 3000
    html = (root / "vlm.html").read_text()
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) == len(FIGURES)
    for heading in (
        "All runs",
        "Held-out scores x100 per arch and ordering (mean over seeds [95% t interval])",
        "The benchmarks and their metrics",
        "Relative gain of task-aware over task-agnostic (mean over seed pairs [95% t interval])",
        "Held-out grounding score by the target's patch row",
        "Table 1: scores x100 (mean over seeds [95% t interval])",
        "Table 11: relative gain of task-aware over task-agnostic (mean over seed pairs [95% "
        "t interval])",
        "Benchmark slices: scores x100 (mean over seeds [95% t interval])",
    ):
        assert f"<h4>{heading}</h4>" in html
    # Table 1's groups, a partial sum named, the missing benchmarks noted; no Table 2 columns
    for text in ("Image Captioning", "General VQA", "Visual Grounding", "Σ (1 of 3)"):
        assert text in html
    assert "missing GQA test-dev, V7W telling (no run has it)" in html
    assert "<td>90.0</td>" in html and "<td>+11.1%</td>" in html  # COCO CIDEr x100; its gain
    assert "<td>answer_type</td>" in html and "<h4>Table 2:" not in html
    assert "coarse (summary)" in html and "fine (retrieval)" in html and "Σ coarse" in html
    assert "Traceback" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html
    assert not re.search(r'(src|href)="https?://', html)
    nb = nbformat.read(root / "vlm.ipynb", as_version=4)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_the_loaded_tables_hold_what_the_run_directories_say(vlm_sweep):
    sweep = vlm.load_vlm_sweep(vlm_sweep)
    runs = sweep.runs.set_index("name")
    assert runs.index.tolist() == runs["ordering"].tolist() == ["task_agnostic", "task_aware"]
    assert (runs["arch"] == "pythia").all() and (runs["state"] == "done").all()
    results = read_json(vlm_sweep / "runs" / "task_aware" / "eval" / "heldout" / "results.json")
    mine = sweep.scores[sweep.scores["run"] == "task_aware"].set_index("benchmark")["score"]
    assert mine.to_dict() == results["sources"]
    stages = sweep.curves.groupby("stage")["step"].unique()
    assert stages[1].tolist() == [2] and stages[2].tolist() == [2, 4]
    assert len(sweep.locations) == 2 * 4  # 2 grounding + 2 dense captions per run
    assert set(sweep.locations["grid_rows"]) == {8}  # 64 px scenes, 8 px patches
    # a `vlab vlm train --out` directory reads as a one-run VLM sweep
    run = vlm_sweep / "runs" / "task_aware"
    assert vlm.sweep_kind(run) == "vlm"
    assert vlm.load_vlm_sweep(run).runs["evaluated"].tolist() == [True]


def test_a_partial_sweep_renders_with_pending_runs_and_skipped_stages(vlm_sweep, tmp_path):
    """No run finished: one pending (listed, no directory), one with stage 1 only; the
    report lists them, skips stage 2 and the result sections with a note, no traceback."""
    sweep = tmp_path / "partial"
    shutil.copytree(vlm_sweep / "runs" / "task_agnostic", sweep / "runs" / "task_agnostic")
    for gone in ("stage2", "eval"):
        shutil.rmtree(sweep / "runs" / "task_agnostic" / gone)
    spec = read_json(vlm_sweep / "sweep.json")
    pending = json.loads(json.dumps(spec["runs"][0]))
    pending["name"], pending["config"]["model"]["lm"]["arch"] = "mamba-next", "mamba"
    atomic_write_json(sweep / "sweep.json", {**spec, "runs": [spec["runs"][0], pending]})
    assert main(["report", str(sweep), "--template", "vlm"]) == 0
    html = (sweep / "vlm.html").read_text()
    assert "No run has held-out results yet" in html
    assert "<td>mamba-next</td>" in html and "<td>pending</td>" in html
    assert "Stage 2: no run has logged an evaluation yet; skipped." in html
    assert "Traceback" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html
    assert [p.name for p in sorted((sweep / "figures-vlm").glob("*.png"))] == ["curves_stage1.png"]


def test_a_sweep_of_the_other_kind_is_one_clear_line(vlm_sweep, tmp_path, capsys):
    probe = tmp_path / "probe"
    probe.mkdir()
    atomic_write_json(
        probe / "sweep.json",
        {"name": "p", "kind": "probe", "runs": [{"name": "a", "id": "0", "config": {}}]},
    )
    assert main(["report", str(probe), "--template", "vlm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlab: error: ") and "is a probe sweep, not a VLM sweep" in err
    assert err.count("\n") == 1 and list(probe.iterdir()) == [probe / "sweep.json"]
    assert main(["report", str(vlm_sweep), "--template", "probe_report"]) == 2
    err = capsys.readouterr().err
    assert "is a VLM sweep: the probe report has nothing to show" in err
    assert err.count("\n") == 1
