"""Read a sweep's run directories into tidy tables, tolerant of live, failed and broken runs.

A report must show every run the sweep knows about, in whatever state it is: ``pending`` (listed
in ``sweep.json``, no directory yet), ``running``, ``done``, ``failed``, ``interrupted``, or
``unknown`` (a directory without a readable ``status.json``). Nothing is dropped silently:
anything skipped (a corrupt ``metrics.jsonl`` line, a per-position vector of the wrong length,
an unreadable config) becomes a line in :attr:`Sweep.warnings`, which the report prints.

Tables (pandas, one row per observation):

- ``runs``: one row per run, columns :data:`RUN_COLUMNS`.
- ``evaluations``: one row per evaluation, columns :data:`EVAL_COLUMNS`.
- ``per_position``: one row per (evaluation, target position), columns :data:`POSITION_COLUMNS`.

Only the files of the run directory contract are read (``config.json``, ``metrics.jsonl``,
``status.json``); never the trainer's objects.

Each file is read as :class:`~vlab.rundir.RunDir` reads it (:mod:`vlab.run_records`: status.json
a ``Status``, each metrics line a ``MetricsLine``, config.json a JSON object whose fields the
tables use are of their type, :class:`TaskColumns` ...). What differs is only what a damaged
file does: resume must stop on it, a report must not. So a damaged file of one run is that
run's warning (naming the file and the field, as the one-line error would), the run is still
shown (``unknown`` for its status, without config, or without the damaged metrics lines) and
the other runs are reported as usual: one bad file among hundreds of runs must not hide the
sweep, and must not crash it later either (a metrics line that is a list, a step that is a
string or a byte that is not UTF-8 is caught here, by the record check, not in pandas).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlab.errors import VlabError
from vlab.process import writer_alive
from vlab.records import NonNegative, Real, parse_record, resolved
from vlab.run_records import MetricsLine, checked
from vlab.rundir import METRICS_FIX, RunDir

# What reading a damaged file can raise: the reading layer's DamagedFile (a VlabError), and a
# ValueError json itself raises for an integer of more than 4300 digits (not a JSONDecodeError,
# so the layer lets it through).
UNREADABLE = (VlabError, OSError, ValueError)
INT64 = 2**63  # pandas' Int64 columns hold integers below this

RUN_COLUMNS = [
    "name",
    "id",
    "arch",
    "preset",
    "variant",
    "length",
    "lr",
    "init_seed",
    "init_scheme",
    "seed",
    "task_seed",
    "pool",
    "n_heldout",
    "batch_size",
    "threshold",
    "state",
    "reason",
    "threshold_step",
    "budget",
    "last_step",
    "n_evals",
    "final_accuracy",
    "best_accuracy",
    "params",
    "state_size",
    "kv_cache",
    "path",
]
EVAL_COLUMNS = ["run", "step", "fraction", "examples_seen", "loss", "eval_loss", "accuracy"]
POSITION_COLUMNS = ["run", "step", "position", "accuracy"]

# Directories never searched for runs when there is no sweep.json.
_SKIP_DIRS = {".git", ".venv", "__pycache__", "checkpoints", "figures", "node_modules"}


@dataclass
class Sweep:
    """Everything the report knows about a sweep: three tidy tables and the warnings."""

    root: Path
    name: str
    source: str  # "sweep.json" or "scan" (a folder of run directories without sweep.json)
    runs: pd.DataFrame
    evaluations: pd.DataFrame
    per_position: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def load_sweep(path: str | Path) -> Sweep:
    """Load the sweep (or folder of run directories, or single run directory) at ``path``.

    With ``sweep.json`` its run list is authoritative (directories under ``runs/`` that it does
    not list are added with a warning); without it, every directory holding a run's
    ``config.json`` is a run, named by its path relative to ``path``. Raises
    :class:`~vlab.errors.VlabError` when ``path`` holds neither, and when sweep.json is
    damaged or foreign (then the run list itself is unknown: a warning would hide that).
    """
    root = resolved(path)
    if not root.exists():
        raise VlabError(f"{path}: no such directory")
    if not root.is_dir():
        raise VlabError(f"{path} is a file; give the sweep directory (the one with sweep.json)")
    warnings: list[str] = []
    if (root / "sweep.json").exists():  # a directory there is a damaged sweep, not a scan
        name, entries = _entries_from_sweep_json(root, warnings)
        source = "sweep.json"
    else:
        name, entries = root.name, _entries_from_scan(root)
        source = "scan"
        if not entries:
            raise VlabError(
                f"{path} is not a sweep: it has no sweep.json and no run directories "
                "(folders with a config.json written by `vlab probe`) under it; point "
                "`vlab report` at a directory made by `vlab sweep` or one that holds run "
                "directories"
            )
    rows, evals, positions = [], [], []
    for entry in entries:
        row, run_evals, run_positions = _load_run(entry, warnings)
        rows.append(row)
        evals.extend(run_evals)
        if run_positions is not None:
            positions.append(run_positions)
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for col in (
        "length",
        "init_seed",
        "seed",
        "task_seed",
        "pool",
        "n_heldout",
        "batch_size",
        "threshold_step",
        "budget",
        "last_step",
        "params",
        "state_size",
        "kv_cache",
    ):
        runs[col] = runs[col].astype("Int64")
    evaluations = pd.DataFrame(evals, columns=EVAL_COLUMNS)
    per_position = (
        pd.concat(positions, ignore_index=True)
        if positions
        else pd.DataFrame(columns=POSITION_COLUMNS)
    )
    return Sweep(root, name, source, runs, evaluations, per_position, warnings)


# discovery --------------------------------------------------------------------------------


def find_runs(path: str | Path) -> list[tuple[str, Path]]:
    """(name, directory) of every run directory that exists in the sweep, folder of runs or
    single run at ``path``, found as :func:`load_sweep` finds them."""
    root = resolved(path)
    if not root.is_dir():
        raise VlabError(f"{path}: no such directory")
    if (root / "sweep.json").exists():  # a directory there is a damaged sweep, not a scan
        entries = _entries_from_sweep_json(root, [])[1]
    else:
        entries = _entries_from_scan(root)
    found = [pair for e in entries for pair in run_dirs(e.name, e.path)]
    if not found:
        raise VlabError(f"{path}: no run directories (folders with a run's config.json) in it")
    return found


def run_dirs(name: str, path: Path) -> list[tuple[str, Path]]:
    """The run directories a sweep's run ``name`` at ``path`` holds: itself when it has a
    ``config.json`` (a probe run, a finetune), else its trained stages (a VLM run of a
    ``kind="vlm"`` sweep: ``name/stage1``, ``name/stage2``); none before it starts."""
    if (path / "config.json").is_file():
        return [(name, path)]
    return [
        (f"{name}/stage{k}", path / f"stage{k}")
        for k in (1, 2)
        if (path / f"stage{k}" / "config.json").is_file()
    ]


@dataclass
class _Entry:
    name: str
    path: Path
    id: str | None = None
    config: dict | None = None  # from sweep.json, used when the run has no directory yet


def _entries_from_sweep_json(root: Path, warnings: list[str]) -> tuple[str, list[_Entry]]:
    """The sweep's name and its runs from sweep.json, read as ``vlab sweep`` reads it
    (:class:`~vlab.slurm.sweepdir.SweepDir`): a damaged or foreign sweep.json is a one-line
    error, and each run's folder is ``runs/<name>`` of a plain name, never a path that leads
    out (``vlab inspect`` writes into these folders). Folders under ``runs/`` that it does not
    list are added with a warning."""
    from vlab.slurm.sweepdir import SweepDir

    sweep = SweepDir(root)
    spec = sweep.read()
    if not spec.runs:
        raise VlabError(f"{sweep.spec_path} lists no runs; nothing to report")
    entries = [_Entry(r.name, sweep.run_path(r.name), r.id, r.config) for r in spec.runs]
    seen = {r.name for r in spec.runs}
    runs_dir = root / "runs"
    if runs_dir.is_dir():
        for extra in sorted(runs_dir.iterdir()):
            if extra.name not in seen and (extra / "config.json").is_file():
                warnings.append(f"runs/{extra.name} is not listed in sweep.json; shown anyway")
                entries.append(_Entry(extra.name, extra))
    return spec.name, entries


def _entries_from_scan(root: Path) -> list[_Entry]:
    """Every run directory under ``root`` (``root`` itself may be one), by relative path."""
    if _is_run_dir(root):
        return [_Entry(root.name, root)]
    found = []
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir())
        except OSError:
            continue
        for child in children:
            if child.name in _SKIP_DIRS or child.name.startswith("."):
                continue
            if _is_run_dir(child):
                found.append(_Entry(child.relative_to(root).as_posix(), child))
            else:
                stack.append(child)
    return sorted(found, key=lambda e: e.name)


def _is_run_dir(path: Path) -> bool:
    """A run directory has a config.json with the probe's sections (not, say, an HF model's)."""
    config = path / "config.json"
    if not config.is_file():
        return False
    if (path / "metrics.jsonl").is_file() or (path / "status.json").is_file():
        return True
    try:
        data = RunDir(path).read_config()
    except UNREADABLE:
        return False
    return {"task", "model", "train"} <= set(data)


# one run ----------------------------------------------------------------------------------


def _load_run(entry: _Entry, warnings: list[str]) -> tuple[dict, list[dict], pd.DataFrame | None]:
    """The run's row in the runs table plus its evaluation and per-position rows."""
    name = entry.name
    config = entry.config or {}
    where = entry.path.parent.parent / "sweep.json"  # where a pending run's config is
    status: dict = {}
    records: list[dict] = []
    if not (entry.path / "config.json").exists():  # a directory there is damage: said
        state, reason = "pending", "no run directory yet"
    else:
        stored = _read_config(entry.path, name, warnings)
        if stored is not None:
            config, where = stored, entry.path / "config.json"
        status, state, reason = _read_status(entry.path, name, warnings)
        records = _read_metrics(entry.path, name, warnings)
    task, model, train = _config_columns(config, where, name, warnings)
    length = as_int(task.get("length"))
    evals, positions = _tidy_metrics(name, records, length, warnings)
    accuracies = [e["accuracy"] for e in evals if _finite(e["accuracy"])]
    budget = as_int(train.get("steps"))
    last_step = evals[-1]["step"] if evals else as_int(status.get("step"))
    if state == "done" and not evals:
        warnings.append(f"{name}: status is done but metrics.jsonl holds no evaluations")
    params = status.get("params")
    row = {
        "name": name,
        "id": entry.id,
        "arch": model.get("arch", _text(status.get("arch"))),
        "preset": model.get("pretrained") or model.get("preset"),
        "variant": task.get("variant"),
        "length": length,
        "lr": train.get("lr"),
        "init_seed": as_int(model.get("init_seed")),
        "init_scheme": model.get("init_scheme"),
        "seed": as_int(train.get("seed")),
        "task_seed": as_int(task.get("seed")),
        "pool": as_int(task.get("pool_size")),
        "n_heldout": as_int(task.get("n_heldout")),
        "batch_size": as_int(train.get("batch_size")),
        "threshold": train.get("threshold"),
        "state": state,
        "reason": reason,
        "threshold_step": as_int(status.get("threshold_step")),
        "budget": budget,
        "last_step": last_step,
        "n_evals": len(evals),
        "final_accuracy": evals[-1]["accuracy"] if evals else math.nan,
        "best_accuracy": max(accuracies) if accuracies else math.nan,
        "params": as_int(params.get("total")) if isinstance(params, dict) else as_int(params),
        **_state_columns(status.get("state_size")),
        "path": str(entry.path),
    }
    return row, evals, positions


