"""pilot-tiny-arms-seeds: stage 3 of the pilot search for Mamba-2 and the hybrid, seeds.

As ``pilot-tiny-seeds`` did for the first two arms: three seeds (backbone init and new-token
rows together) at each arm's best learning rate of stages 1-2 and its neighbours, at the
schedule and targets those stages favoured (constant after warmup, betas (0.9, 0.98), position
targets, the preset shape). The hybrid's best rate was 1e-3 (both target encodings reached
0.95); Mamba-2 was within 0.01 at 1e-3 and 3e-3 and worse at 1e-2, so its grid spans the two.
"""

from vlab.slurm.spec import SweepSpec

SEEDS = [{"train.seed": s, "model.init_seed": s} for s in (0, 1, 2)]
CONSTANT = {"train.beta2": 0.98, "train.min_lr_ratio": 1.0}
HYBRID = [{"model.arch": "hybrid", "train.lr": lr, **CONSTANT} for lr in (5e-4, 1e-3, 2e-3)]
MAMBA2 = [{"model.arch": "mamba2", "train.lr": lr, **CONSTANT} for lr in (1e-3, 2e-3, 3e-3)]

SPEC = SweepSpec(
    name="pilot-tiny-arms-seeds",
    description="Stage 3 of the pilot search for mamba2 and hybrid: 3 seeds x 3 lrs each.",
    base={
        "model": {"preset": "tiny"},
        "task": {"length": 16, "variant": "suffix", "target_mode": "position"},
        "train": {"steps": 3000, "batch_size": 64, "threads": 1, "keep_checkpoints": 0},
    },
    runs=[{**cell, **seed} for cell in HYBRID + MAMBA2 for seed in SEEDS],
)
