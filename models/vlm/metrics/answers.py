"""Evaluation metrics of the VLM as pure functions of predictions and references.

Under an official name, a number equals the official evaluator's (tested on values obtained
by running that code, ``tests/models/vlm/test_official_metrics.py``):

* VQAv2 accuracy (``vqa_score``; ``official[...]["vqa_accuracy"]``): ``vqaEval.py`` of
  GT-Vision-Lab/VQA, see :mod:`vlab.models.vlm.metrics.vqa`;
* TextVQA accuracy (``vqa_score``; ``official[...]["vqa_accuracy"]``): mmf's M4C
  ``TextVQAAccuracyEvaluator``, same module;
* VizWiz accuracy (``vqa_score``; ``official[...]["vqa_accuracy"]``): the VizWiz API's
  ``VQAEval`` (the copy vlm-evaluation scores with), the same leave-one-out rule on the ten
  answers but its own normalisation (the prediction always, the humans' answers never), so not
  VQAv2's number; unanswerable questions included (their answers say "unanswerable"), same
  module;
* ANLS for DocVQA and InfographicVQA: the RRC / docvqa.org script,
  :mod:`vlab.models.vlm.metrics.anls`;
* POPE accuracy, precision, recall, F1, yes ratio: RUCAIBox/POPE ``evaluate.py``,
  :mod:`vlab.models.vlm.metrics.pope`;
* grounding accuracy@0.5 (``iou@0.5``): IoU > 0.5 with the exact reference box, as SHAKEUP's
  authors' RefCOCO code, :mod:`vlab.models.vlm.metrics.grounding`.

vlab's own measures, under names no benchmark uses:

* exact match after answer normalisation (lower case, articles and punctuation removed,
  number words as digits) for GQA, image-text matching, multiple choice and the rest;
* token F1 for short descriptions (dense captions on the built-in dataset);
* caption metrics when the held-out captions carry their references (dataset files), by
  :mod:`vlab.models.vlm.metrics.captions`: the official COCO caption toolkit (CIDEr, BLEU-1..4,
  METEOR, ROUGE-L) where Java runs; without Java ``CIDEr (regex tokens)`` and the other
  pure-Python metrics under such names, no METEOR, and ``captions["unavailable"]`` says why.
  SPICE (8 GB of Java heap, minutes per set) only where asked (``spice``): a benchmark
  evaluation computes it when its jars are there and otherwise names the reason under
  ``unavailable``; training's held-out evaluations leave it out. The built-in shapes captions
  are deterministic, so there exact match is the stricter measure.

Slices: a benchmark whose examples carry one of :data:`SLICE_KEYS` in their meta is also
scored per value of it (``slices``): VQAv2's and VizWiz's answer types, TallyQA's simple /
complex questions, NoCaps' in-, near- and out-of-domain images. A caption slice is scored as a
corpus of its own (:func:`caption_cider_by`: CIDEr's document frequencies come from that
slice's references, as NoCaps' evaluation computes its per-domain CIDEr); any other slice is
the mean of its examples' scores.

:func:`evaluate_predictions` turns the predictions of a held-out set into the per-task record
of ``metrics.jsonl``. Its ``accuracy`` is the mean over tasks of the metrics bounded by 1;
CIDEr (0 to 10, under either name) is reported next to it, never averaged into it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from vlab.models.vlm.data.records import VLSample
from vlab.models.vlm.metrics.anls import anls, levenshtein
from vlab.models.vlm.metrics.grounding import grounding_hit
from vlab.models.vlm.metrics.pope import pope_correct, pope_scores
from vlab.models.vlm.metrics.vqa import textvqa_accuracy, vizwiz_accuracy, vqa_accuracy

__all__ = [
    "anls",
    "caption_cider_by",
    "evaluate_predictions",
    "exact_match",
    "grounding_hit",
    "levenshtein",
    "normalize_answer",
    "score",
    "token_f1",
    "vqa_score",
]

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
    """VQAv2 accuracy of one prediction against the (ten) human answers, equal to the official
    ``vqaEval.py`` (:func:`vlab.models.vlm.metrics.vqa.vqa_accuracy`)."""
    return vqa_accuracy(prediction, answers)


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
    "pope": ("pope_accuracy", pope_correct),
    "itm": ("exact_match", exact_match),
    "mcvqa": ("exact_match", exact_match),
    "dense_caption": ("token_f1", token_f1),
    "grounding": ("iou@0.5", grounding_hit),
}


def score(task: str, prediction: str, reference: str) -> float:
    """The task's metric for one example (1.0 / 0.0 for hit metrics)."""
    _, fn = TASK_METRICS.get(task, ("exact_match", exact_match))
    return float(fn(prediction, reference))


