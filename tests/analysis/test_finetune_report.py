"""The finetune report (SHAKEUP's Figure 3): its tables as pure functions with known answers
(best lr per arm and resolution, the stage-2 point, the gains), and ``vlab report`` end to end
on a tiny real ``vlm-finetune`` sweep (two arms x two resolutions x two lrs, finetuned and
scored by the debug executor), rendered with papermill on a real kernel, complete and
partial; the figure's lines and the tables' cells are the runs' own numbers."""

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

from tests.models.vlm.test_finetune import train_source  # noqa: E402
from vlab.analysis import finetune, finetune_plots, vlm  # noqa: E402
from vlab.analysis.notebook import table_html  # noqa: E402
from vlab.cli import main  # noqa: E402
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
    assert rows[("mamba", 64)]["lrs in"] == "1/2"
    scores = finetune.score_table(grid, RUNS)
    assert scores.columns.tolist() == ["benchmark", "arch", "lr", "64 px / 64 tokens"] + [
        "96 px / 144 tokens"
    ]
    cells = scores.set_index(["arch", "lr"])
    assert cells.loc[("pythia", finetune.STAGE2)].tolist()[1:] == ["25.0", "37.5"]
    assert cells.loc[("pythia", "0.001")].tolist()[1:] == ["50.0", "87.5*"]
    assert cells.loc[("pythia", "0.002")].tolist()[1:] == ["75.0*", "87.5"]
    assert cells.loc[("mamba", "0.001")].tolist()[1:] == ["25.0*", "pending"]
    assert cells.loc[("mamba", "0.002")].tolist()[1:] == ["failed", "50.0*"]


def test_notes_name_the_runs_without_results():
    sweep = finetune.FinetuneSweep(None, "s", "scan", RUNS, SCORES)
    notes = finetune.finetune_notes(sweep, finetune.finetune_grid(RUNS, SCORES))
    assert notes[0].startswith("2 of 8 runs have no held-out results yet (1 failed, 1 pending)")
    assert "m64b (failed), m96a (pending)" in notes[0]
    assert not any("Dataset files" in n for n in notes)


# end to end on a real tiny sweep ------------------------------------------------------------

ARCHS = ("pythia", "mamba")
FAST = {"steps": 4, "eval_every": 2, "batch_size": 4, "threads": 1}
FIGURE = "score_by_resolution"


@pytest.fixture(scope="module")
def ft_sweep(tmp_path_factory):
    """A real finetune sweep: each arm's tiny stage-2 run finetuned on shapes image-text
    matching (yes / no answers: scores between 0 and 1 from step 0 on) at 64 and 96 px with two
    lrs (8 runs), by the debug executor, as `vlab sweep submit` does."""
    root = tmp_path_factory.mktemp("ft_sweep")
    sources = {a: str(train_source(root / f"src-{a}", arch=a)) for a in ARCHS}
    spec = {
        "name": "tiny-finetune",
        "kind": "vlm-finetune",
        "base": {"task": "itm", "train": FAST, "n_heldout": 8, "max_new_tokens": 8},
        "axes": {"arch": list(ARCHS), "resolution": [64, 96], "train.lr": [1e-3, 2e-3]},
        "per_arch": {a: {"source": s} for a, s in sources.items()},
    }
    (root / "spec.json").write_text(json.dumps(spec))
    out = root / "sw"
    argv = ["sweep", "submit", str(root / "spec.json"), "--out", str(out), "--executor", "debug"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return out


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
    # the finetune's evaluation folder is the one the sweep's status reads (files only, no torch)
    from vlab.models.vlm.finetune import eval_dir as finetune_eval_dir
    from vlab.slurm.vlm import eval_dir

    assert eval_dir(ft_sweep / "runs" / "x") == finetune_eval_dir(ft_sweep / "runs" / "x")


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


def test_a_finetune_sweep_gets_the_finetune_report_by_default(rendered):
    root, stdout = rendered
    assert "finetune sweep 'tiny-finetune': 8 runs (8 done), 8 evaluated" in stdout
    assert f"report:   {root / 'finetune.html'}" in stdout
    for ext in ("png", "pdf"):
        assert (root / "figures-finetune" / f"{FIGURE}.{ext}").stat().st_size > 3000
    html = (root / "finetune.html").read_text()
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) == 1
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
        probe / "sweep.json", {"name": "p", "kind": "probe", "runs": [{"name": "a", "config": {}}]}
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
