"""Figures of the look-inside report: each function takes tables of
:class:`~vlab.analysis.inside.results.InsideResults` and returns a matplotlib Figure.

Built as :mod:`vlab.analysis.plots` builds the probe report's figures (``Figure`` objects, no
pyplot, the report's font sizes, one fixed colour and order per architecture: pythia, then
mamba, then the others). Several runs of one (arch, variant, length) are averaged; a panel's
title says over how many runs, or the checkpoint step of its single run. Heatmaps size their
cells so that sequence lengths up to ~32 stay readable; grey cells are missing values.

matplotlib and pandas only, never torch (the report kernel does not load it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from vlab.analysis.plots import arch_colors, message_figure, styled
from vlab.analysis.tables import VARIANT_ORDER

MISSING = "#d0d0d0"  # face colour behind heatmaps: cells without a value
RECOVERY_RANGE = (-0.2, 1.2)  # patching colour scale: linear, white at 0
SOURCES = ("residual", "ssm_state")
SITES = ("resid_pre", "ssm_state", "conv_window", "state_and_window")
# What an SSM block carries past a position: its state, its conv window, both (patching sites).
CARRIED = ("ssm_state", "conv_window", "state_and_window")
SOURCE_TEXT = {"residual": "residual at prediction", "ssm_state": "SSM state after context"}
SITE_TEXT = {
    "resid_pre": "residual stream",
    "ssm_state": "SSM state",
    "conv_window": "conv window",
    "state_and_window": "state + conv window",
}
CARRIED_COLORS = {"ssm_state": "#1f77b4", "conv_window": "#ff7f0e", "state_and_window": "#2ca02c"}


# ordering and labels -----------------------------------------------------------------------


def archs_of(table: pd.DataFrame) -> list[str]:
    """The architectures in ``table``, in the report's fixed order (pythia, mamba, others)."""
    return list(arch_colors(table["arch"].dropna().unique()))


def variants_of(table: pd.DataFrame) -> list[str]:
    """The variants in ``table``, suffix before prefix."""
    return sorted(table["variant"].dropna().unique(), key=lambda v: (VARIANT_ORDER.get(v, 9), v))


def lengths_of(table: pd.DataFrame) -> list[int]:
    return sorted(int(x) for x in table["length"].dropna().unique())


def layer_label(layer: int) -> str:
    """``emb`` for layer -1 (the embeddings), the block index otherwise."""
    return "emb" if layer == -1 else str(int(layer))


def _about(runs: pd.DataFrame) -> str:
    """What a panel shows: the step of its one run, or how many runs it averages."""
    names = runs["run"].unique()
    if len(names) == 1:
        steps = sorted(runs["step"].unique())
        return f"step {steps[0]:,}" if len(steps) == 1 else f"{len(steps)} steps"
    return f"mean of {len(names)} runs"


def _panel_mean(table: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Mean of ``value`` over runs (first per run, then over runs) for each ``keys``."""
    per_run = table.groupby(["run", *keys], as_index=False)[value].mean()
    return per_run.groupby(keys, as_index=False)[value].mean()


def _grid(rows: list, columns: list, size: tuple[float, float], title: str):
    fig = Figure(
        figsize=(size[0] * len(columns) + 1.4, size[1] * len(rows) + 0.9), layout="constrained"
    )
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    fig.suptitle(title, fontsize=12)
    return fig, axes


def _blank(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _annotate(ax, values: np.ndarray, limit: int = 70) -> None:
    """Write each cell's value in it when there are few cells."""
    if values.size > limit:
        return
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="black")


# logit lens --------------------------------------------------------------------------------


