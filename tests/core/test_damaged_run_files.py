"""Every file of a run directory is checked before it is trusted: whatever damage a file
suffers (cut short, another JSON type, a field of the wrong type, bytes that are not UTF-8, a
directory where it belongs), rerunning the run either goes on (the damage was harmless: a torn
last metrics line, a stale lock) or stops with one line naming what is wrong. Never a
traceback, never a file touched outside the run, never an evaluation lost, and a run that
stops on damage is not left "running".

Generated damage (hypothesis) to copies of two real runs, one finished and one stopped
half-way, then ``vlab probe run`` on them in process; plus one example test per case the issue
(#25) reported.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vlab.cli import build_parser, main
from vlab.errors import VlabError
from vlab.locks import describe, lock_holder
from vlab.probes.cli import config_from_args
from vlab.probes.trainer import run_probe
from vlab.run_records import Checkpoint, LockRecord, MetricsLine, Snapshot, Status
from vlab.rundir import RunDir

ARGS = ["--arch", "pythia", "--length", "4", "--no-progress"]
SETS = ["--set", "train.eval_every=5", "--set", "train.threads=1", "--set", "task.n_heldout=16"]
FINISHED = [*ARGS, *SETS, "--steps", "10"]  # done at step 10: evaluations 0, 5, 10
UNFINISHED = [*ARGS, *SETS, "--steps", "20"]  # stopped at step 10 of 20

FILES = ["config.json", "status.json", "metrics.jsonl", "writer.lock"]
CHECKPOINTS = ["checkpoints/last.pt", "checkpoints/step-000000005.pt"]
FIELDS = {  # the fields each record names: what "a known field" is
    "status.json": [f for f in Status.__dataclass_fields__ if f != "extra"],
    "metrics.jsonl": [f for f in MetricsLine.__dataclass_fields__ if f != "extra"],
    "writer.lock": [f for f in LockRecord.__dataclass_fields__ if f != "extra"],
    "checkpoints/last.pt": [f for f in Checkpoint.__dataclass_fields__ if f != "extra"],
    "checkpoints/step-000000005.pt": [f for f in Snapshot.__dataclass_fields__ if f != "extra"],
    "config.json": ["train.lr", "train.steps", "task.length", "model.arch", "train", "seed"],
}
# Values of the wrong type for most fields (and a right one for some: None where a field is
# optional, an integer where one is expected; the properties hold either way).
WRONG = st.one_of(
    st.sampled_from([None, True, -3, 0, 2.5, math.nan, "x", "", [], {}, [1, "a"], {"a": 1}]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def _train(out: Path, argv: list[str], stop_at: int | None = None) -> Path:
    """A real run into ``out``; with ``stop_at``, stopped there as a preemption stops it."""
    if stop_at is None:
        assert main(["probe", "run", *argv, "--out", str(out)]) == 0
        return out
    args = build_parser().parse_args(["probe", "run", *argv, "--out", str(out)])
    steps = iter(range(1, 10**6))
    stop = lambda: next(steps) >= stop_at  # noqa: E731
    run_probe(config_from_args(args), out, progress=False, should_stop=stop, log=lambda *_: 0)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = _train(tmp_path_factory.mktemp("finished") / "run", FINISHED)
    assert RunDir(out).read_status()["state"] == "done"
    return out


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory) -> Path:
    out = _train(tmp_path_factory.mktemp("unfinished") / "run", UNFINISHED, stop_at=10)
    status = RunDir(out).read_status()
    assert status["state"] == "interrupted" and status["step"] == 10
    return out


# --- damage --------------------------------------------------------------------------------


def _write_lock(run: Path, **fields) -> None:
    """A lock as a killed holder leaves it (a dead pid on this host), with ``fields`` over."""
    lock = {"host": socket.gethostname(), "pid": 2**22 + 7, "start": None, "job_id": None}
    (run / "writer.lock").write_text(json.dumps({**lock, "time": 1.7e9, **fields}))


def _set_field(run: Path, name: str, key: str, value, line: int) -> None:
    """Set ``key`` of file ``name`` (of line ``line`` of metrics.jsonl) to ``value``."""
    path = run / name
    if name.endswith(".pt"):
        data = torch.load(path, weights_only=True)
        data[key] = value
        torch.save(data, path)
    elif name == "metrics.jsonl":
        lines = path.read_text().splitlines()
        record = json.loads(lines[line % len(lines)])
        record[key] = value
        lines[line % len(lines)] = json.dumps(record)
        path.write_text("\n".join(lines) + "\n")
    else:
        if name == "writer.lock":
            _write_lock(run)
        data = json.loads(path.read_text())
        node, *parents = key.split(".")[::-1]
        target = data
        for part in reversed(parents):
            target = target[part]
        target[node] = value
        path.write_text(json.dumps(data))


@st.composite
def damage(draw) -> tuple[str, Callable[[Path], None]]:
    """One damage to one file of a run: (what, how), ``how`` applied to a copy of the run."""
    name = draw(st.sampled_from([*FILES, *CHECKPOINTS, "checkpoints"]))
    if name == "checkpoints":
        return "checkpoints/ is a file", _folder_as_file
    kind = draw(st.sampled_from(["truncate", "wrong type", "wrong field", "bytes", "directory"]))
    if kind == "truncate":
        fraction = draw(st.floats(0, 1, exclude_max=True))

        def how(run: Path) -> None:
            if name == "writer.lock":
                _write_lock(run)
            data = (run / name).read_bytes()
            (run / name).write_bytes(data[: int(len(data) * fraction)])

        return f"{name} cut to {fraction:.3f}", how
    if kind == "wrong type":
        value = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))

        def how(run: Path) -> None:
            if name.endswith(".pt"):
                torch.save(value, run / name)
            elif name == "metrics.jsonl":
                (run / name).write_text(json.dumps(value) + "\n")
            else:
                (run / name).write_text(json.dumps(value))

        return f"{name} holds {value!r}", how
    if kind == "wrong field":
        key, value = draw(st.sampled_from(FIELDS[name])), draw(WRONG)
        line = draw(st.integers(0, 2))
        return f"{name}: {key} = {value!r}", lambda run: _set_field(run, name, key, value, line)
    if kind == "bytes":
        junk = draw(st.binary(min_size=1, max_size=4).filter(_not_utf8))
        where = draw(st.floats(0, 1))

        def how(run: Path) -> None:
            if name == "writer.lock":
                _write_lock(run)
            data = (run / name).read_bytes()
            cut = int(len(data) * where)
            (run / name).write_bytes(data[:cut] + junk + data[cut:])

        return f"{name} with {junk!r} at {where:.3f}", how
    return f"{name} is a directory", lambda run: _as_directory(run / name)


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _as_directory(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()
    (path / "inside").write_text("x")


def _folder_as_file(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    (run / "checkpoints").write_text("not a folder\n")


# --- the properties ------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` and the bytes of each file (None for a folder)."""
    found = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = path.read_bytes() if path.is_file() else None
    return found


