"""COCO caption metrics against hand computations and the official coco-caption toolkit."""

import math
import random
import sys
import types

import pytest

from vlab.errors import VlabError
from vlab.models.vlm.metrics import captions as cm
from vlab.models.vlm.metrics.captions import (
    bleu,
    caption_scores,
    cider_d,
    meteor,
    ptb_tokenize,
    rouge_l,
    spice,
    spice_available,
)

# ---------------------------------------------------------------- official reference values

# Five images with punctuation, clitics, brackets and hyphens in the captions.
CORPUS = {
    "1": (
        "A man riding a wave on top of a surfboard.",
        [
            "A man riding a wave on a surfboard.",
            "A surfer rides a large wave in the ocean.",
            "a person on a surf board riding a wave",
        ],
    ),
    "2": (
        "Two dogs playing with a frisbee in the grass",
        [
            "Two dogs play with a frisbee on the lawn.",
            "A couple of dogs chasing a frisbee in a park!",
            "Two brown dogs running in the grass.",
        ],
    ),
    "3": (
        "a plate of food with broccoli and meat",
        [
            "A plate topped with meat, broccoli and rice.",
            "A white plate with some food on it.",
            "Meat and vegetables on a dinner plate.",
        ],
    ),
    "4": (
        "a red double-decker bus on the street",
        [
            "A red double-decker bus driving down a city street.",
            "The bus is parked at the side of the road.",
            "A big red bus isn't moving (it's parked).",
        ],
    ),
    "5": (
        "A cat's sitting on a laptop keyboard",
        [
            "A cat sitting on top of a laptop computer.",
            "The cat is lying on the keyboard of a laptop.",
            "a grey cat on a laptop's keys",
        ],
    ),
}

# Computed by the official toolkit (pycocoevalcap 1.2: Stanford PTBTokenizer on the raw captions
# above, then Bleu(4), Rouge(), Cider()). METEOR by the official meteor-1.5.jar restricted to
# its exact-match module with this module's parameters (java -jar meteor-1.5.jar - - -stdio
# -lower -m exact -p '0.9 3.0 0.5 0.5' -w 1.0) on the PTB tokens: its EVAL line over all
# images ("METEOR") and the mean of its per-image scores ("METEOR_mean").
OFFICIAL_ALL = {
    "BLEU-1": 0.8602250572479181,
    "BLEU-2": 0.6904697512344766,
    "BLEU-3": 0.5259361188624713,
    "BLEU-4": 0.3808804823544478,
    "METEOR": 0.6962861106981815,
    "METEOR_mean": 0.6841531165311653,
    "ROUGE-L": 0.7071458690582857,
    "CIDEr": 2.22236111769351,
}
# the same for images "1" and "2" only (CIDEr's idf depends on the corpus)
OFFICIAL_FIRST_TWO = {
    "BLEU-1": 0.8421052631135734,
    "BLEU-2": 0.7709910794009173,
    "BLEU-3": 0.652181530709907,
    "BLEU-4": 0.5030033151882729,
    "METEOR": 0.7954140958709065,
    "METEOR_mean": 0.7964939024390245,
    "ROUGE-L": 0.8005168089794502,
    "CIDEr": 2.572938359582558,
}


def _split(corpus):
    return {k: p for k, (p, _) in corpus.items()}, {k: r for k, (_, r) in corpus.items()}


@pytest.mark.parametrize(
    "ids, expected", [(list(CORPUS), OFFICIAL_ALL), (["1", "2"], OFFICIAL_FIRST_TWO)]
)
def test_scores_match_the_official_toolkit(ids, expected):
    preds, refs = _split({k: CORPUS[k] for k in ids})
    scores = caption_scores(preds, refs, spice=False)
    scores["METEOR_mean"] = meteor(preds, refs, aggregate="mean")
    assert scores.keys() == expected.keys()
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_single_metric_functions_agree_with_caption_scores():
    preds, refs = _split(CORPUS)
    scores = caption_scores(preds, refs, spice=False)
    assert bleu(preds, refs) == pytest.approx([scores[f"BLEU-{k}"] for k in range(1, 5)])
    assert bleu(preds, refs, n=2) == pytest.approx([scores["BLEU-1"], scores["BLEU-2"]])
    assert rouge_l(preds, refs) == pytest.approx(scores["ROUGE-L"])
    assert cider_d(preds, refs) == pytest.approx(scores["CIDEr"])
    assert meteor(preds, refs) == pytest.approx(scores["METEOR"])


