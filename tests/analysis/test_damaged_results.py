"""Reports read every run file through the reading layer (#25): a damaged file of one run is
a warning naming it, that run is still shown (``unknown``, without config, or without the
damaged metrics lines) and the other runs are reported as usual; a damaged sweep.json, which
lists the runs themselves, is one line. Nothing is ever written to the damaged files.

Damage is done to a copy of ``tests/slurm/fixtures/sweep-2c5bbbe`` (``pythia`` done, ``mamba``
interrupted); the loaders are called directly, the full ``vlab report`` (papermill, slow) in
two tests only.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from vlab.analysis.inside.results import load_inside
from vlab.analysis.load import load_sweep
from vlab.analysis.vlm import load_vlm_sweep
from vlab.cli import main
from vlab.errors import VlabError
from vlab.records import join_relative
from vlab.rundir import RunDir
from vlab.vlm.train import check_stage1
from vlab.vlm.trained import trained_kind

SWEEP = Path(__file__).resolve().parents[1] / "slurm" / "fixtures" / "sweep-2c5bbbe"
NO_CHECKPOINTS = shutil.ignore_patterns("*.pt")  # the loaders never read them


def copy_sweep(where: Path) -> Path:
    sweep = where / "sweep"
    shutil.copytree(SWEEP, sweep, ignore=NO_CHECKPOINTS)
    return sweep


def files_of(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def damage(path: Path, what: bytes | None) -> None:
    """Replace the file ``path`` by ``what`` (None: a directory in its place)."""
    path.unlink()
    if what is None:
        (path / "inner").mkdir(parents=True)
    else:
        path.write_bytes(what)


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    return copy_sweep(tmp_path)


# the probe loader ---------------------------------------------------------------------------

STATUS_DAMAGE = {
    "a list": b"[1, 2]",
    "a state of the wrong type": b'{"state": 3}',
    "an unknown state": b'{"state": "exploded"}',
    "a step of the wrong type": b'{"state": "done", "step": "30"}',
    "not UTF-8": b'{"state": "done\xff"}',
    "a directory": None,
}


@pytest.mark.parametrize("kind", sorted(STATUS_DAMAGE))
def test_a_damaged_status_is_unknown_with_a_warning_and_the_other_run_shows(sweep, kind):
    damage(sweep / "runs" / "pythia" / "status.json", STATUS_DAMAGE[kind])
    before = files_of(sweep)
    loaded = load_sweep(sweep)
    states = dict(zip(loaded.runs["name"], loaded.runs["state"], strict=True))
    assert states == {"pythia": "unknown", "mamba": "interrupted"}
    said = [w for w in loaded.warnings if w.startswith("pythia: status.json is unreadable")]
    assert len(said) == 1 and "runs/pythia/status.json" in said[0]
    assert set(loaded.evaluations["run"]) == {"pythia", "mamba"}  # its curves still shown
    assert files_of(sweep) == before


METRICS_LINES = {
    "a list": b"[1, 2]",
    "a string step": b'{"step": "10", "accuracy": 0.25}',
    "a per-position vector of text": b'{"step": 10, "accuracy": 0.2, "per_position": ["a"]}',
    "not UTF-8": b'{"step": 10, "accuracy": 0.25\xff}',
    "an integer of 5000 digits": b'{"step": ' + b"1" * 5000 + b', "accuracy": 0.2}',
}


@pytest.mark.parametrize("kind", sorted(METRICS_LINES))
def test_a_metrics_line_of_the_wrong_shape_is_skipped_with_a_warning_naming_it(sweep, kind):
    metrics = sweep / "runs" / "pythia" / "metrics.jsonl"
    lines = metrics.read_bytes().split(b"\n")
    pristine = load_sweep(sweep).evaluations
    metrics.write_bytes(b"\n".join([lines[0], METRICS_LINES[kind], *lines[1:]]))
    before = files_of(sweep)
    loaded = load_sweep(sweep)
    said = [w for w in loaded.warnings if w.startswith("pythia: metrics.jsonl has a corrupt")]
    assert len(said) == 1 and "line 2" in said[0] and "1 corrupt line(s)" in said[0]
    assert loaded.evaluations.equals(pristine)  # every good line kept, nothing else
    assert files_of(sweep) == before


def test_a_directory_in_place_of_metrics_is_a_warning_and_no_curves(sweep):
    damage(sweep / "runs" / "pythia" / "metrics.jsonl", None)
    loaded = load_sweep(sweep)
    assert any(w.startswith("pythia: metrics.jsonl is unreadable") for w in loaded.warnings)
    assert set(loaded.evaluations["run"]) == {"mamba"}
    assert loaded.runs.set_index("name").loc["pythia", "state"] == "done"


CONFIG_DAMAGE = {
    "a list": b"[]",
    "a section of the wrong type": b'{"task": [], "model": {}, "train": {}}',
    "a length of text": b'{"task": {"length": "4"}, "model": {}, "train": {}}',
    "an arch that is a list": b'{"task": {}, "model": {"arch": ["x"]}, "train": {}}',
    "not UTF-8": b'{"task": {"variant": "\xff"}}',
    "a directory": None,
}


@pytest.mark.parametrize("kind", sorted(CONFIG_DAMAGE))
def test_a_damaged_config_is_a_warning_and_the_run_is_shown_with_its_sweep_config(sweep, kind):
    damage(sweep / "runs" / "pythia" / "config.json", CONFIG_DAMAGE[kind])
    before = files_of(sweep)
    loaded = load_sweep(sweep)
    runs = loaded.runs.set_index("name")
    assert runs.loc["pythia", "state"] == "done" and runs.loc["mamba", "state"] == "interrupted"
    said = [w for w in loaded.warnings if w.startswith("pythia: ")]
    assert len(said) == 1 and "runs/pythia/config.json" in said[0]
    assert runs.loc["pythia", "arch"] == "pythia"  # sweep.json still says what it is
    assert files_of(sweep) == before


# the VLM and inside loaders ----------------------------------------------------------------


def vlm_run(root: Path, results: bytes) -> Path:
    """A finished VLM run (both stages done, evaluated) whose results.json holds ``results``."""
    run = root / "r1"
    config = {"model": {"lm": {"arch": "pythia"}}, "stage1": {"steps": 10}, "stage2": {}}
    for stage in (1, 2):
        files = RunDir(run / f"stage{stage}")
        files.path.mkdir(parents=True)
        files.write_config({**config, "stage": stage})
        files.write_status("done", step=10)
    evaluation = RunDir(run / "eval" / "heldout")
    evaluation.path.mkdir(parents=True)
    evaluation.write_status("done", step=10)
    (evaluation.path / "results.json").write_bytes(results)
    return run


@pytest.mark.parametrize(
    "results, field",
    [
        (b'{"sources": {"shapes/vqa": "high"}}', "sources.shapes/vqa"),
        (b'{"sources": {"shapes/vqa": 0.5}, "metrics": {"vqa": 1}}', "metrics.vqa"),
        (b'{"sources": {}, "examples": -4}', "examples"),
    ],
)
def test_damaged_vlm_results_leave_out_the_scores_with_a_warning(tmp_path, results, field):
    run = vlm_run(tmp_path, results)
    loaded = load_vlm_sweep(tmp_path, locations=False)
    assert loaded.runs["state"].tolist() == ["done"] and not loaded.runs["evaluated"].any()
    (said,) = loaded.warnings
    assert str(run / "eval" / "heldout" / "results.json") in said and field in said


def test_a_stage_metrics_line_with_tasks_of_the_wrong_shape_is_skipped(tmp_path):
    run = vlm_run(tmp_path, b'{"sources": {"shapes/vqa": 0.5}}')
    good = {"step": 0, "loss": 1.0, "tasks": {"vqa": 0.5}}
    lines = [good, {"step": 5, "tasks": ["vqa"]}, {**good, "step": 10}]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (run / "stage2" / "metrics.jsonl").write_text(text)
    loaded = load_vlm_sweep(tmp_path, locations=False)
    assert sorted(set(loaded.curves["step"])) == [0, 10]
    (said,) = loaded.warnings
    assert "metrics.jsonl has a corrupt line" in said and "'line 2.tasks'" in said


def test_a_damaged_inside_marker_or_examples_file_is_a_warning(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    config = {"task": {"length": 3, "variant": "prefix"}, "model": {"arch": "pythia"}}
    (run / "config.json").write_text(json.dumps({**config, "train": {}}))
    folder = run / "inside" / "step-000000010"
    folder.mkdir(parents=True)
    rows = "step,layer,target_position,probability,accuracy,rank\n10,0,0,0.5,1.0,0\n"
    (folder / "logit_lens.csv").write_text(rows)
    (folder / "logit_lens.json").write_bytes(b'{"examples": "eight"}')
    inside = load_inside(run)
    assert inside.logit_lens.empty
    assert any("logit_lens.json" in w and "'examples'" in w for w in inside.warnings)


def test_an_examples_image_through_a_link_loop_is_not_drawn_and_no_traceback(tmp_path):
    """join_relative resolved a link loop into a RuntimeError, which no reader caught."""
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    for relative in ("a.png", "a.png/x.png"):
        with pytest.raises(VlabError, match="loop"):
            join_relative(tmp_path, relative, "examples.json file")


# models/vlm ---------------------------------------------------------------------------------


def test_stage2_over_a_stage1_without_its_checkpoint_is_one_line_naming_it(tmp_path):
    stage1 = RunDir(tmp_path / "vlm" / "stage1")
    stage1.path.mkdir(parents=True)
    stage1.write_config({"stage": 1})
    stage1.write_status("done", step=10)
    with pytest.raises(VlabError) as e:
        check_stage1(stage1)
    assert len(str(e.value).splitlines()) == 1
    assert str(stage1.checkpoint_path) in str(e.value) and "move" in str(e.value)


def test_a_directory_in_place_of_a_vlm_runs_config_is_one_line(tmp_path):
    (tmp_path / "run" / "config.json").mkdir(parents=True)
    with pytest.raises(VlabError) as e:
        trained_kind(tmp_path / "run")
    said = str(e.value)
    assert len(said.splitlines()) == 1 and "config.json" in said and "directory" in said


# the report command -------------------------------------------------------------------------


def test_report_of_a_sweep_with_a_damaged_metrics_line_runs_and_says_so(sweep, capsys):
    metrics = sweep / "runs" / "mamba" / "metrics.jsonl"
    lines = metrics.read_bytes().split(b"\n")
    metrics.write_bytes(b"\n".join([lines[0], b'{"step": [10]}', *lines[1:]]))
    runs_before = files_of(sweep / "runs")
    assert main(["report", str(sweep), "--no-html"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "1 warnings" in captured.out
    notebook = nbformat.read(sweep / "report.ipynb", as_version=4)
    text = json.dumps(nbformat.writes(notebook))
    assert "mamba: metrics.jsonl has a corrupt line" in text and "line 2.step" in text
    assert files_of(sweep / "runs") == runs_before


def test_report_of_a_sweep_json_of_the_wrong_shape_is_one_line(sweep, capsys):
    (sweep / "sweep.json").write_bytes(b'{"name": "compat", "runs": {"a": 1}}')
    before = files_of(sweep)
    assert main(["report", str(sweep), "--no-html"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sweep.json" in err and "Traceback" not in err
    assert files_of(sweep) == before


REPORT_INPUTS = {  # each once a traceback before the report ran
    "a-link-loop": (["LOOP", "--no-html"], "loop of symbolic links"),
    "a-template-that-is-a-json-list": (["SWEEP", "--template", "LIST"], "not a notebook"),
    "a-template-of-cells-that-are-numbers": (["SWEEP", "--template", "CELLS"], "not a notebook"),
    "a-5000-digit-parameter": (["SWEEP", "-p", "threshold", "1" + "0" * 5000], "-p value"),
}


@pytest.mark.parametrize("case", sorted(REPORT_INPUTS))
def test_report_of_odd_inputs_is_one_line_and_writes_nothing(sweep, tmp_path, capsys, case):
    argv, said = REPORT_INPUTS[case]
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "list.ipynb").write_text("[1, 2]")
    cells = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [5]}
    (tmp_path / "cells.ipynb").write_text(json.dumps(cells))
    paths = {"LOOP": tmp_path / "a", "SWEEP": sweep}
    paths |= {"LIST": tmp_path / "list.ipynb", "CELLS": tmp_path / "cells.ipynb"}
    before = files_of(sweep)
    capsys.readouterr()
    assert main(["report", *[str(paths.get(a, a)) for a in argv]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("vlab: error: "), err
    assert said in err and "Traceback" not in err, err
    assert files_of(sweep) == before


# property -----------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
FIELDS = {
    "status.json": ["state", "step", "reason", "params", "arch", "threshold_step", "pid"],
    "metrics.jsonl": ["step", "accuracy", "loss", "per_position", "examples_seen"],
    "config.json": ["task", "model", "train"],
}


def _set_field(text: str, name: str, field: str, value: object) -> bytes:
    """``field`` of the file (of its second line, for metrics.jsonl) set to ``value``."""
    if name != "metrics.jsonl":
        doc = json.loads(text)
        doc[field] = value
        return json.dumps(doc).encode()
    lines = text.split("\n")
    doc = json.loads(lines[1])
    doc[field] = value
    lines[1] = json.dumps(doc)
    return "\n".join(lines).encode()


DAMAGE: st.SearchStrategy[tuple[str, Callable[[str], bytes]]] = st.one_of(
    st.tuples(
        st.sampled_from(sorted(FIELDS)),
        st.binary(max_size=40).map(lambda raw: lambda _text: raw),
    ),
    st.sampled_from(sorted(FIELDS)).flatmap(
        lambda name: st.tuples(
            st.just(name),
            st.tuples(st.sampled_from(FIELDS[name]), JSON_VALUES).map(
                lambda fv, name=name: lambda text: _set_field(text, name, *fv)
            ),
        )
    ),
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(what=DAMAGE)
def test_any_damage_to_one_run_file_leaves_the_report_of_the_other_run_as_it_was(what):
    name, make = what
    with tempfile.TemporaryDirectory() as tmp:
        sweep = copy_sweep(Path(tmp))
        pristine = load_sweep(sweep)
        file = sweep / "runs" / "pythia" / name
        file.write_bytes(make(file.read_text()))
        before = files_of(sweep)
        loaded = load_sweep(sweep)  # never raises: a run file's damage is a warning
        assert loaded.runs["name"].tolist() == pristine.runs["name"].tolist()
        # the same values; a column's dtype may widen (a null in the damaged run's column
        # makes pandas hold the whole column as floats)
        for frame, key in (("runs", "name"), ("evaluations", "run")):
            now, was = getattr(loaded, frame), getattr(pristine, frame)
            assert_frame_equal(
                now[now[key] == "mamba"].reset_index(drop=True),
                was[was[key] == "mamba"].reset_index(drop=True),
                check_dtype=False,
            )
        assert all(len(w.splitlines()) == 1 for w in loaded.warnings)
        assert files_of(sweep) == before
