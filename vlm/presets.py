"""The named VLM presets (``vlab vlm train --preset NAME``): plain dicts, nested like
``config.json``, merged over :class:`~vlab.vlm.config.VLMRunConfig`'s defaults.

Kept free of imports so that the ``vlab`` command can list the names without loading torch.
"""

from __future__ import annotations

_TINY_TRAIN = {
    "batch_size": 32,
    "eval_every": 50,
    "stop_at_threshold": False,
    "warmup_ratio": 0.03,
    "weight_decay": 0.0,
}
PRESETS: dict[str, dict] = {
    # Tiny Pythia-VL / Mamba-VL on the built-in shapes dataset: minutes on 2 CPU cores.
    "tiny-shapes": {
        "model": {
            "lm": {"preset": "tiny"},
            "vision": {"kind": "patch", "preset": "tiny", "image_size": 64},
            "sequence": {"max_length": 256},
        },
        "data": {"shapes": {"image_size": 64}, "n_heldout": 120},
        "stage1": {**_TINY_TRAIN, "steps": 100, "lr": 3e-3},
        "stage2": {**_TINY_TRAIN, "steps": 600, "lr": 2e-3},
    },
    # SHAKEUP's recipe: EVA-02-L/14 at 336 px, 2-layer MLP, Pythia-1.4B / Mamba-1.4B. Stage 1:
    # batch 256, lr 1e-3; stage 2: batch 128, lr 2e-5; AdamW, cosine, warmup ratio 0.03.
    # Point model.lm.pretrained, model.vision.pretrained and data.tokenizer at local copies.
    "paper-1.4b": {
        "model": {
            "lm": {"preset": "1.4b"},
            "vision": {"kind": "eva02", "preset": "paper"},
            "sequence": {"max_length": 1024},
        },
        "stage1": {
            "steps": 11_621,
            "batch_size": 256,
            "lr": 1e-3,
            "warmup_ratio": 0.03,
            "weight_decay": 0.0,
            "stop_at_threshold": False,
            "eval_fraction": 0.05,
        },
        "stage2": {
            "steps": 96_875,
            "batch_size": 128,
            "lr": 2e-5,
            "warmup_ratio": 0.03,
            "weight_decay": 0.0,
            "stop_at_threshold": False,
            "eval_fraction": 0.02,
        },
        "eval_batch_size": 16,
    },
}
