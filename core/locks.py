"""One writer at a time: lock files that name their holder, shared by run directories and
sweeps.

A lock is a small JSON file: host, pid, the process's start time (:func:`vlab.process.
process_start`, so a reused pid is not mistaken for the holder), SLURM job id and the time it
was taken. It is free when missing, and stale when its holder is gone: a dead pid on this
host, a live pid that is another process, or a SLURM job that ended; a stale lock is taken
over. A holder on another host without a job id is assumed alive (nothing can tell).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from vlab.fileio import atomic_write_json, read_json
from vlab.process import process_start, writer_alive


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
        except (FileNotFoundError, json.JSONDecodeError):
            pass


def lock_holder(path: Path) -> dict | None:
    """The live holder of a lock file, or None if it is free or stale."""
    try:
        holder = read_json(path)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return None  # torn write of a crashed holder: stale
    if not isinstance(holder, dict):
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
    with open(path.parent / ".guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            if path.exists() and lock_holder(path) is not None:
                return None
            atomic_write_json(path, owner)
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)
    return Lock(path, read_json(path))


def describe(holder: dict) -> str:
    """``pid 123 on host h (SLURM job 45), since 2026-11-28 14:02:11``"""
    job = f" (SLURM job {holder['job_id']})" if holder.get("job_id") else ""
    since = holder.get("time")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{job}{when}"
