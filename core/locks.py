"""One writer at a time: lock files that name their holder, shared by run directories and
sweeps.

A lock is a small JSON file: host, pid, the process's start time (:func:`vlab.process.
process_start`, so a reused pid is not mistaken for the holder), SLURM job id and the time it
was taken. It is free when missing, and stale when its holder is gone: a dead pid on this
host, a live pid that is another process, or a SLURM job that ended; a stale lock is taken
over. A holder on another host without a job id is assumed alive (nothing can tell).

A lock file of the wrong shape (not JSON, not an object, a field of the wrong type: see
:class:`~vlab.run_records.LockRecord`) is stale too, for readers and writers alike. vlab
writes a lock whole (atomically) and never rewrites it, so such a file is not what a live
holder wrote: it is a crashed writer's torn file from an older vlab, disk damage or a hand
edit. It names no process that could be checked, and refusing would block the run (and a
sweep's every retry of it) on a file no process owns. What is not a file at all (a directory
where the lock belongs) cannot be taken over without deleting it: that is an error.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from vlab.errors import VlabError
from vlab.fileio import atomic_write_json, read_json
from vlab.process import process_start, writer_alive
from vlab.records import DamagedFile, read_json_file
from vlab.run_records import LockRecord, checked

LOCK_FIX = "delete it if no vlab process is training there"


def current_job_id() -> str | None:
    """This process's SLURM job (array jobs as ``ARRAYID_TASK``), or None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


@dataclass
class Lock:
    """A held lock; :meth:`release` removes the file if it still names this holder."""

    path: Path
    owner: dict

    def release(self) -> None:
        try:
            if read_json(self.path) == self.owner:
                self.path.unlink()
        except (OSError, ValueError):  # gone, replaced by a directory, damaged: not ours
            pass


def read_lock(path: Path) -> dict | None:
    """The lock file at ``path`` as the dict it holds, checked as a
    :class:`~vlab.run_records.LockRecord`; None when there is none. A damaged one is a
    :class:`~vlab.records.DamagedFile` (:func:`lock_holder` counts it as stale)."""
    if not path.exists():
        return None
    return checked(LockRecord, read_json_file(path, LOCK_FIX), path, LOCK_FIX)


def lock_holder(path: Path) -> dict | None:
    """The live holder of a lock file, or None if it is free or stale (a damaged lock is
    stale: see the module docstring)."""
    try:
        holder = read_lock(path)
    except DamagedFile:
        return None
    if holder is None:
        return None
    if holder.get("job_id") and holder.get("job_id") == current_job_id():
        return None  # our own job, requeued after preemption: the old process is gone
    alive = writer_alive(
        holder.get("host"), holder.get("pid"), holder.get("job_id"), holder.get("start")
    )
    return None if alive is False else holder


def acquire(path: Path) -> Lock | None:
    """Take the lock at ``path``; None if a live process holds it. Stale locks are taken over.

    Checking for staleness and replacing the file happen under an ``flock`` on a guard file
    in the same folder, so two processes cannot both decide a lock is stale and both win.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": process_start(os.getpid()),
        "job_id": current_job_id(),
        "time": time.time(),
    }
    for taken in (path, path.parent / ".guard"):
        if taken.exists() and not taken.is_file():
            raise DamagedFile(taken, None, "is not a regular file (a directory?)", LOCK_FIX)
    try:
        guard = open(path.parent / ".guard", "a")  # closed by the with below
    except OSError as e:
        raise VlabError(f"{path.parent}: cannot take its lock ({e.strerror})") from None
    with guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            if path.exists() and lock_holder(path) is not None:
                return None
            atomic_write_json(path, owner)
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
    return Lock(path, json.loads(json.dumps(owner)))  # as the file holds it


def describe(holder: dict) -> str:
    """``pid 123 on host h (SLURM job 45), since 2026-11-28 14:02:11``; any dict (a lock
    read by an older reader, a field of the wrong type) gives a line, never an error."""
    job = f" (SLURM job {holder['job_id']})" if holder.get("job_id") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{job}{_since(holder.get('time'))}"


def _since(taken: object) -> str:
    """`` since <local time>`` for a lock's ``time``; "" when it is not a usable time."""
    if isinstance(taken, bool) or not isinstance(taken, (int, float)):
        return ""
    try:
        return time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(taken))
    except (OverflowError, OSError, ValueError):  # NaN, infinite, or beyond the calendar
        return ""
