"""The finetune report (SHAKEUP's Figure 3): its tables as pure functions with known answers
(best lr per arm and resolution, the stage-2 point, the gains, means over seeds), and ``vlab
report`` end to end on a tiny real ``vlm-finetune`` sweep (two arms x two resolutions x two
lrs, finetuned and scored by the debug executor), rendered with papermill on a real kernel,
complete and partial; the figure's lines and the tables' cells are the runs' own numbers. A
second tiny sweep (one arm, two seeds) checks that seeds are replicas: every point is the mean
of the two runs' results.json scores with the Student t interval of the same values."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tests.vlm.test_finetune import train_source  # noqa: E402
from vlab.analysis import finetune, finetune_plots, vlm  # noqa: E402
from vlab.analysis.notebook import table_html  # noqa: E402
from vlab.analysis.stats import t_mean_ci  # noqa: E402
from vlab.analysis.vlm_tables import interval_text  # noqa: E402
from vlab.cli import main  # noqa: E402
from vlab.config import deep_merge  # noqa: E402
from vlab.fileio import atomic_write_json, read_json, read_jsonl  # noqa: E402

# hand-made runs with known answers ----------------------------------------------------------


def hand_made(rows: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(name, arch, resolution, lr, state, score, start) -> runs and scores tables as
    load_finetune_sweep makes them (task vqa, benchmark shapes/vqa, 8 px patches)."""
    runs = pd.DataFrame(
        [
            {
                "name": n,
                "arch": a,
                "task": "vqa",
                "resolution": r,
                "lr": lr,
                "setting": "",
                "seed": "",
                "source": f"/src/{a}",
                "visual_tokens": (r // 8) ** 2,
                "state": state,
                "evaluated": score is not None,
                "data": "shapes",
            }
            for n, a, r, lr, state, score, _ in rows
        ]
    )
    scores = pd.DataFrame(
        [
            [n, "shapes/vqa", "shapes VQA", "exact_match", score, start, 8]
            for n, _, _, _, _, score, start in rows
            if score is not None or start is not None
        ],
        columns=finetune.SCORE_COLUMNS,
    ).astype({"score": float, "start": float})
    return runs, scores


RUNS, SCORES = hand_made(
    [
        ("p64a", "pythia", 64, 1e-3, "done", 0.50, 0.25),
        ("p64b", "pythia", 64, 2e-3, "done", 0.75, 0.25),
        ("p96a", "pythia", 96, 1e-3, "done", 0.875, 0.375),
        ("p96b", "pythia", 96, 2e-3, "done", 0.875, 0.375),  # a tie: the smaller lr wins
        ("m64a", "mamba", 64, 1e-3, "done", 0.25, 0.125),
        ("m64b", "mamba", 64, 2e-3, "failed", None, 0.125),  # failed after step 0
        ("m96a", "mamba", 96, 1e-3, "pending", None, None),
        ("m96b", "mamba", 96, 2e-3, "done", 0.5, 0.0),
    ]
)


def test_the_best_lr_is_the_highest_score_of_an_arm_at_a_resolution_and_says_how_many_lrs():
    grid = finetune.finetune_grid(RUNS, SCORES)
    assert len(grid) == 8 and grid["arch"].tolist()[:4] == ["pythia"] * 4  # arms in order
    best = finetune.best_lr(grid).set_index(["arch", "resolution"])
    p64, p96, m64, m96 = (
        best.loc[k]
        for k in [("pythia", 64), ("pythia", 96)]
        + [
            ("mamba", 64),
            ("mamba", 96),
        ]
    )
    assert (p64["best"], p64["lr"], p64["evaluated"], p64["lrs"]) == (75.0, 2e-3, 2, 2)
    assert (p96["best"], p96["lr"]) == (87.5, 1e-3)  # tie -> the smaller lr
    assert (m64["best"], m64["lr"], m64["evaluated"], m64["lrs"]) == (25.0, 1e-3, 1, 2)
    assert (m96["best"], m96["lr"], m96["evaluated"]) == (50.0, 2e-3, 1)
    # the stage-2 point: every lr's step 0 (a failed run's too), the mean of what is logged
    assert (p64["start"], m64["start"], m96["start"]) == (25.0, 12.5, 0.0)
    assert p64["start_spread"] == 0 and best["visual_tokens"].tolist() == [64, 144, 64, 144]


def test_the_number_tables_show_best_points_gains_and_every_run_with_its_state():
    grid = finetune.finetune_grid(RUNS, SCORES)
    table = finetune.best_table(finetune.best_lr(grid))
    rows = {(r["arch"], r["resolution"]): r for _, r in table.iterrows()}
    assert "setting" not in table.columns  # nothing varies besides the grid
    p96 = rows[("pythia", 96)]
    assert (p96["best lr"], p96["lrs in"], p96["visual tokens"]) == ("0.001", "2/2", 144)
    assert (p96[finetune.STAGE2], p96["finetuned (best lr)"]) == ("37.5", "87.5")
    assert p96["gain over stage 2"] == "+50.0"
    assert p96["gain over lowest resolution"] == "+12.5"  # 87.5 - 75.0
    assert rows[("pythia", 64)]["gain over lowest resolution"] == "–"
    assert rows[("mamba", 96)]["gain over lowest resolution"] == "+25.0"  # 50.0 - 25.0
    assert rows[("mamba", 64)]["lrs in"] == "1/2" and p96["seeds"] == "1"
    scores = finetune.score_table(grid, RUNS)
    assert scores.columns.tolist() == ["benchmark", "arch", "lr", "seeds", "64 px / 64 tokens"] + [
        "96 px / 144 tokens"
    ]
    cells = scores.set_index(["arch", "lr"])
    assert cells.loc[("pythia", finetune.STAGE2)].tolist()[1:] == ["1", "25.0", "37.5"]
    assert cells.loc[("pythia", "0.001")].tolist()[1:] == ["1", "50.0", "87.5*"]
    assert cells.loc[("pythia", "0.002")].tolist()[1:] == ["1", "75.0*", "87.5"]
    assert cells.loc[("mamba", "0.001")].tolist()[1:] == ["1", "25.0*", "pending"]
    assert cells.loc[("mamba", "0.002")].tolist()[1:] == ["1", "failed", "50.0*"]


def seeded(rows: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`hand_made` runs of pythia with a seed and a source per run: (name, resolution,
    lr, seed, state, score, start); seed s finetunes source s (its stage-2 seed)."""
    runs, scores = hand_made([(n, "pythia", r, lr, st, sc, s0) for n, r, lr, _, st, sc, s0 in rows])
    runs["seed"] = [f"source.stage2.seed={s}, train.seed={s}" for *_, s, _, _, _ in rows]
    runs["source"] = [f"/src/pythia-s{s}" for *_, s, _, _, _ in rows]
    return runs, scores


SEED_RUNS, SEED_SCORES = seeded(
    [
        ("a64s0", 64, 1e-3, 0, "done", 0.875, 0.25),  # the best single run ...
        ("a64s1", 64, 1e-3, 1, "done", 0.125, 0.375),  # ... of the worse mean (50.0)
        ("b64s0", 64, 2e-3, 0, "done", 0.625, 0.25),
        ("b64s1", 64, 2e-3, 1, "done", 0.5, 0.375),  # mean 56.25: the best lr at 64 px
        ("a96s0", 96, 1e-3, 0, "done", 0.75, 0.5),
        ("a96s1", 96, 1e-3, 1, "done", 0.625, 0.5),  # mean 68.75: the best lr at 96 px
        ("b96s0", 96, 2e-3, 0, "done", 0.5, 0.5),
        ("b96s1", 96, 2e-3, 1, "pending", None, None),  # a seed not in yet
    ]
)


def test_seeds_are_averaged_and_the_best_lr_has_the_highest_mean_not_the_best_run():
    grid = finetune.finetune_grid(SEED_RUNS, SEED_SCORES)
    points = finetune.seed_means(grid).set_index(["resolution", "lr"])
    for (r, lr), values in {
        (64, 1e-3): [87.5, 12.5],
        (64, 2e-3): [62.5, 50.0],
        (96, 1e-3): [75.0, 62.5],
        (96, 2e-3): [50.0],
    }.items():
        point = points.loc[(r, lr)]
        assert (point["mean"], point["lo"], point["hi"]) == pytest.approx(
            t_mean_ci(values), nan_ok=True
        )
        assert point["values"] == tuple(values) and point["n"] == len(values)
        assert point["seeds"] == 2
    assert points.loc[(96, 2e-3), "waiting"] == "pending"
    best = finetune.best_lr(grid).set_index("resolution")
    assert (best.loc[64, "lr"], best.loc[64, "best"]) == (2e-3, 56.25)  # not 1e-3's 87.5 run
    assert (best.loc[96, "lr"], best.loc[96, "best"], best.loc[96, "n"]) == (1e-3, 68.75, 2)
    assert (best.loc[64, "lo"], best.loc[64, "hi"]) == pytest.approx(t_mean_ci([62.5, 50.0])[1:])
    # the stage-2 point: one per source run (its lrs and seeds agree), then over sources
    assert (best.loc[64, "start"], best.loc[64, "sources"]) == (31.25, 2)
    assert (best.loc[64, "start_lo"], best.loc[64, "start_hi"]) == pytest.approx(
        t_mean_ci([25.0, 37.5])[1:]
    )
    assert best.loc[96, "start_spread"] == 0 and best.loc[96, "start_lo"] == 50.0  # sd 0
    table = finetune.best_table(finetune.best_lr(grid)).set_index("resolution")
    assert table.loc[64, "finetuned (best lr)"] == interval_text(*t_mean_ci([62.5, 50.0]))
    assert (table.loc[64, "best lr"], table.loc[64, "seeds"]) == ("0.002", "2")
    assert table.loc[96, "gain over lowest resolution"] == "+12.5"  # 68.75 - 56.25
    cells = finetune.score_table(grid, SEED_RUNS).set_index("lr")
    assert cells.loc["0.001", "seeds"] == "2" and cells.loc[finetune.STAGE2, "seeds"] == "2"
    assert cells.loc["0.001", "64 px / 64 tokens"] == interval_text(*t_mean_ci([87.5, 12.5]))
    assert cells.loc["0.002", "64 px / 64 tokens"] == interval_text(*t_mean_ci([62.5, 50.0])) + "*"
    assert cells.loc["0.002", "96 px / 144 tokens"] == "50.0 (1 of 2)"
    sweep = finetune.FinetuneSweep(None, "s", "scan", SEED_RUNS, SEED_SCORES)
    notes = " ".join(finetune.finetune_notes(sweep, grid))
    assert "only in source.stage2.seed, train.seed are replicas" in notes
    assert "1 of 4 points average fewer seeds than their arm has" in notes
    assert "pythia 96 px lr 0.002 (1 of 2)" in notes


def test_notes_name_the_runs_without_results():
    sweep = finetune.FinetuneSweep(None, "s", "scan", RUNS, SCORES)
    notes = finetune.finetune_notes(sweep, finetune.finetune_grid(RUNS, SCORES))
    assert notes[0].startswith("2 of 8 runs have no held-out results yet (1 failed, 1 pending)")
    assert "m64b (failed), m96a (pending)" in notes[0]
    assert not any("Dataset files" in n for n in notes)
    assert not any("seeds" in n for n in notes[1:])  # one seed: no note on seeds


# end to end on a real tiny sweep ------------------------------------------------------------

ARCHS = ("pythia", "mamba")
FAST = {"steps": 4, "eval_every": 2, "batch_size": 4, "threads": 1}
FIGURE = "score_by_resolution"
REPORTED = "score_by_resolution_reported"


def submit_sweep(root, name: str, axes: dict, per_arch: dict | None = None):
    """A real finetune sweep at ``root / name``: stage-2 runs finetuned on shapes image-text
    matching (yes / no answers: scores between 0 and 1 from step 0 on) at 64 and 96 px with two
    lrs, crossed with ``axes``, by the debug executor, as `vlab sweep submit` does."""
    spec = {
        "name": name,
        "kind": "vlm-finetune",
        "base": {"task": "itm", "train": FAST, "n_heldout": 8, "max_new_tokens": 8},
        "axes": axes | {"resolution": [64, 96], "train.lr": [1e-3, 2e-3]},
        "per_arch": per_arch or {},
    }
    (root / f"{name}.json").write_text(json.dumps(spec))
    out = root / name
    argv = ["sweep", "submit", str(root / f"{name}.json"), "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*argv, "--executor", "debug"]) == 0
    return out


@pytest.fixture(scope="module")
def ft_sweep(tmp_path_factory):
    """Each arm's tiny stage-2 run (``ROOT/src-ARCH``) finetuned at 2 resolutions x 2 lrs
    (8 runs, one seed)."""
    root = tmp_path_factory.mktemp("ft_sweep")
    sources = {a: {"source": str(train_source(root / f"src-{a}", arch=a))} for a in ARCHS}
    return submit_sweep(root, "tiny-finetune", {"arch": list(ARCHS)}, sources)


@pytest.fixture(scope="module")
def seed_sweep(ft_sweep):
    """Two seeds of mamba's stage-2 run, :func:`ft_sweep`'s (stage seeds 0) and a twin
    trained with seed 1 (``stage1.seed``, ``stage2.seed``: the init and the training's torch
    seed), each finetuned at 2 resolutions x 2 lrs (8 runs). (The finetune's own
    ``train.seed`` would be a seed too, but on these CPU runs it changes nothing: the data
    order is the source's data seed, the weights the source's.)"""
    root = ft_sweep.parent
    seed = {"stage1": {"seed": 1}, "stage2": {"seed": 1}}
    twin = train_source(root / "src-mamba-s1", "mamba", seed)
    sources = [str(root / "src-mamba"), str(twin)]
    return submit_sweep(root, "seeds", {"source": sources})


@pytest.fixture(scope="module")
def rendered(ft_sweep):
    """`vlab report SWEEP` without --template, once; returns (sweep dir, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(ft_sweep)]) == 0
    return ft_sweep, out.getvalue()


def squeeze(html: str) -> str:
    """HTML without the whitespace between tags (nbconvert re-indents a table)."""
    return re.sub(r">\s+<", "><", html)


def known(sweep_dir) -> dict[str, dict]:
    """Per run, straight from its files: arch, resolution, lr, final and step-0 scores."""
    out = {}
    for entry in read_json(sweep_dir / "sweep.json")["runs"]:
        run = sweep_dir / "runs" / entry["name"]
        config = read_json(run / "config.json")
        results = read_json(run / "eval" / "heldout" / "results.json")
        step0 = read_jsonl(run / "metrics.jsonl")[0]
        assert step0["step"] == 0
        out[entry["name"]] = {
            "arch": config["arch"],
            "resolution": config["resolution"],
            "lr": config["train"]["lr"],
            "source": config["source"],
            "score": 100 * results["sources"]["shapes/itm"],
            "start": 100 * step0["sources"]["shapes/itm"],
            "tokens": read_json(run / "status.json")["visual_tokens"],
        }
    return out


def test_the_loaded_tables_hold_what_the_run_directories_say(ft_sweep):
    sweep = finetune.load_finetune_sweep(ft_sweep)
    runs = sweep.runs.set_index("name")
    assert len(runs) == 8 and (runs["state"] == "done").all() and runs["evaluated"].all()
    truth = known(ft_sweep)
    assert any(w["start"] > 0 for w in truth.values())  # yes / no answers: not all zeros
    for name, want in truth.items():
        row = runs.loc[name]
        assert (row["arch"], row["resolution"], row["lr"]) == (
            want["arch"],
            want["resolution"],
            want["lr"],
        )
        assert row["visual_tokens"] == want["tokens"] == (want["resolution"] // 8) ** 2
    grid = finetune.finetune_grid(sweep.runs, sweep.scores).set_index("run")
    for name, want in truth.items():
        assert grid.loc[name, "score"] == pytest.approx(want["score"])
        assert grid.loc[name, "start"] == pytest.approx(want["start"])


def test_the_figure_plots_each_arms_best_lr_and_its_stage2_point(ft_sweep):
    sweep = finetune.load_finetune_sweep(ft_sweep)
    grid = finetune.finetune_grid(sweep.runs, sweep.scores)
    fig = finetune_plots.resolution_curves(grid, sweep.runs)
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines()}
    truth = pd.DataFrame(known(ft_sweep).values())
    for arch in ARCHS:
        mine = truth[truth["arch"] == arch]
        best = mine.groupby("resolution")["score"].max()
        start = mine.groupby("resolution")["start"].mean()
        line = lines[f"best:{arch}"]
        assert line.get_xdata().tolist() == [64.0, 96.0]
        assert line.get_ydata().tolist() == pytest.approx(best.tolist())
        assert lines[f"stage2:{arch}"].get_ydata().tolist() == pytest.approx(start.tolist())
        for lr in (1e-3, 2e-3):
            by_lr = mine[mine["lr"] == lr].sort_values("resolution")["score"].tolist()
            assert lines[f"lr:{arch}:{lr:g}"].get_ydata().tolist() == pytest.approx(by_lr)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["64 px\n64 tokens", "96 px\n144 tokens"]


def seed_truth(sweep_dir) -> pd.DataFrame:
    """Per (resolution, lr) of :func:`seed_sweep`, from the runs' files: the two seeds'
    finetuned scores x100 (in source order: seed 0, 1), their mean and t interval; and
    the stage-2 point (both seeds' step-0 scores)."""
    truth = pd.DataFrame(known(sweep_dir).values()).sort_values("source", kind="stable")
    rows = []
    for (r, lr), g in truth.groupby(["resolution", "lr"]):
        assert g["source"].str.endswith("-s1").tolist() == [False, True]
        values = g["score"].tolist()
        rows.append([r, lr, tuple(values), *t_mean_ci(values), tuple(g["start"])])
    columns = ["resolution", "lr", "values", "mean", "lo", "hi", "starts"]
    return pd.DataFrame(rows, columns=columns)


def check_line(fig, gid: str, want) -> None:
    """Line ``gid`` of ``fig``'s panel goes through the means of ``want`` ((mean, lo, hi) per
    resolution, 64 and 96 px) and its bars (``ci:gid``) from lo to hi, at the line's x: the
    resolution, moved by at most a few DODGE steps."""
    ax = fig.axes[0]
    line = next(line for line in ax.get_lines() if line.get_gid() == gid)
    bars = next(c for c in ax.collections if c.get_gid() == f"ci:{gid}")
    x = line.get_xdata().tolist()
    assert x == pytest.approx([64.0, 96.0], abs=2 * finetune_plots.DODGE * 32)
    assert line.get_ydata().tolist() == pytest.approx([m for m, _, _ in want])
    segments = [float(v) for segment in bars.get_segments() for v in segment.ravel()]
    ends = [[at, lo, at, hi] for at, (_, lo, hi) in zip(x, want, strict=True)]
    assert segments == pytest.approx(sum(ends, []))


def test_finetunes_that_differ_only_in_seed_are_averaged_in_the_figure_and_tables(seed_sweep):
    sweep = finetune.load_finetune_sweep(seed_sweep)
    assert (sweep.runs["setting"] == "").all()  # one panel, no setting
    seeds = [f"source.stage1.seed={s}, source.stage2.seed={s}" for s in (0, 1)]
    assert sorted(set(sweep.runs["seed"])) == seeds
    truth = seed_truth(seed_sweep)
    assert any(len(set(v)) > 1 for v in truth["values"])  # the seeds disagree somewhere
    best = truth.sort_values("lr").groupby("resolution")["mean"].idxmax()  # tie: smaller lr
    best = truth.loc[best].set_index("resolution")
    grid = finetune.finetune_grid(sweep.runs, sweep.scores)
    fig = finetune_plots.resolution_curves(grid, sweep.runs)
    assert len(fig.axes) == 1 and "mean of 2 seeds" in fig.axes[0].get_title()
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines()}
    for lr, by_lr in truth.groupby("lr"):
        check_line(fig, f"lr:mamba:{lr:g}", by_lr[["mean", "lo", "hi"]].to_numpy())
    check_line(fig, "best:mamba", best[["mean", "lo", "hi"]].to_numpy())
    assert [t.get_text() for t in fig.axes[0].texts] == [f"{lr:g}" for lr in best["lr"]]
    # the stage-2 point: per source run (its lrs agree), then the mean over the two
    assert (truth.groupby("resolution")["starts"].nunique() == 1).all()  # lrs start alike
    starts = truth.groupby("resolution")["starts"].first()
    check_line(fig, "stage2:mamba", [t_mean_ci(list(v)) for v in starts])
    # moved apart along x, so that the bars do not hide one another
    x = {gid: lines[gid].get_xdata()[0] for gid in ("best:mamba", "stage2:mamba")}
    assert x["stage2:mamba"] - x["best:mamba"] == pytest.approx(finetune_plots.DODGE * 32)
    table = finetune.best_table(finetune.best_lr(grid)).set_index("resolution")
    for r, b in best.iterrows():
        assert table.loc[r, "finetuned (best lr)"] == interval_text(b["mean"], b["lo"], b["hi"])
        assert (table.loc[r, "best lr"], table.loc[r, "seeds"]) == (f"{b['lr']:g}", "2")
    cells = finetune.score_table(grid, sweep.runs).set_index("lr")
    for _, t in truth.iterrows():
        mark = "*" if best.loc[t["resolution"], "lr"] == t["lr"] else ""
        cell = cells.loc[
            f"{t['lr']:g}", f"{t['resolution']} px / {(t['resolution'] // 8) ** 2} tokens"
        ]
        assert cell == interval_text(t["mean"], t["lo"], t["hi"]) + mark
        assert cells.loc[f"{t['lr']:g}", "seeds"] == "2"


