"""How much memory a look-inside analysis takes, and the batch that keeps it under a cap.

``vlab inspect --max-memory-gb G`` chooses each analysis's batch so that its estimated peak
stays under G GiB; without a cap every analysis keeps its default batch. The estimate is an
upper bound built from the model's dimensions alone (no pass is run to measure it), so a cap
too small for even one example is refused in one line before anything is written.

What is counted (H hidden size, T sequence length, V vocabulary, n layers, a attention heads
of an attention layer, D x N the SSM state of a Mamba layer (D channels, N state size; heads
x P x N for Mamba-2), I the widest per-position intermediate (MLP or the SSM's in-projection),
e bytes per element of the model's dtype, 4 bytes for float32)::

    fixed           the weights (parameters and buffers)
    forward(T)      one sequence's forward pass: 6 T H e of residual stream, norms and mixer
                    outputs, plus the widest layer's working set: an attention layer's
                    scores and softmax in float32 (2 a T^2 4) and projections (T (3H + I) e),
                    a Mamba layer's discretised A and B u (2 D N T 4, transformers' reference
                    path) and its projections (T I e), plus the logits at the last position
                    only (every analysis keeps that one: 3 V 4, the head's output, its
                    float32 copy and the trace's)
    logit_lens      forward(T) + the residual stream of n + 1 layers (n + 1) T H e + one
                    layer's lens (logits, float32 copy, softmax and its temporaries: 6 V 4)
                    per example
    attention       forward(T) + each attention layer's weights a T^2 e + each SSM layer's
                    input T H e and its implicit attention's last row (2 D N T 4)
    state_probe     forward(T) + (n + 1) T H e + each SSM layer's states D N T 4 (and as
                    much again while they are computed); fixed: the features kept for the
                    probes, (n + 1) H + sum of D N floats per example, twice
    patching        per example: the clean and corrupted runs' activations (2 (n + 2) T H e
                    and each SSM layer's states D N T 4) and one site's patched values, the
                    T copies of the corrupted activations and inputs (3 T^2 H e); per patched
                    sequence (the unit of its batch): forward(T) + its last-position logits
                    (3 V 4)

Analyses run batch by batch, so a peak is ``fixed + SLACK x batch x per-example`` (patching:
``fixed + SLACK x (examples x per-example + sequences x per-sequence)``, where a batch of
``batch`` patched sequences holds ``max(1, batch // T)`` examples (at most all of them),
chunked when one example's T copies do not fit; :data:`SLACK` covers what the count leaves
out). ``vlab bench --inspect`` prints the estimate beside the measured peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlab.errors import VlabError

GIB = 2**30
FLOAT = 4  # bytes: the analyses' numerics are float32 whatever the model's dtype
# The tensors counted below are the live ones; measured (``vlab bench --inspect``, small
# presets, CPU resident set size) peaks reached up to 2.2x them (the allocator's slack,
# temporaries not modelled), so the part that grows with the batch is counted SLACK times.
SLACK = 2.5
# analysis -> its default batch (examples per batch; patching: patched sequences per pass)
DEFAULT_BATCH = {"logit_lens": 64, "attention": 64, "state_probe": 64, "patching": 512}


@dataclass(frozen=True)
class ModelDims:
    """What the estimate reads off a model (see the module docstring for the symbols)."""

    hidden: int
    vocab: int
    layers: int
    heads: tuple[int, ...]  # per attention layer, its heads
    states: tuple[int, ...]  # per SSM layer, its state's size D x N
    inner: int  # the widest per-position intermediate of any layer (MLP or in-projection)
    element: int  # bytes per element of the model's dtype
    weights: int  # bytes of parameters and buffers


def model_dims(model: nn.Module, dtype: torch.dtype | None = None) -> ModelDims:
    """The dims of ``model`` (an LM vlab has activation names for), its weights taken in
    ``dtype`` when given (a model built in float32 to be inspected in bfloat16)."""
    from vlab.analysis.inside.activations import layers_with, num_layers

    config = model.config
    hidden = int(config.hidden_size)
    attention = layers_with(model, "attn.pattern")
    ssm = layers_with(model, "ssm.state")
    heads = int(getattr(config, "num_attention_heads", None) or 0)
    state = int(getattr(config, "state_size", None) or 0)
    if getattr(config, "num_heads", None) and getattr(config, "head_dim", None):  # Mamba-2
        channels = int(config.num_heads) * int(config.head_dim)
    else:
        channels = int(getattr(config, "intermediate_size", None) or 2 * hidden)
    inner = max(int(getattr(config, "intermediate_size", None) or 0), 2 * channels, 4 * hidden)
    params = list(model.parameters())
    element = params[0].element_size() if params else FLOAT
    if dtype is not None:
        element = element_bytes(dtype)
    weights = sum(
        t.numel() * (element if t.is_floating_point() else t.element_size())
        for t in [*params, *model.buffers()]
    )
    return ModelDims(
        hidden=hidden,
        vocab=int(model.get_output_embeddings().weight.shape[0]),
        layers=num_layers(model),
        heads=tuple(heads for _ in attention),
        states=tuple(channels * state for _ in ssm),
        inner=inner,
        element=element,
        weights=weights,
    )


def forward_bytes(d: ModelDims, length: int) -> int:
    """One sequence's forward pass (module docstring: forward(T))."""
    t, e = length, d.element
    widest = t * (3 * d.hidden + d.inner) * e
    for a in d.heads:
        widest = max(widest, 2 * a * t * t * FLOAT + t * (3 * d.hidden + d.inner) * e)
    for s in d.states:
        widest = max(widest, 2 * s * t * FLOAT + t * d.inner * e)
    return 6 * t * d.hidden * e + widest + 3 * d.vocab * FLOAT


