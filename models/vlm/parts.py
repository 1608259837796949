"""The VLM's part configs, torch-free: what to build, validated on construction.

A run config (:mod:`vlab.vlm.config`), a sweep spec's expansion and ``vlab sweep show`` read and
check these without importing torch; the modules that build the parts (:mod:`.vision`,
:mod:`.connectors`, :mod:`.sequence`, :mod:`.model`) import them from here.

* :class:`VisionConfig`: which vision encoder, at which resolution (``PRESETS`` per kind);
* :class:`ProjectorConfig`: which connector and its widths;
* :class:`ImageLayout` and :class:`SequenceConfig`: markers, ordering, length, template;
* :class:`VLMConfig`: the VLM by parts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vlab.errors import ConfigError
from vlab.models.backbones import BackboneConfig

Kind = Literal["patch", "eva02", "clip", "siglip", "dinov2"]
KINDS: tuple[str, ...] = ("patch", "eva02", "clip", "siglip", "dinov2")
HF_KINDS: tuple[str, ...] = ("clip", "siglip", "dinov2")

# The timm architecture every eva02 preset builds; presets only override its shapes, so the
# tiny CPU model has the same block types (SwiGLU MLP, rotary + absolute positions, sub-LN).
EVA_ARCH = "eva02_large_patch14_clip_336"

# Named shapes with random weights. "tiny": CPU test shapes (width 32, 2 layers, 32 px images,
# 8 px patches: a 4 x 4 grid). "paper": the released encoders' shapes. eva02 presets are
# keyword overrides of ``EVA_ARCH``; clip / siglip / dinov2 presets are ``transformers`` config
# fields; patch presets are the raw-patch encoder's own fields.
PRESETS: dict[str, dict[str, dict]] = {
    "patch": {
        "tiny": dict(image_size=32, patch_size=8, width=32),
        # Same grid (24 x 24) and width as EVA-02-L/14 at 336 px, so a raw-patch arm produces
        # the paper's token layout.
        "paper": dict(image_size=336, patch_size=14, width=1024),
    },
    "eva02": {
        "tiny": dict(
            img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, ref_feat_shape=(4, 4)
        ),
        "paper": dict(img_size=336),
    },
    "clip": {
        "tiny": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        # CLIP ViT-L/14 at 336 px (openai/clip-vit-large-patch14-336).
        "paper": dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        ),
    },
    "siglip": {
        "tiny": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        # SigLIP so400m/14 at 384 px (google/siglip-so400m-patch14-384): 27 x 27 patches.
        "paper": dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
            image_size=384,
            patch_size=14,
        ),
    },
    "dinov2": {
        "tiny": dict(
            hidden_size=32,
            mlp_ratio=2,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        # DINOv2 ViT-L/14 (facebook/dinov2-large), native 518 px; MambaVLM runs it at 384.
        "paper": dict(
            hidden_size=1024,
            mlp_ratio=4,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=518,
            patch_size=14,
            layerscale_value=1.0,
        ),
    },
}

# Model types a local checkpoint of each Hugging Face kind may hold.
_HF_MODEL_TYPES: dict[str, tuple[str, ...]] = {
    "clip": ("clip", "clip_vision_model"),
    "siglip": ("siglip", "siglip_vision_model"),
    "dinov2": ("dinov2", "dinov2_with_registers"),
}
# File names searched, in order, when an eva02 checkpoint is given as a folder.
_TIMM_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)


@dataclass(frozen=True)
class VisionConfig:
    """Which vision encoder to build, at which resolution, and which features to read out.

    ``preset`` names random-init shapes (``PRESETS[kind]``); ``overrides`` are set on them
    (e.g. ``{"num_hidden_layers": 4}``). ``pretrained`` is a local path: a ``save_pretrained``
    folder for clip / siglip / dinov2 (replaces ``preset``), a timm checkpoint file or a folder
    holding one for eva02 (``preset`` then names the checkpoint's shapes, which timm files do
    not store). ``image_size`` None means the encoder's native size. ``feature_layer`` indexes
    the transformer blocks (-1 = last, the papers' choice; 0 = first); ``final_norm`` applies
    the encoder's own final norm to that layer's output (SigLIP's ``post_layernorm``,
    DINOv2's and EVA-02's ``norm``; CLIP has none on patch tokens, its ``post_layernorm`` is
    trained on the pooled token only).

    ``frozen`` None resolves at construction to the kind's default: True for the pretrained
    encoder kinds (SHAKEUP freezes EVA-02), False for ``patch``, whose random linear map is
    only useful if trained with the VLM (Fuyu trains it). Frozen means no parameter requires
    grad and the encoder stays in eval mode under ``.train()``.
    """

    kind: Kind = "patch"
    preset: str = "tiny"
    pretrained: str | None = None
    image_size: int | None = None
    frozen: bool | None = None
    feature_layer: int = -1
    final_norm: bool = True
    overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in PRESETS:
            raise ConfigError("kind", f"{self.kind!r} is not one of {', '.join(KINDS)}")
        uses_preset = self.pretrained is None or self.kind == "eva02"
        if uses_preset and self.preset not in PRESETS[self.kind]:
            names = ", ".join(PRESETS[self.kind])
            raise ConfigError("preset", f"{self.preset!r} is not a {self.kind} preset ({names})")
        if self.pretrained is not None:
            _check_pretrained(self.kind, self.pretrained)
        if self.image_size is not None and self.image_size <= 0:
            raise ConfigError(
                "image_size", f"must be a positive pixel count, got {self.image_size}"
            )
        if self.image_size is not None:
            from vlab.preflight import MAX_IMAGE_SIDE, check_at_most

            check_at_most(self.image_size, MAX_IMAGE_SIDE, "image_size", "px")
        if self.frozen is None:
            object.__setattr__(self, "frozen", self.kind != "patch")


def _check_pretrained(kind: str, pretrained: str) -> None:
    """Fails before any work when ``pretrained`` cannot hold weights for ``kind``."""
    path = Path(pretrained)
    if kind == "patch":
        raise ConfigError(
            "pretrained",
            "the patch encoder has no pretrained weights (it is trained with the VLM); "
            "leave pretrained unset",
        )
    if kind in HF_KINDS and not (path / "config.json").is_file():
        raise ConfigError(
            "pretrained",
            f"{pretrained!r} is not a local {kind} checkpoint folder (no config.json); save one "
            "with save_pretrained() or download it yourself first",
        )
    if kind == "eva02" and _timm_weight_file(path) is None:
        raise ConfigError(
            "pretrained",
            f"{pretrained!r} is neither a checkpoint file nor a folder holding one of "
            f"{', '.join(_TIMM_WEIGHT_FILES)}",
        )


def _timm_weight_file(path: Path) -> Path | None:
    """The weight file a timm checkpoint path points to, or None."""
    if path.is_file():
        return path
    if path.is_dir():
        for name in _TIMM_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
    return None


ProjectorKind = Literal["mlp", "channel_concat", "mamba"]
Interleave = Literal["cross_stitch", "cross_cat"]
ReversedScans = Literal["flip", "per_map"]
_N_INPUTS = {"mlp": 1, "channel_concat": 2, "mamba": 2}


@dataclass(frozen=True)
class ProjectorConfig:
    """Which connector to build and its widths.

    ``vision_widths``: feature width of each input map (one for ``mlp``, two for
    ``channel_concat`` and ``mamba``: map A then map B). ``hidden_width`` is the MLP's hidden
    width (None resolves to ``lm_width``, LLaVA-1.5's choice). Mamba projector fields:
    ``d_model`` the common width the maps are projected to (None resolves to ``lm_width``);
    ``d_state``, ``d_conv``, ``expand`` of each Mamba block; ``dw_kernel`` the depthwise conv's
    kernel side; ``interleave`` and ``reversed_scans`` as in the module docstring;
    ``shared_block`` True runs the four scan sequences through one Mamba block (one batched
    call) instead of one block per order (VMamba-style separate parameters, the default).
    """

    kind: ProjectorKind = "mlp"
    vision_widths: tuple[int, ...] = (32,)
    lm_width: int = 64
    hidden_width: int | None = None
    d_model: int | None = None
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dw_kernel: int = 3
    interleave: Interleave = "cross_stitch"
    reversed_scans: ReversedScans = "flip"
    shared_block: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _N_INPUTS:
            raise ConfigError("kind", f"{self.kind!r} is not one of {', '.join(_N_INPUTS)}")
        widths = tuple(self.vision_widths)
        if len(widths) != _N_INPUTS[self.kind]:
            raise ConfigError(
                "vision_widths",
                f"{self.kind} takes {_N_INPUTS[self.kind]} feature map(s), got {len(widths)} "
                "widths",
            )
        if any(int(w) <= 0 for w in widths):
            raise ConfigError("vision_widths", f"widths must be positive, got {widths}")
        object.__setattr__(self, "vision_widths", widths)
        for name in ("lm_width", "d_state", "d_conv", "expand"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        for name in ("hidden_width", "d_model"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(name, f"must be positive, got {value}")
        if self.dw_kernel <= 0 or self.dw_kernel % 2 == 0:
            raise ConfigError("dw_kernel", f"must be a positive odd size, got {self.dw_kernel}")
        if self.interleave not in ("cross_stitch", "cross_cat"):
            raise ConfigError("interleave", f"{self.interleave!r} is not cross_stitch or cross_cat")
        if self.reversed_scans not in ("flip", "per_map"):
            raise ConfigError("reversed_scans", f"{self.reversed_scans!r} is not flip or per_map")

    @property
    def mlp_hidden(self) -> int:
        """The MLP's hidden width: ``hidden_width``, or ``lm_width`` when None. Resolved here
        rather than stored, so None keeps following the LM's width when that is filled in."""
        return self.hidden_width or self.lm_width

    @property
    def model_width(self) -> int:
        """The Mamba projector's common width: ``d_model``, or ``lm_width`` when None."""
        return self.d_model or self.lm_width


Ordering = Literal["task_agnostic", "task_aware"]


@dataclass(frozen=True)
class ImageLayout:
    """Marker strings around the patch grid (None = no marker).

    ``last_row_break_is_end``: the authors' code writes the end marker in place of the last
    row break. ``text_sep`` is written after the image, before the text that follows it.
    """

    start: str | None = "##"
    row_break: str | None = "&&"
    end: str | None = "##"
    last_row_break_is_end: bool = False
    text_sep: str | None = None

    @classmethod
    def paper(cls) -> ImageLayout:
        return cls()

    @classmethod
    def authors(cls) -> ImageLayout:
        return cls(
            start="###", row_break="&&", end="###", last_row_break_is_end=True, text_sep="##"
        )


@dataclass(frozen=True)
class SequenceConfig:
    """How examples become sequences: layout, ordering, length limit, text template."""

    layout: ImageLayout = ImageLayout()
    ordering: Ordering = "task_agnostic"
    max_length: int = 1024
    prompt_suffix: str = "\n"
    turn_separator: str = "\n"

    def __post_init__(self) -> None:
        if self.ordering not in ("task_agnostic", "task_aware"):
            raise ConfigError("ordering", f"{self.ordering!r} is not task_agnostic or task_aware")
        if self.max_length < 8:
            raise ConfigError("max_length", f"must be >= 8, got {self.max_length}")
        from vlab.preflight import MAX_SEQUENCE, check_at_most

        check_at_most(self.max_length, MAX_SEQUENCE, "max_length", "tokens")


@dataclass(frozen=True)
class VLMConfig:
    """A VLM by parts. ``vision2`` is the second encoder of a two-map projector.

    ``projector.vision_widths`` and ``projector.lm_width`` are filled in from the built
    encoders and LM (a value given there must match them).
    """

    lm: BackboneConfig = field(default_factory=BackboneConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    vision2: VisionConfig | None = None
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)

    def __post_init__(self) -> None:
        needs_two = self.projector.kind in ("mamba", "channel_concat")
        if needs_two and self.vision2 is None:
            raise ConfigError("vision2", f"a {self.projector.kind} projector needs two encoders")
        if not needs_two and self.vision2 is not None:
            raise ConfigError("vision2", "an mlp projector takes one encoder; drop vision2")
