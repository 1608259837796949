"""Each arm's tuned recipe: grids centred on the pilot's best rate, seeds set both inits."""

import pytest

from vlab.errors import ConfigError
from vlab.probes.recipes import LR_GRIDS, RECIPES, arm_runs, best_lr


def test_every_arm_with_a_recipe_has_a_grid_centred_on_its_best_rate():
    assert set(RECIPES) == set(LR_GRIDS)
    for arch, grid in LR_GRIDS.items():
        assert list(grid) == sorted(grid) and len(grid) == 3
        assert best_lr(arch) == grid[1]


def test_arm_runs_cross_the_grid_with_seeds_and_carry_the_recipe():
    runs = arm_runs("pythia", seeds=(0, 1, 2))
    assert len(runs) == 9
    assert {(r["train.lr"], r["train.seed"]) for r in runs} == {
        (lr, s) for lr in LR_GRIDS["pythia"] for s in (0, 1, 2)
    }
    assert all(r["model.init_seed"] == r["train.seed"] for r in runs)
    assert all(r["train.beta2"] == 0.98 and r["train.min_lr_ratio"] == 0.0 for r in runs)
    assert all(r["model.overrides.num_attention_heads"] == 4 for r in runs)
    assert [r["train.lr"] for r in arm_runs("mamba", lrs=(1e-3,))] == [1e-3]


def test_an_arch_without_a_recipe_is_a_config_error():
    with pytest.raises(ConfigError, match="model.arch"):
        arm_runs("rwkv")
    with pytest.raises(ConfigError, match="model.arch"):
        best_lr("rwkv")


def _cli_config(*argv):
    from vlab.cli import build_parser
    from vlab.probes.cli import config_from_args

    return config_from_args(build_parser().parse_args(["probe", "run", *argv, "--out", "x"]))


@pytest.mark.parametrize("arch", list(RECIPES))
def test_vlab_probe_run_trains_each_arm_with_its_recipe_unless_told_otherwise(arch):
    from vlab.training.config import TrainConfig

    cfg = _cli_config("--arch", arch)
    assert cfg.train.lr == best_lr(arch) == LR_GRIDS[arch][1]
    assert cfg.task.target_mode == RECIPES[arch]["task.target_mode"]
    shape = {k.split(".")[-1]: v for k, v in RECIPES[arch].items() if k.startswith("model.")}
    assert shape and cfg.model.overrides == shape
    assert (cfg.train.beta2, cfg.train.min_lr_ratio) == (
        RECIPES[arch]["train.beta2"],
        RECIPES[arch]["train.min_lr_ratio"],
    )
    # what the user says wins, flag by flag
    said = _cli_config("--arch", arch, "--lr", "7e-4", "--set", "train.beta2=0.95")
    assert (said.train.lr, said.train.beta2) == (7e-4, 0.95)
    assert said.train.min_lr_ratio == RECIPES[arch]["train.min_lr_ratio"]
    # --no-recipe and presets the pilot did not tune get the config's defaults
    defaults = TrainConfig()
    for plain in (
        _cli_config("--arch", arch, "--no-recipe"),
        _cli_config("--arch", arch, "--preset", "small"),
    ):
        assert (plain.train.lr, plain.train.beta2, plain.train.min_lr_ratio) == (
            defaults.lr,
            defaults.beta2,
            defaults.min_lr_ratio,
        )
        assert plain.task.target_mode == "vocab"


def test_a_pretrained_checkpoint_gets_no_tiny_recipe():
    from vlab.probes.recipes import recipe_defaults

    assert recipe_defaults("mamba", "tiny", "/ckpt/mamba") == {}
    assert recipe_defaults("mamba", "tiny", None) == {
        "task": {"target_mode": "position"},
        "train": {"lr": 3e-3, "beta2": 0.98, "min_lr_ratio": 1.0},
        "model": {"overrides": {"state_size": 16}},
    }


def test_the_recipes_are_the_pilot_rules_choice_from_the_shipped_run_records():
    """recipes.py is the equal pilot's outcome, not anyone's pick: the rule
    (``vlab.probes.pilot.choices``) applied to the three stages' records in ``results/``
    chooses exactly each arm's recipe and grid."""
    from pathlib import Path

    from vlab.probes.pilot import choices, lr_grid, read_cells
    from vlab.probes.recipes import ARMS

    results = Path(__file__).resolve().parents[2] / "results"
    stages = ("pilot-protocol", "pilot-protocol-shapes", "pilot-protocol-seeds")
    chosen = choices(read_cells([results / s for s in stages]))
    assert set(chosen) == set(ARMS)
    for arch, recipe in ARMS.items():
        best = chosen[arch][0].cell
        assert recipe.lr == best.lr and recipe.lrs == lr_grid(best.lr), arch
        # the cell as run overrides, less what the recipe keeps apart (its arch and its lr)
        cell = {k: v for k, v in best.overrides().items() if k not in ("model.arch", "train.lr")}
        assert recipe.settings == cell, arch
