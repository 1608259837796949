"""A run whose loss or gradient stops being finite ends "failed" with the step named, never
"done"; non-finite settings are refused before anything is created."""

import math

import pytest

from vlab.cli import main
from vlab.errors import ConfigError
from vlab.fileio import read_jsonl
from vlab.models.backbones import BackboneConfig
from vlab.rundir import RunDir
from vlab.training.config import TrainConfig

ARGS = ["--length", "4", "--steps", "40", "--no-progress"]
SETS = ["--set", "train.eval_every=10", "--set", "train.threads=1", "--set", "task.n_heldout=16"]


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_a_diverging_run_stops_as_failed_at_the_first_non_finite_step(tmp_path, capsys, arch):
    out = tmp_path / "run"
    argv = ["probe", "run", "--arch", arch, *ARGS, *SETS, "--lr", "1e6", "--out", str(out)]
    assert main(argv) == 1
    status = RunDir(out).read_status()
    assert status["state"] == "failed" and "not finite at step" in status["reason"]
    assert "diverged" in capsys.readouterr().out
    assert status["step"] < 40  # stopped at once, not trained to the end on NaN
    assert all(math.isfinite(m["eval_loss"]) for m in read_jsonl(out / "metrics.jsonl"))


def test_patience_skips_that_many_non_finite_steps_before_failing(tmp_path):
    steps = {}
    for patience in (0, 2):
        out = tmp_path / f"p{patience}"
        sets = [*SETS, "--set", f"train.nonfinite_patience={patience}"]
        assert (
            main(
                ["probe", "run", "--arch", "mamba", *ARGS, *sets, "--lr", "1e6", "--out", str(out)]
            )
            == 1
        )
        status = RunDir(out).read_status()
        assert f"{patience + 1} such steps in a row" in status["reason"]
        steps[patience] = status["step"]
    assert steps[2] == steps[0] + 2  # skipped steps leave the weights as they were


@pytest.mark.parametrize(
    "setting",
    [
        ["--lr", "Infinity"],
        ["--lr", "nan"],
        ["--set", "train.grad_clip=NaN"],
        ["--set", "train.weight_decay=NaN"],
        ["--set", "train.threshold=NaN"],
        ["--set", "model.init_std=NaN"],
        ["--set", "model.init_std=Infinity"],
    ],
)
def test_non_finite_settings_are_refused_naming_the_field_before_anything_exists(
    tmp_path, capsys, setting
):
    out = tmp_path / "run"
    assert main(["probe", "run", "--arch", "pythia", *ARGS, *setting, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    field = setting[1].split("=")[0] if setting[0] == "--set" else "train.lr"
    assert len(err.splitlines()) == 1 and field in err and "finite" in err
    assert not out.exists()


def test_configs_built_in_code_refuse_non_finite_values_too():
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(ConfigError, match="grad_clip"):
        TrainConfig(grad_clip=float("nan"))
    with pytest.raises(ConfigError, match="init_std"):
        BackboneConfig(init_std=float("nan"))
