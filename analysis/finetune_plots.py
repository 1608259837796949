"""The finetune report's figures: SHAKEUP's Figure 3, held-out score against resolution, and
the same on the split each task is reported on (the paper's test split where the runs have it).

Built without pyplot from the tables of :mod:`vlab.analysis.finetune`, as
:mod:`vlab.analysis.plots` builds the others; colours are the arms' colours of every vlab
report (:func:`vlab.analysis.plots.arch_colors`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vlab.analysis.finetune import (
    HELD_OUT,
    best_lr,
    reported_points,
    resolution_labels,
    seed_means,
)
from vlab.analysis.plots import PANEL_H, PANEL_W, arch_colors, message_figure, styled

BEST_GID, LR_GID, START_GID = "best", "lr", "stage2"  # line gids: "best:<arch>" ...
REPORTED_GID = "reported"  # the reported-split figure's lines: "reported:<arch>"
CI_GID = "ci"  # interval gids: "ci:best:<arch>", "ci:lr:<arch>:<lr>", "ci:stage2:<arch>"
# with intervals, each arm's finetuned and stage-2 points are moved apart along x by this
# fraction of the resolutions' range, so that their bars do not hide one another
DODGE = 0.02


@styled
def resolution_curves(grid: pd.DataFrame, runs: pd.DataFrame, confidence: float = 0.95) -> Figure:
    """One panel per benchmark (and setting): held-out score x100 (y) against resolution (x,
    labelled with its visual tokens), one line per arm through its best lr at each resolution
    (the highest mean over seeds, chosen on this same score; the lr is written at each point,
    with "n of N" seeds where some are missing), every lr as a faint line, and the stage-2
    model at each resolution before finetuning (step 0) as a dashed line with open markers.
    Every point is a mean over seeds (:func:`vlab.analysis.finetune.seed_means`; the stage-2
    point over source runs) with its Student t interval at ``confidence`` as a vertical bar
    (none with one seed); in a panel with bars, each arm's finetuned and stage-2 points sit
    slightly apart along x (:data:`DODGE`). ``grid`` is
    :func:`vlab.analysis.finetune.finetune_grid`.

    Line gids name what each line is: ``best:<arch>``, ``lr:<arch>:<lr>``, ``stage2:<arch>``;
    the bars (a LineCollection each) ``ci:`` and the gid of their line.
    """
    if grid.empty or (grid["score"].isna().all() and grid["start"].isna().all()):
        return message_figure("No held-out scores yet: no run is evaluated or logged step 0.")
    best = best_lr(grid, confidence)
    points = seed_means(grid, confidence)
    panels, resolutions, colors, fig, axes = _panels(grid, legend_width=2.6)
    labels = resolution_labels(runs, sep="\n")
    seeded = int(points["seeds"].max()) > 1 or int(best["sources"].max()) > 1
    fig.suptitle(
        "Held-out score against resolution, finetuned from stage 2\n"
        "bold: best lr per arm and resolution (lr at the point), chosen on this same held-out\n"
        "score: optimistic, there is no separate validation split"
        + (
            f"\npoints: mean over seeds, bars: {confidence:.0%} Student t interval"
            if seeded
            else ""
        ),
        fontsize=10,
    )
    for ax, (key, setting) in zip(axes, panels, strict=False):
        g = grid[(grid["benchmark"] == key) & (grid["setting"] == setting)]
        p = points[(points["benchmark"] == key) & (points["setting"] == setting)]
        b = best[(best["benchmark"] == key) & (best["setting"] == setting)]
        shifts = _dodge(p, b, resolutions)
        for arch, color in colors.items():
            _arm(ax, p[p["arch"] == arch], b[b["arch"] == arch], arch, color, shifts)
        metric = g["metric"].dropna()
        title = g["label"].iloc[0] + (f" ({metric.iloc[0]})" if not metric.empty else "")
        seeds = sorted({int(n) for n in p["seeds"]})
        if seeds and seeds[-1] > 1:
            many = f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"{seeds[0]}"
            title += f"\nmean of {many} seeds"
        _finish_panel(ax, title, setting, resolutions, labels, "held-out score x100")
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


def _dodge(points: pd.DataFrame, b: pd.DataFrame, resolutions: list[int]) -> dict:
    """(arch, "finetuned" | "stage2") -> its x offset in a panel: 0 without bars, else
    side by side, :data:`DODGE` of the resolutions' range apart, centred on the resolution."""
    if not (points["lo"].notna().any() or b["start_lo"].notna().any()):
        return {}
    span = resolutions[-1] - resolutions[0] if len(resolutions) > 1 else resolutions[0]
    arms = arch_colors(set(points["arch"].dropna()) | set(b["arch"].dropna()))
    slots = [(arch, kind) for arch in arms for kind in ("finetuned", "stage2")]
    middle = (len(slots) - 1) / 2
    return {slot: (i - middle) * DODGE * span for i, slot in enumerate(slots)}


