"""Runs trained by several processes of one SLURM job (2 CPU tasks on gloo stand in for 2
GPUs): such a run trains like one process, a rank killed mid-run fails the run cleanly, and a
requeued 2-rank run resumes to the same result as an uninterrupted one."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.cli import vlab
from tests.slurm.test_sweep_slurm import wait_for
from tests.slurm.test_vlm_sweep_slurm import submit
from tests.slurm.test_vlm_sweeps import FAST, vlm_spec
from vlab.fileio import read_jsonl
from vlab.slurm.status import sweep_status
from vlab.slurm.sweepdir import SweepDir

pytestmark = pytest.mark.slurm

# stage 2 long enough (several seconds) that a signal sent after its first evaluation lands
# inside it; batch 4 splits into 2 ranks x 2 examples
BASE = {
    "preset": "tiny-shapes",
    **FAST,
    "stage2": {**FAST["stage2"], "steps": 240, "eval_every": 40, "stop_at_threshold": False},
}
TWO_RANKS = ("--tasks-per-node", "2")


def metrics(out: Path, stage: int) -> list[dict]:
    return read_jsonl(out / "runs" / "pythia" / f"stage{stage}" / "metrics.jsonl")


def test_a_two_rank_run_trains_like_one_process_and_resumes_exactly_when_requeued(
    capsys, tmp_path, slurm_cluster
):
    # one test, not three sharing a fixture: pytest 9 ignores xdist's loadgroup (the group
    # suffix goes to a nodeid attribute pytest no longer reads), so tests of one module may
    # land in two workers, each with its own cluster
    spec = vlm_spec(tmp_path, axes={"model.lm.arch": ["pythia"]}, base=BASE)
    one, two, requeued = tmp_path / "one", tmp_path / "two", tmp_path / "requeued"
    assert vlab(capsys, "sweep", "submit", spec, "--executor", "debug", "--out", str(one))[0] == 0
    code, stdout, _ = submit(
        capsys, spec, two, slurm_cluster.partition, *TWO_RANKS, "--wait", "--wait-timeout", "300"
    )
    assert code == 0, stdout
    (row,) = sweep_status(SweepDir(two))
    assert (row["state"], row["stage"], row["scheduler"]) == ("done", "eval", "COMPLETED")
    script = next((two / "submitit").rglob("*_submission.sh")).read_text()
    assert "--ntasks-per-node=2" in script and "--kill-on-bad-exit=1" in script
    status = json.loads((two / "runs" / "pythia" / "stage2" / "status.json").read_text())
    assert status["attempt"].startswith("slurm:")  # written under WORLD_SIZE 2
    for stage in (1, 2):
        ours, single = metrics(two, stage), metrics(one, stage)
        assert [m["step"] for m in ours] == [m["step"] for m in single]
        for a, b in zip(ours, single, strict=True):
            # each rank averages half of every global batch; the all-reduce adds the halves
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
            assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-5)

    assert submit(capsys, spec, requeued, slurm_cluster.partition, *TWO_RANKS)[0] == 0
    sweep = SweepDir(requeued)
    wait_for(lambda: started(requeued), 180, "stage 2 to get going", sweep)
    # the preemption signal reaches every task; rank 0 requeues the job
    slurm_cluster.run("scancel", "--signal=USR2", sweep.last_job("pythia")["job_id"])
    wait_for(lambda: sweep_status(sweep)[0]["state"] == "done", 300, "the requeued run", sweep)
    status = json.loads((requeued / "runs" / "pythia" / "stage2" / "status.json").read_text())
    assert status["slurm_restart_count"] >= 1  # it really was requeued
    assert metrics(requeued, 2) == metrics(two, 2)


def started(out: Path) -> bool:
    """Stage 2 has written its first evaluation."""
    path = out / "runs" / "pythia" / "stage2" / "metrics.jsonl"
    return path.exists() and len(read_jsonl(path)) >= 1


def _rank_process(job_id: str, rank: int) -> int | None:
    """The pid of task ``rank``'s Python process of SLURM job ``job_id`` on this machine."""
    wanted = {f"SLURM_JOB_ID={job_id}".encode(), f"SLURM_PROCID={rank}".encode()}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted <= env and b"submitit.core._submit" in argv and b"srun" not in argv[0]:
            return pid
    return None


def test_a_rank_killed_mid_run_fails_the_run_without_a_hang(capsys, tmp_path, slurm_cluster):
    base = {**BASE, "stage2": {**BASE["stage2"], "steps": 100_000, "eval_every": 100}}
    spec = vlm_spec(tmp_path, axes={"model.lm.arch": ["pythia"]}, base=base)
    out = tmp_path / "sw"
    assert submit(capsys, spec, out, slurm_cluster.partition, *TWO_RANKS)[0] == 0
    sweep = SweepDir(out)
    wait_for(lambda: started(out), 180, "stage 2 to get going", sweep)
    job = sweep.last_job("pythia")["job_id"]
    pid = _rank_process(job, 1)
    assert pid is not None, "rank 1 not found"
    os.kill(pid, signal.SIGKILL)
    killed = time.time()
    wait_for(lambda: sweep_status(sweep)[0]["scheduler"] == "FAILED", 60, "the job to end", sweep)
    assert time.time() - killed < 60  # rank 0 did not wait in its collective
    (row,) = sweep_status(sweep)
    assert (row["state"], row["stage"]) == ("failed", "stage2")
    # the survivor says what it saw, and that it is not its own failure
    assert row["reason"].startswith("rank 0 of 2: lost another rank of the run")
    assert row["step"] < 100_000
    code, stdout, _ = vlab(capsys, "sweep", "status", str(out))
    assert "failed: 1" in stdout
