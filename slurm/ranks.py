"""One run trained by every process of a multi-task SLURM job: a sweep's multi-rank runs.

A run that asks for ``nodes x tasks_per_node`` processes (one per GPU; ``vlab sweep submit
--gpus-per-node 4``) is one SLURM job whose tasks srun starts with the same call. Each task
learns its place from SLURM through submitit's ``TorchDistributedEnvironment``, which exports
what torch.distributed's ``env://`` rendezvous reads (``MASTER_ADDR``, ``MASTER_PORT``,
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); from there every rank trains exactly as a
``torchrun`` rank does (:mod:`vlab.training.distributed`: DDP or FSDP2, each rank a slice of
every global batch, rank 0 alone writes). No launcher of vlab's own: srun starts the
processes, submitit requeues the job.

Why the ranks join their process group here, before the run's own set-up: they must agree on
the run's lock (rank 0 takes it; if another live process holds it, every rank skips the run
together rather than some waiting forever for a rank 0 that left).

Failures end every rank, with the failing rank's words kept:

* a rank that raises records its failure in the stage's ``status.json`` (naming the rank;
  the first failure of an attempt is kept: :meth:`~vlab.rundir.RunDir.write_status`), adds
  its traceback to task 0's log (the run's log in ``vlab sweep status``), then exits non-zero;
* srun (``--kill-on-bad-exit``, set by :func:`~vlab.slurm.executors.slurm_executor`) then
  ends the other ranks, which may be inside a collective that would otherwise never return;
* a rank killed outright (out of memory, a lost node) leaves no words of its own: the others'
  collectives fail on the closed connection (gloo) or srun ends them; its exit is in the job's
  log and the scheduler's state.

Preemption: submitit's signal handler runs on every rank, and rank 0 alone requeues the job
(the others are ended with it); the requeued job resumes from the run's last checkpoint,
which holds the full (unsharded) state, so it ends where an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import os
import traceback
from pathlib import Path

from vlab.locks import acquire


def multi_task_job() -> bool:
    """True inside a SLURM job step with more than one task (a multi-rank run)."""
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def rendezvous_port() -> int:
    """The port rank 0 listens on for the others, the same on every task of the job: drawn
    from the job's id and its submitit folder. submitit's own choice keys on the job id alone,
    so two clusters on one machine (the tests' private clusters number their jobs from 1) or
    two sweeps' jobs that share an id would meet on one port."""
    key = f"{os.environ.get('SLURM_JOB_ID', '')}:{os.environ.get('SUBMITIT_FOLDER', '')}"
    digest = hashlib.sha256(key.encode()).digest()
    return 20000 + int.from_bytes(digest[:4], "little") % 40000


def run_ranks(sweep_dir: str, name: str) -> dict:
    """This task's share of training run ``name`` of the sweep at ``sweep_dir``; returns the
    run's final status. Rank 0 returns; the other ranks end their process once the run is
    finished on every rank (:func:`~vlab.training.distributed.exit_rank`: no interpreter
    teardown, whose gloo threads can abort a finished rank)."""
    import submitit

    from vlab.experiment import experiment
    from vlab.slurm.sweepdir import run_entry
    from vlab.training.distributed import close_distributed, exit_rank, join_process_group

    os.environ.setdefault("MASTER_PORT", str(rendezvous_port()))  # read by the next line
    env = submitit.helpers.TorchDistributedEnvironment()
    env.export(set_cuda_visible_devices=False, overwrite=True)
    ctx = join_process_group()
    sweep, entry, kind = run_entry(sweep_dir, name)
    lock = acquire(sweep.lock_path(name)) if ctx.is_main else None
    try:
        if ctx.broadcast_int(int(lock is not None)):
            status = experiment(kind).run(entry.config, sweep.run_path(name))
        else:
            status = {"state": "skipped", "reason": "locked by another live process"}
    except BaseException as e:
        _log_failure(ctx.rank, ctx.world, e)
        raise
    finally:
        if lock is not None:
            lock.release()
    close_distributed()
    if not ctx.is_main:
        exit_rank(0)
    return {"name": name, **status}


def _log_failure(rank: int, world: int, error: BaseException) -> None:
    """Add rank ``rank``'s traceback to task 0's log, which ``vlab sweep status`` shows as the
    run's (each task writes its own log; a failure on rank 3 would otherwise sit in a file
    nobody opens). Rank 0's own traceback is in that log already."""
    if rank == 0:
        return
    import submitit
    from submitit.core.utils import JobPaths

    env = submitit.JobEnvironment()
    log = JobPaths(env.paths.folder, job_id=env.job_id, task_id=0).stdout
    text = "".join(traceback.format_exception(error))
    try:
        with open(Path(log), "a") as out:
            out.write(f"vlab: rank {rank} of {world} failed:\n{text}")
    except OSError:
        pass  # the traceback is still in this task's own log
