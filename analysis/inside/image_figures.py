"""Drawing a VLM's per-patch weights over the image it read (matplotlib, no torch).

The ``image_attention`` table (:mod:`vlab.analysis.inside.vlm`) holds one weight per visual
token's cell (``row``, ``col``); laid over the image, a reader sees at a glance whether the
answer's weight falls on the grounded object. Images are resized to the encoder's input
without cropping, so the grid spans the whole image and box fractions address the same
content.

The report's VLM figures take the tables of
:class:`~vlab.analysis.inside.results.InsideResults` (``image_attention`` and the
``image_examples`` written beside it) and return matplotlib Figures, styled as
:mod:`vlab.analysis.inside.figures`: :func:`image_attention_examples` draws a few examples per
ordering and stage, Pythia-VL beside Mamba-VL; :func:`image_target_share` the share of the
image weight on the target per layer against the share of the target's cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from vlab.analysis.inside.figures import _blank, archs_of
from vlab.analysis.inside.results import last_step, target_share
from vlab.analysis.plots import arch_colors, message_figure, styled
from vlab.models.backbones import families

ORDERINGS = ("task_agnostic", "task_aware")
ORDERING_TEXT = {
    "task_agnostic": "task-agnostic (image first)",
    "task_aware": "task-aware (instruction first)",
}
VL_NAMES = {f.arch: f.vlm_name for f in families()}  # the family records' VLM names
CMAP = "magma"


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


# tables -> what is drawn -------------------------------------------------------------------


def vl_name(arch: str) -> str:
    """``Pythia-VL``, ``Mamba-VL``; ``<arch>-VL`` for any other LM."""
    return VL_NAMES.get(arch, f"{arch}-VL")


def panels_of(table: pd.DataFrame) -> list[tuple[str, int]]:
    """The (ordering, stage) pairs in ``table``: task-agnostic first, then by stage."""
    pairs = {(str(o), int(s)) for o, s in table[["ordering", "stage"]].drop_duplicates().values}
    rank = {o: i for i, o in enumerate(ORDERINGS)}
    return sorted(pairs, key=lambda p: (rank.get(p[0], len(rank)), p[0], p[1]))


def image_grid(
    table: pd.DataFrame, layers: list[int], shape: tuple[int, int], image: tuple[int, int]
) -> np.ndarray:
    """An example's weights (the rows of one run, step and example) averaged over ``layers``,
    on the VLM's grid ``shape`` and folded onto the image's grid ``image``: a VLM that stacks
    m maps of the same image (two encoders) has ``shape[0] = m * image[0]`` rows, and the
    weights of the cells over the same patch are summed."""
    part = table[table["layer"].isin(layers)]
    mean = part.groupby(["row", "col"])["weight"].mean()
    grid = np.zeros(shape)
    grid[mean.index.get_level_values(0), mean.index.get_level_values(1)] = mean.to_numpy()
    stacked = shape[0] // image[0] if image[0] and shape[0] % image[0] == 0 else 1
    if stacked * image[0] != shape[0] or shape[1] != image[1]:
        return grid
    return grid.reshape(stacked, image[0], image[1]).sum(axis=0)


def _runs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(run, arch) in the report's arch order (pythia, mamba, others), then by name."""
    order = {a: i for i, a in enumerate(archs_of(table))}
    pairs = table[["run", "arch"]].drop_duplicates().itertuples(index=False)
    return sorted(((r.run, r.arch) for r in pairs), key=lambda p: (order[p[1]], p[0]))


# figures -------------------------------------------------------------------------------------


