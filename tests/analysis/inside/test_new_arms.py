"""Looking inside the two new arms, Mamba-2 and the hybrid (Mamba-1 blocks with attention
blocks), on tiny random models, against what is exactly true whatever the weights: named
activations are the model's own (its hidden states, its eager attention weights, its mixer's
output and cached state), a patch of a run's own activations changes nothing, a whole
residual stream carries the run, each layer has the names of its kind of block and no others,
and every analysis returns its table on both arms."""

import re
from dataclasses import replace
from functools import cache

import numpy as np
import pandas as pd
import pytest
import torch

from vlab.analysis.inside import activations as acts
from vlab.analysis.inside.activations import Patch, StatePatch
from vlab.analysis.inside.attention import COLUMNS as ATTENTION_COLUMNS
from vlab.analysis.inside.attention import attention_table
from vlab.analysis.inside.logit_lens import COLUMNS as LENS_COLUMNS
from vlab.analysis.inside.logit_lens import logit_lens_table
from vlab.analysis.inside.patching import COLUMNS as PATCHING_COLUMNS
from vlab.analysis.inside.patching import patching_table
from vlab.analysis.inside.state_probe import COLUMNS as PROBE_COLUMNS
from vlab.analysis.inside.state_probe import features, state_probe_table
from vlab.errors import VlabError
from vlab.models.backbones import BackboneConfig, add_tokens, build_backbone
from vlab.models.backbones import mamba2_internals as ssd
from vlab.models.backbones.mamba_internals import mixer_internals, readout, scan_states
from vlab.probes.examples import heldout_examples
from vlab.probes.tasks import ProbeTaskConfig, ProbeVocab

# flavour -> (arch, overrides): the tiny hybrid has layer 0 Mamba and layer 1 attention
FLAVOURS = {
    "hybrid": ("hybrid", {}),
    "hybrid_attention_first": ("hybrid", {"attention_layers": [0]}),
    "mamba2": ("mamba2", {}),
}
LENGTH = 5


def model_of(flavour: str, seed: int = 0, **overrides) -> torch.nn.Module:
    arch, base = FLAVOURS[flavour]
    cfg = BackboneConfig(arch=arch, overrides={**base, "initializer_range": 0.3, **overrides})
    return build_backbone(cfg, seed=seed).eval()


def ids(batch: int = 3, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 200, (batch, length), generator=torch.Generator().manual_seed(seed))


def ssm_layer(model: torch.nn.Module) -> int:
    return acts.layers_with(model, "ssm.state")[0]


def attention_layer(model: torch.nn.Module) -> int:
    return acts.layers_with(model, "attn.pattern")[0]


# -- names: per layer, what its block has -------------------------------------------------

MAMBA_NAMES = ["x", "z", "delta", "B", "C", "state", "hidden_attention", "conv_window"]


def block(i: int, kind: str) -> list[str]:
    middle = ["mixer_in", "mixer_out"]
    middle += ["attn.pattern"] if kind == "attention" else [f"ssm.{n}" for n in MAMBA_NAMES]
    return [f"blocks.{i}.{n}" for n in ["resid_pre", *middle, "resid_post"]]


@pytest.mark.parametrize(
    "flavour,kinds",
    [
        ("hybrid", ["mamba", "attention"]),
        ("hybrid_attention_first", ["attention", "mamba"]),
        ("mamba2", ["mamba2", "mamba2"]),
    ],
)
def test_each_layer_has_the_names_of_its_block_in_execution_order(flavour, kinds):
    model = model_of(flavour)
    names = acts.activation_names(model)
    want = ["embed", *block(0, kinds[0]), *block(1, kinds[1]), "final_norm", "logits"]
    assert names == want
    assert names == acts.activation_names(model_of(flavour, seed=1))
    assert [acts.block_kind(model, i) for i in range(2)] == kinds
    documented = acts.__doc__
    for name in names:
        template = re.sub(r"blocks\.\d+\.", "blocks.{i}.", name).replace("blocks.{i}.", "")
        assert template in documented, name


