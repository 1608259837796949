"""Mamba-2's SSD scan and causal conv with a fast CPU path, and their hook into transformers.

Why: on CPU, transformers' ``Mamba2Mixer`` runs its reference chunked SSD, which pads every
sequence to ``config.chunk_size`` (256 by default, so a length-10 batch costs as much as a
length-256 one) and builds (batch, chunks, heads, chunk, chunk) decay masks; its depthwise conv
goes through oneDNN on a transposed channel-last view, whose backward (with the SiLU's, on
mismatched layouts) costs more than the rest of the layer. This module provides, exact up to
float32 rounding against transformers' torch code:

* ``ssd_scan``: the SSM of full sequences (training and prefill) in chunks chosen for CPU,
  independent of ``config.chunk_size``. Within a chunk the decay exp(cum_t - cum_s) of a head
  factors as exp(cum_t - r) exp(r - cum_s) around the chunk's half-way decay r, so the
  intra-chunk term is one matmul for all heads of a group, tril(C B^T) @ (X exp(r - cum)),
  instead of a (heads, chunk, chunk) mask per chunk. The factors stay within exp(+-_SPAN / 2)
  because chunks shrink where decays are strong; below ``_MIN_FACTORED`` steps the per-head
  masked form is used instead.
* ``ssd_states`` / ``ssd_reference``: the same recurrence step by step, returning every
  state (what ``vlab inspect`` reads and patches) / the output from them (the tests'
  reference).
* ``causal_conv1d``: the depthwise causal conv (+ SiLU) as shifted multiply-adds on
  channel-last memory, with a hand-written backward.
* ``install_into_transformers``: routes ``Mamba2Mixer``'s module-level functions to these for
  CPU tensors. Other devices (CUDA) get mamba-ssm / causal-conv1d kernels when they import,
  and otherwise these same torch functions: a quiet fallback, as Mamba-1 has, instead of
  transformers' reference code and its "much slower" warning.

Shapes follow transformers': x (batch, L, heads, head_dim), dt (batch, L, heads), A and D
(heads,), B and C (batch, L, groups, state), states (batch, heads, head_dim, state).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from vlab.models.ops.notices import warn_once

# Longest chunk the factored form uses: the intra-chunk matmuls grow with it, the number of
# chunk-to-chunk steps shrinks; 48-64 are equally fast for the tiny and small presets.
_MAX_CHUNK = 64
# Largest total log-decay a factored chunk may span: its factors lie in exp(+-_SPAN / 2), far
# from float32's exp(+-88) even after multiplying inputs and summing a chunk.
_SPAN = 80.0
# Below this chunk length the factored form loses to the masked one.
_MIN_FACTORED = 16
# Chunk length of the masked form (strong decays).
_MASKED_CHUNK = 32

_use_reference: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "vlab_ssd_reference", default=False
)
_use_hf_conv: contextvars.ContextVar[bool] = contextvars.ContextVar("vlab_hf_conv", default=False)


# --------------------------------------------------------------------------- SSD scan


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    max_chunk: int = _MAX_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba-2's SSM over full sequences: y_t = C_t h_t + D x_t, h_t = exp(dt_t A) h_{t-1} +
    dt_t x_t B_t^T, per head, with B and C shared by the heads of a group.

    x: (batch, L, heads, head_dim); dt: (batch, L, heads), already discretised (softplus,
    clamp); A, D: (heads,); B, C: (batch, L, groups, state); initial_state: (batch, heads,
    head_dim, state) or None (zeros). Returns y (batch, L, heads, head_dim) and the final state
    (batch, heads, head_dim, state), both float32 whatever the input dtypes, as transformers'.
    Differentiable in every tensor input.
    """
    batch, length, heads, head_dim = x.shape
    x, dt, B, C = x.float(), dt.float(), B.float(), C.float()
    log_decay = dt * A.to(torch.float32)
    chunk, factored = _pick_chunk(log_decay, length, max_chunk)
    n = max(1, math.ceil(length / chunk))
    chunk = max(1, math.ceil(length / n))  # same chunk count, least padding
    pad = n * chunk - length
    steps = _Chunks(
        x=_chunked(x, n, pad),
        dt=_chunked(dt, n, pad),
        cum=_chunked(log_decay, n, pad).cumsum(2),
        B=_chunked(B, n, pad).transpose(2, 3),
        C=_chunked(C, n, pad).transpose(2, 3),
    )
    scan = _scan_factored if factored else _scan_masked
    y, final = scan(steps, initial_state)
    y = y.reshape(batch, n * chunk, heads, head_dim)[:, :length]
    if D is not None:
        y = torch.addcmul(y, x, D[:, None])
    return y, final


