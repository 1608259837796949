"""Train a backbone on the retrieval probe into a run directory.

The probe plugs into the shared engine as a :class:`~vlab.training.engine.TrainTask`: batches
come from :class:`~vlab.probes.tasks.ProbeData` by step, the loss is cross-entropy on the
target token only (predicted at the last input position), and each evaluation records
held-out accuracy overall and per target position. A run with ``task.modality = "image"``
trains a VLM on the same task (:mod:`vlab.probes.image_model`) into the same run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlab.config import to_dict
from vlab.models.backbones import (
    add_tokens,
    base_vocab_size,
    build_backbone,
    check_backbone,
    count_parameters,
)
from vlab.models.backbones.state import state_size
from vlab.preflight import (
    check_device,
    check_memory,
    check_model_memory,
    check_output_dir,
    check_threads,
    on_meta,
)
from vlab.probes.config import ProbeRunConfig, resolve
from vlab.probes.tasks import ProbeBatch, ProbeData, ProbeVocab
from vlab.probes.tracking import per_position_accuracy
from vlab.training.distributed import claim_run, setup_distributed
from vlab.training.engine import Batch, TrainResult, resolve_device, train


def target_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits (N, vocab) at the last input position, where the target is predicted."""
    return model(input_ids=input_ids, logits_to_keep=1).logits[:, -1].float()


class ProbeTrainTask:
    """The retrieval probe as seen by the engine.

    What a batch of examples feeds the model is :meth:`inputs`, how the target logits are
    read is :meth:`logits`: the image task (:class:`~vlab.probes.image_model.
    ImageProbeTrainTask`) changes those two and keeps the loss and the evaluation.
    """

    def __init__(
        self, data: ProbeData, batch_size: int, eval_batch_size: int, device: torch.device
    ):
        self.data = data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.device = device

    def inputs(self, batch: ProbeBatch, rows: slice = slice(None)) -> Batch:
        """The model inputs of examples ``rows`` of ``batch``: CPU tensors [N, ...]."""
        return {"input_ids": torch.from_numpy(batch.input_ids[rows])}

    def logits(self, model: nn.Module, inputs: Batch) -> torch.Tensor:
        """(N, vocab) target logits of :meth:`inputs` (on the model's device)."""
        return target_logits(model, inputs["input_ids"])

    def train_batch(self, step: int) -> Batch:
        b = self.data.train_batch(step, self.batch_size)
        return {**self.inputs(b), "targets": torch.from_numpy(b.targets)}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch), batch["targets"])

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        held = self.data.heldout
        losses, correct = [], []
        for i in range(0, len(held), self.eval_batch_size):
            rows = slice(i, i + self.eval_batch_size)
            inputs = {k: v.to(self.device) for k, v in self.inputs(held, rows).items()}
            tgt = torch.from_numpy(held.targets[rows]).to(self.device)
            logits = self.logits(model, inputs)
            losses.append(F.cross_entropy(logits, tgt, reduction="sum").item())
            correct.append((logits.argmax(-1) == tgt).cpu().numpy())
        hits = np.concatenate(correct)
        return {
            "eval_loss": sum(losses) / len(held),
            "accuracy": float(hits.mean()),
            "per_position": per_position_accuracy(hits, held.positions, self.data.task.length),
        }


def preflight(cfg: ProbeRunConfig, out: str | Path) -> ProbeRunConfig:
    """The resolved config, once everything that can be checked before writing has been: the
    output directory (creatable, not a file), the device (present) and threads (bounded), the
    memory the task's data and tables take (:func:`task_bytes`, at most
    :data:`~vlab.preflight.MAX_DATA_BYTES`), and the model built on the meta device (its
    transformers config, a pretrained directory's weights). Creates nothing; cheap (no weights
    in memory). :func:`run_probe` calls it before claiming the run, so sweeps get it too."""
    cfg = resolve(cfg)
    check_output_dir(out)
    check_device(cfg.train.device, "train.device")
    check_threads(cfg.train.threads, "train.threads")
    lm = check_backbone(cfg.model, "model")
    check_model_memory(lm, cfg.train.device, "model", sharded=cfg.train.parallel == "fsdp")
    width = lm.get_input_embeddings().weight.shape[1]
    tied = lm.get_output_embeddings() is None or bool(lm.config.tie_word_embeddings)
    check_memory(task_bytes(cfg, width, tied), _size_field(cfg), "the task's data and tables")
    if cfg.task.modality == "image":
        on_meta(lambda: _image_parts(cfg), "image")
    return cfg


