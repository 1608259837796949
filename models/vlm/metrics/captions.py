"""COCO caption metrics (BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE) as pure Python functions.

Why: the captioning results of "Shaking Up VLMs" are reported with the COCO caption toolkit
(``coco-caption`` / ``pycocoevalcap``), which needs Java for tokenisation, METEOR and SPICE.
This module reimplements its Python maths without dependencies so that any machine can score
captions; only SPICE still needs the toolkit and a Java runtime.

Input is the toolkit's: ``predictions`` maps an image id to one generated caption and
``references`` maps the same ids to the human captions. Every caption is first tokenised by
:func:`ptb_tokenize`, then

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
* **METEOR (exact match only)**: the official METEOR 1.5 jar also matches stems, WordNet
  synonyms and paraphrases, weighs function words and uses its tuned parameters; here only
  identical words match, with the original METEOR's parameters, which nearly remove the
  word-order penalty. The score is therefore *not* the official one (on ordinary captions it
  read about 0.32 higher than the METEOR 1.5 jar) and must be reported as "METEOR (exact
  match only)".
  Words are aligned one to one, as many as possible, with the fewest chunks (runs of adjacent
  words matched to adjacent words); ``P = m/|cand|``, ``R = m/|ref|``, ``Fmean = P R / (alpha
  P + (1 - alpha) R)``, penalty ``gamma * (chunks/m) ** beta`` (0 for a candidate identical to
  the reference, as in METEOR 1.5), ``score = Fmean (1 - penalty)``. Each image keeps the
  reference with the best score. Like the toolkit, the corpus score is computed from the
  summed statistics (``m``, lengths, chunks) of all images; ``aggregate="mean"`` averages the
  per-image scores instead. Further differences from the official number: the toolkit runs the
  jar with its English defaults (``alpha=0.85, beta=0.2, gamma=0.6``, function words weighted
  by ``delta=0.75``) and with ``-norm``, which re-tokenises the PTB tokens (``well-known`` ->
  ``well known``, ``'s`` -> ``' s``); here the parameters are the original METEOR's and the PTB
  tokens are used as they are.
* **SPICE**: scene-graph F-score; delegated to ``pycocoevalcap.spice.spice.Spice`` when that
  package and ``java`` are installed (:func:`spice`).

Tokenisation: the toolkit runs Stanford's Java ``PTBTokenizer -preserveLines -lowerCase`` and
then drops the tokens in ``PTB_PUNCTUATION``. :func:`ptb_tokenize` is a regex approximation of
that: it lower-cases, splits punctuation off words (keeping decimals and thousands such as
``3.5`` and ``1,000``, times such as ``5:30``, hyphenated words, and abbreviations such as
``mr.``, ``u.s.`` or initials), splits clitics like PTB (``it's`` -> ``it 's``, ``don't`` ->
``do n't``, ``cannot`` -> ``can not``) and writes brackets as ``-lrb-``/``-rrb-``, etc. As in
the toolkit, these bracket tokens survive: the toolkit's list holds ``-LRB-`` in upper case but
compares it with lower-cased tokens. It differs from the Java tokenizer on rare inputs (URLs,
e-mail addresses, smileys, ``rock'n'roll``, ``y'all``, a period after a word that PTB takes for
an abbreviation only from context such as ``no. 5``); plain captions tokenise identically.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

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
    """Tokens of a caption as coco-caption scores them: lower case, punctuation removed."""
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
    """Corpus BLEU-1..n as pycocoevalcap's ``Bleu(n)`` ("closest" reference length)."""
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
    """Mean over images of the ROUGE-L F-score as pycocoevalcap's ``Rouge``."""
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
    """CIDEr-D as pycocoevalcap's ``Cider`` (idf from the references of this corpus)."""
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


def meteor(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    alpha: float = 0.9,
    beta: float = 3.0,
    gamma: float = 0.5,
    aggregate: Literal["corpus", "mean"] = "corpus",
) -> float:
    """METEOR (exact match only): not the official score, see the module docstring.

    ``aggregate="corpus"`` scores the summed statistics of all images, as the toolkit's
    METEOR 1.5 jar does; ``"mean"`` averages the per-image scores.
    """
    if aggregate not in ("corpus", "mean"):
        raise VlabError(f"meteor: aggregate must be 'corpus' or 'mean', got {aggregate!r}")
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


# ---------------------------------------------------------------- SPICE


def _spice_problem() -> str | None:
    """Why SPICE cannot run here, or None when it can."""
    try:
        import pycocoevalcap.spice.spice  # noqa: F401
    except ImportError as err:
        return f"the COCO caption toolkit does not import ({err})"
    if shutil.which("java") is None:
        return "no 'java' executable on PATH"
    return None


def _require_spice() -> None:
    problem = _spice_problem()
    if problem is not None:
        raise VlabError(
            f"SPICE needs the COCO caption toolkit and Java, but {problem}: run "
            "'pip install pycocoevalcap' and install a Java runtime (e.g. 'apt-get install "
            "default-jre'), or leave SPICE out (caption_scores(..., spice=False))"
        )


def spice_available() -> bool:
    """Whether :func:`spice` can run: pycocoevalcap imports and ``java`` is on PATH."""
    return _spice_problem() is None


def spice(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> float:
    """SPICE through the official toolkit (``pycocoevalcap`` and a Java 8+ runtime).

    The first call downloads Stanford CoreNLP models (the toolkit does that), so it needs
    network access once.
    """
    _require_spice()
    return _spice(_prepare(predictions, references))


def _spice(items: Sequence[_Item]) -> float:
    from pycocoevalcap.spice.spice import Spice

    ids = [str(i) for i in range(len(items))]
    gts = {k: [" ".join(r) for r in item.references] for k, item in zip(ids, items, strict=True)}
    res = {k: [" ".join(item.candidate)] for k, item in zip(ids, items, strict=True)}
    try:
        value, _ = Spice().compute_score(gts, res)
    except (OSError, subprocess.SubprocessError) as err:
        raise VlabError(
            f"SPICE failed in the COCO caption toolkit ({err}); it needs Java 8+ with 8 GB of "
            "heap and downloads Stanford CoreNLP models on first use"
        ) from err
    return float(value)


# ---------------------------------------------------------------- all metrics


def caption_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    spice: bool | None = None,
) -> dict[str, float]:
    """All COCO caption metrics: BLEU-1..4, METEOR (exact match only), ROUGE-L, CIDEr[, SPICE].

    ``spice``: None includes SPICE when :func:`spice_available` (a failure of the toolkit then
    still raises), True requires it (raises :class:`VlabError` when it cannot run), False leaves
    it out.
    """
    if spice:
        _require_spice()
    items = _prepare(predictions, references)
    scores = {f"BLEU-{k}": v for k, v in enumerate(_bleu(items, 4), start=1)}
    scores["METEOR"] = _meteor(items, 0.9, 3.0, 0.5, "corpus")
    scores["ROUGE-L"] = _rouge_l(items, 1.2)
    scores["CIDEr"] = _cider_d(items, 6.0, 4)
    if spice or (spice is None and spice_available()):
        scores["SPICE"] = _spice(items)
    return scores
