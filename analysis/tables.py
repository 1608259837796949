"""Derived tables: what the figures plot and the numbers printed next to them.

Inputs are the tidy tables of :func:`vlab.analysis.load.load_sweep`. A *group* is one cell of
the comparison: (length, variant, arch); architectures are compared within (length, variant),
never across, because a suffix and a prefix task of different lengths are different problems.

Runs that stopped early because they reached the accuracy threshold keep their last value for
the rest of their budget when runs are averaged (their accuracy was at least the threshold when
they stopped); a run that is still running or failed contributes only up to its last evaluation.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from vlab.analysis.stats import bootstrap_mean_ci, kaplan_meier, km_median, logrank_test

GROUP = ["length", "variant", "arch"]
PANEL = ["length", "variant"]
VARIANT_ORDER = {"suffix": 0, "prefix": 1}


def plottable(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that have a length, variant and arch (a run without them cannot be placed)."""
    return runs.dropna(subset=GROUP)


def panels(runs: pd.DataFrame) -> tuple[list[int], list[str]]:
    """Sorted lengths and variants (suffix before prefix) present among plottable runs."""
    r = plottable(runs)
    lengths = sorted(int(x) for x in r["length"].unique())
    variants = sorted(r["variant"].unique(), key=lambda v: (VARIANT_ORDER.get(v, 9), v))
    return lengths, variants


def stopped_early(runs: pd.DataFrame) -> pd.Series:
    """Per run (indexed by name): finished before its budget, i.e. stopped at the threshold."""
    r = runs.set_index("name")
    return (r["state"] == "done") & (r["last_step"] < r["budget"]).fillna(False)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; all-NaN slices give NaN without a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def on_grid(x: np.ndarray, y: np.ndarray, grid: np.ndarray, until: float) -> np.ndarray:
    """Read observations ``y`` (n, ...) made at ascending ``x`` (n,) on ``grid`` (m,).

    Each grid point takes the last observation at or before it (no interpolation); NaN before
    the first and after ``until`` (the last observation, or the end of the budget for a run
    whose last value stands for the rest of it). Returns shape (m, ...).
    """
    grid = np.asarray(grid)
    idx = np.searchsorted(x, grid, side="right") - 1
    out = np.asarray(y, dtype=float)[np.clip(idx, 0, None)]
    out[(idx < 0) | (grid > until)] = np.nan
    return out


def _until(x: np.ndarray, carry: bool, end: float) -> float:
    """Where a run's values stop counting: its last observation, or ``end`` if carried."""
    return max(end, float(x[-1])) if carry else float(x[-1])


