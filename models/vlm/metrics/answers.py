"""Evaluation metrics of the VLM as pure functions of predictions and references.

* exact match after answer normalisation (VQA-style: lower case, articles and punctuation
  removed, number words as digits) for VQA, GQA, POPE, image-text matching, multiple choice;
* the official VQAv2 score: an answer counts ``min(#humans who gave it / 3, 1)``, averaged over
  the ten leave-one-annotator-out subsets;
* ANLS (average normalised Levenshtein similarity, threshold 0.5) for DocVQA and
  InfographicVQA, whose answers are read off the page;
* grounding accuracy: a hit when the predicted box has IoU >= 0.5 with the reference;
* token F1 for short descriptions (dense captions on the built-in dataset).

* caption metrics (CIDEr, BLEU-4, METEOR, ROUGE-L, SPICE) of :mod:`vlab.models.vlm.metrics.captions`
  when the held-out captions carry their references (dataset files); the built-in shapes
  captions are deterministic, so there exact match is the stricter measure.

:func:`evaluate_predictions` turns the predictions of a held-out set into the per-task record
of ``metrics.jsonl``. Its ``accuracy`` is the mean over tasks of the metrics bounded by 1;
CIDEr (0 to 10) is reported next to it, never averaged into it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from vlab.models.vlm.data.records import VLSample, box_iou, parse_box

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$:]|(?<!\d)\.(?!\d)")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles removed, number words as digits, spaces squeezed."""
    text = _PUNCT.sub(" ", text.lower().strip())
    words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """Official VQAv2 accuracy of one prediction against the (ten) human answers."""
    pred = normalize_answer(prediction)
    norm = [normalize_answer(a) for a in answers]
    if len(norm) < 2:
        return float(bool(norm) and pred == norm[0])
    scores = []
    for i in range(len(norm)):
        others = norm[:i] + norm[i + 1 :]
        scores.append(min(1.0, sum(a == pred for a in others) / 3))
    return sum(scores) / len(scores)


def grounding_hit(prediction: str, reference: str, threshold: float = 0.5) -> bool:
    """True when the first box in ``prediction`` overlaps the reference box at IoU >= 0.5."""
    pred, ref = parse_box(prediction), parse_box(reference)
    return pred is not None and ref is not None and box_iou(pred, ref) >= threshold


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall on normalised words."""
    p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


# task -> metric on (prediction, reference); "fine" tasks need retrieval of one item
TASK_METRICS = {
    "caption": ("exact_match", exact_match),
    "vqa": ("exact_match", exact_match),
    "pope": ("exact_match", exact_match),
    "itm": ("exact_match", exact_match),
    "mcvqa": ("exact_match", exact_match),
    "dense_caption": ("token_f1", token_f1),
    "grounding": ("iou@0.5", grounding_hit),
}


def score(task: str, prediction: str, reference: str) -> float:
    """The task's metric for one example (1.0 / 0.0 for hit metrics)."""
    _, fn = TASK_METRICS.get(task, ("exact_match", exact_match))
    return float(fn(prediction, reference))


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


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """DocVQA's ANLS of one prediction: the best ``1 - NL`` over the answers, where NL is the
    edit distance over the longer string's length (lower case, trimmed); 0 when NL >= 0.5."""
    pred = " ".join(prediction.lower().split())
    best = 0.0
    for ans in answers:
        ref = " ".join(str(ans).lower().split())
        longest = max(len(pred), len(ref))
        nl = levenshtein(pred, ref) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


VQA_SCORE_SOURCES = ("vqav2", "textvqa")  # ten human answers each: the official VQA score
ANLS_SOURCES = ("docvqa", "infographicvqa")


def _sample_score(sample: VLSample, prediction: str) -> tuple[str, float]:
    """The metric name and value of one first-turn prediction, by task and benchmark."""
    answers = sample.meta.get("answers") or []
    if sample.task == "vqa" and answers and sample.source in VQA_SCORE_SOURCES:
        return "vqa_score", vqa_score(prediction, answers)
    if sample.task == "vqa" and answers and sample.source in ANLS_SOURCES:
        return "anls", anls(prediction, answers)
    name, _ = TASK_METRICS.get(sample.task, ("exact_match", exact_match))
    return name, score(sample.task, prediction, sample.turns[0].response)


def _caption_task(items: list[tuple[VLSample, str]]) -> tuple[str, float, dict[str, float]]:
    from vlab.models.vlm.metrics.captions import caption_scores

    preds = {str(i): p for i, (_, p) in enumerate(items)}
    refs = {
        str(i): list(s.meta.get("references") or [s.turns[0].response])
        for i, (s, _) in enumerate(items)
    }
    scores = caption_scores(preds, refs, spice=False)
    return "CIDEr", scores["CIDEr"], scores


def evaluate_predictions(samples: Sequence[VLSample], predictions: Sequence[str]) -> dict[str, Any]:
    """Held-out scores of greedy answers to the first turn of each sample.

    Returns ``tasks`` (task -> score), ``metrics`` (task -> metric name), ``sources``
    ("source/task" -> score, one per benchmark), ``captions`` (every caption metric, when the
    captions carry references) and ``accuracy`` (mean of the bounded task scores).
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    by_task: dict[str, list[tuple[VLSample, str]]] = {}
    for s, p in zip(samples, predictions, strict=True):
        by_task.setdefault(s.task, []).append((s, p))
    tasks, metrics, sources, captions = {}, {}, {}, {}
    for task, items in sorted(by_task.items()):
        if task == "caption" and any("references" in s.meta for s, _ in items):
            metrics[task], tasks[task], captions = _caption_task(items)
            by_source: dict[str, list] = {}
            for s, p in items:
                by_source.setdefault(s.source, []).append((s, p))
            for src, group in sorted(by_source.items()):
                sources[f"{src}/{task}"] = _caption_task(group)[1]
            continue
        per_source: dict[str, list[float]] = {}
        names = set()
        for s, p in items:
            name, value = _sample_score(s, p)
            names.add(name)
            per_source.setdefault(s.source, []).append(value)
        metrics[task] = "/".join(sorted(names))
        tasks[task] = sum(sum(v) for v in per_source.values()) / len(items)
        for src, values in sorted(per_source.items()):
            sources[f"{src}/{task}"] = sum(values) / len(values)
    bounded = [v for t, v in tasks.items() if metrics[t] != "CIDEr"]
    out: dict[str, Any] = {
        "accuracy": sum(bounded) / len(bounded) if bounded else 0.0,
        "tasks": tasks,
        "metrics": metrics,
        "sources": sources,
    }
    if captions:
        out["captions"] = captions
    return out
