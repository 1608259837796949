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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlab.errors import VlabError
from vlab.fileio import read_json, read_jsonl
from vlab.process import writer_alive

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
    root = Path(path).expanduser().resolve()
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
    root = Path(path).expanduser().resolve()
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
        data = read_json(config)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"task", "model", "train"} <= set(data)


# one run ----------------------------------------------------------------------------------


def _load_run(entry: _Entry, warnings: list[str]) -> tuple[dict, list[dict], pd.DataFrame | None]:
    """The run's row in the runs table plus its evaluation and per-position rows."""
    name = entry.name
    config = entry.config or {}
    status: dict = {}
    records: list[dict] = []
    if not (entry.path / "config.json").is_file():
        state, reason = "pending", "no run directory yet"
    else:
        try:
            config = read_json(entry.path / "config.json")
        except (OSError, ValueError) as e:
            warnings.append(f"{name}: config.json is unreadable ({e}); run shown without config")
        status, state, reason = _read_status(entry.path, name, warnings)
        records = _read_metrics(entry.path, name, warnings)
    task, model, train = (_section(config, k) for k in ("task", "model", "train"))
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
        "arch": model.get("arch", status.get("arch")),
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


def _read_status(path: Path, name: str, warnings: list[str]) -> tuple[dict, str, str | None]:
    status_path = path / "status.json"
    if not status_path.is_file():
        return {}, "unknown", "no status.json (starting, or not written by vlab)"
    try:
        status = read_json(status_path)
    except (OSError, ValueError) as e:
        warnings.append(f"{name}: status.json is unreadable ({e})")
        return {}, "unknown", "status.json unreadable"
    if not isinstance(status, dict):
        warnings.append(f"{name}: status.json is not a JSON object")
        return {}, "unknown", "status.json unreadable"
    state, reason = str(status.get("state") or "unknown"), status.get("reason")
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
    """All readable lines; a corrupt line before the last one is skipped with a warning.

    A torn last line (a writer killed mid-line, or a live run) is dropped silently by
    :func:`vlab.fileio.read_jsonl`, as every reader of run directories does.
    """
    metrics_path = path / "metrics.jsonl"
    try:
        return read_jsonl(metrics_path, strict=True)
    except VlabError as e:
        records = read_jsonl(metrics_path)
        warnings.append(
            f"{name}: metrics.jsonl has a corrupt line ({e}); corrupt lines were skipped, "
            "so this run's curves have gaps"
        )
        return records
    except (OSError, UnicodeDecodeError) as e:
        warnings.append(f"{name}: metrics.jsonl is unreadable ({e})")
        return []


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
                "accuracy": float(r["accuracy"]),
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


def _section(config: Any, key: str) -> dict:
    value = config.get(key) if isinstance(config, dict) else None
    return value if isinstance(value, dict) else {}


def as_int(value: Any) -> int | None:
    """A JSON number as an int (None for anything else, booleans and non-finite included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if math.isfinite(value) else None


def as_float(value: Any) -> float:
    """A JSON number as a float (NaN for anything else, booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _finite(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value)