def _arm(ax, points: pd.DataFrame, b: pd.DataFrame, arch: str, color: str, shifts: dict) -> None:
    """One arm's lines in a panel: each lr's seed means (faint), the best lr's (bold, lr
    written at each point) and the stage-2 point (dashed, open markers), each with its
    intervals as vertical bars, moved along x by ``shifts`` (:func:`_dodge`)."""
    shift, start_shift = shifts.get((arch, "finetuned"), 0.0), shifts.get((arch, "stage2"), 0.0)
    for lr, by_lr in points.groupby("lr", sort=True):
        done = by_lr[by_lr["n"] > 0].sort_values("resolution")
        if not done.empty:
            gid = f"{LR_GID}:{arch}:{lr:g}"
            x = done["resolution"].astype(float) + shift
            ax.plot(x, done["mean"], color=color, lw=0.8, alpha=0.35, marker=".", gid=gid)
            _bars(ax, x, done["lo"], done["hi"], color, gid, lw=0.8, alpha=0.35)
    done = b[b["best"].notna()].sort_values("resolution")
    if not done.empty:
        _chosen_line(ax, done, "best", color, f"{BEST_GID}:{arch}", shift)
    start = b[b["start"].notna()].sort_values("resolution")
    if not start.empty:
        x = start["resolution"].astype(float) + start_shift
        gid = f"{START_GID}:{arch}"
        ax.plot(
            x,
            start["start"],
            color=color,
            lw=1.2,
            ls="--",
            marker="o",
            mfc="white",
            zorder=1.5,
            gid=gid,
        )
        _bars(ax, x, start["start_lo"], start["start_hi"], color, gid, lw=1.0, ls="--", zorder=1.5)


def _fit_y(ax) -> None:
    """The y axis fitted to the plotted means (at least 5 points tall), their bars shown up to
    one span of the means (at least 5 points) beyond them: with two seeds a 95% t interval is
    the mean +- 9 sd and would flatten every line. A longer bar runs off the panel's edge; the
    tables print it."""
    if not ax.get_lines():  # a panel whose points have no score yet
        return
    means = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()])
    means = means[np.isfinite(means)]
    if means.size == 0:
        return
    ends = [
        np.asarray(c.get_segments(), dtype=float)[..., 1].ravel()
        for c in ax.collections
        if len(c.get_segments())
    ]
    bars = np.concatenate([means, *ends])
    low, high = means.min(), means.max()
    span = max(high - low, 5.0)
    low, high = max(bars.min(), low - span), min(bars.max(), high + span)
    middle, half = (low + high) / 2, max((high - low) / 2, 2.5)  # at least 5 points tall
    ax.set_ylim(middle - 1.15 * half, middle + 1.15 * half)


def _bars(ax, x: pd.Series, lo: pd.Series, hi: pd.Series, color: str, gid: str, **style) -> None:
    """Vertical interval bars at ``x`` from ``lo`` to ``hi``, where the interval is finite."""
    keep = lo.notna().to_numpy() & hi.notna().to_numpy()
    if keep.any():
        ax.vlines(x[keep], lo[keep], hi[keep], color=color, gid=f"{CI_GID}:{gid}", **style)


