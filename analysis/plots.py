"""The report's figures: each function takes tidy tables and returns a matplotlib Figure.

Figures are built with :class:`matplotlib.figure.Figure` directly, never through pyplot, so
there is no global figure state (a notebook's inline backend does not display them twice and
nothing needs closing) and any backend works; :func:`save` writes PNG and PDF. seaborn draws
into their axes where it says the same thing in fewer lines (the per-position heatmaps, the
distribution of final accuracy over seeds); the survival figures stay hand-built: seaborn's
plots know nothing of censoring, which needs its own marker and the Kaplan-Meier summaries.

Layout shared by all panel figures: one column per sequence length, one row per task variant
(suffix above prefix), one colour per architecture, the same colour for an architecture in
every figure of a report (:func:`arch_colors`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from vlab.analysis import tables
from vlab.analysis.stats import kaplan_meier, km_median, logrank_test
from vlab.models.backbones import families

PANEL_W, PANEL_H = 4.2, 3.2
FONT = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9}
_CYCLE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
# Fixed colours for vlab's arms, from their family records in registry order (the paper's two
# first); any other arch takes the next free one.
_KNOWN = {f.arch: f.color for f in families()}
P = ParamSpec("P")
# Step axes: 70k rather than 70000 (a row of five-digit labels runs together).
STEPS = FuncFormatter(
    lambda x, _: (
        f"{x / 1e6:g}M" if abs(x) >= 1e6 else (f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}")
    )
)
# Axis labels of the time columns of tables.time_to_threshold.
TIME_LABELS = {"time": "training step", "examples": "training examples seen"}


def styled(func: Callable[P, Figure]) -> Callable[P, Figure]:
    """Build the figure under the report's font sizes (rcParams apply when artists are made)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with mpl.rc_context(FONT):
            return func(*args, **kwargs)

    return wrapper


def arch_colors(archs) -> dict[str, str]:
    """A colour per architecture name, stable across the figures of one report; the paper's
    arms come first (legend order), then the others by name."""
    colors = {a: c for a, c in _KNOWN.items() if a in set(archs)}
    free = [c for c in _CYCLE if c not in colors.values()]
    for i, a in enumerate(sorted(set(archs) - set(colors), key=str)):
        colors[a] = free[i % len(free)]
    return colors


