"""pilot-protocol: stage 1 of the equal pilot search for every arm (issue #27, item 2).

The same grid for Pythia, Mamba, Mamba-2 and the hybrid, at the default experiment's longest
length, fixed before any run (README, "The equal pilot search", states the selection rule):
L = 16, suffix, batch 64, up to 3,000 steps, stop at 95% held-out accuracy, seed 0, position
targets, each arm's preset shape; learning rate on one log-spaced grid from 3e-4 to 1e-2
(3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2: about half a decade per two steps, with 3e-3 and
5e-3 in it) crossed with the schedule (cosine decay to 0, or constant after warmup) and, on
its own, AdamW's beta2 (0.999 or 0.98): 28 runs per arm. The arms' recipes
(``vlab.probes.recipes``) play no part, so no arm starts from its earlier tuning. Stage 2
(target encoding and each arm's parameter-preserving shapes at its two best stage-1 cells)
and stage 3 (three seeds for each arm's three best cells) follow the rule in the README.
"""

from collections.abc import Callable

from vlab.probes.pilot import LRS, Cell, pilot_dirs, read_cells
from vlab.slurm.spec import SweepSpec

ARMS = ["pythia", "mamba", "mamba2", "hybrid"]
SCHEDULES = {"cosine": 0.0, "constant": 1.0}  # train.min_lr_ratio
BETA2 = [0.999, 0.98]

SPEC = SweepSpec(
    name="pilot-protocol",
    description="Stage 1 of the equal pilot search at L=16: the same lr x schedule x beta2 grid "
    "for every arm (28 runs each).",
    base={
        "model": {"preset": "tiny"},
        "task": {"length": 16, "variant": "suffix", "target_mode": "position"},
        "train": {"steps": 3000, "batch_size": 64, "threads": 1, "keep_checkpoints": 0},
    },
    # the arm is the innermost axis: a sweep cut short has covered every arm alike
    axes={
        "train.lr": list(LRS),
        "train.min_lr_ratio": list(SCHEDULES.values()),
        "train.beta2": BETA2,
        "model.arch": ARMS,
    },
)


def later_stage(name: str, description: str, choose: Callable[[list[Cell]], list[dict]]):
    """A later stage: the runs ``choose`` (``vlab.probes.pilot.shape_runs`` or ``seed_runs``)
    picks from the finished sweeps of ``$VLAB_PILOT``, on stage 1's base."""
    runs = choose(read_cells(pilot_dirs()))
    return SweepSpec(name=name, description=description, base=SPEC.base, runs=runs)
