"""Statistics against values computed by hand, a textbook data set, and lifelines.

Textbook: Freireich et al. (1963) leukaemia remission times, 6-MP arm vs placebo (Gehan 1965),
the standard example of Kaplan-Meier and log-rank (e.g. Kleinbaum & Klein, "Survival
Analysis", ch. 2; R: ``survfit`` / ``survdiff`` on ``MASS::gehan``). Published values: 6-MP
S(t) 0.857, 0.807, 0.753, 0.690, 0.627, 0.538, 0.448 with Greenwood SE 0.0764, 0.0869,
0.0963, 0.1068, 0.1141, 0.1282, 0.1346; median 23 weeks; log-rank chi-square 16.79 on 1 df
(p = 4.17e-5), observed/expected events 9/19.25 (6-MP) and 21/10.75 (placebo).
"""

import math

import numpy as np
import pytest
from scipy import stats as st

from vlab.analysis.stats import bootstrap_mean_ci, kaplan_meier, km_median, logrank_test

# lifelines 0.30 calls pandas in a way pandas 3 announces will change in pandas 4
pytestmark = pytest.mark.filterwarnings(
    "ignore:Starting with pandas version 4.0:DeprecationWarning"
)

Z = 1.959963984540054  # 97.5% normal quantile

MP_TIME = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
MP_EVENT = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
PLACEBO = [1, 1, 2, 2, 3, 4, 4, 5, 5, 8, 8, 8, 8, 11, 11, 12, 12, 15, 17, 22, 23]


def loglog(s: float, greenwood_sum: float) -> tuple[float, float]:
    """The log-log interval written out: S^exp(+-z * sqrt(sum) / |log S|)."""
    w = Z * math.sqrt(greenwood_sum) / abs(math.log(s))
    return s ** math.exp(w), s ** math.exp(-w)


# Small example with ties, an event and a censoring at the same time, censoring at the end:
#   t:     2  3  3  3' 5' 6  6'      (' = censored)
#   t=2: n=7 d=1 -> S = 6/7
#   t=3: n=6 d=2 (the run censored at 3 is still at risk) -> S = 6/7 * 4/6 = 4/7
#   t=5: n=3 d=0 -> S = 4/7
#   t=6: n=2 d=1 (censored at the last time too) -> S = 4/7 * 1/2 = 2/7
# Greenwood sums d/(n(n-d)): 1/42, + 2/24, + 0, + 1/2.
SMALL_T = [2, 3, 3, 3, 5, 6, 6]
SMALL_E = [1, 1, 1, 0, 0, 1, 0]


def test_kaplan_meier_by_hand_with_ties_and_censoring_at_the_last_time():
    km = kaplan_meier(SMALL_T, SMALL_E)
    np.testing.assert_array_equal(km.time, [2, 3, 5, 6])
    np.testing.assert_array_equal(km.at_risk, [7, 6, 3, 2])
    np.testing.assert_array_equal(km.events, [1, 2, 0, 1])
    np.testing.assert_array_equal(km.censored, [0, 1, 1, 1])
    np.testing.assert_allclose(km.survival, [6 / 7, 4 / 7, 4 / 7, 2 / 7])
    sums = np.array([1 / 42, 1 / 42 + 1 / 12, 1 / 42 + 1 / 12, 1 / 42 + 1 / 12 + 1 / 2])
    np.testing.assert_allclose(km.se, km.survival * np.sqrt(sums))
    for i in range(4):
        np.testing.assert_allclose((km.lower[i], km.upper[i]), loglog(km.survival[i], sums[i]))
    assert (
        km.at(0) == 1 and km.at(2.5) == pytest.approx(6 / 7) and km.at(100) == pytest.approx(2 / 7)
    )
    assert km.n == 7


