"""The state probe reads the representations it names, and a representation that holds
nothing about the context decodes it at exactly the chance level it reports."""

import numpy as np
import pytest
import torch

from vlab.analysis.inside import activations as acts
from vlab.analysis.inside.state_probe import COLUMNS, features, state_probe_table
from vlab.models.backbones import BackboneConfig, add_tokens, build_backbone
from vlab.probes.examples import heldout_examples
from vlab.probes.tasks import ProbeTaskConfig, ProbeVocab


def setup(arch, variant="suffix", length=4):
    task = ProbeTaskConfig(length=length, n_train=400, n_heldout=80, variant=variant)
    cfg = BackboneConfig(arch=arch)
    model = build_backbone(cfg, seed=0)
    vocab = ProbeVocab.for_task(task, base_vocab_size=model.get_input_embeddings().weight.shape[0])
    add_tokens(model, len(vocab.new_token_names), cfg)
    return model.eval(), heldout_examples(task, vocab, 80)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_features_are_the_named_activations(arch):
    model, ex = setup(arch)
    got = features(model, ex, batch_size=32)
    n = acts.num_layers(model)
    want = acts.trace(model, ex.input_ids, ["embed", "blocks.1.resid_post"])
    np.testing.assert_allclose(got[("residual", -1)], want["embed"][:, -1].numpy())
    np.testing.assert_allclose(got[("residual", 1)], want["blocks.1.resid_post"][:, -1].numpy())
    ssm = {k for k in got if k[0] == "ssm_state"}
    if arch == "mamba":
        state = acts.trace(model, ex.input_ids, ["blocks.0.ssm.state"])["blocks.0.ssm.state"]
        after_context = state[..., ex.context_end].flatten(1)
        np.testing.assert_allclose(got[("ssm_state", 0)], after_context.numpy(), rtol=1e-5)
        assert ssm == {("ssm_state", i) for i in range(n)}
    else:
        assert ssm == set()


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_table_rows_and_a_representation_that_knows_nothing_scores_chance(arch):
    model, ex = setup(arch, variant="prefix")
    table = state_probe_table(model, ex)
    assert list(table.columns) == COLUMNS
    n, length = acts.num_layers(model), ex.length
    sources = (n + 1) + (n if arch == "mamba" else 0)
    assert len(table) == sources * (length + 1)
    assert set(table["label"]) == {"token", "query_position"}
    assert (table.loc[table["label"] == "query_position", "position"] == -1).all()
    # prefix: the prediction position always holds <ans>, so its embedding is the same for
    # every example and tells nothing: the probe can only guess the majority class
    blind = table[(table["source"] == "residual") & (table["layer"] == -1)]
    np.testing.assert_allclose(blind["accuracy"], blind["chance"])
    assert table["accuracy"].between(0, 1).all() and (table["n_test"] == 20).all()


def test_no_grad_needed_and_batches_do_not_change_features():
    model, ex = setup("mamba")
    with torch.no_grad():
        a = features(model, ex, batch_size=80)
    b = features(model, ex, batch_size=7)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6)