class _Chunks(NamedTuple):
    """A sequence cut into n chunks of equal length (the last zero-padded).

    x: (batch, n, chunk, heads, head_dim); dt and cum, the cumulative log-decay within each
    chunk: (batch, n, chunk, heads); B, C: (batch, n, groups, chunk, state).
    """

    x: torch.Tensor
    dt: torch.Tensor
    cum: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor


def _pick_chunk(log_decay: torch.Tensor, length: int, max_chunk: int) -> tuple[int, bool]:
    """Chunk length, and whether the factored form is safe for these per-step log-decays.

    log_decay: (batch, L, heads), dt * A. The factored form needs every chunk's total decay
    within ``_SPAN`` (and no growth, dt A > 0, which Mamba-2's softplus dt and negative A never
    produce): chunks halve from ``max_chunk`` until they fit, down to ``_MIN_FACTORED`` steps
    (or the first length tried, if shorter), below which the masked form takes over. One host
    sync per length tried.
    """
    chunk = max(1, min(max_chunk, length))
    if log_decay.numel() == 0:
        return chunk, True
    log_decay = log_decay.detach()
    if not bool((log_decay <= 0).all()):
        return _MASKED_CHUNK, False
    shortest = min(_MIN_FACTORED, chunk)
    while chunk >= shortest:
        n = math.ceil(length / chunk)
        totals = _chunked(log_decay, n, n * math.ceil(length / n) - length).sum(2)
        if float(totals.min()) >= -_SPAN:
            return chunk, True
        chunk //= 2
    return _MASKED_CHUNK, False


def _chunked(t: torch.Tensor, n: int, pad: int) -> torch.Tensor:
    """(batch, L, ...) -> (batch, n, chunk, ...), zero-padding the end of the time axis.

    Padded steps have dt = 0: no input and no decay, so the final state is the true one.
    """
    if pad:
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
    return t.reshape(t.shape[0], n, -1, *t.shape[2:])


