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

``vlab vlm generate`` (:mod:`vlab.vlm.answer`) asks a trained VLM one question through the
same loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vlab.models.vlm.batch import Batch, pixel_values
from vlab.models.vlm.sequence import IGNORE
from vlab.models.vlm.tokenizer import pad_token_id
from vlab.training.distributed import all_ranks, is_sharded

if TYPE_CHECKING:
    pass


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
