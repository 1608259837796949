"""Activation patching on image probe runs (tiny random VLMs with ``##`` / ``&&`` markers;
L = 5 on a 3 x 3 grid, blank cells besides, and L = 4 on 2 x 2 for the patched runs), checked
against what is exactly true whatever the weights, as the text probe's tests are: the
corrupted twins are other images differing only where the corruption says, their embeddings
line up with the clean ones index for index, and patching restores everything where the runs
differ only in what is patched and nothing where they agree."""

from functools import cache

import numpy as np
import pytest
import torch

from vlab.analysis.inside.activations import num_layers
from vlab.analysis.inside.patching import patched_logit_diffs, patching_table, token_labels
from vlab.config import from_dict
from vlab.probes.config import ProbeRunConfig, resolve
from vlab.probes.examples import corrupt, image_heldout_examples
from vlab.probes.image_model import build_image_probe
from vlab.probes.image_task import ImageProbeBatch, sequence_labels

LENGTH, SIDE = 5, 3
N = LENGTH  # examples: one per target position
SHIFT = LENGTH // 2  # corrupt's default: the answer moves from p to p + 2 (mod 5)


@cache
def _setup(
    arch: str = "pythia", variant: str = "suffix", layout: str = "paper", length: int = LENGTH
):
    """A random tiny image probe (initialised wide, as the text tests' models) and its first
    ``length`` held-out examples, one per target position."""
    cfg = from_dict(
        ProbeRunConfig,
        {
            "task": {
                "length": length,
                "n_heldout": 20,
                "target_mode": "position",
                "modality": "image",
                "variant": variant,
            },
            "model": {"arch": arch, "overrides": {"initializer_range": 0.3}},
            "image": {"layout": layout},
        },
    )
    probe = build_image_probe(resolve(cfg))
    probe.model.eval()
    return probe, image_heldout_examples(probe, length)


@cache
def _table(arch: str, variant: str):
    """The patching table at L = 4 (T = 10 or 11: the Mamba state patch costs T^2)."""
    probe, ex = _setup(arch, variant, length=4)
    return patching_table(probe.model.lm, ex, probe.vocab, batch_size=len(ex) * 32)


def _cells(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) images -> (N, side * side, P * P * 3) cells, row-major."""
    n, size = images.shape[:2]
    p = size // SIDE
    cells = images.reshape(n, SIDE, p, SIDE, p, 3).transpose(0, 1, 3, 2, 4, 5)
    return cells.reshape(n, SIDE * SIDE, -1)


def _pixels(probe, examples) -> tuple[np.ndarray, np.ndarray]:
    batch = ImageProbeBatch(examples.contexts, examples.positions, examples.targets.numpy())
    return probe.data.pixels(batch)


def _differing(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(N, T) whether two (N, T, H) embeddings differ at each index (beyond float rounding)."""
    return ((a - b).abs().amax(dim=-1) > 1e-5).numpy()


def test_labels_name_every_slot_of_the_image_and_the_query_matches_its_cell():
    probe, ex = _setup()
    labels = ["##", "ctx0", "ctx1", "ctx2", "&&", "ctx3", "ctx4", "blank", "&&"]
    labels += ["blank", "blank", "blank", "&&", "##", "out", "query"]
    assert token_labels(ex) == labels == list(sequence_labels(probe.sequence, probe.vocab))
    # the raw-patch encoder gives the query slot exactly the token of the queried cell
    rows = torch.arange(N)
    queried = [labels.index(f"ctx{p}") for p in ex.positions]
    torch.testing.assert_close(ex.input_ids[rows, queried], ex.input_ids[:, -1], atol=1e-6, rtol=0)
    prefix, _ = _setup(variant="prefix", layout="authors")
    assert sequence_labels(prefix.sequence, prefix.vocab) == (
        "out",
        "query",
        "###",
        "ctx0",
        "ctx1",
        "ctx2",
        "&&",
        "ctx3",
        "ctx4",
        "blank",
        "&&",
        "blank",
        "blank",
        "blank",
        "###",
        "##",
        "ans",
    )


def test_moved_swaps_two_patches_of_the_image_and_nothing_else():
    probe, ex = _setup()
    twins = corrupt(ex, probe.vocab, "moved")
    others = (ex.positions + SHIFT) % LENGTH
    np.testing.assert_array_equal(twins.positions, others)
    assert (twins.targets != ex.targets).all()  # the answer moves
    np.testing.assert_array_equal(twins.targets, probe.vocab.target_id(others))
    (images, queries), (t_images, t_queries) = _pixels(probe, ex), _pixels(probe, twins)
    np.testing.assert_array_equal(queries, t_queries)  # the same patch is asked for
    changed = (_cells(images) != _cells(t_images)).any(axis=-1)  # (N, cells)
    rows = np.arange(N)
    swapped = np.zeros_like(changed)
    swapped[rows, ex.positions] = swapped[rows, others] = True
    np.testing.assert_array_equal(changed, swapped)
    np.testing.assert_array_equal(
        _cells(t_images)[rows, others], _cells(images)[rows, ex.positions]
    )
    # the embeddings are the VLM's of those pixels and differ in the two patches' slots alone
    with torch.no_grad():
        direct = probe.model.embed(torch.from_numpy(t_images), torch.from_numpy(t_queries))
    torch.testing.assert_close(twins.input_ids, direct, atol=1e-6, rtol=0)
    slots = np.zeros((N, ex.input_ids.shape[1]), dtype=bool)
    slots[rows, ex.context_index[ex.positions]] = True
    slots[rows, ex.context_index[others]] = True
    np.testing.assert_array_equal(_differing(ex.input_ids, twins.input_ids), slots)


