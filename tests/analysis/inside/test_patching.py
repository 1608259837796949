"""Activation patching on tiny random models, checked against what is exactly true whatever
the weights: a patch of an input's own activations changes nothing, a patch of everything
restores everything, a patch where clean and corrupted inputs agree restores nothing, and a
Mamba state patch restores the answer exactly once the conv window has left the corruption."""

from dataclasses import replace
from functools import cache

import numpy as np
import pytest
import torch

from vlab.analysis.inside.activations import Patch, StatePatch, num_layers, trace
from vlab.analysis.inside.patching import (
    COLUMNS,
    logit_diff,
    patched_logit_diffs,
    patching_table,
    recovery,
    token_labels,
)
from vlab.models.backbones import BackboneConfig, add_tokens, build_backbone
from vlab.probes.examples import ProbeExamples, corrupt, heldout_examples
from vlab.probes.tasks import ProbeTaskConfig, ProbeVocab

LENGTH = 6


@cache
def _setup(arch: str, variant: str = "suffix", layers: int | None = None):
    """A random tiny model (initialised wide enough that corrupting the input moves the
    logit difference by more than 1e-3 on average), its vocabulary and 12 examples."""
    task = ProbeTaskConfig(length=LENGTH, n_train=60, n_heldout=60, variant=variant)
    overrides = {"initializer_range": 0.3}
    if layers is not None:
        overrides["num_hidden_layers"] = layers
    cfg = BackboneConfig(arch=arch, overrides=overrides)
    model = build_backbone(cfg, seed=0)
    vocab = ProbeVocab.for_task(task, base_vocab_size=model.get_input_embeddings().weight.shape[0])
    add_tokens(model, len(vocab.new_token_names), cfg)
    model.eval()
    return model, vocab, heldout_examples(task, vocab, 12)


@cache
def _table(arch: str, variant: str = "suffix"):
    model, vocab, ex = _setup(arch, variant)
    return patching_table(model, ex, vocab, batch_size=len(ex) * ex.input_ids.shape[1])


