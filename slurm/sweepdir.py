"""The sweep directory: what a submission writes and what ``status`` / ``resume`` / reports read.

::

    SWEEP_DIR/
      sweep.json          name, kind and the expanded runs (name, id, resolved config)
      submissions.jsonl   one line per submission: executor, options, run -> job id, logs
      runs/<name>/        one run directory per run (config.json, metrics.jsonl, status.json)
      locks/<name>.lock   held by the process training that run (host, pid, SLURM job id)
      logs/<name>.log     stdout/stderr of local workers; SLURM logs stay in submitit/
      submitit/<stamp>/   submitit's folder, a fresh one per submission (job ids get reused)

A run is owned by whoever holds its lock: two overlapping submissions never train the same
run at once, and a lock whose process is gone (killed, node lost, job requeued) is stale and
taken over.

Every file here is read back as a typed record (:class:`SweepFile`, :class:`Submission`,
:mod:`vlab.records`) before it is used: a damaged or foreign one is a one-line
:class:`~vlab.records.DamagedFile` naming the file and the field, and run names from
sweep.json meet a folder only through :func:`~vlab.records.join_name`, so a sweep.json that
names a run ``../../x`` or ``/x`` is refused, never trained or inspected there.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vlab.errors import ConfigError, VlabError
from vlab.experiment import KINDS, experiment
from vlab.fileio import append_jsonl, atomic_write_json
from vlab.records import (
    DamagedFile,
    Real,
    join_name,
    parse_record,
    plain_name,
    read_json_file,
    read_record_lines,
)
from vlab.slurm.spec import RunSpec, config_id

EXECUTORS = ("local", "slurm", "debug")

# What to do about a damaged sweep file, by file: sweep.json holds the runs themselves (their
# configs), submissions.jsonl only where earlier submissions sent them.
SWEEP_FIX = (
    "restore it, or submit the spec again into a new --out (finished runs can be moved into "
    "its runs/ folder)"
)
SUBMISSIONS_FIX = (
    "restore it, or move it aside (the runs' own folders say where each run stands; only "
    "the record of earlier jobs and logs is lost)"
)


@dataclass(frozen=True)
class SweepEntry:
    """One run of ``sweep.json``: its ``name`` (a plain folder name: it becomes
    ``runs/<name>``, ``locks/<name>.lock`` and ``logs/<name>.log``), config ``id``, fully
    resolved ``config`` and the ``overrides`` that made it (absent in some early sweeps)."""

    name: str
    id: str
    config: dict[str, Any]
    overrides: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            plain_name(self.name, "run name")
        except VlabError as e:
            raise ConfigError("name", str(e).removeprefix("run name ")) from None

    def as_json(self) -> dict:
        """The entry as sweep.json holds it (unknown keys of a later vlab kept)."""
        return {
            **self.extra,
            "name": self.name,
            "id": self.id,
            "config": self.config,
            "overrides": self.overrides,
        }


@dataclass(frozen=True)
class SweepFile:
    """``sweep.json``: the sweep's ``name``, ``kind`` (one of :data:`vlab.experiment.KINDS`),
    the spec it came from (``source``), when it was ``created`` and its ``runs`` (distinct
    names)."""

    name: str
    runs: list[SweepEntry]
    kind: str = "probe"
    source: str | None = None
    created: Real | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                "kind", f"unknown sweep kind {self.kind!r} (known: {', '.join(KINDS)})"
            )

    def as_json(self) -> dict:
        return {
            **self.extra,
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "created": self.created,
            "runs": [r.as_json() for r in self.runs],
        }


@dataclass(frozen=True)
class Job:
    """Where one submission sent one run: the scheduler's ``job_id`` (None for local and
    debug runs) and the ``log`` to read; executors add their own keys (pid, returncode)."""

    job_id: str | None = None
    log: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Submission:
    """One line of ``submissions.jsonl``: when (``time``), the ``executor``, submitit's
    ``folder`` (SLURM), the ``options`` it ran with and ``jobs``, run name -> :class:`Job`
    (each checked here, so ``status`` can look a job up without a second guess)."""

    time: Real
    executor: str
    jobs: dict[str, Any] = field(default_factory=dict)
    folder: str | None = None
    options: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(
                "executor", f"unknown executor {self.executor!r} (known: {', '.join(EXECUTORS)})"
            )
        workers = (self.options or {}).get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError("options.workers", f"expected an integer >= 1, got {workers!r}")
        jobs = {}
        for name, job in self.jobs.items():
            where = f"jobs.{name}" if _is_plain(name) else f"jobs[{_short(name)}]"
            if isinstance(job, Job):
                jobs[name] = job
                continue
            if not isinstance(job, dict):
                raise ConfigError(where, f"expected a JSON object, got {_short(job)}")
            for key in ("job_id", "log"):
                value = job.get(key)
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"{where}.{key}", f"expected a string, got {_short(value)}")
            rest = {k: v for k, v in job.items() if k not in ("job_id", "log")}
            jobs[name] = Job(job.get("job_id"), job.get("log"), rest)
        object.__setattr__(self, "jobs", jobs)


def _is_plain(name: Any) -> bool:
    try:
        plain_name(name, "")
    except VlabError:
        return False
    return True


def _short(value: Any) -> str:
    """A value for a one-line message: repr (no line breaks), cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_sweep_file(data: Any, path: str | os.PathLike) -> SweepFile:
    """``data`` (sweep.json's JSON) as a :class:`SweepFile`, each run checked as a
    :class:`SweepEntry` (``runs[3].name`` in messages) and run names distinct: two entries of
    one name would share one run folder and lock."""
    raw = parse_record(_RawSweepFile, data, path, SWEEP_FIX)
    runs: list[SweepEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw.runs):
        entry = parse_record(SweepEntry, item, path, SWEEP_FIX, field=f"runs[{i}]")
        if entry.name in seen:
            raise DamagedFile(
                path,
                f"runs[{i}].name",
                f"{entry.name!r} is also the name of runs[{seen[entry.name]}]",
                SWEEP_FIX,
            )
        seen[entry.name] = i
        runs.append(entry)
    fields = {k: getattr(raw, k) for k in ("name", "kind", "source", "created", "extra")}
    return SweepFile(runs=runs, **fields)