@styled
def logit_lens(table: pd.DataFrame) -> Figure:
    """The lens read after each layer at the prediction position: accuracy of the answer
    among the L answer tokens and its probability, mean over target positions (and runs),
    one line per architecture. Columns: length x measure; rows: variants."""
    if table.empty:
        return message_figure("No logit-lens results.")
    colors = arch_colors(table["arch"].unique())
    lengths, variants = lengths_of(table), variants_of(table)
    columns = [(length, m) for length in lengths for m in ("accuracy", "probability")]
    fig, axes = _grid(variants, columns, (3.6, 2.8), "Logit lens at the prediction position")
    for i, variant in enumerate(variants):
        for j, (length, measure) in enumerate(columns):
            ax = axes[i, j]
            panel = table[(table["variant"] == variant) & (table["length"] == length)]
            ax.set_title(f"L = {length} · {variant} · {measure}")
            ax.grid(alpha=0.3, lw=0.5)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("read after layer")
            ax.set_ylabel("answer accuracy" if measure == "accuracy" else "answer probability")
            if measure == "accuracy":
                ax.axhline(1 / length, color="grey", ls="--", lw=0.8)
            layers = sorted(panel["layer"].unique())
            for arch, a in panel.groupby("arch"):
                m = _panel_mean(a, ["layer"], measure).sort_values("layer")
                ax.plot(m["layer"], m[measure], "-o", color=colors[arch], lw=1.8, ms=4)
            ticks = shown_layers(layers, 12)
            ax.set_xticks(ticks, [layer_label(x) for x in ticks])
    fig.legend(
        handles=[
            Line2D([], [], color=c, lw=2, marker="o", ms=4, label=a) for a, c in colors.items()
        ]
        + [Line2D([], [], color="grey", ls="--", lw=0.8, label="chance (1/L)")],
        loc="outside right center",
        frameon=False,
    )
    return fig


# attention -----------------------------------------------------------------------------------


def shown_layers(layers: list[int], most: int) -> list[int]:
    """At most ``most`` of ``layers``, evenly spread, always the first and the last."""
    layers = sorted(layers)
    if len(layers) <= most:
        return layers
    picks = np.unique(np.linspace(0, len(layers) - 1, most).round().astype(int))
    return [layers[k] for k in picks]


