"""The Mamba-2 family (SSD): the SSM most people now train, through
``transformers.Mamba2ForCausalLM``.

Presets: "tiny" and "small" for CPU, with non-embedding parameter counts within 10% of both
other arms' presets of the same name (tiny: Pythia 56,640, Mamba 65,472, Mamba-2 60,784), then
the shapes of the state-spaces Mamba-2 checkpoints (d_state 128, head dim 64, one group,
expand 2, conv 4), built from config with random weights. Mamba-2's state per layer is heads x
head dim x state size: twice Mamba-1's at the tiny shapes.
"""

from __future__ import annotations

from vlab.models.backbones.family import Block, Family
from vlab.models.backbones.mamba import BACKBONE_SITES, BLOCK_SITES

MODEL_TYPE = "mamba2"


def _shape(hidden: int, layers: int, state: int, head_dim: int, vocab: int = 50280) -> dict:
    """A preset: ``expand`` x ``hidden`` inner channels split into heads of ``head_dim``."""
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        state_size=state,
        head_dim=head_dim,
        num_heads=DEFAULTS["expand"] * hidden // head_dim,
    )


DEFAULTS = dict(
    expand=2,
    conv_kernel=4,
    n_groups=1,
    chunk_size=256,
    tie_word_embeddings=True,
    pad_token_id=0,
    bos_token_id=0,
    eos_token_id=0,
)

PRESETS: dict[str, dict] = {
    "tiny": _shape(64, 2, 32, 16, vocab=256),
    "small": _shape(128, 6, 96, 32, vocab=256),
    "130m": _shape(768, 24, 128, 64),
    "370m": _shape(1024, 48, 128, 64),
    "780m": _shape(1536, 48, 128, 64),
    "1.3b": _shape(2048, 48, 128, 64),
    "2.7b": _shape(2560, 64, 128, 64),
}


def hf_config(preset: str, **overrides):
    """The ``Mamba2Config`` of a preset, with ``overrides`` set on it."""
    from transformers import Mamba2Config

    return Mamba2Config(**{**DEFAULTS, **PRESETS[preset], **overrides})


def model_kwargs(attn_implementation: str) -> dict:
    """Mamba-2 has no attention: nothing to choose."""
    return {}


def prepare() -> None:
    """Route transformers' Mamba-2 mixer through vlab's fast CPU SSD scan and causal conv
    (``ops.ssd.install_into_transformers``); other devices keep transformers' kernels."""
    from vlab.models.ops.ssd import install_into_transformers

    install_into_transformers()


# transformers' Mamba-2 keeps Mamba's module names; only the mixer inside differs.
MAMBA2_BLOCK = Block(
    kind="mamba2",
    sites=BLOCK_SITES,
    readout="hidden_attention",
    internals="vlab.models.backbones.mamba2_internals",
)

FAMILY = Family(
    arch="mamba2",
    model_type=MODEL_TYPE,
    name="Mamba-2",
    vlm_name="Mamba2-VL",
    color="#d62728",
    presets=PRESETS,
    defaults=DEFAULTS,
    hf_config=hf_config,
    model_kwargs=model_kwargs,
    prepare=prepare,
    blocks=(MAMBA2_BLOCK,),
    global_sites=BACKBONE_SITES,
)
