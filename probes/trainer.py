"""Train a backbone on the retrieval probe into a run directory.

The probe plugs into the shared engine as a :class:`~vlab.training.engine.TrainTask`: batches
come from :class:`~vlab.probes.tasks.ProbeData` by step, the loss is cross-entropy on the
target token only (predicted at the last input position), and each evaluation records
held-out accuracy overall and per target position. A run with ``task.modality = "image"``
trains a VLM on the same task (:mod:`vlab.probes.image_model`) into the same run directory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlab.config import to_dict
from vlab.models.backbones import (
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
from vlab.probes.build import build_probe
from vlab.probes.config import ProbeRunConfig, resolve
from vlab.probes.image_model import (
    ImageProbe,
    ImageProbeTrainTask,
    lm_state_size,
    parameter_counts,
)
from vlab.probes.train_task import ProbeTrainTask
from vlab.training.distributed import claim_run, setup_distributed
from vlab.training.engine import TrainResult, resolve_device, train


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
        from vlab.models.vlm.parts import VisionConfig
        from vlab.models.vlm.resolution import encoder_geometry

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
    from vlab.models.vlm.connectors import build_projector
    from vlab.models.vlm.parts import ProjectorConfig, VisionConfig
    from vlab.models.vlm.vision import build_vision_encoder

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
    kind = "image-probe" if cfg.task.modality == "image" else "probe"
    run, done = claim_run(ctx, out, to_dict(cfg), defaults=to_dict(type(cfg)()), kind=kind)
    if done:
        status = run.read_status() or {}
        log(f"{run.path}: already done ({status.get('reason')}); nothing to do")
        return None
    try:
        device = ctx.device(resolve_device(cfg.train.device))
        model, task, params, state, shown = _training_parts(cfg, device)
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


def _training_parts(cfg: ProbeRunConfig, device: torch.device):
    """(model, engine task, parameter counts, state size, log note) of the run."""
    probe = build_probe(cfg)
    if isinstance(probe, ImageProbe):
        task = ImageProbeTrainTask(probe.data, cfg.train.batch_size, cfg.eval_batch_size, device)
        state = lm_state_size(probe.model, len(probe.sequence))
        side, layout = probe.data.side, cfg.image.layout
        shown = f", image {side}x{side} ({layout} layout, {len(probe.sequence)} tokens)"
        return probe.model, task, parameter_counts(probe.model), state, shown
    task = ProbeTrainTask(probe.data, cfg.train.batch_size, cfg.eval_batch_size, device)
    state = {**state_size(probe.model, cfg.task.seq_len), "tokens": cfg.task.seq_len}
    return probe.model, task, count_parameters(probe.model), state, ""
