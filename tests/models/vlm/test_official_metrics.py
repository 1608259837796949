"""Answer metrics reported under an official name equal the official code's numbers.

The expected values in ``fixtures/official_metrics.json`` were computed once by running each
official evaluator, unmodified, on the cases stored next to them (scratch copies outside the
repository, never committed; the tests download nothing). Each section names its source:

* VQAv2: GT-Vision-Lab/VQA @ a013f00, ``vqaEval.py`` + ``vqa.py``, under Python 2.7.18, with a
  subclass of ``VQAEval`` recording each question's accuracy before the script rounds it;
* TextVQA: facebookresearch/mmf @ b0ffc7f, ``mmf/utils/m4c_evaluators.py``
  (``TextVQAAccuracyEvaluator`` on one entry per case, ``EvalAIAnswerProcessor``);
* VizWiz: TRI-ML/vlm-evaluation @ d9f5896, ``vlm_eval/util/evaluation/vizwiz/eval.py`` (the
  VizWiz API's ``VQAEval``), with a subclass recording each question's accuracy before its
  rounding;
* ANLS: QwenLM/Qwen-VL @ aa00ed0, ``eval_mm/infographicsvqa_eval.py`` (the RRC / docvqa.org
  script), ``evaluate_method`` per-sample scores;
* POPE: RUCAIBox/POPE @ 3df3ba1, ``evaluate.py`` run on three answer / label files, readings
  and metrics read from its globals;
* grounding: gpantaz/vl_mamba @ c788f5f (SHAKEUP's authors), ``compute_score`` of
  ``evaluate_refcoco.py`` with their ``Boxes`` (torch float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlab.models.vlm.data.records import Turn, VLSample
from vlab.models.vlm.data.shapes import ShapesConfig, shapes_samples
from vlab.models.vlm.metrics.anls import anls, normalized_levenshtein
from vlab.models.vlm.metrics.answers import evaluate_predictions, vqa_score
from vlab.models.vlm.metrics.grounding import exact_box, grounding_hit, grounding_iou
from vlab.models.vlm.metrics.pope import pope_reading, pope_scores
from vlab.models.vlm.metrics.vqa import (
    textvqa_accuracy,
    textvqa_normalize,
    vizwiz_accuracy,
    vqa_accuracy,
)

FIXTURE = json.loads(
    (Path(__file__).parent / "fixtures" / "official_metrics.json").read_text(encoding="utf-8")
)


def _failures(section: str, fn) -> list:
    cases = FIXTURE[section]["cases"]
    return [(c, fn(c)) for c in cases if fn(c) != c["expected"]]


def test_vqav2_accuracy_equals_vqaeval_on_every_case():
    assert _failures("vqav2", lambda c: vqa_accuracy(c["prediction"], c["answers"])) == []
    assert _failures("vqav2", lambda c: vqa_score(c["prediction"], c["answers"])) == []
    cases = FIXTURE["vqav2"]["cases"]
    mean = sum(vqa_accuracy(c["prediction"], c["answers"]) for c in cases) / len(cases)
    assert round(100 * mean, 2) == FIXTURE["vqav2"]["overall_percent"]


def test_vqav2_quirks():
    # ten identical answers: no normalisation at all
    assert vqa_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy("yes.", ["yes"] * 9 + ["no"]) == 1.0
    # a comma between digits anywhere glues every punctuation mark
    assert vqa_accuracy("1,000", ["1000"] * 4 + ["x"] * 6) == 1.0
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


def test_vizwiz_accuracy_equals_the_vizwiz_api_on_every_case():
    assert _failures("vizwiz", lambda c: vizwiz_accuracy(c["prediction"], c["answers"])) == []
    # the prediction is always normalised, the humans' answers never: not VQAv2's rule
    assert vizwiz_accuracy("Unanswerable", ["unanswerable"] * 10) == 1.0
    assert vqa_accuracy("Unanswerable", ["unanswerable"] * 10) == 0.0
    assert vizwiz_accuracy("Yes", ["yes"] * 10) == 1.0
    assert vizwiz_accuracy("yes", ["Yes"] * 10) == 0.0
    assert vizwiz_accuracy("dont", ["don't"] * 10) == 0.0  # its table says "don`t"


def test_textvqa_accuracy_equals_mmf_m4c_evaluator_on_every_case():
    assert _failures("textvqa", lambda c: textvqa_accuracy(c["prediction"], c["answers"])) == []
    cases = FIXTURE["textvqa"]["cases"]
    assert [textvqa_normalize(c["prediction"]) for c in cases] == [c["normalized"] for c in cases]


def test_anls_equals_the_rrc_script_on_every_case():
    assert _failures("anls", lambda c: anls(c["prediction"], c["answers"])) == []
    cases = FIXTURE["anls"]["cases"]
    mean = sum(anls(c["prediction"], c["answers"]) for c in cases) / len(cases)
    assert mean == pytest.approx(FIXTURE["anls"]["overall"], abs=1e-15)


def test_anls_on_hand_computed_values():
    assert anls("kitten", ["sitting"]) == pytest.approx(1 - 3 / 7)
    assert anls("Kitten", ["kitten"]) == 1.0
    assert anls("abc", ["xyz"]) == 0.0  # NL = 1
    assert anls("ab", ["ac"]) == 0.5  # NL = 0.5 exactly still scores
    assert anls("abcdef", ["abcxyz", "abcdeg"]) == pytest.approx(5 / 6)  # best answer
    # the denominator is the raw length: three spaces each side make NL = 1/10
    assert normalized_levenshtein("   abcd   ", "abce") == pytest.approx(0.1)
    assert anls("", [""]) == 1.0 and anls("x", []) == 0.0


def test_pope_equals_the_official_script_per_split():
    for split in FIXTURE["pope"]["splits"]:
        assert [pope_reading(a) for a in split["answers"]] == split["readings"]
        assert pope_scores(split["answers"], split["labels"]) == split["expected"]


def test_pope_without_yes_answers_scores_zero_where_the_script_divides_by_zero():
    out = pope_scores(["No.", "no"], ["yes", "no"])
    assert out == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}


def test_grounding_equals_the_authors_compute_score():
    for c in FIXTURE["grounding"]["cases"]:
        meta = {k: c[k] for k in ("box_xywh", "width", "height")}
        assert grounding_hit(c["prediction"], "", meta) is bool(c["hit"]), c
        # theirs is float32
        assert grounding_iou(c["prediction"], "", meta) == pytest.approx(c["iou"], abs=1e-5)


def test_grounding_scores_against_the_exact_box_not_its_text():
    meta = {"box_xywh": [169.1, 302.3, 13.1, 6.5], "width": 640, "height": 427}
    text = "[0.26, 0.71, 0.28, 0.72]"  # the training target of this box
    assert grounding_iou(text, text) == 1.0  # the old reference: the text itself
    assert grounding_iou(text, text, meta) == pytest.approx(0.446, abs=1e-3)
    assert not grounding_hit(text, text, meta)
    # IoU exactly 0.5 is a miss (strictly greater, as the authors)
    half = {"box_xywh": [0, 0, 100, 100], "width": 100, "height": 100}
    assert grounding_iou("[0, 0, 0.5, 1]", "", half) == 0.5
    assert not grounding_hit("[0, 0, 0.5, 1]", "", half)
    assert grounding_iou("no box here", "", half) == 0.0


def test_shapes_grounding_uses_the_pixel_box():
    cfg = ShapesConfig()
    sample = next(s for s in shapes_samples(cfg, "held_out", 40) if s.task == "grounding")
    ref_px, w, h = exact_box(sample.meta)
    target = sample.meta["objects"][sample.meta["target"]]["box_px"]
    assert ref_px == tuple(float(v) for v in target) and w == h == cfg.image_size
    box = f"[{ref_px[0] / w}, {ref_px[1] / h}, {ref_px[2] / w}, {ref_px[3] / h}]"
    assert grounding_iou(box, sample.turns[0].response, sample.meta) == pytest.approx(1.0)


def _s(task, source, response, **meta):
    return VLSample("x.jpg", "1", task, source, [Turn("q", response)], meta)


def test_evaluate_predictions_reports_official_names():
    box = {"box_xywh": [169.1, 302.3, 13.1, 6.5], "width": 640, "height": 427}
    samples = [
        _s("vqa", "vqav2_val", "yes", answers=["yes"] * 10),
        _s("vqa", "textvqa", "stop", answers=["STOP"] * 10),
        _s("vqa", "docvqa", "total", answers=["total"]),
        _s("grounding", "refcoco_val", "[0.26, 0.71, 0.28, 0.72]", **box),
        _s("pope", "pope_random", "yes", label="yes"),
        _s("pope", "pope_random", "no", label="no"),
        _s("pope", "pope_random", "no", label="no"),
        _s("vqa", "gqa", "left"),
    ]
    preds = ["Yes", "stop.", "Total", "[0.26, 0.71, 0.28, 0.72]", "Yes, there is.", "NO", "No."]
    out = evaluate_predictions(samples, [*preds, "left"])
    assert out["sources"]["vqav2_val/vqa"] == 0.0  # ten identical answers: "Yes" != "yes"
    assert out["sources"]["textvqa/vqa"] == 1.0
    assert out["sources"]["refcoco_val/grounding"] == 0.0  # the exact box, IoU 0.45
    assert out["sources"]["pope_random/pope"] == pytest.approx(2 / 3)  # "NO" reads as yes
    assert out["metrics"]["pope"] == "pope_accuracy"
    assert out["official"] == {
        "vqav2_val/vqa": {"vqa_accuracy": 0.0},
        "textvqa/vqa": {"vqa_accuracy": 1.0},
        "docvqa/vqa": {"anls": 1.0},
        "refcoco_val/grounding": {"accuracy@0.5": 0.0},
        "pope_random/pope": {
            "accuracy": 2 / 3,
            "precision": 0.5,
            "recall": 1.0,
            "f1": 2 / 3,
            "yes_ratio": 2 / 3,
        },
    }
