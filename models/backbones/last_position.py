"""Run a backbone's final block at the last position only, where nothing else is read.

Why: the probe's loss and accuracy read the logits at the last input position alone
(``logits_to_keep=1``), yet transformers runs the final block on every position and backward
runs through every row of it. In that block only the attention's keys and values are needed
at every position; the query, the output projection, the MLP and the residual are needed at
the last one. For a tiny Pythia (2 layers) that is about a third of a training step's FLOPs,
and a CPU training step of these models is bound by its matrix products; ``vlab bench``
(``protocol``) times every arm's step with and without it.

:func:`last_position_only` swaps such a forward in for the duration of a ``with`` block. Inside
it the final block's output holds the true hidden state at the last position and zeros
elsewhere (the final norm and the head, kept to the last position, read only that row), so the
logits at the last position equal transformers' to float rounding and so do the gradients of
every weight. A Mamba or Mamba-2 block still scans every position (the state carries them)
but gates, normalises and projects out only the last. Outside the block the model is
untouched: generation, ``vlab inspect`` and hooks see transformers' forward.
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


def _prenorm(block: nn.Module, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A pre-norm block's (normed input at every position (N, T, D), residual at the last
    (N, 1, D)), as transformers' Mamba, Mamba-2 and vlab's attention blocks compute them."""
    residual = hidden_states[:, -1:]
    normed = block.norm(hidden_states.to(dtype=block.norm.weight.dtype))
    if block.residual_in_fp32:
        residual = residual.to(torch.float32)
    return normed, residual


def _rows(linear: nn.Linear, x: torch.Tensor, rows: slice) -> torch.Tensor:
    """``linear`` restricted to its output rows ``rows`` (part of a fused projection)."""
    bias = None if linear.bias is None else linear.bias[rows]
    return F.linear(x, linear.weight[rows], bias)


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
        normed, residual = _prenorm(block, hidden_states)
        out = residual + _last_query_attention(block.mixer, normed, position_embeddings)
        return _padded(out, hidden_states.shape[1])

    return forward


def _mamba_block_forward(block: nn.Module) -> Callable[..., torch.Tensor]:
    """transformers' ``MambaBlock`` (``x + mixer(RMSNorm(x))``) at the last position.

    The mixer's input half of ``in_proj``, its conv, ``x_proj``, ``dt_proj`` and the scan run
    on every position (the state carries them); the gate half of ``in_proj``, the gating and
    ``out_proj`` only at the last. The conv and scan are the module globals transformers'
    mixer calls (vlab's, installed by ``ops.selective_scan.install_into_transformers``).
    """
    from transformers.models.mamba import modeling_mamba as hf

    mixer = block.mixer

    def forward(hidden_states, cache=None, attention_mask=None, **kwargs):
        _refuse_unless(attention_mask is None or bool(attention_mask.all()), cache, block)
        normed, residual = _prenorm(block, hidden_states)
        width = mixer.intermediate_size
        x = _rows(mixer.in_proj, normed, slice(None, width))
        gate = _rows(mixer.in_proj, normed[:, -1], slice(width, None))
        x = hf.causal_conv1d_fn(
            x.transpose(1, 2),
            mixer.conv1d.weight.squeeze(1),
            mixer.conv1d.bias if mixer.use_conv_bias else None,
            activation=mixer.activation,
        )  # (N, width, T)
        time_step, B, C = torch.split(
            mixer.x_proj(x.transpose(1, 2)),
            [mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size],
            dim=-1,
        )
        time_step = mixer.dt_proj.weight @ time_step.transpose(1, 2)
        y = hf.mamba_selective_scan(
            x,
            time_step,
            -torch.exp(mixer.A_log.float()),
            B.transpose(1, 2),
            C.transpose(1, 2),
            D=mixer.D.float(),
            z=None,
            delta_bias=mixer.dt_proj.bias.float() if mixer.dt_proj.bias is not None else None,
            delta_softplus=True,
        )  # (N, width, T)
        y = y[:, :, -1] * F.silu(gate)
        out = mixer.out_proj(y.to(hidden_states.dtype)).unsqueeze(1)
        return _padded(residual + out, hidden_states.shape[1])

    return forward


