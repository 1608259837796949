"""The GPT-NeoX family (Pythia): the Transformer arm, through ``transformers.GPTNeoXForCausalLM``.

Presets are the family's named shapes: "tiny" and "small" for CPU (the tiny one rotates all
head dims: 25% of 24 dims carries too little position signal to learn retrieval on a CPU
budget), then Pythia's own sizes (rotary on 25% of the head dims), built from config with
random weights.
"""

from __future__ import annotations

from vlab.models.backbones.family import Block, Family, Site

MODEL_TYPE = "gpt_neox"  # ``config.model_type`` of a checkpoint of this family

PRESETS: dict[str, dict] = {
    "tiny": dict(
        vocab_size=256,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=192,
        rotary_pct=1.0,
    ),
    "small": dict(
        vocab_size=256,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
    ),
    "160m": dict(
        vocab_size=50304,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
    ),
    "1b": dict(
        vocab_size=50304,
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=8,
        intermediate_size=8192,
    ),
    "1.4b": dict(
        vocab_size=50304,
        hidden_size=2048,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=8192,
    ),
    "2.8b": dict(
        vocab_size=50304,
        hidden_size=2560,
        num_hidden_layers=32,
        num_attention_heads=32,
        intermediate_size=10240,
    ),
}

DEFAULTS = dict(
    rotary_pct=0.25,
    max_position_embeddings=2048,
    use_parallel_residual=True,
    hidden_dropout=0.0,
    attention_dropout=0.0,
    tie_word_embeddings=False,
)


def hf_config(preset: str, **overrides):
    """The ``GPTNeoXConfig`` of a preset, with ``overrides`` set on it."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(**{**DEFAULTS, **PRESETS[preset], **overrides})


def model_kwargs(attn_implementation: str) -> dict:
    """Keyword arguments for ``from_config`` / ``from_pretrained``: the attention kernel."""
    return {"attn_implementation": attn_implementation}


def prepare() -> None:
    """Nothing to install before building a GPT-NeoX model."""


# GPT-NeoX's block: parallel residual, so the MLP reads the block's input through its own norm.
ATTENTION_BLOCK = Block(
    kind="attention",
    sites={
        "blocks.{i}.mixer_in": Site("gpt_neox.layers.{i}.input_layernorm"),
        "blocks.{i}.mixer_out": Site("gpt_neox.layers.{i}.attention", 0),
        "blocks.{i}.attn.pattern": Site("gpt_neox.layers.{i}.attention", 1),
        "blocks.{i}.mlp_in": Site("gpt_neox.layers.{i}.post_attention_layernorm"),
        "blocks.{i}.mlp_out": Site("gpt_neox.layers.{i}.mlp"),
        "blocks.{i}.resid_post": Site("gpt_neox.layers.{i}", 0),
    },
    readout="attention",
)

FAMILY = Family(
    arch="pythia",
    model_type=MODEL_TYPE,
    name="Pythia",
    vlm_name="Pythia-VL",
    color="#1f77b4",
    presets=PRESETS,
    defaults=DEFAULTS,
    hf_config=hf_config,
    model_kwargs=model_kwargs,
    prepare=prepare,
    blocks=(ATTENTION_BLOCK,),
    global_sites={
        "embed": Site("gpt_neox.embed_in"),
        "final_norm": Site("gpt_neox.final_layer_norm"),
        "logits": Site("lm_head"),
    },
    baseline=True,  # the Transformer: the benchmark reports the other arms' speeds against it
)
