"""The VLM report's tables: SHAKEUP's benchmark tables (Tables 1 and 2), the relative gain of
task-aware over task-agnostic ordering (Table 11), grounding by where the target lies, and the
notes a reader needs first; pure functions of the tidy tables of :mod:`vlab.analysis.vlm`.

Intervals over seeds are Student t intervals of the mean (:func:`vlab.analysis.stats.t_mean_ci`):
a VLM sweep has a few seeds per arm, too few for a bootstrap to cover its own mean honestly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from vlab.analysis.stats import t_mean_ci
from vlab.analysis.vlm import (
    GROUP_TITLES,
    GROUPS,
    ORDERINGS,
    OTHER,
    SCALE,
    VLMSweep,
    arch_order,
    benchmark,
    column_group,
    column_label,
    column_order,
    group_sum_key,
    ordering_rank,
)

# runs and scores ----------------------------------------------------------------------------


def run_overview(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run as the reader wants it: identity, state, phase and progress, benchmarks."""
    out = runs.copy()
    out["progress"] = [
        f"{s if s is not None and s is not pd.NA else '–'}/{n if n is not pd.NA else '?'}"
        for s, n in zip(out["step"], out["steps"], strict=True)
    ]
    cols = ["name", "arch", "ordering", "setting", "seed", "state", "stage", "progress"]
    return out[[*cols, "n_benchmarks", "reason"]].rename(
        columns={"progress": "step", "n_benchmarks": "benchmarks"}
    )


def state_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """How many runs are in each state, per arch and ordering."""
    keys = runs.assign(arch=runs["arch"].fillna("?"))
    counts = keys.pivot_table(
        index=["arch", "ordering"], columns="state", values="name", aggfunc="count", fill_value=0
    )
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index().rename_axis(columns=None)


def run_scores(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Wide scores (x100) of the evaluated runs: index ``run``, one column per benchmark key in
    table order with each group's sum after its members (``sum:coarse`` ...). A run missing a
    benchmark of its group that other runs have gets NaN for that group's sum: a sum over fewer
    benchmarks would not compare."""
    if scores.empty:
        return pd.DataFrame(index=pd.Index([], name="run"))
    wide = scores.pivot_table(index="run", columns="benchmark", values="score", aggfunc="first")
    wide = wide * SCALE
    for g in GROUPS:
        members = [k for k in wide.columns if benchmark(k).group == g]
        if members:
            wide[group_sum_key(g)] = wide[members].sum(axis=1, min_count=len(members))
    order = [n for n in runs["name"] if n in wide.index]
    return wide.loc[order, column_order(wide.columns)].rename_axis(columns=None)


def benchmark_summary(
    runs: pd.DataFrame, scores: pd.DataFrame, confidence: float = 0.95
) -> pd.DataFrame:
    """SHAKEUP's Tables 1 and 2 in long form: per (arch, ordering, setting) and benchmark (group
    sums included), the mean over seeds of the x100 scores, a Student t interval at
    ``confidence`` (NaN with one seed) and the per-seed ``values`` (tuple, in run order).

    Columns: arch, ordering, setting, benchmark, label, group, n, mean, lo, hi, values.
    """
    cols = ["arch", "ordering", "setting", "benchmark", "label", "group", "n", "mean", "lo", "hi"]
    wide = run_scores(runs, scores)
    if wide.empty:
        return pd.DataFrame(columns=[*cols, "values"])
    rows = [
        [arch, ordering, setting, key, column_label(key), column_group(key), *stats]
        for (arch, ordering, setting), key, stats in seed_means(runs, wide, confidence)
    ]
    return pd.DataFrame(rows, columns=[*cols, "values"])


def seed_means(runs: pd.DataFrame, wide: pd.DataFrame, confidence: float = 0.95):
    """Per (arch, ordering, setting) of ``runs`` (report order) and column of ``wide`` (index
    run, a column per benchmark): ((arch, ordering, setting), column, (n, mean, lo, hi,
    values)), the mean over the seeds that scored it with a Student t interval at
    ``confidence`` (NaN with one seed) and the per-seed values (tuple, in run order). What the
    held-out tables and the paper's tables average alike."""
    meta = runs.set_index("name").loc[wide.index, ["arch", "ordering", "setting"]]
    for group, names in _groups(meta):
        for key in wide.columns:
            values = wide.loc[names, key].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            mean, lo, hi = t_mean_ci(finite, confidence)
            yield group, key, (finite.size, mean, lo, hi, tuple(float(v) for v in finite))


