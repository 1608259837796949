"""Where the model looks: the table's weights are the model's own attention (checked against
Hugging Face's ``output_attentions`` and Mamba's hidden attention computed by hand), and equal
1/T where the attention is uniform by construction."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from vlab.analysis.inside.activations import trace
from vlab.analysis.inside.attention import COLUMNS, attention_table, queried_mass
from vlab.models.backbones import BackboneConfig, add_tokens, build_backbone
from vlab.probes.examples import ProbeExamples, heldout_examples
from vlab.probes.tasks import ProbeTaskConfig, ProbeVocab

LENGTH = 6


def setup(arch: str, variant: str = "suffix", n: int = 60, **model) -> tuple:
    task = ProbeTaskConfig(length=LENGTH, n_train=600, n_heldout=60, variant=variant)
    cfg = BackboneConfig(arch=arch, **model)
    net = build_backbone(cfg, seed=0)
    vocab = ProbeVocab.for_task(task, base_vocab_size=net.get_input_embeddings().weight.shape[0])
    add_tokens(net, len(vocab.new_token_names), cfg)
    return net.eval(), heldout_examples(task, vocab, n)


def first(examples: ProbeExamples, n: int) -> ProbeExamples:
    """The first n examples (example i targets position i mod L: one example per target)."""
    return replace(
        examples,
        input_ids=examples.input_ids[:n],
        contexts=examples.contexts[:n],
        positions=examples.positions[:n],
        targets=examples.targets[:n],
    )


def weights(table: pd.DataFrame, layer: int, head: int) -> np.ndarray:
    """(target_position, source_position) weights of one layer and head."""
    rows = table[(table["layer"] == layer) & (table["head"] == head)]
    return rows.pivot(index="target_position", columns="source_position", values="weight").values


@pytest.mark.parametrize("variant", ["suffix", "prefix"])
def test_weights_are_hugging_face_attentions_at_the_prediction_position(variant):
    model, examples = setup("pythia", variant, attn_implementation="eager")
    examples = first(examples, LENGTH)
    with torch.no_grad():
        want = model(examples.input_ids, output_attentions=True).attentions
    names = [f"blocks.{i}.attn.pattern" for i in range(len(want))]
    traced = trace(model, examples.input_ids, names)
    table = attention_table(model, examples)
    context = examples.context_start + np.arange(LENGTH)
    for i, name in enumerate(names):
        torch.testing.assert_close(traced[name], want[i], atol=1e-6, rtol=1e-6)
        last = want[i][:, :, -1, :][:, :, context].numpy()  # (example = target p, head, L)
        for head in range(last.shape[1]):
            np.testing.assert_allclose(weights(table, i, head), last[:, head], atol=1e-6)
        np.testing.assert_allclose(weights(table, i, -1), last.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_one_row_per_layer_head_target_and_source_and_rows_sum_to_at_most_one(arch):
    model, examples = setup(arch)
    table = attention_table(model, examples)
    layers = model.config.num_hidden_layers
    heads = model.config.num_attention_heads + 1 if arch == "pythia" else 1
    assert list(table.columns) == COLUMNS
    assert len(table) == layers * heads * LENGTH * LENGTH
    assert set(table["kind"]) == {"attention" if arch == "pythia" else "hidden_attention"}
    assert set(table["layer"]) == set(range(layers))
    assert set(table["target_position"]) == set(table["source_position"]) == set(range(LENGTH))
    assert table["weight"].between(0, 1).all()
    sums = table.groupby(["layer", "head", "target_position"])["weight"].sum()
    assert (sums <= 1 + 1e-6).all() and (sums > 0).all()
    assert not table.duplicated(["layer", "head", "target_position", "source_position"]).any()


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_batches_do_not_change_the_table(arch):
    model, examples = setup(arch, "prefix", n=30)
    whole = attention_table(model, examples, batch_size=64)
    pieces = attention_table(model, examples, batch_size=7)
    pd.testing.assert_frame_equal(whole, pieces, atol=1e-6, rtol=0)


def test_uniform_attention_weighs_every_source_one_over_t():
    # query_key_value all zero: every score is 0, so causal softmax gives 1/T to each of the T
    # positions the last one sees, in every layer and head
    model, examples = setup("pythia", "prefix", n=24)
    with torch.no_grad():
        for layer in model.gpt_neox.layers:
            layer.attention.query_key_value.weight.zero_()
            layer.attention.query_key_value.bias.zero_()
    table = attention_table(model, examples)
    T = examples.input_ids.shape[1]
    np.testing.assert_allclose(table["weight"], 1 / T, rtol=1e-6)
    mass = queried_mass(table)
    assert len(mass) == 2 * 3 * LENGTH
    np.testing.assert_allclose(mass["mass"], 1 / T, rtol=1e-6)


def test_mamba_weight_is_the_channel_mean_share_of_hidden_attention():
    model, examples = setup("mamba", "prefix")
    examples = first(examples, LENGTH)
    table = attention_table(model, examples)
    names = [f"blocks.{i}.ssm.hidden_attention" for i in range(2)]
    traced = trace(model, examples.input_ids, names)
    context = examples.context_start + np.arange(LENGTH)
    for i, name in enumerate(names):
        row = traced[name][:, :, -1, :].abs().mean(dim=1)  # (example = target p, T)
        share = (row / row.sum(dim=1, keepdim=True))[:, context].numpy()
        np.testing.assert_allclose(weights(table, i, -1), share, rtol=1e-5, atol=1e-7)


def test_mamba_with_inputs_constant_over_positions_and_no_decay_looks_uniformly():
    # conv weights zero: the scan's input x_t is SiLU(conv bias) at every position (the bias
    # starts at zero: set it, or B = C = 0), so delta, B and C are constant too; A ~ 0: no
    # decay. Then alpha[T-1, s] = delta * C.B for every s.
    model, examples = setup("mamba", "suffix", n=12)
    with torch.no_grad():
        for layer in model.backbone.layers:
            layer.mixer.conv1d.weight.zero_()
            layer.mixer.conv1d.bias.fill_(1.0)
            layer.mixer.A_log.fill_(-30.0)
    table = attention_table(model, examples)
    T = examples.input_ids.shape[1]
    np.testing.assert_allclose(table["weight"], 1 / T, rtol=1e-5)


def test_queried_mass_takes_the_weight_on_the_target_position():
    rows = [
        (layer, head, p, s, 10 * layer + 3 * p + s + (head + 1) / 10)
        for layer in (0, 1)
        for head in (0, -1)
        for p in (0, 1)
        for s in (0, 1)
    ]
    table = pd.DataFrame(
        rows, columns=["layer", "head", "target_position", "source_position", "weight"]
    ).assign(kind="attention")
    mass = queried_mass(table)
    assert list(mass.columns) == ["layer", "head", "kind", "target_position", "mass"]
    assert len(mass) == 8
    got = mass.set_index(["layer", "head", "target_position"])["mass"]
    assert got[(0, 0, 0)] == pytest.approx(0.1)
    assert got[(0, 0, 1)] == pytest.approx(4.1)  # 3 * 1 + 1 (source 1) + 0.1
    assert got[(1, -1, 1)] == pytest.approx(14.0)
    assert got[(1, 0, 0)] == pytest.approx(10.1)