def test_a_sweep_with_a_seed_missing_renders_and_says_how_many_seeds_each_point_has(
    seed_sweep, tmp_path
):
    """One seed of one point never started: that point is the other seed alone, without an
    interval, and the tables, the figure and the notes say "1 of 2"."""
    sweep = tmp_path / "seeds"
    spec = read_json(seed_sweep / "sweep.json")
    shutil.copytree(seed_sweep / "runs", sweep / "runs")
    atomic_write_json(sweep / "sweep.json", spec)
    loaded = finetune.load_finetune_sweep(sweep)
    missing = loaded.runs[loaded.runs["seed"].str.endswith("stage2.seed=1")].iloc[-1]
    shutil.rmtree(missing["path"])
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", str(sweep)]) == 0
    html = (sweep / "finetune.html").read_text()
    assert "Traceback" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html
    text = " ".join(html.split())
    assert "only in source.stage1.seed, source.stage2.seed are replicas" in text
    assert "1 of 4 points average fewer seeds than their arm has" in text
    loaded = finetune.load_finetune_sweep(sweep)
    grid = finetune.finetune_grid(loaded.runs, loaded.scores)
    for table in (
        finetune.best_table(finetune.best_lr(grid)),
        finetune.score_table(grid, loaded.runs),
    ):
        assert squeeze(table_html(table, None)) in squeeze(html)
    truth = seed_truth(seed_sweep).set_index(["resolution", "lr"])
    alone = truth.loc[(missing["resolution"], missing["lr"]), "values"][0]  # seed 0's score
    label = f"{missing['resolution']} px / {(missing['resolution'] // 8) ** 2} tokens"
    cell = finetune.score_table(grid, loaded.runs).set_index("lr").loc[f"{missing['lr']:g}", label]
    assert cell.replace("*", "") == f"{alone:.1f} (1 of 2)"


