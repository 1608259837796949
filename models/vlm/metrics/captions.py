"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE) through the official toolkit.

Why: the captioning results of "Shaking Up VLMs" are reported with the COCO caption toolkit
(``coco-caption``, packaged for Python 3 as ``pycocoevalcap``). Its tokenizer (Stanford's
``PTBTokenizer``), METEOR 1.5 and SPICE are Java programs, so a number under an official name
must come from those programs: :func:`caption_scores` runs the toolkit itself whenever a Java
runtime works (:func:`java_problem` says why not otherwise), exactly as ``COCOEvalCap.evaluate``
does: ``PTBTokenizer`` on the references, then on the predictions, then ``Bleu(4)``,
``Meteor()``, ``Rouge()``, ``Cider()`` and ``Spice()`` on the tokens. ``pycocoevalcap``'s
``Cider`` is CIDEr-D (clipped tf-idf n-grams, the gaussian length penalty with ``sigma = 6``,
no stemming; ``cider/cider_scorer.py``), reported as ``CIDEr`` as the toolkit and the papers do.

Official with Java (keys as the toolkit's, spelled as the papers print them): ``BLEU-1`` ..
``BLEU-4``, ``METEOR`` (the METEOR 1.5 jar, ``-l en -norm``), ``ROUGE-L``, ``CIDEr`` and
``SPICE``. One deliberate change to the toolkit's input: the characters Java reads as line
breaks (carriage return, vertical tab, form feed, U+2028, U+2029) become spaces before
tokenising, as the toolkit already does with ``\n``; left in, each one splits its caption in
two and silently shifts every later caption onto the wrong image.

SPICE needs Stanford CoreNLP 3.6.0 jars that ``pycocoevalcap`` downloads (about 400 MB) the
first time ``Spice()`` is built; vlab never triggers that download. Without the jars SPICE is
reported under ``unavailable`` with the folder to put them in and the command that fetches them
(:func:`spice_problem`). SPICE 1.0 is reported to fail on Java 17+ (its cache uses reflection that
newer JDKs refuse); it was built for Java 8.

Without Java nothing is reported under an official name. ``unavailable`` maps each official
name to the reason, and the metrics whose maths vlab reimplements exactly are reported under
names that say what they are: ``BLEU-1 (regex tokens)`` .. ``BLEU-4 (regex tokens)``,
``ROUGE-L (regex tokens)`` and ``CIDEr (regex tokens)``, computed by :func:`bleu`,
:func:`rouge_l` and :func:`cider_d` on :func:`ptb_tokenize`'s tokens. Their maths equals the
toolkit's to the last digit (tested on values the toolkit gave); only the tokenizer is an
approximation, identical to Stanford's on plain captions but not on rare inputs (below), so
the number may differ from the official one. METEOR has no such stand-in: METEOR 1.5 matches
stems, WordNet synonyms and paraphrases with tuned weights, and :func:`meteor_exact_match`,
which matches identical words only, read about 0.32 higher on ordinary captions (0.696 against
the jar's 0.359 on the five test images of ``tests/models/vlm/metrics/test_captions.py``); it
stays available as a function under its own name but is never reported by
:func:`caption_scores`.

Input is the toolkit's: ``predictions`` maps an image id to one generated caption and
``references`` maps the same ids to the human captions. The pure-Python maths:

* **BLEU-1..n** (``bleu_scorer.py``): corpus-level clipped n-gram counts ``correct_k`` (each
  candidate n-gram count clipped by its maximum count in one reference) over the candidate
  n-gram counts ``guess_k``; ``BLEU-k = (prod_{i<=k} (correct_i + 1e-15) / (guess_i + 1e-9))
  ** (1/k)``, times the brevity penalty ``exp(1 - r/c)`` when ``c < r``, with ``c`` the total
  candidate length and ``r`` the sum over images of the reference length closest to the
  candidate's (the shorter one on ties).
* **ROUGE-L** (``rouge.py``): per image ``P = max_ref LCS/|cand|``, ``R = max_ref LCS/|ref|``
  (each maximised separately), ``F = (1 + b^2) P R / (R + b^2 P)`` with ``b = 1.2``; mean over
  images.
* **CIDEr-D** (``cider_scorer.py``): n-grams (n = 1..4) weighted by tf-idf, ``tf * (log N -
  log max(1, df))`` with ``N`` the number of images and ``df`` the number of images whose
  references contain the n-gram. Per order, ``sum min(v_cand, v_ref) * v_ref / (|v_cand|
  |v_ref|)`` times ``exp(-d^2 / (2 sigma^2))`` with ``sigma = 6`` and ``d`` the difference of
  the two captions' bigram counts (the toolkit's "length"); averaged over orders and
  references, times 10, mean over images.
* **METEOR (exact match only)**, :func:`meteor_exact_match`, not the official score: only
  identical words match, with the original METEOR's parameters (``alpha=0.9, beta=3,
  gamma=0.5``), which nearly remove the word-order penalty; the jar's English defaults are
  ``alpha=0.85, beta=0.2, gamma=0.6``, function words weighted by ``delta=0.75``, and ``-norm``
  re-tokenises the PTB tokens (``well-known`` -> ``well known``, ``'s`` -> ``' s``). Words are
  aligned one to one, as many as possible, with the fewest chunks (runs of adjacent words
  matched to adjacent words); ``P = m/|cand|``, ``R = m/|ref|``, ``Fmean = P R / (alpha P +
  (1 - alpha) R)``, penalty ``gamma * (chunks/m) ** beta`` (0 for a candidate identical to the
  reference, as in METEOR 1.5), ``score = Fmean (1 - penalty)``. Each image keeps the reference
  with the best score. Like the jar, the corpus score is computed from the summed statistics
  (``m``, lengths, chunks) of all images; ``aggregate="mean"`` averages the per-image scores
  instead. It equals the jar restricted to exact matching with these parameters (``-m exact -p
  '0.9 3.0 0.5 0.5' -w 1.0``, tested).