def test_km_median_and_interval_by_hand():
    # median: first t with S <= 0.5 -> S(3) = 0.571 > 0.5, S(6) = 0.286 -> 6.
    # lower bound: first t with lower(t) <= 0.5; lower(2) = (6/7)^exp(1.96*1.001) = 0.334 -> 2.
    # upper bound: first t with upper(t) <= 0.5; upper(6) = (2/7)^exp(-1.96*0.622) = 0.691,
    # never <= 0.5 -> not reached (inf).
    assert loglog(6 / 7, 1 / 42)[0] == pytest.approx(0.3341, abs=1e-4)
    assert loglog(2 / 7, 1 / 42 + 1 / 12 + 1 / 2)[1] == pytest.approx(0.6906, abs=1e-4)
    assert km_median(kaplan_meier(SMALL_T, SMALL_E)) == (6, 2, math.inf)


def test_median_not_reached_when_censored_above_one_half():
    # One event out of four, the rest censored at the last time: S = 3/4 forever.
    km = kaplan_meier([1, 2, 3, 3], [1, 0, 0, 0])
    np.testing.assert_allclose(km.survival, [0.75, 0.75, 0.75])
    assert km_median(km)[0] == math.inf
    # No event at all: S stays 1, the interval has no spread.
    km = kaplan_meier([5, 5, 5], [0, 0, 0])
    assert km.survival.tolist() == [1.0] and km.lower.tolist() == [1.0]
    assert km_median(km) == (math.inf, math.inf, math.inf)


def test_everyone_reaches_it_curve_drops_to_zero():
    km = kaplan_meier([1, 2, 2], [1, 1, 1])
    np.testing.assert_allclose(km.survival, [2 / 3, 0])
    assert km.se[-1] == 0 and km.lower[-1] == 0 and km.upper[-1] == 0
    assert km_median(km)[0] == 2


def test_kaplan_meier_textbook_6mp():
    km = kaplan_meier(MP_TIME, MP_EVENT)
    ev = km.events > 0
    np.testing.assert_array_equal(km.time[ev], [6, 7, 10, 13, 16, 22, 23])
    np.testing.assert_allclose(
        km.survival[ev], [0.857, 0.807, 0.753, 0.690, 0.627, 0.538, 0.448], atol=5e-4
    )
    np.testing.assert_allclose(
        km.se[ev], [0.0764, 0.0869, 0.0963, 0.1068, 0.1141, 0.1282, 0.1346], atol=5e-5
    )
    assert km_median(km) == (23, 13, math.inf)  # R (log-log): median 23, 0.95LCL 13, UCL NA
    # scipy's own KM with log-log interval agrees at every time
    data = st.CensoredData(
        uncensored=[t for t, e in zip(MP_TIME, MP_EVENT, strict=True) if e],
        right=[t for t, e in zip(MP_TIME, MP_EVENT, strict=True) if not e],
    )
    ref = st.ecdf(data).sf.confidence_interval(method="log-log")
    np.testing.assert_allclose(km.lower, ref.low.probabilities, atol=1e-10)
    np.testing.assert_allclose(km.upper, ref.high.probabilities, atol=1e-10)


def test_plain_interval_is_clipped_to_unit_range():
    km = kaplan_meier([1, 2, 3], [1, 1, 0], ci="plain")
    np.testing.assert_allclose(km.lower, np.clip(km.survival - Z * km.se, 0, 1))
    assert (km.upper <= 1).all() and (km.lower >= 0).all()
    with pytest.raises(ValueError):
        kaplan_meier([1], [1], ci="log")
    with pytest.raises(ValueError):
        kaplan_meier([1, 2], [1])


def test_logrank_textbook_6mp():
    res = logrank_test(MP_TIME + PLACEBO, MP_EVENT + [1] * 21, ["6mp"] * 21 + ["placebo"] * 21)
    assert res.statistic == pytest.approx(16.79, abs=0.005) and res.df == 1
    assert res.p_value == pytest.approx(4.17e-5, rel=1e-2)
    np.testing.assert_allclose(res.observed, [9, 21])
    np.testing.assert_allclose(res.expected, [19.25, 10.75], atol=5e-3)


