"""Selective scan backends: parity with the reference, fallbacks, and the transformers hook.

Fast paths run in float32 and are compared with the float64 reference using mamba-ssm's
float32 tolerances. The C++ kernel is JIT-built on first use (cached across runs).
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from transformers import DynamicCache

from vlab.errors import VlabError
from vlab.models.backbones import cache_argument
from vlab.models.ops import notices
from vlab.models.ops import selective_scan as ss

RTOL, ATOL = 6e-4, 2e-3
FAST_BACKENDS = ["cpp", "torch"]


def make_inputs(batch, dim, dstate, length, *, seed=0, with_D=True, with_z=True, with_bias=True):
    """Random float64 inputs in the ranges mamba-ssm's own tests use; absent ones are None."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, normal=True):
        fn = torch.randn if normal else torch.rand
        return scale * fn(*shape, generator=g, dtype=torch.float64)

    return {
        "u": rand(batch, dim, length),
        "delta": rand(batch, dim, length, scale=0.5, normal=False),
        "A": -rand(dim, dstate, scale=0.5, normal=False) - 0.05,
        "B": rand(batch, dstate, length),
        "C": rand(batch, dstate, length),
        "D": rand(dim) if with_D else None,
        "z": rand(batch, dim, length) if with_z else None,
        "delta_bias": rand(dim, scale=0.5, normal=False) if with_bias else None,
    }


def linear_loss(out, last, seed=1):
    """A fixed random linear function of the outputs, so every gradient is exercised."""
    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)).sum()
    if last is not None:
        weights = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.dtype)
        loss = loss + (last * weights).sum()
    return loss


def run_scan(fn, inputs, dtype, *, softplus, last_state, seed=1):
    """Forward + backward of a random linear loss; returns outputs and every input gradient."""
    leaves = {
        k: (v.to(dtype).clone().requires_grad_() if v is not None else None)
        for k, v in inputs.items()
    }
    result = fn(**leaves, delta_softplus=softplus, return_last_state=last_state)
    out, last = result if last_state else (result, None)
    linear_loss(out, last, seed).backward()
    results = {"out": out.detach().double()}
    if last is not None:
        results["last_state"] = last.detach().double()
    for name, leaf in leaves.items():
        if leaf is not None:
            results[f"grad_{name}"] = leaf.grad.double()
    return results


