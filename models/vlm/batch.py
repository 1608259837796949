"""Model inputs from samples: the collated batch of a list of :class:`VLSample`.

Training, its held-out evaluation, ``vlab vlm eval`` and ``vlab vlm generate`` all turn samples
into the same tensors here (assembled sequences, response-only labels, every encoder's pixels),
so a benchmark answer is generated from exactly the input layout the model was trained on.

A batch may mix examples with an image and text-only ones (LLaVA-665K's conversations without
an image): a text-only row has no image markers and no patch slots, and its rows of the pixel
tensors are zeros that nothing reads (the model encodes only rows with patch slots). Every
tensor keeps one row per example because the training engine slices batches by rows (ranks,
gradient-accumulation micro-batches); a batch without any image has no pixel tensors at all.
"""

from __future__ import annotations

from typing import Any

import torch

from vlab.models.vlm.data.instructions import instruction_for
from vlab.models.vlm.data.records import VLSample, load_image
from vlab.models.vlm.model import VLM
from vlab.models.vlm.parts import SequenceConfig
from vlab.models.vlm.sequence import Assembled, assemble, collate, image_segment_length
from vlab.models.vlm.tokenizer import pad_token_id

Batch = dict[str, torch.Tensor]


def assemble_sample(
    sample: VLSample, grid: tuple[int, int], tok: Any, seq: SequenceConfig
) -> Assembled:
    """One sample's token sequence (image slots for a ``grid`` of visual tokens, its task's
    instruction, every turn) with labels on the responses only. A text-only sample gets no
    image segment whatever ``grid`` is."""
    turns = [(t.prompt, t.response) for t in sample.turns]
    image_grid = grid if sample.has_image else None
    return assemble(turns, instruction_for(sample.task) or None, image_grid, tok, seq)


def batch_of(samples: list[VLSample], model: VLM, tok: Any, seq: SequenceConfig) -> Batch:
    """The collated batch of ``samples`` for ``model``.

    Keys: ``input_ids``, ``patch_index``, ``labels``, ``attention_mask`` (B, T), right-padded
    with :func:`~vlab.models.vlm.tokenizer.pad_token_id`, and, when at least one sample has an
    image, ``pixel_values_{i}`` (B, 3, H, W) preprocessed for encoder ``i`` of ``model``: only
    the images are read and preprocessed, the rows of text-only samples stay zero. On the CPU.
    """
    batch = collate([assemble_sample(s, model.grid, tok, seq) for s in samples], pad_token_id(tok))
    has_image = torch.tensor([s.has_image for s in samples], dtype=torch.bool)  # (B,)
    if not has_image.any():
        return batch
    images = [load_image(s) for s in samples if s.has_image]
    for i, enc in enumerate(model.encoders):
        pixels = enc.preprocess(images)  # (B_img, 3, H, W)
        if has_image.all():
            batch[f"pixel_values_{i}"] = pixels
            continue
        rows = pixels.new_zeros((len(samples), *pixels.shape[1:]))  # (B, 3, H, W)
        rows[has_image] = pixels
        batch[f"pixel_values_{i}"] = rows
    return batch


def pixel_values(batch: Batch) -> list[torch.Tensor]:
    """The batch's pixel values, one (B, 3, H, W) tensor per encoder in encoder order; empty
    when no row of the batch has an image."""
    return [batch[k] for k in sorted(batch) if k.startswith("pixel_values_")]


def image_tokens(seq: SequenceConfig, grid: tuple[int, int], tok: Any) -> int:
    """Tokens the image takes in a sequence (patches, markers and the text separator): what
    packing reserves before counting text."""
    sep = seq.layout.text_sep
    n_sep = len(tok.encode(sep, add_special_tokens=False)) if sep else 0
    return image_segment_length(seq.layout, *grid, tok) + n_sep