VQA_SCORE_SOURCES = ("vqav2", "textvqa", "vizwiz")  # ten human answers: the official VQA score
ANLS_SOURCES = ("docvqa", "infographicvqa")
# per-sample metric -> its name in the ``official`` record
_OFFICIAL_NAMES = {"vqa_score": "vqa_accuracy", "anls": "anls", "iou@0.5": "accuracy@0.5"}


def _benchmark(source: str) -> str:
    """The benchmark a source is scored as: its name up to the first "_" ("vqav2_val" and
    "vqav2" are VQAv2), so a renamed split keeps its official metric."""
    return source.split("_", 1)[0]


def _sample_score(sample: VLSample, prediction: str) -> tuple[str, float]:
    """The metric name and value of one first-turn prediction, by task and benchmark."""
    answers = sample.meta.get("answers") or []
    bench, reference = _benchmark(sample.source), sample.turns[0].response
    if sample.task == "vqa" and answers and bench == "vqav2":
        return "vqa_score", vqa_accuracy(prediction, answers)
    if sample.task == "vqa" and answers and bench == "vizwiz":
        return "vqa_score", vizwiz_accuracy(prediction, answers)
    if sample.task == "vqa" and answers and bench == "textvqa":
        return "vqa_score", textvqa_accuracy(prediction, answers)
    if sample.task == "vqa" and answers and bench in ANLS_SOURCES:
        return "anls", anls(prediction, answers)
    if sample.task == "grounding":
        return "iou@0.5", float(grounding_hit(prediction, reference, sample.meta))
    name, _ = TASK_METRICS.get(sample.task, ("exact_match", exact_match))
    return name, score(sample.task, prediction, reference)


def _official(task: str, names: set[str], items: list[tuple[VLSample, str, float]]) -> dict:
    """One benchmark's scores under the official names (empty for vlab's own measures)."""
    if task == "pope":
        return pope_scores([p for _, p, _ in items], [s.turns[0].response for s, _, _ in items])
    if len(names) == 1 and (name := next(iter(names))) in _OFFICIAL_NAMES:
        return {_OFFICIAL_NAMES[name]: sum(v for _, _, v in items) / len(items)}
    return {}


# meta keys that split a benchmark's score (the official per-type / per-domain breakdowns)
SLICE_KEYS = ("answer_type", "subset", "domain")


