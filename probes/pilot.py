"""The equal pilot search's rule, as code: how one-seed cells are ranked, and which cells the
next stage runs (README, "The equal pilot search"; specs ``pilot-protocol``,
``pilot-protocol-shapes``, ``pilot-protocol-seeds``).

Written before the stages it drives ran, so the choice of what to run next is the rule's, not
anyone's reading of the results. A cell is one setting of what the pilot searches: learning
rate, schedule (``train.min_lr_ratio``), AdamW's beta2, target encoding, and the arm's shape.
The stages read finished run directories (``config.json``, ``status.json``) and nothing else.
"""

from __future__ import annotations

import math
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
# Stage 1's learning-rate grid, the same for every arm (log-spaced, 3e-4 to 1e-2).
LRS = (3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2)


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


@dataclass(frozen=True)
class Choice:
    """One stage-3 cell over its seeds, as the recipe rule reads it."""

    cell: Cell  # the seed-0 run's settings (its outcome fields are seed 0's)
    seeds: int
    reached: int  # seeds that reached the threshold
    median: float  # Kaplan-Meier median of examples to the threshold; inf if not reached
    mean_accuracy: float  # mean held-out accuracy at the last evaluation

    @property
    def sort_key(self) -> tuple:
        """The README's recipe rule: smaller median; then more seeds reaching; then higher mean
        final accuracy; then the smaller learning rate."""
        return (self.median, -self.reached, -self.mean_accuracy, self.cell.lr)


def km_median(examples: list[int | None]) -> float:
    """The Kaplan-Meier median of examples to the threshold over seeds (``None``: not reached).

    A run that misses the threshold is censored at the end of its budget, after every run that
    reached it, so the survival curve falls by 1/n at each reaching run in order and the median
    is the ceil(n/2)-th smallest reaching count (``inf`` when fewer than half reached): the same
    number :func:`vlab.analysis.stats.km_median` gives for such data, without importing the
    analysis layer into the experiment's."""
    reached = sorted(e for e in examples if e is not None)
    need = -(-len(examples) // 2)
    return float(reached[need - 1]) if len(examples) and len(reached) >= need else math.inf


def choices(cells: list[Cell], seeds: int = 3) -> dict[str, list[Choice]]:
    """Per arm, every cell run at ``seeds`` seeds (stage 3's), best first by the recipe rule."""
    by_key: dict[tuple, list[Cell]] = {}
    for c in cells:
        by_key.setdefault(c.key, []).append(c)
    out: dict[str, list[Choice]] = {}
    for group in by_key.values():
        if len({c.seed for c in group}) < seeds:
            continue
        group = sorted(group, key=lambda c: c.seed)
        accuracies = [c.accuracy if c.accuracy is not None else 0.0 for c in group]
        choice = Choice(
            cell=group[0],
            seeds=len(group),
            reached=sum(c.reached for c in group),
            median=km_median([c.examples if c.reached else None for c in group]),
            mean_accuracy=sum(accuracies) / len(accuracies),
        )
        out.setdefault(group[0].arch, []).append(choice)
    return {arch: sorted(v, key=lambda ch: ch.sort_key) for arch, v in sorted(out.items())}


def lr_grid(lr: float, grid: tuple[float, ...] = LRS) -> tuple[float, ...]:
    """``lr`` and its two neighbours on ``grid`` (the two nearest on one side at its ends)."""
    if lr not in grid:
        raise ConfigError("train.lr", f"{lr} is not on the pilot's grid {grid}")
    i = min(max(grid.index(lr), 1), len(grid) - 2)
    return grid[i - 1 : i + 2]


def describe(cell: Cell) -> str:
    """A cell's settings in words, e.g. ``lr 2e-3, cosine, beta2 0.98, vocab, heads 4``."""
    schedule = (
        "cosine"
        if cell.min_lr_ratio == 0.0
        else ("constant" if cell.min_lr_ratio == 1.0 else f"min_lr_ratio {cell.min_lr_ratio:g}")
    )
    shape = ", ".join(f"{k} {v}" for k, v in cell.shape)
    return f"lr {cell.lr:g}, {schedule}, beta2 {cell.beta2:g}, {cell.target_mode}, {shape}"


def choice_table(chosen: dict[str, list[Choice]], batch_size: int = 64) -> str:
    """The recipe rule's reading of stage 3 as a Markdown table, best cell of each arm first
    (the README's; ``vlab probe pilot`` prints it)."""
    rows = [
        "| arch | cell | seeds reaching 0.95 | KM median steps | mean final accuracy | chosen |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arch, options in chosen.items():
        for i, ch in enumerate(options):
            median = "not reached" if math.isinf(ch.median) else f"{ch.median / batch_size:,.0f}"
            rows.append(
                f"| {arch} | {describe(ch.cell)} | {ch.reached}/{ch.seeds} | {median} | "
                f"{ch.mean_accuracy:.2f} | {'yes' if i == 0 else ''} |"
            )
    return "\n".join(rows)
