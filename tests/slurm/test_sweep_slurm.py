"""Sweeps on a real single-node SLURM cluster: submit, preempt and requeue, kill and resume."""

import json
import time

import pytest

from tests.cli import vlab
from vlab.fileio import read_jsonl
from vlab.slurm.status import sweep_status
from vlab.slurm.sweepdir import SweepDir

pytestmark = pytest.mark.slurm

BASE = {
    "task": {"length": 4, "n_heldout": 16},
    "model": {"preset": "tiny"},
    "train": {"steps": 20, "eval_every": 10, "threads": 1},
}
# long enough (tens of seconds) that the interruption always lands mid-run
LONG = {
    **BASE,
    "train": {"steps": 1500, "eval_every": 100, "threads": 1, "stop_at_threshold": False},
}


def spec_file(tmp_path, name, base, axes):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "base": base, "axes": axes}))
    return str(path)


def wait_for(predicate, timeout, what, sweep=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    rows = sweep_status(sweep) if sweep is not None else None
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; status: {rows}")


def reference_metrics(capsys, tmp_path, spec, name):
    """The same run trained uninterrupted in this process."""
    out = tmp_path / "reference"
    assert vlab(capsys, "sweep", "submit", spec, "--executor", "debug", "--out", str(out))[0] == 0
    return read_jsonl(out / "runs" / name / "metrics.jsonl")


def start_long_run(capsys, tmp_path, slurm_cluster):
    """Submit one long run to SLURM, wait until it is training; also train the same run
    uninterrupted in this process. Returns (sweep, its metrics path, the expected metrics)."""
    spec = spec_file(tmp_path, "long", LONG, {"train.seed": [0]})
    expected = reference_metrics(capsys, tmp_path, spec, "s0")
    out = tmp_path / "sw"
    code, _, _ = vlab(
        capsys,
        "sweep",
        "submit",
        spec,
        "--executor",
        "slurm",
        "--out",
        str(out),
        "--partition",
        slurm_cluster.partition,
        "--time-min",
        "10",
    )
    assert code == 0
    metrics = out / "runs" / "s0" / "metrics.jsonl"
    wait_for(lambda: len(read_jsonl(metrics)) >= 3, 120, "the run to get going")
    return SweepDir(out), metrics, expected


def test_slurm_sweep_completes_and_resubmitting_reruns_nothing(capsys, tmp_path, slurm_cluster):
    spec = spec_file(
        tmp_path,
        "s",
        BASE,
        {"model.arch": ["pythia", "mamba"], "task.variant": ["suffix", "prefix"]},
    )
    out = str(tmp_path / "sw")
    code, stdout, _ = vlab(
        capsys,
        "sweep",
        "submit",
        spec,
        "--executor",
        "slurm",
        "--out",
        out,
        "--partition",
        slurm_cluster.partition,
        "--time-min",
        "10",
        "--wait",
        "--wait-timeout",
        "240",
    )
    assert code == 0, stdout
    assert "as SLURM job array" in stdout
    rows = sweep_status(SweepDir(out))
    assert [r["state"] for r in rows] == ["done"] * 4
    assert all(r["scheduler"] == "COMPLETED" for r in rows), rows
    jobs = {r["job_id"].split("_")[0] for r in rows}
    assert len(jobs) == 1  # one job array, not one job per run
    code, stdout, _ = vlab(capsys, "sweep", "submit", spec, "--executor", "slurm", "--out", out)
    assert code == 0 and "4 done (skipped)" in stdout and "0 to run" in stdout
    code, stdout, _ = vlab(capsys, "sweep", "status", out)
    assert "done: 4" in stdout


def test_preempted_run_requeues_and_resumes_to_the_same_metrics(capsys, tmp_path, slurm_cluster):
    sweep, metrics, expected = start_long_run(capsys, tmp_path, slurm_cluster)
    # the preemption signal (what SLURM sends before preempting or at the time limit):
    # submitit calls checkpoint() and requeues the job
    slurm_cluster.run("scancel", "--signal=USR2", sweep.last_job("s0")["job_id"])
    wait_for(lambda: sweep_status(sweep)[0]["state"] == "done", 240, "the requeued run", sweep)
    status = json.loads((sweep.run_path("s0") / "status.json").read_text())
    assert status["slurm_restart_count"] >= 1  # it really was requeued
    assert read_jsonl(metrics) == expected


def test_killed_run_is_finished_by_resume(capsys, tmp_path, slurm_cluster):
    sweep, metrics, expected = start_long_run(capsys, tmp_path, slurm_cluster)
    job_id = sweep.last_job("s0")["job_id"]
    slurm_cluster.run("scancel", job_id)  # cancelled outright: TERM, then KILL, no checkpoint()
    wait_for(
        lambda: sweep_status(sweep)[0]["state"] in ("failed", "interrupted"),
        60,
        "the scheduler to see the job gone",
        sweep,
    )
    assert len(read_jsonl(metrics)) < len(expected)
    code, stdout, _ = vlab(
        capsys, "sweep", "resume", str(sweep.path), "--wait", "--wait-timeout", "240"
    )
    assert code == 0, stdout
    assert "1 to run" in stdout
    assert sweep_status(sweep)[0]["state"] == "done"
    assert read_jsonl(metrics) == expected


def test_builtin_cpu_small_spec_completes_on_slurm(capsys, tmp_path, slurm_cluster):
    out = str(tmp_path / "cpu-small")
    code, stdout, _ = vlab(
        capsys,
        "sweep",
        "submit",
        "cpu-small",
        "--executor",
        "slurm",
        "--out",
        out,
        "--set",
        "train.steps=20",
        "--set",
        "train.eval_every=10",
        "--partition",
        slurm_cluster.partition,
        "--wait",
        "--wait-timeout",
        "300",
    )
    assert code == 0, stdout
    rows = sweep_status(SweepDir(out))
    assert len(rows) == 8 and all(r["state"] == "done" for r in rows), rows
