"""Selective scan (Mamba's S6 recurrence) with a fast CPU path, and its hook into transformers.

Why: Hugging Face's ``MambaMixer`` on CPU runs a Python loop over time that materialises
(batch, dim, L, dstate) tensors; training is ~100x slower than a GPT-NeoX of the same size.
This module provides ``selective_scan`` with the semantics of mamba-ssm's ``selective_scan_fn``
and four backends:

* ``"mamba_ssm"``: mamba-ssm's CUDA kernel, for CUDA tensors when it imports.
* ``"cpp"``: a fused C++ kernel (``csrc/selective_scan.cpp``), JIT-built on first use.
* ``"torch"``: a pure-PyTorch chunked scan with its own backward; used on CUDA without
  mamba-ssm and on CPU when the C++ build fails (no compiler).
* ``"reference"``: the plain recurrence, obviously correct and slow (tests, benchmarks).

``selective_scan_states`` runs the reference's own steps and returns every state: what
``vlab inspect`` reads and patches (``vlab.models.backbones.mamba_internals``).

Shapes: u, delta, z: (batch, dim, L); A: (dim, dstate); B, C: (batch, dstate, L);
D, delta_bias: (dim,); the last state is (batch, dim, dstate). The maths, per (batch, dim):
``delta = softplus(delta + delta_bias)``, ``x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t``,
``y_t = <x_t, C_t> + D u_t``, ``out = y * silu(z)``.

Neither fast path stores the (batch, dim, L, dstate) state history: the forward keeps the
state every ``chunk`` (32) steps, and the backward recomputes one chunk at a time from its
checkpoint. The C++ kernel then runs the adjoint recurrence backwards through an L1-sized
buffer; the torch path re-runs the chunk under autograd and backpropagates through it.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vlab.errors import VlabError
from vlab.models.ops.notices import warn_once

BACKENDS = ("mamba_ssm", "cpp", "torch", "reference")
_EXTENSION_NAME = "vlab_selective_scan"
_SOURCE = Path(__file__).resolve().parent / "csrc" / "selective_scan.cpp"

_forced_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "vlab_scan_backend", default=None
)
_load_lock = threading.Lock()
_cpp_state: dict[str, Any] = {}
_mamba_state: dict[str, Any] = {}

ScanResult = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------- reference


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> ScanResult:
    """Plain step-by-step recurrence, differentiable by autograd; for tests and benchmarks.

    Computes in float64 when given float64 inputs (tests compare fp32 kernels to it), else
    float32. Returns out (batch, dim, L) in u's dtype, and the last state (batch, dim, dstate)
    in the compute dtype when ``return_last_state``.
    """
    dtype = _reference_dtype(u)
    uc, C = u.to(dtype), C.to(dtype)
    x = uc.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t, x in enumerate(_reference_steps(u, delta, A, B, delta_bias, delta_softplus, None)):
        ys.append((x * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else uc.new_zeros(uc.shape)
    return _finish(y, uc, D, z, u.dtype, x if return_last_state else None)


def selective_scan_states(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every state of the reference recurrence: x_t (batch, dim, dstate, L), the state after
    step t stacked on a last axis, from ``initial_state`` x_{-1} (batch, dim, dstate; zeros
    when None).

    For looking inside a model (``vlab inspect`` reads and patches these states); the same
    steps as :func:`selective_scan_reference`, so the states are those its outputs read
    (y_t = <x_t, C_t> + D u_t). Memory is the whole (batch, dim, dstate, L) history: meant
    for analysis-sized inputs. Computed in float64 for float64 inputs, else float32.
    """
    steps = _reference_steps(u, delta, A, B, delta_bias, delta_softplus, initial_state)
    states = list(steps)
    if not states:  # L == 0: nothing after the initial state
        dtype = _reference_dtype(u)
        return u.new_zeros(u.shape[0], u.shape[1], A.shape[1], 0, dtype=dtype)
    return torch.stack(states, dim=-1)


