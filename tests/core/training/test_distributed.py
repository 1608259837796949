"""Data parallelism under torchrun (2 CPU processes, gloo) equals single-process training,
with DistributedDataParallel and with FSDP2 sharding, and FSDP checkpoints are the
single-process ones (a run moves between one process and FSDP at any checkpoint)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from vlab.errors import ConfigError
from vlab.fileio import read_json, read_jsonl
from vlab.models.backbones import BackboneConfig, build_backbone
from vlab.models.vlm.model import build_vlm
from vlab.models.vlm.parts import VisionConfig, VLMConfig
from vlab.training.config import TrainConfig
from vlab.training.distributed import fsdp_units

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
FSDP = ["--set", "train.parallel=fsdp"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

# ``probe run`` that stops itself (through the engine's should_stop, as a preemption would)
# after a number of optimizer steps: the checkpoint then falls between two evaluations.
STOPPING_RUN = """
import sys

from vlab.cli import build_parser
from vlab.training.distributed import close_distributed, exit_rank, is_main_process
from vlab.probes.cli import config_from_args
from vlab.probes.trainer import run_probe

stop_after = int(sys.argv[1])
args = build_parser().parse_args(sys.argv[2:])
polls = 0


def should_stop() -> bool:
    global polls
    polls += 1
    return polls >= stop_after


result = run_probe(config_from_args(args), args.out, progress=False, should_stop=should_stop)
if is_main_process():
    print(f"{result.state} at step {result.step}")
close_distributed()
exit_rank(0)
"""


def single(*argv: str) -> subprocess.CompletedProcess:
    """One process: ``vlab.cli`` (``-m vlab.cli ...``) or a script."""
    cmd = [sys.executable, *argv]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def torchrun(*argv: str) -> subprocess.CompletedProcess:
    """The same under ``torchrun`` with 2 ranks (``-m vlab.cli ...`` or a script)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free local port for the rendezvous
        "--nproc_per_node",
        "2",
        *argv,
    ]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def said(proc: subprocess.CompletedProcess) -> str:
    """What a failed command said: its last 3,000 characters of stderr, after every line
    naming a rank's error (a rank's one-line ``vlab: error`` is easily buried under the other
    rank's traceback, as the torchrun flake of session 8 was)."""
    errors = [
        line for line in proc.stderr.splitlines() if "vlab: error" in line or "Error:" in line
    ]
    return "\n".join([*errors[:20], "...", proc.stderr[-3000:]])


def assert_same_training(a: Path, b: Path) -> None:
    """Equal evaluations at the same steps (losses to rounding: reductions differ in order)."""
    x, y = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert [r["step"] for r in x] == [r["step"] for r in y] == [0, 10, 20, 30, 40]
    assert x[0]["eval_loss"] == pytest.approx(y[0]["eval_loss"], rel=1e-6)
    for r, s in zip(x[1:], y[1:], strict=True):
        assert r["loss"] == pytest.approx(s["loss"], rel=1e-4)
        assert r["eval_loss"] == pytest.approx(s["eval_loss"], rel=1e-4)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_two_ranks_train_like_one_process_on_the_global_batch(tmp_path, arch):
    one = single(
        "-m", "vlab.cli", "probe", "run", "--arch", arch, *ARGS, "--out", str(tmp_path / "single")
    )
    assert one.returncode == 0, one.stderr
    ddp = torchrun(
        "-m", "vlab.cli", "probe", "run", "--arch", arch, *ARGS, "--out", str(tmp_path / "ddp")
    )
    assert ddp.returncode == 0, said(ddp)
    assert ddp.stdout.count("done: finished the budget") == 1  # rank 0 alone reports
    assert_same_training(tmp_path / "ddp", tmp_path / "single")
    assert not list((tmp_path / "ddp").glob("**/.*.tmp"))


@pytest.mark.parametrize(
    ("arch", "extra"),
    [("pythia", []), ("mamba", ["--set", "train.grad_accum=2"])],  # mamba: tied embeddings
)
def test_fsdp_two_ranks_train_like_one_process(tmp_path, arch, extra):
    """Sharded parameters, gradients and AdamW state; every rank evaluates in lockstep."""
    argv = ["probe", "run", "--arch", arch, *ARGS, *extra]
    one = single("-m", "vlab.cli", *argv, "--out", str(tmp_path / "single"))
    assert one.returncode == 0, one.stderr
    fsdp = torchrun("-m", "vlab.cli", *argv, *FSDP, "--out", str(tmp_path / "fsdp"))
    assert fsdp.returncode == 0, said(fsdp)
    assert fsdp.stdout.count("done: finished the budget") == 1
    assert read_json(tmp_path / "fsdp" / "config.json")["train"]["parallel"] == "fsdp"
    assert_same_training(tmp_path / "fsdp", tmp_path / "single")
    assert not list((tmp_path / "fsdp").glob("**/.*.tmp"))


