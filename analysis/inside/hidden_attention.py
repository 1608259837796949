"""Mamba's hidden attention: the selective SSM as a data-dependent linear operator over the
past (Ali, Zimerman & Wolf, "The Hidden Attention of Mamba Models", 2024).

For one channel d of a Mamba mixer, with discretisation step ``delta_t`` (after softplus),
state matrix ``A_d`` (N,) and input-dependent ``B_t``, ``C_t`` (N,), the recurrence
``h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t``, ``y_t = C_t . h_t + D x_t`` unrolls to

    y_t = sum_{s <= t} alpha[t, s] x_s + D x_t,
    alpha[t, s] = sum_n C_t[n] exp(A[n] * sum_{k=s+1..t} delta_k) delta_s B_s[n],

so ``alpha`` (L, L) per channel, lower triangular, is the attention the SSM pays from
position t to position s. Unlike softmax attention its rows need not sum to one, and a
position's weight decays with the ``delta`` mass between the two positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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


def ssm_output(internals: MixerInternals, alpha: torch.Tensor) -> torch.Tensor:
    """The mixer's gated SSM output (B, D, L) computed through ``alpha``: what its
    ``out_proj`` receives, ``(alpha x + D x) * SiLU(z)``."""
    x = internals.x
    y = torch.einsum("bdts,bds->bdt", alpha, x) + internals.D[None, :, None] * x
    return y * F.silu(internals.z)