def _metrics_lines(run: Path) -> list[str]:
    path = run / "metrics.jsonl"
    return path.read_text("utf-8", "replace").splitlines() if path.is_file() else []


def _in_order(lines: list[str], within: list[str]) -> bool:
    """Whether ``lines`` all appear in ``within``, in the same order."""
    rest = iter(within)
    return all(any(line == other for other in rest) for line in lines)


def _check_rerun(source: Path, argv: list[str], what: str, how, capsys) -> None:
    """Copy ``source``, damage the copy, rerun ``vlab probe run`` on it: the properties."""
    base = Path(tempfile.mkdtemp(prefix="damaged-"))
    try:
        run = base / "run"
        shutil.copytree(source, run)
        (base / "neighbour.txt").write_text("not the run's\n")
        before = _metrics_lines(run)
        how(run)
        damaged = _metrics_lines(run)
        kept = [line for line in before if line in damaged]  # the lines the damage spared
        files_after_damage = _snapshot(run)
        capsys.readouterr()
        code = main(["probe", "run", *argv, "--out", str(run)])
        out, err = capsys.readouterr()
        assert code in (0, 2), what
        event(f"{what.split(':')[0].split(' ')[0]}: exit {code}")  # --hypothesis-show-statistics
        assert "Traceback" not in out + err, what
        assert sorted(p.name for p in base.iterdir()) == ["neighbour.txt", "run"], what
        assert (base / "neighbour.txt").read_text() == "not the run's\n", what
        after = _metrics_lines(run)
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("vlab: error: "), (what, err)
            assert str(run) in lines[0], (what, err)
            now = _snapshot(run)
            for name, data in files_after_damage.items():  # nothing read was changed or cut
                if name not in ("status.json", "writer.lock"):
                    assert now.get(name, "gone") == data, (what, name)
            try:
                status = json.loads((run / "status.json").read_text())
            except (OSError, ValueError):
                status = None
            if isinstance(status, dict):
                assert status.get("state") != "running", (what, status)
        else:
            assert err.strip() == "", (what, err)
            assert _in_order(kept, after), what  # every spared evaluation still there
            assert RunDir(run).read_status()["state"] == "done", what
    finally:
        shutil.rmtree(base, ignore_errors=True)