def save(fig: Figure, directory: str | Path, name: str, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``directory/name.png`` and ``.pdf``; returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{name}.png", directory / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=dpi)
    fig.savefig(paths[1])
    return paths


@styled
def message_figure(text: str) -> Figure:
    """A small figure that says why there is nothing to plot (no data yet, ...)."""
    fig = Figure(figsize=(6, 1.2))
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def _grid(lengths: list[int], variants: list[str], title: str, sharey: bool = True):
    """Figure with rows = variants, columns = lengths; returns (fig, {(length, variant): ax})."""
    fig = Figure(
        figsize=(PANEL_W * len(lengths) + 1.8, PANEL_H * len(variants) + 0.7),
        layout="constrained",
    )
    axes = fig.subplots(len(variants), len(lengths), squeeze=False, sharey=sharey)
    fig.suptitle(title, fontsize=12)
    grid = {}
    for i, v in enumerate(variants):
        for j, length in enumerate(lengths):
            ax = axes[i, j]
            ax.set_title(f"L = {length} · {v}")
            ax.grid(alpha=0.3, lw=0.5)
            grid[(length, v)] = ax
    return fig, grid


def _legend(fig: Figure, handles: list) -> None:
    fig.legend(handles=handles, loc="outside right center", frameon=False)


def _arch_handles(colors: dict[str, str], counts: dict[str, int] | None = None) -> list:
    return [
        Line2D([], [], color=c, lw=2.5, label=f"{a} ({counts[a]} runs in all)" if counts else a)
        for a, c in colors.items()
    ]


# learning curves ---------------------------------------------------------------------------


@styled
def learning_curves(
    runs: pd.DataFrame, evaluations: pd.DataFrame, threshold: float | None = None
) -> Figure:
    """Held-out accuracy vs fraction of training: faint line per run, bold mean per arch.

    The mean is dotted where some runs of the group have no value (still running, failed);
    runs stopped at the threshold count with their last accuracy after stopping. A failed or
    interrupted run's line ends in a cross. The threshold line is ``threshold``, or the runs'
    own one when they all share it.
    """
    lengths, variants = tables.panels(runs)
    meta = tables.plottable(runs).set_index("name")[[*tables.GROUP, "state"]]
    ev = evaluations.join(meta, on="run", how="inner")
    if ev.empty:
        return message_figure("No evaluations yet: learning curves appear once runs evaluate.")
    colors = arch_colors(runs["arch"].dropna().unique())
    fig, grid = _grid(lengths, variants, "Held-out accuracy vs fraction of training")
    for (length, _), ax in grid.items():
        ax.axhline(1 / length, color="grey", ls="--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("fraction of training (step / budget)")
        ax.set_ylabel("held-out accuracy")
    for _, r in ev.sort_values("step").groupby("run"):
        first = r.iloc[0]
        ax = grid[(int(first["length"]), first["variant"])]
        color = colors[first["arch"]]
        ax.plot(r["fraction"], r["accuracy"], color=color, lw=0.8, alpha=0.35)
        if first["state"] in ("failed", "interrupted"):
            ax.plot(r["fraction"].iloc[-1], r["accuracy"].iloc[-1], "x", color=color, ms=6)
    for key, m in tables.mean_curves(runs, evaluations).groupby(tables.GROUP):
        ax, color = grid[(int(key[0]), key[1])], colors[key[2]]
        full = np.where(m["n"] == m["n_runs"], m["mean"], np.nan)
        ax.plot(m["fraction"], m["mean"], color=color, lw=1.8, ls=":")
        ax.plot(m["fraction"], full, color=color, lw=2.4)
    own = runs["threshold"].dropna().unique()
    line = threshold if threshold is not None else (own[0] if len(own) == 1 else None)
    for ax in grid.values():
        if line is not None:
            ax.axhline(line, color="black", ls=":", lw=0.8)
    counts = ev.drop_duplicates("run")["arch"].value_counts().to_dict()
    colors = {a: c for a, c in colors.items() if a in counts}
    _legend(
        fig,
        _arch_handles(colors, counts)
        + [
            Line2D([], [], color="grey", lw=0.8, alpha=0.6, label="one run"),
            Line2D([], [], color="grey", lw=2.4, label="mean over runs"),
            Line2D([], [], color="grey", lw=1.8, ls=":", label="mean, some runs\nnot there (yet)"),
            Line2D([], [], color="grey", ls="--", lw=0.8, label="chance (1/L)"),
            Line2D([], [], color="black", ls=":", lw=0.8, label="threshold"),
            Line2D([], [], color="grey", marker="x", ls="", label="failed / interrupted"),
        ],
    )
    return fig


# per-position heatmaps ---------------------------------------------------------------------


@styled
def position_heatmaps(runs: pd.DataFrame, per_position: pd.DataFrame, length: int) -> Figure:
    """Accuracy per target position (x) and evaluation step (y), mean over the runs of each
    arch (rows) and variant (columns, suffix left of prefix), one colour scale 0-1; seaborn
    thins the tick labels to what fits."""
    r = tables.plottable(runs)
    r = r[r["length"] == length]
    archs = list(arch_colors(r["arch"].unique()))  # same order as the other figures
    _, variants = tables.panels(r)
    if r.empty or per_position[per_position["run"].isin(r["name"])].empty:
        return message_figure(f"L = {length}: no per-position accuracies yet.")
    fig = Figure(figsize=(4.6 * len(variants) + 1.2, 2.9 * len(archs) + 0.8), layout="constrained")
    axes = fig.subplots(len(archs), len(variants), squeeze=False)
    fig.suptitle(f"Held-out accuracy per target position, L = {length} (chance {1 / length:.2g})")
    # one step grid for every panel, so rows line up across architectures and variants
    grid = np.unique(per_position[per_position["run"].isin(r["name"])]["step"].to_numpy())
    mesh, missing = None, False
    for i, arch in enumerate(archs):
        for j, variant in enumerate(variants):
            ax = axes[i, j]
            names = r[(r["arch"] == arch) & (r["variant"] == variant)]["name"].tolist()
            steps, acc, counts = tables.mean_heatmap(runs, per_position, names, grid)
            n = int(counts.max()) if counts.size else 0
            partial = ", fewer later" if n and counts[counts > 0].min() < n else ""
            ax.set_title(f"{arch} · {variant}" + (f" (mean of {n} runs{partial})" if n > 1 else ""))
            if n == 0:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            ax.set_facecolor("#d0d0d0")  # NaN cells: no run of the panel got there (yet)
            missing = missing or bool(np.isnan(acc).any())
            cells = pd.DataFrame(acc, index=[f"{s:,}" for s in steps], columns=range(length))
            sns.heatmap(cells, ax=ax, vmin=0, vmax=1, cmap="viridis", cbar=False)
            ax.invert_yaxis()  # later evaluations on top, like a time axis
            ax.tick_params(axis="y", rotation=0)
            ax.set_xlabel("target position")
            ax.set_ylabel("evaluation at step")
            mesh = ax.collections[-1]
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="held-out accuracy", shrink=0.9)
    if missing:
        fig.suptitle(f"{fig.get_suptitle()}\ngrey: steps no run of the panel has reached (yet)")
    return fig


# time to threshold -------------------------------------------------------------------------


def _threshold_label(ttt: pd.DataFrame) -> str:
    values = sorted(ttt["threshold"].dropna().unique())
    return ", ".join(f"{v:g}" for v in values) if values else "?"


@styled
def threshold_times(
    ttt: pd.DataFrame, confidence: float = 0.95, time: str = "time", title: str | None = None
) -> Figure:
    """Step (``time="time"``) or examples seen (``"examples"``) at which each run reached the
    threshold (filled) or was censored (open triangle), per architecture, with the Kaplan-Meier
    median and its interval (black)."""
    ttt = ttt[np.isfinite(ttt[time].astype(float))] if not ttt.empty else ttt
    if ttt.empty:
        return message_figure("No run has been evaluated yet: no time to threshold.")
    lengths, variants = tables.panels(ttt)
    colors = arch_colors(ttt["arch"].unique())
    archs = list(colors)
    what = "Steps" if time == "time" else "Training examples"
    fig, grid = _grid(
        lengths, variants, title or f"{what} to reach accuracy {_threshold_label(ttt)}"
    )
    top = ttt[time].max() * 1.08 + 1
    for (length, variant), ax in grid.items():
        g = ttt[(ttt["length"] == length) & (ttt["variant"] == variant)]
        for x, arch in enumerate(archs):
            a = g[g["arch"] == arch]
            if a.empty:
                continue
            jitter = np.linspace(-0.15, 0.15, len(a)) if len(a) > 1 else np.zeros(1)
            ev = a["event"].to_numpy(bool)
            ax.scatter(x + jitter[ev], a[time][ev], color=colors[arch], s=28, zorder=3)
            ax.scatter(
                x + jitter[~ev],
                a[time][~ev],
                marker="^",
                facecolors="none",
                edgecolors=colors[arch],
                s=36,
                zorder=3,
            )
            med, lo, hi = km_median(kaplan_meier(a[time], a["event"], confidence))
            hi_draw = top if math.isinf(hi) else hi
            if not math.isinf(lo):
                ax.plot([x, x], [lo, hi_draw], color="black", lw=1.2, zorder=2)
            if not math.isinf(med):
                ax.plot([x - 0.3, x + 0.3], [med, med], color="black", lw=2.2, zorder=4)
        ax.set_xticks(range(len(archs)), archs)
        ax.set_xlim(-0.6, len(archs) - 0.4)
        ax.set_ylim(-0.03 * top, top)  # markers at step 0 stay visible
        ax.set_ylabel(TIME_LABELS[time])
        ax.yaxis.set_major_formatter(STEPS)
    _legend(
        fig,
        [
            Line2D([], [], color="grey", marker="o", ls="", label="reached threshold"),
            Line2D(
                [],
                [],
                color="grey",
                marker="^",
                mfc="none",
                ls="",
                label="not reached\n(censored at last eval)",
            ),
            Line2D([], [], color="black", lw=2.2, label="Kaplan-Meier median"),
            Line2D(
                [],
                [],
                color="black",
                lw=1.2,
                label=f"{confidence:.0%} CI of median\n(to the top: open-ended)",
            ),
        ],
    )
    return fig


@styled
def survival_curves(
    ttt: pd.DataFrame, confidence: float = 0.95, time: str = "time", title: str | None = None
) -> Figure:
    """Kaplan-Meier curves: fraction of runs not yet at the threshold vs training step
    (``time="time"``) or examples seen (``"examples"``), per arch with pointwise interval;
    ticks mark censored runs; titles give the log-rank p and the legend the medians."""
    ttt = ttt[np.isfinite(ttt[time].astype(float))] if not ttt.empty else ttt
    if ttt.empty:
        return message_figure("No run has been evaluated yet: no survival curves.")
    lengths, variants = tables.panels(ttt)
    colors = arch_colors(ttt["arch"].unique())
    fig, grid = _grid(
        lengths,
        variants,
        title or f"Runs not yet at accuracy {_threshold_label(ttt)} (Kaplan-Meier)",
    )
    for (length, variant), ax in grid.items():
        g = ttt[(ttt["length"] == length) & (ttt["variant"] == variant)]
        end = g[time].max() if not g.empty else 1
        medians = {}
        for arch, a in g.groupby("arch"):
            km = kaplan_meier(a[time], a["event"], confidence)
            medians[arch] = km_median(km)[0]
            if math.isfinite(medians[arch]):  # where the curve crosses one half
                ax.plot([medians[arch]] * 2, [0, 0.5], color=colors[arch], ls=":", lw=1)
            t = np.concatenate([[0], km.time, [end]])
            s = np.concatenate([[1], km.survival, km.survival[-1:]])
            lo = np.concatenate([[1], km.lower, km.lower[-1:]])
            hi = np.concatenate([[1], km.upper, km.upper[-1:]])
            ax.step(t, s, where="post", color=colors[arch], lw=2)
            ax.fill_between(t, lo, hi, step="post", color=colors[arch], alpha=0.15, lw=0)
            cens = km.censored > 0
            ax.plot(km.time[cens], km.survival[cens], "|", color=colors[arch], ms=10, mew=1.5)
        if g["arch"].nunique() > 1:
            p = logrank_test(g[time], g["event"], g["arch"]).p_value
            ax.set_title(f"L = {length} · {variant}   log-rank p = {_fmt_p(p)}")
        reached = g.groupby("arch")["event"].agg(["sum", "size"])
        lines = [
            f"{a}: {int(reached.loc[a, 'sum'])}/{int(reached.loc[a, 'size'])}, median "
            + ("not reached" if math.isinf(medians[a]) else STEPS(medians[a]))
            for a in colors
            if a in reached.index
        ]
        ax.axhline(0.5, color="grey", ls=":", lw=0.7)
        ax.text(0.02, 0.04, "reached\n" + "\n".join(lines), transform=ax.transAxes, fontsize=8,
                va="bottom", bbox={"fc": "white", "ec": "none", "alpha": 0.7})  # fmt: skip
        ax.set_ylim(-0.03, 1.05)
        ax.set_xlim(0, end * 1.02 + 1)
        ax.set_xlabel(TIME_LABELS[time])
        ax.xaxis.set_major_formatter(STEPS)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.set_ylabel("fraction not yet at threshold")
    counts = ttt["arch"].value_counts().to_dict()
    _legend(
        fig,
        _arch_handles(colors, counts)
        + [
            Line2D([], [], color="grey", marker="|", ls="", ms=10, label="censored run"),
            Line2D([], [], color="grey", lw=6, alpha=0.25, label=f"{confidence:.0%} CI"),
        ],
    )
    return fig


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else "< 1e-4"


# learning order ----------------------------------------------------------------------------


@styled
def learning_order(fp: pd.DataFrame) -> Figure:
    """Step from which each target position (or bin) counts as learned
    (:func:`vlab.analysis.tables.first_pass`: it stays at the level, and the model is not
    collapsed onto it).

    Faint dots: single runs; line: Kaplan-Meier median over runs (positions that never pass
    are censored). A median not reached is an open marker at the top.
    """
    if fp.empty:
        return message_figure("No per-position accuracies yet: no learning order.")
    lengths, variants = tables.panels(fp)
    colors = arch_colors(fp["arch"].unique())
    fig, grid = _grid(
        lengths,
        variants,
        "Learning order: step from which each position stays learned",
        sharey=False,
    )
    summary = tables.learning_order_summary(fp)
    archs = list(colors)
    for (length, variant), ax in grid.items():
        g = fp[(fp["length"] == length) & (fp["variant"] == variant)]
        s = summary[(summary["length"] == length) & (summary["variant"] == variant)]
        width = (g["last"] - g["first"] + 1).max() if not g.empty else 1
        top = max(g["time"].max() if not g.empty else 1, 1) * 1.1
        for k, arch in enumerate(archs):
            off = (k - (len(archs) - 1) / 2) * 0.12 * width
            a = g[(g["arch"] == arch) & g["event"]]
            ax.scatter(
                (a["first"] + a["last"]) / 2 + off,
                a["time"],
                color=colors[arch],
                s=10,
                alpha=0.35,
                lw=0,
            )
            m = s[s["arch"] == arch].sort_values("bin")
            if m.empty:
                continue
            x = (m["first"] + m["last"]) / 2 + off
            med = m["median"].to_numpy(float)
            reached = np.isfinite(med)
            # NaN breaks the line: never join two bins across one that did not pass
            ax.plot(x, np.where(reached, med, np.nan), "-o", color=colors[arch], lw=1.8, ms=4)
            ax.plot(
                x[~reached],
                np.full((~reached).sum(), top),
                "v",
                mfc="none",
                color=colors[arch],
                ms=7,
            )
        ax.axhline(top, color="grey", ls=":", lw=0.7)
        ticks = [t for t in MaxNLocator(nbins=6, integer=True).tick_values(0, top) if t < 0.9 * top]
        ax.set_yticks([*ticks, top], [STEPS(t) for t in ticks] + ["not\nreached"])
        ax.set_ylim(-0.03 * top, top * 1.06)  # "not reached" markers inside the frame
        ax.set_xlim(-0.5 - width * 0.3, length - 0.5 + width * 0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
        binned = width > 1
        ax.set_xlabel(f"target position{' (bin centre)' if binned else ''}")
        ax.set_ylabel("learned from step")
    _legend(
        fig,
        _arch_handles(colors)
        + [
            Line2D([], [], color="grey", marker="o", lw=1.8, ms=4, label="median over runs"),
            Line2D([], [], color="grey", marker="o", ls="", ms=4, alpha=0.4, label="one run"),
            Line2D([], [], color="grey", marker="v", mfc="none", ls="", label="median not reached"),
        ],
    )
    return fig


# final accuracy ----------------------------------------------------------------------------


@styled
def final_accuracy(
    runs: pd.DataFrame, confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> Figure:
    """Final held-out accuracy of every finished run (one dot per seed, learning rate and
    initialisation) per architecture, next to the mean and its bootstrap interval (black,
    the numbers of :func:`vlab.analysis.tables.final_accuracy` with the same arguments). The
    accuracy axis, shared by all panels, spans the data: the spread over seeds stays visible."""
    r = tables.plottable(runs)
    done = r[(r["state"] == "done") & r["final_accuracy"].notna()]
    if done.empty:
        return message_figure("No finished run yet: final accuracy appears once runs finish.")
    lengths, variants = tables.panels(done)
    colors = arch_colors(r["arch"].unique())
    archs = list(colors)
    summary = tables.final_accuracy(runs, confidence, n_boot, seed)
    pct = f"{confidence:.0%}"
    fig, grid = _grid(lengths, variants, "Final held-out accuracy of finished runs")
    for (length, variant), ax in grid.items():
        g = done[(done["length"] == length) & (done["variant"] == variant)]
        if not g.empty:
            with warnings.catch_warnings():  # many equal values: seaborn says some overlap
                warnings.simplefilter("ignore", UserWarning)
                sns.swarmplot(
                    g, x="arch", y="final_accuracy", hue="arch", order=archs, hue_order=archs,
                    palette=colors, legend=False, size=5, ax=ax,
                )  # fmt: skip
        s = summary[(summary["length"] == length) & (summary["variant"] == variant)]
        for x, arch in enumerate(archs):
            row = s[s["arch"] == arch]
            if row.empty or math.isnan(row["mean"].iloc[0]):
                continue
            mean, lo, hi = (row[c].iloc[0] for c in ("mean", f"{pct} CI low", f"{pct} CI high"))
            err = None if math.isnan(lo) else [[mean - lo], [hi - mean]]
            ax.errorbar(x + 0.3, mean, yerr=err, fmt="D", color="black", ms=5, capsize=3, zorder=4)
        ax.set_xlim(-0.6, len(archs) - 0.3)
        ax.set_xlabel("")
        ax.set_ylabel("final held-out accuracy")
    counts = done["arch"].value_counts().to_dict()
    _legend(
        fig,
        [
            Line2D(
                [],
                [],
                color=c,
                marker="o",
                ls="",
                label=f"{a} ({counts.get(a, 0)} finished in all)",
            )
            for a, c in colors.items()
        ]
        + [
            Line2D([], [], color="black", marker="D", ms=5, ls="", label="mean"),
            Line2D([], [], color="black", lw=1, label=f"{pct} bootstrap CI\nof the mean"),
        ],
    )
    return fig


@styled
def length_ratios(trend) -> Figure:
    """Each arm's median examples to threshold as a multiple of the baseline arm's, against L
    (log-log), one panel per variant, with the bootstrap interval; 1 (dotted) is parity. A
    length where an arm's median was not reached is marked at the panel's top (up triangle:
    the arm did not reach it; down triangle at the bottom: the baseline did not)."""
    ratios = trend.ratios
    if ratios.empty:
        return message_figure(
            "No length comparison: it needs the baseline arm and another at the same lengths."
        )
    variants = sorted(ratios["variant"].unique(), key=lambda v: tables.VARIANT_ORDER.get(v, 9))
    colors = arch_colors(ratios["arch"].unique())
    fig = Figure(figsize=(4.6 * len(variants) + 0.6, 3.9), layout="constrained")
    axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)
    finite = ratios[np.isfinite(ratios["ratio"]) & (ratios["ratio"] > 0)]
    values = np.concatenate(
        [finite["ratio"], finite["low"][np.isfinite(finite["low"]) & (finite["low"] > 0)]]
    )
    highs = finite["high"][np.isfinite(finite["high"])]
    lo = min([1.0, *values]) / 1.5
    hi = max([1.0, *values, *highs]) * 1.5
    for ax, variant in zip(axes[0], variants, strict=True):
        ax.axhline(1.0, color="grey", ls=":", lw=1)
        ax.grid(alpha=0.3, lw=0.5)
        for arch, g in ratios[ratios["variant"] == variant].groupby("arch"):
            g = g.sort_values("length")
            ok = np.isfinite(g["ratio"]) & (g["ratio"] > 0)
            f = g[ok]
            low = np.where(np.isfinite(f["low"]) & (f["low"] > 0), f["low"], lo)
            high = np.where(np.isfinite(f["high"]), f["high"], hi)
            ax.errorbar(
                f["length"],
                f["ratio"],
                yerr=[f["ratio"] - low, high - f["ratio"]],
                color=colors[arch],
                marker="o",
                capsize=3,
                label=f"{arch} / {trend.baseline}",
            )
            up = g[np.isinf(g["ratio"])]
            ax.scatter(up["length"], [hi] * len(up), marker="^", color=colors[arch], s=50)
            down = g[g["ratio"] == 0]
            ax.scatter(down["length"], [lo] * len(down), marker="v", color=colors[arch], s=50)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        ax.set_xlim(ratios["length"].min() / 1.4, ratios["length"].max() * 1.4)  # if empty
        ax.set_title(variant)
        ax.set_xlabel("context length L")
        ax.set_xticks(sorted(ratios["length"].unique()))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axes[0][0].set_ylabel(
        f"median {tables.TIME_UNITS[trend.time]} to threshold\n/ {trend.baseline}'s"
    )
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.suptitle(
        f"How the comparison changes with length ({trend.confidence:.0%} bootstrap intervals)"
    )
    return fig
