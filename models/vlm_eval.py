"""Evaluation metrics of the VLM as pure functions of predictions and references.

* exact match after answer normalisation (VQA-style: lower case, articles and punctuation
  removed, number words as digits) for VQA, GQA, POPE, image-text matching, multiple choice;
* the official VQAv2 score: an answer counts ``min(#humans who gave it / 3, 1)``, averaged over
  the ten leave-one-annotator-out subsets;
* grounding accuracy: a hit when the predicted box has IoU >= 0.5 with the reference;
* token F1 for short descriptions (dense captions on the built-in dataset).

Caption metrics of the papers (CIDEr, BLEU-4, METEOR, ROUGE-L, SPICE) need the COCO caption
toolkit and are not implemented here yet.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from vlab.models.vlm_data.records import box_iou, parse_box

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
