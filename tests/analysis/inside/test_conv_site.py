"""The causal conv's window as a named activation and a patch site, beside the SSM state.

What block i's mixer passes from positions up to t to later ones is its state h_t and its conv
window (the last K-1 pre-conv inputs). Known answers on tiny random Mamba and Mamba-2 models:
``ssm.conv_window`` is what transformers' decoding cache keeps for the conv; patching clean
state and window together (in every SSM block, or in a one-block model) at the last position
where clean and corrupted inputs differ restores the clean run exactly, while either alone
does not.
"""

import os
from functools import cache

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vlab.analysis.inside import activations as acts  # noqa: E402
from vlab.analysis.inside import figures  # noqa: E402
from vlab.analysis.inside.activations import StatePatch  # noqa: E402
from vlab.analysis.inside.patching import logit_diff, patching_table, recovery  # noqa: E402
from vlab.analysis.inside.results import COLUMNS, RUN_KEYS  # noqa: E402
from vlab.errors import VlabError  # noqa: E402
from vlab.models.backbones import BackboneConfig, add_tokens, build_backbone  # noqa: E402
from vlab.probes.examples import corrupt, heldout_examples  # noqa: E402
from vlab.probes.tasks import ProbeTaskConfig, ProbeVocab  # noqa: E402

SSM_ARCHS = ["mamba", "mamba2"]
NEW_SITES = ("conv_window", "state_and_window")


def model_of(arch: str, **overrides) -> torch.nn.Module:
    cfg = BackboneConfig(arch=arch, overrides={"initializer_range": 0.3, **overrides})
    return build_backbone(cfg, seed=0).eval()


def ids(batch: int = 2, length: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 200, (batch, length), generator=torch.Generator().manual_seed(seed))


@cache
def _probe(arch: str, layers: int | None = None):
    """A tiny random ``arch`` model (``layers`` blocks; the preset's 2 when None) with the probe
    vocabulary, and 12 held-out suffix examples of L = 6."""
    task = ProbeTaskConfig(length=6, n_train=60, n_heldout=60, variant="suffix")
    overrides = {"initializer_range": 0.3}
    if layers is not None:
        overrides["num_hidden_layers"] = layers
    cfg = BackboneConfig(arch=arch, overrides=overrides)
    model = build_backbone(cfg, seed=0)
    vocab = ProbeVocab.for_task(task, base_vocab_size=model.get_input_embeddings().weight.shape[0])
    add_tokens(model, len(vocab.new_token_names), cfg)
    return model.eval(), vocab, heldout_examples(task, vocab, 12)


# -- the name -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", [*SSM_ARCHS, "hybrid"])
@pytest.mark.parametrize("length", [9, 2])
def test_conv_window_is_what_the_models_decoding_cache_keeps(arch, length):
    # transformers keeps the last K pre-conv inputs (zeros before position 0) and, on the next
    # token, drops the oldest: the K-1 it carries on are the window after the last position
    model = model_of(arch)
    x = ids(length=length)
    layers = acts.layers_with(model, "ssm.state")
    names = [f"blocks.{i}.ssm.conv_window" for i in layers]
    got = acts.trace(model, x, names + [f"blocks.{i}.mixer_in" for i in layers])
    with torch.no_grad():
        cached = model(x, use_cache=True).cache
    for i in layers:
        window = got[f"blocks.{i}.ssm.conv_window"]
        mixer = acts.mixer(model, i)
        k = mixer.conv1d.kernel_size[0]
        assert window.shape == (2, mixer.conv1d.in_channels, k - 1, length)
        torch.testing.assert_close(window[..., -1], cached.get_conv_state(i)[..., 1:].float())
        ops = acts.ssm_module(model, i)
        for t in range(length):
            want = ops.conv_window(mixer, got[f"blocks.{i}.mixer_in"], t)
            assert torch.equal(window[..., t], want)


