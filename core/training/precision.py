"""The one autocast rule (``vlab.training.precision``), shared by training and evaluation.

A model trained under bf16 autocast and then evaluated in fp32 (or the other way round) gives
slightly different logits, so greedy answers can differ from the held-out ones recorded
during training. Training (``vlab.training.engine``), the held-out evaluation it runs and
``vlab vlm eval`` therefore all decide through this function: ``precision`` "bf16" always
autocasts to bf16, "fp32" never does, "auto" does on CUDA only (CPU bf16 matmuls are slow and
the CPU presets are tuned in fp32).
"""

from __future__ import annotations

import torch

from vlab.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


def bf16_enabled(device: torch.device, precision: str = "auto") -> bool:
    """Whether forward passes on ``device`` run under bf16 autocast for ``precision``."""
    if precision not in PRECISIONS:
        raise ConfigError("precision", f"{precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, precision: str = "auto") -> torch.autocast:
    """The autocast context for ``device`` and ``precision`` (disabled when not bf16)."""
    enabled = bf16_enabled(device, precision)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
