"""The hybrid backbone's ``transformers`` classes: Mamba-1 blocks with attention blocks between.

Composed from Hugging Face's own blocks so that "hybrid" differs from the ``mamba`` arm only by
its attention layers: every layer is a pre-norm residual block, ``x + mixer(RMSNorm(x))``, whose
mixer is transformers' ``MambaMixer`` (so vlab's fast selective scan runs under it, installed
as for the ``mamba`` arm) or, at the indices in ``config.attention_layers``, GPT-NeoX's
attention (rotary positions, the Transformer arm's attention). No MLPs, as in Mamba. The
decoding cache is transformers' ``DynamicCache`` built from ``config.layer_types``: recurrent
states for the Mamba layers, keys and values for the attention layers.

Imports torch and transformers at module level: :mod:`vlab.models.backbones.hybrid` imports
this module only when a model is built.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, MambaConfig
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask, create_recurrent_attention_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.gpt_neox.modeling_gpt_neox import (
    GPTNeoXAttention,
    GPTNeoXRotaryEmbedding,
)
from transformers.models.mamba.modeling_mamba import (
    MambaBlock,
    MambaPreTrainedModel,
    MambaRMSNorm,
)

MODEL_TYPE = "vlab_hybrid"


class HybridConfig(MambaConfig):
    """``MambaConfig`` plus the attention layers: which indices, how many heads, rotary.

    ``attention_layers``: the layer indices that are attention blocks (the others are Mamba
    blocks); when None, every ``attention_period``-th layer from ``attention_offset`` is one
    (Jamba's 1-in-8 pattern by default). ``partial_rotary_factor``: share of each head's dims
    that rotate (1.0, as the tiny Pythia preset). Attention projections have biases, as
    GPT-NeoX's.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        attention_layers: list[int] | None = None,
        attention_period: int = 8,
        attention_offset: int = 4,
        num_attention_heads: int = 2,
        partial_rotary_factor: float = 1.0,
        rope_theta: float = 10000.0,
        max_position_embeddings: int = 2048,
        attention_bias: bool = True,
        attention_dropout: float = 0.0,
        **kwargs,
    ):
        self.attention_period = attention_period
        self.attention_offset = attention_offset
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.rope_parameters = {
            "rope_type": "default",
            "rope_theta": rope_theta,
            "partial_rotary_factor": partial_rotary_factor,
        }
        kwargs.pop("rope_parameters", None)  # written by to_dict; rebuilt from the fields above
        super().__init__(**kwargs)
        if attention_layers is None:
            attention_layers = [
                i
                for i in range(self.num_hidden_layers)
                if i % attention_period == attention_offset % max(attention_period, 1)
            ]
        self.attention_layers = sorted(int(i) for i in attention_layers)
        bad = [i for i in self.attention_layers if not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ValueError(
                f"attention_layers {self.attention_layers}: index {bad[0]} is not a layer of "
                f"this {self.num_hidden_layers}-layer model (0..{self.num_hidden_layers - 1})"
            )
        if self.hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{num_attention_heads}"
            )

    @property
    def partial_rotary_factor(self) -> float:
        return self.rope_parameters["partial_rotary_factor"]

    @property
    def layer_types(self) -> list[str]:
        """Per layer, the cache it needs: what ``DynamicCache(config=...)`` reads."""
        attention = set(self.attention_layers)
        return [
            "full_attention" if i in attention else "linear_attention"
            for i in range(self.num_hidden_layers)
        ]

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["rope_theta"] = self.rope_parameters["rope_theta"]
        out["partial_rotary_factor"] = self.rope_parameters["partial_rotary_factor"]
        out.pop("rope_parameters", None)
        return out


class AttentionBlock(GradientCheckpointingLayer):
    """``x + attention(RMSNorm(x))``: a Mamba block's shape with attention as the mixer."""

    def __init__(self, config: HybridConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = MambaRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mixer = GPTNeoXAttention(config, layer_idx=layer_idx)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.norm(hidden_states.to(dtype=self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.to(torch.float32)
        out, _ = self.mixer(
            hidden_states,
            attention_mask=attention_mask,
            layer_past=cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        return residual + out


class HybridPreTrainedModel(MambaPreTrainedModel):
    """Mamba's weight init (S4D A, dt, conv) for the Mamba layers; linear layers as Mamba's."""

    config_class = HybridConfig
    config: HybridConfig
    _no_split_modules = ["MambaBlock", "AttentionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True


class HybridModel(HybridPreTrainedModel):
    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        attention = set(config.attention_layers)
        self.layers = nn.ModuleList(
            AttentionBlock(config, i) if i in attention else MambaBlock(config, layer_idx=i)
            for i in range(config.num_hidden_layers)
        )
        self.rotary_emb = GPTNeoXRotaryEmbedding(config)
        self.norm_f = MambaRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Embeddings (B, T, H) -> final-norm hidden states (B, T, H); positions count on from
        the cache's length, as in transformers' hybrid models."""
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:  # only attention layers read positions (and know the length)
            past = (
                cache.get_seq_length() if cache is not None and self.config.attention_layers else 0
            )
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past
            position_ids = position_ids.unsqueeze(0)
        mask_kwargs = {
            "config": self.config,
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "cache": cache,
            "position_ids": position_ids,
        }
        masks = {"linear_attention": create_recurrent_attention_mask(**mask_kwargs)}
        if self.config.attention_layers:
            masks["full_attention"] = create_causal_mask(**mask_kwargs)
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        output_hidden_states = (
            output_hidden_states
            if output_hidden_states is not None
            else self.config.output_hidden_states
        )
        all_hidden = (hidden_states,) if output_hidden_states else None
        for layer, kind in zip(self.layers, self.config.layer_types, strict=True):
            if kind == "full_attention":
                hidden_states = layer(
                    hidden_states,
                    attention_mask=masks[kind],
                    cache=cache,
                    position_embeddings=position_embeddings,
                    **kwargs,
                )
            else:
                hidden_states = layer(hidden_states, cache=cache, attention_mask=masks[kind])
            if output_hidden_states:
                all_hidden = (*all_hidden, hidden_states)
        hidden_states = self.norm_f(hidden_states)
        if output_hidden_states:
            all_hidden = (*all_hidden[:-1], hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
            hidden_states=all_hidden,
        )


class HybridForCausalLM(HybridPreTrainedModel, GenerationMixin):
    """The hybrid with a language-model head tied to the input embeddings (as Mamba's)."""

    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: HybridConfig):
        super().__init__(config)
        self.backbone = HybridModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.backbone.set_input_embeddings(new_embeddings)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        hidden = out.last_hidden_state[:, keep, :]  # a norm may return fp32 in a bf16 model
        logits = self.lm_head(hidden.to(self.lm_head.weight.dtype))
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=out.cache,
            hidden_states=out.hidden_states,
        )