def test_finetunes_of_source_runs_that_differ_only_in_seeds_are_replicas(ft_sweep, tmp_path):
    """Source runs told apart by their stage2/config.json: a twin of pythia's with another
    stage-2 seed is a replica; one with another ordering a setting; one whose config is gone
    makes its arm's sources settings by path, with a warning."""
    src = ft_sweep.parent / "src-pythia"
    config = read_json(src / "stage2" / "config.json")
    twins = {
        "seed": deep_merge(config, {"stage2": {"seed": 1}}),
        "aware": deep_merge(config, {"model": {"sequence": {"ordering": "task_aware"}}}),
    }
    for tag, twin in twins.items():
        atomic_write_json(tmp_path / f"src-{tag}" / "stage2" / "config.json", twin)

    def scan(name: str, sources: dict[str, object]) -> finetune.FinetuneSweep:
        for tag, source in sources.items():
            run = tmp_path / name / tag
            shutil.copytree(ft_sweep / "runs" / "pythia-r64-lr0.001", run)
            atomic_write_json(
                run / "config.json", read_json(run / "config.json") | {"source": str(source)}
            )
        return finetune.load_finetune_sweep(tmp_path / name)

    seeds = scan("seeds", {"a": src, "b": tmp_path / "src-seed"}).runs.set_index("name")
    assert seeds["setting"].tolist() == ["", ""]
    assert seeds["seed"].tolist() == ["source.stage2.seed=0", "source.stage2.seed=1"]
    mixed = scan("mixed", {"a": src, "b": tmp_path / "src-aware", "c": tmp_path / "src-seed"})
    runs = mixed.runs.set_index("name")
    assert runs.loc["b", "setting"] == "source.model.sequence.ordering=task_aware"
    assert runs.loc["a", "setting"] == runs.loc["c", "setting"] != runs.loc["b", "setting"]
    assert not mixed.warnings
    best = finetune.best_lr(finetune.finetune_grid(mixed.runs, mixed.scores))
    assert sorted(best["sources"]) == [1, 2]  # a and c: two source runs, one stage-2 point
    gone = scan("gone", {"a": src, "b": tmp_path / "src-gone"})
    runs = gone.runs.set_index("name")
    assert runs.loc["b", "setting"] == f"source.run={tmp_path / 'src-gone'}"
    assert runs.loc["a", "setting"] == f"source.run={src}"
    assert len(gone.warnings) == 1 and "src-gone: it has no stage2/config.json" in gone.warnings[0]