@styled
def attention_maps(table: pd.DataFrame, length: int, max_layers: int = 6) -> Figure:
    """Where the prediction position looks, per layer: target position (y, the queried
    position) x context position (x), the mean over heads (GPT-NeoX softmax attention) or
    Mamba's hidden-attention share. Rows: arch x variant; columns: layers (at most
    ``max_layers``, spread over the depth). One colour scale per row."""
    t = table[(table["length"] == length) & (table["head"] == -1)]
    if t.empty:
        return message_figure(f"L = {length}: no attention results.")
    archs, variants = archs_of(t), variants_of(t)
    rows = [
        (a, v) for a in archs for v in variants if not t[(t.arch == a) & (t.variant == v)].empty
    ]
    n_cols = max(
        len(shown_layers(list(t[t.arch == a]["layer"].unique()), max_layers)) for a in archs
    )
    side = min(3.4, 2.0 + 0.045 * length)
    fig, axes = _grid(
        rows,
        list(range(n_cols)),
        (side, side),
        f"Attention of the prediction position over the context, L = {length}",
    )
    edges = np.arange(length + 1) - 0.5
    for i, (arch, variant) in enumerate(rows):
        r = t[(t["arch"] == arch) & (t["variant"] == variant)]
        kinds = r.groupby("layer")["kind"].first()  # per layer: a hybrid has both kinds
        layers = shown_layers(list(r["layer"].unique()), max_layers)
        m = _panel_mean(r, ["layer", "target_position", "source_position"], "weight")
        top = max(float(m["weight"].max()), 1e-6)
        mesh = None
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(layers):
                ax.set_axis_off()
                continue
            grid = m[m["layer"] == layers[j]].pivot(
                index="target_position", columns="source_position", values="weight"
            )
            grid = grid.reindex(index=range(length), columns=range(length))
            ax.set_facecolor(MISSING)
            mesh = ax.pcolormesh(edges, edges, grid.to_numpy(float), cmap="magma", vmin=0, vmax=top)
            ax.set_aspect("equal")
            ax.invert_yaxis()
            kind = "attention, mean of heads" if kinds[layers[j]] == "attention" else "hidden attn."
            ax.set_title(f"{arch} · {variant} · layer {layers[j]}\n{kind}", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
            ax.set_xlabel("context position")
            if j == 0:
                ax.set_ylabel(f"queried position\n({_about(r)})")
        if mesh is not None:
            fig.colorbar(mesh, ax=axes[i, :], label="weight", shrink=0.85)
    return fig


def queried_mass_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per run, layer and head: the weight on the queried position (source == target),
    mean over target positions. Columns run, arch, variant, length, step, layer, head, mass."""
    keys = ["run", "arch", "variant", "length", "step", "layer", "head"]
    on = table[table["source_position"] == table["target_position"]]
    return on.groupby(keys, as_index=False)["weight"].mean().rename(columns={"weight": "mass"})


@styled
def queried_mass(table: pd.DataFrame) -> Figure:
    """Weight of the prediction position on the queried token, per layer: solid the mean over
    heads (Mamba: its hidden-attention share), dotted the single head with the most (GPT-NeoX).
    Columns: lengths; rows: variants; one colour per architecture."""
    if table.empty:
        return message_figure("No attention results.")
    mass = queried_mass_table(table)
    colors = arch_colors(mass["arch"].unique())
    lengths, variants = lengths_of(mass), variants_of(mass)
    fig, axes = _grid(variants, lengths, (4.2, 3.0), "Weight on the queried position, per layer")
    for i, variant in enumerate(variants):
        for j, length in enumerate(lengths):
            ax = axes[i, j]
            panel = mass[(mass["variant"] == variant) & (mass["length"] == length)]
            ax.set_title(f"L = {length} · {variant}")
            ax.grid(alpha=0.3, lw=0.5)
            ax.axhline(1 / length, color="grey", ls="--", lw=0.8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("layer")
            ax.set_ylabel("weight on queried position")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
            for arch, a in panel.groupby("arch"):
                mean = _panel_mean(a[a["head"] == -1], ["layer"], "mass").sort_values("layer")
                ax.plot(mean["layer"], mean["mass"], "-o", color=colors[arch], lw=1.8, ms=4)
                heads = a[a["head"] >= 0]
                if not heads.empty:
                    best = heads.groupby(["run", "layer"], as_index=False)["mass"].max()
                    best = best.groupby("layer", as_index=False)["mass"].mean()
                    ax.plot(best["layer"], best["mass"], ":", color=colors[arch], lw=1.6)
    fig.legend(
        handles=[
            Line2D([], [], color=c, lw=2, marker="o", ms=4, label=a) for a, c in colors.items()
        ]
        + [
            Line2D([], [], color="grey", lw=1.8, label="mean over heads\n(Mamba: hidden attn.)"),
            Line2D([], [], color="grey", ls=":", lw=1.6, label="best single head"),
            Line2D([], [], color="grey", ls="--", lw=0.8, label="1/L"),
        ],
        loc="outside right center",
        frameon=False,
    )
    return fig


# state probes --------------------------------------------------------------------------------


def _probe_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(arch, source) pairs present, arch-major in the report's order."""
    present = set(zip(table["arch"], table["source"], strict=True))
    return [(a, s) for a in archs_of(table) for s in SOURCES if (a, s) in present]


def _probe_matrix(panel: pd.DataFrame, index: str, index_values: list, length: int) -> np.ndarray:
    """(len(index_values), length + 1): token accuracy per context position, then the
    query-position accuracy in the last column."""
    token = _panel_mean(panel[panel["label"] == "token"], [index, "position"], "accuracy")
    query = _panel_mean(panel[panel["label"] == "query_position"], [index], "accuracy")
    grid = token.pivot(index=index, columns="position", values="accuracy")
    grid = grid.reindex(index=index_values, columns=range(length))
    q = query.set_index(index)["accuracy"].reindex(index_values)
    return np.column_stack([grid.to_numpy(float), q.to_numpy(float)])


def _probe_mesh(ax, panel: pd.DataFrame, index: str, index_values: list, length: int):
    """Draw one probe heatmap (``index`` rows x context positions and the query column) on
    ``ax``; returns the mesh (for the colour bar) and the matrix it drew."""
    values = _probe_matrix(panel, index, index_values, length)
    ax.set_facecolor(MISSING)
    mesh = ax.pcolormesh(
        np.arange(length + 2) - 0.5,
        np.arange(len(index_values) + 1) - 0.5,
        values,
        cmap="viridis",
        vmin=0,
        vmax=1,
    )
    return mesh, values


def _chance_text(panel: pd.DataFrame) -> str:
    parts = []
    for label, text in (("token", "token"), ("query_position", "query")):
        c = panel[panel["label"] == label]["chance"]
        if not c.empty:
            parts.append(f"{text} {c.mean():.2f}")
    return "chance " + ", ".join(parts)


def _position_axis(ax, length: int) -> None:
    """x axis of the probe heatmaps: context positions, then the query column ``q``."""
    ticks = sorted(set(MaxNLocator(integer=True, nbins=8).tick_values(0, length - 1)))
    ticks = [int(t) for t in ticks if 0 <= t < length]
    ax.set_xticks([*ticks, length], [*map(str, ticks), "q"])
    ax.axvline(length - 0.5, color="white", lw=2.5)
    ax.set_xlabel("context position · q = query")


@styled
def state_probe_layers(table: pd.DataFrame, length: int) -> Figure:
    """Held-out accuracy of linear probes per layer (y) and context position (x): can the
    token at that position (or, column ``q``, the queried position) be read off the
    representation? Columns: arch x source (the residual stream at the prediction position;
    Mamba also its SSM state after the context); rows: variants. Scale 0-1."""
    t = table[table["length"] == length]
    if t.empty:
        return message_figure(f"L = {length}: no state-probe results.")
    columns, variants = _probe_columns(t), variants_of(t)
    n_layers = t["layer"].nunique()
    size = (max(2.9, 0.17 * (length + 1) + 1.3), max(2.3, 0.3 * n_layers + 1.3))
    fig, axes = _grid(
        variants, columns, size, f"Linear probes: what each layer holds, L = {length}"
    )
    mesh = None
    for i, variant in enumerate(variants):
        for j, (arch, source) in enumerate(columns):
            ax = axes[i, j]
            panel = t[(t["variant"] == variant) & (t["arch"] == arch) & (t["source"] == source)]
            if panel.empty:
                _blank(ax, "no data")
                continue
            layers = sorted(int(x) for x in panel["layer"].unique())
            mesh, values = _probe_mesh(ax, panel, "layer", layers, length)
            _annotate(ax, values, limit=40)
            ax.set_yticks(range(len(layers)), [layer_label(x) for x in layers])
            ax.set_ylabel("layer")
            _position_axis(ax, length)
            ax.set_title(
                f"{arch} · {variant} · {SOURCE_TEXT[source]}\n{_about(panel)}; "
                f"{_chance_text(panel)}",
                fontsize=9,
            )
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="held-out probe accuracy", shrink=0.85)
    return fig


