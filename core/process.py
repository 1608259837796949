"""Is the process that claims a run still there? Shared by sweep locks and reports."""

from __future__ import annotations

import os
import socket


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists on this host and is not a zombie (killed, unreaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def writer_alive(host: str | None, pid: int | None, slurm_job_id: str | None) -> bool | None:
    """Whether the process that wrote a status or lock file (its ``host``, ``pid`` and SLURM
    job, as recorded there) still runs: checked by pid on this host, by the scheduler for a
    SLURM job elsewhere; None when neither can tell (another host, no job id)."""
    if host == socket.gethostname() and isinstance(pid, int) and pid > 0:
        return pid_alive(pid)
    if slurm_job_id:
        from vlab.scheduler import slurm_job_active

        return slurm_job_active(str(slurm_job_id))
    return None