def test_logrank_two_groups_by_hand():
    # A: 1, 3 (events); B: 2 (event), 4 (censored).
    # t=1: n=4, nA=2, d=1: E_A = 1/2, V = 1*3/3 * 1/2*1/2 = 1/4
    # t=2: n=3, nA=1, d=1: E_A = 1/3, V = 1*2/2 * 1/3*2/3 = 2/9
    # t=3: n=2, nA=1, d=1: E_A = 1/2, V = 1*1/1 * 1/2*1/2 = 1/4
    # O_A - E_A = 2 - 4/3 = 2/3, V = 13/18 -> chi2 = (4/9) / (13/18) = 8/13
    res = logrank_test([1, 3, 2, 4], [1, 1, 1, 0], ["A", "A", "B", "B"])
    assert res.statistic == pytest.approx(8 / 13)
    assert res.p_value == pytest.approx(st.chi2.sf(8 / 13, 1))
    np.testing.assert_allclose(res.expected, [4 / 3, 5 / 3])
    ref = st.logrank(st.CensoredData([1, 3]), st.CensoredData([2], right=[4]))
    assert res.p_value == pytest.approx(ref.pvalue)


def test_logrank_three_groups_by_hand():
    # One run per group, events at 1 (A), 2 (B), 3 (C).
    # E = (1/3, 5/6, 11/6), O - E = (2/3, 1/6, -5/6);
    # V[A,B block] = [[2/9, -1/9], [-1/9, 2/9 + 1/4]] -> U' V^-1 U = 13/5 on 2 df.
    res = logrank_test([1, 2, 3], [1, 1, 1], ["A", "B", "C"])
    assert res.statistic == pytest.approx(13 / 5) and res.df == 2
    assert res.p_value == pytest.approx(st.chi2.sf(2.6, 2))


def test_logrank_degenerate_inputs_give_nan_not_errors():
    assert math.isnan(logrank_test([1, 2], [1, 1], ["A", "A"]).p_value)  # one group
    assert math.isnan(logrank_test([1, 2], [0, 0], ["A", "B"]).statistic)  # no events


def test_bootstrap_by_hand_and_deterministic():
    # Two values 0 and 1: resampled means are 0 (1/4), 0.5 (1/2), 1 (1/4), so the 2.5% and
    # 97.5% percentiles are 0 and 1.
    assert bootstrap_mean_ci([0.0, 1.0], seed=3) == (0.5, 0.0, 1.0)
    a = bootstrap_mean_ci([0.2, 0.5, 0.9, 0.4], n_boot=2000, seed=7)
    assert a == bootstrap_mean_ci([0.2, 0.5, 0.9, 0.4], n_boot=2000, seed=7)
    assert a[0] == pytest.approx(0.5) and a[1] < 0.5 < a[2]
    assert 0.2 <= a[1] and a[2] <= 0.9
    assert bootstrap_mean_ci([0.75, 0.75, 0.75]) == (0.75, 0.75, 0.75)  # exact in binary


def test_bootstrap_undefined_cases():
    mean, lo, hi = bootstrap_mean_ci([0.4])  # one seed: no spread to speak of
    assert mean == 0.4 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in bootstrap_mean_ci([]))
    assert bootstrap_mean_ci([0.0, float("nan"), 1.0], seed=3) == (0.5, 0.0, 1.0)


# Against lifelines on the same data ---------------------------------------------------------
# lifelines is the reference these functions are checked against (see the module docstring of
# vlab.analysis.stats for why the report does not call it): every data set below, and a few
# hundred random ones with ties and censoring, give the same curve, interval, median interval
# and log-rank test, except where the conventions differ on purpose (tested separately below).

# name: (durations, events)
DATASETS = {
    "small, ties, event and censoring at one time": (SMALL_T, SMALL_E),
    "6-MP arm (textbook)": (MP_TIME, MP_EVENT),
    "placebo arm, no censoring, ties": (PLACEBO, [1] * 21),
    "all censored": ([5, 5, 7, 9], [0, 0, 0, 0]),
    "all reach it, curve to 0": ([1, 2, 2], [1, 1, 1]),
    "one run, censored": ([4], [0]),
    "one run, event": ([4], [1]),
    "censored first, at step 0": ([0, 0, 10, 20, 20, 30], [0, 0, 1, 1, 0, 1]),
    "steps of an eval grid": ([500, 1000, 1000, 1500, 2000, 2000, 2000], [1, 1, 0, 1, 0, 0, 0]),
}