# ---------------------------------------------------------------- tokenisation


# (raw caption, output of Stanford PTBTokenizer -preserveLines -lowerCase after coco-caption
# removed its punctuation tokens), produced with pycocoevalcap's PTBTokenizer
PTB_CASES = [
    ("A man riding a wave on top of a surfboard.", "a man riding a wave on top of a surfboard"),
    (
        "Two dogs (a brown one and a white one) play in the snow!",
        "two dogs -lrb- a brown one and a white one -rrb- play in the snow",
    ),
    ("The cat's bowl isn't empty, it's full...", "the cat 's bowl is n't empty it 's full"),
    (
        'A 3.5-inch screen; a $5 bill: "quoted" text -- dash - here?',
        "a 3.5-inch screen a $ 5 bill quoted text dash here",
    ),
    (
        "Mr. Smith's 1,000 apples & oranges at 5:30 p.m. e.g. U.S.A.",
        "mr. smith 's 1,000 apples & oranges at 5:30 p.m. e.g. u.s.a.",
    ),
    (
        "people don't can't won't they're we'll I'd you've",
        "people do n't ca n't wo n't they 're we 'll i 'd you 've",
    ),
    (
        "a t-shirt, well-known 'single quoted' `back` {curly} [square]",
        "a t-shirt well-known single quoted back -lcb- curly -rcb- -lsb- square -rsb-",
    ),
    (
        "Hello/world 50% #tag @user a+b=c x*y a_b ~tilde",
        "hello/world 50 % #tag @user a + b = c x * y a_b ~ tilde",
    ),
    ("ends with period .  multiple   spaces", "ends with period multiple spaces"),
    ("A man.Then a dog", "a man.then a dog"),
    (
        "Café naïve résumé \u2013 en dash \u2014 em dash \u2026 ellipsis \u201csmart\u201d "
        "\u2018quotes\u2019",
        "café naïve résumé en dash em dash ellipsis smart quotes",
    ),
    ("red,green,blue 10,000 1.5 3/4 2x4 o'clock", "red green blue 10,000 1.5 3/4 2x4 o'clock"),
    ("gonna wanna cannot lemme", "gon na wan na can not lem me"),
    ("um... yes?! no!!", "um yes ?! no !!"),
    ("a cat ... a dog.. two dots", "a cat a dog two dots"),
    ("the dog is 3. years", "the dog is 3 years"),
    ("vitamin c. the end", "vitamin c. the end"),
    ("-leading dash and trailing- dash", "leading dash and trailing dash"),
    ("a dog's bone and the dogs' bones", "a dog 's bone and the dogs bones"),
    ("it was '90s style", "it was '90s style"),
    ("small kids flying u.s..", "small kids flying u.s."),
    ("a room near 3.5.", "a room near 3.5"),
]


@pytest.mark.parametrize("raw, expected", PTB_CASES)
def test_tokenizer_matches_stanford_ptb_tokenizer(raw, expected):
    assert " ".join(ptb_tokenize(raw)) == expected


def test_tokenizing_tokens_again_changes_nothing():
    for _, expected in PTB_CASES:
        assert " ".join(ptb_tokenize(expected)) == expected


# ---------------------------------------------------------------- BLEU