def task_bytes(cfg: ProbeRunConfig, width: int, tied: bool) -> int:
    """Bytes the task holds whatever the batch: the held-out set (ids, and the keys that keep
    training disjoint from it), one epoch's order of the training set, and the new embedding
    rows (input and untied output table) with their gradients and AdamW's two moments, or an
    image run's pool of patch images."""
    task = cfg.task
    heldout = task.heldout_size * (task.seq_len * 8 + 2 * (task.length * 4 + 4) + 64)
    order = task.train_size * 8
    if task.modality == "image":
        from vlab.config import from_dict
        from vlab.models.vlm.resolution import encoder_geometry
        from vlab.models.vlm.vision import VisionConfig

        _, patch = encoder_geometry(from_dict(VisionConfig, cfg.image.vision))
        return heldout + order + task.pool * patch * patch * 3
    rows = task.pool + 2 + (task.length if task.target_mode == "position" else 0)
    return heldout + order + rows * width * 4 * (1 if tied else 2) * 4


def _size_field(cfg: ProbeRunConfig) -> str:
    """The task field to blame for too much memory: the one far above its default."""
    task = cfg.task
    if task.pool > 2 * task.length:
        return "task.pool_size"
    if task.heldout_size > 32 * task.length:
        return "task.n_heldout"
    if task.train_size > 1_000_000:
        return "task.n_train"
    return "task.length"


def _image_parts(cfg: ProbeRunConfig):
    """An image run's encoder and projector (built on the meta device by :func:`preflight`)."""
    from vlab.config import from_dict
    from vlab.models.vlm.connectors import ProjectorConfig, build_projector
    from vlab.models.vlm.vision import VisionConfig, build_vision_encoder

    vision = from_dict(VisionConfig, cfg.image.vision)
    if vision.pretrained is None:
        build_vision_encoder(vision, seed=0)
    return build_projector(from_dict(ProjectorConfig, cfg.image.projector), seed=0)


def run_probe(
    cfg: ProbeRunConfig, out: str | Path, *, progress: bool = True, should_stop=None, log=print
) -> TrainResult | None:
    """Train one probe run into ``out`` (resuming it if unfinished); None if already done."""
    cfg = preflight(cfg, out)  # every check, before the directory exists
    ctx = setup_distributed(resolve_device(cfg.train.device))
    run, done = claim_run(ctx, out, to_dict(cfg), defaults=to_dict(type(cfg)()))
    if done:
        status = run.read_status() or {}
        log(f"{run.path}: already done ({status.get('reason')}); nothing to do")
        return None
    try:
        device = ctx.device(resolve_device(cfg.train.device))
        build = _build_image if cfg.task.modality == "image" else _build_tokens
        model, task, params, state, shown = build(cfg, device)
        log = log if ctx.is_main else (lambda *_: None)
        log(
            f"{run.path}: {cfg.model.arch} ({cfg.model.pretrained or cfg.model.preset}) "
            f"{params['total']:,} parameters ({params['non_embedding']:,} non-embedding), "
            f"{cfg.task.variant} L={cfg.task.length}{shown}"
        )
        run.write_status("running", params=params, arch=cfg.model.arch, state_size=state)
        return train(model, task, cfg.train, run, should_stop=should_stop, progress=progress)
    finally:
        run.release()  # the run's writer lock (see RunDir.claim)


def _build_tokens(cfg: ProbeRunConfig, device: torch.device):
    """(model, engine task, parameter counts, state size, log note) of a text run."""
    model = build_backbone(cfg.model, seed=cfg.train.seed)
    vocab = ProbeVocab.for_task(cfg.task, base_vocab_size=base_vocab_size(model))
    add_tokens(model, len(vocab.new_token_names), cfg.model)
    state = {**state_size(model, cfg.task.seq_len), "tokens": cfg.task.seq_len}
    data = ProbeData(cfg.task, vocab)
    task = ProbeTrainTask(data, cfg.train.batch_size, cfg.eval_batch_size, device)
    return model, task, count_parameters(model), state, ""


def _build_image(cfg: ProbeRunConfig, device: torch.device):
    """The same for an image run (:mod:`vlab.probes.image_model`)."""
    from vlab.probes.image_model import (
        ImageProbeTrainTask,
        build_image_probe,
        lm_state_size,
        parameter_counts,
    )

    probe = build_image_probe(cfg)
    task = ImageProbeTrainTask(probe.data, cfg.train.batch_size, cfg.eval_batch_size, device)
    state = lm_state_size(probe.model, len(probe.sequence))
    side = probe.data.side
    shown = f", image {side}x{side} ({cfg.image.layout} layout, {len(probe.sequence)} tokens)"
    return probe.model, task, parameter_counts(probe.model), state, shown
