"""The final block at the last position only gives transformers' logits and gradients."""

import pytest
import torch
import torch.nn.functional as F

from vlab.models.backbones import BackboneConfig, build_backbone
from vlab.models.backbones.last_position import full_forward, last_position_only


def model_of(arch, **overrides):
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(arch=arch, preset="tiny", overrides=overrides), seed=0)


def step(model, ids, targets, fast, **kwargs):
    """Last-position logits and every weight's gradient of a cross-entropy step."""
    model.zero_grad(set_to_none=True)
    if fast:
        with last_position_only(model) as shortcut:
            out = model(input_ids=ids, logits_to_keep=1, use_cache=False, **kwargs)
    else:
        shortcut = None
        out = model(input_ids=ids, logits_to_keep=1, use_cache=False, **kwargs)
    logits = out.logits[:, -1]
    F.cross_entropy(logits, targets).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads, shortcut


IDS = torch.randint(0, 200, (5, 11), generator=torch.Generator().manual_seed(1))
TARGETS = torch.randint(0, 200, (5,), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize(
    "arch, overrides",
    [
        ("pythia", {}),
        ("pythia", {"use_parallel_residual": False}),
        ("pythia", {"rotary_pct": 0.25, "num_attention_heads": 4}),
        ("hybrid", {}),
        ("hybrid", {"attention_layers": [0]}),  # a Mamba block last
        ("mamba", {}),
        ("mamba2", {}),
    ],
)
def test_logits_and_gradients_equal_transformers(arch, overrides):
    model = model_of(arch, **overrides).train()
    ref_logits, ref_grads, _ = step(model, IDS, TARGETS, fast=False)
    logits, grads, shortcut = step(model, IDS, TARGETS, fast=True)
    assert shortcut is True
    torch.testing.assert_close(logits, ref_logits, atol=2e-6, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-6, rtol=1e-4, msg=name)
    # the class's forward is back: the model's full outputs are transformers' again
    last = model.base_model.layers[-1]
    assert "forward" not in vars(last)
    full = model(input_ids=IDS, use_cache=False).logits
    torch.testing.assert_close(full[:, -1], ref_logits, atol=2e-6, rtol=1e-5)


def test_a_final_block_without_a_shortcut_runs_unchanged():
    model = model_of("mamba", hidden_act="relu").train()
    ref_logits, ref_grads, _ = step(model, IDS, TARGETS, fast=False)
    logits, grads, shortcut = step(model, IDS, TARGETS, fast=True)
    assert shortcut is False
    assert torch.equal(logits, ref_logits)
    assert all(torch.equal(g, ref_grads[n]) for n, g in grads.items())


def test_full_forward_switches_the_shortcut_off():
    model = model_of("pythia")
    with full_forward(), last_position_only(model) as shortcut:
        assert shortcut is False
        assert "forward" not in vars(model.base_model.layers[-1])


@pytest.mark.parametrize("arch", ["pythia", "mamba", "mamba2"])
def test_padding_or_a_cache_is_refused_not_answered_wrongly(arch):
    model = model_of(arch).eval()
    mask = torch.ones_like(IDS)
    mask[0, 0] = 0  # left padding: the last query would not see every key
    with last_position_only(model), pytest.raises(RuntimeError, match="padding mask"):
        model(input_ids=IDS, attention_mask=mask, logits_to_keep=1, use_cache=False)
    with last_position_only(model), pytest.raises(RuntimeError, match="cache"):
        model(input_ids=IDS, logits_to_keep=1, use_cache=True)
    assert "forward" not in vars(model.base_model.layers[-1])