def _groups(items: Sequence[tuple], key: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for item in items:
        value = item[0].meta.get(key)
        if value is not None:
            out.setdefault(str(value), []).append(item)
    return dict(sorted(out.items()))


def caption_cider_by(
    items: Sequence[tuple[VLSample, str]], key: str = "domain"
) -> dict[str, float]:
    """CIDEr of each group of (caption sample, prediction) pairs sharing ``meta[key]``, each
    group scored as a corpus of its own (NoCaps: in-domain, near-domain, out-domain)."""
    return {value: _caption_task(group)[1] for value, group in _groups(items, key).items()}


def _slices(items: Sequence[tuple], caption: bool) -> dict[str, dict[str, float]]:
    """{slice key: {value: score}} of one benchmark, for the :data:`SLICE_KEYS` its samples
    carry."""
    out = {}
    for key in SLICE_KEYS:
        if caption:
            scores = caption_cider_by(items, key)
        else:
            scores = {
                value: sum(v for _, _, v in group) / len(group)
                for value, group in _groups(items, key).items()
            }
        if scores:
            out[key] = scores
    return out


def _caption_task(
    items: Sequence[tuple[VLSample, str]], meteor: bool = False, spice: bool | None = False
) -> tuple[str, float, dict[str, Any]]:
    """(CIDEr's name, CIDEr, every caption metric computed): the official ``CIDEr`` where Java
    runs, else ``CIDEr (regex tokens)``. METEOR and SPICE only if asked (``spice`` as
    :func:`~vlab.models.vlm.metrics.captions.caption_scores` takes it): a source's or
    slice's score is its CIDEr alone."""
    from vlab.models.vlm.metrics.captions import REGEX_TOKENS, caption_scores

    preds = {str(i): p for i, (_, p) in enumerate(items)}
    refs = {
        str(i): list(s.meta.get("references") or [s.turns[0].response])
        for i, (s, _) in enumerate(items)
    }
    scores = caption_scores(preds, refs, spice=spice, meteor=meteor)
    name = "CIDEr" if "CIDEr" in scores else "CIDEr" + REGEX_TOKENS
    return name, scores[name], scores


def evaluate_predictions(
    samples: Sequence[VLSample], predictions: Sequence[str], *, spice: bool | None = False
) -> dict[str, Any]:
    """Held-out scores of greedy answers to the first turn of each sample.

    Returns ``tasks`` (task -> score), ``metrics`` (task -> metric name), ``sources``
    ("source/task" -> score, one per benchmark), ``official`` ("source/task" -> {official
    metric name: value} for the benchmarks with an official evaluator: ``vqa_accuracy``,
    ``anls``, ``accuracy@0.5``, POPE's ``accuracy``/``precision``/``recall``/``f1``/
    ``yes_ratio``; fractions, not percent), ``captions`` (every caption metric, when the
    captions carry references), ``slices`` ("source/task" -> {slice key: {value: score}},
    for the benchmarks whose samples carry a :data:`SLICE_KEYS` field) and ``accuracy``
    (mean of the bounded task scores).

    ``spice``: whether ``captions`` holds SPICE too: False leaves it out (training's held-out
    evaluations: 8 GB of Java heap each time), None computes it where its jars and Java are
    there and otherwise names the reason in ``captions["unavailable"]["SPICE"]`` (benchmark
    evaluations), True requires it.
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    by_task: dict[str, list[tuple[VLSample, str]]] = {}
    for s, p in zip(samples, predictions, strict=True):
        by_task.setdefault(s.task, []).append((s, p))
    tasks, metrics, sources, captions, official, slices = {}, {}, {}, {}, {}, {}
    for task, items in sorted(by_task.items()):
        if task == "caption" and any("references" in s.meta for s, _ in items):
            metrics[task], tasks[task], captions = _caption_task(items, True, spice)
            by_source: dict[str, list] = {}
            for s, p in items:
                by_source.setdefault(s.source, []).append((s, p))
            for src, group in sorted(by_source.items()):
                sources[f"{src}/{task}"] = _caption_task(group)[1]
                if parts := _slices(group, caption=True):
                    slices[f"{src}/{task}"] = parts
            continue
        per_source: dict[str, list[tuple[VLSample, str, float]]] = {}
        source_names: dict[str, set[str]] = {}
        for s, p in items:
            name, value = _sample_score(s, p)
            source_names.setdefault(s.source, set()).add(name)
            per_source.setdefault(s.source, []).append((s, p, value))
        metrics[task] = "/".join(sorted(set().union(*source_names.values())))
        totals = [sum(v for _, _, v in group) for group in per_source.values()]
        tasks[task] = sum(totals) / len(items)
        for src, group in sorted(per_source.items()):
            sources[f"{src}/{task}"] = sum(v for _, _, v in group) / len(group)
            if scores := _official(task, source_names[src], group):
                official[f"{src}/{task}"] = scores
            if parts := _slices(group, caption=False):
                slices[f"{src}/{task}"] = parts
    bounded = [v for t, v in tasks.items() if not metrics[t].startswith("CIDEr")]
    out: dict[str, Any] = {
        "accuracy": sum(bounded) / len(bounded) if bounded else 0.0,
        "tasks": tasks,
        "metrics": metrics,
        "sources": sources,
        "official": official,
    }
    if captions:
        out["captions"] = captions
    if slices:
        out["slices"] = slices
    return out
