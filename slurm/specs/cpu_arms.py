"""cpu-arms: the default experiment with all four arms (Pythia, Mamba, Mamba-2, hybrid).

``cpu-protocol``'s design (suffix and prefix, L in {4, 8, 16}, pools of max(2L, 16), 1,500
steps of 64, stop at 95%, 3 learning rates x 3 seeds per arm) with Mamba-2 and the hybrid
added, every arm with its recipe and grid from the equal pilot search
(``vlab.probes.recipes``). The question it asks at CPU scale: does one attention layer among
Mamba layers change what the SSM learns first and how fast, and does Mamba-2's larger state?
216 runs: about twice the default experiment's time, so it is not the README's main job.
"""

from vlab.slurm.spec import SweepSpec
from vlab.slurm.specs.cpu_protocol import SPEC as PROTOCOL
from vlab.slurm.specs.cpu_protocol import protocol_runs

ARMS = ("pythia", "mamba", "mamba2", "hybrid")

SPEC = SweepSpec(
    name="cpu-arms",
    description="The default experiment with four arms (pythia, mamba, mamba2, hybrid): "
    "suffix and prefix, L in {4, 8, 16}, 3 learning rates x 3 seeds per arm.",
    base=PROTOCOL.base,
    axes=PROTOCOL.axes,
    runs=protocol_runs(ARMS),
    name_keys=PROTOCOL.name_keys,
)
