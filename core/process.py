"""Is the process that claims a run still there? Shared by locks (:mod:`vlab.locks`) and
reports."""

from __future__ import annotations

import os
import socket


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host and is not a zombie (killed, unreaped)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):  # none, or no pid at all
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, with the boot's id), or None where
    ``/proc`` cannot tell. A pid is reused after its process ends; the start time is not, so
    a recorded (pid, start) names one process for good."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = f.read().rsplit(")", 1)[1].split()[19]
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except (OSError, IndexError):
        return None
    return f"{boot}:{ticks}"


def attempt_id() -> str:
    """Which launch of a multi-process run this process belongs to, the same on all its
    ranks: the SLURM job and its restart count, else (torchrun) the launching agent, the
    ranks' common parent, by host, pid and start time."""
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return f"slurm:{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    parent = os.getppid()
    return f"{socket.gethostname()}:{parent}:{process_start(parent)}"


def writer_alive(
    host: str | None, pid: int | None, slurm_job_id: str | None, start: str | None = None
) -> bool | None:
    """Whether the process that wrote a status or lock file (its ``host``, ``pid``, SLURM
    job and, where recorded, ``start`` from :func:`process_start`) still runs: checked by pid
    and start time on this host, by the scheduler for a SLURM job elsewhere; None when
    neither can tell (another host, no job id)."""
    if host == socket.gethostname() and isinstance(pid, int) and pid > 0:
        if not pid_alive(pid):
            return False
        return start is None or process_start(pid) in (None, start)
    if slurm_job_id:
        from vlab.scheduler import slurm_job_active

        return slurm_job_active(str(slurm_job_id))
    return None
