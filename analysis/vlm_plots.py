"""The VLM report's figures: each function takes the tidy tables of :mod:`vlab.analysis.vlm`
and returns a matplotlib Figure (built without pyplot, as :mod:`vlab.analysis.plots` does).

Colours are the arms' colours of every vlab report (:func:`vlab.analysis.plots.arch_colors`);
line style tells the orderings apart (solid: task-agnostic, image first; dashed: task-aware,
instruction first).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from vlab.analysis import vlm
from vlab.analysis.plots import PANEL_H, PANEL_W, STEPS, arch_colors, message_figure, styled


def _ordering_handles(orderings) -> list[Line2D]:
    return [
        Line2D([], [], color="black", lw=1.8, ls=vlm.ORDERING_STYLES.get(o, ":"), label=o)
        for o in sorted(set(orderings), key=vlm.ordering_rank)
    ]


def _arch_handles(colors: dict[str, str]) -> list[Line2D]:
    return [Line2D([], [], color=c, lw=2.5, label=a) for a, c in colors.items()]


# relative gain ------------------------------------------------------------------------------


@styled
def gain_bars(
    summary: pd.DataFrame,
    confidence: float = 0.95,
    keys: list[str] | None = None,
    title: str = "Relative gain of task-aware over task-agnostic ordering",
) -> Figure:
    """SHAKEUP's Figure 4: relative gain (%) of task-aware over task-agnostic ordering per
    benchmark (x, in table order, group sums last in their group) and arch (bars), mean over
    seed pairs with the t interval as error bars; one panel per setting. ``summary`` is
    :func:`vlab.analysis.vlm_tables.gain_summary`; ``keys`` the benchmarks to show, in order
    (default: all, in the held-out table's order), labelled by the summary's ``label``."""
    if keys is not None:
        summary = summary[summary["benchmark"].isin(keys)]
    defined = summary[summary["n"] > 0] if not summary.empty else summary
    if defined.empty:
        why = (
            "every task-agnostic score is 0 (a relative change from 0 is undefined)"
            if not summary.empty
            else "no arch has evaluated runs of both orderings"
        )
        return message_figure(f"No relative gain to plot: {why}.")
    settings = list(dict.fromkeys(summary["setting"]))
    if keys is None:
        keys = vlm.column_order(summary["benchmark"].unique())
    labels = dict(zip(summary["benchmark"], summary["label"], strict=True))
    colors = arch_colors(summary["arch"].unique())
    width = max(7.5, 0.55 * len(keys) * max(1, len(colors)) ** 0.5 + 2)
    fig = Figure(figsize=(width, PANEL_H * len(settings) + 1.0), layout="constrained")
    axes = fig.subplots(len(settings), 1, squeeze=False)[:, 0]
    pct = f"{confidence:.0%}"
    fig.suptitle(
        f"{title}\nmean over seed pairs, {pct} t interval; no bar: undefined or not measured"
    )
    bar = 0.8 / len(colors)
    for ax, setting in zip(axes, settings, strict=True):
        s = summary[summary["setting"] == setting]
        for i, (arch, color) in enumerate(colors.items()):
            a = s[s["arch"] == arch].set_index("benchmark")
            x = np.arange(len(keys)) + (i - (len(colors) - 1) / 2) * bar
            mean = np.array([100 * a["mean"].get(k, math.nan) for k in keys], dtype=float)
            lo = np.array([100 * a["lo"].get(k, math.nan) for k in keys], dtype=float)
            hi = np.array([100 * a["hi"].get(k, math.nan) for k in keys], dtype=float)
            err = np.vstack([mean - lo, hi - mean])
            err[~np.isfinite(err)] = 0
            ax.bar(x, np.nan_to_num(mean), bar, color=color, yerr=err, capsize=2, label=arch)
        sums = [j for j, k in enumerate(keys) if k.startswith("sum:")]
        for j in sums:
            ax.axvspan(j - 0.5, j + 0.5, color="0.92", zorder=0)
            if j < len(keys) - 1:
                ax.axvline(j + 0.5, color="0.6", lw=0.8)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(keys)), [labels.get(k, k) for k in keys], rotation=35, ha="right")
        ax.set_ylabel("relative gain (%)")
        ax.set_title(setting or None)
        ax.grid(axis="y", alpha=0.3, lw=0.5)
    fig.legend(handles=_arch_handles(colors), loc="outside right center", frameon=False)
    return fig


# training curves ----------------------------------------------------------------------------


def _metric_order(metrics) -> list[str]:
    """The base panels (loss, held-out loss and mean), then the tasks, coarse before fine."""
    base = [m for m in vlm.CURVE_BASE.values() if m in set(metrics)]
    task_rank = {}
    for rank, (_, task) in enumerate(vlm.BENCHMARKS):
        task_rank.setdefault(task, rank)
    tasks = sorted(
        (m for m in set(metrics) if m not in base),
        key=lambda m: (task_rank.get(m.removeprefix("held-out "), len(task_rank)), m),
    )
    return base + tasks


@styled
def stage_curves(runs: pd.DataFrame, curves: pd.DataFrame, stage: int) -> Figure:
    """Stage ``stage``'s training curves: one panel per metric (training loss, held-out loss,
    held-out mean score, every task's held-out score) against the step; one line per run,
    coloured by arch, styled by ordering. ``curves`` is :attr:`VLMSweep.curves`."""
    c = curves[curves["stage"] == stage]
    if c.empty:
        return message_figure(f"Stage {stage}: no run has logged an evaluation yet.")
    metrics = _metric_order(c["metric"].unique())
    meta = runs.set_index("name")
    colors = arch_colors(meta.loc[c["run"].unique(), "arch"].fillna("?").unique())
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(PANEL_W * ncols + 1.8, PANEL_H * nrows + 0.7), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    n_runs = c["run"].nunique()
    fig.suptitle(f"Stage {stage}: training and held-out curves ({n_runs} runs)")
    for ax, metric in zip(axes, metrics, strict=False):
        m = c[c["metric"] == metric]
        for run, g in m.groupby("run", sort=False):
            arch = meta.loc[run, "arch"] if isinstance(meta.loc[run, "arch"], str) else "?"
            style = vlm.ORDERING_STYLES.get(meta.loc[run, "ordering"], ":")
            g = g.sort_values("step")
            ax.plot(g["step"], g["value"], color=colors[arch], ls=style, marker="o", ms=3, lw=1.4)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.xaxis.set_major_formatter(STEPS)
        ax.grid(alpha=0.3, lw=0.5)
        if not metric.endswith("loss"):
            ax.set_ylim(-0.03, 1.03)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles = _arch_handles(colors) + _ordering_handles(meta.loc[c["run"].unique(), "ordering"])
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    return fig


# grounding by location ----------------------------------------------------------------------


def _panels(cells: pd.DataFrame) -> tuple[list[tuple[str, str]], list[str]]:
    """Rows (arch, setting) in arm order and columns (orderings) of the location figures."""
    archs = vlm.arch_order(cells["arch"].unique())
    rows = sorted(
        set(zip(cells["arch"], cells["setting"], strict=True)),
        key=lambda k: (archs.index(k[0]) if k[0] in archs else len(archs), k[1]),
    )
    orderings = sorted(set(cells["ordering"]), key=vlm.ordering_rank)
    return rows, orderings


@styled
def location_heatmaps(cells: pd.DataFrame, task: str = "grounding") -> Figure:
    """``task``'s held-out score by the patch the target's centre falls in: one heatmap over
    the encoder's patch grid per (arch, setting) (rows) and ordering (columns), pooled over
    seeds, one colour scale 0-1; grey: no target there. ``cells`` is
    :func:`vlab.analysis.vlm.location_cells`. The VLM analogue of the probe's per-position
    heatmap: patches enter the LM row by row, so the top left is read first."""
    if cells.empty:
        return message_figure(f"No {task} answers with a target location yet.")
    rows, orderings = _panels(cells)
    grid_rows, grid_cols = int(cells["grid_rows"].max()), int(cells["grid_cols"].max())
    side = 0.32 * max(grid_rows, grid_cols) + 1.6
    fig = Figure(
        figsize=(side * len(orderings) + 1.6, side * len(rows) + 0.9), layout="constrained"
    )
    axes = fig.subplots(len(rows), len(orderings), squeeze=False)
    fig.suptitle(f"Held-out {task} score by the target's patch (row, column of the image grid)")
    mesh = None
    for i, (arch, setting) in enumerate(rows):
        for j, ordering in enumerate(orderings):
            ax = axes[i, j]
            c = cells[
                (cells["arch"] == arch)
                & (cells["setting"] == setting)
                & (cells["ordering"] == ordering)
            ]
            title = f"{arch} · {ordering}" + (f"\n{setting}" if setting else "")
            if c.empty:
                ax.set_title(title)
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            nr, nc = int(c["grid_rows"].iloc[0]), int(c["grid_cols"].iloc[0])
            acc = np.full((nr, nc), np.nan)
            acc[c["row"].to_numpy(int), c["col"].to_numpy(int)] = c["accuracy"].to_numpy(float)
            ax.set_facecolor("#d0d0d0")
            annot = nr <= 10 and nc <= 10
            sns.heatmap(
                pd.DataFrame(acc),
                ax=ax,
                vmin=0,
                vmax=1,
                cmap="viridis",
                cbar=False,
                square=True,
                annot=annot,
                fmt=".2f",
                annot_kws={"fontsize": 6},
            )
            ax.set_title(f"{title} ({int(c['n'].sum())} examples)")
            ax.set_xlabel("patch column")
            ax.set_ylabel("patch row")
            ax.tick_params(axis="y", rotation=0)
            mesh = ax.collections[0]
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label=f"held-out {task} score", shrink=0.8)
    return fig


@styled
def location_rows(by_row: pd.DataFrame, task: str = "grounding") -> Figure:
    """``task``'s held-out score by the target's patch row: the target's coarse position in
    the image's token sequence (rows enter the LM top to bottom, so the last row is nearest
    the question in the task-agnostic order). One line per (arch, ordering), one panel per
    setting; ``by_row`` is :func:`vlab.analysis.vlm.location_by_row`."""
    if by_row.empty:
        return message_figure(f"No {task} answers with a target location yet.")
    settings = list(dict.fromkeys(by_row["setting"]))
    colors = arch_colors(by_row["arch"].unique())
    fig = Figure(figsize=(PANEL_W * len(settings) + 1.8, PANEL_H + 0.8), layout="constrained")
    axes = fig.subplots(1, len(settings), squeeze=False)[0]
    fig.suptitle(f"Held-out {task} score by the target's patch row (image read top to bottom)")
    for ax, setting in zip(axes, settings, strict=True):
        s = by_row[by_row["setting"] == setting]
        for (arch, ordering), g in s.groupby(["arch", "ordering"], sort=False):
            g = g.sort_values("row")
            ax.plot(
                g["row"],
                g["accuracy"],
                color=colors[arch],
                ls=vlm.ORDERING_STYLES.get(ordering, ":"),
                marker="o",
                ms=4,
            )
        ax.set_xlabel("patch row of the target's centre (0 = top: read first)")
        ax.set_ylabel(f"{task} score")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(setting or None)
        ax.grid(alpha=0.3, lw=0.5)
    handles = _arch_handles(colors) + _ordering_handles(by_row["ordering"])
    handles.append(Patch(color="none", label="points: examples pooled over seeds"))
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    return fig
