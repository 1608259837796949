"""ANLS (average normalised Levenshtein similarity) as the official DocVQA / InfographicVQA
evaluation script computes it.

The script is the Robust Reading Competition's (https://rrc.cvc.uab.es, docvqa.org); the copy
read and run for the tests is QwenLM/Qwen-VL ``eval_mm/infographicsvqa_eval.py`` (commit
aa00ed0), the same per-question rule as DocVQA's. For one question:

* both strings are trimmed, lower-cased and their inner whitespace squeezed to one space;
* NL = edit distance of those / the length of the longer *raw* string (as given, upper-cased:
  surrounding spaces count, "ß" counts two); 0 when both are empty;
* the score is ``1 - min(NL)`` over the reference answers, set to 0 when below the threshold
  0.5, so NL = 0.5 exactly still scores 0.5 (the ST-VQA paper's ``NL < 0.5`` would give 0).
"""

from __future__ import annotations

from collections.abc import Sequence


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of characters)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _squeeze(text: str) -> str:
    return " ".join(text.strip().lower().split())


def normalized_levenshtein(prediction: str, answer: str) -> float:
    """The official NL of one (prediction, answer) pair (see the module docstring)."""
    length = max(len(answer.upper()), len(prediction.upper()))
    return levenshtein(_squeeze(answer), _squeeze(prediction)) / length if length else 0.0


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """One question's ANLS, equal to the official script's per-sample score (its overall ANLS
    is the mean over questions). No reference answer scores 0 (the script would fail)."""
    if not answers:
        return 0.0
    score = 1 - min(normalized_levenshtein(prediction, str(a)) for a in answers)
    return 0.0 if score < threshold else score
