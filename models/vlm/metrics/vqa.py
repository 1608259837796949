"""VQA accuracy exactly as the official evaluators compute it, for VQAv2, TextVQA and VizWiz.

Both score one predicted answer against the human answers (ten per question) as the mean, over
the leave-one-human-out subsets, of ``min(1, #humans in the subset who gave it / 3)``, after an
answer normalisation that is *not* the same in the two:

* :func:`vqa_accuracy` is the per-question accuracy of ``vqaEval.py`` (GT-Vision-Lab/VQA,
  ``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, commit a013f00), the VQAv2 evaluator.
  Line breaks and tabs become spaces and the answers are trimmed; when the ten humans agree
  exactly (after trimming) nothing else is normalised, so "Yes" or "yes." scores 0 against ten
  "yes". Otherwise every answer loses its punctuation (:func:`vqa_normalize`) and the score
  counts matches of the normalised strings. The official script runs under Python 2, where its
  ``\\d`` matches only the ASCII digits; so does this module for VQAv2.
* :func:`textvqa_accuracy` is TextVQA's accuracy as ``TextVQAAccuracyEvaluator`` of
  facebookresearch/mmf (``mmf/utils/m4c_evaluators.py``, commit b0ffc7f; the M4C evaluator that
  LLaVA and others copy): every answer and the prediction always go through
  ``EvalAIAnswerProcessor`` (:func:`textvqa_normalize`: lower case, commas and question marks
  deleted, ``'s`` split off, then the same punctuation and word rules as VQAv2 under Python 3).
* :func:`vizwiz_accuracy` is VizWiz VQA's accuracy as the ``VQAEval`` of Qing Li's VizWiz API
  (the evaluation linked from vizwiz.org; the copy read is TRI-ML/vlm-evaluation @ d9f5896,
  ``vlm_eval/util/evaluation/vizwiz/eval.py``, which Prismatic and Cobra score with): the
  prediction *always* goes through the punctuation and word rules (Python 3), the ten human
  answers *never* do, so "Unanswerable" earns 1 against ten "unanswerable" (0 under VQAv2's
  rule) and a human's "Yes" matches nothing. Its contraction table is VQAv2's with the
  apostrophes of most entries turned into backquotes (:data:`VIZWIZ_CONTRACTIONS`), so "dont"
  becomes "don`t" and matches no human answer. vlm-evaluation scores every question, the
  unanswerable ones included (their answers say "unanswerable").

The punctuation rules, reproduced with their quirks: each of 21 characters
(:data:`PUNCTUATION`; not ``. ' : * # % $ &``) is deleted when the answer has it next to a space
or has a comma between two digits anywhere, else replaced by a space; then up to 32 periods not
followed by a digit are deleted (the official call passes ``re.UNICODE``, 32, where ``sub`` takes
its count). The word rules: lower case, number words zero to ten as digits (``"none"`` is
``"0"``), articles dropped, then the contraction table (``"dont"`` -> ``"don't"``).

Values are fractions in [0, 1]: the official scripts report 100 times the mean, ``vqaEval.py``
rounded to two decimals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')
"""The 21 characters of the official ``punct`` list, in its order."""

NUMBER_WORDS = {
    w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())
}
NUMBER_WORDS["none"] = "0"
ARTICLES = frozenset({"a", "an", "the"})

# The official contraction table as ``written>replacement`` pairs. Its four capitalised keys
# ("Im", "Ive", "Id've", "I'dve") never match a lower-cased word and two entries map a word to
# itself ("let's", "she's"): both are left out, which changes no result. The table's reversed
# entry "somebody'd" -> "somebodyd" is kept, as it is applied.
_CONTRACTION_PAIRS = """
'ow'sat>'ow's'at 'ows'at>'ow's'at aint>ain't arent>aren't cant>can't
couldn'tve>couldn't've couldnt>couldn't couldnt've>couldn't've couldve>could've
didnt>didn't doesnt>doesn't dont>don't hadn'tve>hadn't've hadnt>hadn't
hadnt've>hadn't've hasnt>hasn't havent>haven't he'dve>he'd've hed>he'd hed've>he'd've
hes>he's howd>how'd howll>how'll hows>how's isnt>isn't it'dve>it'd've itd>it'd
itd've>it'd've itll>it'll maam>ma'am mightn'tve>mightn't've mightnt>mightn't
mightnt've>mightn't've mightve>might've mustnt>mustn't mustve>must've neednt>needn't
notve>not've oclock>o'clock oughtnt>oughtn't ow's'at>'ow's'at shant>shan't
she'dve>she'd've shed've>she'd've shouldn'tve>shouldn't've shouldnt>shouldn't
shouldnt've>shouldn't've shouldve>should've somebody'd>somebodyd
somebody'dve>somebody'd've somebodyd've>somebody'd've somebodyll>somebody'll
somebodys>somebody's someone'dve>someone'd've someoned>someone'd
someoned've>someone'd've someonell>someone'll someones>someone's
something'dve>something'd've somethingd>something'd somethingd've>something'd've
somethingll>something'll thats>that's there'dve>there'd've thered>there'd
thered've>there'd've therere>there're theres>there's they'dve>they'd've theyd>they'd
theyd've>they'd've theyll>they'll theyre>they're theyve>they've twas>'twas wasnt>wasn't
we'dve>we'd've wed've>we'd've werent>weren't weve>we've whatll>what'll whatre>what're
whats>what's whatve>what've whens>when's whered>where'd wheres>where's whereve>where've
who'dve>who'd've whod>who'd whod've>who'd've wholl>who'll whos>who's whove>who've
whyll>why'll whyre>why're whys>why's wont>won't wouldn'tve>wouldn't've wouldnt>wouldn't
wouldnt've>wouldn't've wouldve>would've y'all'dve>y'all'd've y'alld've>y'all'd've
y'allll>y'all'll yall>y'all yall'd've>y'all'd've yall'll>y'all'll you'dve>you'd've
youd>you'd youd've>you'd've youll>you'll youre>you're youve>you've
"""
CONTRACTIONS = dict(pair.split(">") for pair in _CONTRACTION_PAIRS.split())

# VizWiz's copy of the table (vlm-evaluation d9f5896, vizwiz/eval.py) writes the apostrophes
# of the replacements as backquotes, except in eight entries, and of the keys as backquotes,
# except in two; Qing Li's original writes the same places with a curly apostrophe. Neither
# character occurs in the human answers, which VizWiz does not normalise, so both score alike.
_VIZWIZ_STRAIGHT_VALUES = frozenset("aint arent cant couldve couldnt weve wheres whove".split())
_VIZWIZ_STRAIGHT_KEYS = frozenset({"couldn'tve", "hadn'tve"})
VIZWIZ_CONTRACTIONS = {
    (k if k in _VIZWIZ_STRAIGHT_KEYS else k.replace("'", "`")): (
        v if k in _VIZWIZ_STRAIGHT_VALUES else v.replace("'", "`")
    )
    for k, v in CONTRACTIONS.items()
}

_PERIOD_LIMIT = 32  # re.UNICODE (32) is passed as the count of the official period sub()


@dataclass(frozen=True)
class _Digits:
    """The two regular expressions whose ``\\d`` differs between the evaluators' Pythons."""

    comma_between_digits: re.Pattern[str]
    period_not_before_digit: re.Pattern[str]


