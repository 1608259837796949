"""Greedy decoding beside the model: one function for every caller that wants answers.

Training-time held-out metrics (``VLMTask.evaluate``), ``vlab vlm eval`` and later commands
all generate through :func:`greedy_generate`, so an answer scored during training and one
scored on a benchmark come from the same loop. It only needs :meth:`VLM.forward` with a
cache, never the training code.

Prompts are the assembled sequences cut where the first response starts, left-padded to a
common length P so every row's next token comes from the last column. One prefill pass over
(B, P) fills the decoding cache (keys and values, or Mamba's conv and SSM states); each
further token is one (B, 1) step, so an answer of n tokens costs P + n token positions
instead of n passes over the growing sequence. Rows that have finished keep stepping on
padding, which is discarded. Text-only rows (no patch slots) mix freely with image rows.

``vlab vlm generate`` (:func:`answer_question`) asks a trained VLM (a stage of a ``vlab vlm
train`` run, or a finetune: :mod:`vlab.models.vlm.trained`) one question about one image
through the same loop: the question becomes a one-turn sample of the run's data
(:func:`question_batch`), assembled and preprocessed by :func:`~vlab.models.vlm.batch.batch_of`
as in training, so its prompt is token for token the one a training example would have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.batch import Batch, batch_of, pixel_values
from vlab.models.vlm.data.instructions import instruction_for
from vlab.models.vlm.data.records import TASKS, Turn, VLSample
from vlab.models.vlm.sequence import IGNORE, SequenceConfig
from vlab.models.vlm.tokenizer import pad_token_id
from vlab.models.vlm.trained import load_trained
from vlab.training.distributed import all_ranks, is_sharded
from vlab.training.precision import autocast_for

if TYPE_CHECKING:
    from PIL import Image

    from vlab.models.vlm.model import VLM


@dataclass(frozen=True)
class Prompts:
    """Left-padded first-turn prompts, each (B, P) on the batch's device.

    ``input_ids`` (padding: the pad id), ``patch_index`` (padding: -1), ``attention_mask``
    (1 on prompt tokens) and ``position_ids`` (0 at each row's first real token, so a padded
    row is placed as if it stood alone; 0 on its padding).
    """

    input_ids: torch.Tensor
    patch_index: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor


def first_turn_prompts(batch: Batch, pad_id: int) -> Prompts:
    """The prompt of each row of a collated ``batch`` (its tokens before the first labelled
    one, i.e. the image, instruction and first question), right-aligned into (B, P)."""
    labels = batch["labels"]
    dev = labels.device
    first = (labels != IGNORE).float().argmax(1)  # first response token per row
    B, P = labels.shape[0], int(first.max())
    ids = torch.full((B, P), pad_id, dtype=torch.long, device=dev)
    patch = torch.full((B, P), -1, dtype=torch.long, device=dev)
    mask = torch.zeros((B, P), dtype=torch.long, device=dev)
    for b in range(B):
        n = int(first[b])
        ids[b, P - n :] = batch["input_ids"][b, :n]
        patch[b, P - n :] = batch["patch_index"][b, :n]
        mask[b, P - n :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return Prompts(ids, patch, mask, positions)


@torch.no_grad()
def greedy_tokens(
    model: nn.Module, batch: Batch, *, pad_id: int, eos_id: int, max_new_tokens: int
) -> list[list[int]]:
    """Greedy token ids answering the first turn of each row of ``batch``, eos excluded.

    ``model`` is a :class:`~vlab.models.vlm.model.VLM` (possibly sharded in place by FSDP);
    ``batch`` a collated batch (``input_ids``, ``patch_index``, ``labels`` (B, T) and
    ``pixel_values_{i}`` (B, 3, H, W), absent when no row has an image) on the model's
    device. Each row stops at ``eos_id`` or after ``max_new_tokens``; the lists are at most
    that long.

    Sharded, every rank must make the same number of forward calls (each is a collective):
    the loop ends only when all ranks have finished, one rank leaving early would hang the
    others.
    """
    p = first_turn_prompts(batch, pad_id)
    dev = p.input_ids.device
    B = p.input_ids.shape[0]
    pixels = pixel_values(batch)
    cache = model.new_cache()
    mask = p.attention_mask
    logits = model(
        p.input_ids,
        p.patch_index,
        pixels,
        attention_mask=mask,
        cache=cache,
        position_ids=p.position_ids,
    )
    nxt = logits["logits"][:, -1].argmax(-1)
    no_patch = torch.full((B, 1), -1, dtype=torch.long, device=dev)
    step_pos = p.position_ids[:, -1:]
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    out_tokens: list[list[int]] = [[] for _ in range(B)]
    lockstep = is_sharded(model)  # one rank leaving early would hang the others
    for step in range(max_new_tokens):
        done |= nxt == eos_id
        for b in (~done).nonzero().flatten().tolist():
            out_tokens[b].append(int(nxt[b]))
        finished = all_ranks(bool(done.all())) if lockstep else bool(done.all())
        if finished or step + 1 == max_new_tokens:
            break
        mask = torch.cat([mask, torch.ones_like(no_patch)], 1)
        step_pos = step_pos + 1
        fed = torch.where(done, pad_id, nxt).unsqueeze(1)
        logits = model(
            fed, no_patch, pixels, attention_mask=mask, cache=cache, position_ids=step_pos
        )
        nxt = logits["logits"][:, -1].argmax(-1)
    return out_tokens


def greedy_generate(
    model: nn.Module, tokenizer: Any, batch: Batch, max_new_tokens: int
) -> list[str]:
    """Greedy answers (decoded, special tokens skipped) to the first turn of each of the B
    rows of ``batch``; see :func:`greedy_tokens` for the shapes. Callers choose the autocast
    (``vlab.training.precision.autocast_for``) around it."""
    tokens = greedy_tokens(
        model,
        batch,
        pad_id=pad_token_id(tokenizer),
        eos_id=tokenizer.eos_token_id,
        max_new_tokens=max_new_tokens,
    )
    return [tokenizer.decode(t, skip_special_tokens=True) for t in tokens]


# one question about one image: ``vlab vlm generate`` -------------------------------------------


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
