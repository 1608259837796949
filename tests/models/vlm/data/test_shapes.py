"""The built-in shapes dataset: determinism, disjoint splits, ground truth read back from pixels,
yes/no balance, config validation."""

from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from vlab.config import from_dict, to_dict
from vlab.errors import ConfigError
from vlab.models.vlm.data.records import Turn, parse_box
from vlab.models.vlm.data.shapes import (
    BACKGROUNDS,
    PALETTE,
    SHAPES_TASKS,
    ShapeObject,
    ShapesConfig,
    describe,
    scene,
    scene_split,
    shapes_sample,
    shapes_samples,
)

CFG = ShapesConfig()
N = 240  # 40 of each task


@pytest.fixture(scope="module")
def train():
    return shapes_samples(CFG, "train", N)


@pytest.fixture(scope="module")
def held_out():
    return shapes_samples(CFG, "held_out", N)


def _codes(rgb):
    a = np.asarray(rgb, dtype=np.int32)
    return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]


def detect(sample, cfg=CFG):
    """Objects read back from the pixels: one connected component per colour region; shape from
    how much of its bounding box it fills (square 1.0, circle ~0.78, triangle ~0.5)."""
    codes = _codes(sample.image)
    known = [BACKGROUNDS[cfg.background]] + [PALETTE[c] for c in cfg.colors]
    assert set(np.unique(codes).tolist()) <= set(_codes([known]).ravel().tolist())
    found = []
    for color in cfg.colors:
        labels, _ = ndimage.label(codes == _codes([[PALETTE[color]]])[0, 0])
        for k, (ys, xs) in enumerate(ndimage.find_objects(labels), 1):
            h, w = ys.stop - ys.start, xs.stop - xs.start
            assert w == h
            fill = (labels[ys, xs] == k).sum() / (w * h)
            shape = "square" if fill > 0.95 else "circle" if fill > 0.65 else "triangle"
            found.append(ShapeObject(shape, color, xs.start, ys.start, w))
    return sorted(found, key=lambda o: (o.x, o.y))


def norm_box(o: ShapeObject, size=CFG.image_size):
    return tuple(v / size for v in o.box_px)


def test_same_seed_same_samples_and_pixels(train):
    again = shapes_samples(CFG, "train", 30)
    for a, b in zip(train[:30], again, strict=True):
        assert (a.task, a.turns, a.image_id, a.meta) == (b.task, b.turns, b.image_id, b.meta)
        assert a.image.tobytes() == b.image.tobytes()
    assert shapes_sample(CFG, "train", 17).turns == train[17].turns
    other = shapes_samples(ShapesConfig(seed=1), "train", 30)
    assert [s.meta["objects"] for s in other] != [s.meta["objects"] for s in train[:30]]


