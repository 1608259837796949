"""The run directory: the plain-file contract between training and everything after it.

::

    RUN_DIR/
      config.json      fully resolved config (every default written out)
      metrics.jsonl    one JSON object per evaluation: step, examples_seen, loss, accuracy, ...
      status.json      state (running | done | failed | interrupted), reason, threshold_step, ...
      checkpoints/last.pt   model, optimizer, scheduler and loop state at the last evaluation
                       (tensors and plain data only: loaded with ``weights_only``)
      checkpoints/step-<step>.pt   model weights, step, metrics and config at the kept steps
                       (``TrainConfig.snapshot_steps``), for looking inside the model over time
      writer.lock      while a process trains the run: its host, pid, start time, SLURM job

Every file is written atomically or appended a whole line at a time, so a reader (resume,
``vlab sweep status``, the report) never sees a half-written file. Analysis reads only these
files, never the trainer's objects.

Every file is checked when it is read (:mod:`vlab.run_records`): a damaged or foreign one (cut
short, another type, a field of the wrong type, a directory where the file belongs) is a
:class:`~vlab.records.DamagedFile`, one line naming the file and what to do, never "no
checkpoint" (which would restart the run and cut its metrics) and never a traceback.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlab.config import diff
from vlab.errors import VlabError
from vlab.experiment import KIND_FILE, record_kind
from vlab.fileio import append_jsonl, atomic_write_json, write_jsonl
from vlab.process import attempt_id
from vlab.records import DamagedFile, parse_record, read_json_file, read_json_lines
from vlab.run_records import (
    WRITTEN_STATES,
    Checkpoint,
    MetricsLine,
    Snapshot,
    Status,
    checked,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

LOCK_FILE = "writer.lock"  # held by the one process writing the run (see ``RunDir.claim``)

# What to do about each damaged file, said in its error.
CONFIG_FIX = "restore it, or move the run directory away to start over"
STATUS_FIX = "delete it: the next run of this directory writes a new one"
METRICS_FIX = "repair the line, or move the run directory away to train it again"
CHECKPOINT_FIX = (
    "move it away (or delete it) to restart the run from step 0, or put back a good copy"
)
SNAPSHOT_FIX = "move it away (or delete it): the run's other checkpoints stay usable"
# Every state a reader (``vlab sweep status``, the report) shows a run in, in display order:
# the written ones as judged from outside (a "running" run whose process is gone is
# "interrupted"), "unknown" for an unreadable status and "pending" for a run not started.
STATES = ("done", "running", "interrupted", "failed", "unknown", "pending")


class RunDir:
    """Paths and atomic accessors of one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    def exists(self) -> bool:
        return self.config_path.is_file()

    # config -------------------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, config)

    def claim(self, config: dict, defaults: dict | None = None, kind: str | None = None) -> bool:
        """Start or resume the run of ``config`` here; True if it is already finished.

        ``kind`` (one of :data:`vlab.experiment.KINDS`) is recorded in ``run.json`` when the
        run is claimed (:func:`vlab.experiment.record_kind`), a run of another kind refused.

        An existing run directory is resumed only if its config is the same; otherwise the
        user is told which fields differ and nothing is touched. A field the stored config
        lacks (added by a later vlab) counts as the same when ``config`` holds its default
        (``defaults``: the config class's defaults as a dict), so upgrading vlab does not
        orphan unfinished runs; the stored config is then completed. A non-empty folder that
        is not a run directory is refused too.

        One writer per run directory: an unfinished run is claimed by taking its lock file
        (``writer.lock``, :mod:`vlab.locks`), held until :meth:`release`; a run that another
        live process holds is refused, naming that process. A lock whose holder is gone
        (killed, preempted) is taken over.
        """
        from vlab.locks import acquire, describe, lock_holder

        if self.path.exists() and not self.path.is_dir():
            raise VlabError(f"{self.path} is a file, not a run directory; choose another --out")
        if self.config_path.exists() and not self.exists():
            self.read_config()  # a directory where config.json belongs: say so
        if not self.exists() and self.path.exists():
            if any(p.name not in (LOCK_FILE, ".guard", KIND_FILE) for p in self.path.iterdir()):
                raise VlabError(f"{self.path} exists, is not empty and is not a run directory")
        self.path.mkdir(parents=True, exist_ok=True)
        lock = acquire(self.lock_path)
        if lock is None:
            holder = lock_holder(self.lock_path) or {}
            raise VlabError(
                f"{self.path} is being trained by {describe(holder)}; wait for it to finish "
                "or stop it (a killed holder's lock is taken over automatically)"
            )
        self._lock = lock
        self._defaults = defaults
        try:
            if kind is not None:
                record_kind(self.path, kind)
            done = self._claim_locked(config, defaults)
        except BaseException:
            self.release()
            raise
        if done:
            self.release()
        return done

    def _claim_locked(self, config: dict, defaults: dict | None) -> bool:
        if self.exists():
            stored = self.read_config()
            changed = _changed_fields(stored, config, defaults)
            if changed:
                raise VlabError(
                    f"{self.path} already holds a run with a different config "
                    f"(fields: {', '.join(changed)}); choose another --out or delete it"
                )
            if stored != config:
                self.write_config(config)
            return self.is_done()
        self.write_config(config)
        return False

    def check_checkpoint_config(self, checkpoint: dict) -> None:
        """Refuse to resume from a checkpoint trained under another config than config.json
        now holds (an edited config.json would otherwise be recorded for a run that never
        used it). Fields added by a later vlab count as the same while they hold their
        defaults, as in :meth:`claim`; checkpoints from before vlab recorded the config pass.
        """
        trained = checkpoint.get("config")
        if trained is None:
            return
        changed = _changed_fields(trained, self.read_config(), getattr(self, "_defaults", None))
        if changed:
            raise VlabError(
                f"{self.config_path} differs from the config its checkpoint was trained with "
                f"(fields: {', '.join(changed)}); put the old values back, or move "
                f"{self.checkpoint_path.parent} away to train from step 0 under the new config"
            )

    def release(self) -> None:
        """Give up the writer lock that :meth:`claim` took (a no-op if none is held)."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    def read_config(self) -> dict:
        """config.json as a dict (a JSON object; the config class checks its fields)."""
        if not self.config_path.exists():
            raise VlabError(f"{self.path} is not a run directory (no config.json)")
        data = read_json_file(self.config_path, CONFIG_FIX)
        if not isinstance(data, dict):
            raise DamagedFile(self.config_path, None, "expected a JSON object", CONFIG_FIX)
        return data

    # status -------------------------------------------------------------------------------
    def read_status(self) -> dict | None:
        """status.json as the dict it holds, checked as a :class:`~vlab.run_records.Status`;
        None before the run first wrote one."""
        if not self.status_path.exists():
            if self.status_path.is_symlink():  # dangling or a loop: a status somewhere, not none
                raise DamagedFile(
                    self.status_path, None, "is a link that leads nowhere", STATUS_FIX
                )
            return None
        data = read_json_file(self.status_path, STATUS_FIX)
        return checked(Status, data, self.status_path, STATUS_FIX)

    def write_status(self, state: str, reason: str | None = None, **fields: Any) -> dict:
        """Replace status.json; ``fields`` (step, threshold_step, ...) are merged over the old.

        In a run trained by several processes (``WORLD_SIZE`` > 1) a failure names its rank,
        and the first failure of an attempt stays: when one rank dies, the others fail next
        on the broken connection, and their "connection closed" must not replace the words
        of the rank that failed first."""
        if state not in WRITTEN_STATES:
            raise ValueError(f"unknown run state {state!r}")
        old = self.read_status() or {}
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            fields["attempt"] = attempt_id()
            if state == "failed":
                if old.get("state") == "failed" and old.get("attempt") == fields["attempt"]:
                    return old
                reason = f"rank {rank} of {world}: {reason}"
        status = {k: v for k, v in old.items() if k not in ("reason",)}
        status.update(fields)
        status.update(
            state=state,
            reason=reason,
            updated=time.time(),
            host=socket.gethostname(),
            pid=os.getpid(),
        )
        status.setdefault("threshold_step", None)
        if os.environ.get("SLURM_JOB_ID"):  # where to look in the scheduler's accounting
            status["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
            status["slurm_restart_count"] = int(os.environ.get("SLURM_RESTART_COUNT", 0))
        atomic_write_json(self.status_path, status)
        return status

    def is_done(self) -> bool:
        status = self.read_status()
        return bool(status) and status.get("state") == "done"

    # metrics ------------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        append_jsonl(self.metrics_path, record)

    def read_metrics(self) -> list[dict]:
        """Every evaluation, each line checked as a :class:`~vlab.run_records.MetricsLine`.

        A torn last line (a killed append) is dropped; any other bad line is an error naming
        it, never skipped: a skipped line is an evaluation silently missing from the curves.
        """
        return [
            checked(MetricsLine, value, self.metrics_path, METRICS_FIX, field=f"line {n}")
            for n, value in read_json_lines(self.metrics_path, METRICS_FIX)
        ]

    def truncate_metrics(self, last_step: int, checkpoint_step: int | None = None) -> list[dict]:
        """Keep only evaluations up to ``last_step``, the last evaluation of the checkpoint a
        resume starts from (taken at ``checkpoint_step``, at or after it; None without a
        checkpoint: every line is then from after it, and is dropped).

        Lines written after the last checkpoint, and a torn last line, are dropped, so the
        resumed run appends exactly the lines an uninterrupted run would have. A damaged line
        before the last is an error: resuming would drop that evaluation silently. So is a
        file that does not fit the checkpoint. The engine appends an evaluation's line before
        it writes the checkpoint taken after it, so a missing line of ``last_step`` was lost,
        not unwritten; and a line after ``last_step`` but not after ``checkpoint_step`` was
        never written by the run that wrote the checkpoint (it would have been cut). Lines
        are in the order of their steps (appended so, and cut back so): one out of order is
        damage too, and cutting at ``last_step`` would drop the lines after it.
        """
        records = self.read_metrics()
        fix = f"restore it, or move {self.checkpoint_path.parent} away to train from step 0"
        steps = [r["step"] for r in records]
        for number, (before, step) in enumerate(zip(steps, steps[1:], strict=False), 2):
            if step <= before:
                problem = f"evaluation {number} is of step {step}, after step {before}"
                raise DamagedFile(self.metrics_path, None, problem, METRICS_FIX)
        if last_step >= 0 and not any(r["step"] == last_step for r in records):
            problem = (
                f"has no line for step {last_step}, the evaluation its checkpoint was taken "
                "after (lines were lost)"
            )
            raise DamagedFile(self.metrics_path, None, problem, fix)
        taken = last_step if checkpoint_step is None else checkpoint_step
        unknown = [r["step"] for r in records if last_step < r["step"] <= taken]
        if unknown:
            problem = (
                f"has a line for step {unknown[0]}, an evaluation the checkpoint of step "
                f"{checkpoint_step} does not know of (its last was at step {last_step})"
            )
            raise DamagedFile(self.metrics_path, None, problem, fix)
        kept = [r for r in records if r["step"] <= last_step]
        write_jsonl(self.metrics_path, kept)
        return kept

    # checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, state: dict) -> None:
        """Write ``checkpoints/last.pt`` atomically. ``state`` holds tensors and plain data
        only (dicts, lists, numbers, strings, None), so it loads with ``weights_only``."""
        _save_atomically(self.checkpoint_path, state)

    def snapshot_path(self, step: int) -> Path:
        return self.checkpoint_path.parent / f"step-{step:09d}.pt"

    def keep_snapshot(self, step: int, state: dict) -> None:
        """Keep ``state`` (the model weights and what describes them: no optimizer, a third of
        a full checkpoint) as ``checkpoints/step-<step>.pt``, written atomically."""
        _save_atomically(self.snapshot_path(step), state)

    def snapshots(self) -> dict[int, Path]:
        """The kept checkpoints by step (see ``TrainConfig.keep_checkpoints``)."""
        found = {}
        for path in self.checkpoint_path.parent.glob("step-*.pt"):
            digits = path.stem.removeprefix("step-")
            if digits.isdigit():
                found[int(digits)] = path
        return dict(sorted(found.items()))

    def remove_temporary_files(self) -> list[Path]:
        """Delete what killed writes left behind: the temporary files of atomic writes
        (``.status.json.*.tmp``, ...) and of checkpoint writes (``checkpoints/.last.pt.*.tmp``,
        gigabytes each at paper scale). Called when a run starts, before it writes anything;
        only its one writer (see :meth:`claim`) does, so no live write is touched."""
        leftovers = sorted([*self.path.glob(".*.tmp"), *self.checkpoint_path.parent.glob(".*.tmp")])
        for path in leftovers:
            path.unlink(missing_ok=True)
        return leftovers

    def load_checkpoint(
        self, map_location: str | torch.device = "cpu", step: int | None = None
    ) -> dict | None:
        """The last checkpoint (or the one kept at ``step``) as the dict it holds, or None
        when there is none (no such file, no ``checkpoints/`` folder).

        Loaded with ``weights_only=True``: tensors and plain data, never arbitrary objects, so
        a crafted ``last.pt`` cannot run code. A file that is not such a checkpoint (crafted,
        truncated, empty, garbage, another shape than :class:`~vlab.run_records.Checkpoint`
        or :class:`~vlab.run_records.Snapshot`), or a directory where it belongs, is a
        :class:`~vlab.records.DamagedFile` naming it: never "no checkpoint", which would
        restart the run from step 0 and cut its metrics.
        """
        if step is not None:
            path = self.snapshot_path(step)
            data = _load_torch_file(path, map_location, SNAPSHOT_FIX)
            if data is None:
                return None
            snapshot = parse_record(
                Snapshot, _as_dict(data, path, SNAPSHOT_FIX), path, SNAPSHOT_FIX
            )
            if snapshot.step != step:
                raise DamagedFile(
                    path, "step", f"holds the weights of step {snapshot.step}", SNAPSHOT_FIX
                )
            return data
        path = self.checkpoint_path
        data = _load_torch_file(path, map_location, CHECKPOINT_FIX)
        if data is None:
            return None
        checked(Checkpoint, _as_dict(data, path, CHECKPOINT_FIX), path, CHECKPOINT_FIX)
        if data.get("last_metrics") is not None:  # reported as the run's result when it ends
            checked(MetricsLine, data["last_metrics"], path, CHECKPOINT_FIX, "last_metrics")
        return data

    def read_checkpoint(self, map_location: str | torch.device = "cpu") -> Checkpoint | None:
        """``checkpoints/last.pt`` as a :class:`~vlab.run_records.Checkpoint` (what a resume
        reads), or None when there is none; damage as in :meth:`load_checkpoint`."""
        data = self.load_checkpoint(map_location)
        if data is None:
            return None
        return parse_record(Checkpoint, data, self.checkpoint_path, CHECKPOINT_FIX)

    def weights_at(self, step: int | None = None, map_location: str = "cpu") -> dict:
        """The checkpoint holding the weights of ``step`` (kept, or ``last.pt`` when it is at
        that step; None: ``last.pt``), to load into a model built from config.json. Refused
        in one line when there is none, when it holds no weights, or when it was trained
        under another config than config.json holds."""
        if step is not None and step in self.snapshots():
            checkpoint = self.load_checkpoint(map_location, step=step)
        else:
            checkpoint = self.load_checkpoint(map_location)
            if checkpoint is not None and step is not None and int(checkpoint["step"]) != step:
                checkpoint = None
        if checkpoint is None and step is None:
            raise VlabError(f"{self.path} has no checkpoint (checkpoints/last.pt) to load")
        if checkpoint is None:
            raise VlabError(f"{self.path}: no checkpoint at step {step}")
        if not isinstance(checkpoint.get("model"), dict):
            at = checkpoint.get("step") if step is None else step
            raise VlabError(f"{self.path}: the checkpoint at step {at} holds no model weights")
        self.check_checkpoint_config(checkpoint)
        return checkpoint

    def load_weights(self, model: nn.Module, checkpoint: dict) -> None:
        """Load ``checkpoint``'s weights (from :meth:`weights_at`) into ``model`` strictly;
        weights that do not fit the model the run's config builds are a one-line error."""
        try:
            model.load_state_dict(checkpoint["model"])
        except (RuntimeError, KeyError) as e:
            said = str(e).strip().splitlines()[0][:200]
            raise VlabError(
                f"{self.path}: the checkpoint at step {checkpoint.get('step')} does not fit the "
                f"model its config builds ({said})"
            ) from None


