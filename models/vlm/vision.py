"""Vision encoders behind one interface: pixels in, a grid of patch features out.

Every encoder maps ``pixel_values`` (B, 3, S, S) to ``(B, rows, cols, D)``: one feature vector
per image patch in patch (row-major) order, class and register tokens stripped, so connectors
and the VLM's row-break layout never need to know which encoder produced them. Each encoder
also owns its image transform (``preprocess``), because every pretrained encoder expects its
own resolution, resampling filter and mean/std.

Kinds (``VisionConfig.kind``):

* ``"eva02"``: EVA-02 (SHAKEUP's encoder) through ``timm``; the ``"paper"`` preset has the shapes
  of timm's ``eva02_large_patch14_clip_336``. Weights are a local timm / OpenCLIP checkpoint
  file (or a folder holding one), remapped with timm's own checkpoint filter.
* ``"clip"``, ``"siglip"``, ``"dinov2"``: Hugging Face ``transformers`` vision towers; weights
  are a local ``save_pretrained`` folder (a full CLIP / SigLIP checkpoint works too, its text
  tower is ignored).
* ``"patch"``: a Fuyu-style raw-patch encoder (one linear map per p x p patch, no position
  embedding) for CPU runs without a pretrained tower.

Nothing here downloads: presets are built from config with random weights, and checkpoints are
read only from local paths.

Resolution: ``image_size`` different from the encoder's native size interpolates the position
embeddings (bicubic). EVA-02 resamples its absolute embeddings once when weights are loaded
(timm's filter) and its rotary embeddings follow the new grid; the Hugging Face towers
interpolate in every forward pass with their own ``interpolate_pos_encoding``. The grid is
``image_size // patch_size`` a side (the patch convolution drops a remainder, as SigLIP and
DINOv2 at 384 px with 14 px patches do: 27 x 27).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.parts import (
    _HF_MODEL_TYPES,
    EVA_ARCH,
    PRESETS,
    VisionConfig,
    _timm_weight_file,
)

if TYPE_CHECKING:
    from PIL.Image import Image

# Fuyu's image processor values: pixels scaled to [-1, 1], bilinear resize.
_PATCH_MEAN = (0.5, 0.5, 0.5)
_PATCH_STD = (0.5, 0.5, 0.5)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# PIL resampling filters by timm's interpolation names.
_PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}


class VisionEncoder(nn.Module):
    """One interface for every encoder: ``forward``, ``width``, ``grid``, ``preprocess``.

    Subclasses implement ``_tokens``: (B, 3, S, S) -> (B, T, D) with the patch tokens last in
    row-major order (any class / register tokens first); this class drops the prefix tokens
    and reshapes to the grid. ``pixel_mean`` / ``pixel_std`` / ``resample`` (a PIL filter id)
    define ``preprocess``.
    """

    def __init__(
        self,
        cfg: VisionConfig,
        *,
        image_size: int,
        native_image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        resample: int,
    ) -> None:
        super().__init__()
        if image_size < patch_size:
            raise ConfigError(
                "image_size", f"{image_size} px is smaller than one {patch_size} px patch"
            )
        if not -depth <= cfg.feature_layer < depth:
            raise ConfigError(
                "feature_layer",
                f"{cfg.feature_layer} is outside the encoder's {depth} layers "
                f"(use -{depth}..{depth - 1})",
            )
        self.config = cfg
        self.kind = cfg.kind
        self.image_size = image_size
        self.native_image_size = native_image_size
        self.patch_size = patch_size
        self.width = width
        self.depth = depth
        self.layer_index = cfg.feature_layer % depth
        self.frozen = False  # set by freeze(), which build_vision_encoder calls for cfg.frozen
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_std = tuple(float(v) for v in pixel_std)
        self.resample = int(resample)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch grid at the configured image size."""
        side = self.image_size // self.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols

    def _tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) pixels, S = ``image_size`` -> (B, rows, cols, width) patch features.

        Frozen encoders do not switch off autograd: parameters need no grad, but gradients
        still reach ``pixel_values`` when it requires them (saliency / probing work).
        """
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (
            3,
            self.image_size,
            self.image_size,
        ):
            raise VlabError(
                f"{self.kind} encoder expects pixel_values of shape (B, 3, {self.image_size}, "
                f"{self.image_size}), got {tuple(pixel_values.shape)}; use encoder.preprocess()"
            )
        dtype = next(self.parameters()).dtype
        tokens = self._tokens(pixel_values.to(dtype))
        rows, cols = self.grid
        if tokens.shape[1] < rows * cols:
            raise VlabError(
                f"{self.kind} encoder returned {tokens.shape[1]} tokens for a {rows}x{cols} grid"
            )
        patches = tokens[:, tokens.shape[1] - rows * cols :]
        return patches.reshape(tokens.shape[0], rows, cols, tokens.shape[-1])

    def train(self, mode: bool = True) -> VisionEncoder:
        """Frozen encoders stay in eval mode (no dropout, fixed norms) whatever ``mode`` is."""
        return super().train(mode and not self.frozen)

    def freeze(self) -> None:
        """No parameter requires grad and the encoder is put (and kept) in eval mode."""
        self.frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(False)

    @torch.no_grad()
    def preprocess(self, images: Sequence[Image]) -> torch.Tensor:
        """PIL images -> (B, 3, S, S) float32 pixels, normalised with the encoder's mean/std.

        Each image is converted to RGB and resized to S x S with the encoder's filter, without
        cropping or padding, so the whole image is seen and normalised box coordinates still
        address the same content (the processors' centre crop would cut the borders off).
        """
        if len(images) == 0:
            raise VlabError("preprocess() needs at least one image")
        size = (self.image_size, self.image_size)
        arrays = [
            np.asarray(img.convert("RGB").resize(size, resample=self.resample), dtype=np.float32)
            for img in images
        ]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
        mean = torch.tensor(self.pixel_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.pixel_std).view(1, 3, 1, 1)
        return ((pixels - mean) / std).contiguous()


class PatchEncoder(VisionEncoder):
    """Fuyu-style raw patches: each p x p x 3 patch flattened and mapped by one Linear.

    No position embedding (as in Fuyu): the LM learns positions from the token order and the
    row-break markers. A patch is flattened channel-major, (3, p, p) -> 3 * p * p.
    """

    def __init__(self, cfg: VisionConfig, image_size: int | None, shape: dict) -> None:
        size = image_size or shape["image_size"]
        super().__init__(
            cfg,
            image_size=size,
            native_image_size=shape["image_size"],
            patch_size=shape["patch_size"],
            width=shape["width"],
            depth=1,
            pixel_mean=_PATCH_MEAN,
            pixel_std=_PATCH_STD,
            resample=_PIL_FILTERS["bilinear"],
        )
        p = self.patch_size
        self.proj = nn.Linear(3 * p * p, self.width)

    def _tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        b, p = pixel_values.shape[0], self.patch_size
        rows, cols = self.grid
        x = pixel_values[:, :, : rows * p, : cols * p]
        x = x.reshape(b, 3, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
        return self.proj(x.reshape(b, rows * cols, 3 * p * p))


class TimmEvaEncoder(VisionEncoder):
    """EVA-02 through timm; features via ``forward_intermediates`` (prefix tokens removed)."""

    def __init__(self, cfg: VisionConfig, model: nn.Module, image_size: int, native: int):
        import timm.data

        data_cfg = timm.data.resolve_model_data_config(model)
        super().__init__(
            cfg,
            image_size=image_size,
            native_image_size=native,
            patch_size=int(model.patch_embed.patch_size[0]),
            width=int(model.embed_dim),
            depth=len(model.blocks),
            pixel_mean=data_cfg["mean"],
            pixel_std=data_cfg["std"],
            resample=_PIL_FILTERS.get(data_cfg.get("interpolation", "bicubic"), 3),
        )
        self.model = model

    def _tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        (features,) = self.model.forward_intermediates(
            pixel_values,
            indices=[self.layer_index],
            norm=self.config.final_norm,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        return features


class HFViTEncoder(VisionEncoder):
    """CLIP / SigLIP / DINOv2 vision towers from ``transformers``.

    The last layer with ``final_norm`` is the model's ``last_hidden_state`` (no hidden states
    kept); any other choice reads ``hidden_states[layer + 1]`` and applies the final norm here.
    """

    def __init__(
        self, cfg: VisionConfig, model: nn.Module, image_size: int, processor_values: tuple
    ) -> None:
        mc = model.config
        depth = int(mc.num_hidden_layers)
        mean, std, resample = processor_values
        super().__init__(
            cfg,
            image_size=image_size,
            native_image_size=int(mc.image_size),
            patch_size=int(mc.patch_size),
            width=int(mc.hidden_size),
            depth=depth,
            pixel_mean=mean,
            pixel_std=std,
            resample=resample,
        )
        self.model = model
        # CLIP: no norm on patch tokens; SigLIP: post_layernorm; DINOv2: layernorm.
        norm_name = {"clip": None, "siglip": "post_layernorm", "dinov2": "layernorm"}[cfg.kind]
        self._norm_name = norm_name
        if norm_name is not None and _find_module(model, norm_name) is None:
            raise VlabError(f"{type(model).__name__} has no final norm {norm_name!r}")

    def _tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = {}
        if self.kind in ("clip", "siglip") and self.image_size != self.native_image_size:
            kwargs["interpolate_pos_encoding"] = True  # DINOv2 always interpolates when needed
        last = self.layer_index == self.depth - 1
        if last and self.config.final_norm:
            return self.model(pixel_values=pixel_values, **kwargs).last_hidden_state
        out = self.model(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
        hidden = out.hidden_states[self.layer_index + 1]
        if self.config.final_norm and self._norm_name is not None:
            hidden = _find_module(self.model, self._norm_name)(hidden)
        return hidden


def _find_module(model: nn.Module, name: str) -> nn.Module | None:
    """``model.<name>`` or ``model.vision_model.<name>`` (layouts differ across versions)."""
    for owner in (model, getattr(model, "vision_model", None)):
        if owner is not None and isinstance(getattr(owner, name, None), nn.Module):
            return getattr(owner, name)
    return None


# --------------------------------------------------------------------------- construction


def build_vision_encoder(
    cfg: VisionConfig, seed: int = 0, device: str | torch.device | None = None
) -> VisionEncoder:
    """The encoder ``cfg`` describes: a preset with seeded random init, or local weights.

    ``device`` None builds on CPU; ``"meta"`` builds the shapes without memory (parameter
    counts, grid and width of the paper presets); it does not apply to ``pretrained``. Frozen
    encoders come back with no parameter requiring grad, in eval mode.
    """
    if device is not None and cfg.pretrained is not None:
        raise VlabError("build_vision_encoder: device= only applies to presets, not pretrained")
    placement = torch.device(device) if device is not None else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), placement:
        torch.manual_seed(seed)
        if cfg.kind == "patch":
            encoder: VisionEncoder = PatchEncoder(cfg, cfg.image_size, _preset(cfg))
        elif cfg.kind == "eva02":
            encoder = _build_eva(cfg)
        else:
            encoder = _build_hf(cfg)
    if cfg.frozen:
        encoder.freeze()
    return encoder


def _preset(cfg: VisionConfig) -> dict:
    return {**PRESETS[cfg.kind][cfg.preset], **cfg.overrides}


def _build_eva(cfg: VisionConfig) -> TimmEvaEncoder:
    """timm's EVA-02 at ``image_size`` (no classifier head), then local weights if given."""
    import timm

    shape = _preset(cfg)
    native = int(shape.get("img_size", 336))
    size = cfg.image_size or native
    model = timm.create_model(
        EVA_ARCH, pretrained=False, num_classes=0, **{**shape, "img_size": size}
    )
    if cfg.pretrained is not None:
        load_timm_checkpoint(model, cfg.pretrained)
    return TimmEvaEncoder(cfg, model, size, native)


