"""What a VLM run trains and evaluates on: the built-in shapes or dataset files on disk.

Both kinds answer the same two questions the training task asks, so the engine, resume and
evaluation code are shared:

* ``train(start, n)``: the training sequences at positions ``start .. start+n-1`` of the run,
  a pure function of the position (resume rebuilds the exact batch of any step);
* ``heldout``: the held-out examples evaluated at every evaluation.

``dataset: shapes`` renders scenes on the fly (:mod:`vlab.models.vlm.data.shapes`).
``dataset: files`` reads the real datasets through their readers: ``stage1`` (SHAKEUP: the
LLaVA pretraining captions), ``stage2`` (the instruction-tuning mixture; stage 1 uses it too
when ``stage1`` has no sources) and ``heldout`` (evaluation sets, unpacked, first
``n_heldout`` examples of their shuffle). Each is prepared once into
``OUT/data/{stage1,stage2,heldout}`` (see :mod:`vlab.models.vlm.data.prepared`) by rank 0;
the packing limits come from the model: ``model.sequence.max_length`` and the image's token
count in the configured layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlab.errors import ConfigError
from vlab.models.vlm.data.instructions import instruction_for
from vlab.models.vlm.data.prepared import (
    MixtureConfig,
    PreparedMixture,
    prepare,
    raise_missing,
)
from vlab.models.vlm.data.records import VLSample
from vlab.models.vlm.data.shapes import ShapesConfig, shapes_sample
from vlab.models.vlm.data.sources import load_source


@dataclass(frozen=True)
class VLMDataConfig:
    """The training and held-out data of a VLM run.

    ``tokenizer``: a local tokenizer directory (the LM's own, for pretrained LMs); None trains
    a small byte-level BPE on the data's text (tiny from-scratch LMs only).
    """

    dataset: Literal["shapes", "files"] = "shapes"
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    stage1: MixtureConfig = field(default_factory=MixtureConfig)
    stage2: MixtureConfig = field(default_factory=MixtureConfig)
    heldout: MixtureConfig = field(default_factory=lambda: MixtureConfig(pack=False))
    n_heldout: int = 120
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.n_heldout < 1:
            raise ConfigError("n_heldout", f"must be >= 1, got {self.n_heldout}")
        if self.dataset == "files":
            for name in ("stage2", "heldout"):
                if not getattr(self, name).sources:
                    raise ConfigError(f"{name}.sources", "dataset 'files' needs at least one")
        elif self.stage1.sources or self.stage2.sources or self.heldout.sources:
            raise ConfigError("dataset", "sources are given but dataset is 'shapes'; say 'files'")

    def check_files(self) -> None:
        """Every annotation file and image folder named by the config exists (before any
        work starts), else one error listing all that are missing, in every mixture."""
        if self.dataset != "files":
            return
        raise_missing(
            [
                (f"data.{name}.", f"{name}:", getattr(self, name))
                for name in ("stage1", "stage2", "heldout")
            ]
        )

    def mixture(self, stage: int) -> tuple[str, MixtureConfig]:
        """The name and mixture a stage trains on (stage 1 falls back to stage 2's)."""
        if stage == 1 and self.stage1.sources:
            return "stage1", self.stage1
        return "stage2", self.stage2


class ShapesData:
    """The built-in dataset: sample ``i`` of a split is rendered from the seed and ``i``."""

    def __init__(self, cfg: VLMDataConfig):
        self.cfg = cfg.shapes
        self.heldout = [shapes_sample(self.cfg, "held_out", i) for i in range(cfg.n_heldout)]

    def train(self, start: int, n: int) -> list[VLSample]:
        return [shapes_sample(self.cfg, "train", i) for i in range(start, start + n)]


class FileData:
    """Prepared dataset files: training positions follow the epochs' shuffles."""

    def __init__(self, train: PreparedMixture, heldout: PreparedMixture, n_heldout: int):
        self.prepared = train
        order = heldout.order(0)[:n_heldout]
        self.heldout = [heldout[int(i)] for i in order]

    def train(self, start: int, n: int) -> list[VLSample]:
        return self.prepared.take(start, n)


def tokenizer_texts(cfg: VLMDataConfig, n: int = 2000) -> Iterator[str]:
    """Text to train a tiny BPE on: instructions, prompts and responses of the first ``n``
    examples of every training source (or shapes samples)."""
    if cfg.dataset == "shapes":
        samples: list[VLSample] = [shapes_sample(cfg.shapes, "train", i) for i in range(n)]
    else:
        samples = []
        for mixture in (cfg.stage1, cfg.stage2):
            for source in mixture.sources:
                limit = min(n, source.limit or n)
                samples.extend(load_source(dataclasses.replace(source, limit=limit))[0])
    for s in samples:
        yield instruction_for(s.task)
        for t in s.turns:
            yield t.prompt
            yield t.response


def open_data(
    cfg: VLMDataConfig,
    stage: int,
    out: Path,
    *,
    is_main: bool,
    barrier: Callable[[], None],
    length_fn: Callable[[str], int],
    max_length: int,
    image_tokens: int,
    log: Callable[[str], Any] = print,
) -> ShapesData | FileData:
    """The data of one stage; rank 0 prepares dataset files, the other ranks wait and open."""
    if cfg.dataset == "shapes":
        return ShapesData(cfg)
    name, mixture = cfg.mixture(stage)
    dirs = {"train": out / "data" / name, "heldout": out / "data" / "heldout"}
    if is_main:
        common = {"length_fn": length_fn, "max_length": max_length, "image_tokens": image_tokens}
        prepare(mixture, dirs["train"], log=log, **common)
        prepare(cfg.heldout, dirs["heldout"], heldout=True, log=log, **common)
    barrier()
    return FileData(PreparedMixture(dirs["train"]), PreparedMixture(dirs["heldout"]), cfg.n_heldout)
