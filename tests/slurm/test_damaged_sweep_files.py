"""Damaged or foreign sweep files: every command that reads a sweep directory either works or
says in one line which file and field is wrong, and nothing it does lands outside the sweep.

The sweep is the shipped fixture (pythia done at 30 of 30 steps, mamba interrupted at 15, one
submission). Each generated example copies it into a fresh folder, damages one thing (a field
of ``sweep.json`` or ``submissions.jsonl`` given the wrong JSON type, a run name that is a path,
a truncated file, bytes that are no UTF-8, a lock file of garbage, a directory where a file
belongs) and runs ``vlab sweep status``, ``prune --dry-run``, the report's loader and, for a
few examples, ``resume``, which trains the interrupted run for real when the damage leaves the
sweep readable. Then: exit 0, or exit 2 with exactly one line on stderr and no traceback;
nothing outside the sweep directory created or changed; both runs' metrics still there.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlab.analysis.load import find_runs, load_sweep
from vlab.cli import main
from vlab.errors import VlabError
from vlab.slurm.spec import MAX_RUNS, SweepSpec, count_runs, expand, load_spec
from vlab.slurm.sweepdir import SweepDir

FIXTURE = Path(__file__).parent / "fixtures" / "sweep-2c5bbbe"
PARENT = "{PARENT}"  # in a generated name: the example's own temporary folder, outside the sweep
DELETE = object()  # a field value that removes the field
SPEC = {  # the fixture's grid, for prune
    "name": "compat",
    "base": {
        "task": {"length": 4, "n_heldout": 16},
        "model": {"preset": "tiny"},
        "train": {"steps": 30, "eval_every": 10, "threads": 1},
    },
    "axes": {"model.arch": ["pythia", "mamba"]},
}


# the sweep and its copies -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one sweep every example copies, and a spec file of its grid beside it."""
    root = tmp_path_factory.mktemp("pristine")
    shutil.copytree(FIXTURE, root / "sweep")
    (root / "spec.json").write_text(json.dumps(SPEC))
    return root


@contextlib.contextmanager
def copy_of(pristine: Path) -> Iterator[tuple[Path, Path]]:
    """(parent, sweep): a fresh copy at ``parent/a/b/sweep``, nested so that ``../..`` from its
    ``runs/`` stays inside ``parent``, where the snapshot sees it; a file of someone else's
    beside it."""
    with tempfile.TemporaryDirectory(prefix="vlab-damage-") as tmp:
        parent = Path(tmp)
        sweep = parent / "a" / "b" / "sweep"
        shutil.copytree(pristine / "sweep", sweep)
        shutil.copy(pristine / "spec.json", parent / "spec.json")
        (parent / "a" / "someone-else.txt").write_text("not vlab's")
        yield parent, sweep


def outside(parent: Path, sweep: Path) -> dict[str, bytes | None]:
    """Everything under ``parent`` but outside ``sweep``: path -> bytes (None: a folder)."""
    found: dict[str, bytes | None] = {}
    for path in sorted(parent.rglob("*")):
        if path == sweep or sweep in path.parents:
            continue
        found[str(path.relative_to(parent))] = path.read_bytes() if path.is_file() else None
    return found


def metrics(sweep: Path) -> dict[str, list[str]]:
    return {
        run: (sweep / "runs" / run / "metrics.jsonl").read_text().splitlines()
        for run in ("pythia", "mamba")
    }


