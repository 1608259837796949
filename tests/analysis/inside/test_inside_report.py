"""``vlab report --template inside`` end to end (two tiny trained runs, ``vlab inspect`` on every
checkpoint, the notebook rendered on a real kernel), a partial sweep, and the results reader
on hand-made tables."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vlab.analysis.inside import figures  # noqa: E402
from vlab.analysis.inside.results import (  # noqa: E402
    ANALYSES,
    COLUMNS,
    RUN_KEYS,
    last_step,
    load_inside,
)
from vlab.cli import main  # noqa: E402
from vlab.config import from_dict  # noqa: E402
from vlab.errors import VlabError  # noqa: E402
from vlab.probes.config import ProbeRunConfig  # noqa: E402
from vlab.probes.trainer import run_probe  # noqa: E402

STEPS = [0, 20, 40, 60]
FIGURES = [
    "logit_lens",
    "attention_L4",
    "queried_mass",
    "state_probe_L4",
    "state_probe_steps_L4",
    "patching_moved_L4",
    "patching_other_query_L4",
    "patching_state_conv_moved_L4",
    "patching_state_conv_other_query_L4",
]
# The probe report's files, which rendering the inside template must leave alone.
PROBE_REPORT = {"report.ipynb": "probe notebook", "report.html": "probe html"}


def _quiet(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def inspected(tmp_path_factory):
    """Two tiny runs (pythia, mamba; suffix, L = 4, checkpoints at 0, 20, 40, 60) with every
    analysis at every checkpoint, and stand-ins for the probe report's files."""
    root = tmp_path_factory.mktemp("inside_sweep")
    for arch in ("pythia", "mamba"):
        cfg = from_dict(
            ProbeRunConfig,
            {
                "task": {"length": 4, "n_heldout": 32, "variant": "suffix"},
                "model": {"arch": arch},
                "train": {
                    "steps": 60,
                    "eval_every": 20,
                    "threads": 1,
                    "stop_at_threshold": False,
                },
            },
        )
        run_probe(cfg, root / "runs" / arch, progress=False, log=lambda *_: None)
    argv = ["inspect", str(root), "--analyses", ",".join(ANALYSES), "--checkpoints", "all"]
    code, _ = _quiet([*argv, "--examples", "32", "--no-progress"])
    assert code == 0
    for name, text in PROBE_REPORT.items():
        (root / name).write_text(text)
    (root / "figures").mkdir()
    (root / "figures" / "learning_curves.png").write_bytes(b"probe figure")
    return root


@pytest.fixture(scope="module")
def rendered(inspected):
    code, stdout = _quiet(["report", str(inspected), "--template", "inside"])
    assert code == 0
    return inspected, stdout


def _outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    return code, [o for c in code for o in c.outputs]


def _notes(outputs) -> list[str]:
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    return re.findall(r'<div class="vlab-note"[^>]*>&#9888; (.*?)</div>', html)


def test_inside_report_writes_its_own_files_and_leaves_the_probe_report(rendered):
    root, stdout = rendered
    assert f"report:   {root / 'inside.html'}" in stdout
    assert f"notebook: {root / 'inside.ipynb'}" in stdout
    assert f"figures:  {root / 'figures-inside'}/ ({len(FIGURES)} PNG" in stdout
    written = sorted(p.stem for p in (root / "figures-inside").glob("*.png"))
    assert written == sorted(FIGURES)
    for name in FIGURES:
        for ext in ("png", "pdf"):
            assert (root / "figures-inside" / f"{name}.{ext}").stat().st_size > 5000
    for name, text in PROBE_REPORT.items():
        assert (root / name).read_text() == text
    assert [p.name for p in (root / "figures").iterdir()] == ["learning_curves.png"]
    assert not [p for p in root.iterdir() if p.name.startswith(".report-")]


def test_inside_notebook_ran_cleanly_and_html_embeds_every_figure(rendered):
    root, _ = rendered
    code, outputs = _outputs(root / "inside.ipynb")
    assert all(c.get("execution_count") for c in code)
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    assert _notes(outputs) == []  # every run inspected, every analysis there
    html = (root / "inside.html").read_text()
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', html)) == len(FIGURES)
    assert "<td>runs/mamba</td>" in html and "<td>runs/pythia</td>" in html
    assert "Warnings and notes:</strong> none." in html
    assert "Traceback" not in html