PROPERTY = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(damage())
def test_damage_to_a_stopped_run_stops_its_resume_with_one_line_or_is_harmless(
    unfinished, capsys, what_how
):
    what, how = what_how
    _check_rerun(unfinished, UNFINISHED, what, how, capsys)


@PROPERTY
@given(damage())
def test_damage_to_a_finished_run_is_one_line_or_harmless_when_it_is_run_again(
    finished, capsys, what_how
):
    what, how = what_how
    _check_rerun(finished, FINISHED, what, how, capsys)


@settings(max_examples=25, deadline=None, database=None)
@given(damage().filter(lambda d: "checkpoints" in d[0] or ".pt" in d[0]))
def test_a_damaged_checkpoint_loads_whole_or_is_a_one_line_error(finished, what_how):
    """What ``vlab inspect`` and the VLM stages read, through ``RunDir.load_checkpoint``:
    the kept steps and the last checkpoint, by the same checks as a resume."""
    what, how = what_how
    with tempfile.TemporaryDirectory() as base:
        run = Path(base) / "run"
        shutil.copytree(finished, run)
        how(run)
        for step in (None, 0, 5, 10):
            try:
                loaded = RunDir(run).load_checkpoint(step=step)
            except VlabError as e:
                assert len(str(e).splitlines()) == 1 and str(run) in str(e), what
                continue
            assert loaded is None or isinstance(loaded.get("model"), dict), what


# --- the cases the issue reported ----------------------------------------------------------


