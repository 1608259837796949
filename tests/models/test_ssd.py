"""Mamba-2's fast CPU path (``ops.ssd``): parity with transformers' own torch path, the hook.

The reference is transformers' code itself: its module functions run unpatched inside
``ssd.use_hf_reference()``. Both sides compute in float32, so they agree to float32 rounding;
the SSD core is also checked against a float64 step-by-step recurrence.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
import transformers.models.mamba2.modeling_mamba2 as modeling
from transformers import DynamicCache, Mamba2Config, Mamba2ForCausalLM
from transformers.utils import logging as hf_logging

from vlab.models.backbones import cache_argument
from vlab.models.ops import ssd

RTOL, ATOL = 1e-4, 1e-5

pytestmark = pytest.mark.usefixtures("installed")


@pytest.fixture
def installed():
    assert ssd.install_into_transformers()


def hf_torch(name):
    """transformers' torch function behind a hooked module function (no kernel, no hook)."""
    return getattr(modeling, name).vlab_original.__wrapped__


def assert_close(got, expected, name=""):
    """float32 parity: relative, with an absolute floor scaled to the tensor's magnitude."""
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL * max(scale, 1.0), msg=name)


# --------------------------------------------------------------------------- the scan


def scan_inputs(batch, length, heads, head_dim, groups, state, *, seed=0, decay=1.0):
    """Random scan inputs as ``Mamba2Mixer`` passes them (raw dt, A = -exp(A_log))."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    return {
        "hidden_states": rand(batch, length, heads, head_dim),
        "dt": rand(batch, length, heads) - 1.0,
        "A": -torch.rand(heads, generator=g) * heads * decay - 0.1,
        "B": rand(batch, length, groups, state),
        "C": rand(batch, length, groups, state),
        "D": rand(heads),
        "dt_bias": rand(heads) * 0.5,
        "initial_states": rand(batch, heads, head_dim, state),
    }


def run_scan(fn, inputs, *, with_initial):
    """Forward + backward of a fixed random linear loss of y and the final state."""
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    if not with_initial:
        leaves["initial_states"] = None
    y, final = fn(
        **{k: v for k, v in leaves.items() if k not in ("D", "dt_bias", "initial_states")},
        D=leaves["D"],
        dt_bias=leaves["dt_bias"],
        initial_states=leaves["initial_states"],
        dt_softplus=True,
        return_final_states=True,
    )
    g = torch.Generator().manual_seed(1)
    loss = (y * torch.randn(y.shape, generator=g)).sum()
    (loss + (final * torch.randn(final.shape, generator=g)).sum()).backward()
    results = {"y": y.detach(), "final": final.detach()}
    results.update({f"grad_{k}": v.grad for k, v in leaves.items() if v is not None})
    return results


def hf_scan(**kwargs):
    return hf_torch("mamba2_chunk_scan")(chunk_size=16, **kwargs)


SHAPES = [  # batch, length, heads, head_dim, groups, state
    (2, 1, 4, 4, 1, 8),
    (2, 7, 4, 3, 2, 5),
    (1, 33, 6, 8, 2, 16),
    (2, 200, 8, 16, 1, 32),
    (3, 70, 4, 8, 4, 4),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_initial", [False, True])
def test_chunk_scan_matches_transformers(shape, with_initial):
    inputs = scan_inputs(*shape)
    expected = run_scan(hf_scan, inputs, with_initial=with_initial)
    got = run_scan(ssd.chunk_scan, inputs, with_initial=with_initial)
    assert got.keys() == expected.keys()
    for name in expected:
        assert_close(got[name], expected[name], name)


def recurrence(x, dt, A, B, C, D, initial):
    """The SSM step by step in float64: the definition the chunked forms must equal."""
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[2:]
    B = B.repeat_interleave(heads // groups, dim=2)
    C = C.repeat_interleave(heads // groups, dim=2)
    h = initial if initial is not None else x.new_zeros(batch, heads, head_dim, state)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append((h * C[:, t, :, None, :]).sum(-1) + D[:, None] * x[:, t])
    return torch.stack(ys, 1), h


@pytest.mark.parametrize(
    ("decay", "span", "max_chunk", "path"),
    [
        (1.0, 80.0, 64, "factored"),  # one or a few long chunks
        (1.0, 80.0, 5, "factored"),  # many short chunks
        (30.0, 80.0, 64, "masked"),  # decays too strong to factor
        (1.0, 0.0, 64, "masked"),  # forced
    ],
)
def test_ssd_scan_matches_float64_recurrence(monkeypatch, decay, span, max_chunk, path):
    monkeypatch.setattr(ssd, "_SPAN", span)
    used = []
    for name in ("_scan_factored", "_scan_masked"):
        original = getattr(ssd, name)
        monkeypatch.setattr(ssd, name, lambda *a, _o=original, _n=name: used.append(_n) or _o(*a))
    inputs = scan_inputs(2, 90, 4, 4, 2, 8, seed=3, decay=decay)
    dt = F.softplus(inputs["dt"] + inputs["dt_bias"])
    args = [inputs[k] for k in ("hidden_states",)] + [dt] + [inputs[k] for k in "ABCD"]
    y, final = ssd.ssd_scan(*args, inputs["initial_states"], max_chunk=max_chunk)
    expected = recurrence(*(t.double() for t in args), inputs["initial_states"].double())
    assert used == [f"_scan_{path}"]
    torch.testing.assert_close(y.double(), expected[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(final.double(), expected[1], rtol=1e-4, atol=1e-4)


def test_chunking_adapts_to_decay():
    quiet = torch.full((1, 200, 2), -0.1)
    assert ssd._pick_chunk(quiet, 200, 64) == (64, True)
    assert ssd._pick_chunk(quiet[:, :10], 10, 64) == (10, True)
    assert ssd._pick_chunk(torch.full((1, 200, 2), -3.0), 200, 64) == (16, True)
    assert ssd._pick_chunk(torch.full((1, 200, 2), -30.0), 200, 64) == (ssd._MASKED_CHUNK, False)
    assert ssd._pick_chunk(torch.full((1, 200, 2), 0.1), 200, 64)[1] is False  # growth


@pytest.mark.parametrize("length", [1, 2, 3, 9])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("activation", ["silu", None])
def test_causal_conv_matches_transformers(length, with_bias, activation):
    g = torch.Generator().manual_seed(length)
    base = torch.randn(2, length, 12, generator=g)  # channel-last, as the mixer's projection
    weight = torch.randn(10, 4, generator=g)
    bias = torch.randn(10, generator=g) if with_bias else None
    grad_out = torch.randn(2, 10, length, generator=g)

    def run(fn):
        leaves = [t.clone().requires_grad_() for t in (base, weight)]
        b = bias.clone().requires_grad_() if with_bias else None
        out = fn(leaves[0][:, :, 1:11].transpose(1, 2), leaves[1], b, activation=activation)
        (out * grad_out).sum().backward()
        return [out.detach(), *(t.grad for t in leaves), *([b.grad] if with_bias else [])]

    for got, expected in zip(
        run(ssd.causal_conv1d), run(hf_torch("causal_conv1d_fn")), strict=True
    ):
        assert_close(got, expected)


# --------------------------------------------------------------------------- transformers


def tiny_mamba2(*, groups=1, state=8, heads=4, chunk_size=32, seed=0):
    """Two layers of 32 inner channels split into ``heads`` heads."""
    torch.manual_seed(seed)
    config = Mamba2Config(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        state_size=state,
        num_heads=heads,
        head_dim=32 // heads,
        n_groups=groups,
        expand=2,
        chunk_size=chunk_size,
    )
    return Mamba2ForCausalLM(config)


def training_step(model, ids, attention_mask=None):
    """Forward + backward of the LM loss through input embeddings; returns logits, every
    parameter's gradient and the embeddings' gradient."""
    model.zero_grad(set_to_none=True)
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    output = model(inputs_embeds=embeds, labels=ids, attention_mask=attention_mask)
    output.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output.logits.detach(), grads, embeds.grad


@pytest.mark.parametrize(
    ("groups", "state", "heads", "length"),
    [(1, 8, 4, 1), (2, 6, 4, 7), (1, 16, 8, 33), (2, 8, 4, 200)],
)
def test_training_step_matches_transformers(groups, state, heads, length):
    model = tiny_mamba2(groups=groups, state=state, heads=heads).train()
    ids = torch.randint(0, 64, (3, length), generator=torch.Generator().manual_seed(length))
    with ssd.use_hf_reference():
        ref_logits, ref_grads, ref_embeds = training_step(model, ids)
    logits, grads, embeds = training_step(model, ids)
    assert_close(logits, ref_logits, "logits")
    assert_close(embeds, ref_embeds, "inputs_embeds")
    assert grads.keys() == ref_grads.keys()
    assert {"A_log", "D", "dt_bias", "conv1d.weight", "norm.weight"} <= {
        name.split("mixer.")[-1] for name in grads
    }
    for name, grad in grads.items():
        assert_close(grad, ref_grads[name], name)


def test_padding_mask_matches_transformers():
    model = tiny_mamba2(groups=2).train()
    ids = torch.randint(0, 64, (3, 40), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[0, :13] = 0  # left padding
    mask[2, :1] = 0
    with ssd.use_hf_reference():
        expected = training_step(model, ids, mask)
    got = training_step(model, ids, mask)
    assert_close(got[0], expected[0], "logits")
    assert_close(got[2], expected[2], "inputs_embeds")
    for name, grad in got[1].items():
        assert_close(grad, expected[1][name], name)


@pytest.mark.parametrize(("dt_bias", "picked"), [(-1.0, (16, True)), (2.0, (32, False))])
def test_strong_decays_match_transformers(monkeypatch, dt_bias, picked):
    """Larger dt: chunks shrink to 16 steps, then the masked form runs; transformers' numbers
    either way."""
    choices = []
    pick = ssd._pick_chunk
    monkeypatch.setattr(ssd, "_pick_chunk", lambda *a: choices.append(pick(*a)) or choices[-1])
    model = tiny_mamba2(heads=8).train()
    with torch.no_grad():
        for layer in model.backbone.layers:
            layer.mixer.dt_bias.fill_(dt_bias)
    ids = torch.randint(0, 64, (2, 120), generator=torch.Generator().manual_seed(6))
    with ssd.use_hf_reference():
        expected = training_step(model, ids)
    got = training_step(model, ids)
    assert set(choices) == {picked}
    assert_close(got[0], expected[0], "logits")
    assert_close(got[2], expected[2], "inputs_embeds")
    for name, grad in got[1].items():
        assert_close(grad, expected[1][name], name)


def test_config_chunk_size_does_not_change_results():
    ids = torch.randint(0, 64, (2, 70), generator=torch.Generator().manual_seed(7))
    logits = [tiny_mamba2(chunk_size=c).eval()(ids).logits for c in (8, 256)]
    assert torch.equal(logits[0], logits[1])


def run_with_cache(model, ids, more_ids):
    """Prefill, a multi-token continuation (from the cached states) and one decoding step;
    returns the logits of each call and the cache's conv and recurrent states after each."""
    cache = DynamicCache(config=model.config)
    kwargs = {cache_argument(model): cache, "use_cache": True}
    outputs = []
    with torch.no_grad():
        for chunk in (ids, more_ids, more_ids[:, -1:]):
            logits = model(chunk, **kwargs).logits
            states = [
                (cache.get_conv_state(i).clone(), cache.get_recurrent_state(i).clone())
                for i in range(model.config.num_hidden_layers)
            ]
            outputs.append((logits, states))
    return outputs


