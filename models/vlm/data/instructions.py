"""Task instructions, verbatim from the spec (SHAKEUP), one per task.

The instruction is written once per sequence, before the first prompt (after the image in the
task-agnostic ordering, before it in the task-aware one). The strings are kept exactly as the
paper gives them, trailing punctuation included (only grounded captioning ends with a period).

Free choices (documented here and in the README):

* ``chat`` (LLaVA-Instruct): no instruction; the user turns carry the request.
* ``pope`` (object existence, evaluation only): the VQA instruction, as LLaVA-1.5 evaluates
  POPE ("Answer the question using a single word or phrase"); answers are "yes" / "no".
"""

from __future__ import annotations

from vlab.errors import VlabError
from vlab.models.vlm.data.records import TASKS

VQA_INSTRUCTION = "Answer the question using a single word or phrase"

INSTRUCTIONS: dict[str, str] = {
    "caption": "Provide a one-sentence caption for the provided image",
    "dense_caption": "Provide a short description of the region",
    "grounded_caption": "Provide a one-sentence caption for the image and mention each entity.",
    "itm": "Determine if the image matches the description",
    "mcvqa": "Answer with the option's letter from the given choices directly",
    "grounding": "Locate the region that is described by",
    "vqa": VQA_INSTRUCTION,
    "chat": "",
    "pope": VQA_INSTRUCTION,
}


def instruction_for(task: str) -> str:
    """The instruction of ``task`` ("" for chat)."""
    try:
        return INSTRUCTIONS[task]
    except KeyError:
        raise VlabError(f"unknown task {task!r} (known: {', '.join(TASKS)})") from None
