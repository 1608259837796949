"""pilot-tiny-seeds: stage 3 of the pilot search, seeds at each arm's best cell and its neighbours.

Stages 1 and 2 (``pilot-tiny``, ``pilot-tiny-shapes``; one seed each) left each arm's preset
shape best: Pythia at lr 1e-3 with betas (0.9, 0.98) held constant, Mamba at lr 3e-3 with the
cosine default, both with ``<p_k>`` position targets. One seed is not enough to centre a grid
(Mamba moved 0.48 / 0.81 / 0.23 over lr 2e-3 / 3e-3 / 5e-3), so here each arm's best learning
rate and its two neighbours each get three seeds (backbone init and new-token rows together).
"""

from vlab.slurm.spec import SweepSpec

SEEDS = [{"train.seed": s, "model.init_seed": s} for s in (0, 1, 2)]
PYTHIA = [
    {"model.arch": "pythia", "train.lr": lr, "train.beta2": 0.98, "train.min_lr_ratio": 1.0}
    for lr in (5e-4, 1e-3, 2e-3)
]
MAMBA = [{"model.arch": "mamba", "train.lr": lr} for lr in (2e-3, 3e-3, 4e-3)]

SPEC = SweepSpec(
    name="pilot-tiny-seeds",
    description="Stage 3 of the pilot search: 3 seeds at each arm's best lr and its neighbours.",
    base={
        "model": {"preset": "tiny"},
        "task": {"length": 16, "variant": "suffix", "target_mode": "position"},
        "train": {"steps": 3000, "batch_size": 64, "threads": 1, "keep_checkpoints": 0},
    },
    runs=[{**cell, **seed} for cell in PYTHIA + MAMBA for seed in SEEDS],
)
