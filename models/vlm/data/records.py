"""The one example record every reader, filter, packer and the shapes dataset produce.

A :class:`VLSample` is one image (a file path or an in-memory PIL image) with one or more
(prompt, response) :class:`Turn` s of a single task. The task instruction is *not* part of the
record: it is looked up from the task (:mod:`vlab.models.vlm.data.instructions`) by sequence
assembly, so the same records serve task-agnostic and task-aware orderings.

A record without an image (``image`` None, :attr:`VLSample.has_image` False) is a text-only
example, as LLaVA-665K's ShareGPT conversations are: it is read, packed, stored, assembled
(no image markers, no patch slots) and batched like any other, and the model never runs its
vision encoders for it.

Boxes are written as text the way the spec wants the model to read and write them:
``[x1, y1, x2, y2]`` normalised to 0-1 by the image width and height, two decimals
(``"[0.12, 0.34, 0.56, 0.78]"``). :func:`parse_box` reads them back from model output.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vlab.errors import VlabError

TASKS = (
    "caption",
    "dense_caption",
    "grounded_caption",
    "itm",
    "mcvqa",
    "grounding",
    "vqa",
    "chat",
    "pope",
)

# meta key: samples sharing a value are never packed into the same sequence (the rotations of
# one multiple-choice question, the expressions of one RefCOCO region described as a box).
PACK_KEY = "pack_key"


@dataclass(frozen=True)
class Turn:
    """One input-output pair: the text after the instruction and the text to be predicted."""

    prompt: str
    response: str


@dataclass
class VLSample:
    """One training or evaluation example.

    ``image``: a path (the dataset's relative path joined to the image root given to the
    reader), an in-memory image (built-in datasets), or None (text only). ``image_id``: the
    dataset's id of the image (examples are packed by it). ``source``: the dataset name
    (``coco``, ``vqav2``, ``shapes`` ...). ``meta``: per-dataset extras documented by each reader
    (all VQA answers, choices, pixel boxes, split ...).
    """

    image: str | Image.Image | None
    image_id: str
    task: str
    source: str
    turns: list[Turn]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise VlabError(f"unknown task {self.task!r} (known: {', '.join(TASKS)})")
        if not self.turns:
            raise VlabError(f"sample {self.source}/{self.image_id} has no turns")

    @property
    def has_image(self) -> bool:
        """False for a text-only example: its sequence holds no image tokens."""
        return self.image is not None

    def replace(self, **changes: Any) -> VLSample:
        """A copy with some fields changed (``meta`` is copied, never shared)."""
        changes.setdefault("meta", dict(self.meta))
        return dataclasses.replace(self, **changes)


def _clamp01(v: float) -> float:
    return min(1.0, max(0.0, v))


def format_norm_box(x1: float, y1: float, x2: float, y2: float) -> str:
    """``"[x1, y1, x2, y2]"`` from coordinates already in 0-1: clamped, ordered, two decimals."""
    xs = sorted((_clamp01(x1), _clamp01(x2)))
    ys = sorted((_clamp01(y1), _clamp01(y2)))
    return f"[{xs[0]:.2f}, {ys[0]:.2f}, {xs[1]:.2f}, {ys[1]:.2f}]"


def format_box(x1: float, y1: float, x2: float, y2: float, width: float, height: float) -> str:
    """A pixel box (corners) as normalised text: ``format_box(10, 20, 30, 40, 100, 100)`` is
    ``"[0.10, 0.20, 0.30, 0.40]"``. Out-of-image coordinates are clamped to the image."""
    if not (width > 0 and height > 0):
        raise VlabError(f"cannot normalise a box by an image size of {width} x {height}")
    return format_norm_box(x1 / width, y1 / height, x2 / width, y2 / height)


def xywh_to_xyxy(box: list[float] | tuple[float, ...]) -> tuple[float, float, float, float]:
    """COCO / Visual Genome ``[x, y, w, h]`` (pixels) to corners ``(x1, y1, x2, y2)``."""
    x, y, w, h = (float(v) for v in box)
    return x, y, x + w, y + h


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BRACKETED = re.compile(r"[\[(]([^\[\]()]*)[\])]?")


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first box in model output, or None if there is none.

    Robust to what generation produces: the first bracketed group holding at least four
    numbers wins, else the first four numbers anywhere (a missing bracket, parentheses,
    extra spaces or words around it). Values are clamped to 0-1 and each pair ordered, so the
    result is always a valid normalised box.
    """
    candidates = [m.group(1) for m in _BRACKETED.finditer(text)] + [text]
    for chunk in candidates:
        nums = [float(v) for v in re.findall(_NUMBER, chunk)]
        if len(nums) >= 4 and all(math.isfinite(v) for v in nums[:4]):
            x1, y1, x2, y2 = (_clamp01(v) for v in nums[:4])
            return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
    return None


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two corner boxes (grounding: a hit at IoU > 0.5)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def load_image(sample: VLSample) -> Image.Image:
    """The sample's image as RGB: opened from its path, or the in-memory image itself.

    Only for samples that have one (:attr:`VLSample.has_image`); asking a text-only sample
    for its image is an error."""
    if isinstance(sample.image, Image.Image):
        return sample.image
    if sample.image is None:
        raise VlabError(f"{sample.source}/{sample.image_id} is text-only: it has no image")
    try:
        with Image.open(sample.image) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise VlabError(
            f"{sample.source}/{sample.image_id}: cannot read image {sample.image}: {e}"
        ) from e
