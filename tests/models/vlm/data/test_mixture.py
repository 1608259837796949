"""The deterministic shuffle over sources: every item once, stable, different per epoch."""

from vlab.models.vlm.data.mixture import mixture_order
from vlab.models.vlm.data.packing import PackingConfig, pack_samples
from vlab.models.vlm.data.shapes import ShapesConfig, shapes_samples


def test_every_item_exactly_once_without_reweighting():
    sizes = {"coco": 50, "vqav2": 300, "tiny": 1}
    everything = [(name, i) for name, n in sizes.items() for i in range(n)]
    out = mixture_order(sizes, seed=0)
    assert sorted(out) == sorted(everything)
    assert out != everything  # actually shuffled


def test_order_is_deterministic_and_changes_with_seed_and_epoch():
    sizes = {"a": 30, "b": 20}
    order = mixture_order(sizes, seed=1)
    assert order == mixture_order(dict(reversed(list(sizes.items()))), seed=1)
    assert order != mixture_order(sizes, seed=2)
    assert order != mixture_order(sizes, seed=1, epoch=1)


def test_adding_a_source_keeps_the_others_relative_order():
    before = mixture_order({"a": 40, "b": 40}, seed=3)
    after = [it for it in mixture_order({"a": 40, "b": 40, "c": 40}, seed=3) if it[0] != "c"]
    assert after == before


def test_sources_are_mixed_within_batches():
    order = mixture_order({"a": 500, "b": 500}, seed=0)
    first = [name for name, _ in order[:64]]
    assert 16 < first.count("a") < 48


def test_shapes_through_packing_and_mixing():
    cfg = ShapesConfig()
    sources = {"shapes": shapes_samples(cfg, "train", 36)}
    packed, stats = pack_samples(sources["shapes"], lambda t: len(t.split()), PackingConfig())
    assert stats.dropped_pairs == 0 and len(packed) == 36  # one sample per scene
    mixed = [packed[i] for _, i in mixture_order({"shapes": len(packed)}, seed=0)]
    assert sorted(s.image_id for s in mixed) == sorted(s.image_id for s in packed)
