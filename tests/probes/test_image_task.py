"""The image task's data and layout: pixels decode back to the contexts, the sequence is the VLM's
image segment token by token, the data is the text probe's (deterministic, balanced, disjoint),
and bad settings are one-line errors naming the field."""

from collections import Counter

import numpy as np
import pytest

from vlab.cli import main
from vlab.config import from_dict, to_dict
from vlab.errors import ConfigError
from vlab.models.vlm.sequence import image_segment_length
from vlab.probes.config import ProbeRunConfig, resolve
from vlab.probes.image_task import (
    BLANK,
    ImageProbeConfig,
    ImageProbeData,
    ImageVocab,
    MarkerTokenizer,
    decode_grid,
    image_layout,
    image_sequence,
    marker_strings,
    patch_pool,
    render_grids,
    render_queries,
)
from vlab.probes.tasks import ProbeData, ProbeTaskConfig, ProbeVocab

BASE = 100  # a backbone vocabulary of 100 tokens: new tokens start at id 100
PATCH = 4  # pixels per patch side in these tests


def image_data(length=4, side=None, **task) -> ImageProbeData:
    cfg = ProbeTaskConfig(length=length, modality="image", target_mode="position", **task)
    vocab = ImageVocab.for_task(cfg, ("##", "&&"), BASE)
    return ImageProbeData(cfg, vocab, PATCH, side or ImageProbeConfig().side(length))


def key(context, p) -> tuple:
    return (*map(int, context), int(p))


# pixels ------------------------------------------------------------------------------------


def test_pool_patches_are_distinct_seeded_and_never_blank():
    pool = patch_pool(seed=3, pool=50, patch_size=PATCH)
    assert pool.shape == (50, PATCH, PATCH, 3) and pool.dtype == np.uint8
    assert len({p.tobytes() for p in pool}) == 50
    assert not any((p == BLANK).all() for p in pool)
    assert np.array_equal(pool, patch_pool(seed=3, pool=50, patch_size=PATCH))
    assert not np.array_equal(pool, patch_pool(seed=4, pool=50, patch_size=PATCH))


def test_patch_k_sits_in_cell_k_row_major_and_the_rest_is_blank():
    pool = patch_pool(seed=0, pool=8, patch_size=PATCH)
    context = np.array([5, 0, 7, 2, 6])  # L = 5 in a 3 x 3 grid: cells 5..8 blank
    (image,) = render_grids(pool, context[None], side=3)
    assert image.shape == (3 * PATCH, 3 * PATCH, 3)
    for k, item in enumerate(context):  # known answer, pixel by pixel
        r, c = divmod(k, 3)
        cell = image[r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH]
        assert np.array_equal(cell, pool[item])
    assert (image[PATCH : 2 * PATCH, 2 * PATCH :] == BLANK).all()  # cell 5 = (1, 2)
    assert (image[2 * PATCH :] == BLANK).all()  # cells 6-8: the last row
    assert decode_grid(image, pool, side=3).tolist() == [5, 0, 7, 2, 6, -1, -1, -1, -1]
    (query,) = render_queries(pool, np.array([7]), side=3)  # the query: its patch everywhere
    assert decode_grid(query, pool, side=3).tolist() == [7] * 9


def test_every_example_decodes_to_its_context_and_its_query_to_the_target_patch():
    data = image_data(length=5, n_train=50, n_heldout=20)  # 3 x 3 grid
    batch = data.train_batch(step=2, batch_size=10)
    images, queries = data.pixels(batch)
    assert images.shape == queries.shape == (10, 3 * PATCH, 3 * PATCH, 3)
    for i in range(10):
        cells = decode_grid(images[i], data.patches, data.side)
        assert cells[:5].tolist() == batch.contexts[i].tolist() and (cells[5:] == -1).all()
        p = batch.positions[i]
        assert (decode_grid(queries[i], data.patches, data.side) == cells[p]).all()
        assert batch.targets[i] == data.vocab.target_id(p)
    with pytest.raises(ValueError, match="cell 0"):
        decode_grid(np.zeros_like(images[0]), data.patches, data.side)


# the data is the text probe's --------------------------------------------------------------


