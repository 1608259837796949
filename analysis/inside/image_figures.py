"""Drawing a VLM's per-patch weights over the image it read (matplotlib, no torch).

The ``image_attention`` table (:mod:`vlab.analysis.inside.vlm`) holds one weight per visual
token's cell (``row``, ``col``); laid over the image, a reader sees at a glance whether the
answer's weight falls on the grounded object. Images are resized to the encoder's input
without cropping, so the grid spans the whole image and box fractions address the same
content.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def draw_over_image(
    image: Any,
    weights_grid: np.ndarray,
    ax: Any,
    *,
    box: tuple[float, float, float, float] | None = None,
    alpha: float = 0.6,
    cmap: str = "magma",
    vmax: float | None = None,
) -> Any:
    """Draw ``image`` (a PIL image or an (H, W[, 3]) array) on ``ax`` with ``weights_grid``
    (rows, cols) over it, cell (r, c) covering the r-th of ``rows`` horizontal bands and the
    c-th of ``cols`` vertical ones; ``box`` (x1, y1, x2, y2, fractions of the image, e.g. the
    grounding target) is outlined. Returns the weights' image (for a colour bar).
    """
    from matplotlib.patches import Rectangle

    pixels = np.asarray(image)
    grid = np.asarray(weights_grid, dtype=float)
    if grid.ndim != 2:
        raise ValueError(f"weights_grid must be (rows, cols), got shape {grid.shape}")
    height, width = pixels.shape[:2]
    extent = (0, width, height, 0)
    ax.imshow(pixels, extent=extent)
    overlay = ax.imshow(
        grid,
        extent=extent,
        alpha=alpha,
        cmap=cmap,
        vmin=0.0,
        vmax=vmax if vmax is not None else max(float(grid.max()), 1e-12),
        interpolation="nearest",
    )
    if box is not None:
        x1, y1, x2, y2 = box
        ax.add_patch(
            Rectangle(
                (x1 * width, y1 * height),
                (x2 - x1) * width,
                (y2 - y1) * height,
                fill=False,
                edgecolor="cyan",
                linewidth=1.5,
            )
        )
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    return overlay
