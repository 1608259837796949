"""Run a backbone's final block at the last position only, where nothing else is read.

Why: the probe's loss and accuracy read the logits at the last input position alone
(``logits_to_keep=1``), yet transformers runs the final block on every position and backward
runs through every row of it. In that block only the attention's keys and values are needed
at every position; the query, the output projection, the MLP and the residual are needed at
the last one. For the tiny presets (2 layers) that is about a third of a training step's
FLOPs, and a CPU training step of these models is bound by its matrix products, so it is about
that much of its time (``vlab bench``, ``protocol``).

:func:`last_position_only` swaps such a forward in for the duration of a ``with`` block. Inside
it the final block's output holds the true hidden state at the last position and zeros
elsewhere (the final norm and the head, kept to the last position, read only that row), so the
logits at the last position equal transformers' to float rounding and so do the gradients of
every weight. Blocks without such a forward (a Mamba mixer must scan every position) run
unchanged. Outside the block the model is untouched: generation, ``vlab inspect`` and hooks
see transformers' forward.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_off: contextvars.ContextVar[bool] = contextvars.ContextVar("vlab_last_position_off", default=False)


@contextmanager
def full_forward() -> Iterator[None]:
    """Inside, :func:`last_position_only` changes nothing: every block runs transformers' own
    forward (``vlab bench`` times the protocol's step both ways in one process)."""
    token = _off.set(True)
    try:
        yield
    finally:
        _off.reset(token)


def _last_query_attention(
    attention: nn.Module,
    normed: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """transformers' ``GPTNeoXAttention`` for the last query only, no mask and no cache.

    normed: (N, T, D), the block's normed input. Keys and values (and rotary positions) are
    those of every position; the one query at T-1 attends to all of them, so no causal mask
    is needed. Returns the attention output after ``dense``, (N, 1, D).
    """
    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb

    n, length, _ = normed.shape
    qkv = attention.query_key_value(normed).view(n, length, -1, 3 * attention.head_size)
    query, key, value = qkv.transpose(1, 2).chunk(3, dim=-1)  # (N, H, T, head_size) each
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    out = F.scaled_dot_product_attention(
        query[:, :, -1:], key, value, scale=attention.scaling
    )  # (N, H, 1, head_size)
    return attention.dense(out.transpose(1, 2).reshape(n, 1, -1))


def _padded(last: torch.Tensor, length: int) -> torch.Tensor:
    """(N, 1, D) -> (N, length, D): zeros, then the last position's row."""
    return F.pad(last, (0, 0, length - 1, 0))


def _neox_layer_forward(layer: nn.Module) -> Callable[..., torch.Tensor]:
    """A ``GPTNeoXLayer`` forward that computes the last position only (parallel residual or
    not, as the layer's config says); rows before it are zeros."""

    def forward(hidden_states, attention_mask=None, position_embeddings=None, **kwargs):
        _check_plain(attention_mask, kwargs, layer)
        x = hidden_states[:, -1:]
        attn = _last_query_attention(
            layer.attention, layer.input_layernorm(hidden_states), position_embeddings
        )
        if layer.use_parallel_residual:
            out = layer.mlp(layer.post_attention_layernorm(x)) + attn + x
        else:
            attn = attn + x
            out = layer.mlp(layer.post_attention_layernorm(attn)) + attn
        return _padded(out, hidden_states.shape[1])

    return forward


def _attention_block_forward(block: nn.Module) -> Callable[..., torch.Tensor]:
    """The hybrid's ``AttentionBlock`` (``x + attention(RMSNorm(x))``) at the last position."""

    def forward(hidden_states, attention_mask=None, position_embeddings=None, **kwargs):
        _check_plain(attention_mask, kwargs, block)
        residual = hidden_states[:, -1:]
        normed = block.norm(hidden_states.to(dtype=block.norm.weight.dtype))
        if block.residual_in_fp32:
            residual = residual.to(torch.float32)
        out = residual + _last_query_attention(block.mixer, normed, position_embeddings)
        return _padded(out, hidden_states.shape[1])

    return forward


def _check_plain(attention_mask, kwargs: dict, block: nn.Module) -> None:
    """The shortcut holds when the last query may see every key (a causal mask, no padding)
    and there is no cache: say so if called otherwise."""
    cache = kwargs.get("layer_past", kwargs.get("cache"))
    blocked = False
    if attention_mask is not None:
        row = attention_mask[..., -1, :]  # what the last query may attend to
        blocked = not bool(row.all() if row.dtype == torch.bool else (row == 0).all())
    if cache is not None or blocked:
        raise RuntimeError(
            f"last_position_only: {type(block).__name__} was called with a cache or a padding "
            "mask; the shortcut serves unpadded, cache-free forwards only"
        )


def _final_block(model: nn.Module) -> tuple[nn.Module, Callable[..., torch.Tensor]] | None:
    """The model's final block and its last-position forward, or None if it has none."""
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXLayer

    from vlab.models.backbones.hybrid_model import AttentionBlock

    model = getattr(model, "module", model)  # a DistributedDataParallel wrapper's model
    base = getattr(model, "base_model", model)
    layers = getattr(base, "layers", None)
    if not layers:
        return None
    last = layers[-1]
    if type(last) is GPTNeoXLayer:
        return last, _neox_layer_forward(last)
    if type(last) is AttentionBlock:
        return last, _attention_block_forward(last)
    return None


@contextmanager
def last_position_only(model: nn.Module) -> Iterator[bool]:
    """Within the block, ``model``'s final block computes the last position only (see the
    module's docstring); yields whether it does (False: this architecture's final block has
    no such forward and runs unchanged). Call the model with ``logits_to_keep=1`` inside."""
    found = None if _off.get() else _final_block(model)
    if found is None:
        yield False
        return
    block, forward = found
    block.forward = forward
    try:
        yield True
    finally:
        del block.forward  # back to the class's forward