def test_bleu_of_an_identical_caption_is_one():
    # 1 - 1e-9 / guess (the toolkit's smoothing) is 1 to 8 decimals
    assert bleu({"a": "a man riding a horse"}, {"a": ["A man riding a horse."]}) == pytest.approx(
        [1.0] * 4, abs=1e-8
    )


def test_bleu_brevity_penalty_and_the_smoothing_of_empty_orders():
    # candidate of c = 2 words, reference of r = 6: penalty exp(1 - r/c) = exp(-2); unigram and
    # bigram precisions are 1; no trigram at all: (0 + 1e-15) / (0 + 1e-9) = 1e-6, so BLEU-3 =
    # (1 * 1 * 1e-6) ** (1/3) * exp(-2) = 1e-2 * exp(-2)
    scores = bleu({"a": "the cat"}, {"a": ["the cat sat on the mat"]})
    assert scores[:3] == pytest.approx([math.exp(-2), math.exp(-2), 1e-2 * math.exp(-2)])


def test_bleu_clips_counts_by_the_reference():
    # 'the' counted at most twice (its count in the reference): P1 = 2/4; c = 4, r = 5
    scores = bleu({"a": "the the the the"}, {"a": ["the cat on the mat"]}, n=1)
    assert scores == pytest.approx([0.5 * math.exp(1 - 5 / 4)])


def test_bleu_uses_the_closest_reference_length_the_shorter_on_ties():
    refs = {"a": ["one two three four five six", "one two three four five six seven eight nine"]}
    # c = 4: the closest reference has 6 words (not the 7.5 average): exp(1 - 6/4)
    assert bleu({"a": "one two three four"}, refs, n=1) == pytest.approx([math.exp(-0.5)])
    # c = 5 between 4 and 6 words: the shorter (4) wins, so no brevity penalty
    tie = {"a": ["one two three four", "one two three four five six"]}
    assert bleu({"a": "one two three four five"}, tie, n=1) == pytest.approx([1.0])


def test_bleu_is_corpus_level():
    # image a: 2 of 2 unigrams right; image b: 0 of 2 -> 2/4, not the mean of per-image BLEUs
    preds = {"a": "black cat", "b": "white dog"}
    refs = {"a": ["black cat"], "b": ["brown bird"]}
    assert bleu(preds, refs, n=1) == pytest.approx([0.5])


# ---------------------------------------------------------------- ROUGE-L


def test_rouge_l_of_an_identical_caption_is_one():
    assert rouge_l({"a": "A man riding a horse."}, {"a": ["a man riding a horse"]}) == 1.0


def test_rouge_l_with_a_known_lcs():
    # LCS(one six three seven five eight, one two three four five) = one three five = 3
    # P = 3/6, R = 3/5, F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    p, r = 3 / 6, 3 / 5
    expected = (1 + 1.44) * p * r / (r + 1.44 * p)
    preds, refs = {"a": "one six three seven five eight"}, {"a": ["one two three four five"]}
    assert rouge_l(preds, refs) == pytest.approx(expected)


def test_rouge_l_maximises_precision_and_recall_over_references_separately():
    # ref 1: LCS 2 of 2 words (R = 1, P = 2/4); ref 2: LCS 4 of 8 words (R = 1/2, P = 1)
    preds = {"a": "one two three four"}
    refs = {"a": ["one two", "one x two y three z four w"]}
    p, r = 1.0, 1.0
    assert rouge_l(preds, refs) == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))


# ---------------------------------------------------------------- CIDEr-D


def test_cider_on_a_two_image_corpus_by_hand():
    # N = 2 images; every n-gram below occurs in the references of at most one image, so its idf
    # is log 2 - log max(1, df) = log 2 =: w.
    # image a: candidate == reference: cosine 1 for unigrams and bigrams, 0 for the empty 3- and
    #   4-gram vectors; equal lengths -> 10 * (1 + 1 + 0 + 0) / 4 = 5
    # image b: unigrams {white: w, dog: w} vs {brown: w, dog: w}: w^2 / (sqrt(2) w)^2 = 1/2;
    #   bigrams share nothing -> 10 * (1/2) / 4 = 1.25
    preds = {"a": "black cat", "b": "white dog"}
    refs = {"a": ["black cat"], "b": ["brown dog"]}
    assert cider_d(preds, refs) == pytest.approx((5 + 1.25) / 2)