def _state_columns(sizes: object) -> dict:
    """``state_size``: what a sequence's decoding state holds at the run's input length
    (recurrent and conv states plus the KV cache, in elements); ``kv_cache``: its attention
    part. Runs written before vlab recorded it have neither."""
    if not isinstance(sizes, dict):
        return {"state_size": None, "kv_cache": None}
    return {"state_size": as_int(sizes.get("total")), "kv_cache": as_int(sizes.get("kv_cache"))}


def _read_config(path: Path, name: str, warnings: list[str]) -> dict | None:
    """The run's config.json as :meth:`RunDir.read_config` reads it (a JSON object), or None
    with a warning naming the file when it is damaged."""
    try:
        return RunDir(path).read_config()
    except UNREADABLE as e:
        warnings.append(f"{name}: config.json is unreadable ({e}); run shown without config")
        return None


@dataclass(frozen=True)
class TaskColumns:
    """The ``task`` section of a probe run's config as far as the runs table reads it."""

    length: NonNegative | None = None
    variant: str | None = None
    seed: int | None = None
    pool_size: NonNegative | None = None
    n_heldout: NonNegative | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelColumns:
    """The ``model`` section of a probe run's config as far as the runs table reads it."""

    arch: str | None = None
    preset: str | None = None
    pretrained: str | None = None
    init_seed: int | None = None
    init_scheme: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainColumns:
    """The ``train`` section of a probe run's config as far as the runs table reads it."""

    steps: NonNegative | None = None
    lr: Real | None = None
    seed: int | None = None
    threshold: Real | None = None
    batch_size: NonNegative | None = None
    extra: dict[str, Any] = field(default_factory=dict)


