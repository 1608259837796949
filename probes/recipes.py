"""Each arm's training recipe for the tiny probe presets, as found by the pilot search.

Every arm got the same pilot search (README, "The pilot search"; built-in specs
``pilot-tiny``, ``pilot-tiny-shapes``, ``pilot-tiny-seeds`` for Pythia and Mamba,
``pilot-tiny-arms``, ``pilot-tiny-arms-shapes``, ``pilot-tiny-arms-seeds`` for Mamba-2 and the
hybrid): learning rate, optimizer betas and schedule, target encoding, and the shape settings
that keep the parameter count. Each arm's preset shape was its best (or, for Mamba-2, no
shape was better). The recipes below are those results, and the learning-rate grids are
centred on each arm's best rate with one neighbour on each side, as the paper's protocol has
three learning rates per architecture. Specs build their runs from here, so a default sweep and
its quick variant cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlab.config import nest
from vlab.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """An arm's chosen cell: its learning rate, the settings that go with it (dotted config
    keys: schedule, betas, target encoding, shape overrides), and the default experiment's
    learning-rate grid around it (``vlab.probes.pilot.lr_grid``)."""

    lr: float
    settings: dict
    lrs: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.lr not in self.lrs:
            raise ConfigError("train.lr", f"the recipe's {self.lr} is not on its grid {self.lrs}")


ARMS: dict[str, Recipe] = {
    "pythia": Recipe(
        1e-3,
        {"train.beta2": 0.98, "train.min_lr_ratio": 1.0, "task.target_mode": "position"},
        (5e-4, 1e-3, 2e-3),
    ),
    "mamba": Recipe(
        3e-3,
        {"train.beta2": 0.999, "train.min_lr_ratio": 0.0, "task.target_mode": "position"},
        (2e-3, 3e-3, 4e-3),
    ),
    "mamba2": Recipe(
        3e-3,
        {"train.beta2": 0.98, "train.min_lr_ratio": 1.0, "task.target_mode": "position"},
        (2e-3, 3e-3, 4e-3),
    ),
    "hybrid": Recipe(
        1e-3,
        {"train.beta2": 0.98, "train.min_lr_ratio": 1.0, "task.target_mode": "position"},
        (5e-4, 1e-3, 2e-3),
    ),
}
RECIPES: dict[str, dict] = {arch: recipe.settings for arch, recipe in ARMS.items()}
LR_GRIDS: dict[str, tuple[float, ...]] = {arch: recipe.lrs for arch, recipe in ARMS.items()}


def best_lr(arch: str) -> float:
    """``arch``'s chosen learning rate in the pilot search."""
    if arch not in ARMS:
        raise ConfigError("model.arch", f"no tuned recipe for {arch!r} ({', '.join(ARMS)})")
    return ARMS[arch].lr


def arm_runs(arch: str, lrs: tuple[float, ...] | None = None, seeds: tuple[int, ...] = (0,)):
    """Run overrides for ``arch``: its recipe at each learning rate x seed.

    A seed sets both the backbone's initialisation and the new token rows (``train.seed``,
    ``model.init_seed``): the paper's "initialisations of the new embeddings". The data
    (``task.seed``) stays the same, so seeds differ only in where training starts.
    """
    if arch not in RECIPES:
        raise ConfigError("model.arch", f"no tuned recipe for {arch!r} ({', '.join(RECIPES)})")
    lrs = LR_GRIDS[arch] if lrs is None else lrs
    return [
        {"model.arch": arch, "train.lr": lr, **RECIPES[arch], "train.seed": s, "model.init_seed": s}
        for lr in lrs
        for s in seeds
    ]


def recipe_defaults(arch: str, preset: str, pretrained: str | None) -> dict:
    """What ``vlab probe run --arch ARCH`` trains with where the user says nothing: the arm's
    recipe (its learning rate and settings) as nested config, for the ``tiny`` preset the pilot
    search tuned it on; ``{}`` for any other preset or a pretrained checkpoint, which the pilot
    never searched (the config's defaults apply)."""
    if preset != "tiny" or pretrained is not None or arch not in ARMS:
        return {}
    return nest({"train.lr": best_lr(arch), **ARMS[arch].settings})
