"""COCO caption metrics: the official toolkit (pycocoevalcap, Java) and the pure-Python maths,
against hand computations and values the official toolkit gave."""

import json
import math
import os
import random
import subprocess
import sys
import time

import pytest

from vlab.errors import VlabError
from vlab.models.vlm.metrics import captions as cm
from vlab.models.vlm.metrics.captions import (
    OFFICIAL_METRICS,
    REGEX_TOKENS,
    SPICE_JARS,
    bleu,
    caption_scores,
    cider_d,
    java_problem,
    meteor_exact_match,
    ptb_tokenize,
    rouge_l,
    spice,
    spice_problem,
)

JAVA_PROBLEM = java_problem()
needs_java = pytest.mark.skipif(
    JAVA_PROBLEM is not None,
    reason=f"the official COCO caption toolkit cannot run here: {JAVA_PROBLEM}",
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

# Computed once by running the official toolkit directly (pycocoevalcap 1.2, OpenJDK 17.0.15),
# as COCOEvalCap.evaluate does: PTBTokenizer().tokenize on the raw references, then on the raw
# predictions above, then Bleu(4), Meteor() (meteor-1.5.jar -l en -norm), Rouge(), Cider().
OFFICIAL_ALL = {
    "BLEU-1": 0.8602250572479181,
    "BLEU-2": 0.6904697512344766,
    "BLEU-3": 0.5259361188624713,
    "BLEU-4": 0.3808804823544478,
    "METEOR": 0.3590189277356557,
    "ROUGE-L": 0.7071458690582857,
    "CIDEr": 2.22236111769351,
}
# the same for images "1" and "2" only (CIDEr's idf depends on the corpus)
OFFICIAL_FIRST_TWO = {
    "BLEU-1": 0.8421052631135734,
    "BLEU-2": 0.7709910794009173,
    "BLEU-3": 0.652181530709907,
    "BLEU-4": 0.5030033151882729,
    "METEOR": 0.44627080238384187,
    "ROUGE-L": 0.8005168089794502,
    "CIDEr": 2.572938359582558,
}
# The official meteor-1.5.jar restricted to its exact-match module with meteor_exact_match's
# parameters (java -jar meteor-1.5.jar - - -stdio -lower -m exact -p '0.9 3.0 0.5 0.5' -w 1.0)
# on the PTB tokens: its EVAL line over all images ("corpus") and the mean of its per-image
# scores ("mean"). Not the official METEOR: about 0.32 above it on these images.
EXACT_MATCH_ALL = {"corpus": 0.6962861106981815, "mean": 0.6841531165311653}
EXACT_MATCH_FIRST_TWO = {"corpus": 0.7954140958709065, "mean": 0.7964939024390245}
PURE_PYTHON = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")


def _split(corpus):
    return {k: p for k, (p, _) in corpus.items()}, {k: r for k, (_, r) in corpus.items()}


# ---------------------------------------------------------------- the official toolkit


@pytest.fixture(scope="module")
def official():
    """One official scoring of CORPUS (Java start-up is seconds), and how long it took."""
    if JAVA_PROBLEM is not None:
        pytest.skip(f"the official COCO caption toolkit cannot run here: {JAVA_PROBLEM}")
    preds, refs = _split(CORPUS)
    start = time.perf_counter()
    scores = caption_scores(preds, refs)  # spice=None: SPICE if its jars are there
    return scores, time.perf_counter() - start


def test_official_scores_are_the_toolkits(official):
    scores, _ = official
    assert set(scores) - {"SPICE", "unavailable"} == set(OFFICIAL_ALL)
    for name, value in OFFICIAL_ALL.items():
        assert scores[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    # SPICE ran, or says why not (no jars here: never downloaded)
    assert ("SPICE" in scores) != ("SPICE" in scores.get("unavailable", {}))
    assert set(scores.get("unavailable", {})) <= {"SPICE"}


def test_official_meteor_is_not_the_exact_match_one(official):
    scores, _ = official
    preds, refs = _split(CORPUS)
    exact = meteor_exact_match(preds, refs)
    assert exact == pytest.approx(EXACT_MATCH_ALL["corpus"], rel=1e-12)
    assert exact - scores["METEOR"] > 0.3


def test_official_scoring_takes_seconds(official):
    _, seconds = official
    # about 9 s on 2 idle cores when it starts the METEOR jar (its paraphrase table), 1 s after
    assert seconds < 60


def test_official_scores_of_a_subset_reuse_the_running_meteor_jar(official):
    preds, refs = _split({k: CORPUS[k] for k in ("1", "2")})
    jar = cm._meteor_jar[1].meteor_p  # started by the fixture's scoring, or before it
    scores = caption_scores(preds, refs, spice=False)
    assert cm._meteor_jar[1].meteor_p is jar and jar.poll() is None  # no second start-up
    assert scores.keys() == OFFICIAL_FIRST_TWO.keys()
    for name, value in OFFICIAL_FIRST_TWO.items():
        assert scores[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    # METEOR not asked for: neither scored nor listed as unavailable
    without = caption_scores(preds, refs, spice=False, meteor=False)
    assert without == {k: v for k, v in scores.items() if k != "METEOR"}


@needs_java
def test_official_tokenizer_keeps_captions_on_their_images():
    # Java ends a line at \r, \v, \f, U+2028 and U+2029: left in, the toolkit would shift
    # every later caption onto the wrong image; vlab makes them spaces, as the toolkit does \n
    refs = {"a": ["a man riding a horse"], "b": ["two dogs in the snow"], "c": ["a red bus"]}
    broken = {"a": "a man\rriding\u2028a\x0bhorse", "b": "two\u2029dogs\x0cin the snow", "c": ""}
    plain = {"a": "a man riding a horse", "b": "two dogs in the snow", "c": ""}
    scores = caption_scores(broken, refs, spice=False, meteor=False)
    assert scores == caption_scores(plain, refs, spice=False, meteor=False)
    assert scores["ROUGE-L"] == pytest.approx(2 / 3)  # two perfect images, one empty


@needs_java
def test_spice_unavailable_says_where_its_jars_go_and_downloads_nothing():
    problem = spice_problem()
    if problem is None:
        pytest.skip("SPICE's CoreNLP jars are installed here")
    lib = cm._spice_lib()
    for text in (str(lib), *SPICE_JARS, "python -m pycocoevalcap.spice.get_stanford_models"):
        assert text in problem
    preds, refs = {"a": "a cat"}, {"a": ["a cat"]}
    with pytest.raises(VlabError, match="SPICE cannot run.*CoreNLP"):
        spice(preds, refs)
    with pytest.raises(VlabError, match="SPICE cannot run"):
        caption_scores(preds, refs, spice=True)
    assert not any((lib / name).exists() for name in SPICE_JARS)


@needs_java
def test_close_meteor_stops_the_jar(official):
    caption_scores({"a": "a cat"}, {"a": ["a cat"]}, spice=False)  # the jar is up
    jar = cm._meteor_jar[1].meteor_p
    assert isinstance(cm.close_meteor(), str)
    assert jar.poll() is not None and cm._meteor_jar is None
    assert cm.close_meteor() == ""  # nothing left to stop


_NO_JAVA_SCRIPT = """
import json, shutil
from vlab.errors import VlabError
from vlab.models.vlm.metrics.captions import caption_scores, java_problem
assert shutil.which("java") is None
out = {"problem": java_problem(), "scores": caption_scores(%r, %r)}
try:
    caption_scores(%r, %r, java=True)
except VlabError as err:
    out["required"] = str(err)
print(json.dumps(out))
"""


def test_without_java_no_official_name_is_reported():
    # a real machine without Java: the same code in a Python whose PATH holds no 'java'
    preds, refs = _split(CORPUS)
    code = _NO_JAVA_SCRIPT % (preds, refs, preds, refs)
    env = {**os.environ, "PATH": ""}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    out = json.loads(run.stdout)
    assert out["problem"].startswith("no 'java' on PATH")
    assert "default-jre-headless" in out["problem"]
    assert "official toolkit is required but no 'java'" in out["required"]
    scores = out["scores"]
    unavailable = scores.pop("unavailable")
    assert set(unavailable) == set(OFFICIAL_METRICS)  # every official name, with its reason
    assert all(reason.startswith("no 'java' on PATH") for reason in unavailable.values())
    assert "no stand-in" in unavailable["METEOR"]
    assert not any(name.startswith("METEOR") for name in scores)
    assert scores.keys() == {name + REGEX_TOKENS for name in PURE_PYTHON}
    for name in PURE_PYTHON:  # on these captions the regex tokens are Stanford's
        assert scores[name + REGEX_TOKENS] == pytest.approx(OFFICIAL_ALL[name], rel=1e-12)


def test_java_false_reports_the_regex_token_metrics_under_their_own_names():
    preds, refs = _split(CORPUS)
    scores = caption_scores(preds, refs, spice=False, java=False)
    unavailable = scores.pop("unavailable")
    assert set(unavailable) == set(OFFICIAL_METRICS) - {"SPICE"}  # SPICE was not asked for
    assert "java=False" in unavailable["METEOR"]
    assert scores.keys() == {name + REGEX_TOKENS for name in PURE_PYTHON}
    with pytest.raises(VlabError, match="SPICE cannot run.*java=False"):
        caption_scores(preds, refs, spice=True, java=False)


# ---------------------------------------------------------------- pure Python against the toolkit


@pytest.mark.parametrize(
    "ids, expected, exact",
    [
        (list(CORPUS), OFFICIAL_ALL, EXACT_MATCH_ALL),
        (["1", "2"], OFFICIAL_FIRST_TWO, EXACT_MATCH_FIRST_TWO),
    ],
)
def test_pure_python_maths_match_the_official_toolkit(ids, expected, exact):
    preds, refs = _split({k: CORPUS[k] for k in ids})
    got = dict(zip(PURE_PYTHON[:4], bleu(preds, refs), strict=True))
    got["ROUGE-L"] = rouge_l(preds, refs)
    got["CIDEr"] = cider_d(preds, refs)
    for name in PURE_PYTHON:
        assert got[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name
    for aggregate, value in exact.items():
        assert meteor_exact_match(preds, refs, aggregate=aggregate) == pytest.approx(
            value, rel=1e-12, abs=1e-12
        )


def test_single_metric_functions_agree_with_caption_scores():
    preds, refs = _split(CORPUS)
    scores = caption_scores(preds, refs, spice=False, java=False)
    assert bleu(preds, refs, n=2) == pytest.approx(
        [scores["BLEU-1" + REGEX_TOKENS], scores["BLEU-2" + REGEX_TOKENS]]
    )
    assert rouge_l(preds, refs) == pytest.approx(scores["ROUGE-L" + REGEX_TOKENS])
    assert cider_d(preds, refs) == pytest.approx(scores["CIDEr" + REGEX_TOKENS])


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
    assert meteor_exact_match({"a": "a man riding a horse"}, {"a": ["a man riding a horse"]}) == 1.0


def test_meteor_chunks_by_hand():
    # cand: the cat sat on the mat / ref: the mat sat on the cat
    # all 6 words match; the fewest chunks is 3: (the cat)->(the cat), (sat on), (the mat)
    # P = R = 1, Fmean = 1, penalty 0.5 * (3/6)^3 = 1/16
    preds, refs = {"a": "the cat sat on the mat"}, {"a": ["the mat sat on the cat"]}
    assert meteor_exact_match(preds, refs) == pytest.approx(1 - 0.5 * (3 / 6) ** 3)


def test_meteor_fragmentation_and_fmean_by_hand():
    # cand: the dog ran fast / ref: the big dog ran -> 3 matches in 2 chunks (the)(dog ran)
    # P = R = 3/4, Fmean = P R / (0.9 P + 0.1 R) = 3/4; penalty 0.5 * (2/3)^3
    expected = 0.75 * (1 - 0.5 * (2 / 3) ** 3)
    preds = {"a": "the dog ran fast"}
    assert meteor_exact_match(preds, {"a": ["the big dog ran"]}) == pytest.approx(expected)
    # the best of several references counts
    assert meteor_exact_match(preds, {"a": ["a cat", "the big dog ran"]}) == pytest.approx(expected)


def test_meteor_corpus_statistics_versus_mean():
    # images: (3 matches, 2 chunks, lengths 4/4) and (6 matches, 3 chunks, lengths 6/6)
    # corpus (as the jar's EVAL): P = R = 9/10, penalty 0.5 * (5/9)^3
    preds = {"a": "the dog ran fast", "b": "the cat sat on the mat"}
    refs = {"a": ["the big dog ran"], "b": ["the mat sat on the cat"]}
    corpus = 0.9 * (1 - 0.5 * (5 / 9) ** 3)
    mean = (0.75 * (1 - 0.5 * (2 / 3) ** 3) + 1 - 0.5 * (3 / 6) ** 3) / 2
    assert meteor_exact_match(preds, refs) == pytest.approx(corpus)
    assert meteor_exact_match(preds, refs, aggregate="mean") == pytest.approx(mean)


def test_meteor_perfect_images_add_no_chunks_to_the_corpus():
    # as the jar does: image a counts 0 chunks, so the corpus has 2 chunks for 8 matches
    preds = {"a": "a man riding a horse", "b": "the dog ran fast"}
    refs = {"a": ["a man riding a horse"], "b": ["the big dog ran"]}
    assert meteor_exact_match(preds, refs) == pytest.approx(8 / 9 * (1 - 0.5 * (2 / 8) ** 3))


def test_meteor_without_matches_is_zero():
    assert meteor_exact_match({"a": "red bus"}, {"a": ["green tree"]}) == 0.0
    assert meteor_exact_match({"a": "..."}, {"a": ["green tree"]}) == 0.0


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
        meteor_exact_match({"a": "x"}, {"a": ["x"]}, aggregate="median")


# ---------------------------------------------------------------- invariances and edge cases


def _regex_scores(preds, refs):
    """The pure-Python metrics alone (no Java, no ``unavailable``)."""
    scores = caption_scores(preds, refs, spice=False, java=False)
    scores.pop("unavailable")
    return scores


def test_scores_do_not_depend_on_reference_or_image_order():
    preds, refs = _split(CORPUS)
    shuffled_refs = {k: list(reversed(r)) for k, r in reversed(list(refs.items()))}
    shuffled_preds = dict(reversed(list(preds.items())))
    assert _regex_scores(shuffled_preds, shuffled_refs) == pytest.approx(_regex_scores(preds, refs))


def test_punctuation_and_case_do_not_change_scores():
    preds, refs = _split(CORPUS)
    loud = {k: p.upper().rstrip(".") + " !" for k, p in preds.items()}
    assert _regex_scores(loud, refs) == pytest.approx(_regex_scores(preds, refs))


def test_an_empty_prediction_scores_zero_without_errors():
    scores = _regex_scores({"a": "", "b": "."}, {"a": ["a cat"], "b": ["a dog"]})
    assert scores == pytest.approx(dict.fromkeys(scores, 0.0), abs=1e-6)


@needs_java
def test_an_empty_prediction_scores_zero_in_the_official_toolkit():
    preds, refs = {"a": "", "b": "."}, {"a": ["a cat"], "b": ["a dog"]}
    scores = caption_scores(preds, refs, spice=False, meteor=False)
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
