"""Mixed batches: one deterministic shuffle over several sources, no re-weighting.

The spec trains on mixed batches (any task in any batch) and does not re-weight sources: every
example is seen once per epoch. The order is a sort by ``sha256(seed, epoch, source, index)``,
so it depends on nothing but those four values: the same on every machine and library
version, a different order each epoch, and adding a source does not reorder the others
relative to each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TypeVar

from vlab.errors import ConfigError

T = TypeVar("T")


def _key(seed: int, epoch: int, source: str, index: int) -> bytes:
    return hashlib.sha256(f"{seed}\x1f{epoch}\x1f{source}\x1f{index}".encode()).digest()


def mixture_order(sizes: Mapping[str, int], seed: int, epoch: int = 0) -> list[tuple[str, int]]:
    """Every (source, index) of sources of the given sizes, in the shuffled order."""
    items = [(name, i) for name, n in sizes.items() for i in range(n)]
    return sorted(items, key=lambda it: _key(seed, epoch, it[0], it[1]))


def mix(sources: Mapping[str, Sequence[T]], seed: int, epoch: int = 0) -> list[T]:
    """All items of all sources, shuffled together (each exactly once)."""
    order = mixture_order({k: len(v) for k, v in sources.items()}, seed, epoch)
    return [sources[name][i] for name, i in order]


def batches(items: Sequence[T], batch_size: int, drop_last: bool = False) -> Iterator[list[T]]:
    """Consecutive batches of ``batch_size`` items (the last one shorter unless dropped)."""
    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
    for start in range(0, len(items), batch_size):
        batch = list(items[start : start + batch_size])
        if len(batch) == batch_size or not drop_last:
            yield batch
