"""paper-grounding: the synthetic-grounding grid of SHAKEUP (SPEC.md section 2), for GPUs.

Pythia-1.4B vs Mamba-1.4B shapes, suffix and prefix, L in {50, 100, 200}, 3 learning rates x
3 initialisations of the new embeddings = 108 runs; global batch 64, 78K steps, evaluation on
the 100k held-out examples every 1% of the steps, stop at 95% held-out accuracy.

The paper starts from pretrained checkpoints, and so does this spec: ``VLAB_MODELS`` names the
folder holding them under their Hugging Face names (``pythia-1.4b``, ``mamba-1.4b-hf``), each
arm's ``model.pretrained``. Without it the spec does not load (one line saying what to set),
rather than train 1.4B models from random weights by accident; ``VLAB_RANDOM_WEIGHTS=1`` asks
for the paper's shapes from random weights explicitly. ``--set-arch ARCH:model.pretrained=DIR``
still points one arm elsewhere.
"""

import dataclasses
import os
from pathlib import Path

from vlab.slurm.spec import SweepSpec, environment

# arch -> its checkpoint folder under VLAB_MODELS (the Hugging Face names)
CHECKPOINTS = {"pythia": "pythia-1.4b", "mamba": "mamba-1.4b-hf"}

GRID = SweepSpec(
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


def sweep() -> SweepSpec:
    """The grid, each arm from its pretrained checkpoint under ``VLAB_MODELS``, or from random
    weights when ``VLAB_RANDOM_WEIGHTS=1`` says so."""
    if os.environ.get("VLAB_RANDOM_WEIGHTS") == "1":
        note = " Random weights (VLAB_RANDOM_WEIGHTS=1)."
        return dataclasses.replace(GRID, description=GRID.description + note)
    what = (
        "local checkpoints pythia-1.4b and mamba-1.4b-hf; or VLAB_RANDOM_WEIGHTS=1 to train "
        "the paper's shapes from random weights"
    )
    models = Path(environment("paper-grounding", {"VLAB_MODELS": what})["VLAB_MODELS"])
    per_arch = {
        arch: {"model.pretrained": str(models / folder)} for arch, folder in CHECKPOINTS.items()
    }
    return dataclasses.replace(GRID, per_arch=per_arch)