SECTIONS = {"task": TaskColumns, "model": ModelColumns, "train": TrainColumns}


def _config_columns(config: dict, where: Path, name: str, warnings: list[str]) -> list[dict]:
    """The task, model and train sections of ``config`` (read from ``where``), each checked
    as its record (:data:`SECTIONS`): a field of the wrong type would put a list or a string
    into a numeric column, and fail later in a plot. Sections of the wrong shape are a
    warning naming the file and field, and the run is shown without config; a section the
    config lacks is empty (an older run, or a hand-made one)."""
    try:
        for key, record in SECTIONS.items():
            parse_record(record, config.get(key, {}), where, "the run is shown without it", key)
    except VlabError as e:
        warnings.append(f"{name}: {e}")
        return [{} for _ in SECTIONS]
    return [config.get(key, {}) for key in SECTIONS]


def _read_status(path: Path, name: str, warnings: list[str]) -> tuple[dict, str, str | None]:
    """status.json as :meth:`RunDir.read_status` reads it (a :class:`~vlab.run_records.Status`),
    with the state a reader shows; a damaged one is state ``unknown`` and a warning naming it,
    so the rest of the sweep is still reported."""
    run = RunDir(path)
    if not run.status_path.exists():  # a directory there is damage, said below
        return {}, "unknown", "no status.json (starting, or not written by vlab)"
    try:
        status = run.read_status() or {}
    except UNREADABLE as e:
        warnings.append(f"{name}: status.json is unreadable ({e})")
        return {}, "unknown", "status.json unreadable"
    state, reason = status["state"], _text(status.get("reason"))
    if (
        state == "running"
        and writer_alive(status.get("host"), status.get("pid"), status.get("slurm_job_id")) is False
    ):
        state = "interrupted"
        reason = (
            f"its process ({status.get('host')}, pid {status.get('pid')}) is gone without "
            "finishing: killed or preempted; rerunning the same command resumes it"
        )
    return status, state, reason


