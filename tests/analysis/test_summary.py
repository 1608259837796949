"""The summary's words on hand-made tables whose answers are known."""

import pandas as pd
import pytest

from vlab.analysis.summary import comparison_summary, evidence_words, panel_sentence


def runs(arch, times, events, lr=1e-3, state="done", length=4, variant="suffix"):
    return pd.DataFrame(
        {
            "run": [f"{arch}-{i}" for i in range(len(times))],
            "length": length,
            "variant": variant,
            "arch": arch,
            "lr": lr,
            "examples": [float(t) for t in times],
            "event": events,
            "state": state,
        }
    )


def test_one_arm_reaches_the_other_is_censored():
    sel = pd.concat(
        [runs("mamba", [1000, 1000, 1000], [True] * 3), runs("pythia", [5000] * 3, [False] * 3)]
    )
    text = panel_sentence(sel, threshold=0.95)
    assert text.startswith("**mamba** reached accuracy 0.95 with fewer examples: median 1,000")
    assert "pythia did not within the budget: 0 of 3 runs reached it" in text
    assert "beyond 5,000 examples" in text and "more than 5x mamba's median" in text
    assert "mamba 3 runs, 0 censored; pythia 3 runs, 3 censored" in text
    assert "log-rank p = 0.0" in text and "pilot" not in text


def test_both_reach_ratio_difference_and_strength():
    fast = runs("pythia", [100, 200, 300, 400, 500], [True] * 5, lr=2e-3)
    slow = runs("mamba", [600, 700, 800, 900, 1000], [True] * 5, lr=4e-3)
    text = panel_sentence(pd.concat([slow, fast]))
    assert text.startswith("**pythia** reached the threshold with fewer examples: median 300")
    assert "against 800" in text and "mamba needed 2.7x as many (500 more)" in text
    assert "selected learning rates: mamba 0.004, pythia 0.002" in text
    assert "Evidence of a difference: strong" in text  # log-rank p = 0.0018


def test_neither_reached_and_too_few_runs_are_said_honestly():
    sel = pd.concat(
        [runs("mamba", [900], [False], state="running"), runs("pythia", [900], [False])]
    )
    text = panel_sentence(sel)
    assert text.startswith("neither architecture reached the threshold in half of its runs")
    assert "mamba 0 of 1, pythia 0 of 1" in text and "no test possible" in text
    assert "read this as a pilot" in text and "still going" in text
    one = panel_sentence(runs("mamba", [10, 20], [True, True]))
    assert one.startswith("only mamba has evaluated runs") and "not enough runs to compare" in one


def test_no_difference_is_not_called_evidence():
    a = runs("mamba", [100, 300, 500], [True] * 3)
    b = runs("pythia", [200, 300, 400], [True] * 3)
    text = panel_sentence(pd.concat([a, b]))
    assert "same median, 300 examples" in text
    assert "none to speak of" in text


def test_one_bullet_per_length_and_variant_in_order():
    sel = pd.concat(
        [
            runs("mamba", [10, 20], [True] * 2, variant="prefix"),
            runs("mamba", [10, 20], [True] * 2, length=8),
            runs("pythia", [30, 40], [True] * 2, length=8),
            runs("mamba", [10, 20], [True] * 2),
        ]
    )
    lines = comparison_summary(sel).splitlines()
    assert [line.split("**:")[0] for line in lines] == [
        "- **L = 4, suffix",
        "- **L = 4, prefix",
        "- **L = 8, suffix",
    ]
    assert "**mamba** reached" in lines[2]
    assert comparison_summary(sel.iloc[0:0]).startswith("No run has been evaluated yet")


@pytest.mark.parametrize(
    "p, words",
    [(0.0001, "very strong"), (0.005, "strong"), (0.03, "moderate"), (0.07, "weak")],
)
def test_evidence_words(p, words):
    assert evidence_words(p) == words
    assert evidence_words(float("nan")) == "no test possible"