@styled
def state_probe_steps(table: pd.DataFrame, length: int) -> Figure:
    """Probe accuracy at the last layer of each source across training: checkpoint step (y)
    x context position (x, ``q`` the queried position). Needs results at several steps
    (``vlab inspect --checkpoints all``). Columns: arch x source; rows: variants."""
    t = table[table["length"] == length]
    if t.empty:
        return message_figure(f"L = {length}: no state-probe results.")
    last = t.groupby(["run", "source"])["layer"].transform("max")
    t = t[t["layer"] == last]
    columns, variants = _probe_columns(t), variants_of(t)
    n_steps = max(t.groupby(["arch", "variant"])["step"].nunique())
    size = (max(2.9, 0.17 * (length + 1) + 1.3), max(2.3, 0.22 * n_steps + 1.3))
    fig, axes = _grid(
        variants, columns, size, f"Linear probes at the last layer across training, L = {length}"
    )
    mesh = None
    for i, variant in enumerate(variants):
        for j, (arch, source) in enumerate(columns):
            ax = axes[i, j]
            panel = t[(t["variant"] == variant) & (t["arch"] == arch) & (t["source"] == source)]
            if panel.empty:
                _blank(ax, "no data")
                continue
            steps = sorted(int(s) for s in panel["step"].unique())
            mesh, _ = _probe_mesh(ax, panel, "step", steps, length)
            ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round())
            ax.set_yticks(ticks, [f"{steps[int(k)]:,}" for k in ticks])
            ax.set_ylabel("checkpoint step")
            _position_axis(ax, length)
            layer = layer_label(int(panel["layer"].max()))
            runs = panel["run"].nunique()
            about = f"mean of {runs} runs" if runs > 1 else f"{len(steps)} checkpoints"
            ax.set_title(
                f"{arch} · {variant} · {SOURCE_TEXT[source]}\nlayer {layer}; {about}", fontsize=9
            )
    if mesh is not None:
        fig.colorbar(mesh, ax=axes, label="held-out probe accuracy", shrink=0.85)
    return fig