def test_contexts_are_the_text_probes_for_the_same_task():
    data = image_data(length=4, n_train=400, n_heldout=40)
    task = data.task
    text = ProbeData(task, ProbeVocab.for_task(task, BASE))
    assert np.array_equal(data.heldout.contexts, text.heldout.input_ids[:, :4] - BASE)
    for step in (0, 7):
        mine, theirs = data.train_batch(step, 16), text.train_batch(step, 16)
        assert np.array_equal(mine.contexts, theirs.input_ids[:, :4] - BASE)
        assert np.array_equal(mine.positions, theirs.positions)


def test_generation_is_deterministic_from_the_seed():
    a, b = (
        image_data(n_train=200, n_heldout=40, seed=5),
        image_data(n_train=200, n_heldout=40, seed=5),
    )
    assert np.array_equal(a.heldout.contexts, b.heldout.contexts)
    for x, y in zip(a.pixels(a.train_batch(3, 32)), b.pixels(b.train_batch(3, 32)), strict=True):
        assert np.array_equal(x, y)
    c = image_data(n_train=200, n_heldout=40, seed=6)
    assert not np.array_equal(a.heldout.contexts, c.heldout.contexts)
    assert not np.array_equal(a.patches, c.patches)


def test_targets_are_balanced_over_positions_in_heldout_and_every_epoch():
    data = image_data(length=6, n_train=600, n_heldout=120, pool_size=12)
    assert Counter(data.heldout.positions.tolist()) == {p: 20 for p in range(6)}
    epoch = np.concatenate([data.train_batch(s, 60).positions for s in range(10)])
    assert Counter(epoch.tolist()) == {p: 100 for p in range(6)}
    targets = Counter(data.heldout.targets.tolist())
    assert targets == {data.vocab.target_id(p): 20 for p in range(6)}


def test_heldout_and_training_sequences_are_disjoint_even_when_collisions_are_common():
    # L = 3 from a pool of 4: 24 contexts x 3 queries = 72 sequences, 15 of them held out, so
    # a fifth of the 600 training draws would hit one if they were not redrawn
    data = image_data(length=3, pool_size=4, n_train=600, n_heldout=15)
    held = {key(c, p) for c, p in zip(data.heldout.contexts, data.heldout.positions, strict=True)}
    assert len(held) == 15  # distinct held-out sequences
    train = data.train_examples(np.arange(600))
    seen = {key(c, p) for c, p in zip(train.contexts, train.positions, strict=True)}
    assert seen.isdisjoint(held)
    assert len(seen) == 72 - 15  # every other sequence occurs: the redraws are not biased away


# vocabulary and sequence -------------------------------------------------------------------


def test_vocab_appends_out_ans_positions_then_markers():
    task = ProbeTaskConfig(length=4, target_mode="position", modality="image")
    v = ImageVocab.for_task(task, ("##", "&&"), BASE)
    assert (v.out_id, v.ans_id) == (100, 101)  # no <s_k>: the patches are pixels
    assert [v.target_id(p) for p in range(4)] == [102, 103, 104, 105]
    assert (v.marker_id("##"), v.marker_id("&&")) == (106, 107)
    assert v.new_token_names == ["<out>", "<ans>", "<p0>", "<p1>", "<p2>", "<p3>", "##", "&&"]
    assert v.vocab_size == 108
    vocab_mode = ImageVocab.for_task(ProbeTaskConfig(length=4, target_offset=7), ("##",), BASE)
    assert vocab_mode.target_id(2) == 9 and vocab_mode.marker_id("##") == 102


def render(seq, v: ImageVocab) -> list[str]:
    names = {v.out_id: "<out>", v.ans_id: "<ans>", **{v.marker_id(m): m for m in v.markers}}
    out = []
    for t, (i, cell) in enumerate(zip(seq.input_ids, seq.patch_index, strict=True)):
        out.append(f"c{cell}" if cell >= 0 else "Q" if t == seq.query_index else names[int(i)])
    return out


