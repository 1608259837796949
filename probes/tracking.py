"""Per-position accuracy: the slice of the probe's metrics that the heatmaps are made of."""

from __future__ import annotations

import numpy as np


def per_position_accuracy(correct: np.ndarray, positions: np.ndarray, length: int) -> list[float]:
    """Accuracy for each target position 0..length-1.

    ``correct`` (N,) bool, ``positions`` (N,) ints in [0, length). A position with no example
    gets NaN (never happens on the balanced held-out set, but partial sets stay honest).
    """
    correct = np.asarray(correct, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.int64)
    hits = np.bincount(positions, weights=correct, minlength=length)[:length]
    counts = np.bincount(positions, minlength=length)[:length]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return [float(a) for a in acc]