def test_a_finetune_sweep_gets_the_finetune_report_by_default(rendered):
    root, stdout = rendered
    assert "finetune sweep 'tiny-finetune': 8 runs (8 done), 8 evaluated" in stdout
    assert f"report:   {root / 'finetune.html'}" in stdout
    for ext in ("png", "pdf"):
        assert (root / "figures-finetune" / f"{FIGURE}.{ext}").stat().st_size > 3000
    html = (root / "finetune.html").read_text()
    # the held-out figure and Figure 3 on the reported split (no test split: held-out)
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) == 2
    assert (root / "figures-finetune" / f"{REPORTED}.png").stat().st_size > 3000
    assert "No run has a test split: the reported split is the held-out set." in html
    assert "The best lr is chosen on the held-out score that is plotted" in " ".join(html.split())
    assert "Traceback" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html
    assert not re.search(r'(src|href)="https?://', html)
    # the tables in the report are the functions' tables of the runs' files, cell for cell
    sweep = finetune.load_finetune_sweep(root)
    grid = finetune.finetune_grid(sweep.runs, sweep.scores)
    for table, title in (
        (finetune.best_table(finetune.best_lr(grid)), "Best lr per arm and resolution"),
        (finetune.score_table(grid, sweep.runs), "Held-out score x100 of every run"),
    ):
        assert squeeze(table_html(table, None)) in squeeze(html), title
    truth = known(root)
    table = finetune.score_table(grid, sweep.runs).set_index(["arch", "lr"])
    for want in truth.values():
        label = f"{want['resolution']} px / {want['tokens']} tokens"
        cell = table.loc[(want["arch"], f"{want['lr']:g}"), label]
        assert cell.rstrip("*") == f"{want['score']:.1f}"
    nb = nbformat.read(root / "finetune.ipynb", as_version=4)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")