def _groups(meta: pd.DataFrame):
    """((arch, ordering, setting), [run names]) in report order (arms, then orderings)."""
    keyed = meta.assign(arch=meta["arch"].fillna("?"))
    archs = arch_order(keyed["arch"].unique())
    groups = keyed.groupby(["arch", "ordering", "setting"], sort=False).groups
    order = sorted(
        groups,
        key=lambda k: (
            archs.index(k[0]) if k[0] in archs else len(archs),
            ordering_rank(k[1]),
            k[2],
        ),
    )
    return [(k, list(groups[k])) for k in order]


def interval_text(mean: float, lo: float, hi: float, fmt: str = "{:.1f}") -> str:
    """A mean and its interval as the tables print them: "62.5 [41.2, 83.8]", the mean alone
    when the interval is NaN (one seed), "–" when the mean is."""
    if not math.isfinite(mean):
        return "–"
    text = fmt.format(mean)
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
    return text


def _held_out_header(key: str) -> tuple[str, str]:
    """(group title, label) of a held-out benchmark column."""
    return GROUP_TITLES[column_group(key)], column_label(key)


def wide_display(
    long: pd.DataFrame, index: list[str], cell, order=column_order, header=_held_out_header
) -> pd.DataFrame:
    """``long`` (one row per index x benchmark) as a table with two header rows, ``header(key)``
    = (group, label) over each column (the held-out groups by default), columns in
    ``order(keys)`` (:func:`column_order` by default); ``cell(row)`` formats a cell, "–" where
    a row has no score."""
    keys = order(long["benchmark"].unique())
    columns = pd.MultiIndex.from_tuples([("", i) for i in index] + [header(k) for k in keys])
    rows = []
    for ident, g in long.groupby(index, sort=False):
        ident = ident if isinstance(ident, tuple) else (ident,)
        by_key = {r["benchmark"]: cell(r) for _, r in g.iterrows()}
        rows.append([*ident, *(by_key.get(k, "–") for k in keys)])
    return pd.DataFrame(rows, columns=columns)