def test_cider_clipping_and_length_penalty_by_hand():
    # image a: candidate "black cat black cat" vs reference "black cat" (weights in units of w)
    #   unigrams: cand {black: 2, cat: 2}, ref {black: 1, cat: 1}; sum min(c, r) * r = 2;
    #     norms sqrt(8) * sqrt(2) = 4 -> 1/2 (the clipping halves it)
    #   bigrams: cand {black cat: 2, cat black: 1}, ref {black cat: 1}: 1 / (sqrt(5) * 1)
    #   3-grams: the reference has none -> 0; 4-grams: 0
    #   lengths (bigram counts) 3 and 1: penalty exp(-(3 - 1)^2 / (2 * 6^2))
    # image b: 1.25 as above
    preds = {"a": "black cat black cat", "b": "white dog"}
    refs = {"a": ["black cat"], "b": ["brown dog"]}
    image_a = 10 * (0.5 + 1 / math.sqrt(5)) * math.exp(-4 / 72) / 4
    assert cider_d(preds, refs) == pytest.approx((image_a + 1.25) / 2)


def test_cider_ignores_ngrams_that_every_image_has():
    # "a" is in the references of both images: idf log 2 - log 2 = 0, so it scores nothing
    refs = {"x": ["a black cat"], "y": ["a brown dog"]}
    assert cider_d({"x": "a", "y": "a"}, refs) == 0.0


def test_cider_of_a_single_image_is_zero():
    # log N = log 1 = 0 makes every weight zero, as in the toolkit
    assert cider_d({"a": "a cat"}, {"a": ["a cat"]}) == 0.0


# ---------------------------------------------------------------- METEOR (exact match only)


def test_meteor_of_an_identical_caption_is_one():
    # METEOR 1.5 drops the fragmentation penalty of a perfect match (checked with the jar)
    assert meteor({"a": "a man riding a horse"}, {"a": ["a man riding a horse"]}) == 1.0


def test_meteor_chunks_by_hand():
    # cand: the cat sat on the mat / ref: the mat sat on the cat
    # all 6 words match; the fewest chunks is 3: (the cat)->(the cat), (sat on), (the mat)
    # P = R = 1, Fmean = 1, penalty 0.5 * (3/6)^3 = 1/16
    preds, refs = {"a": "the cat sat on the mat"}, {"a": ["the mat sat on the cat"]}
    assert meteor(preds, refs) == pytest.approx(1 - 0.5 * (3 / 6) ** 3)


def test_meteor_fragmentation_and_fmean_by_hand():
    # cand: the dog ran fast / ref: the big dog ran -> 3 matches in 2 chunks (the)(dog ran)
    # P = R = 3/4, Fmean = P R / (0.9 P + 0.1 R) = 3/4; penalty 0.5 * (2/3)^3
    expected = 0.75 * (1 - 0.5 * (2 / 3) ** 3)
    preds = {"a": "the dog ran fast"}
    assert meteor(preds, {"a": ["the big dog ran"]}) == pytest.approx(expected)
    # the best of several references counts
    assert meteor(preds, {"a": ["a cat", "the big dog ran"]}) == pytest.approx(expected)


def test_meteor_corpus_statistics_versus_mean():
    # images: (3 matches, 2 chunks, lengths 4/4) and (6 matches, 3 chunks, lengths 6/6)
    # corpus (as the jar's EVAL): P = R = 9/10, penalty 0.5 * (5/9)^3
    preds = {"a": "the dog ran fast", "b": "the cat sat on the mat"}
    refs = {"a": ["the big dog ran"], "b": ["the mat sat on the cat"]}
    corpus = 0.9 * (1 - 0.5 * (5 / 9) ** 3)
    mean = (0.75 * (1 - 0.5 * (2 / 3) ** 3) + 1 - 0.5 * (3 / 6) ** 3) / 2
    assert meteor(preds, refs) == pytest.approx(corpus)
    assert meteor(preds, refs, aggregate="mean") == pytest.approx(mean)


