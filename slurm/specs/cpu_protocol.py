"""cpu-protocol: the default experiment, the paper's protocol in miniature on 2 CPU cores.

The paper, per sequence length and architecture: 3 learning rates x 3 initialisations of the
new embeddings, evaluation every 1% of training, stop at 95% held-out accuracy, then compare how
much training each architecture needs. Here: both tiny presets (matched non-embedding
parameters), suffix and prefix, L in {2, 4, 8} (a 4x span, like the paper's 50-200), each arm's
learning-rate grid and recipe from the pilot search (``vlab.probes.recipes``), seeds 0-2, and a
budget of 1,500 steps of 64 examples. Position targets (``<p_k>``) were the better encoding for
both arms in the pilot. One pool of 16 patch tokens serves every length (the pool must be at
least the longest context), so the lengths differ only in how many patches are shown.

Why these lengths and this budget: the 108 runs must finish within the README's 20 minutes
on 2 cores with set-up and report. Measured there, a tiny Pythia step costs 11-17 ms and a
Mamba step 25-35 ms at L = 3-12, and most runs at the longest length use the whole budget; at
L in {3, 6, 12} with 2,000 steps the sweep alone was on course for over 30 minutes. L = 8 is
the longest length at which one arm (Mamba, L = 6 in about 700 steps, L = 12 in about 1,500)
can still reach the threshold within 1,500 steps. ``--set task.length=...`` and
``--set train.steps=...`` scale it up where there is more compute.
"""

from vlab.probes.recipes import arm_runs
from vlab.slurm.spec import SweepSpec

SEEDS = (0, 1, 2)
LENGTHS = [2, 4, 8]

SPEC = SweepSpec(
    name="cpu-protocol",
    description="The default experiment: Pythia vs Mamba (tiny), suffix and prefix, L in "
    "{2, 4, 8}, 3 learning rates x 3 seeds per arm, 1,500 steps, stop at 95%.",
    base={
        "model": {"preset": "tiny"},
        "task": {"target_mode": "position", "pool_size": 2 * max(LENGTHS)},
        "train": {"steps": 1500, "batch_size": 64, "threads": 1},
    },
    axes={"task.variant": ["suffix", "prefix"], "task.length": LENGTHS},
    runs=arm_runs("pythia", seeds=SEEDS) + arm_runs("mamba", seeds=SEEDS),
    name_keys=["model.arch", "task.variant", "task.length", "train.lr", "train.seed"],
)