@pytest.mark.parametrize(
    "flavour,name,message",
    [
        (
            "hybrid",
            "blocks.0.attn.pattern",
            "unknown activation 'blocks.0.attn.pattern': layer 0 of this vlab_hybrid model is "
            "a mamba block, which has resid_pre, mixer_in, mixer_out, ssm.x",
        ),
        ("hybrid", "blocks.0.attn.pattern", "attn.pattern is at layers [1]"),
        ("hybrid", "blocks.1.ssm.state", "layer 1 of this vlab_hybrid model is an attention block"),
        ("hybrid", "blocks.1.ssm.state", "ssm.state is at layers [0]"),
        ("hybrid_attention_first", "blocks.1.attn.pattern", "attn.pattern is at layers [0]"),
        ("hybrid", "blocks.0.mlp_out", "layer 0 of this vlab_hybrid model is a mamba block"),
        ("mamba2", "blocks.1.attn.pattern", "layer 1 of this mamba2 model is a mamba2 block"),
        ("mamba2", "blocks.2.resid_post", "the model has layers 0..1"),
    ],
)
def test_a_name_a_layer_lacks_is_one_line_naming_the_layer_and_what_it_has(flavour, name, message):
    with pytest.raises(VlabError, match=re.escape(message)) as error:
        acts.trace(model_of(flavour), ids(), [name])
    assert "\n" not in str(error.value)


def test_state_patches_need_a_layer_with_a_state_and_computed_names_cannot_be_patched():
    model = model_of("hybrid")
    with pytest.raises(VlabError, match=r"layer 1 .* attention block: it has no SSM state") as e:
        acts.trace(model, ids(), state_patches=[StatePatch(1, 0, torch.zeros(3, 144, 16))])
    assert "\n" not in str(e.value)
    with pytest.raises(VlabError, match="cannot be patched"):
        acts.trace(model, ids(), patches=[Patch("blocks.0.ssm.x", [0], torch.zeros(3, 1, 144))])


# -- names read the model's own activations ------------------------------------------------


