"""A Mamba-2 (SSD) mixer's internals, recurrent state and hidden attention, from its input.

transformers runs Mamba-2's scan chunked (``mamba2_chunk_scan``), so neither the state after
each position nor the attention-like matrix of the SSD form exists as a module output. vlab
recomputes them from the mixer's input with the per-head recurrence (heads h, head dim P,
state size N, B and C shared by the heads of a group), run by
:func:`vlab.models.ops.ssd.ssd_states` (the plain form of the chunked scan training uses)::

    h_t = exp(delta_t A_h) h_{t-1} + delta_t x_t B_t^T        (P, N) per head
    y_t = h_t C_t + D_h x_t                                    (P,)
    out = out_proj(RMSNorm_gated(y, z))

and tests that ``out`` equals the mixer's own output. Unrolled, the scan is attention with one
weight per (head, t, s): ``alpha[t, s] = exp(A_h sum_{k=s+1..t} delta_k) delta_s (C_t . B_s)``
(Dao & Gu 2024's SSD matrix), what :func:`hidden_attention` returns; the gated norm after it
mixes channels at each position, not positions.

What positions after t receive from positions up to t is the state h_t and the *conv window*:
the pre-conv ``xBC`` inputs (x, B and C before the causal conv) at positions t-K+2..t, (B,
conv_dim, K-1), which the conv at t+1..t+K-1 still reads (:func:`conv_window`,
:func:`output_with_patch`; ``dt`` and the gate do not go through the conv).

The same function names as :mod:`vlab.models.backbones.mamba_internals` (Mamba-1): the block
record of ``mamba2`` blocks names this module (``Block.internals``), and callers find it
there.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlab.models.backbones import mamba_internals
from vlab.models.ops.ssd import ssd_states


@dataclass
class SSDInternals:
    """What an HF ``Mamba2Mixer`` computes from its input, per head.

    x, z: (B, heads, P, T) the scan's input (after the causal conv and SiLU) and the gate;
    delta: (B, heads, T) the step (softplus of dt + dt_bias, clamped to the time-step limit);
    A, D: (heads,); B, C: (B, groups, N, T).
    """

    x: torch.Tensor
    z: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor

    def per_head(self, t: torch.Tensor) -> torch.Tensor:
        """A group tensor (B, groups, N, ...) repeated to (B, heads, N, ...)."""
        return t.repeat_interleave(self.x.shape[1] // t.shape[1], dim=1)


def conv_input(mixer: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """What a ``Mamba2Mixer``'s causal conv reads: the ``xBC`` part of ``in_proj``, (B,
    conv_dim, T) with conv_dim = heads x P + 2 x groups x N, from ``hidden_states`` (B, T,
    H)."""
    _, xbc, _ = _split(mixer, mixer.in_proj(hidden_states))
    return xbc.transpose(1, 2)


def _split(mixer: nn.Module, projected: torch.Tensor) -> list[torch.Tensor]:
    """``in_proj``'s output (B, T, ...) split into the gate, ``xBC`` and ``dt``."""
    return projected.split([mixer.intermediate_size, mixer.conv_dim, mixer.num_heads], dim=-1)


def conv_window(mixer: nn.Module, mixer_in: torch.Tensor, position: int) -> torch.Tensor:
    """The conv window (B, conv_dim, K-1) of ``mixer`` on ``mixer_in`` (B, T, H) after
    ``position``: the pre-conv ``xBC`` at positions position-K+2..position that the causal conv
    still reads at positions > ``position``, zeros where that reaches before position 0."""
    with torch.no_grad():
        inputs = conv_input(mixer, mixer_in)
        return mamba_internals.window_at(inputs, mixer.conv1d.kernel_size[0] - 1, position)


def mixer_internals(
    mixer: nn.Module, hidden_states: torch.Tensor, window: torch.Tensor | None = None
) -> SSDInternals:
    """Recompute a ``Mamba2Mixer``'s scan inputs from its input ``hidden_states`` (B, T, H),
    as its forward pass does without a cache (no padding mask). ``window`` (B, conv_dim,
    K-1): the conv window the segment continues from (:func:`conv_window`); None at a
    sequence's start."""
    batch, length, _ = hidden_states.shape
    heads, head_dim, n = mixer.num_heads, mixer.head_dim, mixer.ssm_state_size
    gate, xbc, dt = _split(mixer, mixer.in_proj(hidden_states))
    conv = mamba_internals.causal_conv(mixer.conv1d, xbc.transpose(1, 2), window)
    xbc = mixer.act(conv)  # (B, conv_dim, T)
    x, B, C = xbc.split([mixer.intermediate_size, mixer.n_groups * n, mixer.n_groups * n], dim=1)
    low, high = mixer.time_step_limit
    delta = F.softplus(dt.float() + mixer.dt_bias.float()).clamp(low, high).transpose(1, 2)
    return SSDInternals(
        x=x.reshape(batch, heads, head_dim, length).float(),
        z=gate.transpose(1, 2).reshape(batch, heads, head_dim, length).float(),
        delta=delta,
        A=-torch.exp(mixer.A_log.float()),
        B=B.reshape(batch, mixer.n_groups, n, length).float(),
        C=C.reshape(batch, mixer.n_groups, n, length).float(),
        D=mixer.D.float(),
    )