def lifelines_fit(durations, events):
    from lifelines import KaplanMeierFitter

    return KaplanMeierFitter().fit(np.asarray(durations, float), np.asarray(events, bool))


def random_dataset(rng):
    """A few runs evaluated on a coarse step grid: many ties, any share censored."""
    n = int(rng.integers(1, 15))
    t = rng.integers(0, 8, n) * 100
    return t.tolist(), (rng.random(n) < rng.random()).tolist()


def assert_same_km_as_lifelines(durations, events):
    from lifelines.utils import median_survival_times

    km = kaplan_meier(durations, events)
    kmf = lifelines_fit(durations, events)
    table = kmf.event_table.loc[km.time]
    np.testing.assert_array_equal(km.at_risk, table["at_risk"])
    np.testing.assert_array_equal(km.events, table["observed"])
    np.testing.assert_array_equal(km.censored, table["censored"])
    np.testing.assert_allclose(
        km.survival, kmf.survival_function_.iloc[:, 0].loc[km.time], atol=1e-14
    )
    ci = kmf.confidence_interval_.loc[km.time]  # lifelines' default: the log-log interval
    np.testing.assert_allclose(km.lower, ci.iloc[:, 0], atol=1e-12)
    np.testing.assert_allclose(km.upper, ci.iloc[:, 1], atol=1e-12)
    median, lower, upper = km_median(km)
    assert (lower, upper) == tuple(median_survival_times(kmf.confidence_interval_).iloc[0])
    if not np.any(np.isclose(km.survival, 0.5, rtol=0, atol=1e-12)):  # see the test below
        assert median == kmf.median_survival_time_


@pytest.mark.parametrize("name", DATASETS)
def test_kaplan_meier_and_median_match_lifelines(name):
    assert_same_km_as_lifelines(*DATASETS[name])


def test_kaplan_meier_matches_lifelines_on_random_data_with_ties_and_censoring():
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert_same_km_as_lifelines(*random_dataset(rng))


def test_median_where_the_curve_is_exactly_one_half():
    # 6 seeds, 3 reach the threshold (two at 1000, one at 4000), 3 censored at the budget:
    # S(4000) = 4/6 * 3/4 = 1/2 exactly, so the median is 4000 (first time with S <= 0.5).
    # lifelines computes S as exp(sum(log(1 - d/n))), an ulp off 0.5 either way, so its median
    # there is 4000, the next event or "not reached" by rounding (lifelines 0.30: not reached).
    t, e = [1000, 1000, 4000, 5000, 5000, 5000], [1, 1, 1, 0, 0, 0]
    km = kaplan_meier(t, e)
    assert km.at(4000) == 0.5 and km_median(km)[0] == 4000
    assert lifelines_fit(t, e).survival_function_.loc[4000].iloc[0] == pytest.approx(0.5, abs=1e-15)
    km = kaplan_meier([200, 400, 200, 400, 300, 200], [1] * 6)  # 3 of 6 at once
    assert km.at(200) == 0.5 and km_median(km)[0] == 200


def test_empty_input_is_an_empty_curve_that_never_drops():
    km = kaplan_meier([], [])
    assert km.time.size == 0 and km.n == 0 and km.at(10) == 1.0
    assert km_median(km) == (math.inf, math.inf, math.inf)


