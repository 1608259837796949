"""Mixed batches: one deterministic shuffle over several sources, no re-weighting.

The spec trains on mixed batches (any task in any batch) and does not re-weight sources: every
example is seen once per epoch. The order is a sort by ``sha256(seed, epoch, source, index)``,
so it depends on nothing but those four values: the same on every machine and library
version, a different order each epoch, and adding a source does not reorder the others
relative to each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def _key(seed: int, epoch: int, source: str, index: int) -> bytes:
    return hashlib.sha256(f"{seed}\x1f{epoch}\x1f{source}\x1f{index}".encode()).digest()


def mixture_order(sizes: Mapping[str, int], seed: int, epoch: int = 0) -> list[tuple[str, int]]:
    """Every (source, index) of sources of the given sizes, in the shuffled order."""
    items = [(name, i) for name, n in sizes.items() for i in range(n)]
    return sorted(items, key=lambda it: _key(seed, epoch, it[0], it[1]))