@styled
def image_attention_examples(
    table: pd.DataFrame,
    examples: pd.DataFrame,
    ordering: str,
    stage: int,
    n_examples: int = 4,
    mean_layers: bool = True,
) -> Figure:
    """A few grounding examples of the VLM runs of one ordering and stage: each image with
    the weight from the answer positions to every patch drawn over it, the target's box in
    cyan. Rows: examples; columns: per run (Pythia-VL before Mamba-VL), its last layer and,
    with ``mean_layers``, the mean over its layers. Each panel is scaled to its own maximum;
    its label gives the share of the image weight on the target and the image weight in all.
    Each run at its last step in ``table``."""
    from matplotlib.image import imread

    keep = (table["ordering"] == ordering) & (table["stage"] == stage)
    t = last_step(table[keep])
    if t.empty:
        return message_figure(f"{ordering}, stage {stage}: no image-attention results.")
    ex = examples[(examples["ordering"] == ordering) & (examples["stage"] == stage)]
    ex = ex.merge(t[["run", "step"]].drop_duplicates(), on=["run", "step"])
    runs = _runs(t)
    shown = sorted(ex["example"].unique())[:n_examples]
    if not shown:
        shown = sorted(t["example"].unique())[:n_examples]
    views = ["last", "mean"] if mean_layers else ["last"]
    columns = [(run, arch, view) for run, arch in runs for view in views]
    fig = Figure(figsize=(2.2 * len(columns) + 1.2, 2.35 * len(shown) + 1.0), layout="constrained")
    axes = fig.subplots(len(shown), len(columns), squeeze=False)
    fig.suptitle(
        f"Answer -> image patches on grounding examples · {ORDERING_TEXT.get(ordering, ordering)}"
        f" · stage {stage}",
        fontsize=12,
    )
    for j, (run, arch, view) in enumerate(columns):
        r = t[t["run"] == run]
        layers = sorted(int(x) for x in r["layer"].unique())
        picked = [layers[-1]] if view == "last" else layers
        kind = "attention" if r["kind"].iloc[0] == "attention" else "hidden attn."
        what = f"last layer ({layers[-1]})" if view == "last" else f"mean of {len(layers)} layers"
        step = int(r["step"].iloc[0])
        axes[0, j].set_title(f"{vl_name(arch)} · {run}\n{what}, {kind} · step {step:,}", fontsize=8)
        shape = (int(r["row"].max()) + 1, int(r["col"].max()) + 1)
        for i, k in enumerate(shown):
            ax = axes[i, j]
            one = r[r["example"] == k]
            image = ex[(ex["run"] == run) & (ex["example"] == k)]
            if one.empty or image.empty:
                _blank(ax, "no image:\nre-run vlab inspect" if not one.empty else "no example")
                continue
            e = image.iloc[0]
            grid = image_grid(one, picked, shape, (int(e["image_rows"]), int(e["image_cols"])))
            top = float(grid.max())
            draw_over_image(
                imread(e["file"]),
                grid / top if top > 0 else grid,
                ax,
                box=(e["x1"], e["y1"], e["x2"], e["y2"]),
                cmap=CMAP,
                vmax=1.0,
            )
            share = target_share(one[one["layer"].isin(picked)], ["layer"])
            ax.set_xlabel(
                f"{share['share'].mean():.0%} on target · image {share['image_weight'].mean():.2f}",
                fontsize=8,
            )
            if j == 0:
                ax.set_ylabel(f"example {k}: {e['target']}", fontsize=8)
    fig.colorbar(
        ScalarMappable(Normalize(0, 1), CMAP),
        ax=axes,
        label="weight / the panel's largest",
        shrink=0.6,
    )
    return fig


@styled
def image_target_share(table: pd.DataFrame) -> Figure:
    """The share of the answer's image weight that falls on the target's patches, per layer,
    mean over examples (and over the runs of an arch): one line per LM architecture, one
    panel per ordering (columns) and stage (rows). Dashed: the share of the image's patches
    that overlap the target, what weight spread evenly over the image would put there. Each
    run at its last step in ``table``."""
    if table.empty:
        return message_figure("No image-attention results.")
    t = last_step(table)
    shares = target_share(t, ["run", "arch", "ordering", "stage", "layer"])
    colors = arch_colors(shares["arch"].unique())
    orderings = [o for o in ORDERINGS if o in set(shares["ordering"])]
    orderings += sorted(set(shares["ordering"]) - set(ORDERINGS))
    stages = sorted(int(s) for s in shares["stage"].unique())
    fig = Figure(
        figsize=(4.2 * len(orderings) + 1.8, 3.0 * len(stages) + 0.9), layout="constrained"
    )
    axes = fig.subplots(len(stages), len(orderings), squeeze=False)
    fig.suptitle("Share of the image weight on the grounded object, per layer", fontsize=12)
    for i, stage in enumerate(stages):
        for j, ordering in enumerate(orderings):
            ax = axes[i, j]
            panel = shares[(shares["stage"] == stage) & (shares["ordering"] == ordering)]
            ax.set_title(f"{ORDERING_TEXT.get(ordering, ordering)} · stage {stage}", fontsize=10)
            if panel.empty:
                _blank(ax, "no runs")
                continue
            ax.grid(alpha=0.3, lw=0.5)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("layer")
            ax.set_ylabel("share on target")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
            baseline = panel.groupby("run")["target_cells"].first().mean()
            ax.axhline(baseline, color="grey", ls="--", lw=0.9)
            for arch, a in panel.groupby("arch"):
                mean = a.groupby("layer", as_index=False)["share"].mean().sort_values("layer")
                ax.plot(mean["layer"], mean["share"], "-o", color=colors[arch], lw=1.8, ms=4)
    fig.legend(
        handles=[
            Line2D([], [], color=c, lw=2, marker="o", ms=4, label=vl_name(a))
            for a, c in colors.items()
        ]
        + [Line2D([], [], color="grey", ls="--", lw=0.9, label="target's share of\nthe patches")],
        loc="outside right center",
        frameon=False,
    )
    return fig