def test_cached_prefill_continuation_and_step_match_transformers():
    model = tiny_mamba2(groups=2, seed=3).eval()
    g = torch.Generator().manual_seed(8)
    ids = torch.randint(0, 64, (2, 30), generator=g)
    more = torch.randint(0, 64, (2, 5), generator=g)
    with ssd.use_hf_reference():
        expected = run_with_cache(model, ids, more)
    got = run_with_cache(model, ids, more)
    for (logits, states), (ref_logits, ref_states) in zip(got, expected, strict=True):
        assert_close(logits, ref_logits, "logits")
        for (conv, rec), (ref_conv, ref_rec) in zip(states, ref_states, strict=True):
            assert_close(conv, ref_conv, "conv state")
            assert_close(rec, ref_rec, "recurrent state")
    with torch.no_grad():  # the cached calls equal running everything at once
        whole = model(torch.cat([ids, more, more[:, -1:]], 1)).logits
    assert_close(got[1][0], whole[:, 30:35], "continuation")
    assert_close(got[2][0], whole[:, -1:], "step")


def test_greedy_generation_matches_transformers():
    model = tiny_mamba2(seed=4).eval()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(9))
    kwargs = dict(max_new_tokens=8, do_sample=False, output_scores=True)
    kwargs["return_dict_in_generate"] = True
    with ssd.use_hf_reference():
        expected = model.generate(ids, **kwargs)
    got = model.generate(ids, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    for score, ref_score in zip(got.scores, expected.scores, strict=True):
        assert_close(score, ref_score, "scores")


def test_install_is_idempotent():
    hooked = {name: getattr(modeling, name) for name in ssd._HOOKS}
    assert ssd.install_into_transformers()
    for name, fn in hooked.items():
        assert getattr(modeling, name) is fn
        assert not hasattr(fn.vlab_original, "vlab_original")


def spy_originals(monkeypatch):
    """Replaces what every hook calls off CPU (transformers' function) by a recording spy."""
    calls = []
    for name in ssd._HOOKS:
        hooked = getattr(modeling, name)
        original = hooked.vlab_original

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(hooked, "vlab_original", spy)
    return calls


def test_cpu_runs_vlab_and_reference_runs_transformers(monkeypatch):
    """Training and cached decoding on CPU never enter transformers' dispatchers (which would
    call mamba-ssm kernels where installed); the reference context always does."""
    calls = spy_originals(monkeypatch)
    model = tiny_mamba2()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(10))
    model.train()(ids, labels=ids).loss.backward()
    model.eval().generate(ids, max_new_tokens=3, do_sample=False)
    assert calls == []
    with ssd.use_hf_reference():
        model.train()(ids, labels=ids)
    per_layer = ["mamba2_split_conv1d_scan_combined", "causal_conv1d_fn", "mamba2_chunk_scan"]
    assert calls == per_layer * 2


