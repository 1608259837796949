"""The fully resolved config of one probe run: task x backbone x training (x image)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vlab.models.backbones import BackboneConfig, vocab_size
from vlab.probes.image_task import ImageProbeConfig, resolve_image
from vlab.probes.tasks import ProbeTaskConfig, ProbeVocab
from vlab.training.config import TrainConfig


@dataclass(frozen=True)
class ProbeRunConfig:
    """What ``config.json`` of a probe run holds.

    Seeds: ``task.seed`` fixes the data (held-out set, training examples and their order);
    ``train.seed`` the backbone's random init; ``model.init_seed`` the rows of the new tokens.

    ``image`` is the image side of a run with ``task.modality = "image"`` (None: the defaults,
    written out by :func:`resolve`); a text run has none.
    """

    task: ProbeTaskConfig = field(default_factory=ProbeTaskConfig)
    model: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_batch_size: int = 512
    image: ImageProbeConfig | None = None

    def __post_init__(self) -> None:
        from vlab.errors import ConfigError

        if self.eval_batch_size < 1:
            raise ConfigError("eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        if self.task.modality == "tokens" and self.image is not None:
            raise ConfigError(
                "image", "is for task.modality='image'; this run shows tokens: drop the section"
            )
        if self.task.modality == "image":
            try:
                (self.image or ImageProbeConfig()).side(self.task.length)
            except ConfigError as e:
                raise ConfigError(f"image.{e.field}", str(e).split(": ", 1)[1]) from None


def resolve(cfg: ProbeRunConfig) -> ProbeRunConfig:
    """Write out the defaults that depend on other fields (pool size, eval interval; an image
    run's grid, encoder and projector, see :func:`~vlab.probes.image_task.resolve_image`)."""
    task = dataclasses.replace(
        cfg.task,
        pool_size=cfg.task.pool,
        n_train=cfg.task.train_size,
        n_heldout=cfg.task.heldout_size,
    )
    train_cfg = dataclasses.replace(cfg.train, eval_every=cfg.train.eval_interval)
    # the task's target ids must fit the backbone's vocabulary: known from the preset or the
    # checkpoint's config.json, so this fails here, before any run directory exists
    ProbeVocab.for_task(task, base_vocab_size=vocab_size(cfg.model))
    image = cfg.image
    if task.modality == "image":  # imports torch: the VLM's part configs live with the parts
        image = resolve_image(image or ImageProbeConfig(), task.length, cfg.model)
    return dataclasses.replace(cfg, task=task, train=train_cfg, image=image)