def mean_curves(runs: pd.DataFrame, evaluations: pd.DataFrame) -> pd.DataFrame:
    """Mean held-out accuracy per group on the union of its runs' training fractions.

    Columns: length, variant, arch, fraction, mean, n (runs contributing), n_runs (runs with
    evaluations in the group). ``n < n_runs`` marks points where some runs have not got there
    (running, failed), which the plots draw differently.
    """
    carry = stopped_early(runs)
    ev = evaluations.dropna(subset=["fraction", "accuracy"])
    meta = plottable(runs).set_index("name")[GROUP]
    ev = ev.join(meta, on="run", how="inner")
    out = []
    for key, g in ev.groupby(GROUP):
        grid = np.unique(g["fraction"].to_numpy())
        curves = []
        for name, r in g.sort_values("step").groupby("run"):
            x = r["fraction"].to_numpy()
            curves.append(on_grid(x, r["accuracy"].to_numpy(), grid, _until(x, carry[name], 1.0)))
        stack = np.vstack(curves)
        n = np.sum(np.isfinite(stack), axis=0)
        mean = _nanmean(stack, axis=0)
        out.append(
            pd.DataFrame({"fraction": grid, "mean": mean, "n": n, "n_runs": len(curves)}).assign(
                **dict(zip(GROUP, key, strict=True))
            )
        )
    cols = GROUP + ["fraction", "mean", "n", "n_runs"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def curve_table(
    curves: pd.DataFrame, fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
) -> pd.DataFrame:
    """Mean accuracy of :func:`mean_curves` at a few fractions of training, one row per group.

    Each value is the mean at the last evaluation at or before the fraction, with the number
    of runs behind it when not all runs of the group are there (``0.81 (2/3 runs)``).
    """
    rows = []
    for key, g in curves.groupby(GROUP):
        row = dict(zip(GROUP, key, strict=True))
        for f in fractions:
            at = g[g["fraction"] <= f + 1e-9]
            if at.empty:
                row[f"at {f:.0%}"] = "–"
                continue
            last = at.iloc[-1]
            partial = "" if last["n"] == last["n_runs"] else f" ({last['n']}/{last['n_runs']} runs)"
            row[f"at {f:.0%}"] = f"{last['mean']:.3f}{partial}"
        rows.append(row)
    return pd.DataFrame(rows)


def mean_heatmap(
    runs: pd.DataFrame,
    per_position: pd.DataFrame,
    names: list[str],
    grid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean per-position accuracy over the runs ``names`` (one group, one length).

    Returns (steps (m,), accuracy (m, L), runs behind each row (m,)) on ``grid`` (default: the
    union of their evaluation steps; pass one grid to several groups to compare them row by
    row). Runs stopped at the threshold count with their last values up to their budget, as
    in :func:`mean_curves`; cells no run has reached are NaN.
    """
    carry = stopped_early(runs)
    budget = runs.set_index("name")["budget"]
    pp = per_position[per_position["run"].isin(names)]
    if pp.empty:
        return np.zeros(0), np.zeros((0, 0)), np.zeros(0, int)
    grid = np.unique(pp["step"].to_numpy()) if grid is None else np.asarray(grid)
    mats = []
    for name, r in pp.groupby("run"):
        wide = r.pivot_table(index="step", columns="position", values="accuracy", dropna=False)
        x = wide.index.to_numpy()
        end = budget[name] if not pd.isna(budget[name]) else x[-1]
        mats.append(on_grid(x, wide.to_numpy(), grid, _until(x, carry[name], end)))
    stack = np.stack(mats)
    counts = np.isfinite(stack).any(axis=2).sum(axis=0)
    return grid, _nanmean(stack, axis=0), counts


def check_threshold(threshold: object) -> None:
    """A threshold override must be None or a number in [0, 1] (say so, not a TypeError)."""
    ok = threshold is None or (
        isinstance(threshold, int | float) and not isinstance(threshold, bool)
    )
    if not ok or (threshold is not None and not 0 <= threshold <= 1):
        raise ValueError(f"threshold must be a number in [0, 1] or None, got {threshold!r}")


def first_step_at(steps: np.ndarray, acc: np.ndarray, threshold: float) -> int | None:
    """First step whose accuracy is >= ``threshold`` (the engine's rule), None if none."""
    hit = np.nonzero(np.asarray(acc) >= threshold)[0]
    return int(steps[hit[0]]) if hit.size else None


def time_to_threshold(
    runs: pd.DataFrame, evaluations: pd.DataFrame, threshold: float | None = None
) -> pd.DataFrame:
    """One row per run that has started: ``time`` (training step), ``examples`` and ``event``.

    ``event`` True: the run's held-out accuracy reached the threshold at step ``time``;
    False: censored at its last evaluated step (budget spent, running, failed). ``examples`` is
    the number of training examples seen at that step (the paper's measure of how much training
    a model needs): the evaluation's ``examples_seen``, else step x batch size, else NaN.
    ``threshold`` None uses each run's own ``train.threshold`` (as recorded in status.json when
    available). A run that stopped at its own, lower threshold is censored there for a higher
    override. ``lr``, ``init_seed`` and ``seed`` identify the run within its group.
    """
    check_threshold(threshold)
    ev = {name: g.sort_values("step") for name, g in evaluations.groupby("run")}
    rows = []
    for r in plottable(runs).itertuples(index=False):
        g = ev.get(r.name)
        if g is None or g.empty:
            continue
        thr = r.threshold if threshold is None else threshold
        steps, acc = g["step"].to_numpy(), g["accuracy"].to_numpy()
        hit = first_step_at(steps, acc, thr) if thr is not None and not pd.isna(thr) else None
        if threshold is None and not pd.isna(r.threshold_step):
            hit = int(r.threshold_step)
        time = hit if hit is not None else int(steps[-1])
        rows.append(
            {
                "run": r.name,
                "length": int(r.length),
                "variant": r.variant,
                "arch": r.arch,
                "lr": r.lr,
                "init_seed": r.init_seed,
                "seed": r.seed,
                "threshold": thr,
                "time": time,
                "examples": _examples_at(g, time, r.batch_size),
                "event": hit is not None,
                "state": r.state,
            }
        )
    cols = ["run", *GROUP, "lr", "init_seed", "seed", "threshold", "time", "examples"]
    return pd.DataFrame(rows, columns=[*cols, "event", "state"])


def _examples_at(evals: pd.DataFrame, step: int, batch_size: object) -> float:
    """Examples seen at ``step``: the evaluation's record, else step x batch size, else NaN."""
    at = evals.loc[evals["step"] == step, "examples_seen"]
    if len(at) and not pd.isna(at.iloc[0]):
        return float(at.iloc[0])
    return float(step * batch_size) if not pd.isna(batch_size) else math.nan


def _fmt_time(t: float) -> str:
    return "not reached" if math.isinf(t) else f"{t:.0f}"


# What a time column counts, for table headings and axis labels.
TIME_UNITS = {"time": "step", "examples": "examples"}


def _finite_times(ttt: pd.DataFrame, time: str) -> pd.DataFrame:
    """Rows whose ``time`` column is known (``examples`` is NaN without a batch size)."""
    if time not in TIME_UNITS:
        raise ValueError(f"time must be one of {sorted(TIME_UNITS)}, got {time!r}")
    return ttt[np.isfinite(ttt[time].astype(float))]


def survival_summary(
    ttt: pd.DataFrame, confidence: float = 0.95, time: str = "time", by: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Per group (and ``by`` columns, e.g. ``("lr",)``): runs, reached, censored, Kaplan-Meier
    median of ``time`` (``"time"``: steps, ``"examples"``: examples seen) with its interval."""
    rows = []
    pct, unit = f"{confidence:.0%}", TIME_UNITS[time]
    keys = [*GROUP, *by]
    for key, g in _finite_times(ttt, time).groupby(keys, dropna=False):
        km = kaplan_meier(g[time], g["event"], confidence)
        med, lo, hi = km_median(km)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "runs": len(g),
                "reached": int(g["event"].sum()),
                "censored": int((~g["event"]).sum()),
                f"median {unit}": _fmt_time(med),
                f"{pct} CI low": _fmt_time(lo),
                f"{pct} CI high": _fmt_time(hi),
            }
        )
    return pd.DataFrame(rows)


def logrank_table(ttt: pd.DataFrame, time: str = "time") -> pd.DataFrame:
    """Per (length, variant): log-rank test of equal time to threshold across architectures,
    with the runs (seeds) and censored runs of each architecture."""
    rows = []
    for key, g in _finite_times(ttt, time).groupby(PANEL):
        res = logrank_test(g[time], g["event"], g["arch"])
        archs = sorted(g["arch"].unique(), key=str)
        oe = ", ".join(
            f"{a} {o:.0f}/{e:.1f}"
            for a, o, e in zip(archs, res.observed, res.expected, strict=True)
        )
        n = g.groupby("arch")["event"].agg(["size", "sum"])
        rows.append(
            {
                **dict(zip(PANEL, key, strict=True)),
                "architectures": " vs ".join(archs),
                "runs": ", ".join(f"{a} {n.loc[a, 'size']}" for a in archs),
                "censored": ", ".join(f"{a} {n.loc[a, 'size'] - n.loc[a, 'sum']}" for a in archs),
                "reached observed/expected": oe,
                "chi2": res.statistic,
                "df": res.df,
                "p": res.p_value,
                "note": ""
                if len(archs) > 1 and res.observed.sum()
                else (
                    "one architecture only" if len(archs) < 2 else "no run reached the threshold"
                ),
            }
        )
    return pd.DataFrame(rows)


def pairwise_logrank_table(ttt: pd.DataFrame, time: str = "time") -> pd.DataFrame:
    """Per (length, variant) and pair of architectures: the log-rank test of the pair alone,
    with Holm's step-down adjustment over the panel's pairs (so a panel of four arms, six
    pairs, does not find differences by testing often). With two architectures the one pair's
    p equals :func:`logrank_table`'s."""
    import itertools

    rows = []
    for key, g in _finite_times(ttt, time).groupby(PANEL):
        archs = sorted(g["arch"].unique(), key=str)
        panel = []
        for a, b in itertools.combinations(archs, 2):
            pair = g[g["arch"].isin([a, b])]
            res = logrank_test(pair[time], pair["event"], pair["arch"])
            panel.append(
                {
                    **dict(zip(PANEL, key, strict=True)),
                    "pair": f"{a} vs {b}",
                    "runs": f"{a} {(pair['arch'] == a).sum()}, {b} {(pair['arch'] == b).sum()}",
                    "chi2": res.statistic,
                    "p": res.p_value,
                }
            )
        for row, adjusted in zip(panel, holm([r["p"] for r in panel]), strict=True):
            row["p (Holm)"] = adjusted
        rows += panel
    return pd.DataFrame(rows, columns=[*PANEL, "pair", "runs", "chi2", "p", "p (Holm)"])


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (NaN stays NaN, not counted)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


# learning-rate selection (the paper's protocol) --------------------------------------------

SELECTION_RULE = (
    "Per (length, variant, architecture) the selected learning rate is the one with the "
    "smallest Kaplan-Meier median {unit} to the threshold over its seeds (a median not reached "
    "counts as infinite); ties, including no learning rate reaching a median, go to the one "
    "with more runs at the threshold, then the higher mean last held-out accuracy, then the "
    "smaller learning rate."
)


def lr_selection(
    ttt: pd.DataFrame, runs: pd.DataFrame, confidence: float = 0.95, time: str = "examples"
) -> pd.DataFrame:
    """One row per (length, variant, arch, lr) with the seeds' Kaplan-Meier median ``time`` to
    threshold (inf: not reached), its interval, the mean last accuracy, and ``selected``: the
    learning rate the paper's protocol keeps for that group (rule: :data:`SELECTION_RULE`).

    Runs still running count with what they have (censored so far), so on a partial sweep the
    choice can change; ``running`` says how many runs of the row are not finished.
    """
    last = runs.set_index("name")["final_accuracy"]
    t = _finite_times(ttt, time)
    rows = []
    for key, g in t.groupby([*GROUP, "lr"], dropna=False):
        med, lo, hi = km_median(kaplan_meier(g[time], g["event"], confidence))
        acc = last.reindex(g["run"]).to_numpy(float)
        rows.append(
            {
                **dict(zip([*GROUP, "lr"], key, strict=True)),
                "runs": len(g),
                "reached": int(g["event"].sum()),
                "censored": int((~g["event"]).sum()),
                "running": int((g["state"] != "done").sum()),
                "median": med,
                "low": lo,
                "high": hi,
                "mean last accuracy": float(_nanmean(acc, axis=0)) if len(acc) else math.nan,
            }
        )
    cols = [*GROUP, "lr", "runs", "reached", "censored", "running", "median", "low", "high"]
    out = pd.DataFrame(rows, columns=[*cols, "mean last accuracy"])
    if out.empty:
        return out.assign(selected=pd.Series(dtype=bool))
    rank = out.assign(
        _acc=out["mean last accuracy"].fillna(-1.0),
        _lr=pd.to_numeric(out["lr"], errors="coerce").fillna(math.inf),
    ).sort_values(["median", "reached", "_acc", "_lr"], ascending=[True, False, False, True])
    best = rank.groupby(GROUP, sort=False).head(1).index
    out["selected"] = out.index.isin(best)
    return out


def selection_table(selection: pd.DataFrame, time: str = "examples") -> pd.DataFrame:
    """:func:`lr_selection` for reading: medians as text, the selected rows marked."""
    unit = TIME_UNITS[time]
    return pd.DataFrame(
        {
            **{c: selection[c] for c in [*GROUP, "lr", "runs", "reached", "censored", "running"]},
            f"median {unit}": selection["median"].map(_fmt_time),
            "CI": [
                f"{_fmt_time(lo)} – {_fmt_time(hi)}"
                for lo, hi in zip(selection["low"], selection["high"], strict=True)
            ],
            "mean last accuracy": selection["mean last accuracy"],
            "selected": selection["selected"].map({True: "✔ selected", False: ""}),
        }
    )


def selected_runs(ttt: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``ttt`` whose learning rate is the selected one of their group."""
    keep = selection.loc[selection["selected"], [*GROUP, "lr"]]
    if keep.empty:
        return ttt.iloc[0:0]
    key = [*GROUP, "lr"]
    return ttt.merge(keep, on=key, how="inner")[ttt.columns]


def order_runs(runs: pd.DataFrame, selected: pd.DataFrame, which: str = "selected") -> pd.DataFrame:
    """The runs the learning order is computed on: ``selected`` (the runs at each group's
    selected learning rate, the paper's reading; ``selected`` as :func:`selected_runs` returns)
    or ``all`` (every learning rate pooled, which mixes in rates that barely learn)."""
    if which == "all":
        return runs
    if which != "selected":
        raise ValueError(f"learning_order_runs must be 'selected' or 'all', got {which!r}")
    return runs[runs["name"].isin(selected["run"])]


def run_table(
    runs: pd.DataFrame, ttt: pd.DataFrame, selection: pd.DataFrame, time: str = "examples"
) -> pd.DataFrame:
    """Every placeable run (pending ones too): its learning rate and seeds, the ``time`` at
    which it reached the threshold or where it is censored, its last accuracy, and whether its
    learning rate is the selected one of its group."""
    unit = TIME_UNITS[time]
    t = ttt.set_index("run")
    chosen = {
        (int(r.length), r.variant, r.arch, r.lr)
        for r in selection[selection["selected"]].itertuples()
    }
    rows = []
    for r in plottable(runs).itertuples(index=False):
        if r.name not in t.index:
            outcome = f"no evaluation yet ({r.state})"
        elif pd.isna(t.loc[r.name, time]):
            outcome = f"{unit} unknown"
        else:
            x = f"{t.loc[r.name, time]:,.0f}"
            outcome = x if t.loc[r.name, "event"] else f"censored at {x} ({r.state})"
        rows.append(
            {
                "length": int(r.length),
                "variant": r.variant,
                "arch": r.arch,
                "lr": r.lr,
                "init_seed": r.init_seed,
                "seed": r.seed,
                "run": r.name,
                "state": r.state,
                f"{unit} to threshold": outcome,
                "last accuracy": r.final_accuracy,
                "selected lr": "✔" if (int(r.length), r.variant, r.arch, r.lr) in chosen else "",
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["_v"] = out["variant"].map(lambda v: (VARIANT_ORDER.get(v, 9), v))
    out = out.sort_values(["length", "_v", "arch", "lr", "init_seed", "seed", "run"])
    return out.drop(columns="_v").reset_index(drop=True)


def learned_from(
    steps: np.ndarray, acc: np.ndarray, overall: np.ndarray, level: float, guard: float
) -> int | None:
    """First step from which ``acc`` stays >= ``level`` at every later evaluation and at which
    ``overall`` >= ``guard``; None if there is none (NaN counts as below)."""
    below = np.nonzero(~(np.asarray(acc, dtype=float) >= level))[0]
    start = below[-1] + 1 if below.size else 0
    ok = np.nonzero(np.asarray(overall, dtype=float)[start:] >= guard)[0]
    return int(steps[start + ok[0]]) if ok.size else None


LEARNED_RULE = (
    "A position (or bin of positions) counts as learned at the first evaluation from which its "
    "held-out accuracy stays at or above {level} at every later evaluation of the run, and at "
    "which the run's overall held-out accuracy is at least 1/L + {margin:g}. Both parts keep "
    "collapsed models out: a model that answers one position for every input scores 1.0 on "
    "it but only 1/L overall (the held-out targets are balanced), and once it moves on the "
    "position drops below the level, so the stripe is not counted."
)


def first_pass(
    runs: pd.DataFrame,
    per_position: pd.DataFrame,
    threshold: float | None = None,
    max_bins: int = 32,
    collapse_margin: float = 0.1,
) -> pd.DataFrame:
    """Learning order: per run and position bin, the step from which the bin counts as learned.

    Learned (:data:`LEARNED_RULE`): the bin's accuracy is >= ``threshold`` (default: the run's
    own) at that evaluation and at every later one, and the run's overall accuracy there (the
    mean of its per-position vector, which equals held-out accuracy on balanced held-out sets)
    is >= 1/L + ``collapse_margin``. A run still running is judged on the evaluations it has.
    Positions are grouped into at most ``max_bins`` equal bins (bin accuracy = mean over its
    positions); with L <= ``max_bins`` each position is its own bin. Bins never learned are
    censored at the run's last evaluated step. Columns: run, length, variant, arch, bin,
    first, last (positions of the bin), time, event.
    """
    check_threshold(threshold)
    meta = plottable(runs).set_index("name")
    rows = []
    for name, g in per_position.groupby("run"):
        if name not in meta.index:
            continue
        r = meta.loc[name]
        length = int(r["length"])
        thr = r["threshold"] if threshold is None else threshold
        if thr is None or pd.isna(thr):
            continue
        wide = g.pivot_table(index="step", columns="position", values="accuracy", dropna=False)
        wide = wide.reindex(columns=range(length))
        steps, acc = wide.index.to_numpy(), wide.to_numpy()
        overall = _nanmean(acc, axis=1)
        guard = 1 / length + collapse_margin
        edges = np.unique(np.linspace(0, length, min(length, max_bins) + 1).round().astype(int))
        for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            hit = learned_from(steps, _nanmean(acc[:, lo:hi], axis=1), overall, thr, guard)
            rows.append(
                {
                    "run": name,
                    "length": length,
                    "variant": r["variant"],
                    "arch": r["arch"],
                    "bin": b,
                    "first": int(lo),
                    "last": int(hi) - 1,
                    "time": hit if hit is not None else int(steps[-1]),
                    "event": hit is not None,
                }
            )
    cols = ["run", *GROUP, "bin", "first", "last", "time", "event"]
    return pd.DataFrame(rows, columns=cols)


def learning_order_summary(fp: pd.DataFrame) -> pd.DataFrame:
    """Kaplan-Meier median first-pass step per group and position bin (long format)."""
    rows = []
    for key, g in fp.groupby([*GROUP, "bin"]):
        km = kaplan_meier(g["time"], g["event"])
        rows.append(
            {
                **dict(zip([*GROUP, "bin"], key, strict=True)),
                "first": int(g["first"].iloc[0]),
                "last": int(g["last"].iloc[0]),
                "runs": len(g),
                "passed": int(g["event"].sum()),
                "median": km_median(km)[0],
            }
        )
    return pd.DataFrame(rows, columns=[*GROUP, "bin", "first", "last", "runs", "passed", "median"])


def learning_order_table(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`learning_order_summary` as one row per group, one column per position bin."""
    if summary.empty:
        return pd.DataFrame()
    s = summary.assign(
        positions=[
            f"{a}" if a == b else f"{a}-{b}"
            for a, b in zip(summary["first"], summary["last"], strict=True)
        ],
        value=summary["median"].map(_fmt_time),
    )
    order = s.drop_duplicates(["length", "bin"]).sort_values(["length", "bin"])["positions"]
    wide = s.pivot(index=GROUP, columns="positions", values="value")
    return wide.reindex(columns=list(dict.fromkeys(order))).reset_index()


def final_accuracy(
    runs: pd.DataFrame,
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
    by: tuple[str, ...] = tuple(GROUP),
) -> pd.DataFrame:
    """Mean final held-out accuracy of finished runs per group, percentile bootstrap interval.

    Only runs in state ``done`` count (a running run's last value is not final); how many
    runs of the group were left out, and why, is in the ``not finished`` column. Runs stopped
    at the threshold count with their accuracy at stopping.
    """
    pct = f"{confidence:.0%}"
    rows = []
    for key, g in plottable(runs).groupby(list(by)):
        done = g[g["state"] == "done"]
        mean, lo, hi = bootstrap_mean_ci(done["final_accuracy"], confidence, n_boot, seed)
        others = g[g["state"] != "done"]["state"].value_counts().sort_index()
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "finished runs": len(done),
                "mean": mean,
                f"{pct} CI low": lo,
                f"{pct} CI high": hi,
                "min": done["final_accuracy"].min(),
                "max": done["final_accuracy"].max(),
                "not finished": ", ".join(f"{n} {s}" for s, n in others.items()),
            }
        )
    return pd.DataFrame(rows)


def state_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """How many runs are in each state, per architecture (pending and failed included)."""
    counts = runs.assign(arch=runs["arch"].fillna("?")).pivot_table(
        index="arch", columns="state", values="name", aggfunc="count", fill_value=0
    )
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index().rename_axis(columns=None)


def overview(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs table as a reader wants it: identity, state, progress, accuracy."""
    cols = [
        "name",
        "arch",
        "variant",
        "length",
        "lr",
        "init_seed",
        "seed",
        "state",
        "last_step",
        "budget",
        "threshold_step",
        "final_accuracy",
        "best_accuracy",
        "params",
        "state_size",
        "kv_cache",
        "reason",
    ]
    return runs[cols]


def _values(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def consistency_notes(runs: pd.DataFrame, threshold: float | None = None) -> list[str]:
    """Things that make a comparison less clean than it looks, for the report's notes."""
    notes = []
    unplaced = runs[runs[GROUP].isna().any(axis=1)]
    for r in unplaced.itertuples():
        if r.state != "pending":
            notes.append(f"{r.name}: no arch, variant or length in its config; not plotted")
    pending = runs[(runs["state"] == "pending")]
    if len(pending):
        notes.append(f"{len(pending)} run(s) are pending (no directory yet); they have no data")
    failed = runs[runs["state"].isin(["failed", "interrupted"])]
    for r in failed.itertuples():
        notes.append(
            f"{r.name} {r.state} at step {r.last_step} ({r.reason}); it is censored in "
            "time-to-threshold and left out of final accuracy"
        )
    if threshold is None:
        for key, g in plottable(runs).groupby(PANEL):
            thresholds = sorted(g["threshold"].dropna().unique())
            if len(thresholds) > 1:
                notes.append(
                    f"L={key[0]} {key[1]}: runs use different thresholds {_values(thresholds)}; "
                    "pass -p threshold VALUE to compare them at one threshold"
                )
    notes.extend(repetition_notes(runs))
    for key, g in plottable(runs).groupby(GROUP):
        for col, what in (("batch_size", "batch sizes"), ("budget", "step budgets")):
            values = sorted(g[col].dropna().unique())
            if len(values) > 1:
                notes.append(
                    f"L={key[0]} {key[1]} {key[2]}: runs have different {what} {_values(values)}; "
                    "curves are per fraction of training, times in steps"
                )
    return notes


def repetition_notes(runs: pd.DataFrame) -> list[str]:
    """Panels whose runs saw more training examples than the task has distinct ones.

    With few distinct sequences (short contexts from a small pool) the training stream repeats
    them, and a model can memorise the training set instead of learning to retrieve: held-out
    accuracy then measures generalisation from repeats. Counted from what each run saw
    (last evaluated step x batch size), not its budget.
    """
    from vlab.probes.tasks import num_sequences

    notes = []
    seen = plottable(runs).dropna(subset=["pool", "last_step", "batch_size"])
    for (length, variant), g in seen.groupby(PANEL):
        for pool, h in g.groupby("pool"):
            held = int(h["n_heldout"].max()) if h["n_heldout"].notna().any() else 0
            distinct = num_sequences(int(pool), int(length)) - held
            most = int((h["last_step"] * h["batch_size"]).max())
            if most > distinct:
                notes.append(
                    f"L={length} {variant}: the task has {distinct:,} distinct training examples "
                    f"(pool {int(pool)}), but runs saw up to {most:,} (each about "
                    f"{most / max(distinct, 1):.0f} times): a model can memorise them, so "
                    "held-out accuracy here also measures generalisation from repeats"
                )
    return notes