def test_a_partial_sweep_renders_with_pending_and_unevaluated_runs(ft_sweep, tmp_path):
    """Two runs listed but never started, one trained but not evaluated: the report lists
    them, plots the others (a stage-2 point for the unevaluated one), no traceback."""
    sweep = tmp_path / "partial"
    spec = read_json(ft_sweep / "sweep.json")
    names = [r["name"] for r in spec["runs"]]
    for name in names[2:]:
        shutil.copytree(ft_sweep / "runs" / name, sweep / "runs" / name)
    unevaluated = names[-1]
    shutil.rmtree(sweep / "runs" / unevaluated / "eval")
    atomic_write_json(sweep / "sweep.json", spec)
    # a test split, as the finetune's benchmark phase writes it, on all done runs but one
    for name in names[2:-2]:
        where = sweep / "runs" / name / "eval" / "shapes_test"
        sources = {"shapes_test/itm": 0.5}
        atomic_write_json(where / "results.json", {"benchmark": "shapes_test", "sources": sources})
        atomic_write_json(where / "status.json", {"state": "done"})
    loaded = finetune.load_finetune_sweep(sweep).runs.set_index("name")["state"]
    assert loaded[names[0]] == loaded[names[1]] == "pending"
    assert loaded[unevaluated] == "interrupted"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", str(sweep)]) == 0
    html = (sweep / "finetune.html").read_text()
    assert f"<td>{names[0]}</td>" in html and "<td>pending</td>" in html
    assert "3 of 8 runs have no held-out results yet" in html
    assert "Traceback" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html
    assert (sweep / "figures-finetune" / f"{FIGURE}.png").is_file()
    assert (sweep / "figures-finetune" / f"{REPORTED}.png").is_file()
    # Figure 3's numbers on the test split and every run's test score, or why it has none
    ft = finetune.load_finetune_sweep(sweep)
    grid = finetune.finetune_grid(ft.runs, ft.scores)
    tested = finetune.test_split_table(grid, ft.tests, ft.runs).set_index("run")
    assert tested.loc[names[-2], "test"] == finetune.NO_TEST and len(tested) == 8
    assert tested.loc[names[:2], "test"].tolist() == ["pending", "pending"]
    assert (tested.loc[names[2:-2], "test"] == "50.0").all()
    reported = finetune.reported_table(finetune.reported_points(grid, ft.tests, ft.runs))
    assert set(reported["benchmark"]) == {"shapes ITM test"}
    for table in (tested.reset_index(), reported):
        assert squeeze(table_html(table, None)) in squeeze(html)
    assert "have no test score: " in " ".join(html.split())


