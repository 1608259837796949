"""What the SLURM scheduler says about jobs, asked through its own commands.

Used by ``vlab sweep status`` (queued vs running vs gone) and by lock staleness checks for
runs held on other nodes. Every query degrades to "unknown" when the commands are missing or
the controller does not answer, so status works anywhere.
"""

from __future__ import annotations

import os
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


# How to ask the controller whether it answers: the first of these commands on PATH.
CONTROLLER_QUERIES = (["sinfo", "-h", "-o", "%P"], ["squeue", "-h", "-o", "%i", "-t", "PD"])


def cluster_problem(timeout: float = 20) -> str | None:
    """Why jobs cannot be submitted from here, naming the missing piece (no ``sbatch`` on
    PATH, a ``SLURM_CONF`` that does not exist, no controller answering ``sinfo``), or None
    when a SLURM controller answers. One line, fit to follow ``--executor slurm:``."""
    if shutil.which("sbatch") is None:
        return "sbatch not found on PATH (no SLURM client on this machine)"
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):
        # the client would retry reading it for a minute before giving up
        return f"no SLURM configuration (SLURM_CONF={conf} is not a file)"
    query = next((q for q in CONTROLLER_QUERIES if shutil.which(q[0])), None)
    if query is None:
        names = " nor ".join(q[0] for q in CONTROLLER_QUERIES)
        return f"neither {names} found on PATH (cannot ask the SLURM controller)"
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no SLURM controller answering ({query[0]} gave no answer in {timeout:g} s)"
    except OSError as e:
        return f"no SLURM controller answering ({query[0]} could not run: {e.strerror or e})"
    if out.returncode != 0:
        lines = [ln.strip() for ln in out.stderr.splitlines() if ln.strip()]
        said = lines[-1][:200] if lines else f"{query[0]} exited with code {out.returncode}"
        return f"no SLURM controller answering ({said})"
    return None