# (durations, events, groups)
LOGRANK_DATASETS = {
    "6-MP vs placebo": (MP_TIME + PLACEBO, MP_EVENT + [1] * 21, ["6mp"] * 21 + ["placebo"] * 21),
    "two groups by hand": ([1, 3, 2, 4], [1, 1, 1, 0], ["A", "A", "B", "B"]),
    "three groups by hand": ([1, 2, 3], [1, 1, 1], ["A", "B", "C"]),
    "ties across groups, censoring at event times": (
        [2, 3, 3, 3, 5, 6, 6, 2, 3, 4, 6, 6],
        [1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0],
        ["pythia"] * 7 + ["mamba"] * 5,
    ),
    "unequal sizes, three archs": (
        [500, 1000, 1000, 2000, 2000, 500, 1500, 2000, 1000, 1000],
        [1, 1, 1, 0, 0, 1, 1, 0, 1, 0],
        ["a", "a", "a", "a", "a", "b", "b", "b", "c", "c"],
    ),
}


def assert_same_logrank_as_lifelines(durations, events, groups):
    from lifelines.statistics import logrank_test as ll_logrank
    from lifelines.statistics import multivariate_logrank_test

    ours = logrank_test(durations, events, groups)
    ref = multivariate_logrank_test(durations, groups, events)
    assert ours.statistic == pytest.approx(ref.test_statistic, rel=1e-10, abs=1e-12)
    assert ours.df == ref.degrees_of_freedom
    assert ours.p_value == pytest.approx(ref.p_value, rel=1e-10, abs=1e-15)
    np.testing.assert_allclose(ours.observed.sum(), np.sum(events))
    np.testing.assert_allclose(ours.expected.sum(), np.sum(events))
    labels = sorted(set(groups), key=str)
    if len(labels) == 2:  # the two-sample form gives the same test
        t, e, g = (np.asarray(x, dtype=object) for x in (durations, events, groups))
        a, b = g == labels[0], g == labels[1]
        pair = ll_logrank(t[a], t[b], e[a].astype(bool), e[b].astype(bool))
        assert ours.p_value == pytest.approx(pair.p_value, rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("name", LOGRANK_DATASETS)
def test_logrank_matches_lifelines(name):
    assert_same_logrank_as_lifelines(*LOGRANK_DATASETS[name])


def test_logrank_matches_lifelines_on_random_data():
    rng = np.random.default_rng(1)
    compared = 0
    while compared < 100:
        t, e = random_dataset(rng)
        g = rng.integers(0, 3, len(t))
        ours = logrank_test(t, e, g)
        informative = ours.expected > 0
        if len(set(g.tolist())) < 2 or not any(e) or not informative.all() or ours.df == 0:
            continue  # the degenerate cases, where the conventions differ: see below
        assert_same_logrank_as_lifelines(t, e, g.tolist())
        compared += 1


def test_logrank_degenerate_cases_differ_from_lifelines_on_purpose():
    from lifelines.statistics import multivariate_logrank_test

    # No event at all: lifelines says chi2 0, p 1; here NaN: there is no test.
    t, e, g = [1, 2, 3, 4], [0, 0, 0, 0], ["A", "A", "B", "B"]
    assert multivariate_logrank_test(t, g, e).p_value == 1
    res = logrank_test(t, e, g)
    assert math.isnan(res.statistic) and math.isnan(res.p_value)
    # One group only (the other architecture has no run yet): no test, in either.
    res = logrank_test([1, 2], [1, 1], ["A", "A"])
    assert math.isnan(res.p_value) and res.df == 0 and res.observed.tolist() == [2]
    # A group all censored before the first event is never at risk at an event time: it adds
    # no degree of freedom (as in R's survdiff); lifelines counts it (df 2), same statistic.
    t, e, g = [0, 0, 1, 2, 3, 2, 3], [0, 0, 1, 1, 1, 1, 0], ["C", "C", "A", "A", "A", "B", "B"]
    res, ref = logrank_test(t, e, g), multivariate_logrank_test(t, g, e)
    assert res.expected[2] == 0 and res.df == 1 and ref.degrees_of_freedom == 2
    assert res.statistic == pytest.approx(ref.test_statistic)
    assert res.p_value == pytest.approx(st.chi2.sf(res.statistic, 1))
    # Never two groups at risk at an event time: nothing to compare, df 0.
    res = logrank_test([0, 1, 6], [0, 0, 1], ["A", "A", "B"])
    assert res.df == 0 and math.isnan(res.statistic)