def test_tasks_cycle_through_the_config(train):
    assert [s.task for s in train[:12]] == list(SHAPES_TASKS) * 2
    assert Counter(s.task for s in train) == {t: N // len(SHAPES_TASKS) for t in SHAPES_TASKS}
    assert {s.source for s in train} == {"shapes"}


def test_splits_are_disjoint_by_construction(train, held_out):
    train_scenes = {repr(s.meta["objects"]) for s in train}
    assert not train_scenes & {repr(s.meta["objects"]) for s in held_out}
    assert not {s.image.tobytes() for s in train} & {s.image.tobytes() for s in held_out}
    for split in ("train", "held_out"):
        for i in range(50):
            objects, _ = scene(CFG, split, i)
            assert scene_split(CFG, objects) == split


def test_ground_truth_matches_the_pixels(train, held_out):
    for s in train + held_out:
        seen = detect(s)  # left to right, as the ground truth is listed
        assert CFG.min_objects <= len(seen) <= CFG.max_objects
        assert len(seen) == len(s.meta["objects"])
        for gt, px in zip(s.meta["objects"], seen, strict=True):
            assert (gt["shape"], gt["color"]) == (px.shape, px.color)
            assert gt["box_px"] == list(px.box_px)
            assert 0 <= px.x and px.x + px.size <= CFG.image_size
            assert 0 <= px.y and px.y + px.size <= CFG.image_size


def test_answers_match_the_pixels(train):
    for s in train:
        seen = detect(s)
        names = [o.name for o in seen]
        (turn,) = s.turns
        if s.task == "caption":
            assert turn == Turn("", describe(seen))
        elif s.task == "grounding":
            name = turn.prompt.removeprefix("the ")
            assert names.count(name) == 1  # only unambiguous referents
            target = seen[names.index(name)]
            assert parse_box(turn.response) == pytest.approx(norm_box(target), abs=0.006)
        elif s.task == "dense_caption":
            box = parse_box(turn.prompt)
            hits = [o for o in seen if norm_box(o) == pytest.approx(box, abs=0.006)]
            assert [o.name for o in hits] == [turn.response]
        elif s.task == "itm":
            assert (turn.prompt == describe(seen)) == (turn.response == "yes")
        elif s.task == "pope":
            color, shape = turn.prompt.split(" in the image")[0].split()[-2:]
            assert (f"{color} {shape}" in names) == (turn.response == "yes")
        elif s.task == "vqa":
            check_vqa(s, seen)


def check_vqa(s, seen):
    (turn,) = s.turns
    q, kind = turn.prompt, s.meta["question_type"]
    shapes = [o.shape for o in seen]
    colors = [o.color for o in seen]
    if kind == "count":
        assert q == "How many objects are there?" and turn.response == str(len(seen))
    elif kind == "count_shape":
        shape = q.removeprefix("How many ").removesuffix("s are there?")
        assert turn.response == str(shapes.count(shape))
    elif kind == "color":
        shape = q.removeprefix("What color is the ").removesuffix("?")
        assert shapes.count(shape) == 1 and turn.response == colors[shapes.index(shape)]
    else:
        color = q.removeprefix("What shape is the ").removesuffix(" object?")
        assert colors.count(color) == 1 and turn.response == shapes[colors.index(color)]


def test_every_question_type_occurs(train):
    kinds = Counter(s.meta["question_type"] for s in train if s.task == "vqa")
    assert set(kinds) == {"count", "count_shape", "color", "shape"}


@pytest.mark.parametrize("task", ["itm", "pope"])
@pytest.mark.parametrize("n", [1, 7, 120, 241])
def test_yes_no_is_balanced(task, n):
    cfg = ShapesConfig(tasks=(task, "caption", task))
    answers = Counter(
        s.turns[0].response for s in shapes_samples(cfg, "train", n) if s.task == task
    )
    assert set(answers) <= {"yes", "no"}
    assert abs(answers["yes"] - answers["no"]) <= 1


def test_describe_groups_and_counts():
    objs = [
        ShapeObject("circle", "red", 1, 1, 9),
        ShapeObject("square", "blue", 20, 1, 9),
        ShapeObject("circle", "red", 40, 1, 9),
        ShapeObject("triangle", "orange", 50, 30, 9),
    ]
    assert describe(objs) == "two red circles, a blue square and an orange triangle"
    assert describe(objs[:1]) == "a red circle"
    assert describe(objs[:2]) == "a red circle and a blue square"


def test_other_image_sizes_and_palettes():
    cfg = ShapesConfig(image_size=96, colors=("purple", "cyan"), background="black", seed=3)
    samples = shapes_samples(cfg, "held_out", 24)
    for s in samples:
        assert s.image.size == (96, 96)
        assert len(detect(s, cfg)) == len(s.meta["objects"])


def test_config_round_trips_and_names_bad_fields():
    assert from_dict(ShapesConfig, to_dict(CFG)) == CFG
    bad = [
        ({"image_size": 8}, "image_size"),
        ({"colors": ("mauve",)}, "colors"),
        ({"shapes": ()}, "shapes"),
        ({"tasks": ("caption", "ocr")}, "tasks"),
        ({"max_objects": 9}, "max_objects"),
        ({"min_objects": 3, "max_objects": 2}, "max_objects"),
        ({"max_objects": 8}, "max_objects"),  # 8 objects of 19 px do not fit in 64 px
        ({"background": "black", "colors": ("red",), "shapes": ("circle",)}, "colors"),
        ({"held_out_fraction": 1.0}, "held_out_fraction"),
        ({"min_object_frac": 0.05}, "min_object_frac"),
        ({"gap": 0}, "gap"),
        ({"seed": -1}, "seed"),
    ]
    for overrides, field in bad:
        with pytest.raises(ConfigError) as err:
            ShapesConfig(**overrides)
        assert err.value.field == field, overrides
    with pytest.raises(ConfigError, match="split"):
        shapes_samples(CFG, "test", 1)