def test_fsdp_checkpoints_resume_in_one_process_and_back(tmp_path):
    """FSDP to step 15, one process to 25, FSDP to 40 equals one uninterrupted process.

    Both hand-overs happen at checkpoints written between evaluations (loop counters and
    Adam moments mid-interval), through the tied embeddings of Mamba.
    """
    script = tmp_path / "stopping_run.py"
    script.write_text(STOPPING_RUN)
    argv = ["probe", "run", "--arch", "mamba", *ARGS, *FSDP, "--out"]
    ref = single("-m", "vlab.cli", *argv, str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = str(tmp_path / "moved")

    first = torchrun(str(script), "15", *argv, out)
    assert first.returncode == 0, said(first)
    assert first.stdout.count("interrupted at step 15") == 1
    second = single(str(script), "10", *argv, out)
    assert second.returncode == 0, said(second)
    assert "interrupted at step 25" in second.stdout
    third = torchrun("-m", "vlab.cli", *argv, out)
    assert third.returncode == 0, said(third)
    assert third.stdout.count("done: finished the budget") == 1

    assert_same_training(tmp_path / "moved", tmp_path / "ref")
    assert read_json(tmp_path / "moved" / "status.json")["state"] == "done"


def test_parallel_is_validated():
    assert TrainConfig(parallel="fsdp").parallel == "fsdp"
    with pytest.raises(ConfigError, match="'parallel'"):
        TrainConfig(parallel="zero3")


def test_fsdp_units_are_the_blocks_and_keep_tied_embeddings_in_one_unit():
    pythia = build_backbone(BackboneConfig(arch="pythia"))
    assert fsdp_units(pythia) == list(pythia.gpt_neox.layers)
    mamba = build_backbone(BackboneConfig(arch="mamba"))
    assert mamba.lm_head.weight is mamba.backbone.embeddings.weight  # tied: both in the root
    assert fsdp_units(mamba) == list(mamba.backbone.layers)

    vlm = build_vlm(VLMConfig(vision=VisionConfig(kind="siglip", preset="tiny")))
    encoder_layers = [m for m in vlm.encoders.modules() if type(m).__name__.endswith("Layer")]
    assert len(encoder_layers) == 2
    assert vlm.fsdp_units() == [*vlm.lm.gpt_neox.layers, *encoder_layers]
    assert fsdp_units(vlm) == vlm.fsdp_units()

    class SplitsTheTie(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = mamba

        def fsdp_units(self) -> list[nn.Module]:
            return [self.lm.lm_head]

    with pytest.raises(ConfigError, match="tied parameters must stay in one unit"):
        fsdp_units(SplitsTheTie())


VLM_ARGS = [
    "vlm", "train", "--preset", "tiny-shapes", "--arch", "mamba", "--steps", "20",
    "--no-progress",
    "--set", "stage1.steps=4", "--set", "stage1.eval_every=4",
    "--set", "stage2.eval_every=10", "--set", "stage2.stop_at_threshold=false",
    "--set", "stage1.threads=1", "--set", "stage2.threads=1",
    "--set", "data.n_heldout=6", "--set", "max_new_tokens=8",
]  # fmt: skip


def test_vlm_under_fsdp_trains_and_generates_like_one_process(tmp_path):
    """Both stages sharded on 2 ranks; every rank runs the cached greedy decoding through
    the sharded model (each step all-gathers), and the held-out generations score as in one
    process."""
    one = single("-m", "vlab.cli", *VLM_ARGS, "--out", str(tmp_path / "single"))
    assert one.returncode == 0, said(one)
    fsdp_args = ["--set", "stage1.parallel=fsdp", "--set", "stage2.parallel=fsdp"]
    out = tmp_path / "fsdp"
    fsdp = torchrun("-m", "vlab.cli", *VLM_ARGS, *fsdp_args, "--out", str(out))
    assert fsdp.returncode == 0, said(fsdp)
    for stage in ("stage1", "stage2"):
        x = read_jsonl(out / stage / "metrics.jsonl")
        y = read_jsonl(tmp_path / "single" / stage / "metrics.jsonl")
        assert [r["step"] for r in x] == [r["step"] for r in y]
        for r, s in zip(x, y, strict=True):
            assert r["eval_loss"] == pytest.approx(s["eval_loss"], rel=1e-4)
            assert r["tasks"] == s["tasks"]