def test_meteor_perfect_images_add_no_chunks_to_the_corpus():
    # as the jar does: image a counts 0 chunks, so the corpus has 2 chunks for 8 matches
    preds = {"a": "a man riding a horse", "b": "the dog ran fast"}
    refs = {"a": ["a man riding a horse"], "b": ["the big dog ran"]}
    assert meteor(preds, refs) == pytest.approx(8 / 9 * (1 - 0.5 * (2 / 8) ** 3))


def test_meteor_without_matches_is_zero():
    assert meteor({"a": "red bus"}, {"a": ["green tree"]}) == 0.0
    assert meteor({"a": "..."}, {"a": ["green tree"]}) == 0.0


def _brute_force_alignment(candidate, reference):
    """(matches, chunks) by trying every one-to-one alignment."""
    best = (0, 0)

    def walk(i, used, previous, matches, chunks):
        nonlocal best
        if i == len(candidate):
            best = max(best, (matches, -chunks))
            return
        walk(i + 1, used, None, matches, chunks)
        for j, word in enumerate(reference):
            if word == candidate[i] and j not in used:
                step = 0 if previous is not None and j == previous + 1 else 1
                walk(i + 1, used | {j}, j, matches + 1, chunks + step)

    walk(0, frozenset(), None, 0, 0)
    return best[0], -best[1]


def test_meteor_alignment_has_the_fewest_chunks():
    rng = random.Random(0)
    for _ in range(300):
        vocab = rng.choice([["a", "b"], ["a", "b", "c"], ["the", "a", "dog", "a"]])
        cand = [rng.choice(vocab) for _ in range(rng.randint(0, 6))]
        ref = [rng.choice(vocab) for _ in range(rng.randint(0, 6))]
        assert cm._exact_alignment(cand, ref) == _brute_force_alignment(cand, ref), (cand, ref)


def test_meteor_alignment_stays_fast_on_degenerate_captions():
    # a repetition loop against a long reference of few words: the beam bounds the search
    cand = ("a the dog " * 40).split()
    ref = ("the a a dog the a " * 4).split()
    matches, chunks = cm._exact_alignment(cand, ref)
    assert matches == len(ref) and 1 <= chunks <= matches


def test_meteor_rejects_an_unknown_aggregate():
    with pytest.raises(VlabError, match="aggregate"):
        meteor({"a": "x"}, {"a": ["x"]}, aggregate="median")


# ---------------------------------------------------------------- invariances and edge cases


def test_scores_do_not_depend_on_reference_or_image_order():
    preds, refs = _split(CORPUS)
    base = caption_scores(preds, refs, spice=False)
    shuffled_refs = {k: list(reversed(r)) for k, r in reversed(list(refs.items()))}
    shuffled_preds = dict(reversed(list(preds.items())))
    assert caption_scores(shuffled_preds, shuffled_refs, spice=False) == pytest.approx(base)


def test_punctuation_and_case_do_not_change_scores():
    preds, refs = _split(CORPUS)
    loud = {k: p.upper().rstrip(".") + " !" for k, p in preds.items()}
    assert caption_scores(loud, refs, spice=False) == pytest.approx(
        caption_scores(preds, refs, spice=False)
    )


