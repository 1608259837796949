"""pilot-tiny-arms: stage 1 of the pilot search for the arms added after it (Mamba-2, hybrid).

Exactly ``pilot-tiny``'s grid and budget (L = 16, suffix, batch 64, up to 3,000 steps, seed 0:
learning rate x optimizer and schedule x target encoding), so every arm gets the same search
before its recipe goes into ``vlab.probes.recipes`` and the default experiment.
"""

from vlab.slurm.spec import SweepSpec
from vlab.slurm.specs.pilot_tiny import SPEC as PILOT

SPEC = SweepSpec(
    name="pilot-tiny-arms",
    description="Stage 1 of the pilot search for mamba2 and hybrid (pilot-tiny's grid).",
    base=PILOT.base,
    axes={**PILOT.axes, "model.arch": ["mamba2", "hybrid"]},
    runs=PILOT.runs,
)
