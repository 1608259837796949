"""The length trend: ratios of medians per length and their slope on log L, with known answers."""

import io
import math

import numpy as np
import pandas as pd
import pytest

from vlab.analysis import plots
from vlab.analysis.length_trend import (
    km_median_point,
    length_summary,
    length_trend,
    pick_baseline,
    ratio_table,
)
from vlab.analysis.stats import kaplan_meier, km_median


def runs(arch, variant, length, times, events=None):
    events = [True] * len(times) if events is None else events
    return pd.DataFrame(
        {
            "arch": arch,
            "variant": variant,
            "length": length,
            "examples": [float(t) for t in times],
            "event": events,
        }
    )


def table(*parts):
    return pd.concat(parts, ignore_index=True)


def test_median_point_equals_the_kaplan_meier_median():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        t = rng.integers(1, 6, size=n).astype(float) * 100
        e = rng.random(n) < 0.7
        assert km_median_point(t, e) == km_median(kaplan_meier(t, e))[0]


def test_a_ratio_that_doubles_with_length_has_slope_one_and_grows():
    sel = table(
        *(runs("pythia", "suffix", n, [100 * n] * 3) for n in (4, 8, 16)),
        *(runs("mamba", "suffix", n, [100 * n * n / 4] * 3) for n in (4, 8, 16)),
    )
    trend = length_trend(sel, n_boot=200)
    assert trend.baseline == "pythia"
    assert trend.ratios["ratio"].tolist() == pytest.approx([1.0, 2.0, 4.0])
    (fit,) = trend.trends.itertuples()
    assert (fit.slope, fit.low, fit.high) == pytest.approx((1.0, 1.0, 1.0))
    assert fit.lengths == [4, 8, 16] and fit.unfitted == 0
    words = length_summary(trend)
    assert "L^1.00" in words and "mamba's cost relative to pythia grows with length" in words


def test_a_shrinking_ratio_and_a_flat_noisy_one_are_told_apart():
    shrinking = table(
        *(runs("pythia", "prefix", n, [1000] * 3) for n in (4, 16)),
        runs("mamba2", "prefix", 4, [2000] * 3),
        runs("mamba2", "prefix", 16, [500] * 3),
    )
    assert "shrinks with length" in length_summary(length_trend(shrinking, n_boot=200))
    flat = table(
        *(runs("pythia", "suffix", n, [900, 1000, 1100]) for n in (4, 8)),
        runs("hybrid", "suffix", 4, [500, 1000, 2000]),
        runs("hybrid", "suffix", 8, [600, 1000, 1800]),
    )
    trend = length_trend(flat, n_boot=500)
    (fit,) = trend.trends.itertuples()
    assert fit.low < 0 < fit.high
    assert "no clear trend" in length_summary(trend)


def test_a_median_not_reached_is_named_and_left_out_of_the_fit():
    sel = table(
        *(runs("pythia", "suffix", n, [100 * n] * 3) for n in (4, 8, 16)),
        runs("mamba", "suffix", 4, [800] * 3),
        runs("mamba", "suffix", 8, [1600] * 3),
        runs("mamba", "suffix", 16, [5000] * 3, [False] * 3),  # never reached
    )
    trend = length_trend(sel, n_boot=200)
    row = trend.ratios.set_index("length").loc[16]
    assert math.isinf(row["ratio"]) and math.isinf(row["median"])
    (fit,) = trend.trends.itertuples()
    assert fit.lengths == [4, 8] and fit.slope == pytest.approx(0.0)
    words = length_summary(trend)
    assert "L = 16: mamba did not reach it in half its runs (pythia's median 1,600)" in words
    assert ratio_table(trend).set_index("length").loc[16, "median"] == "not reached"
    assert plots.length_ratios(trend) is not None


def test_the_baseline_is_the_flagged_family_and_the_result_is_deterministic():
    assert pick_baseline(["hybrid", "pythia"]) == "pythia"
    assert pick_baseline(["mamba2", "mamba"]) == "mamba"  # the families' order
    sel = table(
        *(runs("pythia", "suffix", n, [900, 1000, 1300]) for n in (4, 8)),
        *(runs("mamba", "suffix", n, [700 * n, 800 * n, 1200 * n]) for n in (4, 8)),
    )
    a, b = length_trend(sel, seed=3), length_trend(sel, seed=3)
    pd.testing.assert_frame_equal(a.ratios, b.ratios)
    pd.testing.assert_frame_equal(a.trends, b.trends)


def test_a_panel_where_neither_arm_reached_the_threshold_still_draws():
    sel = table(
        runs("pythia", "suffix", 4, [100] * 3, [False] * 3),
        runs("mamba", "suffix", 4, [100] * 3, [False] * 3),
    )
    trend = length_trend(sel, n_boot=10)
    assert math.isnan(trend.ratios["ratio"].iloc[0])
    assert "neither reached the threshold" in length_summary(trend)
    plots.length_ratios(trend).savefig(io.BytesIO(), format="png")


def test_no_baseline_pair_says_so():
    trend = length_trend(runs("mamba", "suffix", 4, [100] * 3), n_boot=10)
    assert trend.ratios.empty and "No length comparison" in length_summary(trend)
