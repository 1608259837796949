"""A Mamba-1 mixer's internals from its input: scan inputs, state per step, hidden attention.

transformers runs the selective scan as one fused function, so neither the state h_t (B, D, N)
after each position nor the scan's inputs exist as module outputs. This module recomputes
them from the mixer's input as its forward pass does, runs the recurrence
``h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t``, ``y_t = C_t . h_t + D x_t`` through the
reference steps of :mod:`vlab.models.ops.selective_scan` (one definition of the scan for
training and for looking inside), and re-runs the mixer from a replaced state. Tests check
that the output gated and projected equals the mixer's own.

What the mixer carries past a position t is not only the state h_t: its causal conv (kernel K)
at positions t+1..t+K-1 still reads the pre-conv inputs at positions t-K+2..t, the *conv
window* (B, D, K-1), what transformers' decoding cache keeps beside the state.
:func:`conv_window` reads it, and :func:`output_with_patch` re-runs the mixer with the state
and/or the window after t replaced, so that state and conv together account for everything
positions after t receive from positions up to t (tested: patching both from a clean run
restores the clean output exactly).

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
from dataclasses import dataclass, replace
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


def conv_input(mixer: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """What an HF ``MambaMixer``'s causal conv reads: the x half of ``in_proj``, (B, D, T),
    from its input ``hidden_states`` (B, T, H)."""
    return mixer.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)[0]


def causal_conv(
    conv: nn.Conv1d, inputs: torch.Tensor, window: torch.Tensor | None = None
) -> torch.Tensor:
    """A depthwise causal conv's output (B, C, T) on ``inputs`` (B, C, T), before the
    activation. ``window`` (B, C, K-1) is what it reads before position 0: the pre-conv inputs
    of the positions before a segment that continues a run; None is the zeros the conv pads
    with at the start of a sequence (the mixer's own forward pass, bit for bit)."""
    length = inputs.shape[-1]
    if window is None:
        return conv(inputs)[..., :length]
    width = conv.kernel_size[0] - 1
    if window.shape != (*inputs.shape[:2], width):
        raise ValueError(
            f"conv window: expected (B, C, K-1) = {(*inputs.shape[:2], width)}, "
            f"got {tuple(window.shape)}"
        )
    # the conv pads K-1 on each side: output j reads sequence j-K+1..j, so output K-1+u reads
    # inputs u-K+1..u, the window supplying those before 0
    joined = torch.cat([window.to(inputs.dtype), inputs], dim=-1)
    return conv(joined)[..., width : width + length]


def window_at(inputs: torch.Tensor, width: int, position: int) -> torch.Tensor:
    """The conv window (B, C, width) after ``position`` of pre-conv ``inputs`` (B, C, T): the
    inputs at positions position-width+1..position, zeros before position 0 (the causal conv's
    padding)."""
    if not 0 <= position < inputs.shape[-1]:
        raise ValueError(f"position {position} outside 0..{inputs.shape[-1] - 1}")
    return F.pad(inputs, (width, 0))[..., position + 1 : position + 1 + width]


def windows(inputs: torch.Tensor, width: int) -> torch.Tensor:
    """The conv window after every position, (B, C, width, T): ``[..., t]`` is
    :func:`window_at` ``(inputs, width, t)``."""
    return F.pad(inputs, (width, 0)).unfold(-1, width, 1)[..., 1:, :].transpose(-1, -2)


def conv_window(mixer: nn.Module, mixer_in: torch.Tensor, position: int) -> torch.Tensor:
    """The conv window (B, D, K-1) of ``mixer`` on ``mixer_in`` (B, T, H) after ``position``:
    the pre-conv inputs at positions position-K+2..position that the causal conv still reads at
    positions > ``position``, zeros where that reaches before position 0. With the state
    h_position it is everything positions after ``position`` receive from positions up to it
    (pass both to :func:`output_with_patch`)."""
    with torch.no_grad():
        inputs = conv_input(mixer, mixer_in)
        return window_at(inputs, mixer.conv1d.kernel_size[0] - 1, position)


def mixer_internals(
    mixer: nn.Module, hidden_states: torch.Tensor, window: torch.Tensor | None = None
) -> MixerInternals:
    """Recompute an HF ``MambaMixer``'s SSM inputs from its input ``hidden_states`` (B, L, H),
    as its forward pass does without a cache (no padding mask). ``window`` (B, D, K-1): the
    conv window the segment continues from (:func:`conv_window`); None at a sequence's
    start."""
    projected = mixer.in_proj(hidden_states).transpose(1, 2)  # (B, 2D, L)
    x, z = projected.chunk(2, dim=1)
    x = mixer.act(causal_conv(mixer.conv1d, x, window))
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
    ``hidden_attention``, ``conv_window``: (B, D, K-1, T), :func:`conv_window` after each
    position) of ``mixer`` from its input ``mixer_in`` (B, T, H)."""
    with torch.no_grad():
        if what == "conv_window":
            return windows(conv_input(mixer, mixer_in), mixer.conv1d.kernel_size[0] - 1)
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
    SSM state; the conv window stays the run's own, see :func:`output_with_patch`)."""
    return patched_output(sys.modules[__name__], mixer, mixer_in, position, state)


