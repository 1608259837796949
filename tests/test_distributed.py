"""Data parallelism under torchrun (2 CPU processes, gloo) equals single-process training."""

import os
import subprocess
import sys

import pytest

from vlab.fileio import read_jsonl

ARGS = [
    "--length",
    "4",
    "--steps",
    "40",
    "--threads",
    "1",
    "--no-progress",
    "--set",
    "train.eval_every=10",
    "--set",
    "task.n_heldout=32",
    "--set",
    "train.stop_at_threshold=false",
]


def torchrun(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free local port for the rendezvous
        "--nproc_per_node",
        "2",
        "-m",
        "vlab.cli",
        *argv,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_two_ranks_train_like_one_process_on_the_global_batch(tmp_path, arch):
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlab.cli",
            "probe",
            "run",
            "--arch",
            arch,
            *ARGS,
            "--out",
            str(tmp_path / "single"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    ddp = torchrun("probe", "run", "--arch", arch, *ARGS, "--out", str(tmp_path / "ddp"))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("done: finished the budget") == 1  # rank 0 alone reports
    a = read_jsonl(tmp_path / "ddp" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "single" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [0, 10, 20, 30, 40]
    for x, y in zip(a[1:], b[1:], strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
        assert x["eval_loss"] == pytest.approx(y["eval_loss"], rel=1e-4)
    assert not list((tmp_path / "ddp").glob("**/.*.tmp"))
