"""cpu-small: the quick variant of ``cpu-protocol``, a few minutes on 2 cores.

The same task and recipes as the default experiment, cut to one cell per arm: each arm at the
chosen learning rate, seed 0, suffix and prefix, L in {4, 8} (the default experiment's
shorter lengths, with its pool of 16). Eight runs: enough to
see learning curves, per-position heatmaps and a first comparison, not to cite (one seed per
cell, so the report's log-rank tests have nothing to stand on).
"""

from vlab.probes.recipes import arm_runs, best_lr
from vlab.slurm.spec import SweepSpec
from vlab.slurm.specs.cpu_protocol import SPEC as PROTOCOL
from vlab.slurm.specs.cpu_protocol import pool_size

SPEC = SweepSpec(
    name="cpu-small",
    description="Quick variant of cpu-protocol: Pythia vs Mamba (tiny) at each arm's best lr, "
    "suffix and prefix, L in {4, 8}, one seed.",
    base={**PROTOCOL.base, "task": {**PROTOCOL.base["task"], "pool_size": pool_size(8)}},
    axes={"task.variant": ["suffix", "prefix"], "task.length": [4, 8]},
    runs=[run for arch in ("pythia", "mamba") for run in arm_runs(arch, lrs=(best_lr(arch),))],
    name_keys=["model.arch", "task.variant", "task.length"],
)
