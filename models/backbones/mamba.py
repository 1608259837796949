"""The Mamba family (Mamba-1): the SSM arm, through ``transformers.MambaForCausalLM``.

Presets: "tiny" and "small" for CPU, then the papers' sizes (expand 2, d_state 16, conv 4),
built from config with random weights. Before a model is built, vlab's fast selective scan is
plugged under transformers' Mamba (``ops.selective_scan.install_into_transformers``).
"""

from __future__ import annotations

from vlab.models.backbones.family import Block, Family, Site

MODEL_TYPE = "mamba"

PRESETS: dict[str, dict] = {
    "tiny": dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, state_size=16),
    "small": dict(vocab_size=256, hidden_size=128, num_hidden_layers=6, state_size=16),
    "130m": dict(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16),
    "790m": dict(vocab_size=50280, hidden_size=1536, num_hidden_layers=48, state_size=16),
    "1.4b": dict(vocab_size=50280, hidden_size=2048, num_hidden_layers=48, state_size=16),
    "2.8b": dict(vocab_size=50280, hidden_size=2560, num_hidden_layers=64, state_size=16),
}

DEFAULTS = dict(expand=2, conv_kernel=4, tie_word_embeddings=True)


def hf_config(preset: str, **overrides):
    """The ``MambaConfig`` of a preset, with ``overrides`` set on it."""
    from transformers import MambaConfig

    return MambaConfig(**{**DEFAULTS, **PRESETS[preset], **overrides})


def model_kwargs(attn_implementation: str) -> dict:
    """Mamba has no attention: nothing to choose."""
    return {}


def prepare() -> None:
    """Route transformers' Mamba scan through vlab's fast CPU / mamba-ssm dispatch."""
    from vlab.models.ops.selective_scan import install_into_transformers

    install_into_transformers()


# transformers' Mamba layout, shared by Mamba-2 and the hybrid: ``backbone.layers.{i}`` is
# (norm -> mixer) + residual, and nothing else.
BACKBONE_SITES = {
    "embed": Site("backbone.embeddings"),
    "final_norm": Site("backbone.norm_f"),
    "logits": Site("lm_head"),
}
BLOCK_SITES = {
    "blocks.{i}.mixer_in": Site("backbone.layers.{i}.norm"),
    "blocks.{i}.mixer_out": Site("backbone.layers.{i}.mixer", 0),
    "blocks.{i}.resid_post": Site("backbone.layers.{i}", 0),
}
MAMBA_BLOCK = Block(
    kind="mamba",
    sites=BLOCK_SITES,
    readout="hidden_attention",
    internals="vlab.models.backbones.mamba_internals",
)

FAMILY = Family(
    arch="mamba",
    model_type=MODEL_TYPE,
    name="Mamba",
    vlm_name="Mamba-VL",
    color="#ff7f0e",
    presets=PRESETS,
    defaults=DEFAULTS,
    hf_config=hf_config,
    model_kwargs=model_kwargs,
    prepare=prepare,
    blocks=(MAMBA_BLOCK,),
    global_sites=BACKBONE_SITES,
    selective_scan=True,
    scan_comparison=True,
)