def _reference_dtype(u: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs (tests compare fp32 kernels to it), else float32."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _reference_steps(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    initial_state: torch.Tensor | None,
) -> Iterator[torch.Tensor]:
    """The recurrence x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t, one state (batch, dim,
    dstate) per step t = 0..L-1, from ``initial_state`` (zeros when None): the one loop the
    reference scan and :func:`selective_scan_states` share."""
    dtype = _reference_dtype(u)
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A, B, uc = A.to(dtype), B.to(dtype), u.to(dtype)
    if initial_state is None:
        x = uc.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    else:
        x = initial_state.to(dtype)
    for t in range(u.shape[2]):
        decay = torch.exp(dt[:, :, t, None] * A)
        x = decay * x + (dt[:, :, t] * uc[:, :, t])[:, :, None] * B[:, None, :, t]
        yield x


def _finish(
    y: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    out_dtype: torch.dtype,
    last: torch.Tensor | None,
) -> ScanResult:
    """Adds the D skip, applies the silu(z) gate and packs the optional last state."""
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    out = y.to(out_dtype)
    return (out, last) if last is not None else out


# --------------------------------------------------------------------------- shared helpers


def _as_f32(t: torch.Tensor | None) -> torch.Tensor | None:
    """Contiguous float32 detached tensor (no copy when already so); None passes through."""
    return None if t is None else t.detach().to(torch.float32).contiguous()


def _as_f32_all(tensors: tuple) -> tuple:
    """Detached float32 versions of the scan inputs, keeping their memory layout."""
    return tuple(None if t is None else t.detach().to(torch.float32) for t in tensors)


def _time_major(t: torch.Tensor) -> torch.Tensor:
    """(batch, dstate, L) -> contiguous float32 (batch, L, dstate): one vector per step."""
    return t.detach().to(torch.float32).transpose(1, 2).contiguous()


def _dtypes(*tensors: torch.Tensor | None) -> tuple[torch.dtype | None, ...]:
    """Input dtypes to cast gradients back to (None marks an absent optional input)."""
    return tuple(None if t is None else t.dtype for t in tensors)


def _grads_as(
    grads: tuple[torch.Tensor | None, ...], dtypes: tuple[torch.dtype | None, ...]
) -> tuple[torch.Tensor | None, ...]:
    """Casts float32 gradients to their inputs' dtypes; None for absent inputs."""
    return tuple(
        None if g is None or dt is None else g.to(dt) for g, dt in zip(grads, dtypes, strict=True)
    )


# --------------------------------------------------------------------------- torch core


