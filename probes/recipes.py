"""Each arm's training recipe for the tiny probe presets, as the equal pilot search chose it.

Every arm got the same search at L = 16 (README, "The equal pilot search"; specs
``pilot-protocol``, ``pilot-protocol-shapes``, ``pilot-protocol-seeds``; the rule is
:mod:`vlab.probes.pilot`): one learning-rate grid, schedule and AdamW's beta2 searched
independently, both target encodings, each arm's parameter-preserving shapes, three seeds for
each arm's three best cells. Each arm's recipe is the cell the rule chose, and its grid that
learning rate with its two neighbours on the pilot's grid, as the paper's protocol has three
learning rates per architecture. Specs build their runs from here, so a default sweep and its
quick variant cannot drift apart. (The earlier, unequal pilot's specs, ``pilot-tiny*``, stay
for their recorded results.)
"""

from __future__ import annotations

from dataclasses import dataclass

from vlab.config import nest
from vlab.errors import ConfigError
from vlab.probes.pilot import lr_grid


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


def _recipe(lr: float, schedule: float, beta2: float, targets: str, **shape) -> Recipe:
    """A recipe from the rule's chosen cell: ``schedule`` is ``train.min_lr_ratio`` (0 cosine
    decay to 0, 1 constant after warmup), ``shape`` the arm's shape overrides."""
    settings = {"train.beta2": beta2, "train.min_lr_ratio": schedule, "task.target_mode": targets}
    settings.update({f"model.overrides.{k}": v for k, v in shape.items()})
    return Recipe(lr, settings, lr_grid(lr))


# The equal pilot's choice per arm (README, "The equal pilot search": stage 3's table; a test
# applies the rule to the records in results/ and checks these lines against it).
ARMS: dict[str, Recipe] = {
    "pythia": _recipe(2e-3, 0.0, 0.98, "vocab", num_attention_heads=4),
    "mamba": _recipe(3e-3, 1.0, 0.98, "position", state_size=16),
    "mamba2": _recipe(2e-3, 1.0, 0.999, "position", num_heads=8, head_dim=16),
    "hybrid": _recipe(1e-3, 1.0, 0.98, "position", state_size=16),
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
