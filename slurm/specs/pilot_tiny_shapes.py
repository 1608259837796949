"""pilot-tiny-shapes: stage 2 of the pilot search, the shape settings at each arm's stage-1 best.

Stage 1 (``pilot-tiny``, L = 16, suffix, 3,000 steps, seed 0) left Pythia best with betas
(0.9, 0.98) held constant after warmup at lr 1e-3, the lower edge of its grid, and Mamba best
with the cosine default at lr 3e-3, both with ``<p_k>`` position targets (the README lists
every cell). Here each arm's shape settings that keep its parameter count are searched at
that cell, and Pythia's learning rate is extended below the edge: attention heads {2, 4} x
rotary fraction {0.25, 1.0} at lr {3e-4, 1e-3} for Pythia; SSM state size {16, 32} at lr 3e-3,
and lr {2e-3, 5e-3} at the preset's state size, for Mamba.
"""

from vlab.slurm.spec import SweepSpec

PYTHIA = [
    {
        "model.arch": "pythia",
        "train.lr": lr,
        "train.beta2": 0.98,
        "train.min_lr_ratio": 1.0,
        "model.overrides.num_attention_heads": heads,
        "model.overrides.rotary_pct": rotary,
    }
    for lr in (3e-4, 1e-3)
    for heads in (2, 4)
    for rotary in (0.25, 1.0)
]
MAMBA = [
    {"model.arch": "mamba", "train.lr": lr, "model.overrides.state_size": state}
    for lr, state in ((3e-3, 16), (3e-3, 32), (2e-3, 16), (5e-3, 16))
]

SPEC = SweepSpec(
    name="pilot-tiny-shapes",
    description="Stage 2 of the pilot search: shape settings at each arm's stage-1 best.",
    base={
        "model": {"preset": "tiny"},
        "task": {"length": 16, "variant": "suffix", "target_mode": "position"},
        "train": {"steps": 3000, "batch_size": 64, "threads": 1, "keep_checkpoints": 0},
    },
    runs=PYTHIA + MAMBA,
)