def test_load_inside_concatenates_every_run_and_checkpoint(inspected):
    results = load_inside(inspected)
    assert results.warnings == []
    assert results.runs.set_index("run")["inspected_steps"].to_dict() == {
        "runs/mamba": 4,
        "runs/pythia": 4,
    }
    for analysis in ANALYSES:
        table = results.tables[analysis]
        assert list(table.columns) == [*RUN_KEYS, "step", *COLUMNS[analysis]]
        assert set(table["arch"]) == {"pythia", "mamba"}
        assert set(table["variant"]) == {"suffix"} and set(table["length"]) == {4}
        for run in ("runs/pythia", "runs/mamba"):
            assert sorted(table[table["run"] == run]["step"].unique()) == STEPS
        assert set(last_step(table)["step"]) == {60}
    assert len(results.units) == 2 * len(STEPS) * len(ANALYSES)
    assert set(results.units["examples_used"]) == {32}
    # the tables agree with one another: the lens reads after every block and the embeddings
    lens, attention = results.logit_lens, results.attention
    for run in ("runs/pythia", "runs/mamba"):
        blocks = attention[attention["run"] == run]["layer"].nunique()
        per_step = lens[lens["run"] == run].groupby("step").size()
        assert (per_step == (blocks + 1) * 4).all()
    kinds = attention.groupby("arch")["kind"].unique().to_dict()
    assert list(kinds["pythia"]) == ["attention"] and list(kinds["mamba"]) == ["hidden_attention"]
    sources = results.state_probe.groupby("arch")["source"].unique()
    assert set(sources["pythia"]) == {"residual"}
    assert set(sources["mamba"]) == {"residual", "ssm_state"}
    sites = results.patching.groupby("arch")["site"].unique()
    assert set(sites["pythia"]) == {"resid_pre"} and set(sites["mamba"]) == {
        "resid_pre",
        "ssm_state",
        "conv_window",
        "state_and_window",
    }


def test_partial_sweep_renders_with_notes_naming_what_is_missing(inspected, tmp_path):
    sweep = tmp_path / "partial"
    for arch in ("pythia", "mamba"):
        shutil.copytree(inspected / "runs" / arch, sweep / "runs" / arch)
    shutil.rmtree(sweep / "runs" / "mamba" / "inside")  # never inspected
    for marker in (sweep / "runs" / "pythia" / "inside").glob("*/patching.*"):
        marker.unlink()  # nobody ran patching
    code, _ = _quiet(["report", str(sweep), "--template", "inside", "--no-html"])
    assert code == 0
    _, outputs = _outputs(sweep / "inside.ipynb")
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    notes = _notes(outputs)
    assert any(n.startswith("runs/mamba: no inside/ results (never inspected)") for n in notes)
    assert any(n.startswith("no patching results in any run: run `vlab inspect") for n in notes)
    written = {p.stem for p in (sweep / "figures-inside").glob("*.png")}
    assert written == {f for f in FIGURES if not f.startswith("patching")}
    assert not (sweep / "inside.html").exists() and not (sweep / "report.ipynb").exists()


def test_patching_tables_from_before_the_conv_window_sites_still_render(inspected, tmp_path):
    # patching version 1 had resid_pre and ssm_state only: the heatmaps show those, and a note
    # says how to add the state-or-conv view
    sweep = tmp_path / "older"
    shutil.copytree(inspected / "runs", sweep / "runs")
    for csv in (sweep / "runs").glob("*/inside/*/patching.csv"):
        table = pd.read_csv(csv)
        table[table["site"].isin(["resid_pre", "ssm_state"])].to_csv(csv, index=False)
    code, _ = _quiet(["report", str(sweep), "--template", "inside", "--no-html"])
    assert code == 0
    _, outputs = _outputs(sweep / "inside.ipynb")
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    notes = _notes(outputs)
    assert [n for n in notes if n.startswith("these patching results predate the conv window")]
    written = {p.stem for p in (sweep / "figures-inside").glob("*.png")}
    assert written == {f for f in FIGURES if not f.startswith("patching_state_conv")}


# results.py on hand-made tables ---------------------------------------------------------------


def _run_dir(root, name, arch="pythia", length=3):
    path = root / name
    path.mkdir(parents=True)
    config = {"task": {"length": length, "variant": "prefix"}, "model": {"arch": arch}}
    (path / "config.json").write_text(json.dumps({**config, "train": {}}))
    return path


def _result(run, step, analysis, table=None, marker=True, text=None):
    folder = run / "inside" / f"step-{step:09d}"
    folder.mkdir(parents=True, exist_ok=True)
    if text is None:
        table = table if table is not None else _table(analysis, step)
        text = table.to_csv(index=False)
    (folder / f"{analysis}.csv").write_text(text)
    if marker:
        (folder / f"{analysis}.json").write_text(json.dumps({"examples": 8, "seconds": 0.5}))


def _table(analysis, step):
    rows = {
        "logit_lens": [[-1, 0, 0.1, 0.0, 2.0], [0, 0, 0.9, 1.0, 0.0]],
        "attention": [[0, -1, "attention", 0, 0, 0.7], [0, -1, "attention", 0, 1, 0.2]],
    }[analysis]
    table = pd.DataFrame(rows, columns=COLUMNS[analysis])
    table.insert(0, "step", step)
    return table


