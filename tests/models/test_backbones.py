"""Backbones: both arms train at tiny size, token rows are added safely, checkpoints load."""

import inspect

import pytest
import torch

from vlab.errors import ConfigError
from vlab.models.backbones import (
    PRESETS,
    BackboneConfig,
    add_tokens,
    base_vocab_size,
    build_backbone,
    cache_argument,
    count_parameters,
    is_recurrent,
)

ARCHS = list(PRESETS)  # every arm: pythia, mamba, mamba2, hybrid


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_backbones_forward_and_backward(arch):
    model = build_backbone(BackboneConfig(arch=arch, preset="tiny"), seed=0)
    ids = torch.randint(0, 200, (3, 12))
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (3, 12, base_vocab_size(model))
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_same_seed_same_model_and_different_seed_differs():
    cfg = BackboneConfig(arch="pythia")
    a, b, c = (build_backbone(cfg, seed=s) for s in (0, 0, 1))
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("scheme", ["normal", "mean", "uniform"])
def test_add_tokens_keeps_old_rows_and_seeds_new_ones(arch, scheme):
    cfg = BackboneConfig(arch=arch, init_scheme=scheme, init_seed=3)
    model = build_backbone(cfg, seed=0)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    n = base_vocab_size(model)
    assert add_tokens(model, 10, cfg) == n
    new_in = model.get_input_embeddings().weight
    assert new_in.shape[0] == n + 10
    assert torch.equal(new_in[:n], old_in)
    assert torch.equal(model.get_output_embeddings().weight[:n], old_out)
    assert new_in[n:].std() > 0
    again = build_backbone(cfg, seed=0)
    add_tokens(again, 10, cfg)
    assert torch.equal(again.get_input_embeddings().weight, new_in)
    other = build_backbone(cfg, seed=0)
    add_tokens(other, 10, BackboneConfig(arch=arch, init_scheme=scheme, init_seed=4))
    assert not torch.equal(other.get_input_embeddings().weight[n:], new_in[n:])
    # the model still runs with the new ids
    model(input_ids=torch.tensor([[n, n + 9, 1]])).logits.sum().backward()


def test_mean_scheme_centres_new_rows_on_the_old_mean():
    cfg = BackboneConfig(arch="pythia", init_scheme="mean", init_std=1e-4)
    model = build_backbone(cfg)
    n = base_vocab_size(model)
    mean = model.get_input_embeddings().weight[:n].mean(0).detach().clone()
    add_tokens(model, 5, cfg)
    new = model.get_input_embeddings().weight[n:]
    assert torch.allclose(new, mean.expand_as(new), atol=1e-3)


def test_untied_pythia_head_gets_its_own_new_rows():
    cfg = BackboneConfig(arch="pythia")
    model = build_backbone(cfg)
    n = base_vocab_size(model)
    add_tokens(model, 4, cfg)
    assert not torch.equal(
        model.get_input_embeddings().weight[n:], model.get_output_embeddings().weight[n:]
    )


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_cpu_presets_have_comparable_parameter_counts(preset):
    counts = {
        a: count_parameters(build_backbone(BackboneConfig(arch=a, preset=preset)))["non_embedding"]
        for a in ARCHS
    }
    assert 0.7 < counts["pythia"] / counts["mamba"] < 1.4, counts
    for new in ("mamba2", "hybrid"):  # the later arms sit within 10% of both first ones
        for old in ("pythia", "mamba"):
            assert abs(counts[new] / counts[old] - 1) <= 0.10, (new, old, counts)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_pretrained_loads_back_through_the_real_path(arch, tmp_path):
    cfg = BackboneConfig(arch=arch)
    model = build_backbone(cfg, seed=5)
    add_tokens(model, 6, cfg)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = build_backbone(BackboneConfig(arch=arch, pretrained=str(tmp_path / "ckpt")))
    assert type(loaded) is type(model)
    ids = torch.tensor([[1, 2, base_vocab_size(model) - 1]])
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    sd, ld = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(sd[k], ld[k]) for k in sd)