# activation patching -------------------------------------------------------------------------


def _patching_layer_label(layer: int, site: str, n_blocks: int | None) -> str:
    if site == "resid_pre" and n_blocks is not None and layer == n_blocks:
        return f"{layer} (out)"
    return str(layer)


def recovery_colors() -> tuple[ListedColormap, Normalize]:
    """A linear scale over :data:`RECOVERY_RANGE` with white at 0: the part of a diverging
    map symmetric about 0 that the range covers, so -0.2 is as pale as +0.2 (a
    two-slope norm would paint a small negative as dark as full recovery)."""
    lo, hi = RECOVERY_RANGE
    top = max(abs(lo), abs(hi))
    full = colormaps["RdBu_r"]
    part = full(np.linspace((lo + top) / (2 * top), (hi + top) / (2 * top), 256))
    cmap = ListedColormap(part).with_extremes(under=full(0.2), over=full(1.0))
    return cmap, Normalize(lo, hi)


def _absent(of_arch: pd.DataFrame, site: str) -> str:
    """Why an arch's panel of ``site`` is empty: it has no SSM, or its table predates the
    site (patching version 1 had no conv window sites)."""
    if site == "resid_pre" or of_arch.empty:
        return "no data"
    if not (of_arch["site"] == "ssm_state").any():
        return "no recurrent state"
    return "not in its table (inspected by an older vlab)"