def load_timm_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Loads a local timm / OpenCLIP EVA checkpoint into ``model`` without any network.

    timm's ``checkpoint_filter_fn`` renames keys (OpenCLIP ``visual.trunk.`` prefixes, fused
    qkv biases, original EVA names) and resamples the absolute position embeddings to the
    model's grid (bicubic), which is how a 336 px checkpoint runs at 448 / 560 px. Classifier
    head weights are ignored (the encoder has none); any other missing or unexpected key fails.
    """
    from timm.models.eva import checkpoint_filter_fn

    file = _timm_weight_file(Path(path))
    if file is None:
        raise VlabError(f"no EVA-02 checkpoint at {path}")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    state = checkpoint_filter_fn(state, model)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise VlabError(
            f"{file} does not fit the configured eva02 preset (check preset/overrides): {exc}"
        ) from exc
    if missing or unexpected:
        raise VlabError(
            f"{file} does not fit the configured eva02 preset: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def _hf_classes(kind: str, model_type: str):
    """The ``transformers`` model class of a kind (and DINOv2's register variant)."""
    import transformers as tf

    if kind == "clip":
        return tf.CLIPVisionModel, tf.CLIPVisionConfig
    if kind == "siglip":
        return tf.SiglipVisionModel, tf.SiglipVisionConfig
    if model_type == "dinov2_with_registers":
        return tf.Dinov2WithRegistersModel, tf.Dinov2WithRegistersConfig
    return tf.Dinov2Model, tf.Dinov2Config


def _build_hf(cfg: VisionConfig) -> HFViTEncoder:
    """A Hugging Face vision tower: ``from_pretrained`` on a local folder, or a preset."""
    if cfg.pretrained is None:
        model_cls, config_cls = _hf_classes(cfg.kind, cfg.kind)
        model = model_cls(config_cls(**_preset(cfg)))
    else:
        model_type = json.loads((Path(cfg.pretrained) / "config.json").read_text()).get(
            "model_type"
        )
        if model_type not in _HF_MODEL_TYPES[cfg.kind]:
            raise ConfigError(
                "pretrained",
                f"{cfg.pretrained} holds a {model_type!r} model, not a {cfg.kind} one "
                f"({', '.join(_HF_MODEL_TYPES[cfg.kind])})",
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model_cls, _ = _hf_classes(cfg.kind, model_type)
        model = model_cls.from_pretrained(cfg.pretrained, local_files_only=True)
    size = cfg.image_size or int(model.config.image_size)
    return HFViTEncoder(cfg, model, size, _hf_processor_values(cfg))


def _hf_processor_values(cfg: VisionConfig) -> tuple[tuple, tuple, int]:
    """(mean, std, PIL filter) of the kind's image processor, built without downloads.

    A ``preprocessor_config.json`` next to the weights wins; otherwise the processor class is
    built with the released checkpoints' values (CLIP: OpenAI mean/std, bicubic; SigLIP: 0.5 /
    0.5, bicubic; DINOv2: ``BitImageProcessor`` with ImageNet mean/std, bicubic).
    """
    import transformers as tf

    if cfg.pretrained is not None and (Path(cfg.pretrained) / "preprocessor_config.json").is_file():
        processor = tf.AutoImageProcessor.from_pretrained(cfg.pretrained, local_files_only=True)
    elif cfg.kind == "clip":
        processor = tf.CLIPImageProcessor()
    elif cfg.kind == "siglip":
        processor = tf.SiglipImageProcessor()
    else:
        processor = tf.BitImageProcessor(image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD)
    return tuple(processor.image_mean), tuple(processor.image_std), int(processor.resample)
