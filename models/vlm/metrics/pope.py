"""POPE scores as the benchmark's own ``evaluate.py`` (RUCAIBox/POPE, commit 3df3ba1) reads and
counts them.

An answer is read as "no" when its first sentence (the text before the first ``.``), with its
commas deleted and split on single spaces, contains the word ``No``, ``no`` or ``not``
exactly; anything else is "yes" ("NO", "no!", "Not sure" and "nope" are all yes). A label is
"no" when it is exactly ``"no"``, else "yes". "yes" is the positive class: accuracy, precision,
recall, F1 and the ratio of "yes" answers over one POPE split (random, popular, adversarial).
Where the script would divide by zero (no "yes" answer, no "yes" label) the value is 0.
"""

from __future__ import annotations

from collections.abc import Sequence

POPE_METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
_NO_WORDS = frozenset({"No", "no", "not"})


def pope_reading(answer: str) -> str:
    """How the official script reads one generated answer: "no" or "yes"."""
    first = answer.split(".")[0]
    return "no" if _NO_WORDS.intersection(first.replace(",", "").split(" ")) else "yes"


def pope_correct(prediction: str, label: str) -> bool:
    """True when the official reading of ``prediction`` equals the label."""
    return pope_reading(prediction) == ("no" if label == "no" else "yes")


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def pope_scores(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """The five numbers the official script prints for one split (fractions, not percent)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    pred = [pope_reading(p) == "yes" for p in predictions]
    gold = [label != "no" for label in labels]
    tp = sum(p and g for p, g in zip(pred, gold, strict=True))
    fp = sum(p and not g for p, g in zip(pred, gold, strict=True))
    tn = sum(not p and not g for p, g in zip(pred, gold, strict=True))
    fn = sum(not p and g for p, g in zip(pred, gold, strict=True))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": _ratio(tp + tn, len(pred)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": _ratio(sum(pred), len(pred)),
    }