def _by_group(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(batch, n, chunk, heads, head_dim) -> (batch, n, groups, chunk, heads_per_group *
    head_dim): the heads sharing B and C become one matrix, so one matmul serves them."""
    batch, n, chunk, heads, head_dim = t.shape
    return t.reshape(batch, n, chunk, groups, heads // groups * head_dim).transpose(2, 3)


def _from_groups(t: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of ``_by_group``: (batch, n, groups, chunk, heads_per_group * head_dim) ->
    (batch, n, chunk, heads, head_dim)."""
    batch, n, groups, chunk, width = t.shape
    return t.transpose(2, 3).reshape(batch, n, chunk, heads, width * groups // heads)


def _scan_factored(
    steps: _Chunks, initial: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs (batch, n, chunk, heads, head_dim) and final state, decays factored.

    With r half a chunk's total log-decay, exp(cum_t - cum_s) = exp(cum_t - r) exp(r - cum_s),
    both factors within exp(+-_SPAN / 2). So for each chunk, with u_s = exp(r - cum_s) dt_s x_s,
        y_t = exp(cum_t - r) sum_{s<=t} (C_t . B_s) u_s + exp(cum_t) C_t h_start,
    one matmul over all heads of a group. Scalings are applied on the (chunk, heads, head_dim)
    side, never on states: for Mamba-2's shapes (state >= chunk) that side is the smaller.
    """
    heads, groups = steps.x.shape[3], steps.B.shape[2]
    r = steps.cum[:, :, -1:] * 0.5
    inputs = _by_group(steps.x * (steps.dt * (r - steps.cum).exp())[..., None], groups)
    added = _chunk_states(steps, groups)
    starts, final = _carry_states(added, steps.cum[:, :, -1].exp(), initial)
    scores = (steps.C @ steps.B.transpose(-1, -2)).tril()  # (batch, n, groups, chunk, chunk)
    y = _from_groups(scores @ inputs, heads) * (steps.cum - r).exp()[..., None]
    if starts is not None:
        y = torch.addcmul(y, _from_start(starts, steps.C), steps.cum.exp()[..., None])
    return y, final


def _chunk_states(steps: _Chunks, groups: int) -> torch.Tensor:
    """State each chunk adds by its end, from zero: sum_s exp(cum_end - cum_s) dt_s x_s B_s^T,
    (batch, n, heads, head_dim, state). The weights are at most 1: no range issue."""
    heads = steps.x.shape[3]
    to_end = steps.dt * (steps.cum[:, :, -1:] - steps.cum).exp()
    weighted = _by_group(steps.x * to_end[..., None], groups)
    return _from_group_states(weighted.transpose(-1, -2) @ steps.B, heads)


def _from_start(starts: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """C_t . h_start for every step of every chunk, before the decay since the chunk's start.

    starts: (batch, n, heads, head_dim, state); C: (batch, n, groups, chunk, state). Returns
    (batch, n, chunk, heads, head_dim).
    """
    heads, groups = starts.shape[2], C.shape[2]
    return _from_groups(C @ _group_states(starts, groups).transpose(-1, -2), heads)


def _scan_masked(steps: _Chunks, initial: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``_scan_factored`` for strong decays: a (heads, chunk, chunk) decay mask per chunk,
    its exponents summed segment by segment (no cancellation of large cumulative sums), as
    transformers' reference does."""
    batch, n, chunk, heads, head_dim = steps.x.shape
    groups = steps.B.shape[2]
    xdt = steps.x * steps.dt[..., None]
    log_decay = torch.diff(steps.cum, dim=2, prepend=torch.zeros_like(steps.cum[:, :, :1]))
    decay = _segment_sums(log_decay.transpose(2, 3)).exp()  # (batch, n, heads, chunk, chunk)
    scores = (steps.C @ steps.B.transpose(-1, -2))[:, :, :, None]
    weights = (decay.view(batch, n, groups, -1, chunk, chunk) * scores).flatten(2, 3)
    y = (weights @ xdt.transpose(2, 3)).transpose(2, 3)
    starts, final = _carry_states(_chunk_states(steps, groups), steps.cum[:, :, -1].exp(), initial)
    if starts is not None:
        y = torch.addcmul(y, _from_start(starts, steps.C), steps.cum.exp()[..., None])
    return y, final


def _group_states(states: torch.Tensor, groups: int) -> torch.Tensor:
    """(batch, n, heads, head_dim, state) -> (batch, n, groups, heads_per_group * head_dim,
    state), a view."""
    batch, n, heads, head_dim, state = states.shape
    return states.view(batch, n, groups, heads // groups * head_dim, state)


def _from_group_states(states: torch.Tensor, heads: int) -> torch.Tensor:
    """Inverse of ``_group_states``: (batch, n, groups, heads_per_group * head_dim, state) ->
    (batch, n, heads, head_dim, state)."""
    batch, n, groups, width, state = states.shape
    return states.reshape(batch, n, heads, width * groups // heads, state)


def _segment_sums(steps: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T): entry [t, s] = steps[s+1] + ... + steps[t] for s <= t, else
    -inf (exp gives the causal decay matrix). Each entry sums its own segment, so it is
    accurate even where the running cumulative sum is large."""
    length = steps.shape[-1]
    rows = steps[..., :, None].expand(*steps.shape, length)  # [..., j, s] = steps[j]
    ones = torch.ones(length, length, dtype=torch.bool, device=steps.device)
    sums = rows.masked_fill(~ones.tril(-1), 0.0).cumsum(-2)
    return sums.masked_fill(~ones.tril(), -math.inf)


def _carry_states(
    added: torch.Tensor, chunk_decay: torch.Tensor, initial: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """States at the start of every chunk, and the final state, from chunk to chunk.

    added: (batch, n, heads, head_dim, state), the state each chunk adds from zero;
    chunk_decay: (batch, n, heads), each chunk's exp(total log-decay); initial: (batch, heads,
    head_dim, state) or None. Returns (batch, n, heads, head_dim, state) start states, or None
    when they are all zero (one chunk, no initial state), and the final state (batch, heads,
    head_dim, state).
    """
    state = None if initial is None else initial.to(torch.float32)
    starts = []
    for chunk_added, decay in zip(added.unbind(1), chunk_decay.unbind(1), strict=True):
        starts.append(state)
        state = (
            chunk_added
            if state is None
            else torch.addcmul(chunk_added, state, decay[..., None, None])
        )
    if starts[0] is None and len(starts) == 1:
        return None, state
    if starts[0] is None:
        starts[0] = torch.zeros_like(added[:, 0])
    return torch.stack(starts, 1), state


def ssd_states(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every state of Mamba-2's recurrence, step by step: h_t = exp(dt_t A) h_{t-1} + dt_t
    x_t B_t^T per head (B shared by the heads of a group), the plain form of what
    :func:`ssd_scan` computes in chunks.

    x: (batch, L, heads, head_dim); dt: (batch, L, heads), already discretised; A: (heads,);
    B: (batch, L, groups, state); initial_state: (batch, heads, head_dim, state) or None
    (zeros). Returns the state after each step t stacked on a last axis, (batch, heads,
    head_dim, state, L), float32 (float64 for float64 x). For looking inside a model
    (``vlab inspect`` reads and patches these states) and as the reference the chunked scan
    is tested against; memory is the whole history, so analysis-sized inputs only.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    batch, length, heads, head_dim = x.shape
    x, dt, A = x.to(dtype), dt.to(dtype), A.to(dtype)
    B = B.to(dtype).repeat_interleave(heads // B.shape[2], dim=2)  # (batch, L, heads, state)
    if initial_state is None:
        h = x.new_zeros(batch, heads, head_dim, B.shape[3])
    else:
        h = initial_state.to(dtype)
    states = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[..., None, None]  # (batch, heads, 1, 1)
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        states.append(h)
    if not states:  # L == 0: nothing after the initial state
        return h.new_zeros(*h.shape, 0)
    return torch.stack(states, dim=-1)


def ssd_reference(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ssd_scan`'s contract computed from :func:`ssd_states`: y (batch, L, heads,
    head_dim) with y_t = h_t C_t + D x_t, and the final state (batch, heads, head_dim,
    state). Slow and obviously correct: for tests."""
    heads = x.shape[2]
    states = ssd_states(x, dt, A, B, initial_state)
    C = C.to(states.dtype).repeat_interleave(heads // C.shape[2], dim=2)  # (batch, L, heads, N)
    y = torch.einsum("bhpnt,bthn->bthp", states, C)
    if D is not None:
        y = y + x.to(y.dtype) * D.to(y.dtype)[:, None]
    if x.shape[1]:
        final = states[..., -1]
    elif initial_state is None:  # no steps: the state is where it started
        final = states.new_zeros(states.shape[:-1])
    else:
        final = initial_state.to(states.dtype)
    return y, final


def chunk_scan(
    hidden_states: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """transformers' ``mamba2_chunk_scan`` contract (its torch path) on ``ssd_scan``.

    dt (batch, L, heads) is raw: dt_bias, softplus and the ``dt_limit`` clamp are applied here
    in dt's dtype, as transformers does. Returns y (batch, L, heads, head_dim) float32, plus
    the final state when ``return_final_states``.
    """
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    if dt_softplus:
        dt = F.softplus(dt)
    dt = torch.clamp(dt, min=dt_limit[0], max=dt_limit[1])
    y, final = ssd_scan(hidden_states, dt, A, B, C, D, initial_states)
    return (y, final) if return_final_states else y


# --------------------------------------------------------------------------- causal conv


class _CausalConv(torch.autograd.Function):
    """Depthwise causal conv1d, optionally followed by SiLU, on channel-last tensors.

    x: (batch, L, channels) of any strides; weight: (channels, kernel); bias: (channels,) or
    None. out_t = bias + sum_k weight[:, k] x_{t - kernel + 1 + k}. x is first copied into a
    contiguous, left-zero-padded (batch, L + kernel - 1, channels) buffer (transformers hands
    over a slice of the projection, rows strided: reading it directly in every pass is
    slower), and every pass, forward and backward, then runs over channel-last memory, where
    oneDNN's conv mixes layouts (transposed views) and is slower.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, silu):
        kernel, length = weight.shape[1], x.shape[1]
        padded = F.pad(x, (0, 0, kernel - 1, 0))
        if bias is None:
            pre = padded[:, :length] * weight[:, 0]
        else:
            pre = torch.addcmul(bias, padded[:, :length], weight[:, 0])
        for k in range(1, kernel):
            pre.addcmul_(padded[:, k : k + length], weight[:, k])
        ctx.save_for_backward(padded, weight, pre)
        ctx.silu, ctx.has_bias = silu, bias is not None
        return F.silu(pre) if silu else pre

    @staticmethod
    def backward(ctx, grad):
        padded, weight, pre = ctx.saved_tensors
        kernel, length = weight.shape[1], pre.shape[1]
        if ctx.silu:
            grad = torch.ops.aten.silu_backward(grad, pre)
        grad = grad.contiguous()
        dx = dw = dbias = None
        if ctx.needs_input_grad[0]:
            dx = grad * weight[:, kernel - 1]
            for shift in range(1, min(kernel, length)):
                dx[:, : length - shift].addcmul_(grad[:, shift:], weight[:, kernel - 1 - shift])
        if ctx.needs_input_grad[1]:
            dw = _tap_gradients(grad, padded, kernel)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = grad.sum((0, 1))
        return dx, dw, dbias, None


def _tap_gradients(grad: torch.Tensor, padded: torch.Tensor, kernel: int) -> torch.Tensor:
    """d(loss)/d(weight), (channels, kernel): tap k sums grad_t x_{t - kernel + 1 + k} over
    batch and time. grad: (batch, L, channels); padded: (batch, L + kernel - 1, channels),
    x after kernel - 1 zero steps. The products go through one reused buffer: a fresh
    (batch, L, channels) allocation per tap can cost more than the multiply itself."""
    length = grad.shape[1]
    product = torch.empty_like(grad)
    taps = []
    for k in range(kernel):
        torch.mul(grad, padded[:, k : k + length], out=product)
        taps.append(product.sum((0, 1)))
    return torch.stack(taps, 1)


def causal_conv1d(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """transformers' ``causal_conv1d_fn`` contract (its torch path), computed channel-last.

    hidden_states: (batch, channels, L), typically a transposed view of channel-last memory;
    weight: (channels, kernel); activation None or "silu" / "swish". Returns (batch, channels,
    L) in hidden_states' dtype, a transposed view of channel-last memory.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"vlab's causal conv supports SiLU or no activation, not {activation!r}")
    x = hidden_states.transpose(1, 2).to(weight.dtype)
    out = _CausalConv.apply(x, weight, bias, activation is not None)
    return out.to(hidden_states.dtype).transpose(1, 2)


# --------------------------------------------------------------------------- transformers


@contextlib.contextmanager
def use_hf_conv() -> Iterator[None]:
    """Runs transformers' own causal conv (a grouped ``conv1d``) inside this context, where
    vlab's is installed: what Mamba-1 ran before vlab served its conv too (``vlab bench``'s
    "before")."""
    token = _use_hf_conv.set(True)
    try:
        yield
    finally:
        _use_hf_conv.reset(token)


@contextlib.contextmanager
def use_hf_reference() -> Iterator[None]:
    """Runs transformers' own Mamba-2 functions inside this context, even where vlab's are
    installed: the reference that tests and benchmarks compare against."""
    token = _use_reference.set(True)
    try:
        yield
    finally:
        _use_reference.reset(token)


def kernel_package_imports(package: str) -> bool:
    """Whether ``package`` (``mamba_ssm`` or ``causal_conv1d``) imports, as transformers'
    dispatcher decides it, once per process: with it, non-CPU tensors go to its kernels."""
    if package not in _KERNEL_PACKAGES:
        try:
            importlib.import_module(package)
            _KERNEL_PACKAGES[package] = True
        except Exception:
            _KERNEL_PACKAGES[package] = False
    return _KERNEL_PACKAGES[package]


_KERNEL_PACKAGES: dict[str, bool] = {}


def _vlab_runs(*tensors: torch.Tensor | None, package: str = "mamba_ssm") -> bool:
    """Whether vlab's path serves this call (never under ``use_hf_reference``).

    CPU tensors always. Tensors elsewhere (CUDA) only when ``package``'s kernels do not
    import: transformers would then run its own torch code with a "much slower" warning, and
    vlab's torch path is the quiet fallback Mamba-1 has too. With the kernels, they serve.
    """
    if _use_reference.get():
        return False
    devices = {t.device.type for t in tensors if t is not None}
    return devices <= {"cpu"} or not kernel_package_imports(package)


def _packed(kwargs: dict) -> bool:
    """Packed sequences (seq_idx / cu_seqlens) need mamba-ssm; transformers explains that."""
    return kwargs.get("seq_idx") is not None or kwargs.get("cu_seqlens") is not None


def _torch_function(original: Callable[..., Any]) -> Callable[..., Any]:
    """transformers' torch function under its kernel dispatcher (``functools.wraps`` keeps it
    as ``__wrapped__``), called, as the dispatcher does, with only the keyword arguments it
    declares: what CPU tensors must run, without the "falling back" warning."""
    fn = getattr(original, "__wrapped__", original)
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn

    def declared_only(*args, **kwargs):
        return fn(*args, **{k: v for k, v in kwargs.items() if k in params})

    return declared_only


def _hook_chunk_scan(original: Callable[..., Any]) -> Callable[..., Any]:
    """``mamba2_chunk_scan`` that runs ``chunk_scan`` on CPU, transformers' elsewhere."""

    def mamba2_chunk_scan(hidden_states, dt, A, B, C, chunk_size=None, D=None, **kwargs):
        if _vlab_runs(hidden_states) and not _packed(kwargs) and kwargs.get("z") is None:
            names = ("dt_bias", "initial_states", "dt_softplus", "dt_limit", "return_final_states")
            picked = {k: kwargs[k] for k in names if k in kwargs}
            return chunk_scan(hidden_states, dt, A, B, C, D=D, **picked)
        return mamba2_chunk_scan.vlab_original(
            hidden_states, dt, A, B, C, chunk_size=chunk_size, D=D, **kwargs
        )

    mamba2_chunk_scan.vlab_original = original
    return mamba2_chunk_scan


def _hook_conv(original: Callable[..., Any]) -> Callable[..., Any]:
    """``causal_conv1d_fn`` that runs ``causal_conv1d`` on CPU (transformers' torch function
    for activations other than SiLU), transformers' dispatcher elsewhere."""
    torch_fn = _torch_function(original)

    def causal_conv1d_fn(hidden_states, weight, bias=None, activation=None, **kwargs):
        if (
            _vlab_runs(hidden_states, package="causal_conv1d")
            and not _packed(kwargs)
            and not _use_hf_conv.get()
        ):
            if activation in (None, "silu", "swish"):
                return causal_conv1d(hidden_states, weight, bias, activation)
            return torch_fn(hidden_states, weight, bias, activation)
        return causal_conv1d_fn.vlab_original(hidden_states, weight, bias, activation, **kwargs)

    causal_conv1d_fn.vlab_original = original
    return causal_conv1d_fn


def _hook_torch_step(package: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One-token decoding functions (conv and state update): their torch form is a few small
    ops per token, as fast as a kernel on CPU, so the calls vlab serves run it without the
    warning; ``package`` is the one whose kernel transformers would call instead."""

    def hook(original: Callable[..., Any]) -> Callable[..., Any]:
        torch_fn = _torch_function(original)

        def step(*args, **kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            if _vlab_runs(*tensors, package=package):
                return torch_fn(*args, **kwargs)
            return step.vlab_original(*args, **kwargs)

        step.__name__ = step.__qualname__ = original.__name__
        step.vlab_original = original
        return step

    return hook


def _hook_fused(original: Callable[..., Any]) -> Callable[..., Any]:
    """``mamba2_split_conv1d_scan_combined`` that answers None on CPU: the mixer then takes
    its unfused path, which calls the hooked conv and scan. (mamba-ssm's fused kernel cannot
    take CPU tensors; transformers' stub for it only warns and returns None.)"""

    def mamba2_split_conv1d_scan_combined(zxbcdt, *args, **kwargs):
        if _vlab_runs(zxbcdt):
            return None
        return mamba2_split_conv1d_scan_combined.vlab_original(zxbcdt, *args, **kwargs)

    mamba2_split_conv1d_scan_combined.vlab_original = original
    return mamba2_split_conv1d_scan_combined


def conv_hooks() -> dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """The hooks of transformers' two causal-conv functions, which Mamba-1's and Mamba-2's
    modeling modules both declare with the same contract (``ops.selective_scan`` installs
    them under Mamba-1)."""
    return {name: _HOOKS[name] for name in ("causal_conv1d_fn", "causal_conv1d_update")}


_HOOKS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "mamba2_chunk_scan": _hook_chunk_scan,
    "causal_conv1d_fn": _hook_conv,
    "causal_conv1d_update": _hook_torch_step("causal_conv1d"),
    "mamba2_selective_state_update": _hook_torch_step("mamba_ssm"),
    "mamba2_split_conv1d_scan_combined": _hook_fused,
}


def install_into_transformers() -> bool:
    """Makes every HF ``Mamba2Mixer`` run vlab's SSD scan and causal conv where no kernel does.

    Idempotent. Replaces the module globals of ``modeling_mamba2`` that ``Mamba2Mixer.forward``
    looks up at call time, so models built before or after the call, and loaded checkpoints,
    are all covered. Non-CPU tensors go to transformers' functions unchanged where mamba-ssm /
    causal-conv1d import (their kernels), to vlab's otherwise. Returns False (with one
    warning) when the installed transformers lacks these functions; Mamba-2 then runs
    transformers' own path.
    """
    try:
        modeling = importlib.import_module("transformers.models.mamba2.modeling_mamba2")
    except ImportError as exc:
        warn_once("ssd-hf", f"vlab: transformers Mamba-2 not importable ({exc}); SSD not installed")
        return False
    missing = [name for name in _HOOKS if not callable(getattr(modeling, name, None))]
    if missing:
        warn_once(
            "ssd-hf",
            f"vlab: this transformers version has no module-level {', '.join(missing)}; "
            "Mamba-2 will use Hugging Face's slow CPU path.",
        )
        return False
    for name, hook in _HOOKS.items():
        current = getattr(modeling, name)
        if not hasattr(current, "vlab_original"):
            setattr(modeling, name, hook(current))
    return True
