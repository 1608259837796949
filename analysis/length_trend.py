"""How the comparison changes with context length: per length, each arm's median examples to
threshold as a ratio of the baseline arm's, and the trend of that ratio across lengths.

The paper's question is about growth: does the gap between a Transformer and an SSM widen as
the context the answer must be retrieved from gets longer? Per (variant, arm, length) the
ratio is the arm's Kaplan-Meier median over its runs at the selected learning rate divided by
the baseline arm's (the family record's ``baseline``, Pythia; else the first arm); 1 means
equal, 2 means the arm needed twice the examples. The trend is the least-squares slope of
log(ratio) against log(L) over the lengths where both medians were reached: the ratio grows
about as L^slope. Intervals come from one percentile bootstrap that resamples each arm's runs
(seeds) with replacement within every panel, jointly across lengths (fixed seed: the report is
deterministic). With the 3 seeds per arm of the built-in sweeps the bootstrap can only
recombine the times it saw, so its intervals are a floor on the uncertainty, not a ceiling;
the words say so.

Pure functions of the time-to-threshold table (:func:`vlab.analysis.tables.selected_runs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from vlab.analysis.tables import TIME_UNITS, VARIANT_ORDER
from vlab.models.backbones import families


@dataclass(frozen=True)
class LengthTrend:
    """``ratios``: one row per (variant, arch, length) with ratio, low, high, the arms' medians
    and run counts; ``trends``: one row per (variant, arch) with the slope of log ratio on
    log L, its interval, the lengths fitted and the bootstrap replicates that could not be
    fitted (a median not reached in the resample)."""

    ratios: pd.DataFrame
    trends: pd.DataFrame
    baseline: str | None
    confidence: float
    time: str


RATIO_COLUMNS = [
    "variant",
    "arch",
    "baseline",
    "length",
    "median",
    "baseline_median",
    "ratio",
    "low",
    "high",
    "runs",
    "baseline_runs",
]
TREND_COLUMNS = ["variant", "arch", "baseline", "lengths", "slope", "low", "high", "unfitted"]


def km_median_point(times: np.ndarray, events: np.ndarray) -> float:
    """The Kaplan-Meier median (first time with S <= 0.5; ``inf`` if never) of (n,) times and
    events: :func:`vlab.analysis.stats.km_median`'s point estimate, without its intervals
    (the bootstrap calls this thousands of times)."""
    if times.size == 0:
        return math.nan
    order = np.argsort(times, kind="stable")
    t, e = times[order], events[order]
    unique, first = np.unique(t, return_index=True)
    at_risk = t.size - first
    deaths = np.add.reduceat(e.astype(float), first)
    survival = np.cumprod(1.0 - deaths / at_risk)
    hits = np.nonzero(survival <= 0.5 + 1e-12)[0]
    return float(unique[hits[0]]) if hits.size else math.inf


def pick_baseline(archs: list[str]) -> str | None:
    """The arm others are compared with: the baseline family's (Pythia) if present, else the
    first in the families' order, else the first name."""
    flagged = [f.arch for f in families() if f.baseline]
    for arch in flagged:
        if arch in archs:
            return arch
    known = [f.arch for f in families() if f.arch in archs]
    return known[0] if known else (sorted(archs)[0] if archs else None)


def _ratio(a: float, b: float) -> float:
    """a / b for medians: inf when only a is not reached, 0 when only b is, NaN when both."""
    if math.isinf(a) and math.isinf(b):
        return math.nan
    if math.isinf(a):
        return math.inf
    if math.isinf(b):
        return 0.0
    return a / b if b > 0 else math.nan


def _slope(lengths: np.ndarray, ratios: np.ndarray) -> float:
    """Least-squares slope of log(ratio) on log(L); NaN unless every ratio is finite and > 0."""
    if lengths.size < 2 or not np.all(np.isfinite(ratios) & (ratios > 0)):
        return math.nan
    x, y = np.log(lengths.astype(float)), np.log(ratios)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def _quantiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of replicates that may hold +-inf (no interpolation across them)."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return math.nan, math.nan
    alpha = 1 - confidence
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(lo), float(hi)


