"""The spec's data filters (SHAKEUP, instruction-tuning mixture).

* Visual Genome regions: keep only regions with area (box width x height, pixels) strictly
  below 16,384 (= 128 x 128): :func:`filter_vg_regions`.
* GRIT: drop images under 100 px a side, then keep images by their rarest noun phrase with at
  least 3 and at most 8 images per phrase: :func:`filter_grit` (algorithm in its docstring).
* OCR-VQA: drop images under 350 px a side, near-blank images (more than 85% of the pixels
  one colour, computed from the image file) and book-genre questions: :func:`filter_ocrvqa`.

Size edges: a side of exactly 100 (GRIT) or 350 (OCR-VQA) px is kept; an area of exactly 16,384
is dropped; exactly 85% one colour is kept (only *more than* 85% is near-blank).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Literal

from PIL import Image

from vlab.errors import VlabError
from vlab.models.vlm.data.records import VLSample

log = logging.getLogger(__name__)

VG_MAX_AREA = 16_384
GRIT_MIN_SIDE = 100
GRIT_MIN_IMAGES = 3
GRIT_MAX_IMAGES = 8
OCRVQA_MIN_SIDE = 350
OCRVQA_MAX_BLANK = 0.85


def filter_vg_regions(
    samples: Iterable[VLSample], max_area: float = VG_MAX_AREA
) -> Iterator[VLSample]:
    """Drop Visual Genome region samples whose box area (``meta["box_xywh"]`` w x h) is
    ``>= max_area``; every other sample passes unchanged."""
    for s in samples:
        if s.source == "visual_genome" and "box_xywh" in s.meta:
            _, _, w, h = s.meta["box_xywh"]
            if w * h >= max_area:
                continue
        yield s


_ARTICLES = {"a", "an", "the"}


def normalize_phrase(phrase: str) -> str:
    """Lower case, articles ("a", "an", "the") removed as words, whitespace collapsed:
    ``"The  Red Car"`` -> ``"red car"``, ``"a cup of the tea"`` -> ``"cup of tea"``."""
    return " ".join(w for w in phrase.lower().split() if w not in _ARTICLES)


def grit_phrases(sample: VLSample) -> set[str]:
    """The normalised noun phrases of a GRIT sample (empty phrases dropped)."""
    caption = sample.meta["caption"]
    phrases = {normalize_phrase(caption[int(c[0]) : int(c[1])]) for c in sample.meta["noun_chunks"]}
    return {p for p in phrases if p}


def _rank(image_id: str) -> str:
    return hashlib.sha256(image_id.encode()).hexdigest()


def rarest_phrases(samples: list[VLSample]) -> list[str | None]:
    """Steps 2-4 of :func:`filter_grit` for already size-filtered samples: each sample's rarest
    normalised noun phrase (None if it has none)."""
    phrases = [grit_phrases(s) for s in samples]
    freq = Counter(p for ps in phrases for p in ps)
    return [min(ps, key=lambda p: (freq[p], p)) if ps else None for ps in phrases]


def filter_grit(
    samples: Iterable[VLSample],
    min_side: int = GRIT_MIN_SIDE,
    min_images: int = GRIT_MIN_IMAGES,
    max_images: int = GRIT_MAX_IMAGES,
) -> list[VLSample]:
    """The GRIT subset the spec trains on, deterministic and independent of input order.

    1. Size: drop images with ``meta["width"] < min_side`` or ``meta["height"] < min_side``
       (a side of exactly ``min_side`` is kept).
    2. Phrases: each image's set of normalised noun phrases (:func:`normalize_phrase` of the
       caption text of each noun chunk); images with none are dropped.
    3. Frequency: for each phrase, the number of images left after step 1 whose set contains
       it (dropped small images do not count).
    4. Rarest phrase of an image: the phrase of its set with the lowest frequency; ties go to
       the alphabetically first phrase.
    5. Group images by rarest phrase; drop groups with fewer than ``min_images`` images.
    6. In each remaining group keep the first ``max_images`` images ordered by the sha256 of
       their image id (a fixed pseudo-random choice, not biased to low ids).

    Returns the kept samples in input order.
    """
    sized = [s for s in samples if s.meta["width"] >= min_side and s.meta["height"] >= min_side]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, phrase in enumerate(rarest_phrases(sized)):
        if phrase is not None:
            groups[phrase].append(i)
    keep: set[int] = set()
    for members in groups.values():
        if len(members) >= min_images:
            keep.update(sorted(members, key=lambda i: _rank(sized[i].image_id))[:max_images])
    return [s for i, s in enumerate(sized) if i in keep]


# OCR-VQA's genre templates: "What is the genre of this book?", "What type of book is this?",
# "Is this book related to <genre>?", "Is this a <genre> book?" ("Is this a religious book?",
# "Is this a sci-fi book?", "Is this an exam preparation book?").
_GENRE_PATTERNS = (
    re.compile(r"\bgenre\b"),
    re.compile(r"\btype of (this |the )?book\b"),
    re.compile(r"^is this book related to\b"),
    re.compile(r"^is this an? .+ book\??$"),
)


def is_genre_question(question: str) -> bool:
    """Whether an OCR-VQA question asks about the book's genre (dropped: the cover rarely
    shows it). Title, author, edition and year questions are kept."""
    q = " ".join(question.lower().split())
    return any(p.search(q) for p in _GENRE_PATTERNS)


def dominant_color_fraction(image: Image.Image) -> float:
    """The fraction of pixels that have the image's most common RGB colour (exact match)."""
    rgb = image.convert("RGB")
    w, h = rgb.size
    colors = rgb.getcolors(maxcolors=w * h)
    return max(count for count, _ in colors) / (w * h)


def filter_ocrvqa(
    samples: Iterable[VLSample],
    min_side: int = OCRVQA_MIN_SIDE,
    max_blank: float = OCRVQA_MAX_BLANK,
    on_missing: Literal["error", "drop"] = "error",
) -> Iterator[VLSample]:
    """Drop OCR-VQA genre questions, then samples whose image has a side under ``min_side`` px
    or more than ``max_blank`` of its pixels one colour (read from the image file once per
    image). A missing image file raises, or with ``on_missing="drop"`` drops its samples and
    logs how many."""
    verdicts: dict[str, bool] = {}
    missing_images: set[str] = set()
    missing = 0
    for s in samples:
        if is_genre_question(s.turns[0].prompt):
            continue
        key = s.image if isinstance(s.image, str) else None
        ok = verdicts.get(key) if key is not None else None
        if ok is None:
            try:
                ok = _ocrvqa_image_ok(s.image, min_side, max_blank)
            except FileNotFoundError:
                if on_missing == "error":
                    raise VlabError(
                        f"OCR-VQA image {s.image} does not exist; download it or pass "
                        "on_missing='drop'"
                    ) from None
                missing_images.add(str(s.image))
                ok = False
            if key is not None:
                verdicts[key] = ok
        if ok:
            yield s
        elif key in missing_images:
            missing += 1
    if missing:
        log.warning(
            "filter_ocrvqa: dropped %d samples of %d missing image files",
            missing,
            len(missing_images),
        )


def _ocrvqa_image_ok(image: str | Image.Image | None, min_side: int, max_blank: float) -> bool:
    if image is None:
        raise VlabError("OCR-VQA samples need an image to filter")
    im = Image.open(image) if isinstance(image, str) else image
    try:
        if min(im.size) < min_side:
            return False
        return dominant_color_fraction(im) <= max_blank
    finally:
        if isinstance(image, str):
            im.close()