Tokenisation without Java: the toolkit runs Stanford's ``PTBTokenizer -preserveLines
-lowerCase`` and then drops the tokens in ``PTB_PUNCTUATION``. :func:`ptb_tokenize` is a regex
approximation of that: it lower-cases, splits punctuation off words (keeping decimals and
thousands such as ``3.5`` and ``1,000``, times such as ``5:30``, hyphenated words, and
abbreviations such as ``mr.``, ``u.s.`` or initials), splits clitics like PTB (``it's`` -> ``it
's``, ``don't`` -> ``do n't``, ``cannot`` -> ``can not``) and writes brackets as
``-lrb-``/``-rrb-``, etc. As in the toolkit, these bracket tokens survive: the toolkit's list
holds ``-LRB-`` in upper case but compares it with lower-cased tokens. It differs from the Java
tokenizer on rare inputs (URLs, e-mail addresses, smileys, ``rock'n'roll``, ``y'all``, a period
after a word that PTB takes for an abbreviation only from context such as ``no. 5``); plain
captions tokenise identically.

Cost: an official scoring runs the Java tokenizer twice (about 0.4 s each). The METEOR jar takes
about 7 s to start (it loads its paraphrase table) and then stays up for the rest of the process,
holding about 1.1 GB, so later scorings (the held-out evaluations of a training run) take well
under a second more; :func:`close_meteor` stops it. ``meteor=False`` leaves METEOR out.
"""

from __future__ import annotations

import atexit
import functools
import math
import os
import re
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vlab.errors import VlabError

# the tokens coco-caption's ptbtokenizer.py removes after tokenisation (verbatim)
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-"]
    + [".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

_ALIGNMENT_BEAM = 200  # partial METEOR alignments kept; real captions need far fewer
_BLEU_TINY = 1e-15  # added to the clipped counts (numerators) in bleu_scorer.py
_BLEU_SMALL = 1e-9  # added to the candidate counts and lengths (denominators)

_CHARACTER_MAP = str.maketrans(
    {
        "(": " -lrb- ",
        ")": " -rrb- ",
        "[": " -lsb- ",
        "]": " -rsb- ",
        "{": " -lcb- ",
        "}": " -rcb- ",
        '"': " '' ",
        "\u201c": " '' ",
        "\u201d": " '' ",
        "\u201e": " '' ",
        "\u2018": "'",
        "\u2019": "'",
        "\u2013": " -- ",
        "\u2014": " -- ",
        "\u2026": " ... ",
    }
)
_BRACKET_TOKENS = frozenset(["-lrb-", "-rrb-", "-lsb-", "-rsb-", "-lcb-", "-rcb-"])
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs mt ft inc co ltd etc prof sgt capt lt col gen rev ave".split()
)
_SPECIAL_WORDS = {
    "cannot": ["can", "not"],
    "gonna": ["gon", "na"],
    "gotta": ["got", "ta"],
    "wanna": ["wan", "na"],
    "gimme": ["gim", "me"],
    "lemme": ["lem", "me"],
}
_EDGE_PUNCTUATION = "`'-$~&+=*%,;:"  # split off either end of a word, one character at a time
_KEPT_APOSTROPHE = re.compile(r"'(\d|(cause|em|til|s|re|ll|d|ve|m)$)")
_DOTS_OR_MARKS = re.compile(r"(\.{2,}|[!?]+)$")
_INNER_SPLIT = re.compile(r"([&+=*~%$;!?]|(?<!\d),|,(?!\d)|(?<!\d):|:(?!\d))")
_NUMBER = re.compile(r"[\d.,]+")
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ll|'d|'ve|'m)$")


def ptb_tokenize(caption: str) -> list[str]:
    """Tokens of a caption as coco-caption scores them (lower case, punctuation removed), by
    a regex approximation of Stanford's PTBTokenizer (module docstring)."""
    text = caption.replace("\n", " ").lower().translate(_CHARACTER_MAP)
    tokens = []
    for chunk in text.split():
        if chunk in _BRACKET_TOKENS:
            tokens.append(chunk)
            continue
        for piece in re.split(r"(--)", chunk):
            tokens.extend(_split_word(piece))
    return [t for t in tokens if t and t not in PTB_PUNCTUATION]


def _split_word(word: str) -> list[str]:
    """Punctuation peeled off both ends of a whitespace-free piece, then inner splits."""
    head: list[str] = []
    while word and word[0] in _EDGE_PUNCTUATION and not _KEPT_APOSTROPHE.match(word):
        head.append(word[0])
        word = word[1:]
    if word.startswith(".."):
        head.append("...")
        word = word.lstrip(".")
    tail: list[str] = []
    while word:
        marks = _DOTS_OR_MARKS.search(word)
        if marks and marks.group(1) == ".." and _is_abbreviation(word[: marks.start()]):
            tail.append(".")  # "u.s.." is the abbreviation "u.s." and a full stop
            word = word[:-1]
        elif marks:
            text = marks.group(1)
            tail.append("..." if text.startswith(".") else text)
            word = word[: marks.start()]
        elif word[-1] in _EDGE_PUNCTUATION:
            tail.append(word[-1])
            word = word[:-1]
        elif word[-1] == "." and not _is_abbreviation(word[:-1]):
            tail.append(".")
            word = word[:-1]
        else:
            break
    core = [t for part in _INNER_SPLIT.split(word) if part for t in _split_clitics(part)]
    return head + core + tail[::-1]


def _is_abbreviation(stem: str) -> bool:
    """Whether a word followed by a period keeps it (``u.s.``, ``mr.``, initials)."""
    if _NUMBER.fullmatch(stem):
        return False
    return "." in stem or (len(stem) == 1 and stem.isalpha()) or stem in _ABBREVIATIONS


def _split_clitics(word: str) -> list[str]:
    if word in _SPECIAL_WORDS:
        return list(_SPECIAL_WORDS[word])
    match = _CLITIC.match(word)
    return [match.group(1), match.group(2)] if match else [word]


@dataclass(frozen=True)
class _Item:
    """One image: the tokenised candidate and the tokenised references."""

    candidate: list[str]
    references: list[list[str]]


def _validate(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> None:
    if not references:
        raise VlabError("caption metrics: no references given, nothing to score")
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing:
        raise VlabError(f"caption metrics: no prediction for {_some_ids(missing)}")
    if extra:
        raise VlabError(f"caption metrics: no references for predicted {_some_ids(extra)}")
    empty = [k for k, refs in references.items() if isinstance(refs, str) or not refs]
    if empty:
        raise VlabError(
            "caption metrics: references must be a non-empty list of captions per image; "
            f"not so for {_some_ids(empty)}"
        )
    bad = [k for k, p in predictions.items() if not isinstance(p, str)]
    bad += [k for k, refs in references.items() if not all(isinstance(r, str) for r in refs)]
    if bad:
        raise VlabError(f"caption metrics: captions must be strings; not so for {_some_ids(bad)}")


def _some_ids(ids: Sequence[Hashable], shown: int = 5) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"{len(ids)} image id(s): " + ", ".join(repr(k) for k in ids[:shown]) + more


def _prepare(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> list[_Item]:
    """Validated, tokenised corpus in the order of ``references`` (as the toolkit iterates)."""
    _validate(predictions, references)
    return [
        _Item(ptb_tokenize(predictions[k]), [ptb_tokenize(r) for r in refs])
        for k, refs in references.items()
    ]


def _ngram_counts(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """Counts of all n-grams of orders 1..n."""
    return Counter(
        tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1)
    )


# ---------------------------------------------------------------- BLEU


def bleu(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], n: int = 4
) -> list[float]:
    """Corpus BLEU-1..n: the maths of pycocoevalcap's ``Bleu(n)`` ("closest" reference
    length) on :func:`ptb_tokenize`'s regex tokens."""
    if n < 1:
        raise VlabError(f"bleu: n must be at least 1, got {n}")
    return _bleu(_prepare(predictions, references), n)


def _bleu(items: Sequence[_Item], n: int) -> list[float]:
    guess, correct = [0] * n, [0] * n
    test_len = ref_len = 0
    for item in items:
        length = len(item.candidate)
        test_len += length
        ref_len += _closest_length(length, [len(r) for r in item.references])
        clip: Counter[tuple[str, ...]] = Counter()
        for ref in item.references:
            clip |= _ngram_counts(ref, n)
        for ngram, count in _ngram_counts(item.candidate, n).items():
            correct[len(ngram) - 1] += min(count, clip[ngram])
        for k in range(n):
            guess[k] += max(0, length - k)
    return _bleu_from_counts(correct, guess, test_len, ref_len)


def _closest_length(length: int, ref_lengths: Sequence[int]) -> int:
    return min(ref_lengths, key=lambda r: (abs(r - length), r))


def _bleu_from_counts(
    correct: Sequence[int], guess: Sequence[int], test_len: int, ref_len: int
) -> list[float]:
    scores, product = [], 1.0
    for k, (c, g) in enumerate(zip(correct, guess, strict=True)):
        product *= (c + _BLEU_TINY) / (g + _BLEU_SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + _BLEU_TINY) / (ref_len + _BLEU_SMALL)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    return [s * penalty for s in scores]


# ---------------------------------------------------------------- ROUGE-L


def rouge_l(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], beta: float = 1.2
) -> float:
    """Mean over images of the ROUGE-L F-score: pycocoevalcap's ``Rouge`` on regex tokens."""
    return _rouge_l(_prepare(predictions, references), beta)


def _rouge_l(items: Sequence[_Item], beta: float) -> float:
    return sum(_rouge_l_image(i.candidate, i.references, beta) for i in items) / len(items)


def _rouge_l_image(candidate: list[str], references: list[list[str]], beta: float) -> float:
    # the toolkit splits with str.split(" "), so an empty caption is one empty token
    cand = candidate or [""]
    lcs = [(_lcs_length(cand, ref or [""]), len(ref or [""])) for ref in references]
    precision = max(m / len(cand) for m, _ in lcs)
    recall = max(m / length for m, length in lcs)
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


# ---------------------------------------------------------------- CIDEr-D


def cider_d(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    sigma: float = 6.0,
    n: int = 4,
) -> float:
    """CIDEr-D: pycocoevalcap's ``Cider`` (idf from the references of this corpus) on
    :func:`ptb_tokenize`'s regex tokens."""
    if n < 1 or sigma <= 0:
        raise VlabError(f"cider_d: needs n >= 1 and sigma > 0, got n={n}, sigma={sigma}")
    return _cider_d(_prepare(predictions, references), sigma, n)


@dataclass(frozen=True)
class _TfIdf:
    """Per n-gram order: tf-idf weights and vector norm; plus the toolkit's "length"."""

    weights: list[dict[tuple[str, ...], float]]
    norms: list[float]
    length: int


def _cider_d(items: Sequence[_Item], sigma: float, n: int) -> float:
    document_frequency = _document_frequency(items, n)
    log_images = math.log(len(items))

    def vector(tokens: list[str]) -> _TfIdf:
        return _tfidf(_ngram_counts(tokens, n), document_frequency, log_images, n)

    scores = []
    for item in items:
        cand = vector(item.candidate)
        per_ref = [_cider_similarity(cand, vector(ref), sigma) for ref in item.references]
        scores.append(10.0 * sum(per_ref) / (n * len(per_ref)))
    return sum(scores) / len(scores)


def _document_frequency(items: Sequence[_Item], n: int) -> Counter[tuple[str, ...]]:
    """For each n-gram, the number of images whose references contain it."""
    frequency: Counter[tuple[str, ...]] = Counter()
    for item in items:
        frequency.update({g for ref in item.references for g in _ngram_counts(ref, n)})
    return frequency


def _tfidf(
    counts: Counter[tuple[str, ...]],
    document_frequency: Counter[tuple[str, ...]],
    log_images: float,
    n: int,
) -> _TfIdf:
    weights: list[dict[tuple[str, ...], float]] = [{} for _ in range(n)]
    for ngram, tf in counts.items():
        idf = log_images - math.log(max(1.0, document_frequency[ngram]))
        weights[len(ngram) - 1][ngram] = tf * idf
    norms = [math.sqrt(sum(w * w for w in order.values())) for order in weights]
    # the toolkit's length is the number of bigrams (its ``if n == 1`` indexes orders from 0)
    bigrams = sum(counts[g] for g in weights[1]) if n > 1 else 0
    return _TfIdf(weights, norms, bigrams)


def _cider_similarity(cand: _TfIdf, ref: _TfIdf, sigma: float) -> float:
    """Sum over orders of the clipped cosine similarity times the gaussian length penalty."""
    delta = cand.length - ref.length
    penalty = math.exp(-(delta**2) / (2 * sigma**2))
    total = 0.0
    for c_weights, r_weights, c_norm, r_norm in zip(
        cand.weights, ref.weights, cand.norms, ref.norms, strict=True
    ):
        value = sum(
            min(w, r_weights.get(g, 0.0)) * r_weights.get(g, 0.0) for g, w in c_weights.items()
        )
        if c_norm != 0 and r_norm != 0:
            value /= c_norm * r_norm
        total += value * penalty
    return total


# ---------------------------------------------------------------- METEOR (exact match only)


@dataclass(frozen=True)
class _MeteorStats:
    """Sufficient statistics of one alignment; ``chunks`` is 0 for a perfect match."""

    candidate_length: int
    reference_length: int
    matches: int
    chunks: int

    def __add__(self, other: _MeteorStats) -> _MeteorStats:
        return _MeteorStats(
            self.candidate_length + other.candidate_length,
            self.reference_length + other.reference_length,
            self.matches + other.matches,
            self.chunks + other.chunks,
        )


def meteor_exact_match(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
    aggregate: Literal["corpus", "mean"] = "corpus",
) -> float:
    """METEOR restricted to exact word matches: *not* the official METEOR (module docstring).

    ``aggregate="corpus"`` scores the summed statistics of all images, as the METEOR 1.5 jar
    does; ``"mean"`` averages the per-image scores. Tokens are :func:`ptb_tokenize`'s.
    """
    if aggregate not in ("corpus", "mean"):
        raise VlabError(
            f"meteor_exact_match: aggregate must be 'corpus' or 'mean', got {aggregate!r}"
        )
    items = _prepare(predictions, references)
    return _meteor(items, alpha, beta, gamma, aggregate)


def _meteor(
    items: Sequence[_Item], alpha: float, beta: float, gamma: float, aggregate: str
) -> float:
    def score(stats: _MeteorStats) -> float:
        return _meteor_score(stats, alpha, beta, gamma)

    best = []
    for item in items:
        candidates = [_meteor_stats(item.candidate, ref) for ref in item.references]
        best.append(max(candidates, key=score))  # first of equally good references
    if aggregate == "mean":
        return sum(score(s) for s in best) / len(best)
    return score(sum(best[1:], best[0]))


def _meteor_score(stats: _MeteorStats, alpha: float, beta: float, gamma: float) -> float:
    if stats.matches == 0:
        return 0.0
    precision = stats.matches / stats.candidate_length
    recall = stats.matches / stats.reference_length
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    penalty = gamma * (stats.chunks / stats.matches) ** beta
    return fmean * (1 - penalty)


def _meteor_stats(candidate: list[str], reference: list[str]) -> _MeteorStats:
    matches, chunks = _exact_alignment(candidate, reference)
    perfect = matches == len(candidate) == len(reference) and chunks == 1
    return _MeteorStats(len(candidate), len(reference), matches, 0 if perfect else chunks)


def _exact_alignment(candidate: Sequence[str], reference: Sequence[str]) -> tuple[int, int]:
    """(matches, chunks) of a one-to-one exact alignment with most matches, then fewest chunks.

    Dynamic programming over the candidate positions; a state is the set of reference positions
    used so far (a bit mask) and the reference position matched by the previous candidate word
    (-1 if it was not matched). A word that occurs ``c`` times in the candidate and ``r`` times
    in the reference is matched exactly ``min(c, r)`` times. The search is exact unless more
    than ``_ALIGNMENT_BEAM`` partial alignments are alive at once, which takes long captions made
    of a few repeated words; then it keeps the most promising ones (METEOR 1.5 itself runs a
    beam search of width 40, which is not always optimal either).
    """
    ref_positions: dict[str, list[int]] = {}
    for j, word in enumerate(reference):
        ref_positions.setdefault(word, []).append(j)
    cand_counts = Counter(candidate)
    needed = {w: min(c, len(ref_positions.get(w, []))) for w, c in cand_counts.items()}
    masks = {w: sum(1 << j for j in ref_positions.get(w, [])) for w in cand_counts}
    seen: Counter[str] = Counter()
    states: dict[tuple[int, int], int] = {(0, -1): 0}
    for word in candidate:
        seen[word] += 1
        later = cand_counts[word] - seen[word]  # occurrences after this one
        following: dict[tuple[int, int], int] = {}
        for (used, previous), chunks in states.items():
            done = (used & masks[word]).bit_count()
            if done + later >= needed[word]:
                _keep_best(following, (used, -1), chunks)
            if done < needed[word]:
                for j in ref_positions[word]:
                    if not used >> j & 1:
                        step = 0 if previous >= 0 and j == previous + 1 else 1
                        _keep_best(following, (used | 1 << j, j), chunks + step)
        states = _beam(following)
    return sum(needed.values()), min(states.values())


def _beam(states: dict[tuple[int, int], int]) -> dict[tuple[int, int], int]:
    """At most ``_ALIGNMENT_BEAM`` partial alignments: fewest chunks, then most matches."""
    if len(states) <= _ALIGNMENT_BEAM:
        return states
    ranked = sorted(states.items(), key=lambda s: (s[1], -s[0][0].bit_count()))
    return dict(ranked[:_ALIGNMENT_BEAM])


def _keep_best(states: dict[tuple[int, int], int], key: tuple[int, int], chunks: int) -> None:
    if chunks < states.get(key, chunks + 1):
        states[key] = chunks


# ---------------------------------------------------------------- the official toolkit

OFFICIAL_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
REGEX_TOKENS = " (regex tokens)"  # suffix of the pure-Python metrics reported without Java
JAVA_HINT = (
    "install a Java 8+ runtime (scripts/setup.sh installs Debian's default-jre-headless when "
    "run as root; otherwise 'sudo apt-get install default-jre-headless' on Debian/Ubuntu, or "
    "any JRE/JDK 8+ with its 'java' on PATH)"
)
# the jars Spice() downloads on first use (spice/get_stanford_models.py); all spice-1.0.jar reads
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
# characters Java's PTBTokenizer (-preserveLines) ends a line at; the toolkit replaces only \n
_JAVA_LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\x0b\x0c\u2028\u2029", " "))


def java_problem() -> str | None:
    """Why the official toolkit cannot run here (no toolkit, no ``java``, a ``java`` that fails
    or is older than 8), or None when it can."""
    try:
        import pycocoevalcap.tokenizer.ptbtokenizer  # noqa: F401
    except ImportError as err:
        return f"the COCO caption toolkit does not import ({err}): pip install pycocoevalcap"
    java = shutil.which("java")
    if java is None:
        return f"no 'java' on PATH: {JAVA_HINT}"
    return _java_version_problem(java)


@functools.cache
def _java_version_problem(java: str) -> str | None:
    try:
        run = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"'{java} -version' does not run ({err}): {JAVA_HINT}"
    said = (run.stderr or run.stdout).strip()
    if run.returncode != 0:
        last = said.splitlines()[-1] if said else f"exit status {run.returncode}"
        return f"'{java} -version' fails ({last}): {JAVA_HINT}"
    version = re.search(r'version "(\d+)(?:\.(\d+))?', said)
    if version:
        major = int(version.group(1))
        major = int(version.group(2) or 0) if major == 1 else major  # "1.8.0_312" is Java 8
        if major < 8:
            return f"{java} is Java {major}, the toolkit's jars need Java 8+: {JAVA_HINT}"
    return None


def _spice_lib() -> Path:
    """The folder where pycocoevalcap's SPICE looks for the CoreNLP jars (imports the toolkit)."""
    import pycocoevalcap.spice.spice

    return Path(pycocoevalcap.spice.spice.__file__).parent / "lib"


def spice_problem() -> str | None:
    """Why SPICE cannot run here (:func:`java_problem`, or its CoreNLP jars are missing), or
    None when it can. Never downloads anything."""
    problem = java_problem()
    if problem is not None:
        return problem
    lib = _spice_lib()
    missing = [name for name in SPICE_JARS if not (lib / name).is_file()]
    if missing:
        return (
            f"SPICE's Stanford CoreNLP 3.6.0 jars are not in {lib} (missing: "
            f"{', '.join(missing)}); pycocoevalcap would download them (about 400 MB) on first "
            "use, which vlab never triggers: run 'python -m "
            "pycocoevalcap.spice.get_stanford_models' once with network access, or copy "
            f"{' and '.join(SPICE_JARS)} from stanford-corenlp-full-2015-12-09.zip "
            f"(https://nlp.stanford.edu/software/) into {lib}"
        )
    return None


def spice_available() -> bool:
    """Whether :func:`spice` can run: the toolkit, a working Java and SPICE's CoreNLP jars."""
    return spice_problem() is None


def spice(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> float:
    """SPICE by the official toolkit on its PTB tokens; raises :class:`VlabError` when it
    cannot run (:func:`spice_problem`) or fails."""
    _validate(predictions, references)
    problem = spice_problem()
    if problem is not None:
        raise VlabError(f"SPICE cannot run: {problem}")
    gts, res = _official_tokens(predictions, references)
    return _official_spice(gts, res)


def _official_tokens(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(gts, res) as ``COCOEvalCap.evaluate`` builds them: PTB tokens of the references, then
    of the predictions, keyed by the position of the image in ``references``."""
    ids = {str(i): k for i, k in enumerate(references)}
    gts = _ptb_tokenize_official({i: list(references[k]) for i, k in ids.items()})
    res = _ptb_tokenize_official({i: [predictions[k]] for i, k in ids.items()})
    return gts, res


def _ptb_tokenize_official(captions: dict[str, list[str]]) -> dict[str, list[str]]:
    from pycocoevalcap.tokenizer import ptbtokenizer

    given = {
        k: [{"caption": c.translate(_JAVA_LINE_BREAKS)} for c in caps]
        for k, caps in captions.items()
    }
    try:
        tokens = ptbtokenizer.PTBTokenizer().tokenize(given)
    except OSError as err:
        folder = Path(ptbtokenizer.__file__).parent
        raise VlabError(
            f"the COCO caption toolkit's PTB tokenizer did not run ({err}); it runs 'java' and "
            f"writes a temporary file into {folder}, which must be writable"
        ) from err
    got = sum(len(v) for v in tokens.values())
    wanted = sum(len(v) for v in captions.values())
    if any(len(tokens.get(k, ())) != len(v) for k, v in captions.items()):
        raise VlabError(
            f"the COCO caption toolkit's PTB tokenizer (Java) returned {got} captions for "
            f"{wanted}; its error, if any, is printed above"
        )
    return tokens


def _official_meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    """METEOR by the toolkit's ``Meteor.compute_score`` on the jar this process keeps."""
    scorer = _running_meteor()
    try:
        value, _ = scorer.compute_score(gts, res)
    except (OSError, ValueError) as err:
        if scorer.lock.locked():  # compute_score failed holding it
            scorer.lock.release()
        said = close_meteor()
        raise VlabError(
            f"the METEOR 1.5 jar failed ({err}); it runs 'java -Xmx2G' (2 GB of heap)"
            + (f"; it said: {said}" if said else "")
        ) from err
    return float(value)


# The METEOR jar takes about 7 s to start (it loads a paraphrase table) and is stateless between
# EVAL requests, so one jar serves every scoring of a process (the held-out evaluations of a
# training run), as one Meteor() serves every image of COCOEvalCap.evaluate. It holds about
# 1.1 GB until close_meteor() or the end of the process; it also ends by itself when its input
# closes, so a killed Python leaves no jar behind. Keyed by process id: a forked child starts
# its own and never touches its parent's.
_meteor_jar: tuple[int, Any] | None = None
_meteor_start = threading.Lock()


@functools.cache
def _meteor_class() -> type:
    from pycocoevalcap.meteor.meteor import Meteor

    class SharedMeteor(Meteor):
        """The toolkit's Meteor, closed by :func:`close_meteor` rather than by ``__del__``
        (which a forked child could otherwise run on its parent's jar)."""

        def __del__(self) -> None:
            pass

    return SharedMeteor


def _running_meteor() -> Any:
    global _meteor_jar
    with _meteor_start:
        if _meteor_jar is not None:
            pid, scorer = _meteor_jar
            if pid == os.getpid() and scorer.meteor_p.poll() is None:
                return scorer
            close_meteor()
        try:
            scorer = _meteor_class()()
        except OSError as err:
            raise VlabError(f"the METEOR 1.5 jar did not start ({err}): {JAVA_HINT}") from err
        _meteor_jar = (os.getpid(), scorer)
        return scorer


def close_meteor() -> str:
    """Stop the METEOR jar this process keeps (if any) and return what it wrote to stderr; the
    next METEOR score starts a new one."""
    global _meteor_jar
    jar, _meteor_jar = _meteor_jar, None
    if jar is None or jar[0] != os.getpid():
        return ""
    process = jar[1].meteor_p
    process.kill()
    process.wait()
    said = process.stderr.read().decode(errors="replace").strip()[-600:]
    for stream in (process.stdin, process.stdout, process.stderr):
        stream.close()
    return said


atexit.register(close_meteor)


def _official_spice(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    from pycocoevalcap.spice.spice import Spice

    try:
        value, _ = Spice().compute_score(gts, res)
    except (OSError, ValueError, subprocess.SubprocessError) as err:
        raise VlabError(
            f"SPICE failed in the COCO caption toolkit ({err}); it runs 'java -Xmx8G' (8 GB of "
            "heap), writes into its own folder, and is reported to fail on Java 17+ (use Java "
            "8 or 11)"
        ) from err
    return float(value)


def _official_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    meteor: bool,
    spice: bool | None,
) -> tuple[dict[str, float], dict[str, str]]:
    """(scores, unavailable) by the toolkit's own scorers, in ``COCOEvalCap``'s order."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _official_tokens(predictions, references)
    bleu_scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{k}": float(v) for k, v in enumerate(bleu_scores, start=1)}
    if meteor:
        scores["METEOR"] = _official_meteor(gts, res)
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    unavailable = {}
    if spice is not False:
        problem = spice_problem()
        if problem is None:
            try:
                scores["SPICE"] = _official_spice(gts, res)
            except VlabError as err:
                if spice:
                    raise
                unavailable["SPICE"] = str(err)
        else:  # only with spice=None: caption_scores refuses spice=True before this
            unavailable["SPICE"] = problem
    return scores, unavailable


# ---------------------------------------------------------------- all metrics


def caption_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    spice: bool | None = None,
    *,
    meteor: bool = True,
    java: bool | None = None,
) -> dict[str, Any]:
    """The COCO caption metrics, official when Java runs (module docstring).

    Returns ``{name: value}``: with Java the official ``BLEU-1`` .. ``BLEU-4``, ``METEOR``,
    ``ROUGE-L``, ``CIDEr`` (CIDEr-D) and ``SPICE``; without it ``BLEU-k (regex tokens)``,
    ``ROUGE-L (regex tokens)`` and ``CIDEr (regex tokens)`` only. ``unavailable`` (present when
    not empty) maps each requested official name that was not computed to the reason and what
    to install.

    ``spice``: None runs SPICE when :func:`spice_problem` finds nothing in the way (otherwise,
    or when it fails, it goes to ``unavailable``), True requires it (raises
    :class:`VlabError`), False leaves it out. ``meteor`` False leaves METEOR out (the first
    METEOR of a process starts its jar, about 7 s). ``java``: None uses the toolkit when
    :func:`java_problem` is None, True requires it (raises), False never runs Java.
    """
    _validate(predictions, references)
    java_reason = "the toolkit was not run (java=False)" if java is False else java_problem()
    if java and java_reason:
        raise VlabError(f"caption metrics: the official toolkit is required but {java_reason}")
    if spice and (problem := java_reason or spice_problem()):
        raise VlabError(f"SPICE cannot run: {problem}")
    if java_reason is None:
        scores, unavailable = _official_scores(predictions, references, meteor, spice)
    else:
        scores, unavailable = _regex_token_scores(_prepare(predictions, references), java_reason)
        if meteor:
            unavailable["METEOR"] = (
                f"{java_reason}. METEOR 1.5 is a Java program; vlab reports no stand-in for it"
            )
        if spice is None:
            unavailable["SPICE"] = java_reason
    return {**scores, "unavailable": unavailable} if unavailable else scores


def _regex_token_scores(
    items: Sequence[_Item], java_reason: str
) -> tuple[dict[str, float], dict[str, str]]:
    """The pure-Python BLEU, ROUGE-L and CIDEr-D under names that say they used regex tokens."""
    values = {f"BLEU-{k}": v for k, v in enumerate(_bleu(items, 4), start=1)}
    values["ROUGE-L"] = _rouge_l(items, 1.2)
    values["CIDEr"] = _cider_d(items, 6.0, 4)
    unavailable = {
        name: f"{java_reason}. '{name}{REGEX_TOKENS}' is the toolkit's maths on vlab's regex "
        "approximation of its Java PTB tokenizer"
        for name in values
    }
    return {name + REGEX_TOKENS: v for name, v in values.items()}, unavailable