@styled
def patching_heatmaps(table: pd.DataFrame, length: int, corruption: str) -> Figure:
    """Recovery of the clean answer when one clean activation is patched into the corrupted
    run: layer (y) x sequence position (x, labelled with the token there). 0 = as corrupted,
    1 = as clean; diverging scale centred at 0. Columns: archs; rows: variant x site (the
    residual stream entering each block, then, for SSM blocks, their state, conv window and
    both after each position; the sites a table has: older tables have no window sites)."""
    t = table[(table["length"] == length) & (table["corruption"] == corruption)]
    if t.empty:
        return message_figure(f"L = {length}: no patching results for corruption {corruption!r}.")
    archs, variants = archs_of(t), variants_of(t)
    sites = [s for s in SITES if (t["site"] == s).any()]
    rows = [(v, s) for v in variants for s in sites]
    n_pos = int(t["position"].max()) + 1
    n_layers = t["layer"].nunique()
    size = (max(3.0, 0.2 * n_pos + 1.3), max(2.2, 0.22 * n_layers + 1.4))
    fig, axes = _grid(
        rows,
        archs,
        size,
        f"Activation patching, corruption {corruption!r}, L = {length}: "
        "recovery of the clean answer",
    )
    cmap, norm = recovery_colors()
    mesh = None
    for i, (variant, site) in enumerate(rows):
        for j, arch in enumerate(archs):
            ax = axes[i, j]
            of_arch = t[(t["variant"] == variant) & (t["arch"] == arch)]
            panel = of_arch[of_arch["site"] == site]
            if panel.empty:
                _blank(ax, f"{arch} · {variant}: {_absent(of_arch, site)}")
                continue
            resid = of_arch[of_arch["site"] == "resid_pre"]
            n_blocks = int(resid["layer"].max()) if not resid.empty else None
            layers = sorted(int(x) for x in panel["layer"].unique())
            positions = range(int(panel["position"].max()) + 1)
            m = _panel_mean(panel, ["layer", "position"], "recovery")
            grid = m.pivot(index="layer", columns="position", values="recovery")
            values = grid.reindex(index=layers, columns=positions).to_numpy(float)
            tokens = panel.drop_duplicates("position").set_index("position")["token"]
            ax.set_facecolor(MISSING)
            mesh = ax.pcolormesh(
                np.arange(len(positions) + 1) - 0.5,
                np.arange(len(layers) + 1) - 0.5,
                values,
                cmap=cmap,
                norm=norm,
            )
            _annotate(ax, values, limit=60)
            labels = [str(tokens.get(p, p)) for p in positions]
            ax.set_xticks(list(positions), labels, rotation=90, fontsize=7 if n_pos > 12 else 8)
            ax.set_yticks(
                range(len(layers)), [_patching_layer_label(x, site, n_blocks) for x in layers]
            )
            ax.set_ylabel("block (input to)" if site == "resid_pre" else "block")
            ax.set_title(f"{arch} · {variant} · {SITE_TEXT[site]}\n{_about(panel)}", fontsize=9)
    if mesh is not None:
        fig.colorbar(
            mesh, ax=axes, label="recovery (0 corrupted, 1 clean)", shrink=0.85, extend="both"
        )
    return fig


# state or conv window ---------------------------------------------------------------------------


def has_window_sites(table: pd.DataFrame) -> bool:
    """Whether a patching table has the conv window sites (``vlab inspect`` since patching
    version 2); False for an older sweep's, which the report then says how to redo."""
    return bool(table["site"].isin(CARRIED[1:]).any())


def carry_position(tokens: pd.Series, corruption: str) -> int | None:
    """The last sequence index where clean and corrupted inputs differ, from the ``token``
    labels (by position) of a patching table: the query for ``other_query``, else (``moved``)
    the last context token. Everything after it agrees, so an SSM block passes all it read of
    the difference on through its state and conv window there. None when the labels lack it."""
    if corruption == "other_query":
        found = tokens.index[tokens == "query"]
    else:
        found = tokens.index[tokens.astype(str).str.fullmatch(r"ctx\d+")]
    return int(found.max()) if len(found) else None


def state_or_conv_table(table: pd.DataFrame) -> pd.DataFrame:
    """Recovery at :func:`carry_position` per arch, variant, length, corruption and SSM block,
    when the block's state (``ssm_state``), its conv window (``conv_window``) or both
    (``state_and_window``) are patched, averaged over runs: which one carries the answer past
    the last position where the inputs differ. Empty when no table has the window sites."""
    keys = ["arch", "variant", "length", "corruption"]
    columns = [*keys, "layer", "position", "token", *CARRIED]
    t = table[table["site"].isin(CARRIED)]
    if t.empty or not has_window_sites(t):
        return pd.DataFrame(columns=columns)
    parts = []
    for key, group in t.groupby(keys, sort=False):
        tokens = group.drop_duplicates("position").set_index("position")["token"].sort_index()
        at = carry_position(tokens, key[-1])
        if at is None:
            continue
        rows = group[group["position"] == at]
        m = _panel_mean(rows, ["layer", "site"], "recovery")
        wide = m.pivot(index="layer", columns="site", values="recovery").reindex(columns=CARRIED)
        wide = wide.reset_index().assign(position=at, token=str(tokens[at]))
        for k, v in zip(keys, key, strict=True):
            wide[k] = v
        parts.append(wide)
    if not parts:
        return pd.DataFrame(columns=columns)
    out = pd.concat(parts, ignore_index=True)[columns]
    order = {a: i for i, a in enumerate(archs_of(out))}
    out = out.sort_values(
        ["length", "corruption", "arch", "variant", "layer"],
        key=lambda c: c.map(order) if c.name == "arch" else c,
        kind="stable",
    )
    return out.rename_axis(columns=None).reset_index(drop=True)


