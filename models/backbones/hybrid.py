"""The hybrid family: Mamba-1 layers with a few attention layers, the likely fix for retrieval.

Why composed rather than one of transformers' hybrids: Jamba is the one with Mamba-1 layers,
but every Jamba layer also has an MLP (and dt/B/C norms), and Bamba, Zamba2, FalconH1 and
NemotronH use Mamba-2 layers. vlab's hybrid (:mod:`.hybrid_model`) is the ``mamba`` arm with
some mixers swapped for GPT-NeoX attention, so a comparison with ``mamba`` isolates the
attention layers. Its Mamba layers are transformers' own ``MambaMixer`` and run vlab's fast
selective scan.

Presets have the ``mamba`` arm's widths where that keeps the non-embedding parameter count
within 10% of both other arms' presets of the same name: "tiny" (2 layers, attention at
layer 1, width 72: 61,704 parameters) and "small" (7 layers, attention at layer 3, Jamba's 1
attention layer in 8 rounded to 7 layers), then paper-scale shapes with the ``mamba`` arm's
widths and depths and an attention layer every 8th layer from layer 4 (Jamba's pattern).
``model.overrides`` picks the layers: ``{"attention_layers": [0, 1]}``, or
``{"attention_period": 4, "attention_offset": 1}``.
"""

from __future__ import annotations

from typing import Any

from vlab.errors import ConfigError
from vlab.models.backbones.family import Block, Family, Site
from vlab.models.backbones.mamba import BACKBONE_SITES, MAMBA_BLOCK

MODEL_TYPE = "vlab_hybrid"

PRESETS: dict[str, dict] = {
    "tiny": dict(
        vocab_size=256,
        hidden_size=72,
        num_hidden_layers=2,
        state_size=16,
        num_attention_heads=2,
        attention_layers=[1],
    ),
    "small": dict(
        vocab_size=256,
        hidden_size=128,
        num_hidden_layers=7,
        state_size=16,
        num_attention_heads=4,
        attention_layers=[3],
    ),
    "130m": dict(vocab_size=50280, hidden_size=768, num_hidden_layers=24, num_attention_heads=12),
    "790m": dict(vocab_size=50280, hidden_size=1536, num_hidden_layers=48, num_attention_heads=16),
    "1.4b": dict(vocab_size=50280, hidden_size=2048, num_hidden_layers=48, num_attention_heads=16),
    "2.8b": dict(vocab_size=50280, hidden_size=2560, num_hidden_layers=64, num_attention_heads=32),
}

DEFAULTS = dict(
    expand=2,
    conv_kernel=4,
    state_size=16,
    attention_period=8,
    attention_offset=4,
    partial_rotary_factor=1.0,
    tie_word_embeddings=True,
)


def check_settings(settings: dict, field: str) -> None:
    """The attention layers must be layers of the model: checked on plain data (no torch), so a
    sweep refuses a bad index before anything runs."""
    layers = settings.get("attention_layers")
    n = settings.get("num_hidden_layers")
    if layers is None or not isinstance(n, int):
        return
    if not isinstance(layers, (list, tuple)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in layers
    ):
        raise ConfigError(
            f"{field}.attention_layers", f"must be a list of layer indices, got {layers!r}"
        )
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise ConfigError(
            f"{field}.attention_layers",
            f"index {bad[0]} is not a layer of this {n}-layer model (0..{n - 1})",
        )


def hf_config(preset: str, **overrides):
    """The ``HybridConfig`` of a preset, with ``overrides`` set on it."""
    from vlab.models.backbones.hybrid_model import HybridConfig

    settings = {**DEFAULTS, **PRESETS[preset], **overrides}
    if "attention_layers" not in overrides and (
        "attention_period" in overrides or "attention_offset" in overrides
    ):
        settings.pop("attention_layers", None)  # a period / offset given: it picks the layers
    return HybridConfig(**settings)


def model_kwargs(attn_implementation: str) -> dict:
    """The attention kernel of the attention layers."""
    return {"attn_implementation": attn_implementation}


def prepare() -> None:
    """Register the hybrid with transformers' Auto classes (so ``from_pretrained`` finds it)
    and route its Mamba layers' scan through vlab's fast CPU / mamba-ssm dispatch."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from vlab.models.backbones.hybrid_model import HybridConfig, HybridForCausalLM
    from vlab.models.ops.selective_scan import install_into_transformers

    try:
        AutoConfig.register(MODEL_TYPE, HybridConfig)
        AutoModelForCausalLM.register(HybridConfig, HybridForCausalLM)
    except ValueError:
        pass  # registered already (this process built a hybrid before)
    install_into_transformers()


# An attention layer in Mamba's module names: GPT-NeoX attention as the mixer.
ATTENTION_BLOCK = Block(
    kind="attention",
    sites={
        "blocks.{i}.mixer_in": Site("backbone.layers.{i}.norm"),
        "blocks.{i}.mixer_out": Site("backbone.layers.{i}.mixer", 0),
        "blocks.{i}.attn.pattern": Site("backbone.layers.{i}.mixer", 1),
        "blocks.{i}.resid_post": Site("backbone.layers.{i}", 0),
    },
    readout="attention",
)


def layer_kind(config: Any, layer: int) -> str:
    """The block at ``layer`` of a ``HybridConfig``: attention at ``config.attention_layers``,
    Mamba-1 elsewhere."""
    return ATTENTION_BLOCK.kind if layer in config.attention_layers else MAMBA_BLOCK.kind


FAMILY = Family(
    arch="hybrid",
    model_type=MODEL_TYPE,
    name="Hybrid",
    vlm_name="Hybrid-VL",
    color="#2ca02c",
    presets=PRESETS,
    defaults=DEFAULTS,
    hf_config=hf_config,
    model_kwargs=model_kwargs,
    prepare=prepare,
    check_settings=check_settings,
    blocks=(MAMBA_BLOCK, ATTENTION_BLOCK),
    global_sites=BACKBONE_SITES,
    layer_kind=layer_kind,
    selective_scan=True,
)