@pytest.mark.parametrize("flavour", ["hybrid", "hybrid_attention_first", "mamba2"])
def test_residual_stream_equals_the_hidden_states_the_model_returns(flavour):
    model = model_of(flavour)
    x = ids()
    got = acts.trace(model, x, acts.activation_names(model))
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    hidden = ref.hidden_states
    assert len(hidden) == 3  # both arms: 2 layers give 3 hidden states, conventions differ
    if flavour == "mamba2":  # Mamba-2: each block's output, then the final norm
        torch.testing.assert_close(got["blocks.0.resid_post"], hidden[0])
        torch.testing.assert_close(got["blocks.1.resid_post"], hidden[1])
    else:  # the hybrid: the embeddings, each block's output but the last, the final norm
        torch.testing.assert_close(got["embed"], hidden[0])
        torch.testing.assert_close(got["blocks.0.resid_post"], hidden[1])
    # the trace reads attn.pattern on the eager path, the reference runs sdpa: float rounding
    torch.testing.assert_close(got["final_norm"], hidden[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["logits"], ref.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got["embed"], model.get_input_embeddings()(x))
    for i in range(2):
        torch.testing.assert_close(
            got[f"blocks.{i}.resid_pre"] + got[f"blocks.{i}.mixer_out"],
            got[f"blocks.{i}.resid_post"],
        )
    torch.testing.assert_close(got["blocks.1.resid_pre"], got["blocks.0.resid_post"])
    torch.testing.assert_close(acts.unembed(model, got["blocks.1.resid_post"]), got["logits"])


def _eager_weights(model: torch.nn.Module, layer: int, mixer_in: torch.Tensor) -> tuple:
    """The attention module of ``layer`` run by hand on the eager path: (output, weights)."""
    length = mixer_in.shape[1]
    mask = torch.full((length, length), float("-inf")).triu(1)[None, None]
    positions = torch.arange(length)[None]
    rotary = model.backbone.rotary_emb(mixer_in, positions)
    with torch.no_grad():
        return acts.mixer(model, layer)(mixer_in, attention_mask=mask, position_embeddings=rotary)


@pytest.mark.parametrize("flavour", ["hybrid", "hybrid_attention_first"])
def test_attention_pattern_equals_eager_attention_weights_and_the_model_stays_sdpa(flavour):
    model = model_of(flavour)
    assert model.config._attn_implementation == "sdpa"
    i = attention_layer(model)
    names = [f"blocks.{i}.mixer_in", f"blocks.{i}.mixer_out", f"blocks.{i}.attn.pattern"]
    got = acts.trace(model, ids(), names)
    assert model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    output, weights = _eager_weights(model, i, got[names[0]])
    model.set_attn_implementation("sdpa")
    pattern = got[names[2]]
    assert pattern.shape == (3, model.config.num_attention_heads, 9, 9)
    torch.testing.assert_close(pattern, weights)
    torch.testing.assert_close(output, got[names[1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(3, 2, 9))
    assert (pattern.triu(1) == 0).all()  # causal


def test_hybrid_mamba_layer_state_reproduces_its_mixer_and_the_cached_state():
    model = model_of("hybrid")
    x = ids()
    got = acts.trace(model, x, ["blocks.0.mixer_in", "blocks.0.mixer_out", "blocks.0.ssm.state"])
    mixer = acts.mixer(model, 0)
    internals = mixer_internals(mixer, got["blocks.0.mixer_in"])
    states = scan_states(internals)
    torch.testing.assert_close(states, got["blocks.0.ssm.state"])
    with torch.no_grad():
        out = mixer.out_proj(readout(internals, states).transpose(1, 2))
        cached = model(x, use_cache=True).cache.get_recurrent_state(0, state_idx=0)
    torch.testing.assert_close(out, got["blocks.0.mixer_out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states[..., -1], cached.float(), atol=1e-5, rtol=1e-5)


def test_mamba2_computed_names_reproduce_the_mixer_and_the_cached_state():
    model = model_of("mamba2")
    x = ids(length=11)
    names = [f"blocks.1.{n}" for n in ["mixer_in", "mixer_out", "ssm.state", "ssm.x"]]
    names.append("blocks.1.ssm.hidden_attention")
    got = acts.trace(model, x, names)
    mixer = acts.mixer(model, 1)
    c = model.config
    heads, head_dim = c.num_heads, c.head_dim
    state = got["blocks.1.ssm.state"]
    assert state.shape == (3, heads, head_dim, c.state_size, 11)
    internals = ssd.mixer_internals(mixer, got["blocks.1.mixer_in"])
    torch.testing.assert_close(internals.x, got["blocks.1.ssm.x"])
    # through the state
    out = ssd.mixer_output(mixer, internals, ssd.readout(internals, state))
    torch.testing.assert_close(out, got["blocks.1.mixer_out"], atol=1e-5, rtol=1e-5)
    # through the hidden attention: y_t = sum_s alpha[t, s] x_s + D x_t
    alpha = got["blocks.1.ssm.hidden_attention"]
    assert alpha.shape == (3, heads, 11, 11) and (alpha.triu(1) == 0).all()
    y = torch.einsum("bhts,bhps->bhpt", alpha, internals.x)
    y = y + internals.D[None, :, None, None] * internals.x
    out = ssd.mixer_output(mixer, internals, y)
    torch.testing.assert_close(out, got["blocks.1.mixer_out"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ssd.last_row(internals), alpha[:, :, -1])
    with torch.no_grad():
        cached = model(x, use_cache=True).cache.get_recurrent_state(1, state_idx=0)
    torch.testing.assert_close(state[..., -1], cached.float(), atol=1e-5, rtol=1e-5)


# -- patching --------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["hybrid", "hybrid_attention_first", "mamba2"])
def test_patching_a_run_with_its_own_activations_changes_nothing(flavour):
    model = model_of(flavour)
    clean, corrupted = ids(seed=0), ids(seed=1)
    names = ["blocks.1.resid_pre", "blocks.0.mixer_out", "blocks.1.mixer_out", "embed"]
    c = acts.trace(model, clean, names)
    d = acts.trace(model, corrupted, names)
    for name in names:
        same = acts.trace(model, clean, patches=[Patch(name, [2, 5], c[name][:, [2, 5]])])
        torch.testing.assert_close(same["logits"], c["logits"], atol=1e-5, rtol=1e-5)
        back = acts.trace(model, corrupted, patches=[Patch(name, [2, 5], d[name][:, [2, 5]])])
        torch.testing.assert_close(back["logits"], d["logits"], atol=1e-5, rtol=1e-5)
    layer = ssm_layer(model)
    state = acts.trace(model, clean, [f"blocks.{layer}.ssm.state"])[f"blocks.{layer}.ssm.state"]
    for t in (0, 4, 8):
        own = acts.trace(model, clean, state_patches=[StatePatch(layer, t, state[..., t])])
        torch.testing.assert_close(own["logits"], c["logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("flavour", ["hybrid", "hybrid_attention_first", "mamba2"])
def test_replacing_a_whole_resid_pre_gives_the_other_runs_logits(flavour):
    model = model_of(flavour)
    clean, corrupted = ids(seed=0), ids(seed=1)
    every = list(range(clean.shape[1]))
    c = acts.trace(model, clean, ["blocks.1.resid_pre"])
    d = acts.trace(model, corrupted)
    moved = acts.trace(
        model, corrupted, patches=[Patch("blocks.1.resid_pre", every, c["blocks.1.resid_pre"])]
    )
    torch.testing.assert_close(moved["logits"], c["logits"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(d["logits"], c["logits"], atol=1e-3)


def test_patching_the_mamba2_state_restores_what_follows_it():
    # one layer: after the state at t is restored and the inputs agree from t - 3 on (the conv
    # window is 4), every later output is the clean one; earlier ones stay corrupted
    model = model_of("mamba2", num_hidden_layers=1)
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


# -- the analyses ----------------------------------------------------------------------------


@cache
def setup(flavour: str):
    """A tiny random model of ``flavour`` with the probe's tokens, and 30 held-out examples
    (example k queries position k mod L)."""
    arch, base = FLAVOURS[flavour]
    task = ProbeTaskConfig(length=LENGTH, n_train=300, n_heldout=30, variant="suffix")
    cfg = BackboneConfig(arch=arch, overrides={**base, "initializer_range": 0.3})
    model = build_backbone(cfg, seed=0)
    vocab = ProbeVocab.for_task(task, base_vocab_size=model.get_input_embeddings().weight.shape[0])
    add_tokens(model, len(vocab.new_token_names), cfg)
    return model.eval(), vocab, heldout_examples(task, vocab, 30)


def first(examples, n: int):
    return replace(
        examples,
        input_ids=examples.input_ids[:n],
        contexts=examples.contexts[:n],
        positions=examples.positions[:n],
        targets=examples.targets[:n],
    )


def _weights(table: pd.DataFrame, layer: int, head: int) -> np.ndarray:
    rows = table[(table["layer"] == layer) & (table["head"] == head)]
    return rows.pivot(index="target_position", columns="source_position", values="weight").values


@pytest.mark.parametrize("flavour", ["hybrid", "hybrid_attention_first", "mamba2"])
def test_attention_table_has_each_layers_kind_and_its_own_weights(flavour):
    model, _, examples = setup(flavour)
    examples = first(examples, LENGTH)  # one example per target position
    table = attention_table(model, examples)
    assert list(table.columns) == ATTENTION_COLUMNS
    heads = model.config.num_attention_heads if flavour != "mamba2" else 0
    assert len(table) == (heads + 1 + 1 if heads else 2) * LENGTH * LENGTH
    assert not table.duplicated(["layer", "head", "target_position", "source_position"]).any()
    context = examples.context_start + np.arange(LENGTH)
    attention = acts.layers_with(model, "attn.pattern")
    names = [
        f"blocks.{i}.attn.pattern" if i in attention else f"blocks.{i}.ssm.hidden_attention"
        for i in range(2)
    ]
    traced = acts.trace(model, examples.input_ids, names)
    for i, name in enumerate(names):
        rows = table[table["layer"] == i]
        last = traced[name][:, :, -1, :].float()  # (example = target p, heads or channels, T)
        if name.endswith("attn.pattern"):
            assert set(rows["kind"]) == {"attention"}
            assert set(rows["head"]) == {0, 1, -1}
            for head in range(heads):
                np.testing.assert_allclose(
                    _weights(table, i, head), last[:, head, context].numpy(), atol=1e-6
                )
            mean = last.mean(dim=1)[:, context].numpy()
            np.testing.assert_allclose(_weights(table, i, -1), mean, atol=1e-6)
        else:  # the share: |alpha| averaged over channels (heads), normalised over T
            assert set(rows["kind"]) == {"hidden_attention"} and set(rows["head"]) == {-1}
            share = last.abs().mean(dim=1)
            share = (share / share.sum(dim=-1, keepdim=True))[:, context].numpy()
            np.testing.assert_allclose(_weights(table, i, -1), share, rtol=1e-5, atol=1e-7)
    assert table["weight"].between(0, 1).all()


@pytest.mark.parametrize("flavour", ["hybrid", "mamba2"])
def test_state_probe_reads_the_state_of_each_ssm_layer(flavour):
    model, vocab, examples = setup(flavour)
    got = features(model, examples, batch_size=16)
    ssm_layers = acts.layers_with(model, "ssm.state")
    assert ssm_layers == ([0] if flavour == "hybrid" else [0, 1])
    assert {k for k in got if k[0] == "ssm_state"} == {("ssm_state", i) for i in ssm_layers}
    name = f"blocks.{ssm_layers[-1]}.ssm.state"
    state = acts.trace(model, examples.input_ids, [name])[name][..., examples.context_end]
    np.testing.assert_allclose(got[("ssm_state", ssm_layers[-1])], state.flatten(1).numpy())
    table = state_probe_table(model, examples, vocab)
    assert list(table.columns) == PROBE_COLUMNS
    assert len(table) == (3 + len(ssm_layers)) * (LENGTH + 1)
    assert set(table.loc[table["source"] == "ssm_state", "layer"]) == set(ssm_layers)
    assert table["accuracy"].between(0, 1).all()


@pytest.mark.parametrize("flavour", ["hybrid", "mamba2"])
def test_logit_lens_at_the_last_layer_is_the_models_prediction(flavour):
    model, _, examples = setup(flavour)
    table = logit_lens_table(model, examples)
    assert list(table.columns) == LENS_COLUMNS
    assert sorted(set(table["layer"])) == [-1, 0, 1]
    with torch.no_grad():
        logits = model(examples.input_ids).logits[:, -1].float()
    probability = logits.softmax(-1).gather(1, examples.targets.long()[:, None])[:, 0]
    want = pd.Series(probability.numpy()).groupby(np.asarray(examples.positions)).mean()
    last = table[table["layer"] == 1].set_index("target_position")["probability"]
    np.testing.assert_allclose(last.sort_index().values, want.sort_index().values, rtol=1e-5)


@pytest.mark.parametrize("flavour", ["hybrid", "mamba2"])
def test_patching_table_patches_the_state_of_each_ssm_layer(flavour):
    model, vocab, examples = setup(flavour)
    examples = first(examples, LENGTH)
    length = examples.input_ids.shape[1]
    table = patching_table(model, examples, vocab, corruptions=["other_query"])
    assert list(table.columns) == PATCHING_COLUMNS
    ssm_layers = acts.layers_with(model, "ssm.state")
    sites = table.groupby("site")["layer"].unique()
    assert sorted(sites["resid_pre"]) == [0, 1, 2]
    for site in ("ssm_state", "conv_window", "state_and_window"):
        assert sorted(sites[site]) == ssm_layers
    assert len(table) == (3 + 3 * len(ssm_layers)) * length
    # the residual stream after the last block at the last position is the whole answer
    last = table[(table["site"] == "resid_pre") & (table["layer"] == 2)]
    np.testing.assert_allclose(last.iloc[-1]["recovery"], 1.0, atol=1e-4)
    # other_query changes only the query token: before it, clean and corrupted runs agree
    before = table[table["position"] < examples.query_index]
    np.testing.assert_allclose(before["ld_patched"], before["ld_corrupted"], atol=1e-5)


def test_vlab_inspect_runs_every_analysis_on_both_arms_and_the_report_reads_them(tmp_path):
    from vlab.analysis.inside.results import load_inside
    from vlab.cli import main
    from vlab.config import from_dict
    from vlab.probes.config import ProbeRunConfig
    from vlab.probes.trainer import run_probe

    for arch in ("hybrid", "mamba2"):
        cfg = from_dict(
            ProbeRunConfig,
            {
                "task": {"length": 4, "n_heldout": 32},
                "model": {"arch": arch},
                "train": {"steps": 10, "eval_every": 10, "threads": 1, "keep_checkpoints": 1},
            },
        )
        run_probe(cfg, tmp_path / "runs" / arch, progress=False, log=lambda *_: None)
    assert main(["inspect", str(tmp_path), "--examples", "16", "--no-progress"]) == 0
    results = load_inside(tmp_path)
    assert results.warnings == []
    for analysis in ("logit_lens", "attention", "state_probe", "patching"):
        assert set(results.tables[analysis]["arch"]) == {"hybrid", "mamba2"}, analysis
    kinds = results.tables["attention"].groupby(["arch", "layer"])["kind"].agg(set).to_dict()
    assert kinds == {
        ("hybrid", 0): {"hidden_attention"},
        ("hybrid", 1): {"attention"},
        ("mamba2", 0): {"hidden_attention"},
        ("mamba2", 1): {"hidden_attention"},
    }
    states = results.tables["state_probe"].query("source == 'ssm_state'")
    assert states.groupby("arch")["layer"].unique().map(sorted).to_dict() == {
        "hybrid": [0],
        "mamba2": [0, 1],
    }
