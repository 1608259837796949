"""One question about one image: ``vlab vlm generate``.

A trained VLM (a stage of a ``vlab vlm train`` run, or a finetune: :mod:`vlab.vlm.trained`)
answers through the model's greedy loop (:func:`~vlab.models.vlm.generate.greedy_generate`):
the question becomes a one-turn sample of the run's data (:func:`question_batch`), assembled
and preprocessed by :func:`~vlab.models.vlm.batch.batch_of` as in training, so its prompt is
token for token the one a training example would have.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.batch import Batch, batch_of
from vlab.models.vlm.data.instructions import instruction_for
from vlab.models.vlm.data.records import TASKS, Turn, VLSample
from vlab.models.vlm.generate import greedy_generate
from vlab.models.vlm.parts import SequenceConfig
from vlab.training.precision import autocast_for
from vlab.vlm.trained import load_trained

if TYPE_CHECKING:
    from PIL import Image

    from vlab.models.vlm.model import VLM


def read_image(path: str | os.PathLike) -> Image.Image:
    """The image file as RGB, read as the dataset readers' files are
    (:func:`~vlab.models.vlm.data.records.load_image`); a missing or unreadable file is a
    VlabError naming it."""
    from PIL import Image as PILImage

    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise VlabError(f"image file {path} {what}")
    try:
        with PILImage.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, PILImage.DecompressionBombError) as e:
        raise VlabError(f"cannot read image file {path}: {e}") from None


def question_batch(
    image: Image.Image, prompt: str, task: str, model: VLM, tok: Any, seq: SequenceConfig
) -> Batch:
    """The batch (B = 1) of one question about ``image``: a one-turn sample of ``task`` with an
    empty response, collated by :func:`~vlab.models.vlm.batch.batch_of`. Its labels hold only
    the end-of-sequence token that closes the empty response, so :func:`first_turn_prompts`
    cuts it exactly where a training example's response starts: image and text in the run's
    ordering (``seq.ordering``), the task's instruction, the prompt and its suffix."""
    sample = VLSample(image, "question", task, "generate", [Turn(prompt, "")])
    return batch_of([sample], model, tok, seq)


def answer_question(
    run: str | os.PathLike,
    image: str | os.PathLike,
    prompt: str,
    *,
    stage: int = 2,
    task: str = "chat",
    max_new_tokens: int | None = None,
    device: str = "auto",
) -> str:
    """The greedy answer of ``run/stage{stage}`` (or of the finetune directory ``run``) to
    ``prompt`` about the image file ``image``.

    ``task`` places its instruction before the prompt as in training (``chat``: none, the
    prompt alone); ``max_new_tokens`` defaults to the run's. Bad input (an empty prompt for a
    task without instruction, a missing or unreadable image, a missing run, stage or
    checkpoint, a directory that is no trained VLM) is a VlabError with a one-line message,
    raised before any model is built where it can be.
    """
    if task not in TASKS:
        raise ConfigError("task", f"{task!r} is not one of {', '.join(TASKS)}")
    prompt = prompt.strip()  # as the readers store prompts
    if not prompt and not instruction_for(task):
        raise ConfigError(
            "prompt", f"is empty; ask a question (a {task} example has no instruction asking one)"
        )
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError("max_new_tokens", f"must be >= 1, got {max_new_tokens}")
    if max_new_tokens is not None:
        from vlab.preflight import MAX_NEW_TOKENS, check_at_most

        check_at_most(max_new_tokens, MAX_NEW_TOKENS, "max_new_tokens", "tokens")
    picture = read_image(image)
    trained = load_trained(run, stage, device)
    if trained.tokenizer.eos_token_id is None:
        raise VlabError("the run's tokenizer has no end-of-sequence token to end an answer with")
    cfg = trained.config
    seq = cfg.model.sequence
    try:
        batch = question_batch(picture, prompt, task, trained.model, trained.tokenizer, seq)
    except ConfigError as e:
        if e.field != "max_length":
            raise
        raise ConfigError(
            "prompt", f"too long: with the image it exceeds the run's max_length {seq.max_length}"
        ) from None
    batch = {k: v.to(trained.device) for k, v in batch.items()}
    autocast = autocast_for(trained.device, trained.precision)
    with torch.no_grad(), autocast:
        answers = greedy_generate(
            trained.model, trained.tokenizer, batch, max_new_tokens or cfg.max_new_tokens
        )
    return answers[0]
