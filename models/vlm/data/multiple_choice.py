"""Multiple-choice questions: lettered options and option rotation.

Prompt format (LLaVA-1.5 style; the mcvqa instruction "Answer with the option's letter from
the given choices directly" is added by sequence assembly)::

    What is the man holding?
    A. a kite
    B. a phone
    C. an umbrella
    D. a cup

Response: the letter alone (``"B"``).

Rotation (the spec's multiple-choice augmentation): a question with n options becomes n
samples, the correct option placed at A, B, ... in turn while the wrong options keep their
relative order; the answer letter follows. All rotations share the question's ``pack_key``, so
packing never puts two of them in one sequence (the model would see the answer).
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from PIL import Image

from vlab.errors import VlabError
from vlab.models.vlm.data.records import PACK_KEY, Turn, VLSample

LETTERS = string.ascii_uppercase


def option_letter(i: int) -> str:
    """The letter of option ``i`` (0 -> "A")."""
    if not 0 <= i < len(LETTERS):
        raise VlabError(f"option index {i} is outside A-Z")
    return LETTERS[i]


def format_options(question: str, choices: Sequence[str]) -> str:
    """The question followed by one ``"X. option"`` line per choice."""
    lines = [question.strip()]
    lines += [f"{option_letter(i)}. {str(c).strip()}" for i, c in enumerate(choices)]
    return "\n".join(lines)


def parse_letter(text: str, n_choices: int) -> int | None:
    """The option index named by model output (``"B"``, ``"B."``, ``"(b) a phone"``), or None."""
    valid = LETTERS[:n_choices]
    m = re.search(rf"\b([{valid}{valid.lower()}])\b", text.strip())
    return valid.index(m.group(1).upper()) if m else None


def stable_order(items: Sequence, key: str) -> list:
    """``items`` in a pseudo-random order fixed by ``key`` (sha256, not Python's hash): the
    option order of datasets that keep the answer apart from the wrong options (Visual7W)."""
    digests = [hashlib.sha256(f"{key}:{i}".encode()).hexdigest() for i in range(len(items))]
    return [items[i] for i in sorted(range(len(items)), key=digests.__getitem__)]


def rotations(choices: Sequence[str], answer_index: int) -> list[tuple[list[str], int]]:
    """Every placement of the correct option: ``[(choices_k, k) for k in range(n)]``.

    ``choices_k`` is the wrong options in their original order with the correct one inserted at
    position k; ``rotations(["a", "b", "c"], 1)`` is
    ``[(["b", "a", "c"], 0), (["a", "b", "c"], 1), (["a", "c", "b"], 2)]``.
    """
    if not 0 <= answer_index < len(choices):
        raise VlabError(f"answer index {answer_index} outside {len(choices)} choices")
    answer = choices[answer_index]
    wrong = [c for i, c in enumerate(choices) if i != answer_index]
    return [(wrong[:k] + [answer] + wrong[k:], k) for k in range(len(choices))]


def mc_sample(
    image: str | Image.Image | None,
    image_id: str,
    source: str,
    question: str,
    choices: Sequence[str],
    answer_index: int,
    question_id: str,
    meta: dict[str, Any] | None = None,
) -> VLSample:
    """An ``mcvqa`` sample; ``meta`` gains question, choices, answer_index and the pack key."""
    if not 0 <= answer_index < len(choices):
        raise VlabError(
            f"{source} question {question_id}: answer index {answer_index} outside "
            f"{len(choices)} choices"
        )
    full = dict(meta or {})
    full.update(
        question=question,
        choices=[str(c) for c in choices],
        answer_index=answer_index,
        question_id=question_id,
    )
    full[PACK_KEY] = f"{source}:{question_id}"
    turn = Turn(format_options(question, choices), option_letter(answer_index))
    return VLSample(image, image_id, "mcvqa", source, [turn], full)


def rotate_sample(sample: VLSample) -> list[VLSample]:
    """The n rotations of a single-question mcvqa sample (``meta["rotation"]`` = answer slot)."""
    if sample.task != "mcvqa" or len(sample.turns) != 1:
        raise VlabError(f"only single-question mcvqa samples rotate, got {sample.task}")
    m = sample.meta
    out = []
    for choices, k in rotations(m["choices"], m["answer_index"]):
        turn = Turn(format_options(m["question"], choices), option_letter(k))
        meta = dict(m, choices=choices, answer_index=k, rotation=k)
        out.append(sample.replace(turns=[turn], meta=meta))
    return out


def expand_rotations(samples: Iterable[VLSample]) -> Iterator[VLSample]:
    """Rotate every mcvqa sample, pass the others through unchanged (order kept)."""
    for s in samples:
        if s.task == "mcvqa":
            yield from rotate_sample(s)
        else:
            yield s