def test_a_folder_of_finetune_directories_is_a_finetune_sweep(ft_sweep):
    runs = ft_sweep / "runs"
    assert vlm.sweep_kind(runs) == "vlm-finetune"
    assert vlm.sweep_kind(runs / "pythia-r64-lr0.001") == "vlm-finetune"
    scanned = finetune.load_finetune_sweep(runs)
    assert scanned.source == "scan" and len(scanned.runs) == 8
    assert scanned.runs["evaluated"].all()


def test_a_template_of_the_other_kind_is_one_clear_line(ft_sweep, tmp_path, capsys):
    probe = tmp_path / "probe"
    probe.mkdir()
    atomic_write_json(
        probe / "sweep.json",
        {"name": "p", "kind": "probe", "runs": [{"name": "a", "id": "0", "config": {}}]},
    )
    for argv, words in (
        ([str(probe), "--template", "finetune"], "is a probe sweep, not a finetune"),
        ([str(ft_sweep), "--template", "vlm"], "is a finetune (vlm-finetune) sweep, not a VLM"),
        ([str(ft_sweep), "--template", "probe_report"], "is a vlm-finetune sweep: the probe"),
    ):
        assert main(["report", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("vlab: error: ") and words in err and err.count("\n") == 1, err
    assert list(probe.iterdir()) == [probe / "sweep.json"]
    assert not (ft_sweep / "vlm.html").exists()


def test_the_summary_line_reads_files_only_without_torch(ft_sweep):
    code = (
        "import sys; from vlab.analysis import finetune; "
        f"s = finetune.load_finetune_sweep({str(ft_sweep)!r}); "
        "print(finetune.summary_line(s)); print('torch' in sys.modules)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "finetune sweep 'tiny-finetune': 8 runs (8 done), 8 evaluated, 0 warnings",
        "False",
    ]