def vlab(*argv: str) -> tuple[int, str, str]:
    """``vlab ARGV`` in this process: (exit code, stdout, stderr). Any exception that is not
    the CLI's one-line error escapes and fails the test with its traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def assert_clean_exit(code: int, err: str) -> None:
    assert "Traceback" not in err
    assert code in (0, 2), err
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vlab: error: "), err


# damage -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
wrong_values = json_values | st.just(DELETE)

BAD_NAMES = [
    "..",
    ".",
    "",
    "../../X",
    "../escaped",
    f"{PARENT}/absolute",
    "/",
    "a/b",
    "a\\b",
    "x\0y",
    "x\ny",
    " x",
    "x ",
    ".hidden",
    "-rf",
    "a" * 201,
    "é" * 150,
    "\ud800",
    "pythia",  # the other run's name: a duplicate
]
bad_names = st.sampled_from(BAD_NAMES) | st.sampled_from([None, 5, 1.5, True, [], {}, ["x"]])
any_names = bad_names | st.text(max_size=40)

SWEEP_FIELDS = [
    ("name",),
    ("kind",),
    ("source",),
    ("created",),
    ("runs",),
    ("runs", 0),
    ("runs", 1),
    ("runs", 1, "name"),
    ("runs", 1, "id"),
    ("runs", 1, "overrides"),
]
CONFIG_FIELDS = [
    ("runs", 1, "config"),
    ("runs", 1, "config", "train"),
    ("runs", 1, "config", "train", "steps"),
]
SUBMISSION_FIELDS = [
    (),
    ("time",),
    ("executor",),
    ("folder",),
    ("options",),
    ("options", "workers"),
    ("jobs",),
    ("jobs", "mamba"),
    ("jobs", "mamba", "job_id"),
    ("jobs", "mamba", "log"),
]
FILES = ["sweep.json", "submissions.jsonl"]
NOT_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3", b"\x80\x81", b"\xed\xa0\x80"]


def sweep_json_damage(config: bool) -> st.SearchStrategy:
    """Damage to sweep.json that a reader must refuse or survive; with ``config``, also to a
    run's config (which a resume would train with: left out there)."""
    fields = SWEEP_FIELDS + (CONFIG_FIELDS if config else [])
    return st.one_of(
        st.tuples(st.just("sweep.json field"), st.sampled_from(fields), wrong_values),
        st.tuples(st.just("sweep.json top"), json_values),
        st.tuples(st.just("run name"), st.sampled_from([0, 1]), any_names if config else bad_names),
    )


def file_damage() -> st.SearchStrategy:
    """Cut short, bytes that are no UTF-8, a directory in the file's place."""
    return st.one_of(
        st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(0, 0.99)),
        st.tuples(
            st.just("bad bytes"),
            st.sampled_from(FILES),
            st.floats(0, 1),
            st.sampled_from(NOT_UTF8),
        ),
        st.tuples(
            st.just("directory"),
            st.sampled_from(
                ["sweep.json", "submissions.jsonl", "locks/mamba.lock", "logs/mamba.log"]
            ),
        ),
        st.tuples(st.just("file"), st.sampled_from(["locks", "logs"])),
    )


def submission_damage() -> st.SearchStrategy:
    return st.one_of(
        st.tuples(st.just("submission field"), st.sampled_from(SUBMISSION_FIELDS), wrong_values),
        st.tuples(st.just("submission line"), json_values),
    )


def lock_damage() -> st.SearchStrategy:
    contents = st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode())
    return st.tuples(st.just("lock"), st.sampled_from(["mamba", "pythia"]), contents)


def damage(sweep: Path, parent: Path, what: tuple) -> None:
    """Apply one generated damage ``what`` to the sweep at ``sweep``."""
    kind = what[0]
    if kind == "sweep.json field":
        doc = json.loads((sweep / "sweep.json").read_text())
        _set(doc, what[1], what[2])
        _write_json(sweep / "sweep.json", doc)
    elif kind == "sweep.json top":
        _write_json(sweep / "sweep.json", what[1])
    elif kind == "run name":
        name = what[2]
        if isinstance(name, str):
            name = name.replace(PARENT, str(parent))
        doc = json.loads((sweep / "sweep.json").read_text())
        doc["runs"][what[1]]["name"] = name
        _write_json(sweep / "sweep.json", doc)
    elif kind == "submission field":
        doc = json.loads((sweep / "submissions.jsonl").read_text())
        if what[1]:
            _set(doc, what[1], what[2])
        else:
            doc = None if what[2] is DELETE else what[2]
        (sweep / "submissions.jsonl").write_text(json.dumps(doc) + "\n")
    elif kind == "submission line":
        with open(sweep / "submissions.jsonl", "a") as f:
            f.write(json.dumps(what[1]) + "\n")
    elif kind == "lock":
        (sweep / "locks" / f"{what[1]}.lock").write_bytes(what[2])
    elif kind == "truncate":
        path = sweep / what[1]
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * what[2])])
    elif kind == "bad bytes":
        path = sweep / what[1]
        data = path.read_bytes()
        at = int(len(data) * what[2])
        path.write_bytes(data[:at] + what[3] + data[at:])
    elif kind == "directory":
        path = sweep / what[1]
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        path.mkdir(parents=True)
        (path / "inside").write_text("a file")
    elif kind == "file":
        path = sweep / what[1]
        if path.is_dir():
            shutil.rmtree(path)
        path.write_text("a file where a folder belongs")
    else:
        raise AssertionError(kind)


