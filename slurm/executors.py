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
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from vlab.errors import ConfigError, VlabError
from vlab.slurm.sweepdir import SweepDir

EXECUTORS = ("local", "slurm", "debug")


@dataclass(frozen=True)
class SlurmOptions:
    """The SLURM resources of every job of a sweep (one array job per submission).

    ``sbatch`` holds extra ``#SBATCH`` options (``{"constraint": "a100"}``); ``setup`` holds
    shell lines run before the job (``module load cuda``, activating an environment).
    """

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    time_min: int = 60
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    sbatch: dict = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("cpus_per_task", "time_min", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_task < 0:
            raise ConfigError("gpus_per_task", f"must be >= 0, got {self.gpus_per_task}")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ConfigError("mem_gb", f"must be > 0, got {self.mem_gb}")
        # each value becomes one line of the job script: a line break would smuggle in more
        texts = {f"sbatch.{k}": f"{k}={v}" for k, v in self.sbatch.items()}
        texts.update({f"setup[{i}]": line for i, line in enumerate(self.setup)})
        texts.update({n: getattr(self, n) or "" for n in ("partition", "account", "qos")})
        for name, text in texts.items():
            if any(c in str(text) for c in "\n\r\0"):
                raise ConfigError(name, f"must be one line, got {text!r}")


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
    """Run each run in its own worker process, ``workers`` at a time; blocks until all end.

    Worker output goes to ``logs/<name>.log``. Ctrl-C sends SIGTERM to the workers, which
    checkpoint and stop; the sweep then resumes where it was.
    """
    if workers < 1:
        raise ConfigError("workers", f"must be >= 1, got {workers}")
    queue = list(names)
    running: dict[str, tuple[subprocess.Popen, object]] = {}
    results: dict[str, dict] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    bar = tqdm(total=len(names), desc=f"sweep {sweep.path.name}", unit="run", dynamic_ncols=True)
    try:
        while queue or running:
            while queue and len(running) < workers:
                name = queue.pop(0)
                log_path = sweep.log_path(name)
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = open(log_path, "a")  # noqa: SIM115 - closed when the worker ends
                proc = subprocess.Popen(
                    [sys.executable, "-m", "vlab.slurm.worker", str(sweep.path), name],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
                running[name] = (proc, log)
            time.sleep(0.2)
            for name, (proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                results[name] = {
                    "job_id": None,
                    "pid": proc.pid,
                    "returncode": proc.returncode,
                    "log": str(sweep.log_path(name).resolve()),
                }
                if on_done:
                    on_done(name, proc.returncode)
                bar.update(1)
    except KeyboardInterrupt:
        for proc, _ in running.values():
            proc.terminate()
        for proc, log in running.values():
            proc.wait()
            log.close()
        raise
    finally:
        bar.close()
    return {"jobs": results}


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
    if options.gpus_per_task:
        params["gpus_per_node"] = options.gpus_per_task
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
