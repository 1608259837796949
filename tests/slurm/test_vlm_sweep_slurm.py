"""VLM sweeps on a real single-node SLURM cluster: a job array trains and evaluates every run;
a preempted run is requeued and resumes its stage to the same metrics."""

import json

import pytest

from tests.cli import vlab
from tests.slurm.test_sweep_slurm import wait_for
from tests.slurm.test_vlm_sweeps import FAST, SHAPES_BENCHMARKS, vlm_spec
from vlab.fileio import read_jsonl
from vlab.slurm.status import sweep_status
from vlab.slurm.sweepdir import SweepDir

pytestmark = pytest.mark.slurm

# stage 2 long enough (tens of seconds) that the preemption always lands in it
LONG = {
    "preset": "tiny-shapes",
    **FAST,
    "stage2": {**FAST["stage2"], "steps": 400, "eval_every": 40, "stop_at_threshold": False},
}


def submit(capsys, spec: str, out, partition: str, *extra: str):
    return vlab(
        capsys,
        "sweep",
        "submit",
        spec,
        "--executor",
        "slurm",
        "--out",
        str(out),
        "--partition",
        partition,
        "--time-min",
        "10",
        *extra,
    )


def test_slurm_vlm_sweep_completes_and_resubmitting_reruns_nothing(capsys, tmp_path, slurm_cluster):
    spec, out = vlm_spec(tmp_path), tmp_path / "sw"
    code, stdout, _ = submit(
        capsys, spec, out, slurm_cluster.partition, "--wait", "--wait-timeout", "300"
    )
    assert code == 0, stdout
    assert "as SLURM job array" in stdout
    rows = sweep_status(SweepDir(out))
    assert [(r["state"], r["stage"], r["benchmarks"]) for r in rows] == [
        ("done", "eval", SHAPES_BENCHMARKS)
    ] * 2
    assert all(r["scheduler"] == "COMPLETED" for r in rows), rows
    assert len({r["job_id"].split("_")[0] for r in rows}) == 1  # one job array
    for r in rows:
        assert (out / "runs" / r["name"] / "eval" / "heldout" / "results.json").is_file()
    code, stdout, _ = submit(capsys, spec, out, slurm_cluster.partition)
    assert code == 0 and "2 done (skipped)" in stdout and "0 to run" in stdout
    code, stdout, _ = vlab(capsys, "sweep", "status", str(out))
    assert "done: 2" in stdout and "shapes/grounding" in stdout


def test_preempted_vlm_run_requeues_and_resumes_to_the_same_metrics(
    capsys, tmp_path, slurm_cluster
):
    spec = vlm_spec(tmp_path, axes={"model.lm.arch": ["mamba"]}, base=LONG)
    reference = tmp_path / "reference"
    assert (
        vlab(capsys, "sweep", "submit", spec, "--executor", "debug", "--out", str(reference))[0]
        == 0
    )
    out = tmp_path / "sw"
    assert submit(capsys, spec, out, slurm_cluster.partition)[0] == 0
    sweep = SweepDir(out)
    metrics = out / "runs" / "mamba" / "stage2" / "metrics.jsonl"
    wait_for(lambda: len(read_jsonl(metrics)) >= 2, 180, "stage 2 to get going", sweep)
    # the preemption signal: submitit checkpoints the call and requeues the job
    slurm_cluster.run("scancel", "--signal=USR2", sweep.last_job("mamba")["job_id"])
    wait_for(lambda: sweep_status(sweep)[0]["state"] == "done", 300, "the requeued run", sweep)
    status = json.loads((metrics.parent / "status.json").read_text())
    assert status["slurm_restart_count"] >= 1  # it really was requeued
    assert read_jsonl(metrics) == read_jsonl(
        reference / "runs" / "mamba" / "stage2" / "metrics.jsonl"
    )
    assert sweep_status(sweep)[0]["benchmarks"] == SHAPES_BENCHMARKS
