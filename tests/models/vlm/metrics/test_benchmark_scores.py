"""Scores of the benchmarks added with their readers: NoCaps CIDEr per domain, VizWiz's own VQA
accuracy per answer type, TallyQA simple / complex, Visual7W pointing as a four-way choice."""

from pathlib import Path

import pytest

from vlab.models.vlm.data import readers as R
from vlab.models.vlm.data.records import Turn, VLSample
from vlab.models.vlm.metrics.answers import caption_cider_by, evaluate_predictions

FX = Path(__file__).parents[1] / "fixtures" / "vlm"


def _caption(image_id: str, domain: str, reference: str) -> VLSample:
    """A held-out NoCaps caption example as preparation leaves it (references merged)."""
    meta = {"domain": domain, "references": [reference]}
    return VLSample(f"{image_id}.jpg", image_id, "caption", "nocaps", [Turn("", reference)], meta)


def test_nocaps_cider_per_domain_scores_each_domain_as_its_own_corpus():
    # in-domain: two images whose predictions repeat their one reference, no word shared
    # between the images. Every n-gram then has document frequency 1 of 2, so each image's
    # candidate and reference vectors are equal and non-zero: cosine 1, no length penalty,
    # CIDEr-D = 10 x mean over n of 1 = 10 exactly. out-domain: predictions sharing no word
    # with their references score 0.
    samples = [
        _caption("1", "in-domain", "red fire engine parked outside station"),
        _caption("2", "in-domain", "small brown puppy sleeping soundly indoors"),
        _caption("3", "out-domain", "jellyfish floating in dark water"),
        _caption("4", "out-domain", "orange fish swimming near coral reef"),
    ]
    predictions = [
        "red fire engine parked outside station",
        "small brown puppy sleeping soundly indoors",
        "tall green tree beside road",
        "man holding yellow umbrella today",
    ]
    out = evaluate_predictions(samples, predictions)
    domains = out["slices"]["nocaps/caption"]["domain"]
    assert domains == pytest.approx({"in-domain": 10.0, "out-domain": 0.0})
    # over all four images the two perfect captions still score 10 each: 5 overall
    assert out["sources"]["nocaps/caption"] == pytest.approx(5.0)
    assert caption_cider_by(list(zip(samples, predictions, strict=True))) == domains


def test_nocaps_reader_feeds_the_domain_slices():
    read = list(R.read_nocaps(FX / "nocaps/nocaps_val_4500_captions.json", "i"))
    one_per_image = read[::2]
    for s in one_per_image:
        s.meta["references"] = [r.turns[0].response for r in read if r.image_id == s.image_id]
    out = evaluate_predictions(one_per_image, [s.turns[0].response for s in one_per_image])
    assert set(out["slices"]["nocaps/caption"]["domain"]) == {
        "in-domain",
        "near-domain",
        "out-domain",
    }


def test_vizwiz_is_scored_with_its_own_vqa_accuracy_per_answer_type():
    samples = list(R.read_vizwiz(FX / "vizwiz/Annotations/val.json", "."))
    out = evaluate_predictions(samples, ["Unanswerable", "nyquil", "No."])
    # "nyquil": 3 of 10 humans; leaving one of them out gives 2/3, leaving another out 1
    nyquil = (3 * (2 / 3) + 7 * 1.0) / 10
    assert out["sources"]["vizwiz/vqa"] == pytest.approx((1.0 + nyquil + 1.0) / 3)
    assert out["metrics"]["vqa"] == "vqa_score"
    assert out["official"]["vizwiz/vqa"]["vqa_accuracy"] == out["sources"]["vizwiz/vqa"]
    assert out["slices"]["vizwiz/vqa"]["answer_type"] == pytest.approx(
        {"other": nyquil, "unanswerable": 1.0, "yes/no": 1.0}
    )
    # an answerable prediction to an unanswerable question earns nothing
    wrong = evaluate_predictions(samples[:1], ["yes"])
    assert wrong["sources"]["vizwiz/vqa"] == 0.0
    # VizWiz's evaluation normalises the prediction even where the ten humans agree, where
    # VQAv2's normalises nothing: "Unanswerable" scores 1 here, 0 as a VQAv2 answer
    meta = {"answers": ["unanswerable"] * 10, "answer_type": "unanswerable"}
    agree = [
        VLSample("v.jpg", "v", "vqa", source, [Turn("What is it?", "unanswerable")], dict(meta))
        for source in ("vizwiz", "vqav2")
    ]
    both = evaluate_predictions(agree, ["Unanswerable"] * 2)["sources"]
    assert (both["vizwiz/vqa"], both["vqav2/vqa"]) == (1.0, 0.0)


def test_tallyqa_counts_exactly_and_reports_simple_and_complex():
    samples = list(R.read_tallyqa(FX / "tallyqa/test.json", "."))  # answers 4, 2, 0, 1
    out = evaluate_predictions(samples, ["4", "two", "1", "1"])
    assert out["sources"]["tallyqa/vqa"] == pytest.approx(3 / 4)
    assert out["slices"]["tallyqa/vqa"]["subset"] == pytest.approx({"complex": 1.0, "simple": 0.5})


def test_visual7w_pointing_choice_is_scored_on_the_letter():
    path = FX / "visual7w/dataset_v7w_pointing.json"
    samples = list(R.read_visual7w_pointing(path, FX / "visual7w/images", form="choice"))
    right = samples[0].turns[0].response
    wrong = next(x for x in "ABCD" if x != samples[1].turns[0].response)
    out = evaluate_predictions(samples, [f"{right}.", wrong])
    assert out["sources"] == {"visual7w_pointing/mcvqa": 0.5}
    assert out["metrics"]["mcvqa"] == "exact_match"
