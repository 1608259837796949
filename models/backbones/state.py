"""How much a backbone remembers: the size of its decoding state, read off a real cached pass.

The synthetic-recall literature reports it beside every result: a recurrent model's memory is
its fixed-size state (per Mamba layer, the SSM state plus the convolution's last inputs),
an attention layer's is its key-value cache, which grows with the sequence. Counting the
tensors transformers' own cache holds after one forward pass of ``seq_len`` tokens gives the
right answer for every arm (hybrids included) without a formula per family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def state_size(model: nn.Module, seq_len: int) -> dict[str, int]:
    """Elements held per sequence after reading ``seq_len`` tokens.

    ``recurrent_state``: SSM states of all recurrent layers; ``conv_state``: their convolution
    windows; ``kv_cache``: keys and values of all attention layers (grows with ``seq_len``);
    ``total``: their sum. Multiply by the element size (4 bytes in fp32, 2 in bf16) for bytes.
    """
    import torch

    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(
                input_ids=torch.zeros(1, seq_len, dtype=torch.long, device=device), use_cache=True
            )
    finally:
        model.train(was_training)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    sizes = {"recurrent_state": 0, "conv_state": 0, "kv_cache": 0}
    for layer in getattr(cache, "layers", []):
        for kind, states in (
            ("recurrent_state", getattr(layer, "recurrent_states", None)),
            ("conv_state", getattr(layer, "conv_states", None)),
        ):
            if isinstance(states, dict):
                sizes[kind] += sum(s.numel() for s in states.values() if s is not None)
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                sizes["kv_cache"] += tensor.numel()
    sizes["total"] = sum(sizes.values())
    return sizes