def test_load_inside_reads_hand_made_tables_and_reports_what_it_cannot_use(tmp_path):
    a = _run_dir(tmp_path, "a")
    _run_dir(tmp_path, "b", arch="mamba")  # never inspected
    _result(a, 10, "logit_lens")
    _result(a, 20, "logit_lens")
    _result(a, 10, "attention")
    _result(a, 20, "state_probe", text="")  # empty file
    _result(a, 20, "patching", text="step,layer\n20,0\n")  # not a patching table
    _result(a, 20, "attention", marker=False)  # being written: no marker yet
    results = load_inside(tmp_path)

    lens = results.logit_lens
    assert list(lens.columns) == [*RUN_KEYS, "step", *COLUMNS["logit_lens"]]
    assert lens[["run", "arch", "variant", "length"]].drop_duplicates().values.tolist() == [
        ["a", "pythia", "prefix", 3]
    ]
    assert lens["step"].tolist() == [10, 10, 20, 20]
    assert lens["probability"].tolist() == [0.1, 0.9, 0.1, 0.9]
    assert results.attention["step"].tolist() == [10, 10]  # the unmarked step-20 table left out
    assert results.state_probe.empty and results.patching.empty
    assert list(results.patching.columns) == [*RUN_KEYS, "step", *COLUMNS["patching"]]
    runs = results.runs.set_index("run")
    assert runs.loc["a", ["inspected_steps", "last_step", "logit_lens", "attention"]].tolist() == [
        2,
        20,
        2,
        1,
    ]
    assert runs.loc["b", "inspected_steps"] == 0 and runs.loc["b", "arch"] == "mamba"
    assert results.units["seconds"].tolist() == [0.5, 0.5, 0.5]

    text = "\n".join(results.warnings)
    assert f"b: no inside/ results (never inspected); run `vlab inspect {tmp_path / 'b'}`" in text
    assert "a: inside/step-000000020/state_probe.csv is unreadable" in text
    assert "a: inside/step-000000020/patching.csv lacks the columns corruption, site" in text
    assert "a: inside/step-000000020/attention.csv has no attention.json" in text
    assert "a: attention at 1 of 2 steps inspected" in text
    assert len(results.warnings) == 5


def test_step_selection_last_or_one_checkpoint(tmp_path):
    a, b = _run_dir(tmp_path, "a"), _run_dir(tmp_path, "b")
    for step in (0, 10, 20):
        _result(a, step, "logit_lens")
    _result(b, 10, "logit_lens")
    results = load_inside(tmp_path)
    last = results.at_step("last").logit_lens
    assert last.groupby("run")["step"].unique().map(list).to_dict() == {"a": [20], "b": [10]}
    at_20 = results.at_step(20)
    assert set(at_20.logit_lens["run"]) == {"a"}
    assert at_20.warnings[-1].startswith("b: no logit_lens results at step 20; left out")
    assert "no attention results at step 20" in at_20.missing_note("attention")
    assert "no attention results in any run" in results.at_step("last").missing_note("attention")
    with pytest.raises(VlabError, match="step must be 'last' or a checkpoint step"):
        results.at_step("first")


def test_recovery_colours_are_white_at_zero_and_linear():
    cmap, norm = figures.recovery_colors()
    white = np.array(cmap(norm(0.0))[:3])
    assert np.all(white > 0.93)  # RdBu's middle is off-white
    pale_blue, pale_red = np.array(cmap(norm(-0.2))[:3]), np.array(cmap(norm(0.2))[:3])
    assert pale_blue[2] > pale_blue[0] and pale_red[0] > pale_red[2]
    assert abs(np.abs(pale_blue - white).sum() - np.abs(pale_red - white).sum()) < 0.1
    assert figures.shown_layers(list(range(24)), 6) == [0, 5, 9, 14, 18, 23]


def test_only_the_default_template_writes_report_files(tmp_path):
    from vlab.analysis.report import report_paths

    default = report_paths(tmp_path, "probe_report")
    assert (default.notebook.name, default.html.name, default.figures.name) == (
        "report.ipynb",
        "report.html",
        "figures",
    )
    assert default.failed.name == "report.failed.ipynb"
    inside = report_paths(tmp_path, "inside", html=False)
    assert (inside.notebook.name, inside.html, inside.figures.name) == (
        "inside.ipynb",
        None,
        "figures-inside",
    )
    assert inside.failed.name == "inside.failed.ipynb"
    assert report_paths(tmp_path, "/elsewhere/mine.ipynb").figures == tmp_path / "figures-mine"


def test_attention_maps_label_each_layer_by_its_own_kind():
    """A hybrid's Mamba layer is hidden attention, its attention layer softmax attention."""
    rows = [
        {"run": "h", "step": 10, "arch": "hybrid", "variant": "suffix", "length": 2,
         "layer": layer, "head": -1, "kind": kind, "target_position": t, "source_position": s,
         "weight": 0.5}
        for layer, kind in ((0, "hidden_attention"), (1, "attention"))
        for t in range(2)
        for s in range(2)
    ]  # fmt: skip
    fig = figures.attention_maps(pd.DataFrame(rows), 2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [
        "hybrid · suffix · layer 0\nhidden attn.",
        "hybrid · suffix · layer 1\nattention, mean of heads",
    ]