def benchmark_table(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`benchmark_summary` as the papers print it: one row per (arch, ordering, setting)
    with its number of seeds, one column per benchmark under its group, each group's sum after
    it; cells "mean [t interval]" (x100), the mean alone with one seed."""
    if summary.empty:
        return pd.DataFrame()
    long = summary.assign(
        seeds=summary.groupby(["arch", "ordering", "setting"])["n"].transform("max")
    )
    index = ["arch", "ordering", "setting", "seeds"]
    if (long["setting"] == "").all():
        index.remove("setting")
    return wide_display(long, index, lambda r: interval_text(r["mean"], r["lo"], r["hi"]))


def benchmark_key_table(scores: pd.DataFrame, metrics: dict[str, str]) -> pd.DataFrame:
    """The benchmarks of the tables: column label, group, the results.json key and metric."""
    keys = column_order(scores["benchmark"].unique()) if not scores.empty else []
    rows = []
    for k in keys:
        b = benchmark(k)
        task = k.rpartition("/")[2]
        rows.append([b.label, GROUP_TITLES[b.group], k, metrics.get(task, "?")])
    return pd.DataFrame(rows, columns=["column", "group", "benchmark (results.json)", "metric"])


def relative_gains(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """SHAKEUP's Table 11 per pair on the held-out scores: ``(aware - agnostic) / agnostic``
    per benchmark (group sums included) for each task-aware run and its task-agnostic twin
    (:func:`paired_gains`)."""
    return paired_gains(
        runs, run_scores(runs, scores), lambda k: (column_label(k), column_group(k))
    )


def paired_gains(
    runs: pd.DataFrame, wide: pd.DataFrame, describe: Callable[[str], tuple[str, str]]
) -> pd.DataFrame:
    """``(aware - agnostic) / agnostic`` per column of ``wide`` (index run, one column per
    benchmark or group sum) for each task-aware run and its task-agnostic twin; ``describe``
    gives a column's (label, group). Apart from the tables so that the held-out tables and the
    paper's (:mod:`vlab.analysis.vlm_paper`) pair runs the one way.

    Twins have the same arch, setting and seeds (``runs``' columns): paired, the gain is per
    seed. An (arch, setting) whose orderings share no seeds is compared through its means
    (``paired`` False, ``seed`` "(means)"). ``gain`` is NaN where the agnostic score is 0 or
    missing (a relative change from nothing is undefined). Columns: arch, setting, seed,
    benchmark, label, group, agnostic, aware, gain, paired.
    """
    cols = ["arch", "setting", "seed", "benchmark", "label", "group", "agnostic", "aware"]
    cols += ["gain", "paired"]
    if wide.empty:
        return pd.DataFrame(columns=cols)
    meta = runs.set_index("name").loc[wide.index].assign(arch=lambda d: d["arch"].fillna("?"))
    rows = []
    archs = arch_order(meta["arch"].unique())
    for (arch, setting), g in meta.groupby(["arch", "setting"], sort=False):
        sides = {o: g[g["ordering"] == o] for o in ORDERINGS}
        if sides["task_agnostic"].empty or sides["task_aware"].empty:
            continue
        ag = sides["task_agnostic"].reset_index().drop_duplicates("seed").set_index("seed")
        aw = sides["task_aware"].reset_index().drop_duplicates("seed").set_index("seed")
        common = [s for s in aw.index if s in ag.index]
        if common:
            pairs = [(s, wide.loc[ag.loc[s, "name"]], wide.loc[aw.loc[s, "name"]]) for s in common]
            paired = True
        else:
            means = (wide.loc[ag["name"]].mean(), wide.loc[aw["name"]].mean())
            pairs, paired = [("(means)", *means)], False
        for seed, a, b in pairs:
            for key in wide.columns:
                base, new = float(a[key]), float(b[key])
                gain = (new - base) / base if math.isfinite(base) and base != 0 else math.nan
                row = [arch, setting, seed, key, *describe(key), base, new]
                rows.append([*row, gain, paired])
    out = pd.DataFrame(rows, columns=cols)
    rank = {a: i for i, a in enumerate(archs)}
    return out.sort_values("arch", key=lambda s: s.map(rank), kind="stable", ignore_index=True)


def gain_summary(gains: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (arch, setting, benchmark): the mean relative gain over pairs (seeds), its Student t
    interval at ``confidence`` (NaN with one pair), the number of ``pairs``, how many had a
    defined gain (``n``) and how many an agnostic score of 0 or none (``undefined``).
    Columns: arch, setting, benchmark, label, group, pairs, n, undefined, mean, lo, hi,
    paired."""
    cols = ["arch", "setting", "benchmark", "label", "group", "pairs", "n", "undefined"]
    cols += ["mean", "lo", "hi", "paired"]
    rows = []
    for (arch, setting, key), g in gains.groupby(["arch", "setting", "benchmark"], sort=False):
        values = g["gain"].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        mean, lo, hi = t_mean_ci(finite, confidence)
        label, group = g["label"].iloc[0], g["group"].iloc[0]
        info = [arch, setting, key, label, group, len(g), finite.size]
        rows.append([*info, int(values.size - finite.size), mean, lo, hi, bool(g["paired"].all())])
    return pd.DataFrame(rows, columns=cols)


def gain_cells(summary: pd.DataFrame):
    """What every rendering of a :func:`gain_summary` as Table 11 shares: the long table with
    its "pairs" column (seed pairs, "means" where the orderings share no seed), the row index
    (arch, setting, pairs) and the cell text "+12.3% [t interval]" ("undefined" where every
    task-agnostic score was 0)."""
    long = summary.assign(
        pairs=[
            str(n) if p else "means"
            for n, p in zip(summary["pairs"], summary["paired"], strict=True)
        ]
    )
    index = ["arch", "setting", "pairs"]
    if (long["setting"] == "").all():
        index.remove("setting")

    def cell(r) -> str:
        if r["n"] == 0:
            return "undefined" if r["undefined"] else "–"
        return interval_text(100 * r["mean"], 100 * r["lo"], 100 * r["hi"], "{:+.1f}%")

    return long, index, cell


def gain_table(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`gain_summary` as SHAKEUP's Table 11 (:func:`gain_cells`): one row per (arch,
    setting), one column per benchmark."""
    if summary.empty:
        return pd.DataFrame()
    return wide_display(*gain_cells(summary))


# grounding by location ----------------------------------------------------------------------


def location_cells(
    runs: pd.DataFrame, locations: pd.DataFrame, task: str = "grounding"
) -> pd.DataFrame:
    """Mean score of ``task``'s answers per target patch, pooled over the seeds (and the
    examples) of each (arch, ordering, setting); only runs of the group's most common grid.

    Columns: arch, ordering, setting, row, col, patch, n (examples), accuracy, grid_rows,
    grid_cols. Cells no target fell in have no row.
    """
    cols = ["arch", "ordering", "setting", "row", "col", "patch", "n", "accuracy"]
    cols += ["grid_rows", "grid_cols"]
    loc = locations[locations["task"] == task]
    if loc.empty:
        return pd.DataFrame(columns=cols)
    meta = runs.set_index("name")[["arch", "ordering", "setting"]]
    loc = loc.join(meta, on="run").assign(arch=lambda d: d["arch"].fillna("?"))
    out = []
    for key, names in _groups(meta.loc[loc["run"].unique()]):
        g = loc[loc["run"].isin(names)]
        grid = Counter(zip(g["grid_rows"], g["grid_cols"], strict=True)).most_common(1)[0][0]
        g = g[(g["grid_rows"] == grid[0]) & (g["grid_cols"] == grid[1])]
        agg = g.groupby(["row", "col", "patch"]).agg(
            n=("score", "size"), accuracy=("score", "mean")
        )
        for (r, c, p), a in agg.iterrows():
            out.append([*key, int(r), int(c), int(p), int(a["n"]), float(a["accuracy"]), *grid])
    return pd.DataFrame(out, columns=cols)


def location_by_row(cells: pd.DataFrame) -> pd.DataFrame:
    """:func:`location_cells` per patch row (the image's token sequence runs row by row, so
    the row is the target's coarse position in it): columns arch, ordering, setting, row, n,
    accuracy (the example-weighted mean over the row's cells)."""
    cols = ["arch", "ordering", "setting", "row", "n", "accuracy"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    hits = cells.assign(hits=cells["accuracy"] * cells["n"])
    g = hits.groupby(["arch", "ordering", "setting", "row"], sort=False)[["n", "hits"]].sum()
    g["accuracy"] = g["hits"] / g["n"]
    return g.reset_index()[cols]


# notes --------------------------------------------------------------------------------------


def vlm_notes(sweep: VLMSweep) -> list[str]:
    """What a reader must know before reading the tables: runs without results, runs whose
    results lack a benchmark the others have, benchmarks in ``other``, missing orderings,
    evaluated runs without per-example predictions. One line each."""
    runs, notes = sweep.runs, []
    waiting = runs[~runs["evaluated"]]
    if len(waiting) == len(runs):
        notes.append(
            "No run has held-out results yet (RUN/eval/heldout/results.json): the benchmark "
            "tables, the ordering gain and the location figures appear once a run is done; "
            "training curves below show what the stages logged so far."
        )
    elif not waiting.empty:
        listed = ", ".join(
            f"{r['name']} ({r['state']}" + (f", {r['stage']}" if r["stage"] else "") + ")"
            for _, r in waiting.iterrows()
        )
        notes.append(
            f"{len(waiting)} run(s) without held-out results, left out of the tables: {listed}"
        )
    if not sweep.scores.empty:
        have = sweep.scores.groupby("run")["benchmark"].apply(set)
        every = set().union(*have)
        for run, keys in have.items():
            if keys != every:
                missing = ", ".join(sorted(every - keys))
                notes.append(f"{run}: no score for {missing}; its group sums are left blank")
        other = sorted(sweep.scores.loc[sweep.scores["group"] == OTHER, "benchmark"].unique())
        if other:
            notes.append(
                "benchmarks vlab does not group (shown under 'other', summed apart): "
                + ", ".join(other)
            )
        evaluated = runs[runs["evaluated"]]
        for (arch, setting), g in evaluated.groupby([evaluated["arch"].fillna("?"), "setting"]):
            have_orders = set(g["ordering"])
            if len(have_orders) == 1:
                where = f"{arch}" + (f" ({setting})" if setting else "")
                notes.append(
                    f"{where}: only {next(iter(have_orders))} runs are evaluated; no ordering gain"
                )
        no_pred = [
            n
            for n, p in zip(evaluated["name"], evaluated["path"], strict=True)
            if not (Path(p) / "eval" / "heldout" / "predictions.jsonl").is_file()
        ]
        if no_pred:
            notes.append(
                "no per-example predictions (evaluated before vlab wrote predictions.jsonl; "
                "delete RUN/eval/heldout and `vlab sweep resume` to evaluate again): "
                + ", ".join(no_pred)
            )
    return notes
