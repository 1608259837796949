"""A mixture of dataset sources, prepared once into plain files and read back by index.

Preparing reads every source (:mod:`vlab.models.vlm.data.sources`), packs same-image examples
(:mod:`vlab.models.vlm.data.packing`, with the tokenizer's lengths and the model's image token
count) and writes the sequences to ``DIR/sequences.jsonl``, one JSON record per line, grouped
by source, with ``DIR/offsets.npy`` (the byte offset of every line), ``DIR/stats.json`` (what
each source contributed) and last ``DIR/manifest.json`` (the mixture config it was made from):
a directory without a manifest is an unfinished preparation and is redone.

Training then reads sequence ``k`` of the run by seeking to its line, so the 6.2M sequences of
the paper's stage-2 mixture never sit in memory at once, and step ``s`` of a resumed run gets
exactly the batch it got the first time: position ``k`` of the run is item
``order(k // N)[k % N]`` with ``order(epoch)`` the mixture shuffle of
:func:`vlab.models.vlm.data.mixture.mixture_order` (a new deterministic order every epoch,
no re-weighting of sources).

Held-out mixtures are prepared without packing, and caption examples of one image are merged
into one example whose ``meta["references"]`` holds every caption (what CIDEr scores against).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlab.config import to_dict
from vlab.errors import ConfigError, VlabError
from vlab.fileio import atomic_write_json
from vlab.models.vlm.data.mixture import mixture_order
from vlab.models.vlm.data.packing import DEFAULT_CAPS, PackingConfig, pack_samples
from vlab.models.vlm.data.records import Turn, VLSample
from vlab.models.vlm.data.sources import SourceConfig, load_source

FORMAT = 1


@dataclass(frozen=True)
class MixtureConfig:
    """Sources mixed into one training (or held-out) set.

    ``pack``: pack same-image examples (VQA, multiple-choice, grounding, dense captions) into
    one sequence, at most ``caps[source]`` pairs and the model's ``max_length`` tokens.
    ``seed``: the shuffle of every epoch.
    """

    sources: tuple[SourceConfig, ...] = ()
    pack: bool = True
    caps: dict = field(default_factory=lambda: dict(DEFAULT_CAPS))
    pair_overhead: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        labels = [s.label for s in self.sources]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ConfigError(
                "sources", f"two sources are labelled {dupes[0]!r}: give them distinct 'name's"
            )
        for name, cap in self.caps.items():
            if not isinstance(cap, int) or cap < 1:
                raise ConfigError(f"caps.{name}", f"must be an integer >= 1, got {cap!r}")
        if self.pair_overhead < 0:
            raise ConfigError("pair_overhead", f"must be >= 0, got {self.pair_overhead}")

    def check_files(self, field_prefix: str = "") -> None:
        """Every annotation file and image folder exists, else one ConfigError naming the
        first source with something missing and listing everything missing (before any work
        starts), see :func:`raise_missing`."""
        if not self.sources:
            raise ConfigError(f"{field_prefix}sources", "no sources given")
        raise_missing([(field_prefix, "", self)])


def raise_missing(mixtures: list[tuple[str, str, MixtureConfig]]) -> None:
    """One ConfigError listing every annotation file and image folder missing from any of
    ``mixtures`` (``(field prefix, label prefix, mixture)``), each path once with the sources
    that need it; its field is the first source with something missing (``paths`` when a file
    is missing, else ``image_root``). Nothing missing: returns."""
    needed: dict[str, tuple[bool, list[str]]] = {}  # path -> (is an image folder, sources)
    first = None
    for field_prefix, label_prefix, mixture in mixtures:
        for i, s in enumerate(mixture.sources):
            files, dirs = s.missing_files(), s.missing_image_dirs()
            if first is None and (files or dirs):
                first = f"{field_prefix}sources[{i}].{'paths' if files else 'image_root'}"
            for path, is_dir in [(f, False) for f in files] + [(d, True) for d in dirs]:
                needed.setdefault(str(path), (is_dir, []))[1].append(label_prefix + s.label)
    if first is None:
        return
    lines = []
    for path, (is_dir, labels) in needed.items():
        users = ", ".join(dict.fromkeys(labels))
        lines.append(f"{path}/ (images: {users})" if is_dir else f"{path} ({users})")
    n_dirs = sum(is_dir for is_dir, _ in needed.values())
    listed = "; ".join(lines)  # one line, as every error of vlab
    raise ConfigError(
        first,
        f"{len(needed) - n_dirs} annotation file(s) and {n_dirs} image folder(s) do not "
        f"exist: {listed}",
    )


def sample_to_json(s: VLSample) -> dict:
    if not isinstance(s.image, (str, type(None))):
        raise VlabError(f"{s.source}/{s.image_id}: only image paths can be stored")
    return {
        "image": s.image,
        "image_id": s.image_id,
        "task": s.task,
        "source": s.source,
        "turns": [[t.prompt, t.response] for t in s.turns],
        "meta": s.meta,
    }


def sample_from_json(d: dict) -> VLSample:
    turns = [Turn(p, r) for p, r in d["turns"]]
    return VLSample(d["image"], d["image_id"], d["task"], d["source"], turns, d["meta"])


def merge_caption_references(samples: list[VLSample]) -> list[VLSample]:
    """One caption example per (source, image) with every caption in ``meta["references"]``
    (first-seen order); other examples pass through. Order: first occurrence."""
    out: list[VLSample] = []
    seen: dict[tuple[str, str], VLSample] = {}
    for s in samples:
        if s.task != "caption":
            out.append(s)
            continue
        key = (s.source, s.image_id)
        if key not in seen:
            seen[key] = s.replace(meta={**s.meta, "references": []})
            out.append(seen[key])
        seen[key].meta["references"].extend(t.response for t in s.turns)
    return out


def prepare(
    cfg: MixtureConfig,
    directory: str | Path,
    *,
    length_fn: Callable[[str], int],
    max_length: int,
    image_tokens: int,
    heldout: bool = False,
    log: Callable[[str], Any] = print,
) -> Path:
    """Prepare ``cfg`` into ``directory`` (skipped when a matching manifest is there)."""
    directory = Path(directory)
    manifest = {
        "format": FORMAT,
        "mixture": to_dict(cfg),
        "max_length": max_length,
        "image_tokens": image_tokens,
        "heldout": heldout,
    }
    done = directory / "manifest.json"
    if done.is_file():
        if json.loads(done.read_text()) == manifest:
            return directory
        raise VlabError(
            f"{directory} was prepared from a different data config; remove it to prepare again"
        )
    cfg.check_files()
    tmp = directory.with_name(directory.name + ".preparing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    packing = PackingConfig(
        max_length=max_length,
        image_tokens=image_tokens,
        pair_overhead=cfg.pair_overhead,
        caps=dict(cfg.caps),
    )
    stats: dict[str, dict] = {}
    offsets: list[int] = []
    with open(tmp / "sequences.jsonl", "wb") as f:
        for source in cfg.sources:
            samples, read_stats = load_source(source)
            entry: dict[str, Any] = dict(vars(read_stats))
            if heldout:
                samples = merge_caption_references(samples)
            elif cfg.pack:
                samples, pack_stats = pack_samples(samples, length_fn, packing)
                entry["dropped_pairs"] = pack_stats.dropped_pairs
            entry["sequences"] = len(samples)
            stats[source.label] = entry
            for s in samples:
                offsets.append(f.tell())
                f.write(json.dumps(sample_to_json(s), default=str).encode() + b"\n")
            log(f"{directory.name}: {source.label}: {entry['sequences']:,} sequences")
        f.flush()
        os.fsync(f.fileno())
    np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    atomic_write_json(tmp / "stats.json", stats)
    if not offsets:
        raise VlabError(f"{directory}: the sources produced no examples ({stats})")
    if directory.exists():
        shutil.rmtree(directory)
    tmp.rename(directory)
    atomic_write_json(done, manifest)
    return directory


class PreparedMixture:
    """Random access to a prepared directory: ``len``, ``[i]``, and the run's ``k``-th item."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        manifest = self.dir / "manifest.json"
        if not manifest.is_file():
            raise VlabError(f"{self.dir} is not a prepared mixture (no manifest.json)")
        self.manifest = json.loads(manifest.read_text())
        self.offsets = np.load(self.dir / "offsets.npy")
        self.stats = json.loads((self.dir / "stats.json").read_text())
        self.seed = int(self.manifest["mixture"]["seed"])
        self._file = None
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> VLSample:
        if self._file is None:
            self._file = open(self.dir / "sequences.jsonl", "rb")  # noqa: SIM115 (kept open)
        self._file.seek(int(self.offsets[i]))
        return sample_from_json(json.loads(self._file.readline()))

    def order(self, epoch: int) -> np.ndarray:
        """The shuffled indices of one epoch (sources mixed, no re-weighting)."""
        if epoch not in self._orders:
            sizes = {name: st["sequences"] for name, st in self.stats.items()}
            start, base = 0, {}
            for name, n in sizes.items():
                base[name] = start
                start += n
            pairs = mixture_order(sizes, self.seed, epoch)
            self._orders = {epoch: np.asarray([base[n] + i for n, i in pairs], dtype=np.int64)}
        return self._orders[epoch]

    def at(self, position: int) -> VLSample:
        """The item at ``position`` of the run (epochs follow each other)."""
        epoch, k = divmod(position, len(self))
        return self[int(self.order(epoch)[k])]

    def take(self, start: int, n: int) -> list[VLSample]:
        return [self.at(k) for k in range(start, start + n)]

    def __iter__(self) -> Iterator[VLSample]:
        return (self[i] for i in range(len(self)))
