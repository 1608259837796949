"""Jobs through a real local SLURM cluster with submitit (fixture `slurm_cluster`).

Every wait is bounded: a broken cluster fails these tests within about a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit

pytestmark = pytest.mark.slurm

# Job functions and classes below are pickled by value, so the job does not have to import this
# test module (it is not importable from the job's working directory / sys.path).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOB_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------- job payloads


def add(a: int, b: int) -> dict[str, Any]:
    return {"sum": a + b, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def square(x: int) -> int:
    return x * x


def barrier_task(barrier_dir: str, index: int, n: int, wait_s: float = 30.0) -> dict[str, Any]:
    """Waits (bounded) until all `n` tasks have started: proves they run at the same time."""
    d = Path(barrier_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / str(index)).touch()
    deadline = time.monotonic() + wait_s
    while len(list(d.iterdir())) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return {
        "index": index,
        "all_started": len(list(d.iterdir())) >= n,
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
    }


class Spinner(submitit.helpers.Checkpointable):
    """Counts until preempted on its first run; returns on the run after the requeue.

    The default `checkpoint()` pickles `self`, so `runs` and `count` carry over the requeue; if
    they did not, the restarted job would spin again and the test would time out.
    """

    def __init__(self, progress_file: str, max_spin_s: float = 90.0) -> None:
        self.progress_file = progress_file
        self.max_spin_s = max_spin_s
        self.runs = 0
        self.count = 0

    def __call__(self) -> dict[str, Any]:
        self.runs += 1
        resumed_at = self.count
        if self.runs == 1:
            deadline = time.monotonic() + self.max_spin_s
            while time.monotonic() < deadline:
                self.count += 1
                Path(self.progress_file).write_text(str(self.count))
                time.sleep(0.05)
        return {
            "runs": self.runs,
            "resumed_at": resumed_at,
            "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
        }


# ----------------------------------------------------------------------------- helpers


def make_executor(cluster: Any, folder: Path, **params: Any) -> submitit.SlurmExecutor:
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=1)
    # time is in minutes; USR2 (timeout signal) comes signal_delay_s before the end: far away.
    executor.update_parameters(
        partition=cluster.partition,
        time=5,
        ntasks_per_node=1,
        cpus_per_task=1,
        signal_delay_s=30,
        **params,
    )
    return executor


def _job_diagnostics(job: submitit.Job[Any]) -> str:
    try:
        info = subprocess.run(
            ["sacct", "-j", str(job.job_id).split("_")[0], "-D", "-P", "-o", "JobID,State,Reason"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except Exception as e:  # noqa: BLE001 - diagnostics only
        info = f"(sacct failed: {e})"
    return f"sacct:\n{info}\nstdout:\n{job.stdout()}\nstderr:\n{job.stderr()}"


def wait_result(job: submitit.Job[Any], timeout: float = JOB_TIMEOUT_S) -> Any:
    """job.result() with a deadline (submitit's own wait has none); cancels the job on timeout."""
    deadline = time.monotonic() + timeout
    while not job.done():
        if time.monotonic() > deadline:
            details = _job_diagnostics(job)
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {timeout:.0f}s\n{details}")
        time.sleep(0.25)
    return job.result()


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str | Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            what = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def sacct_states(cluster: Any, job_id: str) -> list[str]:
    out = cluster.run("sacct", "-j", job_id, "-X", "-D", "-n", "-P", "-o", "JobID,State").stdout
    return [line.split("|")[1] for line in out.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- tests


def test_single_job_result(slurm_cluster: Any, tmp_path: Path) -> None:
    executor = make_executor(slurm_cluster, tmp_path / "submitit")
    job = executor.submit(add, 2, 3)
    result = wait_result(job)
    assert result == {"sum": 5, "slurm_job_id": job.job_id}


def test_array_batch_runs_concurrently(slurm_cluster: Any, tmp_path: Path) -> None:
    executor = make_executor(slurm_cluster, tmp_path / "submitit", array_parallelism=4)
    barrier = str(tmp_path / "barrier")
    with executor.batch():
        jobs = [executor.submit(barrier_task, barrier, i, 4) for i in range(4)]
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1, f"expected one job array, got {[j.job_id for j in jobs]}"
    results = [wait_result(job) for job in jobs]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["array_task_id"] for r in results] == ["0", "1", "2", "3"]
    if slurm_cluster.cpus >= 4:
        assert all(r["all_started"] for r in results), f"tasks did not run concurrently: {results}"


def test_map_array(slurm_cluster: Any, tmp_path: Path) -> None:
    executor = make_executor(slurm_cluster, tmp_path / "submitit")
    jobs = executor.map_array(square, [1, 2, 3, 4])
    assert len(jobs) == 4
    assert [wait_result(job) for job in jobs] == [1, 4, 9, 16]


def test_checkpointable_job_requeues_after_preemption(slurm_cluster: Any, tmp_path: Path) -> None:
    executor = make_executor(slurm_cluster, tmp_path / "submitit")
    progress = tmp_path / "progress"
    job = executor.submit(Spinner(str(progress)))

    def made_progress() -> bool:
        try:
            return int(progress.read_text() or 0) >= 5
        except (FileNotFoundError, ValueError):
            return False

    wait_until(made_progress, JOB_TIMEOUT_S, f"job {job.job_id} to start counting")
    # The preemption / time-limit signal: USR2 -> checkpoint() + requeue. (submitit's own
    # ``job._interrupt()`` sends TERM first; under load that TERM can land on the
    # ``scontrol requeue`` the handler starts and kill it, so the test sends USR2 alone.)
    slurm_cluster.run("scancel", "--signal=USR2", job.job_id)
    # A requeued job may start again once its credential expired (AuthInfo cred_expire=10).
    result = wait_result(job, timeout=90)
    assert result["runs"] == 2, result
    assert result["resumed_at"] >= 5, result  # state came back from the checkpoint
    assert result["restart_count"] == "1", result
    wait_until(
        lambda: sacct_states(slurm_cluster, job.job_id) == ["REQUEUED", "COMPLETED"],
        30,
        lambda: (
            f"sacct to show job {job.job_id} REQUEUED then COMPLETED, "
            f"got {sacct_states(slurm_cluster, job.job_id)}"
        ),
    )


def test_sacct_reports_finished_job(slurm_cluster: Any, tmp_path: Path) -> None:
    executor = make_executor(slurm_cluster, tmp_path / "submitit")
    job = executor.submit(add, 1, 1)
    assert wait_result(job)["sum"] == 2

    # slurmctld sends accounting records to slurmdbd asynchronously, in pieces (a COMPLETED
    # record may show up before its partition): poll for the whole line.
    expected = f"{job.job_id}|COMPLETED|0:0|{slurm_cluster.partition}"

    def accounted() -> bool:
        fields = "JobID,State,ExitCode,Partition"
        out = slurm_cluster.run("sacct", "-j", job.job_id, "-X", "-n", "-P", "-o", fields).stdout
        return out.strip() == expected

    wait_until(accounted, 30, f"sacct to report {expected!r}")
    # submitit reads the same accounting data
    assert job.get_info(mode="force").get("State") == "COMPLETED"
