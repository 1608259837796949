"""A trained VLM at another input resolution: its config, its sequence length, its weights.

SHAKEUP finetunes its stage-2 models at 448 / 480 / 560 px (EVA-02-L/14 was trained at 336)
by interpolating the encoder's position embeddings. Three things follow the resolution:

* the encoders' ``image_size`` (every encoder of the VLM, so two-encoder projectors still see
  equal grids), hence the patch grid ``S // patch`` a side and the number of visual tokens;
* the sequence: the image segment (patches, row breaks, start / end markers) grows with the
  grid, so ``max_length`` grows by exactly as many tokens as the image segment does and the
  text keeps its budget (:func:`following_max_length`); markers are placed from the model's
  grid by :mod:`vlab.models.vlm.sequence`, so the layout follows by itself;
* the weights: :func:`load_at_resolution` loads a state dict trained at one resolution into a
  VLM built at another. Only EVA-02 stores position embeddings whose shape depends on the
  grid; they are resampled with timm's checkpoint filter (bicubic, antialiased), the same
  mechanism :func:`~vlab.models.vlm.vision.load_timm_checkpoint` uses for a pretrained 336 px
  checkpoint at 448 px. The Hugging Face towers interpolate in every forward pass, and the
  raw-patch encoder has no position embedding, so their weights load unchanged.

At the resolution the weights were trained at, the resampling is the identity: the encoder
then gives exactly the features it gave before (the tests' known answer).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch

from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.model import VLM
from vlab.models.vlm.parts import HF_KINDS, SequenceConfig, VisionConfig, VLMConfig
from vlab.models.vlm.vision import TimmEvaEncoder, build_vision_encoder


def encoder_geometry(cfg: VisionConfig) -> tuple[int, int]:
    """``(image_size, patch_size)`` in pixels of the encoder ``cfg`` describes, without weights.

    Presets (and EVA-02, whose checkpoints do not store shapes) are built on the meta device;
    a pretrained Hugging Face tower's shapes are read from its ``config.json``. Remembered per
    config, so expanding a sweep of many resolutions builds each encoder once.
    """
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    if key not in _GEOMETRY:
        _GEOMETRY[key] = _geometry(cfg)
    return _GEOMETRY[key]


_GEOMETRY: dict[str, tuple[int, int]] = {}


def _geometry(cfg: VisionConfig) -> tuple[int, int]:
    if cfg.pretrained is not None and cfg.kind in HF_KINDS:
        from transformers import AutoConfig

        hf = AutoConfig.from_pretrained(cfg.pretrained, local_files_only=True)
        hf = getattr(hf, "vision_config", hf)  # a full CLIP / SigLIP checkpoint
        return cfg.image_size or int(hf.image_size), int(hf.patch_size)
    encoder = build_vision_encoder(dataclasses.replace(cfg, pretrained=None), device="meta")
    return encoder.image_size, encoder.patch_size


def check_resolution(model: VLMConfig, resolution: int, field: str = "resolution") -> int:
    """The patch grid side at ``resolution`` px; a ConfigError naming ``field`` unless it is a
    positive multiple of every encoder's patch size (a remainder would be cut off the image
    by the patch convolution, and boxes would no longer address what the model sees)."""
    if resolution < 1:
        raise ConfigError(field, f"must be a positive pixel count, got {resolution}")
    from vlab.preflight import MAX_IMAGE_SIDE, check_at_most

    check_at_most(resolution, MAX_IMAGE_SIDE, field, "px")
    sides = set()
    for vision in (model.vision, model.vision2):
        if vision is None:
            continue
        _, patch = encoder_geometry(vision)
        if resolution % patch:
            below, above = resolution // patch * patch, (resolution // patch + 1) * patch
            hint = f"{below} or {above}" if below else str(above)
            raise ConfigError(
                field,
                f"{resolution} px is not a multiple of the {vision.kind} encoder's {patch} px "
                f"patches (use e.g. {hint})",
            )
        sides.add(resolution // patch)
    if len(sides) != 1:
        raise ConfigError(field, f"the encoders' grids differ at {resolution} px: {sorted(sides)}")
    return sides.pop()


def at_resolution(model: VLMConfig, resolution: int, max_length: int | None = None) -> VLMConfig:
    """``model`` with every encoder at ``resolution`` px (and ``max_length`` if given)."""
    vision = dataclasses.replace(model.vision, image_size=resolution)
    vision2 = model.vision2
    if vision2 is not None:
        vision2 = dataclasses.replace(vision2, image_size=resolution)
    sequence = model.sequence
    if max_length is not None:
        sequence = dataclasses.replace(sequence, max_length=max_length)
    return dataclasses.replace(model, vision=vision, vision2=vision2, sequence=sequence)


def following_max_length(
    seq: SequenceConfig, old_grid: tuple[int, int], new_grid: tuple[int, int], tok: Any
) -> int:
    """``seq.max_length`` plus the tokens the image segment gains from ``old_grid`` to
    ``new_grid`` (rows, cols of visual tokens), so text keeps the room it had.

    The authors' layout at 336 -> 560 px with 14 px patches and one-token markers:
    1024 + (40 x 41 + 1) - (24 x 25 + 1) = 2064.
    """
    from vlab.models.vlm.batch import image_tokens

    grown = image_tokens(seq, new_grid, tok) - image_tokens(seq, old_grid, tok)
    return seq.max_length + grown


def load_at_resolution(model: VLM, state: dict[str, torch.Tensor]) -> None:
    """Load a VLM ``state`` dict trained at any resolution into ``model`` (strictly).

    EVA-02 encoders' absolute position embeddings ``encoders.{i}.model.pos_embed``
    (1, 1 + rows_old * cols_old, D) are resampled to (1, 1 + rows * cols, D) by timm's
    checkpoint filter (class token kept, the grid bicubic-resized with antialiasing); every
    other tensor must fit as it is.
    """
    from timm.models.eva import checkpoint_filter_fn

    state = dict(state)
    for i, encoder in enumerate(model.encoders):
        if not isinstance(encoder, TimmEvaEncoder):
            continue
        prefix = f"encoders.{i}.model."
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        own = checkpoint_filter_fn(own, encoder.model)
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
        state.update({prefix + k: v for k, v in own.items()})
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise VlabError(
            f"the checkpoint does not fit the VLM at {model.encoders[0].image_size} px: {first}"
        ) from e
