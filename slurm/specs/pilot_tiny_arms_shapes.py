"""pilot-tiny-arms-shapes: stage 2 of the pilot search for Mamba-2, its shape settings.

Stage 1 (``pilot-tiny-arms``) left Mamba-2 at or below 0.44 held-out accuracy in every cell at
L = 16, best with betas (0.9, 0.98) held constant after warmup. Here the shape settings that
keep the tiny preset within 10% of the other arms' parameter counts are searched at that
schedule, with position targets as for every other arm: head dim {8, 16, 32} (16, 8, 4 heads)
x state {32 in one group, 16 in each of two groups} at lr {1e-3, 3e-3}. The hybrid needs no
shape stage before stage 3: it reached the threshold in stage 1.
"""

from vlab.slurm.spec import SweepSpec

SHAPES = [
    {"model.overrides.head_dim": dim, "model.overrides.num_heads": 128 // dim, **groups}
    for dim in (8, 16, 32)
    for groups in (
        {"model.overrides.state_size": 32, "model.overrides.n_groups": 1},
        {"model.overrides.state_size": 16, "model.overrides.n_groups": 2},
    )
]

SPEC = SweepSpec(
    name="pilot-tiny-arms-shapes",
    description="Stage 2 of the pilot search for mamba2: head dim x state and groups x lr.",
    base={
        "model": {"preset": "tiny", "arch": "mamba2"},
        "task": {"length": 16, "variant": "suffix", "target_mode": "position"},
        "train": {
            "steps": 3000,
            "batch_size": 64,
            "threads": 1,
            "keep_checkpoints": 0,
            "beta2": 0.98,
            "min_lr_ratio": 1.0,
        },
    },
    runs=[{**shape, "train.lr": lr} for lr in (1e-3, 3e-3) for shape in SHAPES],
)