class ReadOnlyRunDir(RunDir):
    """A run directory seen by a non-zero rank of a data-parallel run: it reads the same
    files (to resume from the same checkpoint) and writes nothing but its own failure; rank 0
    owns the files."""

    def write_config(self, config: dict) -> None:
        pass

    def write_status(self, state: str, reason: str | None = None, **fields: Any) -> dict:
        """Only a failure: the rank that failed is the one that can say why (rank 0 would
        only see the connection to it close)."""
        if state != "failed":
            return {}
        return super().write_status(state, reason, **fields)

    def append_metrics(self, record: dict) -> None:
        pass

    def truncate_metrics(self, last_step: int, checkpoint_step: int | None = None) -> list[dict]:
        return self.read_metrics()

    def save_checkpoint(self, state: dict) -> None:
        pass

    def keep_snapshot(self, step: int, state: dict) -> None:
        pass

    def remove_temporary_files(self) -> list[Path]:
        return []


def _load_torch_file(path: Path, map_location: Any, what_to_do: str) -> Any:
    """What ``torch.load(weights_only=True)`` finds in ``path``; None when neither the file
    nor a ``checkpoints/`` folder is there. Anything else that is not a readable checkpoint
    is a :class:`~vlab.records.DamagedFile` naming the file."""
    import pickle

    import torch  # here, not at the top: readers of run directories need no torch

    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise DamagedFile(
            folder,
            None,
            "is a file where the checkpoints folder belongs",
            "move it away to restart the run from step 0, or put back the folder",
        )
    if not path.exists():
        if path.is_symlink():  # a link to a checkpoint on a disk that is gone is not "none"
            raise DamagedFile(path, None, "is a link that leads nowhere", what_to_do)
        return None
    if not path.is_file():
        raise DamagedFile(path, None, "is not a regular file (a directory?)", what_to_do)
    if path.stat().st_size == 0:
        raise DamagedFile(path, None, "the checkpoint is empty", what_to_do)
    try:
        # mmap: ranks on one node share the file's pages instead of each holding a copy
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        said = _first_line(e)
        raise DamagedFile(
            path,
            None,
            f"refused to load: it holds more than tensors and plain data ({said}); a "
            "checkpoint written by vlab never does",
            what_to_do,
        ) from e
    except Exception as e:  # a damaged file can make the unpickler fail anyhow
        raise DamagedFile(
            path, None, f"not a readable checkpoint ({_first_line(e)})", what_to_do
        ) from e


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, short enough for a one-line error."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


