"""Model inputs from samples: the collated batch of a list of :class:`VLSample`.

Training, its held-out evaluation and ``vlab vlm eval`` all turn samples into the same
tensors here (assembled sequences, response-only labels, every encoder's pixels), so a
benchmark answer is generated from exactly the input layout the model was trained on.
"""

from __future__ import annotations

from typing import Any

import torch

from vlab.models.vlm.data.instructions import instruction_for
from vlab.models.vlm.data.records import VLSample, load_image
from vlab.models.vlm.model import VLM
from vlab.models.vlm.sequence import (
    Assembled,
    SequenceConfig,
    assemble,
    collate,
    image_segment_length,
)
from vlab.models.vlm.tokenizer import pad_token_id

Batch = dict[str, torch.Tensor]


def assemble_sample(
    sample: VLSample, grid: tuple[int, int], tok: Any, seq: SequenceConfig
) -> Assembled:
    """One sample's token sequence (image slots for a ``grid`` of visual tokens, its task's
    instruction, every turn) with labels on the responses only."""
    turns = [(t.prompt, t.response) for t in sample.turns]
    return assemble(turns, instruction_for(sample.task) or None, grid, tok, seq)


def batch_of(samples: list[VLSample], model: VLM, tok: Any, seq: SequenceConfig) -> Batch:
    """The collated batch of ``samples`` for ``model``.

    Keys: ``input_ids``, ``patch_index``, ``labels``, ``attention_mask`` (B, T), right-padded
    with :func:`~vlab.models.vlm.tokenizer.pad_token_id`, and ``pixel_values_{i}``
    (B, 3, H, W) preprocessed for encoder ``i`` of ``model``. On the CPU.
    """
    batch = collate([assemble_sample(s, model.grid, tok, seq) for s in samples], pad_token_id(tok))
    images = [load_image(s) for s in samples]
    for i, enc in enumerate(model.encoders):
        batch[f"pixel_values_{i}"] = enc.preprocess(images)
    return batch


def pixel_values(batch: Batch) -> list[torch.Tensor]:
    """The batch's pixel values, one (B, 3, H, W) tensor per encoder in encoder order."""
    return [batch[k] for k in sorted(batch) if k.startswith("pixel_values_")]


def image_tokens(seq: SequenceConfig, grid: tuple[int, int], tok: Any) -> int:
    """Tokens the image takes in a sequence (patches, markers and the text separator): what
    packing reserves before counting text."""
    sep = seq.layout.text_sep
    n_sep = len(tok.encode(sep, add_special_tokens=False)) if sep else 0
    return image_segment_length(seq.layout, *grid, tok) + n_sep