def test_an_empty_prediction_scores_zero_without_errors():
    scores = caption_scores({"a": "", "b": "."}, {"a": ["a cat"], "b": ["a dog"]}, spice=False)
    assert scores == pytest.approx(dict.fromkeys(scores, 0.0), abs=1e-6)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "preds, refs, message",
    [
        ({"a": "x"}, {"a": ["x"], "b": ["y"]}, "no prediction for 1 image id.*'b'"),
        ({"a": "x", "c": "z"}, {"a": ["x"]}, "no references for predicted 1 image id.*'c'"),
        ({"a": "x"}, {"a": []}, "non-empty list.*'a'"),
        ({"a": "x"}, {"a": "x"}, "non-empty list.*'a'"),
        ({"a": None}, {"a": ["x"]}, "must be strings.*'a'"),
        ({"a": "x"}, {"a": ["x", 3]}, "must be strings.*'a'"),
        ({}, {}, "nothing to score"),
    ],
)
def test_invalid_inputs_raise_a_clear_error(preds, refs, message):
    with pytest.raises(VlabError, match=message):
        caption_scores(preds, refs, spice=False)


def test_missing_ids_are_listed_up_to_five():
    refs = {str(i): ["x"] for i in range(8)}
    with pytest.raises(VlabError, match=r"8 image id\(s\): '0', '1', '2', '3', '4' and 3 more"):
        bleu({}, refs)


def test_bad_parameters_raise():
    with pytest.raises(VlabError):
        bleu({"a": "x"}, {"a": ["x"]}, n=0)
    with pytest.raises(VlabError):
        cider_d({"a": "x"}, {"a": ["x"]}, sigma=0)


# ---------------------------------------------------------------- SPICE


class _FakeSpice:
    calls: list = []

    def compute_score(self, gts, res):
        _FakeSpice.calls.append((gts, res))
        return 0.25, []


@pytest.fixture
def fake_toolkit(monkeypatch):
    """A stand-in ``pycocoevalcap.spice.spice`` module (the real one needs Java and models)."""
    package, sub, leaf = (types.ModuleType(n) for n in ("pycocoevalcap", "p.spice", "p.s.spice"))
    leaf.Spice = _FakeSpice
    package.spice, sub.spice = sub, leaf
    monkeypatch.setitem(sys.modules, "pycocoevalcap", package)
    monkeypatch.setitem(sys.modules, "pycocoevalcap.spice", sub)
    monkeypatch.setitem(sys.modules, "pycocoevalcap.spice.spice", leaf)
    _FakeSpice.calls = []
    return _FakeSpice


def test_spice_without_java_raises_and_says_how_to_get_it(monkeypatch, fake_toolkit):
    monkeypatch.setattr(cm.shutil, "which", lambda name: None)
    assert not spice_available()
    with pytest.raises(VlabError, match="java.*pip install pycocoevalcap.*Java runtime"):
        spice({"a": "a cat"}, {"a": ["a cat"]})
    with pytest.raises(VlabError, match="java"):
        caption_scores({"a": "a cat"}, {"a": ["a cat"]}, spice=True)
    assert "SPICE" not in caption_scores({"a": "a cat"}, {"a": ["a cat"]})


def test_spice_without_the_toolkit_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocoevalcap", None)  # makes the import fail
    assert not spice_available()
    with pytest.raises(VlabError, match="does not import"):
        spice({"a": "a cat"}, {"a": ["a cat"]})


def test_spice_runs_through_the_toolkit_when_available(monkeypatch, fake_toolkit):
    monkeypatch.setattr(cm.shutil, "which", lambda name: "/usr/bin/java")
    preds, refs = {"a": "A cat.", "b": "Two dogs!"}, {"a": ["a cat"], "b": ["two dogs", "dogs"]}
    assert spice(preds, refs) == 0.25
    gts, res = fake_toolkit.calls[-1]
    # tokenised captions, one list per image, as COCOEvalCap hands them to Spice
    assert sorted(gts.values()) == [["a cat"], ["two dogs", "dogs"]]
    assert sorted(res.values()) == [["a cat"], ["two dogs"]]
    assert caption_scores(preds, refs)["SPICE"] == 0.25
    assert "SPICE" not in caption_scores(preds, refs, spice=False)
