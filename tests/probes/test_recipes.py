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
    assert all(r["train.beta2"] == 0.98 and r["train.min_lr_ratio"] == 1.0 for r in runs)
    assert [r["train.lr"] for r in arm_runs("mamba", lrs=(1e-3,))] == [1e-3]


def test_an_arch_without_a_recipe_is_a_config_error():
    with pytest.raises(ConfigError, match="model.arch"):
        arm_runs("rwkv")
    with pytest.raises(ConfigError, match="model.arch"):
        best_lr("rwkv")
