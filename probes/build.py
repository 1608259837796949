"""The probe's model and data, built from a resolved run config as training builds them.

One builder for every reader: training (:mod:`vlab.probes.trainer`), reopening a trained run
(:meth:`vlab.probes.experiment.ProbeExperiment.open`: ``vlab inspect``) and the held-out
examples the inspection reads. A text run is the LM with the task's tokens added
(:class:`TokenProbe`); an image run is a VLM on the same task
(:class:`~vlab.probes.image_model.ImageProbe`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from vlab.models.backbones import add_tokens, base_vocab_size, build_backbone
from vlab.probes.config import ProbeRunConfig
from vlab.probes.image_model import ImageProbe, build_image_probe
from vlab.probes.tasks import ProbeData, ProbeVocab


@dataclass
class TokenProbe:
    """What a text run trains: the LM with the task's new token rows, its vocabulary, data."""

    model: nn.Module
    vocab: ProbeVocab
    data: ProbeData


def build_probe(cfg: ProbeRunConfig) -> TokenProbe | ImageProbe:
    """The model (freshly initialised: seeded by ``train.seed``, new token rows by
    ``model.init_seed``) and the data of a resolved run (:func:`vlab.probes.config.resolve`)."""
    if cfg.task.modality == "image":
        return build_image_probe(cfg)
    model = build_backbone(cfg.model, seed=cfg.train.seed)
    vocab = ProbeVocab.for_task(cfg.task, base_vocab_size=base_vocab_size(model))
    add_tokens(model, len(vocab.new_token_names), cfg.model)
    return TokenProbe(model, vocab, ProbeData(cfg.task, vocab))
