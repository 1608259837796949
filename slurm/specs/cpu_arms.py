"""cpu-arms: the default experiment with all four arms (Pythia, Mamba, Mamba-2, hybrid).

``cpu-protocol``'s design (suffix and prefix, L in {2, 4, 8}, pool of 16, 1,500 steps of 64,
stop at 95%, 3 learning rates x 3 seeds per arm, position targets) with Mamba-2 and the
hybrid added, each with its own recipe and grid from its pilot search
(``vlab.probes.recipes``). The question it asks at CPU scale: does one attention layer among
Mamba layers change what the SSM learns first and how fast, and does Mamba-2's larger state?
216 runs: about twice the default experiment's time, so it is not the README's main job.
"""

from vlab.probes.recipes import arm_runs
from vlab.slurm.spec import SweepSpec
from vlab.slurm.specs.cpu_protocol import SEEDS
from vlab.slurm.specs.cpu_protocol import SPEC as PROTOCOL

ARMS = ("pythia", "mamba", "mamba2", "hybrid")

SPEC = SweepSpec(
    name="cpu-arms",
    description="The default experiment with four arms (pythia, mamba, mamba2, hybrid): "
    "suffix and prefix, L in {2, 4, 8}, 3 learning rates x 3 seeds per arm.",
    base=PROTOCOL.base,
    axes=PROTOCOL.axes,
    runs=[run for arch in ARMS for run in arm_runs(arch, seeds=SEEDS)],
    name_keys=PROTOCOL.name_keys,
)
