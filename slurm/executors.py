"""Where the runs of a sweep execute: ``local`` worker processes, ``slurm`` via submitit, or
``debug`` in this process. Always chosen by name: nothing is guessed from whether ``sbatch``
happens to be on PATH (submitit's ``AutoExecutor`` would pick SLURM then, even with no
controller answering).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from vlab.errors import ConfigError, VlabError
from vlab.slurm.options import SlurmOptions
from vlab.slurm.sweepdir import SweepDir


def run_debug(sweep: SweepDir, names: list[str]) -> dict:
    """Run every run in this process, one after another (breakpoints work)."""
    from vlab.slurm.worker import run_one

    jobs = {}
    for name in names:
        status = run_one(str(sweep.path), name, progress=True)
        jobs[name] = {"job_id": None, "state": status.get("state")}
    return {"jobs": jobs}


def run_local(
    sweep: SweepDir,
    names: list[str],
    workers: int = 1,
    on_done: Callable[[str, int], None] | None = None,
) -> dict:
    """Run the runs in ``workers`` worker processes, each taking the next run as it finishes one.

    A worker trains run after run (``python -m vlab.slurm.worker --serve``), so the few seconds
    of importing torch and transformers are paid once per worker, not once per run; each run's
    output still goes to ``logs/<name>.log``. A worker that dies (killed, out of memory) fails
    only the run it held; a fresh one takes the rest. Ctrl-C sends SIGTERM to the workers, which
    checkpoint and stop; the sweep then resumes where it was. Blocks until all runs end.
    """
    if workers < 1:
        raise ConfigError("workers", f"must be >= 1, got {workers}")
    queue = list(names)
    threads = worker_threads(workers)
    pool: list[_Worker] = []
    results: dict[str, dict] = {}
    bar = tqdm(total=len(names), desc=f"sweep {sweep.path.name}", unit="run", dynamic_ncols=True)

    def record(name: str, code: int, pid: int) -> None:
        results[name] = {
            "job_id": None,
            "pid": pid,
            "returncode": code,
            "log": str(sweep.log_path(name).resolve()),
        }
        if on_done:
            on_done(name, code)
        bar.update(1)

    try:
        while queue or any(w.name for w in pool):
            pool = [w for w in pool if w.name or w.alive()]
            while queue and len(pool) < workers:
                pool.append(_Worker(sweep, threads))
            for worker in pool:
                if worker.name is None and queue:
                    worker.give(queue.pop(0))
            time.sleep(0.05)
            for worker in pool:
                finished = worker.poll()
                if finished is not None:
                    record(*finished, worker.proc.pid)
    except KeyboardInterrupt:
        for worker in pool:
            worker.proc.terminate()
        raise
    finally:
        for worker in pool:
            worker.close()
        bar.close()
    return {"jobs": results}


def worker_threads(workers: int) -> int:
    """CPU threads for each of ``workers`` local workers: the usable cores shared out (at
    least 1), so that workers side by side do not oversubscribe the cores (torch's threads of
    two workers then contend for the same cores and every run slows down). A run's own
    ``train.threads`` (``stage1/2.threads``) still wins; ``OMP_NUM_THREADS`` set by the user is
    kept."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


class _Worker:
    """One served worker process of :func:`run_local` and the run it is training, if any."""

    def __init__(self, sweep: SweepDir, threads: int):
        log = sweep.path / "logs" / "local-workers.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:  # the worker's own messages, between runs
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vlab.slurm.worker", "--serve", str(sweep.path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=out,
                env={"OMP_NUM_THREADS": str(threads), **os.environ, "PYTHONUNBUFFERED": "1"},
            )
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.name: str | None = None
        self.pending = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def give(self, name: str) -> None:
        self.name = name
        try:
            self.proc.stdin.write(name.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died: poll() reports the run with the worker's exit code

    def poll(self) -> tuple[str, int] | None:
        """(name, exit code) once the run it holds has ended, else None."""
        if self.name is None:
            return None
        alive = self.alive()  # before reading, so an answer written just before exit is seen
        try:
            self.pending += os.read(self.proc.stdout.fileno(), 65536)
        except BlockingIOError:
            pass
        if b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            name, code = line.decode().rsplit("\t", 1)
            self.name = None
            return name, int(code)
        if alive:
            return None
        name, self.name = self.name, None  # died holding this run: its code is the worker's
        return name, self.proc.returncode

    def close(self) -> None:
        """End of input: an idle worker exits; a busy one (after SIGTERM) once its run stops."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()
        self.proc.stdout.close()


def slurm_executor(options: SlurmOptions, folder: str, name: str):
    """A submitit SLURM executor with ``options`` (chosen by name, never auto-detected)."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict = {
        "timeout_min": options.time_min,
        "cpus_per_task": options.cpus_per_task,
        "slurm_array_parallelism": options.array_parallelism,
        "name": name,
    }
    if options.gpus:
        params["gpus_per_node"] = options.gpus
    if options.ranks > 1:
        # every rank trains the same run (vlab.slurm.ranks); when one exits with an error,
        # srun ends the others instead of leaving them waiting in a collective
        params["nodes"] = options.nodes
        params["tasks_per_node"] = options.tasks
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
    if options.partition:
        params["slurm_partition"] = options.partition
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if options.account:
        params["slurm_account"] = options.account
    if options.qos:
        params["slurm_qos"] = options.qos
    if options.sbatch:
        params["slurm_additional_parameters"] = dict(options.sbatch)
    if options.setup:
        params["slurm_setup"] = list(options.setup)
    executor.update_parameters(**params)
    return executor


def submit_array(executor, function: Callable, calls: list[tuple]) -> list:
    """Submit ``function(*args)`` for each args of ``calls`` as one job array; sbatch's
    complaint becomes a one-line error."""
    try:
        with executor.batch():
            return [executor.submit(function, *args) for args in calls]
    except Exception as e:  # noqa: BLE001 - sbatch failures come in many types
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        said = next((ln for ln in reversed(lines) if "sbatch" in ln), lines[-1] if lines else "")
        raise VlabError(f"SLURM submission failed: {said or type(e).__name__}") from e


def run_slurm(
    sweep: SweepDir, names: list[str], options: SlurmOptions, folder: str | None = None
) -> dict:
    """Submit the runs as one SLURM job array through submitit; returns at once with job ids."""
    from vlab.slurm.worker import SweepJob

    folder = folder or str(sweep.path / "submitit" / time.strftime("%Y%m%d-%H%M%S"))
    executor = slurm_executor(options, folder, f"vlab-{sweep.path.name}")
    jobs = submit_array(executor, SweepJob(), [(str(sweep.path), name) for name in names])
    return {
        "folder": folder,
        "jobs": {
            name: {"job_id": job.job_id, "log": str(Path(job.paths.stdout).resolve())}
            for name, job in zip(names, jobs, strict=True)
        },
    }
