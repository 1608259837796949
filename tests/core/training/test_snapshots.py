"""Checkpoints kept over training: step 0 and log-spaced evaluation steps, the model weights
as ``last.pt`` held them then (no optimizer), loadable by step."""

import pytest
import torch

from vlab.cli import main
from vlab.errors import ConfigError
from vlab.rundir import RunDir
from vlab.training.config import TrainConfig


def test_the_kept_steps_are_step_zero_and_log_spaced_evaluation_steps():
    assert sorted(TrainConfig(steps=30, eval_every=10).snapshot_steps) == [0, 10, 20, 30]
    kept = sorted(TrainConfig(steps=2000).snapshot_steps)  # evaluations every 20 steps
    assert len(kept) == 12 and kept[0] == 0 and kept[1] == 20 and kept[-1] == 2000
    assert all(s % 20 == 0 for s in kept)
    gaps = [b - a for a, b in zip(kept[1:], kept[2:], strict=False)]
    assert gaps == sorted(gaps)  # denser early, where learning happens
    assert TrainConfig(steps=2000, keep_checkpoints=0).snapshot_steps == frozenset()
    assert TrainConfig(steps=2000, keep_checkpoints=1).snapshot_steps == {0}
    assert 0 not in TrainConfig(steps=2000, eval_at_start=False).snapshot_steps
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        TrainConfig(keep_checkpoints=-1)


def test_a_run_keeps_the_weights_of_its_kept_steps_loadable_by_step(tmp_path):
    out = tmp_path / "run"
    argv = ["probe", "run", "--arch", "mamba", "--length", "4", "--steps", "30", "--no-progress"]
    sets = ["--set", "train.eval_every=10", "--set", "train.threads=1"]
    sets += ["--set", "train.stop_at_threshold=false", "--set", "task.n_heldout=16"]
    assert main([*argv, *sets, "--out", str(out)]) == 0
    run = RunDir(out)
    assert sorted(run.snapshots()) == [0, 10, 20, 30]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "last.pt",
        "step-000000000.pt",
        "step-000000010.pt",
        "step-000000020.pt",
        "step-000000030.pt",
    ]
    last, kept_last = run.load_checkpoint(), run.load_checkpoint(step=30)
    assert "optimizer" not in kept_last and kept_last["config"] == last["config"]
    for name, weights in last["model"].items():
        assert torch.equal(weights, kept_last["model"][name])
    first, mid = run.load_checkpoint(step=0), run.load_checkpoint(step=10)
    assert first["step"] == 0 and mid["step"] == 10
    name = next(iter(first["model"]))
    assert not torch.equal(first["model"][name], mid["model"][name])  # trained in between
    assert run.load_checkpoint(step=15) is None  # not a kept step
