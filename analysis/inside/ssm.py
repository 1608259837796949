"""A Mamba mixer's recurrent state, step by step, and the mixer re-run from a replaced state.

transformers runs the selective scan as one fused function, so the state h_t (B, D, N) after
each position never exists as a module output. vlab recomputes it from the mixer's input with
the recurrence ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t`` (``y_t = C_t . h_t + D x_t``),
and tests that ``y`` gated and projected equals the mixer's own output.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from vlab.analysis.inside.hidden_attention import (
    MixerInternals,
    hidden_attention,
    mixer_internals,
)


def scan_states(
    internals: MixerInternals, start: int = 0, initial: torch.Tensor | None = None
) -> torch.Tensor:
    """States h_t (B, D, N, T - start) for t = start..T-1, from ``initial`` h_{start-1}
    (B, D, N; zeros when None, the state before position 0)."""
    x, delta, A, B = internals.x, internals.delta, internals.A, internals.B
    batch, d, length = x.shape
    h = x.new_zeros(batch, d, A.shape[1]) if initial is None else initial.float()
    states = []
    for t in range(start, length):
        decay = torch.exp(delta[:, :, t, None] * A[None])  # (B, D, N)
        h = decay * h + (delta[:, :, t] * x[:, :, t])[..., None] * B[:, None, :, t]
        states.append(h)
    if not states:  # start == T: nothing after it
        return h.new_zeros(*h.shape, 0)
    return torch.stack(states, dim=-1)


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
    """:func:`output_with_state` for any SSM whose module ``ops`` (this one for Mamba-1,
    ``ssd`` for Mamba-2) has ``mixer_internals``, ``scan_states``, ``readout`` and
    ``mixer_output``: the states before ``position``, ``state`` there, the scan restarted from
    it after, read out and gated as the mixer does."""
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