def example_bytes(d: ModelDims, analysis: str, length: int) -> tuple[int, int]:
    """(per example, per patched sequence) bytes of ``analysis`` at sequence length
    ``length``; the second is 0 except for patching."""
    t, e, h = length, d.element, d.hidden
    residual = (d.layers + 1) * t * h * e
    if analysis == "logit_lens":
        return forward_bytes(d, t) + residual + 6 * d.vocab * FLOAT, 0
    if analysis == "attention":
        weights = sum(a * t * t * e for a in d.heads)
        ssm = sum(t * h * e + 2 * s * t * FLOAT for s in d.states)
        return forward_bytes(d, t) + weights + ssm, 0
    if analysis == "state_probe":
        ssm = sum(t * h * e + 2 * s * t * FLOAT for s in d.states)
        return forward_bytes(d, t) + residual + ssm, 0
    if analysis == "patching":
        runs = 2 * ((d.layers + 2) * t * h * e) + sum(s * t * FLOAT for s in d.states)
        values = 3 * t * t * h * e  # an image run's copies are embeddings too
        return runs + values, forward_bytes(d, t) + 3 * d.vocab * FLOAT
    known = ", ".join(DEFAULT_BATCH)
    raise VlabError(f"no memory estimate for analysis {analysis!r} (known: {known})")


def fixed_bytes(d: ModelDims, analysis: str, examples: int) -> int:
    """What does not grow with the batch: the weights, and the state probe's features."""
    if analysis == "state_probe":
        features = (d.layers + 1) * d.hidden + sum(d.states)
        return d.weights + 2 * examples * features * FLOAT
    return d.weights


def peak_bytes(d: ModelDims, analysis: str, length: int, examples: int, batch: int) -> int:
    """The estimated peak of ``analysis`` over ``examples`` examples run ``batch`` at a time
    (patching: ``batch`` patched sequences per pass)."""
    per_example, per_sequence = example_bytes(d, analysis, length)
    fixed = fixed_bytes(d, analysis, examples)
    if analysis == "patching":
        held = min(max(1, batch // length), examples)
        grows = held * per_example + min(batch, held * length) * per_sequence
    else:
        grows = min(batch, examples) * per_example
    return fixed + int(SLACK * grows)


def plan_batch(
    d: ModelDims, analysis: str, length: int, examples: int, cap_bytes: float | None
) -> int:
    """The largest batch up to the analysis's default whose estimated peak is at most
    ``cap_bytes`` (no cap: the default). A cap that one example (one patched sequence) does
    not fit is a one-line error."""
    default = DEFAULT_BATCH[analysis]
    if cap_bytes is None:
        return default
    if peak_bytes(d, analysis, length, examples, 1) > cap_bytes:
        need = peak_bytes(d, analysis, length, examples, 1) / GIB
        raise VlabError(
            f"--max-memory-gb {cap_bytes / GIB:g}: {analysis} needs about {need:.3g} GiB for "
            f"one example at T={length} (weights {d.weights / GIB:.3g} GiB, vocabulary "
            f"{d.vocab:,}, hidden {d.hidden}); raise the cap"
        )
    lo, hi = 1, default  # peak grows with the batch: the largest that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if peak_bytes(d, analysis, length, examples, mid) <= cap_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def has_estimate(analysis: str) -> bool:
    """Whether :func:`plan_batch` knows ``analysis`` (the VLM's ``image_attention`` keeps its
    own batch under a cap)."""
    return analysis in DEFAULT_BATCH


def element_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
