"""``vlab report`` end to end: a tiny sweep trained by the real trainer, rendered with papermill
on a real Jupyter kernel, exported to self-contained HTML; plus its bad-input paths."""

import os
import subprocess

os.environ.setdefault("MPLBACKEND", "Agg")

import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

import nbformat  # noqa: E402
import pytest  # noqa: E402
from nbformat.v4 import new_code_cell, new_notebook  # noqa: E402

from vlab.analysis import tables  # noqa: E402
from vlab.analysis.load import load_sweep  # noqa: E402
from vlab.analysis.summary import comparison_summary  # noqa: E402
from vlab.cli import main  # noqa: E402
from vlab.config import from_dict, to_dict  # noqa: E402
from vlab.fileio import atomic_write_json  # noqa: E402
from vlab.probes.config import ProbeRunConfig  # noqa: E402
from vlab.probes.trainer import run_probe  # noqa: E402

FIGURES = [
    "learning_curves",
    "position_heatmap_L4",
    "kaplan_meier_selected",
    "time_to_threshold_selected",
    "length_ratios",
    "time_to_threshold",
    "kaplan_meier",
    "learning_order",
    "final_accuracy",
]


def tiny(arch: str, variant: str, seed: int) -> ProbeRunConfig:
    return from_dict(
        ProbeRunConfig,
        {
            "task": {"length": 4, "n_heldout": 32, "variant": variant},
            "model": {"arch": arch, "init_seed": seed},
            # a low threshold so that some runs reach it (and stop) and others are censored
            "train": {"steps": 30, "eval_every": 10, "threads": 1, "seed": seed, "threshold": 0.6},
        },
    )


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """Eight real runs (pythia, mamba x suffix, prefix x 2 seeds), one run interrupted after
    its first step, one pending run, and sweep.json in the sweep contract's format."""
    root = tmp_path_factory.mktemp("tiny_sweep")
    entries = []
    for arch in ("pythia", "mamba"):
        for variant in ("suffix", "prefix"):
            for seed in (0, 1):
                name = f"{arch}-{variant}-s{seed}"
                cfg = tiny(arch, variant, seed)
                run_probe(cfg, root / "runs" / name, progress=False, log=lambda *_: None)
                entries.append({"name": name, "id": f"{name}-id", "config": to_dict(cfg)})
    cfg = tiny("mamba", "suffix", 2)
    run_probe(
        cfg,
        root / "runs" / "mamba-suffix-s2",
        progress=False,
        log=lambda *_: None,
        should_stop=lambda: True,
    )
    entries.append({"name": "mamba-suffix-s2", "id": "s2", "config": to_dict(cfg)})
    pending = to_dict(tiny("pythia", "suffix", 2))  # listed, never started
    entries.append({"name": "pythia-suffix-s2", "id": "p2", "config": pending})
    atomic_write_json(root / "sweep.json", {"name": "tiny", "kind": "probe", "runs": entries})
    return root


