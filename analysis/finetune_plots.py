"""The finetune report's figure: SHAKEUP's Figure 3, held-out score against resolution.

Built without pyplot from the tables of :mod:`vlab.analysis.finetune`, as
:mod:`vlab.analysis.plots` builds the others; colours are the arms' colours of every vlab
report (:func:`vlab.analysis.plots.arch_colors`).
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vlab.analysis.finetune import best_lr, resolution_labels
from vlab.analysis.plots import PANEL_H, PANEL_W, arch_colors, message_figure, styled

BEST_GID, LR_GID, START_GID = "best", "lr", "stage2"  # line gids: "best:<arch>" ...


@styled
def resolution_curves(grid: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    """One panel per benchmark (and setting): held-out score x100 (y) against resolution (x,
    labelled with its visual tokens), one line per arm through its best lr at each resolution
    (chosen on this same score; the lr is written at each point), every lr as a faint line,
    and the stage-2 model at each resolution before finetuning (step 0) as a dashed line with
    open markers. ``grid`` is :func:`vlab.analysis.finetune.finetune_grid`.

    Line gids name what each line is: ``best:<arch>``, ``lr:<arch>:<lr>``, ``stage2:<arch>``.
    """
    if grid.empty or (grid["score"].isna().all() and grid["start"].isna().all()):
        return message_figure("No held-out scores yet: no run is evaluated or logged step 0.")
    best = best_lr(grid)
    panels = list(dict.fromkeys(zip(grid["benchmark"], grid["setting"], strict=True)))
    labels = resolution_labels(runs, sep="\n")
    resolutions = sorted(int(r) for r in grid["resolution"].dropna().unique())
    colors = arch_colors(grid["arch"].dropna().unique())
    cols = min(len(panels), 2)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(
        figsize=(max(8.0, PANEL_W * 1.35 * cols + 2.6), PANEL_H * 1.2 * rows + 1.4),
        layout="constrained",
    )
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    fig.suptitle(
        "Held-out score against resolution, finetuned from stage 2\n"
        "bold: best lr per arm and resolution (lr at the point), chosen on this same held-out\n"
        "score: optimistic, there is no separate validation split",
        fontsize=10,
    )
    for ax, (key, setting) in zip(axes, panels, strict=False):
        g = grid[(grid["benchmark"] == key) & (grid["setting"] == setting)]
        b = best[(best["benchmark"] == key) & (best["setting"] == setting)]
        for arch, color in colors.items():
            _arm(ax, g[g["arch"] == arch], b[b["arch"] == arch], arch, color)
        metric = g["metric"].dropna()
        title = g["label"].iloc[0] + (f" ({metric.iloc[0]})" if not metric.empty else "")
        ax.set_title(title + (f"\n{setting}" if setting else ""))
        ax.set_xticks(resolutions, [labels.get(r, f"{r} px") for r in resolutions])
        ax.set_xlabel("image resolution / visual tokens")
        ax.set_ylabel("held-out score x100")
        ax.margins(x=0.08, y=0.15)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    handles = [Line2D([], [], color=c, lw=2.5, marker="o", label=a) for a, c in colors.items()]
    handles += [
        Line2D([], [], color="0.3", lw=2.2, marker="o", label="finetuned, best lr"),
        Line2D([], [], color="0.3", lw=0.8, alpha=0.35, marker=".", label="finetuned, each lr"),
        Line2D([], [], color="0.3", lw=1.2, ls="--", marker="o", mfc="white", label=STAGE2_LABEL),
    ]
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    return fig


STAGE2_LABEL = "stage 2, not finetuned (step 0)"


def _arm(ax, g: pd.DataFrame, b: pd.DataFrame, arch: str, color: str) -> None:
    """One arm's lines in a panel: each lr (faint), the best lr (bold, lr written at each
    point) and the stage-2 point (dashed, open markers)."""
    for lr, by_lr in g.groupby("lr", sort=True):
        done = by_lr[by_lr["score"].notna()].sort_values("resolution")
        if not done.empty:
            ax.plot(
                done["resolution"].astype(float),
                done["score"],
                color=color,
                lw=0.8,
                alpha=0.35,
                marker=".",
                gid=f"{LR_GID}:{arch}:{lr:g}",
            )
    done = b[b["best"].notna()].sort_values("resolution")
    if not done.empty:
        x = done["resolution"].astype(float).tolist()
        ax.plot(
            x, done["best"], color=color, lw=2.2, marker="o", zorder=3, gid=f"{BEST_GID}:{arch}"
        )
        for xi, yi, lr in zip(x, done["best"], done["lr"], strict=True):
            ax.annotate(
                f"{lr:g}",
                (xi, yi),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
                color=color,
            )
    start = b[b["start"].notna()].sort_values("resolution")
    if not start.empty:
        ax.plot(
            start["resolution"].astype(float),
            start["start"],
            color=color,
            lw=1.2,
            ls="--",
            marker="o",
            mfc="white",
            zorder=1.5,
            gid=f"{START_GID}:{arch}",
        )