def test_only_ssm_layers_have_a_conv_window():
    model = model_of("hybrid")  # layer 0 Mamba, layer 1 attention
    names = acts.activation_names(model)
    assert "blocks.0.ssm.conv_window" in names and "blocks.1.ssm.conv_window" not in names
    assert acts.layers_with(model, "ssm.conv_window") == [0]
    with pytest.raises(VlabError, match="layer 1 of this vlab_hybrid model is an attention"):
        acts.trace(model, ids(), ["blocks.1.ssm.conv_window"])
    assert "blocks.0.ssm.conv_window" not in acts.activation_names(model_of("pythia"))


@pytest.mark.parametrize("arch", SSM_ARCHS)
def test_every_positions_patched_output_at_once_is_each_positions_own(arch):
    # patching computes the run's own scan once for all positions: the same numbers
    model = model_of(arch)
    mixer, ops = acts.mixer(model, 1), acts.ssm_module(model, 1)
    x, other = ids(length=7), ids(length=7, seed=1)
    mixer_in = acts.trace(model, x, ["blocks.1.mixer_in"])["blocks.1.mixer_in"]
    clean = acts.trace(model, other, ["blocks.1.ssm.state", "blocks.1.ssm.conv_window"])
    states, windows = clean["blocks.1.ssm.state"], clean["blocks.1.ssm.conv_window"]
    for s, w in ((states, None), (None, windows), (states, windows)):
        every = ops.outputs_with_patches(mixer, mixer_in, s, w)
        assert every.shape == (2, 7, 7, mixer.out_proj.out_features)
        for t in range(7):
            state = None if s is None else s[..., t]
            one = ops.output_with_patch(mixer, mixer_in, t, state, None if w is None else w[..., t])
            assert torch.equal(every[:, t], one)
    via_model = acts.outputs_with_patches(model, 1, mixer_in, states, windows)
    assert torch.equal(via_model, ops.outputs_with_patches(mixer, mixer_in, states, windows))


# -- the patch through trace ------------------------------------------------------------------


