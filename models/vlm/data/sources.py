"""Training data from the datasets on disk: one config entry per source, read the same way.

A :class:`SourceConfig` names a reader of :mod:`vlab.models.vlm.data.readers` (``vqav2``,
``refcoco``, ``llava_pretrain`` ...), its annotation files in the reader's argument order, the
image root, the split and the reader's extra keyword options. :func:`load_source` then applies
the spec's recipe for that source, in this order:

1. read (``limit`` keeps the first N examples: handy for smoke runs on a real dataset);
2. the spec's filter, where the dataset has one (Visual Genome regions < 16,384 px, GRIT's
   rarest-phrase subset, OCR-VQA's image and genre rules), unless ``filter`` is false;
3. examples without an image are kept as text-only examples (LLaVA-665K's ShareGPT
   conversations; their sequences hold no image tokens) and counted in ``no_image``;
4. multiple-choice questions are rotated through every letter (``rotate_choices``).

Packing and mixing happen over all sources together in :mod:`vlab.models.vlm.data.prepared`.
Example, the SHAKEUP stage-1 data as JSON::

    {"reader": "llava_pretrain", "paths": ["LLaVA-Pretrain/blip_laion_cc_sbu_558k.json"],
     "image_root": "LLaVA-Pretrain/images"}
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from vlab.errors import ConfigError
from vlab.models.vlm.data import filters
from vlab.models.vlm.data import readers as R
from vlab.models.vlm.data.multiple_choice import expand_rotations
from vlab.models.vlm.data.records import VLSample

log = logging.getLogger(__name__)

READERS: dict[str, Callable[..., Iterator[VLSample]]] = {
    "coco_captions": R.read_coco_captions,
    "textcaps": R.read_textcaps,
    "llava_pretrain": R.read_llava_pretrain,
    "llava_instruct": R.read_llava_instruct,
    "grit": R.read_grit,
    "refcoco": R.read_refcoco,
    "vg_regions": R.read_vg_regions,
    "visual7w_pointing": R.read_visual7w_pointing,
    "vqav2": R.read_vqav2,
    "gqa": R.read_gqa,
    "vg_qa": R.read_vg_qa,
    "ocrvqa": R.read_ocrvqa,
    "docvqa": R.read_docvqa,
    "infographicvqa": R.read_infographicvqa,
    "textvqa": R.read_textvqa,
    "pope": R.read_pope,
    "visual7w_telling": R.read_visual7w_telling,
    "ai2d": R.read_ai2d,
    "aokvqa": R.read_aokvqa,
    "vsr": R.read_vsr,
}

# the spec's subset rules, by reader; applied unless SourceConfig.filter is false
FILTERS: dict[str, Callable[..., Any]] = {
    "vg_regions": filters.filter_vg_regions,
    "grit": filters.filter_grit,
    "ocrvqa": filters.filter_ocrvqa,
}


def path_params(reader: str) -> list[str]:
    """The reader's file arguments: its positional parameters before ``image_root``."""
    names = list(inspect.signature(READERS[reader]).parameters)
    return names[: names.index("image_root")]


@dataclass(frozen=True)
class SourceConfig:
    """One dataset of a training or held-out mixture.

    ``paths``: the annotation files in the reader's order (``vqav2``: questions then
    annotations; ``refcoco``: refs pickle then instances; ``vg_regions``/``vg_qa``: the
    annotation file then ``image_data.json``; a list of files where the reader takes several,
    as ``grit``'s shards; null where the reader allows none, as VQAv2 test's annotations).
    ``options``: further keyword arguments of the reader (``source``, ``tasks``,
    ``test_ids_path`` ...). ``name``: the source's label in statistics and, when given, the
    ``source`` of its samples (so two splits of one dataset score apart, and packing caps
    are looked up under it); by default the reader's name and the reader's source.
    """

    reader: str
    paths: tuple[str | list[str] | None, ...]
    image_root: str
    split: str = "train"
    options: dict = field(default_factory=dict)
    filter: bool = True
    rotate_choices: bool = True
    limit: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.reader not in READERS:
            raise ConfigError("reader", f"{self.reader!r} is not one of {', '.join(READERS)}")
        wanted = path_params(self.reader)
        if len(self.paths) != len(wanted):
            raise ConfigError(
                "paths",
                f"reader {self.reader!r} takes {len(wanted)} file(s) ({', '.join(wanted)}), "
                f"got {len(self.paths)}",
            )
        params = inspect.signature(READERS[self.reader]).parameters
        for key in self.options:
            if key not in params or key in (*wanted, "image_root", "split"):
                raise ConfigError(f"options.{key}", f"not an option of reader {self.reader!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", f"must be >= 1, got {self.limit}")

    @property
    def label(self) -> str:
        return self.name or self.reader

    def files(self) -> list[Path]:
        """Every annotation file this source reads (for existence checks before work)."""
        out = []
        for p in self.paths:
            if p is None:
                continue
            out.extend(Path(x) for x in ([p] if isinstance(p, str) else p))
        for key in ("test_ids_path", "image_data_path"):
            if self.options.get(key):
                out.append(Path(self.options[key]))
        return out

    def missing(self) -> list[Path]:
        """The annotation files (or AI2D question directories) that do not exist."""
        return [f for f in self.files() if not f.exists()]


@dataclass
class SourceStats:
    """What the recipe did to one source (written to the prepared data's stats).

    ``no_image``: the kept examples that are text-only (they train without an image)."""

    read: int = 0
    kept: int = 0
    no_image: int = 0
    samples: int = 0


def load_source(cfg: SourceConfig) -> tuple[list[VLSample], SourceStats]:
    """All samples of one source after limit, filter and option rotation, text-only examples
    counted."""
    stats = SourceStats()
    read = READERS[cfg.reader](*cfg.paths, cfg.image_root, split=cfg.split, **cfg.options)
    samples = list(islice(read, cfg.limit) if cfg.limit else read)
    if cfg.name is not None:
        samples = [s if s.source == cfg.name else s.replace(source=cfg.name) for s in samples]
    stats.read = len(samples)
    if cfg.filter and cfg.reader in FILTERS:
        samples = list(FILTERS[cfg.reader](samples))
    stats.kept = len(samples)
    stats.no_image = sum(not s.has_image for s in samples)
    if stats.no_image:
        log.info("%s: %d text-only examples (no image)", cfg.label, stats.no_image)
    out = list(expand_rotations(samples)) if cfg.rotate_choices else samples
    stats.samples = len(out)
    return out, stats