def _read_metrics(path: Path, name: str, warnings: list[str]) -> list[dict]:
    """Every evaluation, as :meth:`RunDir.read_metrics` reads them (each line a
    :class:`~vlab.run_records.MetricsLine`); see :func:`read_metrics_leniently` for a file
    with damaged lines."""
    return read_metrics_leniently(RunDir(path), name, warnings)


def read_metrics_leniently(
    run: RunDir, name: str, warnings: list[str], record: type = MetricsLine
) -> list[dict]:
    """The lines of ``run``'s metrics.jsonl, each checked as ``record`` (a
    :class:`~vlab.run_records.MetricsLine`, or a task's record extending it).

    The file is read by :meth:`RunDir.read_metrics` first. Where that refuses it (a line
    that is not JSON, not UTF-8 or not a metrics line), the report still shows the run: the
    good lines are kept, the damaged ones skipped, and one warning names the first damaged
    line (the message resume would stop with) and how many were skipped, so the gaps in the
    curves are said. A file that cannot be read at all (a directory in its place) is a
    warning and no evaluations. A torn last line (a writer killed mid-line, or a live run)
    is dropped silently, as every reader of run directories does.
    """
    try:
        lines = run.read_metrics()
        if record is not MetricsLine:
            for value in lines:
                parse_record(record, value, run.metrics_path, METRICS_FIX)
        return lines
    except UNREADABLE:
        pass  # read again, line by line, to keep the good ones
    return read_lines_leniently(run.metrics_path, record, METRICS_FIX, name, warnings)