def _set(doc: Any, keys: tuple, value: Any) -> None:
    """``doc[k1][k2]... = value``, or the key removed (the path up to it exists)."""
    *parents, leaf = keys
    node = doc
    for key in parents:
        node = node[key]
    if value is DELETE and isinstance(node, dict):
        node.pop(leaf, None)
    elif value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value


def _write_json(path: Path, value: Any) -> None:
    """As vlab writes JSON, but any value (lone surrogates escaped, NaN as NaN)."""
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


READER_DAMAGE = st.one_of(
    sweep_json_damage(config=True), file_damage(), submission_damage(), lock_damage()
)
# resume trains with what it reads: no damage here may leave a run config that trains longer
RESUME_DAMAGE = st.one_of(
    sweep_json_damage(config=False), file_damage(), submission_damage(), lock_damage()
)
SLOW = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# properties -------------------------------------------------------------------------------


@settings(SLOW, max_examples=150)
@given(what=READER_DAMAGE)
def test_readers_of_a_damaged_sweep_answer_in_one_line_and_write_nothing_outside(
    pristine: Path, what: tuple
) -> None:
    with copy_of(pristine) as (parent, sweep):
        damage(sweep, parent, what)
        before, runs_before = outside(parent, sweep), metrics(sweep)

        code, _, err = vlab("sweep", "status", str(sweep))
        assert_clean_exit(code, err)
        code, _, err = vlab("sweep", "status", str(sweep), "--json")
        assert_clean_exit(code, err)
        code, _, err = vlab(
            "sweep", "prune", str(sweep), "--spec", str(parent / "spec.json"), "--dry-run"
        )
        assert_clean_exit(code, err)
        for load in (load_sweep, find_runs):  # what `vlab report` and `vlab inspect` read
            try:
                load(sweep)
            except VlabError as e:
                assert len(str(e).splitlines()) == 1, str(e)

        assert outside(parent, sweep) == before
        assert metrics(sweep) == runs_before


@settings(SLOW, max_examples=16)
@given(what=RESUME_DAMAGE)
def test_resume_of_a_damaged_sweep_trains_only_inside_it(pristine: Path, what: tuple) -> None:
    with copy_of(pristine) as (parent, sweep):
        damage(sweep, parent, what)
        before, runs_before = outside(parent, sweep), metrics(sweep)

        code, _, err = vlab("sweep", "resume", str(sweep), "--executor", "debug")

        assert_clean_exit(code, err)
        assert outside(parent, sweep) == before
        after = metrics(sweep)
        assert after["pythia"] == runs_before["pythia"]
        assert after["mamba"][: len(runs_before["mamba"])] == runs_before["mamba"]


# the cases of the issue, one by one -------------------------------------------------------


