"""The retrieval probe with an image for a context: the model side (VLM parts, one module).

A run with ``task.modality = "image"`` trains :class:`ImageProbeModel`: the VLM of
:mod:`vlab.models.vlm` built from its parts (a vision encoder, an MLP connector, the run's
LM with the probe's tokens added as the text probe adds them) reading the image through its own
:meth:`~vlab.models.vlm.model.VLM.embed`, plus the query patch as one more visual token. The
engine's task (:class:`ImageProbeTrainTask`) is the text probe's with pixels for token ids:
the same loss on the target token and the same per-position accuracy, so the run directory is
the text probe's.

Why a query image averaged over a tiled canvas: the query must name the patch by its content
alone. Tiling the patch over every cell and averaging the cells' visual tokens gives one token
that no cell position shapes (with the raw-patch encoder every cell's token is the patch's own
token, exactly); encoders with position embeddings see the patch at every position at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlab.config import from_dict
from vlab.errors import VlabError
from vlab.models.backbones import add_tokens, base_vocab_size, build_backbone, count_parameters
from vlab.models.backbones.state import state_size
from vlab.models.vlm.connectors import build_projector
from vlab.models.vlm.model import VLM
from vlab.models.vlm.parts import ProjectorConfig, VisionConfig
from vlab.models.vlm.vision import build_vision_encoder
from vlab.probes.config import ProbeRunConfig
from vlab.probes.image_task import (
    ImageProbeBatch,
    ImageProbeData,
    ImageSequence,
    ImageVocab,
    image_layout,
    image_sequence,
    marker_strings,
)
from vlab.probes.train_task import ProbeTrainTask
from vlab.training.engine import Batch


class ImageProbeModel(nn.Module):
    """A VLM that reads one probe example: an image, a query image, a fixed token layout.

    ``vlm`` holds the encoder, connector and LM (its ``state_dict`` keys are ``vlm.*``);
    ``sequence`` the token layout every example shares (buffers, not saved in checkpoints:
    they follow from the config).
    """

    def __init__(self, vlm: VLM, sequence: ImageSequence):
        super().__init__()
        self.vlm = vlm
        self.query_index = int(sequence.query_index)
        self.register_buffer("input_ids", torch.from_numpy(sequence.input_ids), persistent=False)
        patch_index = torch.from_numpy(sequence.patch_index)
        self.register_buffer("patch_index", patch_index, persistent=False)
        encoder = vlm.encoders[0]
        self.register_buffer("pixel_mean", torch.tensor(encoder.pixel_mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(encoder.pixel_std), persistent=False)

    @property
    def lm(self) -> nn.Module:
        return self.vlm.lm

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 images -> (B, 3, S, S) float pixels, scaled to [0, 1] and
        normalised with the encoder's mean and std, as its ``preprocess`` does (the images
        are rendered at the encoder's size, so nothing is resized)."""
        pixels = images.permute(0, 3, 1, 2).float() / 255.0
        return (pixels - self.pixel_mean.view(1, 3, 1, 1)) / self.pixel_std.view(1, 3, 1, 1)

    def embed(self, images: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Input embeddings (B, T, D) of ``images`` and ``queries`` (B, S, S, 3) uint8: the
        VLM's own embedding of the image (visual tokens in the patch slots), and in the query
        slot the mean visual token of the query image."""
        batch = images.shape[0]
        ids = self.input_ids.expand(batch, -1)
        cells = self.patch_index.expand(batch, -1)
        emb = self.vlm.embed(ids, cells, [self.normalise(images)])  # (B, T, D)
        query = self.vlm.visual_tokens([self.normalise(queries)]).mean(dim=1)  # (B, D)
        q = self.query_index
        return torch.cat([emb[:, :q], query[:, None].to(emb.dtype), emb[:, q + 1 :]], dim=1)

    def forward(self, images: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) at the last input position, where the target is predicted."""
        emb = self.embed(images, queries)
        return self.vlm.lm(inputs_embeds=emb, logits_to_keep=1).logits[:, -1].float()


class ImageProbeTrainTask(ProbeTrainTask):
    """The text probe's engine task with images: a batch is (images, query images)."""

    data: ImageProbeData

    def inputs(self, batch: ImageProbeBatch, rows: slice = slice(None)) -> Batch:
        images, queries = self.data.pixels(batch, rows)
        return {"images": torch.from_numpy(images), "queries": torch.from_numpy(queries)}

    def logits(self, model: nn.Module, inputs: Batch) -> torch.Tensor:
        return model(inputs["images"], inputs["queries"])


@dataclass(frozen=True)
class ImageProbe:
    """What an image run trains: the model, its vocabulary, data and token layout."""

    model: ImageProbeModel
    vocab: ImageVocab
    data: ImageProbeData
    sequence: ImageSequence


def build_image_probe(cfg: ProbeRunConfig) -> ImageProbe:
    """The model and data of a resolved image run (``resolve`` wrote its ``image`` section
    out). Every part is seeded by ``train.seed`` (as ``build_vlm`` seeds a VLM's), the new
    token rows by ``model.init_seed`` (as the text probe's), so two builds are identical."""
    image = cfg.image
    if image is None or image.grid is None:
        raise VlabError("build_image_probe needs a resolved config (vlab.probes.config.resolve)")
    seed = cfg.train.seed
    lm = build_backbone(cfg.model, seed=seed)
    layout = image_layout(image.layout)
    vocab = ImageVocab.for_task(cfg.task, marker_strings(layout), base_vocab_size(lm))
    add_tokens(lm, len(vocab.new_token_names), cfg.model)
    encoder = build_vision_encoder(from_dict(VisionConfig, image.vision), seed=seed)
    projector_cfg = from_dict(ProjectorConfig, image.projector)
    lm_width = lm.get_input_embeddings().weight.shape[1]
    if projector_cfg.vision_widths != (encoder.width,) or projector_cfg.lm_width != lm_width:
        raise VlabError(
            f"image.projector widths {projector_cfg.vision_widths} -> {projector_cfg.lm_width} do "
            f"not fit the encoder ({encoder.width}) and LM ({lm_width}) the config builds"
        )
    vlm = VLM([encoder], build_projector(projector_cfg, seed=seed), lm)
    if vlm.grid != (image.grid, image.grid):
        raise VlabError(f"the encoder's grid {vlm.grid} is not image.grid={image.grid}")
    sequence = image_sequence(cfg.task.length, image.grid, cfg.task.variant, image.layout, vocab)
    data = ImageProbeData(cfg.task, vocab, encoder.patch_size, image.grid)
    return ImageProbe(ImageProbeModel(vlm, sequence), vocab, data, sequence)


def parameter_counts(model: ImageProbeModel) -> dict[str, int]:
    """The LM's counts (:func:`~vlab.models.backbones.count_parameters`) with the encoder and
    connector added to ``total`` and ``non_embedding``, and on their own as ``vision``."""
    lm = count_parameters(model.lm)
    vision = sum(p.numel() for p in model.parameters()) - lm["total"]
    return {
        "total": lm["total"] + vision,
        "embedding": lm["embedding"],
        "non_embedding": lm["non_embedding"] + vision,
        "vision": vision,
    }


def lm_state_size(model: ImageProbeModel, seq_len: int) -> dict[str, int]:
    """The LM's decoding state at the image task's input length (the encoder keeps none)."""
    return {**state_size(model.lm, seq_len), "tokens": seq_len}


@torch.no_grad()
def embeddings(
    model: ImageProbeModel,
    data: ImageProbeData,
    batch: ImageProbeBatch,
    n: int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """(n, T, D) float32 input embeddings of the first ``n`` examples of ``batch`` (all when
    None): their images and queries rendered and embedded as training embeds them, what the
    LM reads, for analyses that trace the LM alone (:mod:`vlab.analysis.inside`)."""
    n = len(batch) if n is None else min(n, len(batch))
    device = next(model.parameters()).device
    parts = []
    for start in range(0, n, batch_size):
        rows = slice(start, min(n, start + batch_size))
        images, queries = (torch.from_numpy(a).to(device) for a in data.pixels(batch, rows))
        parts.append(model.embed(images, queries).float().cpu())
    return torch.cat(parts) if parts else torch.zeros(0, 0, 0)


def heldout_embeddings(
    model: ImageProbeModel, data: ImageProbeData, n: int, batch_size: int = 256
) -> torch.Tensor:
    """(n, T, D) float32 input embeddings of the first ``n`` held-out examples
    (:func:`embeddings` of ``data.heldout``)."""
    return embeddings(model, data, data.heldout, n, batch_size)