def _copy(source: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(source, run)
    return run


def _rerun_fails(run: Path, argv: list[str], capsys, names: str) -> str:
    """Rerun: exit 2, one stderr line naming ``names``; the run marked failed or left."""
    capsys.readouterr()
    assert main(["probe", "run", *argv, "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert names in err, err
    return err


def test_a_directory_where_last_pt_belongs_is_an_error_and_loses_no_evaluation(
    unfinished, tmp_path, capsys
):
    run = _copy(unfinished, tmp_path)
    metrics = (run / "metrics.jsonl").read_text()
    _as_directory(run / "checkpoints" / "last.pt")
    err = _rerun_fails(run, UNFINISHED, capsys, str(run / "checkpoints" / "last.pt"))
    assert "not a regular file" in err
    assert (run / "metrics.jsonl").read_text() == metrics  # 3 lines, not cut back to 1
    status = RunDir(run).read_status()
    assert status["state"] == "failed" and "last.pt" in status["reason"]


@pytest.mark.parametrize("name", ["checkpoints/last.pt", "metrics.jsonl", "status.json"])
@pytest.mark.parametrize("leads_to", ["a-disk-that-is-gone", "a-loop"])
def test_a_link_that_leads_nowhere_is_an_error_never_no_checkpoint(
    unfinished, tmp_path, capsys, name, leads_to
):
    """A checkpoint linked to a disk that is not mounted (or a link loop) once read as "no
    checkpoint": the run restarted from step 0 and rewrote metrics.jsonl; such a status.json
    was read as "none yet" and replaced by a new file. Each is now an error, the link kept."""
    run = _copy(unfinished, tmp_path)
    metrics = (run / "metrics.jsonl").read_bytes()
    (run / name).unlink()
    target = tmp_path / "gone" / "x" if leads_to == "a-disk-that-is-gone" else run / name
    (run / name).symlink_to(target)
    err = _rerun_fails(run, UNFINISHED, capsys, str(run / name))
    assert "leads nowhere" in err
    assert (run / name).is_symlink() and not (tmp_path / "gone").exists()
    if name != "metrics.jsonl":
        assert (run / "metrics.jsonl").read_bytes() == metrics


def test_a_file_where_the_checkpoints_folder_belongs_is_an_error(unfinished, tmp_path, capsys):
    run = _copy(unfinished, tmp_path)
    metrics = (run / "metrics.jsonl").read_text()
    _folder_as_file(run)
    _rerun_fails(run, UNFINISHED, capsys, str(run / "checkpoints"))
    assert (run / "metrics.jsonl").read_text() == metrics
    assert RunDir(run).read_status()["state"] == "failed"


def _edit_checkpoint(run: Path, edit) -> None:
    path = run / "checkpoints" / "last.pt"
    torch.save(edit(torch.load(path, weights_only=True)), path)


def _without(data: dict, key: str) -> dict:
    return {k: v for k, v in data.items() if k != key}


FOREIGN = Path(__file__).resolve().parents[1] / "slurm" / "fixtures" / "sweep-2c5bbbe"


@pytest.mark.parametrize(
    ("case", "edit", "said"),
    [
        ("a list", lambda c: [c], "holds a list, not a checkpoint"),
        ("no step", lambda c: _without(c, "step"), "field 'step': missing"),
        ("a string step", lambda c: {**c, "step": "10"}, "field 'step': expected an integer"),
        ("no rng state", lambda c: {**c, "rng": {}}, "field 'rng'"),
        ("a scheduler of another step", lambda c: {**c, "step": 12}, "field 'scheduler'"),
        (
            "a mamba's weights, no config",
            lambda c: {
                **_without(c, "config"),
                "model": torch.load(
                    FOREIGN / "runs" / "mamba" / "checkpoints" / "last.pt", weights_only=True
                )["model"],
            },
            "the weights do not fit the model: missing gpt_neox.",
        ),
    ],
)
def test_a_checkpoint_of_the_wrong_shape_is_an_error_and_marks_the_run_failed(
    unfinished, tmp_path, capsys, case, edit, said
):
    run = _copy(unfinished, tmp_path)
    metrics = (run / "metrics.jsonl").read_text()
    _edit_checkpoint(run, edit)
    err = _rerun_fails(run, UNFINISHED, capsys, str(run / "checkpoints" / "last.pt"))
    assert said in err, case
    assert (run / "metrics.jsonl").read_text() == metrics
    status = RunDir(run).read_status()
    assert status["state"] == "failed" and "last.pt" in status["reason"]


@pytest.mark.parametrize(
    ("case", "line", "said"),
    [
        ("a list", b"[1, 2]", "field 'line 2': expected a JSON object"),
        ("a string step", b'{"step": "5", "accuracy": 0.5}', "field 'line 2.step'"),
        ("a byte not UTF-8", b'{"step": 5, "note": "\xff"}', "line 2 is not UTF-8"),
        ("lost lines", None, "has no line for step 10"),
    ],
)
def test_a_metrics_line_of_the_wrong_shape_is_an_error_and_nothing_is_cut(
    unfinished, tmp_path, capsys, case, line, said
):
    run = _copy(unfinished, tmp_path)
    lines = (run / "metrics.jsonl").read_bytes().split(b"\n")
    if line is None:
        lines = [lines[0], b""]  # the checkpoint's evaluations 5 and 10 gone
    else:
        lines[1] = line
    (run / "metrics.jsonl").write_bytes(b"\n".join(lines))
    damaged = (run / "metrics.jsonl").read_bytes()
    err = _rerun_fails(run, UNFINISHED, capsys, str(run / "metrics.jsonl"))
    assert said in err, case
    assert (run / "metrics.jsonl").read_bytes() == damaged
    assert RunDir(run).read_status()["state"] == "failed"


def test_a_torn_last_metrics_line_is_a_killed_append_and_the_run_resumes(
    unfinished, tmp_path, capsys
):
    run = _copy(unfinished, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + lines[-1][:20])
    capsys.readouterr()
    assert main(["probe", "run", *UNFINISHED, "--out", str(run)]) == 0
    assert _metrics_lines(run)[:3] == lines
    assert [m["step"] for m in RunDir(run).read_metrics()] == [0, 5, 10, 15, 20]


@pytest.mark.parametrize(
    ("field", "value"), [("state", 5), ("state", "paused"), ("step", "x"), ("step", -1)]
)
def test_a_status_with_a_field_of_the_wrong_type_is_an_error(
    unfinished, tmp_path, capsys, field, value
):
    run = _copy(unfinished, tmp_path)
    _set_field(run, "status.json", field, value, 0)
    err = _rerun_fails(run, UNFINISHED, capsys, str(run / "status.json"))
    assert f"field '{field}'" in err
    assert json.loads((run / "status.json").read_text())[field] == value  # left for a look


@pytest.mark.parametrize(
    "fields",
    [
        {"time": "noon"},
        {"time": 1e300},
        {"time": math.nan},
        {"pid": "12"},
        {"pid": -3},
        {"host": 7},
        {"start": 12.5},
    ],
)
def test_a_lock_of_the_wrong_shape_is_stale_and_the_run_resumes(
    unfinished, tmp_path, capsys, fields
):
    run = _copy(unfinished, tmp_path)
    _write_lock(run, **fields)
    assert lock_holder(run / "writer.lock") is None
    describe(json.loads((run / "writer.lock").read_text()))  # any lock: a line, no error
    capsys.readouterr()
    assert main(["probe", "run", *UNFINISHED, "--out", str(run)]) == 0
    assert RunDir(run).read_status()["state"] == "done"
    assert not (run / "writer.lock").exists()


def test_describe_gives_a_line_for_any_lock():
    for taken in ("noon", 1e300, math.nan, math.inf, -1e20, True, None, [1]):
        line = describe({"pid": 5, "host": "h", "time": taken})
        assert line.startswith("pid 5 on host h")
    live = {"host": socket.gethostname(), "pid": os.getpid(), "start": None, "time": 1e300}
    assert describe(live) == f"pid {os.getpid()} on host {socket.gethostname()}"


def test_a_directory_where_the_lock_belongs_is_an_error(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    _as_directory(run / "writer.lock")
    _rerun_fails(run, FINISHED, capsys, str(run / "writer.lock"))
    assert RunDir(run).read_status()["state"] == "done"


@pytest.mark.parametrize(
    ("case", "edit", "said"),
    [
        ("a directory", None, "not a regular file"),
        ("a list", lambda c: [c], "holds a list"),
        ("no model", lambda c: _without(c, "model"), "field 'model': missing"),
        ("another step's", lambda c: {**c, "step": 10}, "holds the weights of step 10"),
        ("a string step", lambda c: {**c, "step": "5"}, "field 'step'"),
    ],
)
def test_a_damaged_kept_step_is_an_error_naming_it(finished, tmp_path, case, edit, said):
    run = _copy(finished, tmp_path)
    path = RunDir(run).snapshot_path(5)
    if edit is None:
        _as_directory(path)
    else:
        torch.save(edit(torch.load(path, weights_only=True)), path)
    assert 5 in RunDir(run).snapshots()
    with pytest.raises(VlabError) as caught:
        RunDir(run).load_checkpoint(step=5)
    assert str(path) in str(caught.value) and said in str(caught.value), case
    assert RunDir(run).load_checkpoint(step=10)["step"] == 10  # the others still load


def test_vlab_inspect_of_a_damaged_kept_step_is_one_line_naming_it(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    path = RunDir(run).snapshot_path(5)
    _as_directory(path)
    argv = ["inspect", str(run), "--checkpoints", "all", "--analyses", "logit_lens"]
    capsys.readouterr()
    assert main([*argv, "--examples", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "not a regular file" in err


def test_the_old_sweep_fixture_still_reads(tmp_path):
    """Files an older vlab wrote (no nonfinite_steps, no config, no environment) load."""
    for name in ("mamba", "pythia"):
        run = RunDir(FOREIGN / "runs" / name)
        assert run.read_status()["state"] in ("done", "interrupted")
        assert [m["step"] for m in run.read_metrics()][:2] == [0, 10]
    checkpoint = RunDir(FOREIGN / "runs" / "mamba").read_checkpoint()
    assert checkpoint.step == 15 and checkpoint.nonfinite_steps == 0 and checkpoint.config is None