@pytest.fixture(scope="session")
def rendered(tiny_sweep):
    """The default report rendered once through the CLI; returns (sweep dir, stdout)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(tiny_sweep)]) == 0
    return tiny_sweep, out.getvalue()


def test_report_writes_notebook_html_and_figures(rendered):
    root, stdout = rendered
    assert f"report:   {root / 'report.html'}" in stdout
    assert f"notebook: {root / 'report.ipynb'}" in stdout
    assert "sweep 'tiny': 10 runs (8 done, 1 interrupted, 1 pending)" in stdout
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (root / "figures" / f"{name}.{ext}").stat().st_size > 5000
    assert not [p for p in root.iterdir() if p.name.startswith(".report-")]  # temp dir gone


def test_html_embeds_every_figure_and_the_tables_without_network(rendered):
    root, _ = rendered
    html = (root / "report.html").read_text()
    images = re.findall(r'<img[^>]+src="data:image/png;base64,', html)
    assert len(images) == len(FIGURES)
    for heading in (
        "Kaplan-Meier median examples to threshold per learning rate",
        "Every run, by learning rate and seed",
        "Kaplan-Meier median examples to threshold, selected learning rates",
        "Log-rank test between architectures, selected learning rates",
        "Kaplan-Meier median examples to threshold, all learning rates",
        "Log-rank test between architectures, all learning rates",
        "Final accuracy per architecture",
        "Final accuracy per architecture and learning rate",
        "All runs",
        "Mean held-out accuracy at fractions of training",
        "Median examples to threshold, as a multiple of the baseline arm",
    ):
        assert f"<h4>{heading}</h4>" in html
    assert html.count('<table class="dataframe vlab-table">') >= 11
    for run in ("pythia-prefix-s1", "mamba-suffix-s2", "pythia-suffix-s2"):
        assert f"<td>{run}</td>" in html
    assert "<td>interrupted</td>" in html and "<td>pending</td>" in html
    assert "mamba vs pythia" in html  # the log-rank row
    assert not re.search(r'(src|href)="https?://', html)  # opens offline
    assert "Traceback" not in html and 'data-mime-type="application/vnd.jupyter.stderr"' not in html


def test_summary_at_the_top_is_computed_from_the_data(rendered):
    """The first output is the summary: one statement per length and variant, in words built
    from the selected runs (the tiny sweep's outcome is whatever training gave, so the test
    checks the statement against the tables, not a fixed winner)."""
    root, _ = rendered
    nb = nbformat.read(root / "report.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    first = outputs[0]["data"]["text/markdown"]
    lines = first.splitlines()
    assert [line.split("**:")[0] for line in lines] == ["- **L = 4, suffix", "- **L = 4, prefix"]
    sweep = load_sweep(root)
    ttt = tables.time_to_threshold(sweep.runs, sweep.evaluations)
    selected = tables.selected_runs(ttt, tables.lr_selection(ttt, sweep.runs))
    assert first == comparison_summary(selected, threshold=0.6)
    for line in lines:
        assert "selected learning rates: mamba " in line
        assert re.search(r"(log-rank p = |no test possible)", line)
    assert "mamba 3 runs" in lines[0]  # the interrupted run counts, censored at step 0
    html = (root / "report.html").read_text()
    assert html.index("selected learning rates") < html.index("<h4>Sweep 'tiny'")


def test_executed_notebook_is_rerunnable_with_the_final_paths(rendered):
    root, _ = rendered
    nb = nbformat.read(root / "report.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert f'figures_dir = "{root / "figures"}"' in injected[0].source
    assert f'sweep_dir = "{root}"' in injected[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code)
    stderr = [o.text for c in code for o in c.outputs if o.get("name") == "stderr"]
    assert stderr == []  # no warnings leaking into the report


def test_kernel_runs_this_python_and_custom_template_path_works(tiny_sweep, tmp_path, capsys):
    template = tmp_path / "probe_env.ipynb"
    nb = new_notebook(
        cells=[
            new_code_cell(
                'sweep_dir = "."\nfigures_dir = None\nanswer = 1', metadata={"tags": ["parameters"]}
            ),
            new_code_cell("import sys\nprint('EXE', sys.executable, answer)"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}
        },
    )
    nbformat.write(nb, template)
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep / "runs" / "mamba-prefix-s0", sweep / "runs" / "only")
    assert (
        main(["report", str(sweep), "--template", str(template), "-p", "answer", "42", "--no-html"])
        == 0
    )
    out = nbformat.read(sweep / "probe_env.ipynb", as_version=4)  # named after the template
    text = "".join(o.get("text", "") for o in out.cells[-1].outputs)
    assert text.strip() == f"EXE {sys.executable} 42"
    assert not (sweep / "probe_env.html").exists() and not (sweep / "report.ipynb").exists()
    assert "report:" not in capsys.readouterr().out


def test_corrupt_metrics_line_is_a_visible_note_in_the_report(tiny_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep / "runs" / "pythia-suffix-s0", sweep / "runs" / "broken")
    shutil.copytree(tiny_sweep / "runs" / "mamba-suffix-s0", sweep / "runs" / "fine")
    metrics = sweep / "runs" / "broken" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # a line cut in half, in the middle of the file
    metrics.write_text("\n".join(lines) + "\n")
    assert main(["report", str(sweep)]) == 0
    html = (sweep / "report.html").read_text()
    note = re.search(r'<div class="vlab-note"[^>]*>(.*?)</div>', html)
    assert note and "broken: metrics.jsonl has a corrupt line" in note.group(1)
    assert "line 2 is not valid JSON" in note.group(1)


def test_failing_notebook_keeps_its_traceback_and_reports_one_line(tiny_sweep, tmp_path, capsys):
    template = tmp_path / "bad.ipynb"
    nbformat.write(
        new_notebook(
            cells=[
                new_code_cell(
                    'sweep_dir = "."\nfigures_dir = None', metadata={"tags": ["parameters"]}
                ),
                new_code_cell("raise ValueError('no good')"),
            ]
        ),
        template,
    )
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep / "runs" / "mamba-prefix-s0", sweep / "runs" / "only")
    assert main(["report", str(sweep), "--template", str(template)]) == 2
    err = capsys.readouterr().err
    assert "vlab: error: the report notebook failed in cell [3] with ValueError: no good" in err
    assert "Traceback" not in err
    assert (sweep / "bad.failed.ipynb").is_file()
    assert not (sweep / "bad.ipynb").exists() and not (sweep / "figures-bad").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "is not a sweep: it has no sweep.json and no run directories"),
        (
            ["--template", "nope"],
            "'nope' is not a report template (available: finetune, inside, probe_report, vlm",
        ),
        (["-p", "colour", "red"], "-p colour: the template has no such parameter (it has: "),
        (["-p", "sweep_dir", "x"], "-p sweep_dir is set by vlab report itself"),
        (["-p", "confidence", "high"], "-p confidence expects a number (default 0.95)"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, tiny_sweep, capsys, args, message):
    target = tmp_path / "empty"
    target.mkdir()
    if args:  # a real sweep, so that the argument itself is what fails
        target = tiny_sweep
    assert main(["report", str(target), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlab: error: ") and message in err and "Traceback" not in err
    assert list((tmp_path / "empty").iterdir()) == []


def test_parameter_values_are_parsed_as_json_then_literals():
    from vlab.analysis.report import parse_value

    assert parse_value("0.9") == 0.9 and parse_value("null") is None
    assert parse_value("None") is None and parse_value("True") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("runs/x") == "runs/x"
    assert json.loads(json.dumps(parse_value('"quoted"'))) == "quoted"


def test_work_folders_of_killed_reports_are_removed_and_live_ones_kept(tmp_path):
    import os

    from vlab.analysis.report import _remove_stale_work_dirs

    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = tmp_path / f".report-{dead.pid}-abc123"  # its process is gone
    older = tmp_path / ".report-k2j4h1"  # named before reports recorded their pid
    live = tmp_path / f".report-{os.getpid()}-xyz789"  # a report running now
    for folder in (killed, older, live):
        (folder / "figures").mkdir(parents=True)
    _remove_stale_work_dirs(tmp_path)
    assert not killed.exists() and not older.exists() and live.exists()
