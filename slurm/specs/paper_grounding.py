"""paper-grounding: the synthetic-grounding grid of SHAKEUP (SPEC.md section 2), for GPUs.

Pythia-1.4B vs Mamba-1.4B shapes, suffix and prefix, L in {50, 100, 200}, 3 learning rates x
3 initialisations of the new embeddings = 108 runs; global batch 64, 78K steps, evaluation on
the 100k held-out examples every 1% of the steps, stop at 95% held-out accuracy. The paper
starts from pretrained checkpoints: give each arm its local directory with ``--set-arch
pythia:model.pretrained=DIR --set-arch mamba:model.pretrained=DIR`` (or ``per_arch`` in a copy of
this file); without them the presets build the same shapes with random weights.
"""

from vlab.slurm.spec import SweepSpec

SPEC = SweepSpec(
    name="paper-grounding",
    description="SHAKEUP synthetic grounding: 2 archs x 2 variants x 3 lengths x 3 lr x 3 inits.",
    base={
        "model": {"preset": "1.4b"},
        "task": {
            "n_train": 1_000_000,
            "n_heldout": 100_000,
            "target_mode": "vocab",
            "target_offset": 1000,
        },
        "train": {
            "steps": 78_000,
            "batch_size": 64,
            "eval_fraction": 0.01,
            "threshold": 0.95,
            "warmup_ratio": 0.03,
            "weight_decay": 0.0,
        },
        "eval_batch_size": 256,
    },
    axes={
        "model.arch": ["pythia", "mamba"],
        "task.variant": ["suffix", "prefix"],
        "task.length": [50, 100, 200],
        "train.lr": [1e-5, 5e-5, 1e-4],
        "model.init_seed": [0, 1, 2],
    },
)