def assert_matches_reference(backend, inputs, *, softplus, last_state):
    expected = run_scan(
        ss.selective_scan_reference,
        inputs,
        torch.float64,
        softplus=softplus,
        last_state=last_state,
    )
    with ss.use_scan_backend(backend):
        got = run_scan(
            ss.selective_scan, inputs, torch.float32, softplus=softplus, last_state=last_state
        )
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=RTOL, atol=ATOL, msg=name)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize(
    ("batch", "dim", "dstate", "length"),
    [
        (2, 3, 16, 1),
        (1, 4, 5, 7),
        (2, 4, 16, 64),
        (2, 3, 8, 200),
        (3, 2, 16, 130),
        (2, 16, 16, 40),
        (1, 12, 32, 33),
        (1, 9, 64, 10),
    ],
)
def test_fast_paths_match_reference(backend, batch, dim, dstate, length):
    inputs = make_inputs(batch, dim, dstate, length)
    assert_matches_reference(backend, inputs, softplus=True, last_state=True)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize(
    ("with_D", "with_z", "with_bias", "softplus", "last_state"),
    [
        (False, False, False, False, False),
        (True, False, False, False, True),
        (False, True, True, True, False),
        (True, True, False, True, False),
        (False, False, True, False, True),
    ],
)
def test_optional_inputs_match_reference(backend, with_D, with_z, with_bias, softplus, last_state):
    inputs = make_inputs(2, 3, 16, 70, seed=3, with_D=with_D, with_z=with_z, with_bias=with_bias)
    assert_matches_reference(backend, inputs, softplus=softplus, last_state=last_state)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_channel_last_and_strided_inputs_match_reference(backend):
    """HF passes u and z as transposed views of (batch, L, channels) memory, z a slice of it."""
    inputs = make_inputs(2, 12, 16, 45, seed=11)
    expected = run_scan(
        ss.selective_scan_reference, inputs, torch.float64, softplus=True, last_state=True
    )
    f32 = {k: v.float() for k, v in inputs.items()}
    u_base = f32["u"].transpose(1, 2).contiguous().requires_grad_()
    delta_base = f32["delta"].transpose(1, 2).contiguous().requires_grad_()
    z_wide = torch.cat([f32["z"].transpose(1, 2), torch.ones_like(f32["z"].transpose(1, 2))], 2)
    z_wide.requires_grad_()
    rest = {k: f32[k].clone().requires_grad_() for k in ("A", "B", "C", "D", "delta_bias")}
    z_view = z_wide[:, :, :12].transpose(1, 2)
    assert z_view.stride(1) == 1 and not z_view.is_contiguous()
    with ss.use_scan_backend(backend):
        out, last = ss.selective_scan(
            u_base.transpose(1, 2),
            delta_base.transpose(1, 2),
            z=z_view,
            delta_softplus=True,
            return_last_state=True,
            **rest,
        )
    linear_loss(out, last).backward()
    got = {
        "out": out,
        "last_state": last,
        "grad_u": u_base.grad.transpose(1, 2),
        "grad_delta": delta_base.grad.transpose(1, 2),
        "grad_z": z_wide.grad[:, :, :12].transpose(1, 2),
        **{f"grad_{k}": v.grad for k, v in rest.items()},
    }
    assert not z_wide.grad[:, :, 12:].any()
    for name in expected:
        torch.testing.assert_close(
            got[name].double(), expected[name], rtol=RTOL, atol=ATOL, msg=name
        )


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_parallel_backward_with_channel_groups(backend):
    """With few batch entries the C++ backward splits channels into groups (more threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_matches_reference(
            backend, make_inputs(1, 40, 16, 50, seed=13), softplus=True, last_state=True
        )
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_large_delta_and_strong_decay(backend):
    """Softplus above its threshold and exp(delta A) underflowing to zero stay accurate."""
    inputs = make_inputs(2, 3, 16, 40, seed=5)
    inputs["delta"] = inputs["delta"] * 60 - 10
    inputs["A"] = inputs["A"] * 40
    assert_matches_reference(backend, inputs, softplus=True, last_state=True)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_bfloat16_inputs_compute_in_float32(backend):
    inputs = make_inputs(2, 4, 16, 33, seed=7)
    expected = run_scan(
        ss.selective_scan_reference, inputs, torch.float64, softplus=True, last_state=False
    )
    with ss.use_scan_backend(backend):
        leaves = {k: v.to(torch.bfloat16).requires_grad_() for k, v in inputs.items()}
        out = ss.selective_scan(**leaves, delta_softplus=True)
        out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert all(leaf.grad.dtype == torch.bfloat16 for leaf in leaves.values())
    torch.testing.assert_close(out.double(), expected["out"], rtol=0.05, atol=0.1)


def test_inference_path_skips_autograd():
    inputs = make_inputs(2, 4, 16, 50, seed=9)
    args = {k: v.float() for k, v in inputs.items()}
    expected = ss.selective_scan_reference(**inputs, delta_softplus=True, return_last_state=True)
    for backend in FAST_BACKENDS:
        with ss.use_scan_backend(backend), torch.no_grad():
            out, last = ss.selective_scan(**args, delta_softplus=True, return_last_state=True)
        assert out.grad_fn is None
        torch.testing.assert_close(out.double(), expected[0], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(last.double(), expected[1], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backward_does_not_store_the_state_history(backend):
    """The graph keeps inputs plus one state per chunk, far below (batch, dim, L, dstate)."""
    batch, dim, dstate, length = 2, 8, 16, 256
    inputs = make_inputs(batch, dim, dstate, length)
    leaves = [v.float().requires_grad_() for v in inputs.values()]
    with ss.use_scan_backend(backend):
        out = ss.selective_scan(*leaves, delta_softplus=True)
    saved = sum(t.numel() for t in out.grad_fn.saved_tensors if t is not None)
    inputs_size = sum(t.numel() for t in leaves)
    assert saved - inputs_size <= batch * dim * length * dstate // 16


def test_cpp_is_the_cpu_default_and_builds():
    assert ss.scan_backend("cpu") == "cpp"
    assert ss.scan_backend(torch.device("cpu")) == "cpp"


def test_use_scan_backend_forces_and_restores():
    default = ss.scan_backend("cpu")
    with ss.use_scan_backend("reference"):
        assert ss.scan_backend("cpu") == "reference"
        with ss.use_scan_backend("torch"):
            assert ss.scan_backend("cpu") == "torch"
        assert ss.scan_backend("cpu") == "reference"
    assert ss.scan_backend("cpu") == default
    with pytest.raises(VlabError, match="unknown scan backend"):
        with ss.use_scan_backend("fast"):
            pass


def test_forced_backends_that_cannot_run_explain_why():
    inputs = {k: v.float() for k, v in make_inputs(1, 2, 4, 3).items()}
    with ss.use_scan_backend("mamba_ssm"), pytest.raises(VlabError, match="mamba_ssm"):
        ss.selective_scan(**inputs)


@pytest.fixture
def fresh_loader_state(monkeypatch):
    """Isolates the once-per-process caches (extension, mamba-ssm import, warnings)."""
    monkeypatch.setattr(ss, "_cpp_state", {})
    monkeypatch.setattr(ss, "_mamba_state", {})
    monkeypatch.setattr(notices, "_warned", set())


@pytest.mark.parametrize("error", ["ImportError", "OSError"])
def test_broken_mamba_ssm_falls_back_with_one_warning(
    tmp_path, monkeypatch, fresh_loader_state, error
):
    package = tmp_path / "mamba_ssm"
    package.mkdir()
    (package / "__init__.py").write_text(
        f"raise {error}('libcudart.so.12: cannot open shared object file')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ss.scan_backend("cuda") == "torch"
        assert ss.scan_backend("cuda:0") == "torch"
    messages = [str(w.message) for w in caught if "mamba_ssm" in str(w.message)]
    assert len(messages) == 1
    assert "libcudart" in messages[0]
    assert "mamba_ssm" not in sys.modules


def test_cpu_scans_never_import_mamba_ssm(tmp_path, monkeypatch, fresh_loader_state):
    package = tmp_path / "mamba_ssm"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported on CPU')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    inputs = {k: v.float() for k, v in make_inputs(1, 2, 4, 5).items()}
    ss.selective_scan(**inputs, delta_softplus=True)
    assert ss._mamba_state == {}


def test_failed_cpp_build_falls_back_to_torch_with_one_warning(
    tmp_path, monkeypatch, fresh_loader_state
):
    monkeypatch.setenv("VLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    inputs = make_inputs(2, 3, 8, 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ss.scan_backend("cpu") == "torch"
        assert ss.scan_backend("cpu") == "torch"
        got = run_scan(ss.selective_scan, inputs, torch.float32, softplus=True, last_state=False)
    messages = [str(w.message) for w in caught if "C++ selective scan" in str(w.message)]
    assert len(messages) == 1
    expected = run_scan(
        ss.selective_scan_reference, inputs, torch.float64, softplus=True, last_state=False
    )
    torch.testing.assert_close(got["out"], expected["out"], rtol=RTOL, atol=ATOL)
    with ss.use_scan_backend("cpp"), pytest.raises(VlabError, match="unavailable"):
        ss.selective_scan(**{k: v.float() for k, v in inputs.items()})


# --------------------------------------------------------------------------- transformers


def tiny_mamba(seed=0):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(seed)
    config = MambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2)
    return MambaForCausalLM(config)


def test_install_into_transformers_is_idempotent():
    import transformers.models.mamba.modeling_mamba as modeling

    assert ss.install_into_transformers()
    hooked = modeling.mamba_selective_scan
    assert ss.install_into_transformers()
    assert modeling.mamba_selective_scan is hooked
    assert not hasattr(hooked.vlab_original, "vlab_original")


def training_step(model, ids):
    """One forward + backward; returns logits and every parameter gradient."""
    model.zero_grad(set_to_none=True)
    output = model(ids, labels=ids)
    output.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return output.logits.detach(), grads


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_hf_mamba_training_step_matches_hf_loop(backend):
    ss.install_into_transformers()
    model = tiny_mamba().train()
    ids = torch.randint(0, 64, (3, 40), generator=torch.Generator().manual_seed(0))
    with ss.use_scan_backend("reference"):
        ref_logits, ref_grads = training_step(model, ids)
    with ss.use_scan_backend(backend):
        logits, grads = training_step(model, ids)
    torch.testing.assert_close(logits, ref_logits, rtol=RTOL, atol=ATOL)
    assert grads.keys() == ref_grads.keys()
    assert any("A_log" in name for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=RTOL, atol=ATOL, msg=name)


def test_hf_reference_backend_runs_hf_own_loop(monkeypatch):
    import transformers.models.mamba.modeling_mamba as modeling

    ss.install_into_transformers()
    hf_loop = modeling.mamba_selective_scan.vlab_original
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("return_last_state"))
        return hf_loop(*args, **kwargs)

    monkeypatch.setattr(modeling, "mamba_selective_scan", ss._make_hf_adapter(spy))
    model = tiny_mamba()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    model(ids)
    assert calls == []
    with ss.use_scan_backend("reference"):
        model(ids)
    assert calls == [False, False]


def test_hf_generation_cache_path_matches_hf_loop():
    """With a cache HF asks for the last state (return_last_state=True) and then steps."""
    ss.install_into_transformers()
    model = tiny_mamba(seed=2).eval()
    ids = torch.randint(0, 64, (2, 30), generator=torch.Generator().manual_seed(2))

    def prompt_then_step():
        cache = {cache_argument(model): DynamicCache(config=model.config), "use_cache": True}
        with torch.no_grad():
            first = model(ids, **cache)
            step_ids = first.logits[:, -1].argmax(-1, keepdim=True)
            second = model(step_ids, **cache)
        return first.logits, second.logits

    with ss.use_scan_backend("reference"):
        expected = prompt_then_step()
    got = prompt_then_step()
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=RTOL, atol=ATOL)
    with torch.no_grad():  # the step read the prompt's state: it equals re-running it all
        step_ids = got[0][:, -1].argmax(-1, keepdim=True)
        rerun = model(torch.cat([ids, step_ids], 1)).logits[:, -1:]
    torch.testing.assert_close(got[1], rerun, rtol=RTOL, atol=ATOL)


def test_hf_mamba_conv_runs_through_vlab_and_matches_hf_conv():
    """Mamba-1's causal conv is vlab's channel-last one (as Mamba-2's): same training step as
    transformers' grouped conv1d, to float rounding."""
    import transformers.models.mamba.modeling_mamba as modeling

    from vlab.models.ops.ssd import use_hf_conv

    ss.install_into_transformers()
    assert hasattr(modeling.causal_conv1d_fn, "vlab_original")
    model = tiny_mamba().train()
    ids = torch.randint(0, 64, (3, 40), generator=torch.Generator().manual_seed(0))
    with use_hf_conv():
        ref_logits, ref_grads = training_step(model, ids)
    logits, grads = training_step(model, ids)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-5, rtol=1e-4, msg=name)