def _renamed(sweep: Path, name: str) -> None:
    doc = json.loads((sweep / "sweep.json").read_text())
    doc["runs"][1]["name"] = name
    (sweep / "sweep.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("name", ["../../X", f"{PARENT}/X"])
def test_a_run_named_by_a_path_is_refused_by_status_resume_and_inspect(
    pristine: Path, name: str
) -> None:
    with copy_of(pristine) as (parent, sweep):
        name = name.replace(PARENT, str(parent))
        _renamed(sweep, name)
        # where the name leads: a run folder that inspect or resume would have written into
        target = (sweep / "runs" / name).resolve()
        shutil.copytree(pristine / "sweep" / "runs" / "mamba", target)
        before = outside(parent, sweep)
        for argv in (
            ["sweep", "status", str(sweep)],
            ["sweep", "resume", str(sweep), "--executor", "debug"],
            ["inspect", str(sweep), "--analyses", "logit_lens", "--no-progress"],
            ["report", str(sweep), "--no-html"],
        ):
            code, _, err = vlab(*argv)
            assert code == 2, (argv, err)
            assert_clean_exit(code, err)
            assert "sweep.json: field 'runs[1].name'" in err and "not a plain name" in err
        assert outside(parent, sweep) == before
        assert not (target / "inside").exists()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "'name': missing"),
        ({"name": "compat", "runs": 5}, "'runs': expected a list"),
        ({"name": "compat", "runs": [5]}, "'runs[0]': expected"),
        ({"name": "compat", "runs": [{"id": "1", "config": {}}]}, "'runs[0].name': missing"),
        ({"name": "compat", "runs": [{"name": "a", "config": {}}]}, "'runs[0].id': missing"),
        ({"name": "compat", "runs": [{"name": "a", "id": "1"}]}, "'runs[0].config': missing"),
        ({"name": "compat", "kind": "lasagna", "runs": []}, "'kind': unknown sweep kind"),
        (
            {"name": "c", "runs": [{"name": "a", "id": "1", "config": {}}] * 2},
            "'runs[1].name': 'a' is also the name of runs[0]",
        ),
    ],
    ids=["empty", "runs-5", "entry-5", "no-name", "no-id", "no-config", "kind", "twice"],
)
def test_a_sweep_json_of_the_wrong_shape_is_one_line_naming_the_field(
    pristine: Path, doc: dict, field: str
) -> None:
    with copy_of(pristine) as (parent, sweep):
        (sweep / "sweep.json").write_text(json.dumps(doc))
        for argv in (
            ["sweep", "status", str(sweep)],
            ["sweep", "resume", str(sweep), "--executor", "debug"],
            ["sweep", "prune", str(sweep), "--spec", str(parent / "spec.json")],
            ["report", str(sweep), "--no-html"],
        ):
            code, _, err = vlab(*argv)
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"sweep.json: field {field}" in err


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("[1]", "'line 1': expected a JSON object, found a list"),
        ('{"time": 1, "executor": "debug", "jobs": 5}', "'line 1.jobs': expected"),
        ('{"time": 1, "executor": "debug", "jobs": {"mamba": 5}}', "'line 1.jobs.mamba'"),
        ('{"time": "now", "executor": "debug"}', "'line 1.time': expected a number"),
        ('{"time": 1, "executor": "cloud"}', "'line 1.executor': unknown executor"),
        ('{"time": 1, "executor": "local", "options": {"workers": 0}}', "'line 1.options.workers'"),
    ],
    ids=["list", "jobs-5", "job-5", "time", "executor", "workers"],
)
def test_a_submissions_line_of_the_wrong_shape_is_one_line_naming_it(
    pristine: Path, line: str, field: str
) -> None:
    with copy_of(pristine) as (_, sweep):
        (sweep / "submissions.jsonl").write_text(line + "\n")
        for argv in (["status"], ["resume", "--executor", "debug"]):
            code, _, err = vlab("sweep", argv[0], str(sweep), *argv[1:])
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert f"submissions.jsonl: field {field}" in err


def test_a_torn_last_submission_line_is_dropped(pristine: Path) -> None:
    with copy_of(pristine) as (_, sweep):
        with open(sweep / "submissions.jsonl", "a") as f:
            f.write('{"time": 1, "executor": "de')  # a submit killed mid-append
        assert len(SweepDir(sweep).submissions()) == 1
        code, out, _ = vlab("sweep", "status", str(sweep))
        assert code == 0 and "pythia" in out


@pytest.mark.parametrize(
    ("tail", "kept"),
    [('{"time": 1, "executor": "de', 1), ('{"time": 2, "executor": "debug", "jobs": {}}', 2)],
    ids=["torn", "whole-without-newline"],
)
def test_a_submission_after_an_unended_last_line_keeps_the_file_readable(
    pristine: Path, tail: str, kept: int
) -> None:
    with copy_of(pristine) as (_, sweep):
        (sweep / "submissions.jsonl").write_text((sweep / "submissions.jsonl").read_text() + tail)
        SweepDir(sweep).record_submission({"executor": "debug", "jobs": {}})
        assert len(SweepDir(sweep).submissions()) == kept + 1


def test_one_damaged_status_still_shows_the_other_runs(pristine: Path) -> None:
    with copy_of(pristine) as (_, sweep):
        (sweep / "runs" / "mamba" / "status.json").write_bytes(b"\xff{")
        code, out, _ = vlab("sweep", "status", str(sweep), "--json")
        rows = {r["name"]: r for r in json.loads(out)}
        assert code == 0 and rows["pythia"]["state"] == "done"
        assert rows["mamba"]["state"] == "unknown" and "status.json" in rows["mamba"]["reason"]


@pytest.mark.parametrize("link", ["runs", "runs/pythia", "locks"])
def test_a_folder_linked_to_a_disk_that_is_gone_is_damage_never_no_run_started(
    pristine: Path, link: str
) -> None:
    """runs/ linked to scratch that is not mounted read as "no run has started": status showed
    the runs pending and prune dropped them from sweep.json."""
    with copy_of(pristine) as (parent, sweep):
        shutil.rmtree(sweep / link)
        (sweep / link).symlink_to(parent / "gone")
        spec = (sweep / "sweep.json").read_bytes()
        code, out, err = vlab("sweep", "prune", str(sweep), "--spec", "cpu-small")
        assert_clean_exit(code, err)
        assert code == 2 and str(sweep / link) in err and "leads nowhere" in err
        assert (sweep / "sweep.json").read_bytes() == spec
        code, out, err = vlab("sweep", "status", str(sweep), "--json")
        assert_clean_exit(code, err)
        if code == 0:
            states = {r["name"]: r["state"] for r in json.loads(out)}
            assert "pending" not in states.values() and "unknown" in states.values()
        assert not (parent / "gone").exists()