@dataclass(frozen=True)
class _RawSweepFile(SweepFile):
    """sweep.json's top level before its runs are parsed one by one (see
    :func:`parse_sweep_file`): ``runs`` a list of objects."""

    runs: list[dict[str, Any]]  # type: ignore[assignment]


class SweepDir:
    """A sweep directory (layout above). Every file it reads back is parsed into a record
    (:class:`SweepFile`, :class:`Submission`): a damaged or foreign one is a one-line
    :class:`~vlab.records.DamagedFile` naming the file and field, and a run name joins a
    folder only through :func:`~vlab.records.join_name`, so no file can send vlab outside."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def spec_path(self) -> Path:
        return self.path / "sweep.json"

    @property
    def submissions_path(self) -> Path:
        return self.path / "submissions.jsonl"

    def run_path(self, name: str) -> Path:
        return _somewhere(join_name(self._folder("runs"), name, "run name"))

    def lock_path(self, name: str) -> Path:
        return _somewhere(join_name(self._folder("locks"), name, "run name", ".lock"))

    def _folder(self, name: str) -> Path:
        """``runs/`` or ``locks/``: a directory, or not there. A link leading nowhere (to a
        disk that is not mounted) or a file there is damage, never "no run has started":
        ``vlab sweep prune`` would drop runs that did."""
        return _somewhere(self.path / name, folder=True)

    def log_path(self, name: str) -> Path:
        return join_name(self.path / "logs", name, "run name", ".log")

    def exists(self) -> bool:
        return self.spec_path.is_file()

    def read(self) -> SweepFile:
        """sweep.json, checked (see :func:`parse_sweep_file`)."""
        if not self.spec_path.exists():
            raise VlabError(f"{self.path} is not a sweep directory (no sweep.json)")
        return parse_sweep_file(read_json_file(self.spec_path, SWEEP_FIX), self.spec_path)

    def runs(self) -> list[SweepEntry]:
        return self.read().runs

    def run(self, name: str) -> SweepEntry:
        for r in self.runs():
            if r.name == name:
                return r
        raise VlabError(f"{self.path}: no run named {name!r} in sweep.json")

    def write(self, name: str, kind: str, runs: list[RunSpec], source: str) -> None:
        """Create sweep.json, or extend it: a rerun of the same spec is a no-op.

        A run name already present with a different config id is refused: its run directory
        holds results of another config, and silently mixing the two would corrupt the sweep.
        """
        old = self.read() if self.exists() else None
        existing = {r.name: r for r in old.runs} if old else {}
        changed = [
            r.name for r in runs if r.name in existing and not same_run(existing[r.name], r, kind)
        ]
        if changed:
            raise VlabError(
                f"{self.path} already has runs named {', '.join(changed[:3])} with a different "
                "config; submit the changed spec to a new sweep directory"
            )
        merged = dict(existing)
        for r in runs:
            merged.setdefault(r.name, SweepEntry(r.name, r.id, r.config, r.overrides))
        doc = SweepFile(
            name=old.name if old else name,
            kind=kind,
            source=old.source if old else source,
            created=old.created if old and old.created is not None else time.time(),
            runs=list(merged.values()),
            extra=old.extra if old else {},
        )
        atomic_write_json(self.spec_path, doc.as_json())

    def drop(self, names: list[str]) -> None:
        """Remove runs from sweep.json (atomically); their folders, if any, are not touched."""
        doc = self.read()
        gone = set(names)
        kept = replace(doc, runs=[r for r in doc.runs if r.name not in gone])
        atomic_write_json(self.spec_path, kept.as_json())

    def record_submission(self, record: dict) -> None:
        """Append one submission line. A torn last line (a submit killed mid-append, which
        readers drop) is cut first: appended to, it would become a bad line in the middle,
        and every later read of the sweep would refuse the file (see :func:`_end_last_line`)."""
        self.path.mkdir(parents=True, exist_ok=True)
        _end_last_line(self.submissions_path)
        append_jsonl(self.submissions_path, {"time": time.time(), **record})

    def submissions(self) -> list[Submission]:
        """Every submission, oldest first; a torn last line (a submit killed mid-append) is
        dropped, any other bad line is a :class:`~vlab.records.DamagedFile`."""
        return read_record_lines(Submission, self.submissions_path, SUBMISSIONS_FIX)

    def last_jobs(self) -> dict[str, dict]:
        """Run name -> its latest submission entry (executor, folder, job id, log), read from
        submissions.jsonl once for the whole sweep."""
        found: dict[str, dict] = {}
        for sub in self.submissions():
            for name, job in sub.jobs.items():
                found[name] = {
                    "executor": sub.executor,
                    "folder": sub.folder,
                    **job.extra,
                    "job_id": job.job_id,
                    "log": job.log,
                }
        return found

    def last_job(self, name: str) -> dict | None:
        """The latest submission entry of run ``name``: executor, job id, folder, log."""
        return self.last_jobs().get(name)


LINK_FIX = "mount the disk it leads to, or move it away"


def _somewhere(path: Path, folder: bool = False) -> Path:
    """``path``, refused as a :class:`DamagedFile` when it is a symbolic link that leads
    nowhere (dangling, or a loop), or (``folder``) a file where a folder belongs."""
    if path.is_symlink() and not path.exists():
        raise DamagedFile(path, None, "is a link that leads nowhere", LINK_FIX)
    if folder and path.exists() and not path.is_dir():
        raise DamagedFile(path, None, "is a file where a folder belongs", LINK_FIX)
    return path


def _end_last_line(path: Path) -> None:
    """Before an append: a last line without its newline is ended with one when it is whole
    JSON (a reader keeps it), and cut when it is not (a killed writer's torn line, which every
    reader drops), so the appended line starts a line of its own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        with open(path, "r+b") as f:
            f.truncate(start)
        return
    with open(path, "ab") as f:
        f.write(b"\n")


def same_run(entry: SweepEntry, run: RunSpec, kind: str) -> bool:
    """Whether a run recorded in sweep.json is ``run``: the same config id, or the same config
    once today's defaults fill in what an earlier vlab did not write (a setting added since,
    such as ``task.modality``), which is how that run's config is read when it resumes."""
    if entry.id == run.id:
        return True
    try:
        return config_id(experiment(kind).resolve(entry.config)) == run.id
    except (ConfigError, VlabError, KeyError):
        return False


def run_entry(sweep_dir: str, name: str):
    """(sweep, run entry, run kind) of run ``name`` as ``sweep.json`` lists it."""
    sweep = SweepDir(sweep_dir)
    doc = sweep.read()
    entry = next((r for r in doc.runs if r.name == name), None)
    if entry is None:
        raise VlabError(f"{sweep.path}: no run named {name!r} in sweep.json")
    return sweep, entry, doc.kind
