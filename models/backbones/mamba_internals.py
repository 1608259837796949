"""A Mamba-1 mixer's internals from its input: scan inputs, state per step, hidden attention.

transformers runs the selective scan as one fused function, so neither the state h_t (B, D, N)
after each position nor the scan's inputs exist as module outputs. This module recomputes
them from the mixer's input as its forward pass does, runs the recurrence
``h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t``, ``y_t = C_t . h_t + D x_t`` through the
reference steps of :mod:`vlab.models.ops.selective_scan` (one definition of the scan for
training and for looking inside), and re-runs the mixer from a replaced state. Tests check
that the output gated and projected equals the mixer's own.

Hidden attention (Ali, Zimerman & Wolf, "The Hidden Attention of Mamba Models", 2024): for
one channel d, with step ``delta_t``, state matrix ``A_d`` (N,) and input-dependent ``B_t``,
``C_t`` (N,), the recurrence unrolls to

    y_t = sum_{s <= t} alpha[t, s] x_s + D x_t,
    alpha[t, s] = sum_n C_t[n] exp(A[n] * sum_{k=s+1..t} delta_k) delta_s B_s[n],

so ``alpha`` (L, L) per channel, lower triangular, is the attention the SSM pays from
position t to position s. Unlike softmax attention its rows need not sum to one, and a
position's weight decays with the ``delta`` mass between the two positions.

The block record of ``mamba`` blocks names this module (``Block.internals``); Mamba-2's is
:mod:`vlab.models.backbones.mamba2_internals`, with the same function names.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from vlab.models.ops.selective_scan import selective_scan_states


@dataclass
class MixerInternals:
    """What an HF ``MambaMixer`` computes from its input, in the mixer's own shapes.

    x: (B, D, L) the SSM's input (after the causal conv and SiLU); z: (B, D, L) the gate;
    delta: (B, D, L) the step after softplus; A: (D, N); B, C: (B, N, L); D: (D,).
    """

    x: torch.Tensor
    z: torch.Tensor
    delta: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    D: torch.Tensor


def mixer_internals(mixer: nn.Module, hidden_states: torch.Tensor) -> MixerInternals:
    """Recompute an HF ``MambaMixer``'s SSM inputs from its input ``hidden_states`` (B, L, H),
    as its forward pass does without a cache (no padding mask)."""
    length = hidden_states.shape[1]
    projected = mixer.in_proj(hidden_states).transpose(1, 2)  # (B, 2D, L)
    x, z = projected.chunk(2, dim=1)
    x = mixer.act(mixer.conv1d(x)[..., :length])
    rank, n = mixer.time_step_rank, mixer.ssm_state_size
    dt, B, C = torch.split(mixer.x_proj(x.transpose(1, 2)), [rank, n, n], dim=-1)
    delta = F.softplus(mixer.dt_proj(dt).transpose(1, 2).float())  # bias included
    A = -torch.exp(mixer.A_log.float())
    return MixerInternals(
        x.float(),
        z.float(),
        delta,
        A,
        B.transpose(1, 2).float(),
        C.transpose(1, 2).float(),
        mixer.D.float(),
    )


def hidden_attention(
    delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """alpha (batch, D, L, L): the weight of position s in the SSM output at position t
    (zero above the diagonal). delta (batch, D, L), A (D, N), B and C (batch, N, L).

    Memory is batch x D x L x L x N during the computation: meant for analysis-sized inputs
    (a probe context, one image), not for whole training batches.
    """
    cum = torch.cumsum(delta, dim=-1)  # (b, D, L): sum_{k<=t} delta_k
    # sum_{k=s+1..t} delta_k = cum_t - cum_s, for t >= s
    gap = cum.unsqueeze(-1) - cum.unsqueeze(-2)  # (b, D, L_t, L_s)
    causal = torch.ones(gap.shape[-2:], dtype=torch.bool, device=gap.device).tril()
    gap = gap.masked_fill(~causal, 0.0)
    decay = torch.exp(gap.unsqueeze(-1) * A[None, :, None, None, :])  # (b, D, L, L, N)
    weights = torch.einsum("bnt,bdtsn,bds,bns->bdts", C, decay, delta, B)
    return weights.masked_fill(~causal, 0.0)


def last_row(internals: MixerInternals) -> torch.Tensor:
    """``hidden_attention(...)[:, :, T-1, :]`` (B, D, T) without the (T, T) matrix.

    alpha[T-1, s] = sum_n C_{T-1}[n] exp(A[n] sum_{k=s+1..T-1} delta_k) delta_s B_s[n]: memory
    B x D x T x N instead of B x D x T x T x N (gigabytes for a paper-sized Mamba and a long
    context). Tested against the full matrix.
    """
    delta, A, B, C = internals.delta, internals.A, internals.B, internals.C
    cum = torch.cumsum(delta, dim=-1)  # (B, D, T)
    gap = cum[..., -1:] - cum  # (B, D, T): the delta mass between s and T - 1
    decay = torch.exp(gap.unsqueeze(-1) * A[None, :, None, :])  # (B, D, T, N)
    return torch.einsum("bn,bdsn,bds,bns->bds", C[..., -1], decay, delta, B)


def ssm_output(internals: MixerInternals, alpha: torch.Tensor) -> torch.Tensor:
    """The mixer's gated SSM output (B, D, L) computed through ``alpha``: what its
    ``out_proj`` receives, ``(alpha x + D x) * SiLU(z)``."""
    x = internals.x
    y = torch.einsum("bdts,bds->bdt", alpha, x) + internals.D[None, :, None] * x
    return y * F.silu(internals.z)


def scan_states(
    internals: MixerInternals, start: int = 0, initial: torch.Tensor | None = None
) -> torch.Tensor:
    """States h_t (B, D, N, T - start) for t = start..T-1, from ``initial`` h_{start-1}
    (B, D, N; zeros when None, the state before position 0): the reference scan's own steps
    (:func:`~vlab.models.ops.selective_scan.selective_scan_states`)."""
    return selective_scan_states(
        internals.x[..., start:],
        internals.delta[..., start:],
        internals.A,
        internals.B[..., start:],
        initial_state=initial,
    )


def readout(internals: MixerInternals, states: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The gated SSM output (B, D, T - start) at positions start.. read from ``states``."""
    x = internals.x[..., start:]
    y = torch.einsum("bdnt,bnt->bdt", states, internals.C[..., start:])
    y = y + internals.D[None, :, None] * x
    return y * F.silu(internals.z[..., start:])


