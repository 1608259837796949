"""The VLM: vision encoder(s) -> projector -> language model, split as prismatic-vlms does.

``VLM.forward`` takes a collated batch (``vlm_sequence.collate``) plus pixel values: token
embeddings come from the LM's table, and every patch slot (``patch_index >= 0``) gets the
projector's output for that visual token instead. Both backbones (GPT-NeoX, Mamba) take
``inputs_embeds``, so the same module serves Pythia-VL and Mamba-VL.

With two encoders (MambaVLM's visual long sequence: e.g. DINOv2 and SigLIP on the same image)
the projector returns 2N tokens, map A's N then map B's; for the marker layout they form a
grid of 2 x rows rows.

Text-only rows (examples without an image, no patch slots) only embed their tokens: the
encoders and the projector see the rows that have patch slots and nothing else, and a call
without any such row (a text-only batch, a decoding step) does not run them at all. The one
exception keeps data-parallel training in step, see :meth:`VLM.embed`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlab.errors import ConfigError, VlabError
from vlab.models.backbones import (
    add_tokens,
    build_backbone,
    cache_argument,
    is_recurrent,
)
from vlab.models.vlm.connectors import build_projector
from vlab.models.vlm.loss import sequence_mean_loss
from vlab.models.vlm.parts import VLMConfig
from vlab.models.vlm.vision import build_vision_encoder


class VLM(nn.Module):
    """Vision encoder(s) + projector + causal LM.

    ``grid`` is the (rows, cols) of visual tokens the sequence layout must reserve.
    """

    def __init__(self, encoders: list[nn.Module], projector: nn.Module, lm: nn.Module):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.projector = projector
        self.lm = lm
        # Mamba-style LMs carry a state instead of keys and values; the cache's keyword
        # differs between transformers releases (``backbones.cache_argument``).
        self._recurrent = is_recurrent(lm)
        self._cache_argument = cache_argument(lm)
        rows, cols = encoders[0].grid
        for enc in encoders[1:]:
            if enc.grid != (rows, cols):
                raise ConfigError("vision2", f"grids differ: {encoders[0].grid} vs {enc.grid}")
        self.grid = (rows * (2 if projector.num_tokens(1) == 2 else 1), cols)

    @property
    def num_visual_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def visual_tokens(self, pixel_values: list[torch.Tensor]) -> torch.Tensor:
        """(B, 3, H, W) per encoder -> (B, N_visual, D_lm) in the layout's patch order."""
        feats = [enc(px) for enc, px in zip(self.encoders, pixel_values, strict=True)]
        return self.projector(*feats)

    def embed(
        self, input_ids: torch.Tensor, patch_index: torch.Tensor, pixel_values: list[torch.Tensor]
    ) -> torch.Tensor:
        """Token embeddings (B, T, D) with patch slots replaced by visual tokens.

        ``input_ids`` and ``patch_index`` (B, T); ``pixel_values`` one (B, 3, H, W) tensor per
        encoder, of which only the rows with patch slots are encoded (a text-only row's pixels
        are never read), or an empty list when no row has patch slots.

        In a training forward under ``torch.distributed`` a call without image rows still runs
        the encoders and projector once, on a blank image, and adds zero times its tokens:
        DDP's reducer waits for a gradient of every trainable parameter and FSDP's all-gathers
        are collectives, so a rank whose micro-batch happens to be text-only must take the
        same path as its peers. The result is unchanged and those gradients are zero.
        """
        emb = self.lm.get_input_embeddings()(input_ids)  # (B, T, D)
        slots = patch_index >= 0  # (B, T)
        rows = slots.any(1)  # (B,) the rows that read an image
        if bool(rows.any()):
            if len(pixel_values) != len(self.encoders):
                raise VlabError(
                    f"the batch has patch slots but {len(pixel_values)} pixel tensors for "
                    f"{len(self.encoders)} encoder(s)"
                )
            every = bool(rows.all())
            pixels = [px if every else px[rows] for px in pixel_values]  # (B_img, 3, H, W)
            visual = self.visual_tokens(pixels).to(emb.dtype)  # (B_img, N, D)
            own = patch_index if every else patch_index[rows]  # (B_img, T)
            idx = own.clamp(min=0).unsqueeze(-1).expand(-1, -1, emb.shape[-1])
            mine = emb if every else emb[rows]
            placed = torch.where((own >= 0).unsqueeze(-1), visual.gather(1, idx), mine)
            emb = placed if every else emb.index_put((rows,), placed)
        elif self.training and _data_parallel():
            blank = [
                torch.zeros(1, 3, enc.image_size, enc.image_size, device=emb.device)
                for enc in self.encoders
            ]
            emb = emb + 0.0 * self.visual_tokens(blank).sum().to(emb.dtype)
        return emb

    def forward(
        self,
        input_ids: torch.Tensor,
        patch_index: torch.Tensor,
        pixel_values: list[torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: Any = None,
        position_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Logits (B, T, V); with ``labels`` also the per-sequence-normalised ``loss``.

        ``cache`` (from :meth:`new_cache`) makes this a step of incremental decoding: the LM
        reads its keys and values (GPT-NeoX) or conv and SSM states (Mamba) from it and
        appends this call's tokens. ``attention_mask`` then covers the cached tokens too,
        (B, past + T); ``position_ids`` (B, T) place left-padded rows (attention LMs only:
        Mamba has no positions, and the mask keeps its padding out of the state).
        Generation passes through here rather than calling the LM directly so that the
        hooks of a wrapped model (FSDP's all-gathers) run as in training.
        """
        emb = self.embed(input_ids, patch_index, pixel_values)
        kwargs: dict[str, Any] = {}
        if self._recurrent:
            if attention_mask is not None and attention_mask.shape[1] == emb.shape[1]:
                kwargs["attention_mask"] = attention_mask  # the state has no use for the past
        else:
            if attention_mask is not None:
                kwargs["attention_mask"] = attention_mask
            if position_ids is not None:
                kwargs["position_ids"] = position_ids
        if cache is not None:
            kwargs.update({self._cache_argument: cache, "use_cache": True})
        logits = self.lm(inputs_embeds=emb, **kwargs).logits
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = sequence_mean_loss(logits, labels)
        return out

    def new_cache(self) -> Any:
        """An empty decoding cache for :meth:`forward` (keys/values or conv/SSM states)."""
        from transformers import DynamicCache

        return DynamicCache(config=self.lm.config)

    def fsdp_units(self) -> list[nn.Module]:
        """What FSDP shards one at a time (``TrainConfig.parallel="fsdp"``): the LM's decoder
        blocks, which hold nearly all of a 1B+ VLM's weights, and the encoders' transformer
        blocks (frozen 0.3-0.4B towers would otherwise stay unsharded in the root through the
        whole step). The LM's embeddings and head stay in the root unit, so Mamba's tied
        table is one parameter in one unit; the projector is small and stays there too.
        """
        from vlab.training.distributed import find_blocks

        return [*find_blocks(self.lm), *(b for enc in self.encoders for b in find_blocks(enc))]

    def set_stage(self, stage: int) -> None:
        """Stage 1: train the projector (and trainable encoders) only; stage 2: also the LM."""
        if stage not in (1, 2):
            raise ConfigError("stage", f"must be 1 or 2, got {stage}")
        for p in self.lm.parameters():
            p.requires_grad_(stage == 2)
        for p in self.projector.parameters():
            p.requires_grad_(True)
        for enc in self.encoders:
            for p in enc.parameters():
                p.requires_grad_(not enc.frozen)


def _data_parallel() -> bool:
    """True inside a ``torchrun`` process group (DDP or FSDP training)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def build_vlm(cfg: VLMConfig, vocab_size: int | None = None, seed: int = 0) -> VLM:
    """Build the parts, wire widths, and resize the LM to ``vocab_size`` if given.

    For from-scratch presets the LM is built with the tokenizer's vocabulary; a pretrained LM
    grows (never shrinks: Pythia pads its table) to the tokenizer's length with seeded rows.
    Every part is seeded, so two builds with the same seed are identical.
    """
    import dataclasses

    lm_cfg = cfg.lm
    if vocab_size is not None and lm_cfg.pretrained is None:
        lm_cfg = dataclasses.replace(
            lm_cfg, overrides={**lm_cfg.overrides, "vocab_size": vocab_size}
        )
    lm = build_backbone(lm_cfg, seed=seed)
    rows = lm.get_input_embeddings().weight.shape[0]
    if vocab_size is not None and vocab_size > rows:
        add_tokens(lm, vocab_size - rows, lm_cfg)  # seeded rows for added marker tokens
    encoders = [build_vision_encoder(cfg.vision, seed=seed)]
    if cfg.vision2 is not None:
        encoders.append(build_vision_encoder(cfg.vision2, seed=seed + 1))
    widths = tuple(e.width for e in encoders)
    lm_width = lm.get_input_embeddings().weight.shape[1]
    proj_cfg = dataclasses.replace(cfg.projector, vision_widths=widths, lm_width=lm_width)
    projector = build_projector(proj_cfg, seed=seed)
    return VLM(encoders, projector, lm)