def output_with_patch(
    mixer: nn.Module,
    mixer_in: torch.Tensor,
    position: int,
    state: torch.Tensor | None = None,
    window: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mixer's output (B, T, H) on ``mixer_in`` (B, T, H) with, after ``position``, the
    state h_position replaced by ``state`` (B, D, N) and/or the conv window replaced by
    ``window`` (B, D, K-1, :func:`conv_window`); None keeps the run's own. Positions before
    ``position`` are unchanged; the output at ``position`` reads the replaced state (h_t is the
    state after t) and not the window, which only the conv at positions after it reads."""
    return patched_output(sys.modules[__name__], mixer, mixer_in, position, state, window)


def outputs_with_patches(
    mixer: nn.Module,
    mixer_in: torch.Tensor,
    states: torch.Tensor | None = None,
    windows: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`output_with_patch` at every position t, (B, T, T, H): ``[:, t]`` with the state
    after t replaced by ``states[..., t]`` (states (B, D, N, T)) and/or the conv window by
    ``windows[..., t]`` (windows (B, D, K-1, T)), the run's own scan computed once."""
    return patched_outputs(sys.modules[__name__], mixer, mixer_in, states, windows)


_TIMED = ("x", "z", "delta", "B", "C")  # the fields with a time axis (last), in both modules


def patched_output(
    ops: ModuleType,
    mixer: nn.Module,
    mixer_in: torch.Tensor,
    position: int,
    state: torch.Tensor | None = None,
    window: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`output_with_patch` for any SSM whose internals module ``ops`` (this one for
    Mamba-1, ``mamba2_internals`` for Mamba-2) has ``mixer_internals`` (with a ``window``),
    ``scan_states``, ``readout`` and ``mixer_output``.

    The run's own internals up to ``position``; after it, with a ``window``, the internals of
    the rest of ``mixer_in`` recomputed as a segment continuing from that window (the conv
    reads it where it would read positions <= ``position``). The states before ``position``
    are the run's own, ``state`` (or the run's own) is h_position, and the one scan restarts
    from it over the spliced internals; read out and gated as the mixer does."""
    with torch.no_grad():
        internals = ops.mixer_internals(mixer, mixer_in)
        own = ops.scan_states(internals)
        return _patched(ops, mixer, mixer_in, internals, own, position, state, window)


def patched_outputs(
    ops: ModuleType,
    mixer: nn.Module,
    mixer_in: torch.Tensor,
    states: torch.Tensor | None = None,
    windows: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`patched_output` at every position, (B, T, T, H): ``[:, t]`` is the output with
    the state after t replaced by ``states[..., t]`` and/or the window after t by
    ``windows[..., t]`` (states (..., T) as ``computed(..., "state")``, windows (B, C, K-1, T)
    as ``computed(..., "conv_window")``; None keeps the run's own), what patching each
    position in turn needs. The run's own internals and scan are computed once instead of
    once per position: the same numbers, about a third of the scan steps."""
    with torch.no_grad():
        internals = ops.mixer_internals(mixer, mixer_in)
        own = ops.scan_states(internals)
        outputs = [
            _patched(
                ops,
                mixer,
                mixer_in,
                internals,
                own,
                t,
                None if states is None else states[..., t],
                None if windows is None else windows[..., t],
            )
            for t in range(own.shape[-1])
        ]
        return torch.stack(outputs, dim=1)


def _patched(
    ops: ModuleType,
    mixer: nn.Module,
    mixer_in: torch.Tensor,
    internals,
    own: torch.Tensor,
    position: int,
    state: torch.Tensor | None,
    window: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`patched_output` from the run's own ``internals`` and states ``own``."""
    if not 0 <= position < own.shape[-1]:
        raise ValueError(f"position {position} outside 0..{own.shape[-1] - 1}")
    state = own[..., position] if state is None else state.float()
    if window is not None:
        after = ops.mixer_internals(mixer, mixer_in[:, position + 1 :], window)
        spliced = {
            f: torch.cat([getattr(internals, f)[..., : position + 1], getattr(after, f)], dim=-1)
            for f in _TIMED
        }
        internals = replace(internals, **spliced)
    states = torch.cat(
        [
            own[..., :position],
            state[..., None],
            ops.scan_states(internals, position + 1, state),
        ],
        dim=-1,
    )
    return ops.mixer_output(mixer, internals, ops.readout(internals, states))