@styled
def state_or_conv(table: pd.DataFrame, length: int, corruption: str) -> Figure:
    """What carries the answer past the last position where clean and corrupted inputs
    differ (:func:`carry_position`), per SSM block: recovery when the clean state alone,
    the clean conv window alone, or both are patched there. Columns: archs with SSM blocks;
    rows: variants. Both at 1 with the state low: the conv window carries it; the state near
    both: the state does. One-block models (or all blocks at once) restore exactly with
    both; here each block is patched alone, so a block's bars say what passes through it."""
    t = table[(table["length"] == length) & (table["corruption"] == corruption)]
    summary = state_or_conv_table(t)
    if summary.empty:
        return message_figure(
            f"L = {length}, corruption {corruption!r}: no state and conv window patching "
            "results (SSM arms, patching version 2)."
        )
    archs, variants = archs_of(summary), variants_of(summary)
    n_layers = summary.groupby(["arch", "variant"])["layer"].nunique().max()
    size = (max(3.0, 0.75 * n_layers + 1.4), 2.6)
    fig, axes = _grid(
        variants,
        archs,
        size,
        f"State or conv window? Corruption {corruption!r}, L = {length}: recovery\nwith one "
        "SSM block's clean state, conv window or both after the last differing input",
    )
    width = 0.8 / len(CARRIED)
    lo, hi = RECOVERY_RANGE
    for i, variant in enumerate(variants):
        for j, arch in enumerate(archs):
            ax = axes[i, j]
            panel = summary[(summary["arch"] == arch) & (summary["variant"] == variant)]
            if panel.empty:
                _blank(ax, f"{arch} · {variant}: no data")
                continue
            layers = panel["layer"].astype(int).tolist()
            x = np.arange(len(layers))
            for k, site in enumerate(CARRIED):
                values = panel[site].to_numpy(float)
                ax.bar(
                    x + (k - 1) * width,
                    np.clip(np.nan_to_num(values, nan=0.0), lo, hi),
                    width,
                    color=CARRIED_COLORS[site],
                    label=SITE_TEXT[site],
                )
                for xi, v in zip(x + (k - 1) * width, values, strict=True):
                    shown = f"{v:.2f}" if np.isfinite(v) else "n/a"
                    top = min(max(v, 0.0), hi) if np.isfinite(v) else 0.0
                    ax.text(xi, top + 0.02, shown, ha="center", va="bottom", fontsize=6)
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
            ax.axhline(0.0, color="black", linewidth=0.6)
            ax.set_ylim(lo, hi + 0.2)  # room for the values of clipped bars
            ax.set_xticks(x, [str(layer) for layer in layers])
            ax.set_xlabel("block")
            ax.set_ylabel("recovery")
            runs = t[(t["arch"] == arch) & (t["variant"] == variant)]
            token, position = panel["token"].iloc[0], int(panel["position"].iloc[0])
            ax.set_title(
                f"{arch} · {variant} · after {token} (position {position})\n{_about(runs)}",
                fontsize=9,
            )
    handles = [
        Line2D([], [], color=CARRIED_COLORS[s], linewidth=6, label=SITE_TEXT[s]) for s in CARRIED
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(CARRIED), frameon=False)
    return fig
