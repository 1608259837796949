"""Statistics for the reports, as pure functions of arrays.

Time to threshold is survival data: a run that never reaches the accuracy threshold (budget
spent, still running, failed) is *censored* at the last step it was evaluated, not dropped and
not counted as reaching it at the end. Hence the Kaplan-Meier estimator, its median with a
confidence interval, and the log-rank test between architectures. Final accuracy over seeds gets
a percentile bootstrap interval of the mean; VLM benchmark scores and gains over a few seeds a
Student t interval (:func:`t_mean_ci`).

Conventions (those of R's ``survival`` and of ``lifelines`` unless said otherwise):

- At a time with both events and censorings, the censored runs count as at risk at that time.
- Greenwood's variance; the default interval is the log-log one (``exp(-exp(...))``
  transform), which stays inside [0, 1]; ``"plain"`` is S +- z*se, clipped.
- The median is the first time at which S(t) <= 0.5 (``inf`` if it never gets there); its
  interval is the set of times whose pointwise interval contains 0.5 (Brookmeyer-Crowley by
  inversion): lower = first t with lower(t) <= 0.5, upper = first t with upper(t) <= 0.5.
- Log-rank: a group with no run at risk at any event time carries no information and adds no
  degree of freedom (R's ``survdiff``); with fewer than two informative groups the statistic
  is NaN.

Why this code and not lifelines at run time: both were run on the same data (textbook sets
and thousands of random ones with ties and censoring; tests/analysis/test_stats.py keeps
several hundred). The Kaplan-Meier curve, at-risk counts and log-log interval agree with
lifelines' ``KaplanMeierFitter`` to 1e-15, the median's interval with ``median_survival_times``
of its ``confidence_interval_`` exactly, the log-rank statistic, df and p with
``multivariate_logrank_test`` to 1e-14. They differ, by design, in three places: (1) where S is
exactly 0.5, common with a few seeds, lifelines' median depends on rounding (it computes S as
``exp(sum(log(1 - d/n)))``): 6 seeds, 3 reached by step 4000, 3 censored at 5000 give S(4000) =
1/2, median 4000 here, "not reached" from lifelines 0.30; here it is the first time S <= 0.5;
(2) lifelines gives chi2 = 0, p = 1 with no events, or with only one group at risk, and counts
(groups - 1) df even for a group that was never at risk at an event time (R drops it, as here);
NaN says "no test" instead; (3) lifelines has no per-group observed/expected counts (the
report's table prints them), no plain interval, and its fit takes ~20 ms against ~1 ms here
(the learning-order table fits hundreds of curves). So lifelines is a test dependency, the
reference these functions are checked against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as _st

CIType = Literal["log-log", "plain"]


@dataclass(frozen=True)
class KaplanMeier:
    """A Kaplan-Meier curve. All arrays have shape (k,), one entry per distinct observed time.

    ``survival[i]`` is S just after ``time[i]``; before ``time[0]`` S is 1. ``se`` is
    Greenwood's standard error of S; ``lower`` / ``upper`` the pointwise interval at level
    ``confidence``.
    """

    time: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray
    censored: np.ndarray
    survival: np.ndarray
    se: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    confidence: float

    @property
    def n(self) -> int:
        return int(self.events.sum() + self.censored.sum())

    def at(self, t: float) -> float:
        """S(t) as a right-continuous step function."""
        i = np.searchsorted(self.time, t, side="right") - 1
        return 1.0 if i < 0 else float(self.survival[i])


def _as_arrays(durations: Sequence[float], events: Sequence[bool]) -> tuple[np.ndarray, ...]:
    t = np.asarray(durations, dtype=float)
    e = np.asarray(events, dtype=bool)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError(f"durations {t.shape} and events {e.shape} must be equal 1-d shapes")
    if not np.all(np.isfinite(t)):
        raise ValueError("durations must be finite")
    return t, e


def kaplan_meier(
    durations: Sequence[float],
    events: Sequence[bool],
    confidence: float = 0.95,
    ci: CIType = "log-log",
) -> KaplanMeier:
    """Kaplan-Meier estimate from ``durations`` (n,) and ``events`` (n,) (True = reached,
    False = censored at that duration)."""
    t, e = _as_arrays(durations, events)
    times = np.unique(t)
    d = np.array([np.sum(e & (t == u)) for u in times], dtype=float)
    c = np.array([np.sum(~e & (t == u)) for u in times], dtype=float)
    n = np.array([np.sum(t >= u) for u in times], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.cumprod(1.0 - d / n)
        # Greenwood: Var S = S^2 * sum d / (n (n - d)); undefined once S hits 0 (n == d).
        terms = np.where(n > d, d / (n * (n - d)), np.inf)
        g = np.cumsum(terms)  # sum of d / (n (n - d)) up to each time
        se = np.where(s > 0, s * np.sqrt(g), 0.0)
    z = _st.norm.ppf(0.5 + confidence / 2)
    lower, upper = _interval(s, g, se, z, ci)
    return KaplanMeier(
        times, n.astype(int), d.astype(int), c.astype(int), s, se, lower, upper, confidence
    )


def _interval(s, g, se, z, ci: CIType) -> tuple[np.ndarray, np.ndarray]:
    if ci == "plain":
        return np.clip(s - z * se, 0, 1), np.clip(s + z * se, 0, 1)
    if ci != "log-log":
        raise ValueError(f"ci must be 'log-log' or 'plain', got {ci!r}")
    lower, upper = s.copy(), s.copy()  # S == 1 (no event yet) or S == 0: no spread
    inside = (s > 0) & (s < 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.log(s[inside])
        theta_se = np.sqrt(g[inside]) / np.abs(log_s)
    lower[inside] = s[inside] ** np.exp(z * theta_se)
    upper[inside] = s[inside] ** np.exp(-z * theta_se)
    return lower, upper


def _first_time_at_or_below(km: KaplanMeier, curve: np.ndarray, level: float) -> float:
    hits = np.nonzero(curve <= level + 1e-12)[0]
    return float(km.time[hits[0]]) if hits.size else math.inf


def km_median(km: KaplanMeier) -> tuple[float, float, float]:
    """(median, lower, upper) of the time to event; ``inf`` where the curve (or the
    interval's bound) never drops to 0.5, i.e. "not reached"."""
    return (
        _first_time_at_or_below(km, km.survival, 0.5),
        _first_time_at_or_below(km, km.lower, 0.5),
        _first_time_at_or_below(km, km.upper, 0.5),
    )


@dataclass(frozen=True)
class LogRank:
    """Log-rank test of equal survival across ``k`` groups.

    ``observed`` / ``expected`` (k,) are event counts per group; ``statistic`` is chi-square
    with ``df`` degrees of freedom, the rank of the covariance of observed - expected: ``k - 1``,
    less one for each group with no run at risk at any event time (expected 0). NaN statistic
    and p when there are fewer than two groups with subjects, no events at all, or nothing to
    compare (``df`` 0, e.g. never two groups at risk at an event time).
    """

    statistic: float
    df: int
    p_value: float
    observed: np.ndarray
    expected: np.ndarray


def logrank_test(
    durations: Sequence[float], events: Sequence[bool], groups: Sequence[object]
) -> LogRank:
    """Log-rank (Mantel-Cox) test over all groups in ``groups`` (n,), hypergeometric variance.

    Groups are taken in sorted order of their labels for ``observed`` / ``expected``.
    """
    t, e = _as_arrays(durations, events)
    g = np.asarray(groups, dtype=object)
    if g.shape != t.shape:
        raise ValueError(f"groups {g.shape} must match durations {t.shape}")
    labels = sorted(set(g.tolist()), key=str)
    k = len(labels)
    member = np.stack([g == lab for lab in labels]) if k else np.zeros((0, t.size), bool)
    observed = np.array([np.sum(e & m) for m in member], dtype=float)
    expected = np.zeros(k)
    var = np.zeros((k, k))
    for u in np.unique(t[e]):
        at_risk = np.array([np.sum(m & (t >= u)) for m in member], dtype=float)
        n = at_risk.sum()
        d = float(np.sum(e & (t == u)))
        frac = at_risk / n
        expected += d * frac
        if n > 1:
            var += d * (n - d) / (n - 1) * (np.diag(frac) - np.outer(frac, frac))
    nan = LogRank(math.nan, max(k - 1, 0), math.nan, observed, expected)
    if k < 2 or observed.sum() == 0:
        return nan
    u_vec = (observed - expected)[:-1]
    v = var[:-1, :-1]
    stat = float(u_vec @ np.linalg.pinv(v) @ u_vec)
    df = int(np.linalg.matrix_rank(v))
    if df == 0:  # at most one group at risk at every event time: nothing to compare
        return LogRank(math.nan, 0, math.nan, observed, expected)
    return LogRank(stat, df, float(_st.chi2.sf(stat, df)), observed, expected)


def bootstrap_mean_ci(
    values: Sequence[float], confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lower, upper): percentile bootstrap interval of the mean of ``values`` (n,).

    Deterministic for a given ``seed``. NaN values are ignored; with fewer than two values
    the interval is undefined and returned as NaN (one seed says nothing about spread).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = 1 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return mean, float(lo), float(hi)


def t_mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper): Student t interval of the mean of ``values`` (n,).

    ``mean -+ t_{(1+confidence)/2, n-1} * sd / sqrt(n)`` with the sample sd (ddof 1): with the
    few seeds a VLM sweep affords (2-5), a percentile bootstrap of the mean is too narrow (it
    can only resample the values seen), the t interval accounts for the small n. NaN values
    are ignored; with fewer than two values the interval is NaN.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(_st.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half