def scan_states(
    internals: SSDInternals, start: int = 0, initial: torch.Tensor | None = None
) -> torch.Tensor:
    """States h_t (B, heads, P, N, T - start) for t = start..T-1, from ``initial`` h_{start-1}
    (B, heads, P, N; zeros when None, the state before position 0), through
    :func:`~vlab.models.ops.ssd.ssd_states` in transformers' time-major layout."""
    return ssd_states(
        internals.x[..., start:].permute(0, 3, 1, 2),  # (B, T', heads, P)
        internals.delta[..., start:].transpose(1, 2),  # (B, T', heads)
        internals.A,
        internals.B[..., start:].permute(0, 3, 1, 2),  # (B, T', groups, N)
        initial,
    )


def readout(internals: SSDInternals, states: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The scan's output y (B, heads, P, T - start) at positions start.. read from ``states``,
    before the gated norm."""
    C = internals.per_head(internals.C)[..., start:]  # (B, heads, N, T')
    x = internals.x[..., start:]
    return torch.einsum("bhpnt,bhnt->bhpt", states, C) + internals.D[None, :, None, None] * x


def mixer_output(
    mixer: nn.Module, internals: SSDInternals, y: torch.Tensor, start: int = 0
) -> torch.Tensor:
    """The mixer's output (B, T - start, H) from the scan's output ``y`` (B, heads, P, T -
    start): gated RMS norm with ``z``, then ``out_proj``."""
    batch, _, _, length = y.shape
    flat = y.reshape(batch, -1, length).transpose(1, 2)  # (B, T', heads * P)
    gate = internals.z[..., start:].reshape(batch, -1, length).transpose(1, 2)
    normed = mixer.norm(flat, gate)
    return mixer.out_proj(normed.to(mixer.out_proj.weight.dtype))


def hidden_attention(
    delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """alpha (batch, heads, T, T): the weight of position s in head h's scan output at
    position t (zero above the diagonal); delta (batch, heads, T), A (heads,), B and C
    (batch, heads, N, T) (groups already repeated to heads)."""
    cum = torch.cumsum(delta, dim=-1)
    gap = cum.unsqueeze(-1) - cum.unsqueeze(-2)  # (b, heads, T_t, T_s)
    causal = torch.ones(gap.shape[-2:], dtype=torch.bool, device=gap.device).tril()
    decay = torch.exp((gap * A[None, :, None, None]).masked_fill(~causal, -torch.inf))
    scores = torch.einsum("bhnt,bhns->bhts", C, B)
    return scores * decay * delta[:, :, None, :]


def last_row(internals: SSDInternals) -> torch.Tensor:
    """``hidden_attention(...)[:, :, T-1, :]`` (B, heads, T) without the (T, T) matrix."""
    delta, A = internals.delta, internals.A
    B, C = internals.per_head(internals.B), internals.per_head(internals.C)
    cum = torch.cumsum(delta, dim=-1)
    decay = torch.exp((cum[..., -1:] - cum) * A[None, :, None])  # (B, heads, T)
    return torch.einsum("bhn,bhns->bhs", C[..., -1], B) * decay * delta


def computed(mixer: nn.Module, mixer_in: torch.Tensor, what: str) -> torch.Tensor:
    """One of the SSM names (``x``, ``z``, ``delta``, ``B``, ``C``, ``state``,
    ``hidden_attention``, ``conv_window``: (B, conv_dim, K-1, T), :func:`conv_window` after
    each position) of ``mixer`` from its input ``mixer_in`` (B, T, H)."""
    with torch.no_grad():
        if what == "conv_window":
            width = mixer.conv1d.kernel_size[0] - 1
            return mamba_internals.windows(conv_input(mixer, mixer_in), width)
        internals = mixer_internals(mixer, mixer_in)
        if what == "state":
            return scan_states(internals)
        if what == "hidden_attention":
            per_head = internals.per_head
            return hidden_attention(
                internals.delta, internals.A, per_head(internals.B), per_head(internals.C)
            )
        return getattr(internals, what)


def output_with_state(
    mixer: nn.Module, mixer_in: torch.Tensor, position: int, state: torch.Tensor
) -> torch.Tensor:
    """The mixer's output (B, T, H) on ``mixer_in`` (B, T, H) when its state after
    ``position`` is replaced by ``state`` (B, heads, P, N): positions before it are unchanged,
    the output at ``position`` and after reads the replaced state (the conv window stays the
    run's own, see :func:`output_with_patch`)."""
    return mamba_internals.patched_output(sys.modules[__name__], mixer, mixer_in, position, state)


def output_with_patch(
    mixer: nn.Module,
    mixer_in: torch.Tensor,
    position: int,
    state: torch.Tensor | None = None,
    window: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mixer's output (B, T, H) on ``mixer_in`` (B, T, H) with, after ``position``, the
    state h_position replaced by ``state`` (B, heads, P, N) and/or the conv window replaced by
    ``window`` (B, conv_dim, K-1, :func:`conv_window`); None keeps the run's own. Positions
    before ``position`` are unchanged; the output at ``position`` reads the replaced state and
    not the window, which only the conv at positions after it reads."""
    return mamba_internals.patched_output(
        sys.modules[__name__], mixer, mixer_in, position, state, window
    )


def outputs_with_patches(
    mixer: nn.Module,
    mixer_in: torch.Tensor,
    states: torch.Tensor | None = None,
    windows: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`output_with_patch` at every position t, (B, T, T, H): ``[:, t]`` with the state
    after t replaced by ``states[..., t]`` (states (B, heads, P, N, T)) and/or the conv window
    by ``windows[..., t]`` (windows (B, conv_dim, K-1, T)), the run's own scan computed once."""
    return mamba_internals.patched_outputs(sys.modules[__name__], mixer, mixer_in, states, windows)
