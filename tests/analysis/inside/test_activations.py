"""Named activations read through nnsight equal the HF model's own outputs; patching a run with
its own activations changes nothing; the recomputed SSM state reproduces the mixer and the
state transformers caches; names are stable and documented."""

import re
from pathlib import Path

import pytest
import torch

from vlab.analysis.inside import activations as acts
from vlab.analysis.inside.activations import Patch, StatePatch
from vlab.errors import VlabError
from vlab.models.backbones import BackboneConfig, build_backbone
from vlab.models.backbones.mamba_internals import mixer_internals, readout, scan_states

README = Path(__file__).resolve().parents[3] / "README.md"


def model_of(arch: str, seed: int = 0, **kwargs):
    return build_backbone(BackboneConfig(arch=arch, **kwargs), seed=seed).eval()


def ids(batch=3, length=9, seed=0):
    return torch.randint(0, 200, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_names_are_the_same_for_two_models_of_an_arm_and_documented(arch):
    names = acts.activation_names(model_of(arch, seed=0))
    assert names == acts.activation_names(model_of(arch, seed=1))
    documented = README.read_text()
    for name in names:
        assert re.sub(r"blocks\.\d+\.", "blocks.{i}.", name) in documented, name


def test_names_say_what_each_arm_has():
    pythia = set(acts.activation_names(model_of("pythia")))
    mamba = set(acts.activation_names(model_of("mamba")))
    shared = {"embed", "blocks.1.resid_pre", "blocks.1.mixer_out", "blocks.1.resid_post", "logits"}
    assert shared <= pythia & mamba
    assert "blocks.0.attn.pattern" in pythia - mamba
    assert {"blocks.0.ssm.state", "blocks.0.ssm.delta"} <= mamba - pythia


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_residual_stream_equals_the_hidden_states_of_the_hf_model(arch):
    model = model_of(arch)
    x = ids()
    got = acts.trace(model, x, acts.activation_names(model))
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    n = acts.num_layers(model)
    torch.testing.assert_close(got["logits"], ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["final_norm"], ref.hidden_states[-1], atol=1e-6, rtol=1e-6)
    # transformers' conventions differ per family; the names do not
    first = 1 if arch == "pythia" else 0  # GPT-NeoX's hidden_states[0] are the embeddings
    for i in range(n - 1):
        torch.testing.assert_close(got[f"blocks.{i}.resid_post"], ref.hidden_states[first + i])
        torch.testing.assert_close(got[f"blocks.{i + 1}.resid_pre"], got[f"blocks.{i}.resid_post"])
    torch.testing.assert_close(got["blocks.0.resid_pre"], got["embed"])
    torch.testing.assert_close(got["embed"], model.get_input_embeddings()(x))
    torch.testing.assert_close(acts.unembed(model, got[f"blocks.{n - 1}.resid_post"]), ref.logits)


def test_attention_pattern_equals_output_attentions():
    model = model_of("pythia", attn_implementation="eager")
    x = ids()
    got = acts.trace(model, x, ["blocks.0.attn.pattern", "blocks.1.attn.pattern"])
    with torch.no_grad():
        ref = model(x, output_attentions=True).attentions
    for i in range(2):
        torch.testing.assert_close(got[f"blocks.{i}.attn.pattern"], ref[i])
    assert torch.allclose(ref[0].sum(-1), torch.ones(()))


def test_the_pattern_is_read_from_an_sdpa_model_too_and_the_model_is_left_as_it_was():
    model = model_of("pythia")  # sdpa: no weights unless switched to eager for the trace
    got = acts.trace(model, ids(), ["blocks.1.attn.pattern"])["blocks.1.attn.pattern"]
    assert got.shape == (3, model.config.num_attention_heads, 9, 9)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_patching_a_run_with_its_own_activations_changes_nothing(arch):
    model = model_of(arch)
    clean, corrupted = ids(seed=0), ids(seed=1)
    names = ["blocks.1.resid_pre", "blocks.0.mixer_out"]
    c = acts.trace(model, clean, names)
    d = acts.trace(model, corrupted, names)
    for name in names:
        same = acts.trace(model, clean, patches=[Patch(name, [2, 5], c[name][:, [2, 5]])])
        torch.testing.assert_close(same["logits"], c["logits"], atol=1e-5, rtol=1e-5)
        back = acts.trace(model, corrupted, patches=[Patch(name, [2, 5], d[name][:, [2, 5]])])
        torch.testing.assert_close(back["logits"], d["logits"], atol=1e-5, rtol=1e-5)
    # the whole residual stream entering block 1 decides everything after it
    every = list(range(clean.shape[1]))
    moved = acts.trace(model, corrupted, patches=[Patch("blocks.1.resid_pre", every, c[names[0]])])
    torch.testing.assert_close(moved["logits"], c["logits"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(d["logits"], c["logits"], atol=1e-3)


def test_recomputed_ssm_state_reproduces_the_mixer_and_the_cached_state():
    model = model_of("mamba")
    x = ids()
    got = acts.trace(model, x, ["blocks.1.mixer_in", "blocks.1.mixer_out", "blocks.1.ssm.state"])
    mixer = acts.mixer(model, 1)
    internals = mixer_internals(mixer, got["blocks.1.mixer_in"])
    states = scan_states(internals)
    torch.testing.assert_close(states, got["blocks.1.ssm.state"])
    with torch.no_grad():
        out = mixer.out_proj(readout(internals, states).transpose(1, 2))
        cache = model(x, use_cache=True).cache_params
    torch.testing.assert_close(out, got["blocks.1.mixer_out"], atol=1e-5, rtol=1e-5)
    cached = cache.get_recurrent_state(1, state_idx=0)
    torch.testing.assert_close(states[..., -1], cached.float(), atol=1e-5, rtol=1e-5)


def test_patching_the_ssm_state_restores_what_follows_it():
    # one layer: after the state at t is restored and the inputs agree from t - 3 on (the conv
    # window is 4), every later output is the clean one; earlier ones stay corrupted
    model = model_of("mamba", overrides={"num_hidden_layers": 1})
    clean = ids(length=12)
    corrupted = clean.clone()
    corrupted[:, 1] = (clean[:, 1] + 1) % 200
    c = acts.trace(model, clean, ["blocks.0.ssm.state"])
    d = acts.trace(model, corrupted)
    t = 6
    patched = acts.trace(
        model, corrupted, state_patches=[StatePatch(0, t, c["blocks.0.ssm.state"][..., t])]
    )
    torch.testing.assert_close(patched["logits"][:, t:], c["logits"][:, t:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patched["logits"][:, :t], d["logits"][:, :t])
    assert not torch.allclose(d["logits"][:, t:], c["logits"][:, t:], atol=1e-4)
    same = acts.trace(
        model, clean, state_patches=[StatePatch(0, 11, c["blocks.0.ssm.state"][..., 11])]
    )
    torch.testing.assert_close(same["logits"], c["logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "arch,name,message",
    [
        ("pythia", "blocks.0.ssm.state", "unknown activation 'blocks.0.ssm.state'"),
        ("mamba", "blocks.0.attn.pattern", "unknown activation"),
        ("mamba", "blocks.7.resid_post", "the model has layers 0..1"),
        ("pythia", "resid", "unknown activation 'resid'"),
    ],
)
def test_unknown_names_are_one_line_errors(arch, name, message):
    with pytest.raises(VlabError, match=re.escape(message)):
        acts.trace(model_of(arch), ids(), [name])


def test_computed_names_and_attention_models_cannot_be_state_patched():
    with pytest.raises(VlabError, match="cannot be patched"):
        x = torch.zeros(3, 9, 128)
        acts.trace(model_of("mamba"), ids(), patches=[Patch("blocks.0.ssm.x", [0], x)])
    with pytest.raises(VlabError, match="no SSM state"):
        acts.trace(model_of("pythia"), ids(), state_patches=[StatePatch(0, 0, torch.zeros(1))])


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_input_embeddings_trace_like_their_ids(arch):
    model = model_of(arch)
    x = ids()
    names = ["embed", "blocks.0.resid_pre", "blocks.1.mixer_in"]
    by_ids = acts.trace(model, x, names)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(x)
    by_embeds = acts.trace(model, embeds, names)
    for name in (*names, "logits"):
        torch.testing.assert_close(by_embeds[name], by_ids[name])
    other = acts.trace(model, ids(seed=5), ["embed"])["embed"]
    patched = acts.trace(model, embeds, patches=[Patch("embed", [0, 1], other[:, :2])])
    want = acts.trace(model, x, patches=[Patch("embed", [0, 1], other[:, :2])])
    torch.testing.assert_close(patched["logits"], want["logits"])
