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
from vlab.models.vlm.data._files import ImageLocator
from vlab.models.vlm.data.multiple_choice import expand_rotations
from vlab.models.vlm.data.records import VLSample

log = logging.getLogger(__name__)

READERS: dict[str, Callable[..., Iterator[VLSample]]] = {
    "coco_captions": R.read_coco_captions,
    "coco_karpathy": R.read_coco_karpathy,
    "textcaps": R.read_textcaps,
    "llava_pretrain": R.read_llava_pretrain,
    "llava_instruct": R.read_llava_instruct,
    "lvis_instruct4v": R.read_lvis_instruct4v,
    "lrv_instruct": R.read_lrv_instruct,
    "nocaps": R.read_nocaps,
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
    "vizwiz": R.read_vizwiz,
    "tallyqa": R.read_tallyqa,
    "visual7w_telling": R.read_visual7w_telling,
    "ai2d": R.read_ai2d,
    "aokvqa": R.read_aokvqa,
    "vsr": R.read_vsr,
}

# options every source takes (not passed to the reader): where its images lie when not all
# under image_root (see vlab.models.vlm.data._files.ImageLocator)
LOCATION_OPTIONS = ("image_folders", "more_image_roots")
# options naming files or folders the reader reads (checked to exist before any work)
FILE_OPTIONS = ("test_ids_path", "image_data_path", "annotations_dir")

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
    ``test_ids_path`` ...), and two that every source takes, for images that do not all lie
    under ``image_root``: ``image_folders`` (``{"leading/part/of/the/dataset's/path":
    "folder holding what follows"}``: TallyQA's ``VG_100K_2`` and ``train2014``, LLaVA-665K's
    ``ocr_vqa/images``) and ``more_image_roots`` (folders searched after ``image_root`` for a
    file not there: VSR's COCO ``val2017``). ``name``: the source's label in statistics and,
    when given, the ``source`` of its samples (so two splits of one dataset score apart, and
    packing caps are looked up under it); by default the reader's name and the reader's
    source. Before any work, :meth:`missing` names every annotation file and image folder that
    is not there.
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
            if key in LOCATION_OPTIONS:
                continue
            if key not in params or key in (*wanted, "image_root", "split"):
                raise ConfigError(f"options.{key}", f"not an option of reader {self.reader!r}")
        folders = self.options.get("image_folders", {})
        if not isinstance(folders, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in folders.items()
        ):
            raise ConfigError(
                "options.image_folders", f"must map path prefixes to folders, got {folders!r}"
            )
        roots = self.options.get("more_image_roots", [])
        if not isinstance(roots, (list, tuple)) or not all(isinstance(r, str) for r in roots):
            raise ConfigError(
                "options.more_image_roots", f"must be a list of folders, got {roots!r}"
            )
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
        for key in FILE_OPTIONS:
            if self.options.get(key):
                out.append(Path(self.options[key]))
        return out

    def image_dirs(self) -> list[Path]:
        """Every image folder this source reads from: ``image_root``, then the
        ``image_folders`` and ``more_image_roots`` options' folders."""
        dirs = [Path(self.image_root)]
        dirs += [Path(d) for d in self.options.get("image_folders", {}).values()]
        dirs += [Path(d) for d in self.options.get("more_image_roots", [])]
        return list(dict.fromkeys(dirs))

    def missing_files(self) -> list[Path]:
        """The annotation files (or AI2D question and annotation directories) that do not
        exist."""
        return [f for f in self.files() if not f.exists()]

    def missing_image_dirs(self) -> list[Path]:
        """The image folders that do not exist."""
        return [d for d in self.image_dirs() if not d.is_dir()]

    def missing(self) -> list[Path]:
        """Everything this source needs that is not there: annotation files, then image
        folders."""
        return self.missing_files() + self.missing_image_dirs()

    def describe_missing(self) -> list[str]:
        """:meth:`missing`, image folders marked (``DIR/ (images)``)."""
        return [str(f) for f in self.missing_files()] + [
            f"{d}/ (images)" for d in self.missing_image_dirs()
        ]

    def image_root_for_reader(self) -> str | ImageLocator:
        """What the reader gets as its image root: ``image_root``, or an
        :class:`~vlab.models.vlm.data._files.ImageLocator` when the location options are set."""
        if not any(self.options.get(k) for k in LOCATION_OPTIONS):
            return self.image_root
        return ImageLocator(
            self.image_root,
            self.options.get("image_folders"),
            self.options.get("more_image_roots", ()),
        )


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
    options = {k: v for k, v in cfg.options.items() if k not in LOCATION_OPTIONS}
    root = cfg.image_root_for_reader()
    read = READERS[cfg.reader](*cfg.paths, root, split=cfg.split, **options)
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
