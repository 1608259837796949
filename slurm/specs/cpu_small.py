"""cpu-small: the CPU default. Both arms x both variants x two short lengths, one seed.

Sized to finish in minutes on 2 cores with the tiny presets: short contexts learn within the
step budget (see the README's notes on probe scale), so the report shows real learning curves
and per-position heatmaps rather than flat lines.
"""

from vlab.slurm.spec import SweepSpec

SPEC = SweepSpec(
    name="cpu-small",
    description="Pythia vs Mamba (tiny presets), suffix and prefix, L in {6, 8}, on CPU.",
    base={
        "model": {"preset": "tiny"},
        "train": {"steps": 1500, "lr": 2e-3, "threads": 1},
    },
    axes={
        "model.arch": ["pythia", "mamba"],
        "task.variant": ["suffix", "prefix"],
        "task.length": [6, 8],
    },
)