def _mamba2_block_forward(block: nn.Module) -> Callable[..., torch.Tensor]:
    """transformers' ``Mamba2Block`` at the last position: the conv, the SSD scan and the
    ``in_proj`` columns that feed them on every position; the gate's columns, the gated norm and
    ``out_proj`` only at the last."""
    from transformers.models.mamba2 import modeling_mamba2 as hf

    mixer = block.mixer

    def forward(hidden_states, cache=None, attention_mask=None, **kwargs):
        _refuse_unless(attention_mask is None or bool(attention_mask.all()), cache, block)
        n, length, _ = hidden_states.shape
        normed, residual = _prenorm(block, hidden_states)
        width = mixer.intermediate_size
        xbc_dt = _rows(mixer.in_proj, normed, slice(width, None))
        gate = _rows(mixer.in_proj, normed[:, -1:], slice(None, width))
        xbc, dt = xbc_dt.split([mixer.conv_dim, mixer.num_heads], dim=-1)
        xbc = hf.causal_conv1d_fn(
            xbc.transpose(1, 2),
            mixer.conv1d.weight.squeeze(1),
            mixer.conv1d.bias,
            activation=mixer.activation,
        ).transpose(1, 2)
        groups = mixer.n_groups * mixer.ssm_state_size
        x, B, C = torch.split(xbc, [width, groups, groups], dim=-1)
        y = hf.mamba2_chunk_scan(
            x.view(n, length, mixer.num_heads, mixer.head_dim),
            dt,
            -torch.exp(mixer.A_log.float()),
            B.view(n, length, mixer.n_groups, mixer.ssm_state_size),
            C.view(n, length, mixer.n_groups, mixer.ssm_state_size),
            chunk_size=mixer.chunk_size,
            D=mixer.D,
            z=None,
            return_final_states=False,
            dt_bias=mixer.dt_bias,
            dt_softplus=True,
            initial_states=None,
            dt_limit=mixer.time_step_limit,
        )  # (N, T, heads, head_dim)
        y = mixer.norm(y.reshape(n, length, -1)[:, -1:], gate)
        out = mixer.out_proj(y.to(hidden_states.dtype))
        return _padded(residual + out, length)

    return forward


def _check_plain(attention_mask, kwargs: dict, block: nn.Module) -> None:
    """An attention block's call: the last query must see every key (a causal mask without
    padding) and there must be no cache."""
    blocked = False
    if attention_mask is not None:
        row = attention_mask[..., -1, :]  # what the last query may attend to
        blocked = not bool(row.all() if row.dtype == torch.bool else (row == 0).all())
    _refuse_unless(not blocked, kwargs.get("layer_past", kwargs.get("cache")), block)


def _refuse_unless(unpadded: bool, cache, block: nn.Module) -> None:
    """The shortcut holds for unpadded inputs without a cache: say so if called otherwise."""
    if cache is not None or not unpadded:
        raise RuntimeError(
            f"last_position_only: {type(block).__name__} was called with a cache or a padding "
            "mask; the shortcut serves unpadded, cache-free forwards only"
        )


def _final_block(model: nn.Module) -> tuple[nn.Module, Callable[..., torch.Tensor]] | None:
    """The model's final block and its last-position forward, or None if it has none (a Mamba
    mixer with another activation than SiLU, a model of another family)."""
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXLayer
    from transformers.models.mamba.modeling_mamba import MambaBlock
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Block

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
    if type(last) is MambaBlock and last.mixer.activation in ("silu", "swish"):
        return last, _mamba_block_forward(last)
    if type(last) is Mamba2Block:
        return last, _mamba2_block_forward(last)
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