# the probe analyses on grounding examples (vlab.analysis.inside.vlm_analyses) ------------------

VLM_SOURCES = {
    "residual": ("residual at prediction", "-"),
    "residual_image_end": ("residual after the image", "--"),
    "ssm_state": ("SSM state after the image", ":"),
}
PROBE_LABELS = {
    "cell": "object in each cell (mean over cells)",
    "target_cell": "the target's cell",
    "target_object": "the named object",
}
PATCH_ROLES = {
    "target_cells": "the clean target's patches",
    "corrupted_cells": "the corrupted target's patches",
    "last": "the prediction position",
}
SITE_STYLES = {"resid_pre": "-", "ssm_state": ":", "conv_window": "-.", "state_and_window": "--"}


def _run_mean(table: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mean of ``value`` per run and ``keys``, then over the runs of each arch."""
    per_run = table.groupby(["run", "arch", *keys], as_index=False)[value].mean()
    return per_run.groupby(["arch", *keys], as_index=False)[value].mean()


def _line_panels(
    panels: list[tuple[str, int]], columns: list[str], title: str, column_text: dict[str, str]
):
    """A figure with one row per (ordering, stage) and one column per ``columns``."""
    fig = Figure(figsize=(3.9 * len(columns) + 2.4, 2.9 * len(panels) + 0.9), layout="constrained")
    axes = fig.subplots(len(panels), len(columns), squeeze=False)
    fig.suptitle(title, fontsize=12)
    for i, (ordering, stage) in enumerate(panels):
        for j, column in enumerate(columns):
            ax = axes[i, j]
            ax.set_title(
                f"{column_text.get(column, column)}\n{ORDERING_TEXT.get(ordering, ordering)}"
                f" · stage {stage}",
                fontsize=9,
            )
            ax.grid(alpha=0.3, lw=0.5)
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    return fig, axes


def _layer_ticks(ax, layers) -> None:
    from vlab.analysis.inside.figures import layer_label

    shown = sorted(int(x) for x in layers)
    ax.set_xticks(shown, [layer_label(x) for x in shown])


def _legend(fig: Figure, colors: dict[str, str], styles: dict[str, tuple[str, str]]) -> None:
    handles = [Line2D([], [], color=c, lw=2, label=vl_name(a)) for a, c in colors.items()]
    handles += [Line2D([], [], color="black", ls=ls, lw=1.2, label=t) for t, ls in styles.values()]
    fig.legend(handles=handles, loc="outside right center", frameon=False, fontsize=8)


@styled
def vlm_logit_lens(table: pd.DataFrame) -> Figure:
    """The logit lens on the box: per layer, the mean probability and top-1 accuracy of the
    correct next token at the answer positions whose token varies between examples (the
    coordinates' digits; fixed tokens such as ``[`` and ``.`` are left out), one line per LM
    architecture, one row of panels per ordering and stage. Each run at its last step."""
    if table.empty:
        return message_figure("No vlm_logit_lens results.")
    t = last_step(table)
    digits = t[t["token"] == "*"]
    if digits.empty:
        digits = t
    colors = arch_colors(digits["arch"].unique())
    panels = panels_of(digits)
    metrics = {"probability": "probability of the box token", "accuracy": "top-1 accuracy"}
    fig, axes = _line_panels(
        panels, list(metrics), "Logit lens on the box's digits, per layer", metrics
    )
    for i, (ordering, stage) in enumerate(panels):
        part = digits[(digits["ordering"] == ordering) & (digits["stage"] == stage)]
        for j, metric in enumerate(metrics):
            ax = axes[i, j]
            ax.set_ylim(-0.02, 1.02)
            means = _run_mean(part, ["layer"], metric)
            for arch, a in means.groupby("arch"):
                a = a.sort_values("layer")
                ax.plot(a["layer"], a[metric], "-o", color=colors[arch], lw=1.8, ms=4)
            _layer_ticks(ax, part["layer"].unique())
    _legend(fig, colors, {})
    return fig


@styled
def vlm_state_probe(table: pd.DataFrame) -> Figure:
    """Linear probes on a VLM's LM: per layer, the held-out accuracy of probes for the object
    in each image cell (mean over cells), the target's cell and the named object, from the
    residual at the prediction position (solid), after the image (dashed) and the SSM state
    after the image (dotted); grey: chance, the mean over the panel's probes. One line per
    LM architecture and source, one row of panels per ordering and stage."""
    if table.empty:
        return message_figure("No vlm_state_probe results.")
    t = last_step(table).dropna(subset=["accuracy"])
    if t.empty:
        return message_figure("vlm_state_probe: too few examples to fit probes (4 at least).")
    colors = arch_colors(t["arch"].unique())
    panels = panels_of(t)
    labels = [x for x in PROBE_LABELS if x in set(t["label"])]
    fig, axes = _line_panels(
        panels, labels, "Linear probes: what the LM holds about the image", PROBE_LABELS
    )
    for i, (ordering, stage) in enumerate(panels):
        part = t[(t["ordering"] == ordering) & (t["stage"] == stage)]
        for j, label in enumerate(labels):
            ax = axes[i, j]
            ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel("held-out accuracy")
            rows = part[part["label"] == label]
            if rows.empty:
                _blank(ax, "no probes")
                continue
            ax.axhline(rows["chance"].mean(), color="grey", ls="--", lw=0.9)
            means = _run_mean(rows, ["source", "layer"], "accuracy")
            for (arch, source), a in means.groupby(["arch", "source"]):
                a = a.sort_values("layer")
                style = VLM_SOURCES.get(source, (source, "-."))[1]
                ax.plot(
                    a["layer"],
                    a["accuracy"],
                    ls=style,
                    marker="o",
                    color=colors[arch],
                    lw=1.6,
                    ms=3,
                )
            _layer_ticks(ax, rows["layer"].unique())
    shown = {s: VLM_SOURCES[s] for s in VLM_SOURCES if s in set(t["source"])}
    _legend(fig, colors, shown)
    return fig


@styled
def vlm_patching(table: pd.DataFrame, corruption: str) -> Figure:
    """Activation patching on a VLM's LM for one corruption: per layer, the recovery of the
    clean box token when the clean activation is patched in at the clean target's patches
    (mean over them), the corrupted target's patches, and the prediction position; one line
    per LM architecture and site (residual stream solid, SSM state dotted, conv window
    dash-dotted, both dashed), one row of panels per ordering and stage. Each run at its last
    step."""
    t = last_step(table[table["corruption"] == corruption]) if not table.empty else table
    if t.empty:
        return message_figure(f"No vlm_patching results for {corruption}.")
    t = t[t["token"].isin(PATCH_ROLES)]
    colors = arch_colors(t["arch"].unique())
    panels = panels_of(t)
    roles = [r for r in PATCH_ROLES if r in set(t["token"])]
    what = {"moved": "the target moved", "other_target": "another object named"}
    fig, axes = _line_panels(
        panels,
        roles,
        f"Patching clean into corrupted ({what.get(corruption, corruption)})",
        PATCH_ROLES,
    )
    for i, (ordering, stage) in enumerate(panels):
        part = t[(t["ordering"] == ordering) & (t["stage"] == stage)]
        for j, role in enumerate(roles):
            ax = axes[i, j]
            ax.set_ylabel("recovery")
            ax.axhline(0, color="grey", lw=0.8)
            ax.axhline(1, color="grey", lw=0.8, ls="--")
            rows = part[part["token"] == role].dropna(subset=["recovery"])
            if rows.empty:
                _blank(ax, "not measurable")
                continue
            means = _run_mean(rows, ["site", "layer"], "recovery")
            for (arch, site), a in means.groupby(["arch", "site"]):
                a = a.sort_values("layer")
                ax.plot(
                    a["layer"],
                    a["recovery"],
                    ls=SITE_STYLES.get(site, "-"),
                    marker="o",
                    color=colors[arch],
                    lw=1.6,
                    ms=3,
                )
    from vlab.analysis.inside.figures import SITE_TEXT

    sites = [s for s in SITE_STYLES if s in set(t["site"])]
    _legend(fig, colors, {s: (SITE_TEXT.get(s, s), SITE_STYLES[s]) for s in sites})
    return fig
