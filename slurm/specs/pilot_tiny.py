"""pilot-tiny: the same pilot search for both arms' tiny presets, before choosing defaults.

At L = 16 (suffix, batch 64, up to 3,000 steps, stop at 95% held-out accuracy, one seed), each
arm gets a learning-rate grid crossed with two optimizer/schedule settings (AdamW betas
(0.9, 0.999) with cosine decay, the preset's default; betas (0.9, 0.98) held constant after
warmup) and the shape settings that leave its parameter count unchanged: attention heads and
rotary fraction for Pythia, the SSM state size for Mamba (expand changes the parameter count
twofold, so it is not searched here). The defaults of the main experiment are centred on each
arm's best cell; the README records the grid and the result.
"""

from vlab.slurm.spec import SweepSpec

OPTIMIZERS = [
    {"train.beta2": 0.999, "train.min_lr_ratio": 0.0},
    {"train.beta2": 0.98, "train.min_lr_ratio": 1.0},
]
PYTHIA = [
    {
        "model.arch": "pythia",
        "model.overrides.num_attention_heads": h,
        "model.overrides.rotary_pct": r,
    }
    for h in (2, 4)
    for r in (0.25, 1.0)
]
MAMBA = [{"model.arch": "mamba", "model.overrides.state_size": n} for n in (16, 32)]

SPEC = SweepSpec(
    name="pilot-tiny",
    description="The pilot search of both tiny presets at L=16: lr x optimizer x shape.",
    base={
        "model": {"preset": "tiny"},
        "task": {"length": 16, "variant": "suffix"},
        "train": {"steps": 3000, "batch_size": 64, "threads": 1, "keep_checkpoints": 0},
    },
    axes={"train.lr": [1e-3, 3e-3, 1e-2]},
    runs=[{**shape, **opt} for shape in PYTHIA + MAMBA for opt in OPTIMIZERS],
)
