"""Packing: several input-output pairs about one image into one training sequence.

Samples of the same (source, image_id, task) are packed for the packable tasks (VQA,
multiple-choice VQA, grounding, dense captioning); every other sample (caption, chat, itm,
grounded caption, pope) stays its own sequence. A sequence holds at most ``caps[source]`` pairs
(VQAv2 20, Visual7W telling 10, pointing 5, Visual Genome 10 by default; unlimited otherwise)
and at most ``max_length`` tokens, counted as::

    image_tokens + length_fn(instruction) + sum over pairs of
        (length_fn(prompt) + length_fn(response) + pair_overhead)

``image_tokens`` covers the patches and the image markers (0 for a text-only sample, whose
sequence has none); ``pair_overhead`` the tokens the template adds per pair (separator, prompt
suffix, end of sequence: 3 for :mod:`vlab.models.vlm.sequence`'s default template, an upper
bound). A pair that would overflow the sequence starts a new one; a pair that does not fit
even alone is dropped and counted (one warning per call). A chat conversation longer than the
limit is split the same way into consecutive parts (each part keeps the image, or stays
text-only).

Deterministic: groups come out in order of their first sample, pairs in input order. Samples
sharing ``meta["pack_key"]`` (the rotations of one multiple-choice question) never share a
sequence: the r-th sample of each key goes to round r, and rounds are packed one after the
other, as the authors' code packs the k-th rotation of every question together.

A packed sample keeps the image, image_id, task and source; its ``meta`` is
``{"pairs": [meta of each packed sample], "packed": True}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vlab.errors import ConfigError
from vlab.models.vlm.data.instructions import instruction_for
from vlab.models.vlm.data.records import PACK_KEY, Turn, VLSample

log = logging.getLogger(__name__)

PACKABLE_TASKS = ("vqa", "mcvqa", "grounding", "dense_caption")
DEFAULT_CAPS = {"vqav2": 20, "visual7w_telling": 10, "visual7w_pointing": 5, "visual_genome": 10}


@dataclass(frozen=True)
class PackingConfig:
    """Limits of packed sequences. ``max_length``: 1024 (800 for the 2.8B models).
    ``caps``: pairs per sequence by source (a source not listed: no cap but the length);
    ``image_tokens``: 601 = the authors' image layout at 336 px (24 x 25 + 1)."""

    max_length: int = 1024
    image_tokens: int = 601
    pair_overhead: int = 3
    caps: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CAPS))
    packable_tasks: tuple[str, ...] = PACKABLE_TASKS

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ConfigError("max_length", f"must be positive, got {self.max_length}")
        if not 0 <= self.image_tokens < self.max_length:
            raise ConfigError(
                "image_tokens", f"{self.image_tokens} leaves no room under {self.max_length}"
            )
        if self.pair_overhead < 0:
            raise ConfigError("pair_overhead", f"must be >= 0, got {self.pair_overhead}")
        for source, cap in self.caps.items():
            if cap < 1:
                raise ConfigError(f"caps.{source}", f"must be >= 1, got {cap}")

    def cap(self, source: str) -> int | None:
        return self.caps.get(source)


@dataclass
class PackStats:
    """What packing did: samples in, sequences out, pairs dropped as too long."""

    samples: int = 0
    sequences: int = 0
    pairs: int = 0
    dropped_pairs: int = 0


def _rounds(samples: list[VLSample]) -> list[list[VLSample]]:
    counts: dict[object, int] = {}
    rounds: list[list[VLSample]] = []
    for s in samples:
        key = s.meta.get(PACK_KEY)
        r = 0
        if key is not None:
            r = counts.get(key, 0)
            counts[key] = r + 1
        while len(rounds) <= r:
            rounds.append([])
        rounds[r].append(s)
    return rounds


def _split(
    first: VLSample,
    pairs: list[tuple[Turn, dict]],
    cap: int | None,
    cfg: PackingConfig,
    length_fn: Callable[[str], int],
    stats: PackStats,
) -> list[list[tuple[Turn, dict]]]:
    """Greedy: fill a sequence until the next pair would break the cap or the length."""
    base = cfg.image_tokens if first.has_image else 0
    base += length_fn(instruction_for(first.task))
    chunks: list[list[tuple[Turn, dict]]] = []
    cur: list[tuple[Turn, dict]] = []
    used = base
    for turn, meta in pairs:
        n = length_fn(turn.prompt) + length_fn(turn.response) + cfg.pair_overhead
        if base + n > cfg.max_length:
            stats.dropped_pairs += 1
            continue
        if cur and (used + n > cfg.max_length or (cap is not None and len(cur) >= cap)):
            chunks.append(cur)
            cur, used = [], base
        cur.append((turn, meta))
        used += n
    if cur:
        chunks.append(cur)
    return chunks


def pack_samples(
    samples: Iterable[VLSample],
    length_fn: Callable[[str], int],
    cfg: PackingConfig | None = None,
) -> tuple[list[VLSample], PackStats]:
    """Pack ``samples`` into sequences (see the module docstring); returns them and stats."""
    cfg = cfg or PackingConfig()
    stats = PackStats()
    groups: dict[tuple, list[VLSample]] = {}
    for i, s in enumerate(samples):
        stats.samples += 1
        packable = s.task in cfg.packable_tasks
        key = (True, s.source, s.image_id, s.task) if packable else (False, i)
        groups.setdefault(key, []).append(s)
    out: list[VLSample] = []
    for (packable, *_), members in groups.items():
        first = members[0]
        if not packable:
            pairs = [(t, first.meta) for t in first.turns]
            chunks = _split(first, pairs, None, cfg, length_fn, stats)
            for part, chunk in enumerate(chunks):
                meta = dict(first.meta, part=part) if len(chunks) > 1 else first.meta
                out.append(first.replace(turns=[t for t, _ in chunk], meta=dict(meta)))
            continue
        for rnd in _rounds(members):
            pairs = [(t, s.meta) for s in rnd for t in s.turns]
            for chunk in _split(first, pairs, cfg.cap(first.source), cfg, length_fn, stats):
                meta = {"pairs": [m for _, m in chunk], "packed": True}
                out.append(first.replace(turns=[t for t, _ in chunk], meta=meta))
    stats.sequences = len(out)
    stats.pairs = sum(len(s.turns) for s in out)
    if stats.dropped_pairs:
        log.warning(
            "packing dropped %d pairs longer than max_length=%d on their own",
            stats.dropped_pairs,
            cfg.max_length,
        )
    return out, stats