def _as_dict(data: Any, path: Path, what_to_do: str) -> dict:
    """A loaded checkpoint that is a dict, else a :class:`~vlab.records.DamagedFile`."""
    if not isinstance(data, dict):
        raise DamagedFile(
            path, None, f"holds a {type(data).__name__}, not a checkpoint", what_to_do
        )
    return data


def _save_atomically(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over it: a kill
    leaves the old file or the new one, whole (and a ``.*.tmp`` the next start removes)."""
    import torch  # here, not at the top: readers of run directories need no torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _changed_fields(stored: dict, config: dict, defaults: dict | None) -> list[str]:
    """The fields in which ``config`` differs from ``stored``, except those ``stored`` lacks
    while ``config`` holds their default (added by a later vlab)."""
    return [
        path
        for path in diff(stored, config)
        if not _added_with_default(path, stored, config, defaults)
    ]


_MISSING = object()


def _lookup(data: dict | None, path: str) -> object:
    node: object = data
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _added_with_default(path: str, stored: dict, config: dict, defaults: dict | None) -> bool:
    """True when ``path`` is absent from the stored config and ``config`` has its default."""
    if defaults is None or _lookup(stored, path) is not _MISSING:
        return False
    value = _lookup(config, path)
    return value is not _MISSING and value == _lookup(defaults, path)