class _TorchCore:
    """The recurrence in plain PyTorch ops, looping over time on (batch, dim, dstate) slices.

    Used where the C++ kernel is unavailable: CUDA without mamba-ssm, CPU without a compiler.
    The forward runs without autograd and keeps the state before every ``chunk`` steps; the
    backward re-runs one chunk at a time under autograd and backpropagates through it, so at
    most one chunk of (batch, dim, chunk, dstate) activations lives at once and the gradient
    maths is autograd's own.
    """

    chunk = 32

    @classmethod
    def forward(cls, inputs: tuple, softplus: bool, save: bool):
        """(out, last state, tensors for ``backward``) from float32 API-layout inputs."""
        u, delta, A, B, C, D, z, delta_bias = (_as_f32(t) for t in inputs)
        saved = (u, delta, A, _time_major(B), _time_major(C), D, z, delta_bias)
        x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
        outs, checkpoints = [], []
        for t0 in range(0, u.shape[2], cls.chunk):
            checkpoints.append(x)
            out, x = cls._chunk(x, saved, slice(t0, t0 + cls.chunk), softplus)
            outs.append(out)
        out = torch.cat(outs, dim=2) if outs else torch.zeros_like(u)
        kept = torch.stack(checkpoints) if save and checkpoints else u.new_zeros(0)
        return out, x, (*saved, kept)

    @staticmethod
    def _chunk(x0, saved: tuple, sl: slice, softplus: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Output (batch, dim, k) and last state of steps ``sl`` starting from state x0.

        u, delta, z: (batch, dim, L); Bt, Ct: (batch, L, dstate); differentiable in all. Works
        step by step on (batch, dim, dstate) tensors: stacking a chunk of them costs more
        (large fresh CPU allocations) than the per-step kernel launches.
        """
        u, delta, A, Bt, Ct, D, z, delta_bias = saved
        u_c = u[:, :, sl]
        dt = delta[:, :, sl] if delta_bias is None else delta[:, :, sl] + delta_bias[:, None]
        dt = F.softplus(dt) if softplus else dt
        x, ys = x0, []
        steps = zip(
            dt.unbind(2),
            (dt * u_c).unbind(2),
            Bt[:, sl].unbind(1),
            Ct[:, sl].unbind(1),
            strict=True,
        )
        for dt_t, du_t, b_t, c_t in steps:
            decay = torch.exp(dt_t[:, :, None] * A)
            x = torch.addcmul(du_t[:, :, None] * b_t[:, None, :], decay, x)
            ys.append(torch.bmm(x, c_t[:, :, None])[:, :, 0])
        y = torch.stack(ys, dim=2)
        if D is not None:
            y = y + u_c * D[:, None]
        return (y if z is None else y * F.silu(z[:, :, sl])), x

    @classmethod
    def backward(cls, saved: tuple, softplus: bool, dout, dlast) -> tuple:
        """Gradients of the eight inputs in API layout (None for absent ones)."""
        *inputs, checkpoints = saved
        u = inputs[0]
        grads = [None if t is None else torch.zeros_like(t) for t in inputs]
        carry = dlast if dlast is not None else torch.zeros_like(checkpoints[0])
        for index in reversed(range(len(checkpoints) if u.shape[2] else 0)):
            sl = slice(index * cls.chunk, (index + 1) * cls.chunk)
            carry = cls._chunk_backward(
                inputs, grads, checkpoints[index], sl, softplus, dout[:, :, sl], carry
            )
        du, ddelta, dA, dBt, dCt, dD, dz, dbias = grads
        return du, ddelta, dA, dBt.transpose(1, 2), dCt.transpose(1, 2), dD, dz, dbias

    @classmethod
    def _chunk_backward(cls, inputs, grads, x0, sl, softplus, dout, carry) -> torch.Tensor:
        """Backpropagates one re-run chunk; adds into ``grads``, returns d(loss)/d(x0)."""
        with torch.enable_grad():
            x0 = x0.detach().requires_grad_()
            leaves = [None if t is None else t.detach().requires_grad_() for t in inputs]
            out, x_last = cls._chunk(x0, tuple(leaves), sl, softplus)
            wanted = [x0, *(t for t in leaves if t is not None)]
            found = torch.autograd.grad([out, x_last], wanted, [dout, carry], allow_unused=True)
        totals = (g for g in grads if g is not None)
        for grad, total in zip(found[1:], totals, strict=True):
            if grad is not None:
                total += grad
        return found[0]


# --------------------------------------------------------------------------- C++ core


def _extension_dir() -> Path:
    """Build folder: $VLAB_CACHE/torch_extensions/<torch> or ~/.cache/vlab/torch_extensions/<torch>.

    Keyed by torch version because the binary links against libtorch's C++ ABI.
    """
    root = os.environ.get("VLAB_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "vlab"
    return base / "torch_extensions" / torch.__version__.replace("+", "_")


def _build_extension() -> None:
    """JIT-compiles and loads the C++ ops (cpp_extension's file lock guards parallel builds)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA" noise
    from torch.utils import cpp_extension

    # ninja may come from this environment's bin/ (the PyPI wheel) without it being on PATH
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    build_dir = _extension_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name=_EXTENSION_NAME,
        sources=[str(_SOURCE)],
        extra_cflags=["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir),
        with_cuda=False,
        is_python_module=False,
        verbose=False,
    )


def _cpp_ops() -> Any | None:
    """The loaded ``torch.ops.vlab_selective_scan`` namespace, or None if it cannot be built.

    Built once per process on first use; a failure warns once and is remembered, so callers
    fall back to the PyTorch path instead of retrying a slow failing build every step.
    """
    if "ops" in _cpp_state:
        return _cpp_state["ops"]
    with _load_lock:
        if "ops" not in _cpp_state:
            try:
                _build_extension()
                _cpp_state["ops"] = torch.ops.vlab_selective_scan
            except Exception as exc:  # any build or load failure means "fall back"
                _cpp_state["ops"] = None
                _cpp_state["error"] = _summarise_build_error(exc)
                warn_once(
                    "cpp",
                    f"vlab: could not build the C++ selective scan ({_cpp_state['error']}); "
                    "using the slower PyTorch scan on CPU.",
                )
    return _cpp_state["ops"]


def _summarise_build_error(exc: Exception) -> str:
    """The informative lines of a build failure (compiler errors, "not found"), not the
    multi-kilobyte compiler command lines that cpp_extension includes."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line.lower()]
    short = [line for line in lines if len(line) < 300 and "-isystem" not in line]
    picked = errors[:2] or short[-3:] or lines[:1]
    return f"{type(exc).__name__}: " + " | ".join(line[:300] for line in picked)


class _CppCore:
    """The fused C++ kernel (csrc/selective_scan.cpp).

    Reads u, delta, z and the output gradient in whatever layout they come (HF passes
    transposed views of channel-last memory) and returns each input gradient in its input's
    layout: a mismatch would make the consumers' elementwise kernels several times slower.
    """

    chunk = 32

    @classmethod
    def forward(cls, inputs: tuple, softplus: bool, save: bool):
        """(out, last state, tensors for ``backward``) from float32 API-layout inputs."""
        u, delta, A, B, C, D, z, delta_bias = inputs
        saved = (
            u,
            delta,
            A.contiguous(),
            _time_major(B),
            _time_major(C),
            _contiguous(D),
            z,
            _contiguous(delta_bias),
        )
        out, last, checkpoints = _cpp_ops().fwd(*saved, softplus, cls.chunk, save)
        return out, last, (*saved, checkpoints)

    @classmethod
    def backward(cls, saved: tuple, softplus: bool, dout, dlast) -> tuple:
        """Gradients of the eight inputs in API layout (None for absent ones)."""
        *inputs, checkpoints = saved
        dlast = dlast.contiguous() if dlast is not None else None
        grads = _cpp_ops().bwd(*inputs, softplus, cls.chunk, checkpoints, dout, dlast)
        du, ddelta, dA, dB, dC, dD, dz, dbias = grads
        return du, ddelta, dA, dB, dC, _none_if_empty(dD), _none_if_empty(dz), _none_if_empty(dbias)


def _contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    """The kernel wants per-channel vectors (A, D, delta_bias) contiguous; None passes."""
    return None if t is None else t.contiguous()


def _none_if_empty(t: torch.Tensor) -> torch.Tensor | None:
    """The kernel returns an empty tensor for the gradient of an absent optional input."""
    return t if t.numel() else None


# --------------------------------------------------------------------------- autograd


class _FastScan(torch.autograd.Function):
    """Selective scan on a core (C++ or torch) whose backward recomputes the states.

    Saves float32 inputs and one state per core chunk, never the (batch, dim, L, dstate)
    history. Returns out (batch, dim, L) and the last state (batch, dim, dstate), which also
    accepts a gradient.
    """

    @staticmethod
    def forward(ctx, core, softplus, u, delta, A, B, C, D, z, delta_bias):
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        out, last, saved = core.forward(_as_f32_all(inputs), softplus, True)
        ctx.core, ctx.softplus = core, softplus
        ctx.dtypes = _dtypes(*inputs)
        ctx.save_for_backward(*saved)
        return out.to(u.dtype), last

    @staticmethod
    def backward(ctx, dout, dlast):
        dout = dout.to(torch.float32)
        dlast = dlast.to(torch.float32) if dlast is not None else None
        grads = ctx.core.backward(ctx.saved_tensors, ctx.softplus, dout, dlast)
        return (None, None, *_grads_as(grads, ctx.dtypes))


def _fast_scan(core, args: tuple, softplus: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs a core, through autograd only when some input needs a gradient."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
        return _FastScan.apply(core, softplus, *args)
    out, last, _ = core.forward(_as_f32_all(args), softplus, False)
    return out.to(args[0].dtype), last


# --------------------------------------------------------------------------- mamba-ssm


def _mamba_ssm_fn() -> Callable[..., Any] | None:
    """mamba-ssm's ``selective_scan_fn``, imported lazily; None (with one warning) if broken.

    A wheel whose CUDA extension does not match the local torch / driver raises ImportError,
    OSError or worse at import; any of these means "not available" rather than a crash.
    """
    if "fn" not in _mamba_state:
        with _load_lock:
            if "fn" not in _mamba_state:
                _mamba_state["fn"] = _import_mamba_ssm()
    return _mamba_state["fn"]


def _import_mamba_ssm() -> Callable[..., Any] | None:
    """Imports mamba-ssm's kernel, warning once when it is installed but fails to import."""
    if importlib.util.find_spec("mamba_ssm") is None:
        return None
    try:
        module = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        return module.selective_scan_fn
    except Exception as exc:  # a broken optional install must not crash vlab
        warn_once(
            "mamba_ssm",
            f"vlab: mamba_ssm is installed but failed to import ({type(exc).__name__}: "
            f"{exc}); using the PyTorch selective scan on CUDA instead.",
        )
        return None


# --------------------------------------------------------------------------- dispatch


def scan_backend(device: torch.device | str) -> str:
    """Names the backend ``selective_scan`` will use for tensors on ``device``.

    May build the C++ extension (CPU) or import mamba-ssm (CUDA) to find out.
    """
    forced = _forced_backend.get()
    if forced is not None:
        return forced
    device = torch.device(device)
    if device.type == "cuda":
        return "mamba_ssm" if _mamba_ssm_fn() is not None else "torch"
    if device.type == "cpu" and _cpp_ops() is not None:
        return "cpp"
    return "torch"


@contextlib.contextmanager
def use_scan_backend(name: str) -> Iterator[None]:
    """Forces ``selective_scan`` (and the transformers hook) onto one backend in this context.

    ``"reference"`` is what tests and benchmarks compare against; inside the transformers
    hook it runs Hugging Face's own loop.
    """
    if name not in BACKENDS:
        raise VlabError(f"unknown scan backend {name!r}; choose one of {', '.join(BACKENDS)}")
    token = _forced_backend.set(name)
    try:
        yield
    finally:
        _forced_backend.reset(token)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> ScanResult:
    """mamba-ssm's ``selective_scan_fn`` contract on the fastest available backend.

    u, delta, z: (batch, dim, L); A: (dim, dstate); B, C: (batch, dstate, L); D, delta_bias:
    (dim,). Returns out (batch, dim, L) in u's dtype, plus the float32 last state
    (batch, dim, dstate) when ``return_last_state``. Gradients flow to every tensor input.
    """
    args = (u, delta, A, B, C, D, z, delta_bias)
    backend = scan_backend(u.device)
    if backend == "reference":
        return selective_scan_reference(*args, delta_softplus, return_last_state)
    if backend == "mamba_ssm":
        fn = _mamba_ssm_fn()
        if fn is None:
            raise VlabError("scan backend 'mamba_ssm' was forced but mamba_ssm does not import")
        return fn(*args, delta_softplus=delta_softplus, return_last_state=return_last_state)
    if backend == "cpp":
        _check_cpp_usable(u)
    core = _CppCore if backend == "cpp" else _TorchCore
    out, last = _fast_scan(core, args, delta_softplus)
    return (out, last) if return_last_state else out


def _check_cpp_usable(u: torch.Tensor) -> None:
    """Explains why a forced "cpp" backend cannot run instead of failing inside the kernel."""
    if u.device.type != "cpu":
        raise VlabError("scan backend 'cpp' runs on CPU tensors only")
    if _cpp_ops() is None:
        raise VlabError(f"scan backend 'cpp' is unavailable: {_cpp_state.get('error')}")


# --------------------------------------------------------------------------- transformers


def _hf_resolved_kernel(hf_scan: Callable[..., Any]) -> bool:
    """True when transformers bound ``mamba_selective_scan`` to an external kernel (mamba-ssm)."""
    try:
        nonlocals = inspect.getclosurevars(hf_scan).nonlocals
    except TypeError:
        return False
    return bool(nonlocals.get("is_new_implementation", False))


def _make_hf_adapter(hf_scan: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps transformers' ``mamba_selective_scan`` so the full-sequence path uses ours.

    HF passes A = -exp(A_log) in float32, D in float32 and expects the last state in the
    hidden states' dtype when a cache is used. CUDA calls stay with HF when it already resolved
    mamba-ssm's kernel; a forced "reference" backend runs HF's own loop.
    """
    hf_has_kernel = _hf_resolved_kernel(hf_scan)

    def mamba_selective_scan(
        hidden_states,
        dt,
        A,
        B,
        C,
        D=None,
        z=None,
        delta_bias=None,
        delta_softplus=False,
        return_last_state=False,
        **kwargs,
    ):
        device = hidden_states.device
        hf_args = (hidden_states, dt, A, B, C)
        hf_kwargs = dict(
            D=D,
            z=z,
            delta_bias=delta_bias,
            delta_softplus=delta_softplus,
            return_last_state=return_last_state,
            **kwargs,
        )
        if scan_backend(device) == "reference" or (device.type == "cuda" and hf_has_kernel):
            return hf_scan(*hf_args, **hf_kwargs)
        result = selective_scan(
            hidden_states,
            dt,
            A,
            B,
            C,
            D=D,
            z=z,
            delta_bias=delta_bias,
            delta_softplus=delta_softplus,
            return_last_state=return_last_state,
        )
        if return_last_state:
            out, last = result
            return out, last.to(hidden_states.dtype)
        return result

    mamba_selective_scan.vlab_original = hf_scan
    return mamba_selective_scan


def install_into_transformers() -> bool:
    """Makes every HF ``MambaMixer`` run its full-sequence scan through ``selective_scan``.

    Idempotent. Replaces the module global ``mamba_selective_scan`` that
    ``MambaMixer.forward`` looks up at call time, so checkpoints load unchanged and models
    built before or after the call are both covered. Returns False (with one warning) when the
    installed transformers has no such hook.
    """
    try:
        modeling = importlib.import_module("transformers.models.mamba.modeling_mamba")
    except ImportError as exc:
        warn_once("hf", f"vlab: transformers Mamba not importable ({exc}); scan not installed")
        return False
    current = getattr(modeling, "mamba_selective_scan", None)
    if current is None:
        warn_once(
            "hf",
            "vlab: this transformers version has no module-level mamba_selective_scan; "
            "Mamba will use Hugging Face's slow CPU scan.",
        )
        return False
    if not hasattr(current, "vlab_original"):
        modeling.mamba_selective_scan = _make_hf_adapter(current)
    if _mamba_ssm_fn() is None and hasattr(modeling, "mamba_inner_fn"):
        # Without mamba-ssm, HF's fused-path stub only returns None, with a warning that the
        # "reference implementation" is used: misleading, since the scan above is fast.
        modeling.mamba_inner_fn = _no_fused_path
        # Decoding's one-token state update: the torch form is a few element-wise ops per
        # token, as fast as a kernel on CPU; skip the wrapper's "much slower" warning.
        step = getattr(modeling, "mamba_selective_state_update", None)
        if step is not None and hasattr(step, "__wrapped__"):
            modeling.mamba_selective_state_update = step.__wrapped__
    # The depthwise causal conv: vlab's channel-last shifted multiply-adds where no
    # causal-conv1d kernel serves (oneDNN's grouped conv1d backward took 13% of a tiny Mamba's
    # training step), as Mamba-2's mixer gets them; one-token decoding keeps HF's torch form.
    from vlab.models.ops.ssd import conv_hooks

    for name, hook in conv_hooks().items():
        fn = getattr(modeling, name, None)
        if fn is not None and not hasattr(fn, "vlab_original"):
            setattr(modeling, name, hook(fn))
    return True


def _no_fused_path(*args: Any, **kwargs: Any) -> None:
    """Stands in for mamba-ssm's fused ``mamba_inner_fn`` when it is not there: MambaMixer
    then takes its unfused path, which calls our scan."""
    return None