def test_other_devices_keep_transformers_functions_where_kernels_import(monkeypatch):
    """Off CPU, with mamba-ssm and causal-conv1d importable, every hook hands its arguments to
    transformers' function (the kernels' dispatcher) untouched."""
    monkeypatch.setattr(ssd, "_KERNEL_PACKAGES", {"mamba_ssm": True, "causal_conv1d": True})
    meta = torch.zeros(1, 2, 3, device="meta")
    for name in ssd._HOOKS:
        hooked = getattr(modeling, name)
        monkeypatch.setattr(hooked, "vlab_original", lambda *a, **k: (a, k))
        args, kwargs = hooked(meta, meta, meta, B=meta, C=meta, D=None, seq_idx=None)
        assert args[0] is meta and kwargs["D"] is None


@pytest.mark.parametrize("mamba_ssm", [True, False])
@pytest.mark.parametrize("causal_conv1d", [True, False])
def test_vlab_serves_other_devices_only_without_kernels(monkeypatch, mamba_ssm, causal_conv1d):
    """The quiet fallback: on CUDA without a kernel package, the functions that package would
    serve run vlab's torch path (no "much slower" warning); CPU always runs vlab's."""
    monkeypatch.setattr(
        ssd, "_KERNEL_PACKAGES", {"mamba_ssm": mamba_ssm, "causal_conv1d": causal_conv1d}
    )
    meta, cpu = torch.zeros(1, device="meta"), torch.zeros(1)
    assert ssd._vlab_runs(cpu, None) and ssd._vlab_runs(cpu, package="causal_conv1d")
    assert ssd._vlab_runs(meta) is not mamba_ssm
    assert ssd._vlab_runs(meta, cpu, package="causal_conv1d") is not causal_conv1d
    with ssd.use_hf_reference():
        assert not ssd._vlab_runs(cpu) and not ssd._vlab_runs(meta)


def test_kernel_package_imports_as_transformers_decides():
    """A package that does not import (here: one that does not exist) counts as absent."""
    assert not ssd.kernel_package_imports("vlab_no_such_kernel_package")
    assert ssd.kernel_package_imports("torch")


def test_cpu_training_and_decoding_log_no_fallback_warnings():
    """transformers warns once per process that each missing kernel falls back to "much
    slower" torch code; on CPU vlab's path runs instead, so nothing is logged."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logger = hf_logging.get_logger("transformers")
    hf_logger.addHandler(handler)
    model = tiny_mamba2()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(11))
    try:
        hf_logging.warning_once.cache_clear()
        model.train()(ids, labels=ids).loss.backward()
        model.eval().generate(ids, max_new_tokens=3, do_sample=False)
        vlab_messages = [r.getMessage() for r in records if "falling back" in r.getMessage()]
        with ssd.use_hf_reference():
            model.train()(ids, labels=ids)
    finally:
        hf_logger.removeHandler(handler)
        hf_logging.warning_once.cache_clear()
    assert vlab_messages == []
    assert any("falling back" in r.getMessage() for r in records)  # the capture works