def length_trend(
    sel: pd.DataFrame,
    time: str = "examples",
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> LengthTrend:
    """Ratios per length and trends across lengths of ``sel`` (runs at the selected learning
    rates: columns length, variant, arch, ``time``, event), as the module docstring says."""
    sel = sel[np.isfinite(sel[time].astype(float))]
    baseline = pick_baseline(sorted(sel["arch"].unique()))
    ratio_rows, trend_rows = [], []
    rng = np.random.default_rng(seed)
    variants = sorted(sel["variant"].unique(), key=lambda v: (VARIANT_ORDER.get(v, 9), v))
    for variant in variants:
        v = sel[sel["variant"] == variant]
        samples = {
            (arch, int(length)): (g[time].to_numpy(float), g["event"].to_numpy(bool))
            for (arch, length), g in v.groupby(["arch", "length"])
        }
        lengths = sorted({length for _, length in samples})
        medians = {key: km_median_point(*s) for key, s in samples.items()}
        # replicates[key][r]: the median of resample r; every arm resampled in every panel
        replicates = {}
        for key, (t, e) in samples.items():
            draws = rng.integers(0, t.size, size=(n_boot, t.size))
            replicates[key] = np.array([km_median_point(t[d], e[d]) for d in draws])
        for arch in sorted({a for a, _ in samples} - {baseline}):
            shared = [n for n in lengths if (arch, n) in samples and (baseline, n) in samples]
            boot_ratios, point = {}, {}
            for n in shared:
                a, b = medians[(arch, n)], medians[(baseline, n)]
                point[n] = _ratio(a, b)
                boot = np.array(
                    [
                        _ratio(x, y)
                        for x, y in zip(
                            replicates[(arch, n)], replicates[(baseline, n)], strict=True
                        )
                    ]
                )
                boot_ratios[n] = boot
                low, high = _quantiles(boot, confidence)
                ratio_rows.append(
                    {
                        "variant": variant,
                        "arch": arch,
                        "baseline": baseline,
                        "length": n,
                        "median": a,
                        "baseline_median": b,
                        "ratio": point[n],
                        "low": low,
                        "high": high,
                        "runs": samples[(arch, n)][0].size,
                        "baseline_runs": samples[(baseline, n)][0].size,
                    }
                )
            fit = [n for n in shared if np.isfinite(point[n]) and point[n] > 0]
            if len(fit) < 2:
                continue
            x = np.array(fit)
            slopes = np.array(
                [_slope(x, np.array([boot_ratios[n][r] for n in fit])) for r in range(n_boot)]
            )
            low, high = _quantiles(slopes, confidence)
            trend_rows.append(
                {
                    "variant": variant,
                    "arch": arch,
                    "baseline": baseline,
                    "lengths": fit,
                    "slope": _slope(x, np.array([point[n] for n in fit])),
                    "low": low,
                    "high": high,
                    "unfitted": int(np.isnan(slopes).sum()),
                }
            )
    return LengthTrend(
        pd.DataFrame(ratio_rows, columns=RATIO_COLUMNS),
        pd.DataFrame(trend_rows, columns=TREND_COLUMNS),
        baseline,
        confidence,
        time,
    )


def _x(r: float) -> str:
    return "not reached" if math.isinf(r) else f"{r:.2g}x"


def _step_words(r, arch: str, base: str, pct: str) -> str:
    """One length's ratio in words, naming which arm did not reach the threshold if one."""
    if math.isnan(r.ratio):
        return f"L = {r.length}: neither reached the threshold in half its runs"
    if math.isinf(r.ratio):
        return (
            f"L = {r.length}: {arch} did not reach it in half its runs ({base}'s median "
            f"{r.baseline_median:,.0f})"
        )
    if r.ratio == 0:
        return (
            f"L = {r.length}: {base} did not reach it in half its runs ({arch}'s median "
            f"{r.median:,.0f})"
        )
    return f"L = {r.length}: {_x(r.ratio)} ({pct} interval {_x(r.low)} – {_x(r.high)})"


def _span(lengths: list[int]) -> str:
    return f"L = {', '.join(str(n) for n in lengths)}"


def trend_sentence(trend: LengthTrend, variant: str, arch: str) -> str:
    """One sentence on ``arch`` against the baseline over the lengths of ``variant``."""
    rows = trend.ratios[(trend.ratios["variant"] == variant) & (trend.ratios["arch"] == arch)]
    unit = TIME_UNITS[trend.time]
    pct = f"{trend.confidence:.0%}"
    base = trend.baseline
    steps = "; ".join(_step_words(r, arch, base, pct) for r in rows.itertuples())
    head = f"{arch}'s median {unit} to the threshold as a multiple of {base}'s: {steps}."
    fit = trend.trends[(trend.trends["variant"] == variant) & (trend.trends["arch"] == arch)]
    if fit.empty:
        return (
            f"{head} No trend across lengths: fewer than two lengths where both reached the "
            "threshold in half their runs."
        )
    f = fit.iloc[0]
    if f.low > 0:
        verdict = f"{arch}'s cost relative to {base} grows with length"
    elif f.high < 0:
        verdict = f"{arch}'s cost relative to {base} shrinks with length"
    else:
        verdict = "no clear trend with length (the interval includes a flat ratio)"
    unfitted = (
        f"; {f.unfitted} of the resamples had a median not reached and were left out"
        if f.unfitted
        else ""
    )
    return (
        f"{head} Over {_span(f.lengths)} the ratio goes as about L^{f.slope:.2f} "
        f"({pct} bootstrap interval {f.low:.2f} to {f.high:.2f}{unfitted}): {verdict}."
    )


def length_summary(trend: LengthTrend) -> str:
    """Markdown bullets, one per (variant, arm other than the baseline)."""
    if trend.ratios.empty:
        return (
            "No length comparison: it needs the baseline arm and another arm at the same lengths."
        )
    keys = trend.ratios[["variant", "arch"]].drop_duplicates()
    lines = [
        f"- **{k.variant}**: {trend_sentence(trend, k.variant, k.arch)}" for k in keys.itertuples()
    ]
    lines.append(
        "- Intervals: percentile bootstrap over each arm's runs (seeds). With a few seeds per "
        "arm it can only recombine the times it saw, so read them as the least uncertainty "
        "there is."
    )
    return "\n".join(lines)


def ratio_table(trend: LengthTrend) -> pd.DataFrame:
    """The ratios for display: one row per (variant, arch, length), formatted."""
    out = trend.ratios.copy()
    for col in ("ratio", "low", "high"):
        out[col] = out[col].map(lambda r: "n/a" if math.isnan(r) else _x(r))
    for col in ("median", "baseline_median"):
        out[col] = out[col].map(
            lambda m: "not reached" if math.isinf(m) else ("n/a" if math.isnan(m) else f"{m:,.0f}")
        )
    return out
