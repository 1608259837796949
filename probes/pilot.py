"""The equal pilot search's rule, as code: how one-seed cells are ranked, and which cells the
next stage runs (README, "The equal pilot search"; specs ``pilot-protocol``,
``pilot-protocol-shapes``, ``pilot-protocol-seeds``).

Written before the stages it drives ran, so the choice of what to run next is the rule's, not
anyone's reading of the results. A cell is one setting of what the pilot searches: learning
rate, schedule (``train.min_lr_ratio``), AdamW's beta2, target encoding, and the arm's shape.
The stages read finished run directories (``config.json``, ``status.json``) and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vlab.errors import ConfigError, VlabError
from vlab.probes.experiment import ProbeExperiment
from vlab.rundir import RunDir

# Each arm's two shapes that keep its parameter count (the preset's first), as model overrides.
SHAPES: dict[str, tuple[dict, dict]] = {
    "pythia": ({"num_attention_heads": 2}, {"num_attention_heads": 4}),
    "mamba": ({"state_size": 16}, {"state_size": 32}),
    "hybrid": ({"state_size": 16}, {"state_size": 32}),
    "mamba2": ({"num_heads": 8, "head_dim": 16}, {"num_heads": 16, "head_dim": 8}),
}
TARGETS = ("position", "vocab")


@dataclass(frozen=True)
class Cell:
    """One pilot run's searched settings and outcome (one seed)."""

    arch: str
    lr: float
    min_lr_ratio: float
    beta2: float
    target_mode: str
    shape: tuple[tuple[str, object], ...]  # the arm's shape overrides, sorted
    seed: int
    reached: bool
    examples: int | None  # training examples seen when 0.95 (the threshold) was first reached
    accuracy: float | None  # held-out accuracy at the last evaluation

    @property
    def key(self) -> tuple:
        """What identifies the cell across seeds."""
        return (self.arch, self.lr, self.min_lr_ratio, self.beta2, self.target_mode, self.shape)

    def overrides(self) -> dict:
        """The cell as dotted run overrides (without the seed)."""
        return {
            "model.arch": self.arch,
            "train.lr": self.lr,
            "train.min_lr_ratio": self.min_lr_ratio,
            "train.beta2": self.beta2,
            "task.target_mode": self.target_mode,
            **{f"model.overrides.{k}": v for k, v in self.shape},
        }


def rank_key(cell: Cell) -> tuple:
    """Sort key of the README's rule: reached before not reached; among those that reached,
    fewer examples to the threshold; among the others, higher last accuracy; then the smaller
    learning rate."""
    if cell.reached:
        return (0, cell.examples, cell.lr)
    return (1, -(cell.accuracy if cell.accuracy is not None else -1.0), cell.lr)


def ranked(cells: Iterable[Cell], arch: str) -> list[Cell]:
    """``arch``'s cells, best first."""
    return sorted((c for c in cells if c.arch == arch), key=rank_key)


def _shape_of(arch: str, overrides: dict) -> tuple[tuple[str, object], ...]:
    """The arm's shape a run had: its shape keys from ``model.overrides``, else the preset's."""
    if arch not in SHAPES:
        raise ConfigError("model.arch", f"no pilot shapes for {arch!r} ({', '.join(SHAPES)})")
    preset = SHAPES[arch][0]
    return tuple(sorted({k: overrides.get(k, v) for k, v in preset.items()}.items()))


def read_cells(sweep_dirs: Iterable[str | Path]) -> list[Cell]:
    """Every finished run of the pilot sweeps in ``sweep_dirs`` as a :class:`Cell`; a run not
    finished (pending, running, failed) is an error naming it: a stage chosen from part of the
    previous one would not be the rule's."""
    cells = []
    for sweep in sweep_dirs:
        runs = Path(sweep) / "runs"
        if not runs.is_dir():
            raise VlabError(f"{sweep} is not a sweep directory (no runs/ folder)")
        for path in sorted(p for p in runs.iterdir() if p.is_dir()):
            run = RunDir(path)
            status = run.read_status() or {}
            if status.get("state") != "done":
                raise VlabError(
                    f"{path}: {status.get('state', 'not started')}, not done; finish the sweep "
                    f"(vlab sweep submit ... --out {sweep}) before choosing the next stage"
                )
            cfg = ProbeExperiment().config_of(path)  # checked: one line if it is not one
            step = status.get("threshold_step")
            cells.append(
                Cell(
                    arch=cfg.model.arch,
                    lr=cfg.train.lr,
                    min_lr_ratio=cfg.train.min_lr_ratio,
                    beta2=cfg.train.beta2,
                    target_mode=cfg.task.target_mode,
                    shape=_shape_of(cfg.model.arch, cfg.model.overrides),
                    seed=cfg.train.seed,
                    reached=step is not None,
                    examples=None if step is None else step * cfg.train.batch_size,
                    accuracy=status.get("accuracy"),
                )
            )
    return cells


def shape_runs(cells: list[Cell], per_arm: int = 2) -> list[dict]:
    """Stage 2: at each arm's ``per_arm`` best cells, every target encoding x shape not yet run
    (seed 0)."""
    done = {c.key for c in cells}
    runs = []
    for arch in sorted({c.arch for c in cells}):
        for best in ranked(cells, arch)[:per_arm]:
            for target in TARGETS:
                for shape in SHAPES[arch]:
                    cell = Cell(
                        arch,
                        best.lr,
                        best.min_lr_ratio,
                        best.beta2,
                        target,
                        tuple(sorted(shape.items())),
                        0,
                        False,
                        None,
                        None,
                    )
                    if cell.key not in done:
                        done.add(cell.key)
                        runs.append(cell.overrides())
    return runs


def seed_runs(cells: list[Cell], per_arm: int = 3, seeds: tuple[int, ...] = (1, 2)) -> list[dict]:
    """Stage 3: each arm's ``per_arm`` best one-seed cells (seed 0, stages 1 and 2), again at
    each of ``seeds``."""
    runs = []
    for arch in sorted({c.arch for c in cells}):
        for best in ranked([c for c in cells if c.seed == 0], arch)[:per_arm]:
            for seed in seeds:
                runs.append({**best.overrides(), "train.seed": seed, "model.init_seed": seed})
    return runs


def pilot_dirs(variable: str = "VLAB_PILOT") -> list[Path]:
    """The finished pilot sweeps a later stage is chosen from: ``$VLAB_PILOT``, directories
    separated by ``os.pathsep``. Unset is an error that says what to set."""
    value = os.environ.get(variable)
    if not value:
        raise VlabError(
            f"set {variable} to the finished pilot sweep directories this stage is chosen from "
            f"(separated by '{os.pathsep}'), e.g. {variable}=runs/pilot-protocol"
        )
    return [Path(p) for p in value.split(os.pathsep) if p]