_PY2_ASCII = _Digits(re.compile(r"\d,\d", re.ASCII), re.compile(r"\.(?!\d)", re.ASCII))
_PY3_UNICODE = _Digits(re.compile(r"\d,+\d"), re.compile(r"\.(?!\d)"))
_PY3_VIZWIZ = _Digits(re.compile(r"\d,\d"), re.compile(r"\.(?!\d)"))


def _punctuation(text: str, digits: _Digits) -> str:
    """``processPunctuation``: the conditions look at ``text`` as given, not as edited."""
    glue = digits.comma_between_digits.search(text) is not None
    out = text
    for p in PUNCTUATION:
        out = out.replace(p, "" if glue or f"{p} " in text or f" {p}" in text else " ")
    return digits.period_not_before_digit.sub("", out, count=_PERIOD_LIMIT)


def _words(text: str, contractions: dict[str, str] = CONTRACTIONS) -> str:
    """``processDigitArticle``: lower case, number words, articles, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(contractions.get(w, w) for w in words if w not in ARTICLES)


def _trim(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_normalize(answer: str) -> str:
    """The VQAv2 normalisation ``vqaEval.py`` applies when the humans disagree."""
    return _words(_punctuation(_trim(answer), _PY2_ASCII))


def textvqa_normalize(answer: str) -> str:
    """mmf's ``EvalAIAnswerProcessor``, applied to every TextVQA answer and prediction."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return _words(_punctuation(_trim(text), _PY3_UNICODE))


def vizwiz_normalize(answer: str) -> str:
    """The normalisation VizWiz's ``VQAEval`` applies to a prediction (never to the humans)."""
    return _words(_punctuation(_trim(answer), _PY3_VIZWIZ), VIZWIZ_CONTRACTIONS)


def leave_one_out_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Mean over the ``n`` subsets of ``n - 1`` answers of ``min(1, matches / 3)``, summed in
    the official order (so the float is the official one, bit for bit)."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    hits = [a == prediction for a in answers]
    total = sum(hits)
    accs = [min(1.0, (total - hit) / 3) for hit in hits]
    return sum(accs) / len(accs)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 accuracy of one answer, equal to ``vqaEval.py``'s per-question ``evalQA`` / 100
    before its rounding (GT-Vision-Lab/VQA a013f00). ``answers``: the humans' raw answers."""
    pred, gts = _trim(prediction), [_trim(a) for a in answers]
    if len(set(gts)) > 1:
        pred, gts = vqa_normalize(pred), [vqa_normalize(a) for a in gts]
    return leave_one_out_accuracy(pred, gts)


def textvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """TextVQA accuracy of one answer, equal to mmf's ``TextVQAAccuracyEvaluator`` on that one
    entry (facebookresearch/mmf b0ffc7f). The evaluator asserts ten answers; other counts are
    scored by the same leave-one-out rule."""
    pred, gts = textvqa_normalize(prediction), [textvqa_normalize(a) for a in answers]
    return leave_one_out_accuracy(pred, gts) if pred in gts else 0.0


def vizwiz_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VizWiz VQA accuracy of one answer, equal to the VizWiz API's per-question ``evalQA`` / 100
    before its rounding (vlm-evaluation d9f5896). ``answers``: the humans' answers exactly as
    the annotation file gives them (they are compared unnormalised)."""
    return leave_one_out_accuracy(vizwiz_normalize(prediction), list(answers))