def _clean_and_corrupted(t: int, length: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Two inputs (B=2) that agree after index t and differ at t and at 0."""
    clean = ids(length=length)
    corrupted = clean.clone()
    corrupted[:, [0, t]] = (clean[:, [0, t]] + 7) % 200
    return clean, corrupted


@pytest.mark.parametrize("arch", SSM_ARCHS)
def test_state_and_window_patched_in_every_block_restore_the_clean_run_after_t(arch):
    model = model_of(arch)  # two SSM blocks
    t = 4
    clean, corrupted = _clean_and_corrupted(t)
    layers = acts.layers_with(model, "ssm.state")
    names = [f"blocks.{i}.ssm.{n}" for i in layers for n in ("state", "conv_window")]
    c = acts.trace(model, clean, names)
    d = acts.trace(model, corrupted)

    def patched(state: bool, window: bool) -> torch.Tensor:
        patches = [
            StatePatch(
                i,
                t,
                c[f"blocks.{i}.ssm.state"][..., t] if state else None,
                c[f"blocks.{i}.ssm.conv_window"][..., t] if window else None,
            )
            for i in layers
        ]
        return acts.trace(model, corrupted, state_patches=patches)["logits"]

    after = slice(t + 1, None)
    both = patched(True, True)
    torch.testing.assert_close(both[:, after], c["logits"][:, after], atol=1e-5, rtol=1e-5)
    # up to t - 1 nothing is patched; the window is read only after t
    torch.testing.assert_close(both[:, :t], d["logits"][:, :t], atol=1e-5, rtol=1e-5)
    only_window = patched(False, True)
    torch.testing.assert_close(
        only_window[:, : t + 1], d["logits"][:, : t + 1], atol=1e-5, rtol=1e-5
    )
    for partial in (patched(True, False), only_window):
        assert (partial[:, after] - c["logits"][:, after]).abs().max() > 1e-3
    # a run's own window changes nothing
    own = acts.trace(model, clean, state_patches=[StatePatch(0, t, None, c[names[1]][..., t])])
    torch.testing.assert_close(own["logits"], c["logits"], atol=1e-5, rtol=1e-5)


def test_a_state_patch_needs_a_state_or_a_window():
    with pytest.raises(VlabError, match="StatePatch of layer 0: give a state, a window or both"):
        StatePatch(0, 3, None)
    model = model_of("hybrid")
    window = torch.zeros(2, 288, 3)
    with pytest.raises(VlabError, match=r"layer 1 .* attention block: it has no SSM state"):
        acts.trace(model, ids(), state_patches=[StatePatch(1, 0, None, window)])


# -- the patching table ------------------------------------------------------------------------


@pytest.mark.parametrize("arch", SSM_ARCHS)
def test_one_block_state_and_window_after_the_context_carry_the_whole_answer(arch):
    # "moved" changes context tokens only; after the last context token the inputs agree, so
    # in a one-block model everything that decides the answer passes through that block's
    # state and window there: together they restore it exactly, either alone only in part
    model, vocab, ex = _probe(arch, layers=1)
    table = patching_table(model, ex, vocab, corruptions=("moved",))
    assert set(table["site"]) == {"resid_pre", "ssm_state", *NEW_SITES}
    assert len(table) == (2 + 3) * ex.input_ids.shape[1]
    at = table[table["position"] == ex.context_end].set_index("site")["recovery"]
    assert at["state_and_window"] == pytest.approx(1, abs=1e-4)
    for site in ("ssm_state", "conv_window"):
        assert abs(at[site] - 1) > 1e-2, site
    # at the last position the window is never read: with the state it is the state alone
    last = table[table["position"] == ex.input_ids.shape[1] - 1].set_index("site")
    assert last.loc["state_and_window", "ld_patched"] == pytest.approx(
        last.loc["ssm_state", "ld_patched"], abs=1e-5
    )
    assert last.loc["conv_window", "recovery"] == pytest.approx(0, abs=1e-4)


@pytest.mark.parametrize("arch", SSM_ARCHS)
def test_table_rows_are_trace_patches_and_all_blocks_together_restore_the_answer(arch):
    model, vocab, ex = _probe(arch)
    twins = corrupt(ex, vocab, "moved")
    table = patching_table(model, ex, vocab, corruptions=("moved",))
    layers = acts.layers_with(model, "ssm.state")
    n, length = acts.num_layers(model), ex.input_ids.shape[1]
    assert len(table) == (n + 1 + 3 * len(layers)) * length
    for site in NEW_SITES:
        assert sorted(table.loc[table["site"] == site, "layer"].unique()) == layers
    names = [f"blocks.{i}.ssm.{k}" for i in layers for k in ("state", "conv_window")]
    clean = acts.trace(model, ex.input_ids, names)
    corrupted = acts.trace(model, twins.input_ids)

    def ld(logits: torch.Tensor) -> float:
        return logit_diff(logits, ex.targets, twins.targets).double().mean().item()

    def patch(layer: int, t: int, state: bool) -> StatePatch:
        own = clean[f"blocks.{layer}.ssm.state"][..., t] if state else None
        return StatePatch(layer, t, own, clean[f"blocks.{layer}.ssm.conv_window"][..., t])

    for site, layer, t in [("conv_window", 0, 3), ("state_and_window", 1, 5)]:
        patches = [patch(layer, t, site == "state_and_window")]
        out = acts.trace(model, twins.input_ids, state_patches=patches)
        row = table[(table["site"] == site) & (table["layer"] == layer) & (table["position"] == t)]
        assert row["ld_patched"].item() == pytest.approx(ld(out["logits"]), abs=1e-5)
    end = ex.context_end
    every = acts.trace(model, twins.input_ids, state_patches=[patch(i, end, True) for i in layers])
    got = recovery(ld(every["logits"]), ld(clean["logits"]), ld(corrupted["logits"]))
    assert got == pytest.approx(1, abs=1e-4)
    np.testing.assert_allclose(every["logits"][:, -1], clean["logits"][:, -1], atol=1e-5, rtol=0)


# -- the report's view -----------------------------------------------------------------------


def _hand_made(sites=("resid_pre", "ssm_state", *NEW_SITES)) -> pd.DataFrame:
    """A patching table of two runs of one Mamba (suffix, L = 2: ctx0 ctx1 out query) and one
    Pythia run, where recovery = 0.1 x site number + 0.01 x layer, + 0.5 in the second run."""
    tokens = ["ctx0", "ctx1", "out", "query"]
    rows = []
    for run, arch, extra in (("m1", "mamba", 0.0), ("m2", "mamba", 0.5), ("p", "pythia", 0.0)):
        for corruption in ("moved", "other_query"):
            for k, site in enumerate(sites):
                if arch == "pythia" and site != "resid_pre":
                    continue
                for layer in (0, 1):
                    for position, token in enumerate(tokens):
                        value = 0.1 * k + 0.01 * layer + extra
                        rows.append(
                            (run, arch, "suffix", 2, 10, corruption, site, layer, position, token)
                            + (value, 1.0, 0.0, value, 8)
                        )
    columns = [*RUN_KEYS, "step", *COLUMNS["patching"]]
    return pd.DataFrame(rows, columns=columns)


def test_state_or_conv_table_reads_each_block_after_the_last_differing_input():
    table = _hand_made()
    assert figures.has_window_sites(table)
    tokens = pd.Series(["ctx0", "ctx1", "out", "query"])
    assert figures.carry_position(tokens, "moved") == 1
    assert figures.carry_position(tokens, "other_query") == 3
    assert figures.carry_position(pd.Series(["##", "out"]), "moved") is None
    got = figures.state_or_conv_table(table)
    assert list(got.columns) == [
        "arch", "variant", "length", "corruption", "layer", "position", "token", *figures.CARRIED
    ]  # fmt: skip
    assert set(got["arch"]) == {"mamba"}  # pythia has no SSM block
    moved = got[got["corruption"] == "moved"]
    assert moved[["position", "token"]].drop_duplicates().values.tolist() == [[1, "ctx1"]]
    assert got[got["corruption"] == "other_query"]["token"].unique().tolist() == ["query"]
    # the mean of the two runs: 0.1 x site number + 0.01 x layer + 0.25
    np.testing.assert_allclose(moved["ssm_state"], [0.35, 0.36])
    np.testing.assert_allclose(moved["conv_window"], [0.45, 0.46])
    np.testing.assert_allclose(moved["state_and_window"], [0.55, 0.56])
    fig = figures.state_or_conv(table, 2, "moved")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["mamba · suffix · after ctx1 (position 1)\nmean of 2 runs"]


def test_the_patching_view_of_tables_from_before_the_window_sites():
    old = _hand_made(sites=("resid_pre", "ssm_state"))
    assert not figures.has_window_sites(old)
    assert figures.state_or_conv_table(old).empty
    message = figures.state_or_conv(old, 2, "moved")
    assert "no state and conv window patching results" in message.texts[0].get_text()
    # one run inspected before the change, one after: the older run's panels say so
    mixed = pd.concat([_hand_made(), old.assign(run="old", variant="prefix")], ignore_index=True)
    fig = figures.patching_heatmaps(mixed, 2, "moved")
    blanks = [t.get_text() for ax in fig.axes for t in ax.texts if "older vlab" in t.get_text()]
    assert blanks == ["mamba · prefix: not in its table (inspected by an older vlab)"] * 2
    pythia = [t.get_text() for ax in fig.axes for t in ax.texts if "no recurrent" in t.get_text()]
    assert len(pythia) == 6  # state, window and both, in each variant