def _assert_ld(rows, like: str) -> None:
    """The patched runs' mean LDs equal the ``like`` runs' (``clean`` or ``corrupted``)."""
    assert len(rows) > 0
    np.testing.assert_allclose(rows["ld_patched"], rows[f"ld_{like}"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(rows["recovery"], 1 if like == "clean" else 0, atol=1e-3)


def _rows(examples: ProbeExamples, keep: np.ndarray) -> ProbeExamples:
    return replace(
        examples,
        input_ids=examples.input_ids[keep],
        contexts=examples.contexts[keep],
        positions=examples.positions[keep],
        targets=examples.targets[keep],
    )


def _row(table, **where):
    match = table
    for column, value in where.items():
        match = match[match[column] == value]
    assert len(match) == 1, where
    return match.iloc[0]


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_patching_an_input_with_its_own_activations_changes_nothing(arch):
    model, vocab, ex = _setup(arch)
    twins = corrupt(ex, vocab, "moved")
    for ids in (ex.input_ids, twins.input_ids):
        own = patched_logit_diffs(model, ids, ids, ex.targets, twins.targets)
        sites = {site for site, _ in own.patched}
        ssm = {"ssm_state", "conv_window", "state_and_window"}
        assert sites == ({"resid_pre", *ssm} if arch == "mamba" else {"resid_pre"})
        for value in own.patched.values():
            assert value.shape == (len(ex), ids.shape[1])
            torch.testing.assert_close(
                value, own.clean[:, None].expand_as(value), atol=1e-5, rtol=0
            )
        torch.testing.assert_close(own.clean, own.corrupted)
    # the same through trace, one site at a time
    names = [f"blocks.{i}.resid_pre" for i in range(num_layers(model))]
    names += [f"blocks.{i}.ssm.state" for i in range(num_layers(model)) if arch == "mamba"]
    base = trace(model, ex.input_ids, names)
    for name in names:
        for t in (2, ex.input_ids.shape[1] - 1):
            if name.endswith("state"):
                layer = int(name.split(".")[1])
                out = trace(
                    model, ex.input_ids, state_patches=[StatePatch(layer, t, base[name][..., t])]
                )
            else:
                out = trace(model, ex.input_ids, patches=[Patch(name, [t], base[name][:, [t]])])
            torch.testing.assert_close(out["logits"], base["logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_patching_every_position_of_a_layer_restores_the_clean_run(arch):
    model, vocab, ex = _setup(arch)
    twins = corrupt(ex, vocab, "moved")
    length = ex.input_ids.shape[1]
    names = [f"blocks.{i}.resid_pre" for i in range(num_layers(model))]
    clean = trace(model, ex.input_ids, names)
    corrupted = trace(model, twins.input_ids)
    ld_clean = logit_diff(clean["logits"], ex.targets, twins.targets).mean().item()
    ld_corrupted = logit_diff(corrupted["logits"], ex.targets, twins.targets).mean().item()
    assert abs(ld_clean - ld_corrupted) > 1e-3
    for name in names:
        out = trace(model, twins.input_ids, patches=[Patch(name, range(length), clean[name])])
        torch.testing.assert_close(out["logits"], clean["logits"], atol=1e-5, rtol=0)
        ld = logit_diff(out["logits"], ex.targets, twins.targets).mean().item()
        assert recovery(ld, ld_clean, ld_corrupted) == pytest.approx(1, abs=1e-4)


def test_recovery_is_zero_as_corrupted_one_as_clean_and_nan_when_flat():
    assert recovery(2.0, 2.0, -1.0) == 1
    assert recovery(-1.0, 2.0, -1.0) == 0
    assert recovery(0.5, 2.0, -1.0) == pytest.approx(0.5)
    assert np.isnan(recovery(1.0, 0.3, 0.3 + 1e-8))


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_table_columns_rows_and_labels(arch):
    model, vocab, ex = _setup(arch)
    table = _table(arch)
    n, length = num_layers(model), ex.input_ids.shape[1]
    sites = (n + 1) + (3 * n if arch == "mamba" else 0)  # state, window, both per SSM block
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 2 * sites * length
    assert set(table["corruption"]) == {"moved", "other_query"}
    assert set(table.loc[table["site"] == "resid_pre", "layer"]) == set(range(n + 1))
    if arch == "mamba":
        for site in ("ssm_state", "conv_window", "state_and_window"):
            assert set(table.loc[table["site"] == site, "layer"]) == set(range(n))
    assert (table["n"] == len(ex)).all()
    suffix = [f"ctx{p}" for p in range(LENGTH)] + ["out", "query"]
    assert list(table["token"][:length]) == suffix
    assert list(table["position"][:length]) == list(range(length))
    _, _, prefix = _setup(arch, "prefix")
    assert token_labels(prefix) == ["out", "query", *[f"ctx{p}" for p in range(LENGTH)], "ans"]


def test_table_means_do_not_depend_on_the_batch_size():
    model, vocab, ex = _setup("pythia")
    small = patching_table(model, ex, vocab, corruptions=("moved",), batch_size=40)  # 5, 5, 2
    table = _table("pythia")
    moved = table[table["corruption"] == "moved"].reset_index(drop=True)
    np.testing.assert_allclose(small["ld_patched"], moved["ld_patched"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(small["ld_clean"], moved["ld_clean"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
@pytest.mark.parametrize("variant", ["suffix", "prefix"])
def test_table_where_clean_and_corrupted_agree_or_all_differences_are_patched(arch, variant):
    model, _, ex = _setup(arch, variant)
    table = _table(arch, variant)
    n, last = num_layers(model), ex.input_ids.shape[1] - 1
    assert (table["ld_clean"] - table["ld_corrupted"]).abs().min() > 1e-3
    # after the last block a position reaches the answer only at T - 1, and fully there
    after = table[(table["site"] == "resid_pre") & (table["layer"] == n)]
    _assert_ld(after[after["position"] < last], "corrupted")
    _assert_ld(after[after["position"] == last], "clean")
    # other_query changes the query token alone: before it the runs are identical
    other = table[table["corruption"] == "other_query"]
    query = ex.query_index
    _assert_ld(other[other["position"] < query], "corrupted")
    # the clean embedding of the query is the whole clean input
    resid = other[other["site"] == "resid_pre"]
    _assert_ld(resid[(resid["layer"] == 0) & (resid["position"] == query)], "clean")
    if variant == "suffix":  # the query is last: every layer's stream there is the clean one
        _assert_ld(resid[resid["position"] == query], "clean")


def test_table_state_patch_is_a_state_patch_through_trace():
    model, vocab, ex = _setup("mamba")
    twins = corrupt(ex, vocab, "moved")
    table = _table("mamba")
    table = table[table["corruption"] == "moved"]
    states = trace(model, ex.input_ids, [f"blocks.{i}.ssm.state" for i in range(2)])
    for layer, t in [(0, 2), (1, 5), (1, 7)]:
        patch = StatePatch(layer, t, states[f"blocks.{layer}.ssm.state"][..., t])
        out = trace(model, twins.input_ids, state_patches=[patch])
        want = logit_diff(out["logits"], ex.targets, twins.targets).double().mean().item()
        got = _row(table, site="ssm_state", layer=layer, position=t)["ld_patched"]
        assert got == pytest.approx(want, abs=1e-5)


def test_one_layer_mamba_state_patch_restores_the_answer_once_the_conv_has_passed():
    # One block: the answer at T - 1 is the mixer's output there plus the query's embedding.
    # With the clean state h_t, the mixer at s > t reads x_s, delta_s, B_s, C_s, z_s, each
    # a function of tokens s-3..s (conv window 4): the clean answer comes back exactly when
    # the inputs agree from t - 2 on. "moved" (shift 3) swaps context positions p and p + 3
    # mod 6; keep the examples with {p, p'} = {0, 3}: they agree from index 4 on.
    model, vocab, every = _setup("mamba", layers=1)
    assert model.config.conv_kernel == 4
    keep = np.isin(every.positions, [0, 3])
    ex = _rows(every, keep)
    table = patching_table(model, ex, vocab, corruptions=("moved",), batch_size=64)
    state = table[table["site"] == "ssm_state"].set_index("position")
    assert ex.input_ids.shape[1] == 8 and len(ex) == 4
    assert abs(state["ld_clean"][0] - state["ld_corrupted"][0]) > 1e-3
    _assert_ld(state.loc[[6]], "clean")  # agree from 4 = 6 - 2 on
    _assert_ld(state.loc[[7]], "clean")  # and the output at 7 reads tokens 4..7
    assert abs(state["recovery"][5] - 1) > 1e-2  # x_6 still sees the swapped token at index 3
    # where the examples disagree after t - 2 the state alone does not restore them
    far = patching_table(model, _rows(every, ~keep), vocab, corruptions=("moved",))
    assert abs(_row(far, site="ssm_state", position=6)["recovery"] - 1) > 1e-2