def test_pretrained_of_the_wrong_architecture_is_rejected(tmp_path):
    build_backbone(BackboneConfig(arch="pythia")).save_pretrained(tmp_path / "neox")
    with pytest.raises(ConfigError, match="pretrained"):
        build_backbone(BackboneConfig(arch="mamba", pretrained=str(tmp_path / "neox")))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"arch": "rwkv"}, "arch"),
        ({"preset": "huge"}, "preset"),
        ({"pretrained": "/nonexistent/dir"}, "pretrained"),
        ({"init_std": 0.0}, "init_std"),
    ],
)
def test_invalid_backbone_configs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        BackboneConfig(**kwargs)
    assert e.value.field == field


def test_paper_shapes_are_the_published_ones():
    from vlab.models.backbones import hf_config

    neox = hf_config("pythia", "1.4b")
    assert (neox.hidden_size, neox.num_hidden_layers, neox.num_attention_heads) == (2048, 24, 16)
    rope = getattr(neox, "rope_parameters", None) or {}
    assert rope.get("partial_rotary_factor", getattr(neox, "rotary_pct", None)) == 0.25
    mamba = hf_config("mamba", "1.4b")
    assert (mamba.hidden_size, mamba.num_hidden_layers, mamba.state_size) == (2048, 48, 16)
    assert set(PRESETS["mamba"]) >= {"790m", "1.4b", "2.8b"}
    mamba2 = hf_config("mamba2", "1.3b")  # state-spaces/mamba2-1.3b
    assert (mamba2.hidden_size, mamba2.num_hidden_layers, mamba2.state_size) == (2048, 48, 128)
    assert (mamba2.head_dim, mamba2.n_groups, mamba2.expand) == (64, 1, 2)
    hybrid = hf_config("hybrid", "1.4b")  # Mamba's 1.4b with attention every 8th layer from 4
    assert (hybrid.hidden_size, hybrid.num_hidden_layers) == (2048, 48)
    assert hybrid.attention_layers == list(range(4, 48, 8))


class _OldMamba(torch.nn.Module):
    def forward(self, input_ids=None, inputs_embeds=None, cache_params=None, use_cache=None):
        return None


class _OldNeoX(torch.nn.Module):
    def forward(self, input_ids=None, position_ids=None, past_key_values=None, use_cache=None):
        return None


class _NoCache(torch.nn.Module):
    def forward(self, input_ids=None, position_ids=None):
        return None


@pytest.mark.parametrize("arch", ARCHS)
def test_decoding_arguments_are_read_off_the_installed_transformers(arch):
    """The installed release's real classes, then the names transformers < 5.24 used."""
    model = build_backbone(BackboneConfig(arch=arch))
    params = inspect.signature(model.forward).parameters
    assert cache_argument(model) in params
    assert is_recurrent(model) == (arch in ("mamba", "mamba2"))


def test_decoding_arguments_of_older_releases_and_an_unsupported_one():
    assert cache_argument(_OldMamba()) == "cache_params" and is_recurrent(_OldMamba())
    assert cache_argument(_OldNeoX()) == "past_key_values" and not is_recurrent(_OldNeoX())
    with pytest.raises(ConfigError, match="cached decoding"):
        cache_argument(_NoCache())


def test_older_config_names_that_transformers_translates_are_accepted_typos_are_not():
    from vlab.models.backbones import check_overrides

    # GPT-NeoX's rotary_pct lives on as rope_parameters.partial_rotary_factor
    cfg = BackboneConfig(arch="pythia", overrides={"rotary_pct": 0.25})
    check_overrides(cfg)
    model = build_backbone(cfg)
    assert model.config.rope_parameters["partial_rotary_factor"] == 0.25
    with pytest.raises(ConfigError, match="'rotary_pctx' is not a setting"):
        check_overrides(BackboneConfig(arch="pythia", overrides={"rotary_pctx": 0.25}))
