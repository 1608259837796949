"""What the SLURM scheduler says about jobs, asked through its own commands.

Used by ``vlab sweep status`` (queued vs running vs gone) and by lock staleness checks for
runs held on other nodes. Every query degrades to "unknown" when the commands are missing or
the controller does not answer, so status works anywhere.
"""

from __future__ import annotations

import shutil
import subprocess

ACTIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "RESIZING",
    "SUSPENDED",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "SIGNALING",
    "STAGE_OUT",
}


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (subprocess.TimeoutExpired, OSError):
        return None
    return out.stdout if out.returncode == 0 else None


def job_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED`` ...) per job id.

    Asks ``squeue`` for live jobs first and ``sacct`` for finished ones; ids the scheduler
    does not know are left out.
    """
    ids = [j for j in job_ids if j]
    if not ids:
        return {}
    states: dict[str, str] = {}
    out = _run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(ids)])
    for line in (out or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    missing = [j for j in ids if j not in states]
    if missing:
        out = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(missing)])
        for line in (out or "").splitlines():
            parts = line.split("|")
            if len(parts) == 2 and parts[0] in missing:
                states[parts[0]] = parts[1].split()[0]
    return states


def slurm_job_active(job_id: str) -> bool:
    """True unless the scheduler positively says the job is over (or does not know it)."""
    out = _run(["squeue", "-h", "-o", "%T", "-j", job_id])
    if out is None:
        return True  # cannot ask: treat the holder as alive rather than steal its run
    return any(line.strip() in ACTIVE for line in out.splitlines())


def cluster_problem() -> str | None:
    """Why jobs cannot be submitted from here (no ``sbatch``, or no controller answers
    ``sinfo``), or None when a SLURM cluster is reachable."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (no SLURM client on this machine)"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20
        )
    except (subprocess.TimeoutExpired, OSError) as e:
        return f"sinfo did not answer ({type(e).__name__})"
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        return f"sinfo failed: {lines[-1] if lines else f'exit code {out.returncode}'}"
    return None
