"""Sequence assembly for the VLM: image markers, patch slots, ordering and label masks.

An example becomes a list of token ids in which some slots are *patch slots*: the VLM writes
the connector's output for patch (r, c) into them instead of a token embedding. Around the
patches go text markers, configurable because the paper and the authors' code differ:

* paper (``ImageLayout.paper()``): ``## p11 … p1N && … pN1 … pNN && ##`` — a separator at start
  and end and a row break after each row (Mamba has no position embeddings, so the row
  structure must be spelled out, Fuyu-style);
* authors' code (``ImageLayout.authors()``): ``### p11 … p1N && … pN1 … pNN ###`` — the last row
  break is replaced by the end marker — then ``##`` before the text: 24 x 25 + 1 = 601 image
  tokens at 336 px when each marker is one token.

Orderings: ``task_agnostic`` puts the image first (``image, instruction, prompt, response``);
``task_aware`` puts the instruction and the first prompt before the image (``instruction,
prompt, image, response``), so the model knows the task while it reads the patches. Further
turns of a packed sequence follow the first response in both orderings. A text-only example
(no image: LLaVA-665K's ShareGPT conversations) is the same sequence without the image
segment: no markers, no patch slots, no ``text_sep``; the instruction and prompt come first in
both orderings.

Labels are -100 everywhere except response tokens and the end-of-sequence token that closes
each response, so the loss only ever sees responses ("tokenization mismatch" is checked in the
tests by decoding the unmasked labels back into the responses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from vlab.errors import ConfigError
from vlab.models.vlm.parts import ImageLayout, SequenceConfig

IGNORE = -100
PATCH = -1  # placeholder id of a patch slot in ``input_ids`` before embedding


class Tokenizer(Protocol):
    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass
class Assembled:
    """One sequence. ``input_ids`` (T,) with PATCH in patch slots; ``labels`` (T,);
    ``patch_index`` (T,) the flat patch index (r * cols + c) of each patch slot, -1 elsewhere."""

    input_ids: list[int]
    labels: list[int]
    patch_index: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


class _Builder:
    def __init__(self) -> None:
        self.ids: list[int] = []
        self.labels: list[int] = []
        self.patch: list[int] = []

    def text(self, ids: Sequence[int], train: bool = False) -> None:
        self.ids.extend(ids)
        self.labels.extend(ids if train else [IGNORE] * len(ids))
        self.patch.extend([-1] * len(ids))

    def patches(self, start: int, n: int) -> None:
        self.ids.extend([PATCH] * n)
        self.labels.extend([IGNORE] * n)
        self.patch.extend(range(start, start + n))


def _encode(tok: Tokenizer, text: str | None) -> list[int]:
    return tok.encode(text, add_special_tokens=False) if text else []


def image_segment_length(layout: ImageLayout, rows: int, cols: int, tok: Tokenizer) -> int:
    """Number of tokens the image takes (patches + markers, not ``text_sep``): 601 for the
    authors' layout at 24 x 24 patches with one-token markers (24 x 25 + 1)."""
    b = _Builder()
    _add_image(b, layout, rows, cols, tok)
    return len(b.ids)


def _add_image(b: _Builder, layout: ImageLayout, rows: int, cols: int, tok: Tokenizer) -> None:
    start, brk, end = (_encode(tok, s) for s in (layout.start, layout.row_break, layout.end))
    b.text(start)
    for r in range(rows):
        b.patches(r * cols, cols)
        if not (r == rows - 1 and layout.last_row_break_is_end):
            b.text(brk)
    b.text(end)


def assemble(
    turns: Sequence[tuple[str, str]],
    instruction: str | None,
    grid: tuple[int, int] | None,
    tok: Tokenizer,
    cfg: SequenceConfig,
) -> Assembled:
    """Build one sequence from (prompt, response) turns, an instruction and an image grid.

    ``grid`` (rows, cols) of patches, or None for a text-only example (then the sequence is
    the tokenized conversation alone, ``patch_index`` all -1). Raises ConfigError if the
    result exceeds ``cfg.max_length`` (packing is responsible for staying under it).
    """
    if not turns:
        raise ValueError("an example needs at least one (prompt, response) turn")
    b = _Builder()
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    head = " ".join(t for t in (instruction, turns[0][0]) if t)
    head_ids = _encode(tok, head + cfg.prompt_suffix) if head else []
    if cfg.ordering == "task_aware":
        b.text(head_ids)
        if grid is not None:
            _add_image(b, cfg.layout, *grid, tok)
            b.text(_encode(tok, cfg.layout.text_sep))
    else:
        if grid is not None:
            _add_image(b, cfg.layout, *grid, tok)
            b.text(_encode(tok, cfg.layout.text_sep))
        b.text(head_ids)
    b.text(_encode(tok, turns[0][1]) + eos, train=True)
    for prompt, response in turns[1:]:
        b.text(_encode(tok, cfg.turn_separator + prompt + cfg.prompt_suffix))
        b.text(_encode(tok, response) + eos, train=True)
    if len(b.ids) > cfg.max_length:
        raise ConfigError(
            "max_length",
            f"sequence of {len(b.ids)} tokens exceeds max_length={cfg.max_length}; pack fewer "
            "turns per sequence or raise the limit",
        )
    return Assembled(b.ids, b.labels, b.patch)


def collate(items: Sequence[Assembled], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of sequences into a batch.

    Returns ``input_ids`` (B, T) with patch slots set to ``pad_id`` (they are overwritten by
    patch embeddings), ``labels`` (B, T), ``attention_mask`` (B, T), ``patch_index`` (B, T)
    with -1 outside patch slots.
    """
    T = max(len(x) for x in items)
    B = len(items)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    patch = torch.full((B, T), -1, dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x)
        row = torch.tensor(x.input_ids)
        ids[i, :n] = torch.where(row == PATCH, torch.tensor(pad_id), row)
        labels[i, :n] = torch.tensor(x.labels)
        mask[i, :n] = 1
        patch[i, :n] = torch.tensor(x.patch_index)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "patch_index": patch}