def computed(mixer: nn.Module, mixer_in: torch.Tensor, what: str) -> torch.Tensor:
    """One of the SSM names (``x``, ``z``, ``delta``, ``B``, ``C``, ``state``,
    ``hidden_attention``) of ``mixer`` from its input ``mixer_in`` (B, T, H)."""
    with torch.no_grad():
        internals = mixer_internals(mixer, mixer_in)
        if what == "state":
            return scan_states(internals)
        if what == "hidden_attention":
            return hidden_attention(internals.delta, internals.A, internals.B, internals.C)
        return getattr(internals, what)


def mixer_output(mixer: nn.Module, internals: MixerInternals, gated: torch.Tensor) -> torch.Tensor:
    """The mixer's output (B, T, H) from its gated SSM output (B, D, T)."""
    return mixer.out_proj(gated.transpose(1, 2).to(mixer.out_proj.weight.dtype))


def output_with_state(
    mixer: nn.Module, mixer_in: torch.Tensor, position: int, state: torch.Tensor
) -> torch.Tensor:
    """The mixer's output (B, T, H) on ``mixer_in`` (B, T, H) when its state after
    ``position`` is replaced by ``state`` (B, D, N): positions before it are unchanged, the
    output at ``position`` and after reads the replaced state (activation patching of the
    SSM state)."""
    return patched_output(sys.modules[__name__], mixer, mixer_in, position, state)


def patched_output(
    ops: ModuleType, mixer: nn.Module, mixer_in: torch.Tensor, position: int, state: torch.Tensor
) -> torch.Tensor:
    """:func:`output_with_state` for any SSM whose internals module ``ops`` (this one for
    Mamba-1, ``mamba2_internals`` for Mamba-2) has ``mixer_internals``, ``scan_states``,
    ``readout`` and ``mixer_output``: the states before ``position``, ``state`` there, the scan
    restarted from it after, read out and gated as the mixer does."""
    with torch.no_grad():
        internals = ops.mixer_internals(mixer, mixer_in)
        states = torch.cat(
            [
                ops.scan_states(internals)[..., :position],
                state[..., None].float(),
                ops.scan_states(internals, position + 1, state),
            ],
            dim=-1,
        )
        return ops.mixer_output(mixer, internals, ops.readout(internals, states))
