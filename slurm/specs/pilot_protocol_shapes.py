"""pilot-protocol-shapes: stage 2 of the equal pilot search, chosen by its rule from stage 1.

At each arm's two best stage-1 cells (``vlab.probes.pilot.rank_key``: reached 0.95 first, by
fewer examples; then higher last accuracy; then the smaller learning rate), every target
encoding (position, vocab) x the arm's two parameter-preserving shapes
(``vlab.probes.pilot.SHAPES``) not yet run: 3 runs per cell, 6 per arm, seed 0, stage 1's
budget. Set ``VLAB_PILOT`` to the finished ``pilot-protocol`` sweep directory.
"""

from vlab.probes.pilot import shape_runs
from vlab.slurm.spec import SweepSpec
from vlab.slurm.specs.pilot_protocol import later_stage


def sweep() -> SweepSpec:
    return later_stage(
        "pilot-protocol-shapes",
        "Stage 2 of the equal pilot search: target encoding x shape at each arm's "
        "two best stage-1 cells (6 runs per arm).",
        shape_runs,
    )