@pytest.mark.parametrize(
    ("layout", "variant", "tokens"),
    [
        ("paper", "suffix", "## c0 c1 && c2 c3 && ## <out> Q"),
        ("paper", "prefix", "<out> Q ## c0 c1 && c2 c3 && ## <ans>"),
        ("authors", "suffix", "### c0 c1 && c2 c3 ### ## <out> Q"),
        ("authors", "prefix", "<out> Q ### c0 c1 && c2 c3 ### ## <ans>"),
        ("none", "suffix", "c0 c1 c2 c3 <out> Q"),  # the text probe's layout, patch for token
        ("none", "prefix", "<out> Q c0 c1 c2 c3 <ans>"),
    ],
)
def test_sequence_token_by_token(layout, variant, tokens):
    task = ProbeTaskConfig(length=4, target_mode="position", modality="image")
    v = ImageVocab.for_task(task, marker_strings(image_layout(layout)), BASE)
    seq = image_sequence(4, 2, variant, layout, v)
    assert " ".join(render(seq, v)) == tokens
    assert seq.query_index == (len(seq) - 1 if variant == "suffix" else 1)
    assert [render(seq, v)[t] for t in seq.context_index] == ["c0", "c1", "c2", "c3"]
    # the image part is exactly as long as the VLM's own image segment (+ its text separator)
    image = image_layout(layout)
    extra = 2 if variant == "suffix" else 3
    segment = image_segment_length(image, 2, 2, MarkerTokenizer(v))
    assert len(seq) == segment + (1 if image.text_sep else 0) + extra


def test_blank_cells_are_patch_slots_after_the_context():
    task = ProbeTaskConfig(length=5, target_mode="position", modality="image")
    v = ImageVocab.for_task(task, ("##", "&&"), BASE)
    seq = image_sequence(5, 3, "suffix", "paper", v)
    assert " ".join(render(seq, v)) == "## c0 c1 c2 && c3 c4 c5 && c6 c7 c8 && ## <out> Q"
    assert seq.context_index.tolist() == [1, 2, 3, 5, 6]


# configs -----------------------------------------------------------------------------------


def run_config(**sections) -> ProbeRunConfig:
    base = {"task": {"length": 4, "modality": "image", "target_mode": "position"}}
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return from_dict(ProbeRunConfig, base)


def test_resolve_writes_out_the_grid_the_encoder_and_the_projector():
    image = resolve(run_config(task={"length": 5}, model={"arch": "mamba"})).image
    assert image.grid == 3 and image.layout == "paper"
    assert image.vision["kind"] == "patch" and image.vision["image_size"] == 3 * 8  # 8 px patches
    assert image.projector["vision_widths"] == [32] and image.projector["lm_width"] == 64
    resolved = resolve(run_config())  # as config.json holds it, read back and resolved again
    assert resolve(from_dict(ProbeRunConfig, to_dict(resolved))) == resolved
    assert resolve(run_config(image={"grid": 4})).image.vision["image_size"] == 32
    tokens = resolve(from_dict(ProbeRunConfig, {"task": {"length": 4}}))
    assert tokens.image is None and tokens.task.modality == "tokens"


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"task": {"length": 5}, "image": {"grid": 2}}, "image.grid"),  # 4 cells for L = 5
        ({"image": {"grid": 0}}, "image.grid"),
        ({"task": {"length": 6, "pool_size": 4}}, "task.pool_size"),  # pool smaller than L
        ({"task": {"modality": "tokens"}, "image": {"grid": 2}}, "image"),
        ({"task": {"modality": "video"}}, "task.modality"),
        ({"image": {"layout": "fuyu"}}, "image.layout"),
        ({"image": {"vision": {"image_size": 64}}}, "image.vision.image_size"),
        ({"image": {"projector": {"kind": "mamba"}}}, "image.projector.kind"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_field(sections, field):
    with pytest.raises(ConfigError) as e:
        run_config(**sections)
    assert e.value.field == field and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"image": {"grid": 2, "vision": {"image_size": 17}}}, "image.vision.image_size"),
        ({"image": {"vision": {"kind": "patch", "preset": "huge"}}}, "image.vision.preset"),
        ({"image": {"projector": {"hidden_width": -1}}}, "image.projector.hidden_width"),
        ({"image": {"projector": {"lm_width": 64}}}, "image.projector.lm_width"),  # pythia: 48
    ],
)
def test_settings_of_the_vlm_parts_are_checked_when_resolved(sections, field):
    with pytest.raises(ConfigError) as e:
        resolve(run_config(**sections))
    assert e.value.field == field and "\n" not in str(e.value)


def test_cli_prints_one_line_and_creates_nothing(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["probe", "run", "--length", "5", "--modality", "image", "--set", "image.grid=2"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'image.grid'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