def read_lines_leniently(
    file: Path,
    record: type,
    what_to_do: str,
    name: str,
    warnings: list[str],
    lost: str = "so this run's curves have gaps",
) -> list[dict]:
    """The lines of the JSON-lines ``file`` that are ``record``s, by the reading layer's rules
    (:func:`vlab.records.read_json_lines`, :func:`vlab.run_records.checked`), except that a
    damaged line is skipped, not raised: one warning names the first (the message a strict
    reader stops with) and how many were skipped. A missing file is no lines; one that cannot
    be read (a directory in its place) is a warning and no lines; a torn last line is dropped
    silently. ``lost`` ends the warning: what the skipped lines take from the report."""
    if not file.exists():
        return []
    try:
        if not file.is_file():
            raise VlabError(f"{file}: is not a regular file (a directory?); {what_to_do}")
        raw = file.read_bytes()
    except OSError as e:
        warnings.append(f"{name}: {file.name} is unreadable ({file}: {e.strerror})")
        return []
    except VlabError as e:
        warnings.append(f"{name}: {file.name} is unreadable ({e})")
        return []
    chunks = raw.split(b"\n")
    kept: list[dict] = []
    first: str | None = None
    skipped = 0
    for i, chunk in enumerate(chunks):
        if not chunk.strip():
            continue
        try:
            value = json.loads(chunk.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            if i == len(chunks) - 1:  # torn last line: no newline after it
                continue
            problem = "not UTF-8" if isinstance(e, UnicodeDecodeError) else "not valid JSON"
            first = first or f"{file}: line {i + 1} is {problem}"
            skipped += 1
            continue
        try:
            kept.append(checked(record, value, file, what_to_do, field=f"line {i + 1}"))
        except VlabError as e:
            first = first or str(e)
            skipped += 1
    if first is not None:
        warnings.append(
            f"{name}: {file.name} has a corrupt line ({first}); {skipped} corrupt line(s) "
            f"were skipped, {lost}"
        )
    return kept


def _tidy_metrics(
    name: str, records: list[dict], length: int | None, warnings: list[str]
) -> tuple[list[dict], pd.DataFrame | None]:
    """Evaluation rows sorted by step (one per step) and the per-position rows of the vectors
    whose length is the task's (None if there are none)."""
    by_step: dict[int, dict] = {}
    malformed = 0
    for r in records:
        step = as_int(r.get("step")) if isinstance(r, dict) else None
        if step is None or not isinstance(r.get("accuracy"), int | float):
            malformed += 1
            continue
        if step in by_step:
            warnings.append(f"{name}: metrics.jsonl has step {step} twice; the last one is used")
        by_step[step] = r
    if malformed:
        warnings.append(f"{name}: {malformed} metrics.jsonl record(s) without step or accuracy")
    evals, pp_steps, pp_vectors = [], [], []
    bad_lengths: set[int] = set()
    for step in sorted(by_step):
        r = by_step[step]
        evals.append(
            {
                "run": name,
                "step": step,
                "fraction": as_float(r.get("fraction")),
                "examples_seen": as_int(r.get("examples_seen")),
                "loss": as_float(r.get("loss")),
                "eval_loss": as_float(r.get("eval_loss")),
                "accuracy": as_float(r["accuracy"]),
            }
        )
        vector = r.get("per_position")
        if not isinstance(vector, list):
            continue
        if length is None:
            length = len(vector)  # no config: the first vector sets the length
        if len(vector) != length:
            bad_lengths.add(len(vector))
            continue
        pp_steps.append(step)
        pp_vectors.append([as_float(a) for a in vector])
    if bad_lengths:
        warnings.append(
            f"{name}: per-position vectors of length {sorted(bad_lengths)} do not match "
            f"task.length={length}; those evaluations are left out of the heatmaps"
        )
    if not pp_steps:
        return evals, None
    acc = np.array(pp_vectors, dtype=float)  # (evaluations, length)
    positions = pd.DataFrame(
        {
            "run": name,
            "step": np.repeat(pp_steps, acc.shape[1]),
            "position": np.tile(np.arange(acc.shape[1]), acc.shape[0]),
            "accuracy": acc.ravel(),
        }
    )
    return evals, positions


# small coercions ---------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A text column's value: a string as it is, anything else None (a file's extra keys are
    not checked by its record)."""
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    """A JSON number as an int (None for anything else, booleans, non-finite numbers and
    integers beyond pandas' Int64 included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value) if -INT64 < value < INT64 else None


def as_float(value: Any) -> float:
    """A JSON number as a float (NaN for anything else, booleans included, and for an
    integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _finite(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value)