@styled
def reported_curves(
    grid: pd.DataFrame,
    tests: pd.DataFrame,
    runs: pd.DataFrame,
    confidence: float = 0.95,
) -> Figure:
    """Figure 3 on the split each task is reported on (:func:`vlab.analysis.finetune.
    reported_points`): one panel per benchmark (and setting), one line per arm through its
    score x100 at each resolution, at the lr chosen for that arm and resolution on the
    held-out (val) score (the lr written at the point, "n of N" seeds where some are
    missing); a mean over seeds with its Student t interval as a vertical bar (none with one
    seed). On a test split (RefCOCOg test) the lr is chosen on another split than the one
    plotted; a panel of a task without one plots the held-out score and says the choice was
    made on it. Why a figure of its own: the held-out figure's best lr is optimistic, and the
    paper's numbers are on its test splits.

    Line gids: ``reported:<arch>``; bars ``ci:reported:<arch>``.
    """
    points = reported_points(grid, tests, runs, confidence)
    if points.empty or points["score"].isna().all():
        return message_figure("No scores on a reported split yet: no run is evaluated.")
    panels, resolutions, colors, fig, axes = _panels(points, legend_width=2.0)
    labels = resolution_labels(runs, sep="\n")
    seeded = int(points["seeds"].max()) > 1
    fig.suptitle(
        "Score on the reported split against resolution, finetuned from stage 2\n"
        "lr chosen per arm and resolution on the held-out (val) score, written at the point"
        + (
            f"\npoints: mean over seeds, bars: {confidence:.0%} Student t interval"
            if seeded
            else ""
        ),
        fontsize=10,
    )
    span = resolutions[-1] - resolutions[0] if len(resolutions) > 1 else resolutions[0]
    for ax, (key, setting) in zip(axes, panels, strict=False):
        p = points[(points["benchmark"] == key) & (points["setting"] == setting)]
        arms = [a for a in colors if a in set(p["arch"])]
        for i, arch in enumerate(arms):
            shift = (i - (len(arms) - 1) / 2) * DODGE * span if p["lo"].notna().any() else 0.0
            _reported_arm(ax, p[p["arch"] == arch], arch, colors[arch], shift)
        split = p["split"].iloc[0]
        metric = p["metric"].dropna()
        title = p["label"].iloc[0] + (f" ({metric.iloc[0]})" if not metric.empty else "")
        if split == HELD_OUT:
            title += "\nheld-out: no test split, lr chosen on this score (optimistic)"
        seeds = int(p["seeds"].max())
        title += f"\nmean of {seeds} seeds" if seeds > 1 else ""
        ylabel = f"{'held-out' if split == HELD_OUT else split} score x100"
        _finish_panel(ax, title, setting, resolutions, labels, ylabel)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    handles = [Line2D([], [], color=c, lw=2.2, marker="o", label=a) for a, c in colors.items()]
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    return fig


def _panels(frame: pd.DataFrame, legend_width: float):
    """The panels of a resolution figure: one per (benchmark, setting) of ``frame`` in order
    of appearance, the resolutions on x, a colour per arm, and the figure (two panels a row,
    ``legend_width`` inches more for the legend) with its flat axes."""
    panels = list(dict.fromkeys(zip(frame["benchmark"], frame["setting"], strict=True)))
    resolutions = sorted(int(r) for r in frame["resolution"].dropna().unique())
    colors = arch_colors(frame["arch"].dropna().unique())
    cols = min(len(panels), 2)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(
        figsize=(max(8.0, PANEL_W * 1.35 * cols + legend_width), PANEL_H * 1.2 * rows + 1.4),
        layout="constrained",
    )
    return panels, resolutions, colors, fig, fig.subplots(rows, cols, squeeze=False).flatten()


def _finish_panel(ax, title: str, setting: str, resolutions, labels: dict, ylabel: str) -> None:
    """Title (with the setting), resolution ticks and labels, y range and grid of a panel."""
    ax.set_title(title + (f"\n{setting}" if setting else ""))
    ax.set_xticks(resolutions, [labels.get(r, f"{r} px") for r in resolutions])
    ax.set_xlabel("image resolution / visual tokens")
    ax.set_ylabel(ylabel)
    ax.margins(x=0.08)
    _fit_y(ax)
    ax.grid(alpha=0.3)


def _reported_arm(ax, points: pd.DataFrame, arch: str, color: str, shift: float) -> None:
    """One arm's line in a panel of :func:`reported_curves`: its scores at the chosen lrs
    (the lr written at each point), with their intervals, moved along x by ``shift``."""
    done = points[points["n"] > 0].sort_values("resolution")
    if not done.empty:
        _chosen_line(ax, done, "score", color, f"{REPORTED_GID}:{arch}", shift)


def _chosen_line(ax, done: pd.DataFrame, column: str, color: str, gid: str, shift: float) -> None:
    """The thick line of an arm's scores at its chosen learning rates: ``done[column]`` by
    resolution (moved along x by ``shift``), the intervals ``lo``..``hi``, and the chosen lr
    written at each point ("(n of seeds)" where seeds are missing). The held-out figure and
    the test-split figure draw their chosen lines alike."""
    x = done["resolution"].astype(float) + shift
    ax.plot(x, done[column], color=color, lw=2.2, marker="o", zorder=3, gid=gid)
    _bars(ax, x, done["lo"], done["hi"], color, gid, lw=1.6, zorder=3)
    for xi, (_, r) in zip(x, done.iterrows(), strict=True):
        partial = f" ({r['n']} of {r['seeds']})" if r["n"] < r["seeds"] else ""
        ax.annotate(
            f"{r['lr']:g}{partial}",
            (xi, r[column]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=7,
            color=color,
        )
