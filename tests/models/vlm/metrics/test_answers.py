"""VLM metrics on known inputs: VQA score, ANLS, per-benchmark held-out records."""

import json
import os
import subprocess
import sys

import pytest

from vlab.models.vlm.data.records import Turn, VLSample
from vlab.models.vlm.metrics.answers import anls, evaluate_predictions, levenshtein, vqa_score
from vlab.models.vlm.metrics.captions import REGEX_TOKENS, java_problem


def _s(task, source, response, **meta):
    return VLSample("x.jpg", "1", task, source, [Turn("q", response)], meta)


def test_levenshtein_and_anls():
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3
    assert anls("Kitten", ["kitten"]) == 1.0
    # 1 edit in 6 characters: NL = 1/6 < 0.5
    assert anls("kitten", ["sitten", "zzz"]) == pytest.approx(5 / 6)
    assert anls("abc", ["xyz"]) == 0.0  # NL = 1 >= 0.5


def test_vqa_score_counts_humans():
    answers = ["two"] * 2 + ["2"] + ["three"] * 7
    # "2" and "two" normalise the same: 3 humans -> full credit in every leave-one-out subset
    assert vqa_score("2", answers[:10]) == pytest.approx(1.0 * 7 / 10 + (2 / 3) * 3 / 10)


def test_evaluate_predictions_scores_each_benchmark_with_its_metric():
    samples = [
        # humans disagree, so vqaEval.py normalises "two" to "2" (ten equal answers it would not)
        _s("vqa", "vqav2", "2", answers=["2"] * 9 + ["two"]),
        _s("vqa", "gqa", "left"),
        _s("vqa", "docvqa", "total", answers=["total", "sum"]),
        _s("grounding", "refcoco", "[0.10, 0.10, 0.50, 0.50]"),
        _s("pope", "pope", "yes"),
    ]
    preds = ["two", "right", "totals", "[0.10, 0.10, 0.50, 0.50]", "no"]
    out = evaluate_predictions(samples, preds)
    assert out["sources"] == pytest.approx(
        {
            "vqav2/vqa": 1.0,
            "gqa/vqa": 0.0,
            "docvqa/vqa": 1 - 1 / 6,
            "refcoco/grounding": 1.0,
            "pope/pope": 0.0,
        }
    )
    assert out["metrics"]["vqa"] == "anls/exact_match/vqa_score"
    assert out["tasks"]["vqa"] == pytest.approx((1.0 + 0.0 + 5 / 6) / 3)
    assert out["accuracy"] == pytest.approx((out["tasks"]["vqa"] + 1.0 + 0.0) / 3)
    assert "captions" not in out


def test_caption_references_switch_captions_to_cider():
    caps = [
        _s("caption", "coco", "a dog on a bed", references=["a dog on a bed", "a dog sleeping"]),
        _s("caption", "coco", "two cats", references=["two cats on a sofa", "cats"]),
    ]
    out = evaluate_predictions(caps + [_s("vqa", "gqa", "yes")], ["a dog on a bed", "a car", "yes"])
    # the official toolkit where Java runs, else the pure-Python CIDEr under its own name
    official = java_problem() is None
    cider = "CIDEr" if official else "CIDEr" + REGEX_TOKENS
    assert out["metrics"]["caption"] == cider
    assert out["tasks"]["caption"] == out["captions"][cider] == out["sources"]["coco/caption"] > 0
    assert ("METEOR" in out["captions"]) == official
    assert ("METEOR" in out["captions"].get("unavailable", {})) != official
    assert out["accuracy"] == 1.0  # CIDEr is not averaged into accuracy


def test_caption_scores_without_java_keep_cider_under_its_own_name():
    # a real machine without Java: the same evaluation in a Python whose PATH holds no 'java'
    code = """
import json
from vlab.models.vlm.data.records import Turn, VLSample
from vlab.models.vlm.metrics.answers import evaluate_predictions
refs = {"references": ["a dog on a bed", "a dog sleeping"]}
samples = [VLSample("x.jpg", "1", "caption", "coco", [Turn("q", "a dog on a bed")], refs),
           VLSample("x.jpg", "1", "vqa", "gqa", [Turn("q", "yes")], {})]
print(json.dumps(evaluate_predictions(samples, ["a dog on a bed", "yes"])))
"""
    env = {**os.environ, "PATH": ""}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    out = json.loads(run.stdout)
    assert out["metrics"]["caption"] == "CIDEr" + REGEX_TOKENS
    assert out["accuracy"] == 1.0  # the regex-token CIDEr is not averaged in either
    assert "METEOR" not in out["captions"] and "CIDEr" not in out["captions"]
    assert out["captions"]["unavailable"]["METEOR"].startswith("no 'java' on PATH")
