"""pilot-protocol-seeds: stage 3 of the equal pilot search, chosen by its rule from stages 1-2.

Each arm's three best one-seed cells over stages 1 and 2 (``vlab.probes.pilot.rank_key``),
again at seeds 1 and 2 (backbone init and new-token rows; seed 0 is the run already made): 6
runs per arm, stage 1's budget. Set ``VLAB_PILOT`` to the finished ``pilot-protocol`` and
``pilot-protocol-shapes`` sweep directories, separated by ':'. The arm's recipe is then the
cell with the smallest Kaplan-Meier median over its three seeds (README, "The equal pilot
search").
"""

from vlab.probes.pilot import seed_runs
from vlab.slurm.spec import SweepSpec
from vlab.slurm.specs.pilot_protocol import later_stage


def sweep() -> SweepSpec:
    return later_stage(
        "pilot-protocol-seeds",
        "Stage 3 of the equal pilot search: seeds 1 and 2 for each arm's three best "
        "cells of stages 1 and 2 (6 runs per arm).",
        seed_runs,
    )
