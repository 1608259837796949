"""pilot-tiny: the same pilot search for both arms' tiny presets, before choosing defaults.

Stage 1 of the pilot, at L = 16 (suffix, batch 64, up to 3,000 steps, stop at 95% held-out
accuracy, one seed): for each arm a learning-rate grid crossed with two optimizer / schedule
settings (AdamW betas (0.9, 0.999) with cosine decay, the preset's default; betas (0.9, 0.98)
held constant after warmup) and the two target encodings (an original-vocabulary token per
position, or a new ``<p_k>`` token per position). The shape settings that keep the parameter
count (heads and rotary fraction for Pythia, state size for Mamba) are stage 2, searched at
each arm's best stage-1 cell. The README records the grids and the results.
"""

from vlab.slurm.spec import SweepSpec

OPTIMIZERS = [
    {"train.beta2": 0.999, "train.min_lr_ratio": 0.0},
    {"train.beta2": 0.98, "train.min_lr_ratio": 1.0},
]

SPEC = SweepSpec(
    name="pilot-tiny",
    description="Stage 1 of the pilot search of both tiny presets at L=16: lr x optimizer x "
    "target encoding.",
    base={
        "model": {"preset": "tiny"},
        "task": {"length": 16, "variant": "suffix"},
        "train": {"steps": 3000, "batch_size": 64, "threads": 1, "keep_checkpoints": 0},
    },
    axes={
        "model.arch": ["pythia", "mamba"],
        "task.target_mode": ["vocab", "position"],
        "train.lr": [1e-3, 3e-3, 1e-2],
    },
    runs=OPTIMIZERS,
)
