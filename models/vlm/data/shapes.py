"""The built-in offline dataset: rendered scenes of coloured shapes with exact ground truth.

Why: the lab's question (Mamba matches Transformers on *summary* tasks -- captioning, VQA --
but trails on *retrieval* tasks -- grounding) must be testable end to end on a CPU, without
downloads. A scene is 1-4 non-overlapping shapes (circle, square, triangle) in flat colours on a
plain background, small enough (64 px: 8 x 8 patches of 8 px) for a tiny patch encoder, with
every answer known exactly from the ground truth (shape, colour, pixel box).

Tasks (one per sample; the sample's task is ``cfg.tasks[index % len(cfg.tasks)]``, so repeat
a task in ``tasks`` to weight it):

* ``caption``: "a red circle and two blue squares" (objects grouped by colour and shape, in
  order of their leftmost member, left to right);
* ``vqa``: "What color is the circle?" (the shape occurs once) -> "red"; "What shape is the red
  object?" (the colour occurs once) -> "circle"; "How many objects are there?" -> "3"; "How
  many squares are there?" -> "0".."4" (digits, as in VQAv2);
* ``grounding``: "the red circle" -> its box, only for a colour-shape pair that occurs once;
* ``dense_caption``: a box -> "red circle";
* ``itm``: a caption -> "yes", or a caption with one object's colour or shape changed -> "no";
* ``pope``: "Is there a green triangle in the image?" -> "yes" / "no" (an absent pair).

``itm`` and ``pope`` alternate yes, no, yes, ... over the occurrences of the task, so any run of
samples from index 0 is balanced to within one.

Determinism and splits: sample ``index`` of ``split`` is drawn from the random stream
``(seed, split, index, attempt)``; a drawn scene is accepted only if the sha256 of its object
list falls in the split's share of hash space (``held_out_fraction`` for ``held_out``) and it
suits the task (grounding needs a unique pair). No scene can therefore appear in both splits,
by construction, whatever ``n``. Boxes: an object of size s at (x, y) covers pixels x..x+s-1,
y..y+s-1; its box is ``[x/W, y/H, (x+s)/W, (y+s)/H]`` (two decimals in the text).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.data.records import Turn, VLSample, format_box

SHAPES = ("circle", "square", "triangle")
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 205, 20),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
    "cyan": (20, 200, 210),
    "pink": (240, 120, 190),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
SHAPES_TASKS = ("caption", "vqa", "grounding", "dense_caption", "itm", "pope")
SPLITS = ("train", "held_out")
_SPLIT_CODE = {"train": 0, "held_out": 1}
_MAX_ATTEMPTS = 1000
_NUMBERS = {1: "a", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


@dataclass(frozen=True)
class ShapesConfig:
    """The shapes dataset. Object sides are fractions of ``image_size`` (10-19 px at 64 px);
    ``gap``: minimum empty pixels between objects; ``held_out_fraction``: share of scene space
    reserved for ``held_out``."""

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow")
    background: str = "white"
    min_object_frac: float = 0.15
    max_object_frac: float = 0.3
    gap: int = 2
    tasks: tuple[str, ...] = SHAPES_TASKS
    held_out_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError("image_size", f"must be >= 16 px, got {self.image_size}")
        from vlab.preflight import MAX_IMAGE_SIDE, check_at_most

        check_at_most(self.image_size, MAX_IMAGE_SIDE, "image_size", "px")
        if not 1 <= self.min_objects <= self.max_objects <= len(_NUMBERS):
            raise ConfigError(
                "max_objects",
                f"need 1 <= min_objects <= max_objects <= {len(_NUMBERS)}, got "
                f"{self.min_objects}..{self.max_objects}",
            )
        _check_names("shapes", self.shapes, SHAPES)
        _check_names("colors", self.colors, tuple(PALETTE))
        _check_names("tasks", self.tasks, SHAPES_TASKS, unique=False)
        if self.background not in BACKGROUNDS:
            raise ConfigError("background", f"{self.background!r} is not one of {BACKGROUNDS}")
        if any(PALETTE[c] == BACKGROUNDS[self.background] for c in self.colors):
            raise ConfigError("background", "must differ from every object colour")
        if not 0 < self.min_object_frac <= self.max_object_frac <= 1:
            raise ConfigError("min_object_frac", "need 0 < min_object_frac <= max_object_frac <= 1")
        if self.min_px < 8:
            raise ConfigError("min_object_frac", f"objects of {self.min_px} px are too small (< 8)")
        if self.gap < 1:
            raise ConfigError("gap", f"must be >= 1 px so objects never touch, got {self.gap}")
        if self.max_objects * (self.max_px + self.gap) ** 2 > 0.6 * self.image_size**2:
            raise ConfigError(
                "max_objects", f"{self.max_objects} objects of {self.max_px} px do not fit"
            )
        if len(self.shapes) * len(self.colors) <= self.max_objects:
            raise ConfigError(
                "colors", "need more colour-shape pairs than max_objects (for absent-object tasks)"
            )
        if not 0 < self.held_out_fraction < 1:
            raise ConfigError(
                "held_out_fraction", f"must be in (0, 1), got {self.held_out_fraction}"
            )
        if self.seed < 0:
            raise ConfigError("seed", f"must be >= 0, got {self.seed}")

    @property
    def min_px(self) -> int:
        return round(self.min_object_frac * self.image_size)

    @property
    def max_px(self) -> int:
        return max(self.min_px, round(self.max_object_frac * self.image_size))


def _check_names(
    name: str, values: tuple[str, ...], known: tuple[str, ...], unique: bool = True
) -> None:
    bad = [v for v in values if v not in known]
    if not values or bad:
        raise ConfigError(name, f"{list(values)!r}: choose from {', '.join(known)}")
    if unique and len(set(values)) != len(values):
        raise ConfigError(name, f"{list(values)!r} has duplicates")


@dataclass(frozen=True)
class ShapeObject:
    """One shape: its colour and shape names, top-left pixel and side in pixels."""

    shape: str
    color: str
    x: int
    y: int
    size: int

    @property
    def box_px(self) -> tuple[int, int, int, int]:
        """``(x1, y1, x2, y2)`` with exclusive x2, y2: covered pixels are x1..x2-1."""
        return self.x, self.y, self.x + self.size, self.y + self.size

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(shape: str) -> str:
    return shape + "s"


def describe(objects: tuple[ShapeObject, ...] | list[ShapeObject]) -> str:
    """The caption of a scene: ``"a red circle, two blue squares and an orange triangle"``."""
    counts: dict[tuple[str, str], int] = {}
    for o in sorted(objects, key=lambda o: (o.x, o.y)):
        counts[(o.color, o.shape)] = counts.get((o.color, o.shape), 0) + 1
    parts = []
    for (color, shape), n in counts.items():
        if n == 1:
            parts.append(f"{_article(color)} {color} {shape}")
        else:
            parts.append(f"{_NUMBERS[n]} {color} {_plural(shape)}")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def render(cfg: ShapesConfig, objects: tuple[ShapeObject, ...]) -> Image.Image:
    """The RGB image of a scene (no anti-aliasing: every pixel is background or one colour)."""
    w = cfg.image_size
    img = Image.new("RGB", (w, w), BACKGROUNDS[cfg.background])
    draw = ImageDraw.Draw(img)
    for o in objects:
        x0, y0, x1, y1 = o.x, o.y, o.x + o.size - 1, o.y + o.size - 1
        fill = PALETTE[o.color]
        if o.shape == "circle":
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif o.shape == "square":
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        else:
            draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
    return img


def _place(cfg: ShapesConfig, rng: np.random.Generator) -> tuple[ShapeObject, ...] | None:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    placed: list[ShapeObject] = []
    for _ in range(n):
        for _try in range(50):
            s = int(rng.integers(cfg.min_px, cfg.max_px + 1))
            x = int(rng.integers(0, cfg.image_size - s + 1))
            y = int(rng.integers(0, cfg.image_size - s + 1))
            if all(_apart((x, y, x + s, y + s), o.box_px, cfg.gap) for o in placed):
                shape = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
                color = cfg.colors[int(rng.integers(len(cfg.colors)))]
                placed.append(ShapeObject(shape, color, x, y, s))
                break
        else:
            return None
    return tuple(sorted(placed, key=lambda o: (o.x, o.y)))


def _apart(a: tuple[int, ...], b: tuple[int, ...], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def scene_split(cfg: ShapesConfig, objects: tuple[ShapeObject, ...]) -> str:
    """The split a scene belongs to, from the sha256 of its object list."""
    key = repr([(o.shape, o.color, o.x, o.y, o.size) for o in objects]).encode()
    u = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64
    return "held_out" if u < cfg.held_out_fraction else "train"


def _unique(objects: tuple[ShapeObject, ...]) -> list[ShapeObject]:
    names = [o.name for o in objects]
    return [o for o in objects if names.count(o.name) == 1]


def task_of(cfg: ShapesConfig, index: int) -> str:
    return cfg.tasks[index % len(cfg.tasks)]


def _positive(cfg: ShapesConfig, index: int) -> bool:
    """Alternate yes / no over the occurrences of this index's task."""
    t, task = len(cfg.tasks), task_of(cfg, index)
    k = (index // t) * cfg.tasks.count(task) + cfg.tasks[: index % t].count(task)
    return k % 2 == 0


def scene(
    cfg: ShapesConfig, split: str, index: int
) -> tuple[tuple[ShapeObject, ...], np.random.Generator]:
    """The objects of sample ``index`` of ``split`` and the random stream that drew them (the
    task's choices continue on it)."""
    if split not in SPLITS:
        raise ConfigError("split", f"{split!r} is not one of {', '.join(SPLITS)}")
    if index < 0:
        raise VlabError(f"sample index must be >= 0, got {index}")
    task = task_of(cfg, index)
    for attempt in range(_MAX_ATTEMPTS):
        rng = np.random.default_rng([cfg.seed, _SPLIT_CODE[split], index, attempt])
        objects = _place(cfg, rng)
        if objects is None or scene_split(cfg, objects) != split:
            continue
        if task == "grounding" and not _unique(objects):
            continue
        return objects, rng
    raise VlabError(f"no {split} scene found for index {index}: loosen the shapes config")


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def _vqa(cfg: ShapesConfig, objects, rng) -> tuple[Turn, dict]:
    shapes = [o.shape for o in objects]
    colors = [o.color for o in objects]
    kinds = ["count", "count_shape"]
    kinds += ["color"] if any(shapes.count(s) == 1 for s in shapes) else []
    kinds += ["shape"] if any(colors.count(c) == 1 for c in colors) else []
    kind = _pick(rng, sorted(kinds))
    if kind == "count":
        return Turn("How many objects are there?", str(len(objects))), {"question_type": kind}
    if kind == "count_shape":
        s = _pick(rng, list(cfg.shapes))
        turn = Turn(f"How many {_plural(s)} are there?", str(shapes.count(s)))
        return turn, {"question_type": kind}
    if kind == "color":
        o = _pick(rng, [o for o in objects if shapes.count(o.shape) == 1])
        turn = Turn(f"What color is the {o.shape}?", o.color)
    else:
        o = _pick(rng, [o for o in objects if colors.count(o.color) == 1])
        turn = Turn(f"What shape is the {o.color} object?", o.shape)
    return turn, {"question_type": kind, "target": objects.index(o)}


def _corrupt(cfg: ShapesConfig, objects, rng) -> tuple[ShapeObject, ...]:
    j = int(rng.integers(len(objects)))
    o = objects[j]
    change_color = len(cfg.shapes) == 1 or (len(cfg.colors) > 1 and rng.random() < 0.5)
    if change_color:
        new = replace(o, color=_pick(rng, [c for c in cfg.colors if c != o.color]))
    else:
        new = replace(o, shape=_pick(rng, [s for s in cfg.shapes if s != o.shape]))
    return objects[:j] + (new,) + objects[j + 1 :]


def shapes_sample(cfg: ShapesConfig, split: str, index: int) -> VLSample:
    """Sample ``index`` of ``split`` (deterministic; the image is rendered in memory)."""
    objects, rng = scene(cfg, split, index)
    task = task_of(cfg, index)
    w = cfg.image_size

    def box(o: ShapeObject) -> str:
        return format_box(*o.box_px, w, w)

    meta: dict = {"split": split, "index": index, "width": w, "height": w}
    meta["objects"] = [
        {"shape": o.shape, "color": o.color, "box_px": list(o.box_px)} for o in objects
    ]
    if task == "caption":
        turn = Turn("", describe(objects))
    elif task == "vqa":
        turn, extra = _vqa(cfg, objects, rng)
        meta.update(extra)
    elif task == "grounding":
        o = _pick(rng, _unique(objects))
        turn, meta["target"] = Turn(f"the {o.name}", box(o)), objects.index(o)
    elif task == "dense_caption":
        o = _pick(rng, list(objects))
        turn, meta["target"] = Turn(box(o), o.name), objects.index(o)
    elif task == "itm":
        label = _positive(cfg, index)
        text = describe(objects if label else _corrupt(cfg, objects, rng))
        turn, meta["label"] = Turn(text, "yes" if label else "no"), label
    else:
        label = _positive(cfg, index)
        present = {(o.color, o.shape) for o in objects}
        if label:
            color, shape = _pick(rng, sorted(present))
        else:
            absent = [(c, s) for c in cfg.colors for s in cfg.shapes if (c, s) not in present]
            color, shape = _pick(rng, absent)
        question = f"Is there {_article(color)} {color} {shape} in the image?"
        turn, meta["label"] = Turn(question, "yes" if label else "no"), label
    image_id = f"shapes:{split}:{cfg.seed}:{index}"
    return VLSample(render(cfg, objects), image_id, task, "shapes", [turn], meta)


def shapes_samples(cfg: ShapesConfig, split: str, n: int, start: int = 0) -> list[VLSample]:
    """Samples ``start .. start + n - 1`` of ``split``: the task mixture of ``cfg.tasks``."""
    if n < 0:
        raise VlabError(f"number of samples must be >= 0, got {n}")
    return [shapes_sample(cfg, split, i) for i in range(start, start + n)]