def test_other_query_asks_for_another_patch_of_the_same_image():
    probe, ex = _setup()
    twins = corrupt(ex, probe.vocab, "other_query")
    others = (ex.positions + SHIFT) % LENGTH
    np.testing.assert_array_equal(twins.contexts, ex.contexts)
    assert (twins.targets != ex.targets).all()
    (images, queries), (t_images, t_queries) = _pixels(probe, ex), _pixels(probe, twins)
    np.testing.assert_array_equal(images, t_images)
    assert (queries != t_queries).any(axis=(1, 2, 3)).all()
    wanted = _cells(images)[np.arange(N), others][:, None]  # the patch at p', on every tile
    np.testing.assert_array_equal(_cells(t_queries), np.repeat(wanted, SIDE * SIDE, axis=1))
    query = np.zeros((N, ex.input_ids.shape[1]), dtype=bool)
    query[:, ex.query_index] = True
    np.testing.assert_array_equal(_differing(ex.input_ids, twins.input_ids), query)


def test_corrupting_embeddings_needs_a_way_to_embed_the_twins():
    from dataclasses import replace

    probe, ex = _setup()
    with pytest.raises(ValueError, match="examples.embed"):
        corrupt(replace(ex, embed=None), probe.vocab, "moved")


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_patching_embeddings_with_their_own_activations_changes_nothing(arch):
    probe, ex = _setup(arch)
    twins = corrupt(ex, probe.vocab, "moved")
    own = patched_logit_diffs(probe.model.lm, ex.input_ids, ex.input_ids, ex.targets, twins.targets)
    assert {site for site, _ in own.patched} == (
        {"resid_pre", "ssm_state", "conv_window", "state_and_window"}
        if arch == "mamba"
        else {"resid_pre"}
    )
    for value in own.patched.values():
        assert value.shape == ex.input_ids.shape[:2]
        torch.testing.assert_close(value, own.clean[:, None].expand_as(value), atol=1e-5, rtol=0)


def _assert_ld(rows, like: str) -> None:
    """The patched runs' mean LDs equal the ``like`` runs' (``clean`` or ``corrupted``)."""
    assert len(rows) > 0
    np.testing.assert_allclose(rows["ld_patched"], rows[f"ld_{like}"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(rows["recovery"], 1 if like == "clean" else 0, atol=1e-3)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
@pytest.mark.parametrize("variant", ["suffix", "prefix"])
def test_table_restores_all_where_all_differences_are_patched_and_none_where_runs_agree(
    arch, variant
):
    probe, ex = _setup(arch, variant, length=4)
    table = _table(arch, variant)
    model = probe.model.lm
    n, length = num_layers(model), ex.input_ids.shape[1]
    sites = (n + 1) + (3 * n if arch == "mamba" else 0)  # state, window, both per SSM block
    assert len(table) == 2 * sites * length and (table["n"] == len(ex)).all()
    assert list(table["token"][:length]) == token_labels(ex)
    assert (table["ld_clean"] - table["ld_corrupted"]).abs().min() > 1e-3
    # after the last block a position reaches the answer only at T - 1, and fully there
    after = table[(table["site"] == "resid_pre") & (table["layer"] == n)]
    _assert_ld(after[after["position"] < length - 1], "corrupted")
    _assert_ld(after[after["position"] == length - 1], "clean")
    # moved: before the image's first patch (its start marker; prefix: <out>, the unchanged
    # query) clean and corrupted runs agree, at every site and layer
    moved = table[table["corruption"] == "moved"]
    _assert_ld(moved[moved["position"] < ex.context_positions[0]], "corrupted")
    # other_query changes the query slot alone: before it the runs agree, and its clean
    # embedding is the whole clean input
    other = table[table["corruption"] == "other_query"]
    _assert_ld(other[other["position"] < ex.query_index], "corrupted")
    resid = other[other["site"] == "resid_pre"]
    _assert_ld(resid[(resid["layer"] == 0) & (resid["position"] == ex.query_index)], "clean")
    if variant == "suffix":  # the query is last: every layer's stream there is the clean one
        _assert_ld(resid[resid["position"] == ex.query_index], "clean")