def test_run_paths_are_joined_only_from_plain_names(tmp_path: Path) -> None:
    sweep = SweepDir(tmp_path / "sweep")
    assert sweep.run_path("a") == tmp_path / "sweep" / "runs" / "a"
    assert sweep.lock_path("a") == tmp_path / "sweep" / "locks" / "a.lock"
    assert sweep.log_path("a") == tmp_path / "sweep" / "logs" / "a.log"
    for bad in ("..", "../x", "/tmp/x", "a/b", "x\0", ".lock", ""):
        for join in (sweep.run_path, sweep.lock_path, sweep.log_path):
            with pytest.raises(VlabError, match="not a plain name"):
                join(bad)


# spec files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "x", "axes": ["model.arch"]}, "field 'axes': must map dotted keys to lists"),
        ({"name": "x", "axes": {"task.length": 4}}, "field 'axes.task.length': expected a list"),
        ({"name": "x", "runs": {"a": 1}}, "field 'runs': expected a list"),
        ({"name": "x", "runs": [4]}, "field 'runs[0]': expected a mapping"),
        ({"name": "x", "base": [1]}, "base must be a mapping"),
        ({"name": "x", "base": {"train": 5, "train.lr": 1}}, "field 'base': a setting is both"),
        ({"name": "x", "description": 5}, "field 'description': expected a string"),
        ({"name": ["x"]}, "name must be a non-empty string"),
        ({"name": "x", "per_arch": [1]}, "per_arch must map architectures"),
    ],
    ids=["axes-list", "axis-4", "runs-map", "run-4", "base", "base-clash", "desc", "name", "arch"],
)
def test_a_spec_file_of_the_wrong_shape_is_one_line_naming_the_field(
    tmp_path: Path, spec: dict, message: str
) -> None:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    code, _, err = vlab("sweep", "submit", str(path), "--executor", "debug", "--out", "sw")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "sw").exists()


def test_a_grid_larger_than_the_limit_is_refused_before_it_is_expanded() -> None:
    values = list(range(1000))  # 1000^3 = a billion runs: expanding would never end
    spec = SweepSpec(name="huge", axes={"train.seed": values, "task.seed": values, "x": values})
    with pytest.raises(VlabError) as e:
        expand(spec)
    message = str(e.value)
    assert "1,000,000,000 runs" in message and f"{MAX_RUNS:,}" in message
    assert count_runs(spec) == 10**9  # counting is fine: it expands nothing
    small = SweepSpec(name="ok", base=SPEC["base"], axes={"model.arch": ["pythia", "mamba"]})
    assert len(expand(small)) == 2


def test_a_yaml_spec_that_does_not_parse_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: x\naxes: [\n")
    with pytest.raises(VlabError) as e:
        load_spec(str(path))
    assert len(str(e.value).splitlines()) == 1


# examples.json --------------------------------------------------------------------------------


@pytest.mark.parametrize("file", ["../../../secret.png", "/abs/secret.png", "sub/../../x.png"])
def test_an_example_image_outside_its_folder_is_not_drawn(tmp_path: Path, file: str) -> None:
    from vlab.analysis.inside.results import EXAMPLES_FILE, EXAMPLES_FOLDER, _read_examples

    run = tmp_path / "run"
    folder = run / "inside" / "step-000000010" / EXAMPLES_FOLDER
    folder.mkdir(parents=True)
    (folder / "example-0.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"not the run's")
    entry = {"box": [0, 0, 1, 1], "target": "red circle", "prompt": "p", "response": "r"}
    listing = {
        "grid": [2, 2],
        "image_grid": [2, 2],
        "examples": [
            {**entry, "index": 0, "file": "example-0.png"},
            {**entry, "index": 1, "file": file.replace("/abs", str(tmp_path))},
        ],
    }
    (folder / EXAMPLES_FILE).write_text(json.dumps(listing))
    warnings: list[str] = []
    rows = _read_examples(run, 10, {"run": "r"}, warnings)
    assert [Path(r["file"]) for r in rows] == [folder / "example-0.png"]
    assert len(warnings) == 1 and "missing or malformed" in warnings[0]
