"""Two-stage VLM training on the shared engine, into run directories like the probes'.

Stage 1 trains the projector only (the LM and pretrained encoders frozen); stage 2 unfreezes
the LM and instruction-tunes everything but frozen encoders. Both use the engine of
``vlab.training.engine`` (AdamW, cosine with warmup ratio, gradient accumulation, bf16 autocast
on GPU, a checkpoint at every evaluation, resume), and write ``OUT/stage1`` and ``OUT/stage2``
run directories; stage 2 starts from stage 1's final weights.

Data: the built-in shapes dataset (offline, CPU-sized). Every sample is a pure function of its
index, so the batch of a step is rebuilt exactly on resume. Held-out metrics per task come from
greedy generation: exact match for caption / VQA / POPE / ITM, token F1 for dense captions,
IoU >= 0.5 for grounding: the coarse (summary) vs fine (retrieval) split the papers study.

What a run is made of lives beside this module, so commands that read a finished run never
import training: the run config and presets in ``config``, the tokenizer in ``tokenizer``,
sample batches in ``batch``, greedy decoding in ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlab.config import to_dict
from vlab.errors import VlabError
from vlab.experiment import record_kind
from vlab.models.backbones import check_backbone, count_parameters
from vlab.models.backbones.state import state_size
from vlab.models.vlm.batch import batch_of, image_tokens, pixel_values
from vlab.models.vlm.data.records import VLSample
from vlab.models.vlm.data.run_data import FileData, ShapesData, open_data
from vlab.models.vlm.generate import greedy_generate
from vlab.models.vlm.loss import per_sequence_loss
from vlab.models.vlm.metrics.answers import evaluate_predictions
from vlab.models.vlm.model import VLM, build_vlm
from vlab.models.vlm.parts import VLMConfig
from vlab.rundir import RunDir
from vlab.training.distributed import claim_run, setup_distributed
from vlab.training.engine import Batch, TrainResult, resolve_device, train
from vlab.vlm.config import VLMRunConfig
from vlab.vlm.tokenizer import run_tokenizer


class VLMTask:
    """The VLM as the engine sees it: batches by step, loss, held-out metrics."""

    def __init__(
        self,
        cfg: VLMRunConfig,
        model: VLM,
        tok,
        batch_size: int,
        device: torch.device,
        data: ShapesData | FileData | None,
    ):
        self.cfg, self.model, self.tok, self.data = cfg, model, tok, data
        self.batch_size = batch_size
        self.device = device
        self.heldout = data.heldout if data is not None else []

    def batch_of(self, samples: list[VLSample]) -> Batch:
        return batch_of(samples, self.model, self.tok, self.cfg.model.sequence)

    def train_batch(self, step: int) -> Batch:
        return self.batch_of(self.data.train(step * self.batch_size, self.batch_size))

    def _forward(self, model: nn.Module, batch: Batch) -> dict:
        return model(
            batch["input_ids"],
            batch["patch_index"],
            pixel_values(batch),
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self._forward(model, batch)["loss"]

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        losses, predictions = self.answer(model, self.heldout)
        scores = evaluate_predictions(self.heldout, predictions)
        return {"eval_loss": float(np.mean(losses)), **scores}

    def answer(self, model: nn.Module, samples: list[VLSample]) -> tuple[list[float], list[str]]:
        """Per-example loss and greedy answer of ``model`` on ``samples``, batch by batch:
        what :meth:`evaluate` scores, and what the held-out evaluation of a finished run
        writes (:func:`vlab.vlm.evaluate.write_evaluation`)."""
        losses, predictions = [], []
        bs = self.cfg.eval_batch_size
        for i in range(0, len(samples), bs):
            chunk = samples[i : i + bs]
            batch = {k: v.to(self.device) for k, v in self.batch_of(chunk).items()}
            out = self._forward(model, batch)
            losses.extend(per_sequence_loss(out["logits"], batch["labels"]).tolist())
            predictions.extend(greedy_generate(model, self.tok, batch, self.cfg.max_new_tokens))
        return losses, predictions


# runs -----------------------------------------------------------------------------------------


def preflight(cfg: VLMRunConfig, out: str | Path, stages: tuple[int, ...] = (1, 2)) -> None:
    """Everything :func:`train_vlm` can check before it writes: the output directory
    (creatable, not a file), the data's files and the benchmark suite's, each stage's device
    (present: stage 2's picks the process group) and threads (bounded), and the model's parts
    built on the meta device (the LM's transformers config and a pretrained LM's weights;
    encoders and projector unless a pretrained encoder's weights are needed to know its
    shapes). Creates nothing; cheap (no weights in memory). Called before the run is
    claimed, so sweeps get it too."""
    from vlab.preflight import check_device, check_model_memory, check_output_dir, check_threads

    check_output_dir(out)
    cfg.data.check_files()
    cfg.benchmarks.check_files()  # a benchmark the run will lack is said before stage 1
    for stage in sorted({*stages, 2}):
        train_cfg = cfg.train_config(stage)
        check_device(train_cfg.device, f"stage{stage}.device")
        check_threads(train_cfg.threads, f"stage{stage}.threads")
    lm = check_backbone(cfg.model.lm, "model.lm")
    if 2 in stages:  # stage 2 trains the language model (stage 1 keeps it frozen)
        stage2 = cfg.train_config(2)
        check_model_memory(lm, stage2.device, "model.lm", sharded=stage2.parallel == "fsdp")
    meta_parts(cfg.model, lm.get_input_embeddings().weight.shape[1])


def meta_parts(model: VLMConfig, lm_width: int, field: str = "model") -> None:
    """Build the encoders and projector of ``model`` on the meta device (see
    :func:`~vlab.preflight.on_meta`), each failure naming its part. An encoder with pretrained
    weights is checked at construction (its files) and skipped, and the projector with it
    (its input width is the checkpoint's)."""
    import dataclasses

    from vlab.models.vlm.connectors import build_projector
    from vlab.models.vlm.vision import build_vision_encoder
    from vlab.preflight import check_finite, on_meta

    widths = []
    for name in ("vision", "vision2"):
        vision = getattr(model, name)
        if vision is None:
            continue
        check_finite(vision.overrides, f"{field}.{name}.overrides")
        if vision.pretrained is not None:
            return
        encoder = on_meta(lambda v=vision: build_vision_encoder(v, seed=0), f"{field}.{name}")
        widths.append(encoder.width)
    projector = dataclasses.replace(model.projector, vision_widths=tuple(widths), lm_width=lm_width)
    on_meta(lambda: build_projector(projector, seed=0), f"{field}.projector")


def check_stage1(prev: RunDir) -> None:
    """Stage 2 of a run with a stage 1 starts from its weights: refuse, in one line naming the
    file, a stage 1 that is not finished or whose checkpoint is gone (without this, a
    missing ``checkpoints/last.pt`` was a TypeError of ``None["model"]``)."""
    if not prev.is_done():
        raise VlabError(f"{prev.path} is not finished: run stage 1 first")
    if not prev.checkpoint_path.exists():
        raise _no_stage1_checkpoint(prev)


def stage1_weights(prev: RunDir) -> dict:
    """The model weights of the finished stage 1 in ``prev`` (checked by
    :func:`check_stage1`; a damaged checkpoint is the reading layer's one-line error)."""
    check_stage1(prev)
    ckpt = prev.load_checkpoint()
    if ckpt is None:  # removed since check_stage1 looked
        raise _no_stage1_checkpoint(prev)
    return ckpt["model"]


def _no_stage1_checkpoint(prev: RunDir) -> VlabError:
    return VlabError(
        f"{prev.checkpoint_path} is missing: stage 2 starts from stage 1's weights; put the "
        f"checkpoint back, or move {prev.path} away to train stage 1 again"
    )


def train_vlm(
    cfg: VLMRunConfig,
    out: str | Path,
    stages: tuple[int, ...] = (1, 2),
    *,
    progress: bool = True,
    log=print,
    should_stop: Callable[[], bool] | None = None,
) -> dict[int, TrainResult | None]:
    """Run the requested stages into ``out/stage{N}``; finished stages are skipped.

    ``should_stop`` is polled every step (a sweep worker's SIGTERM): the stage then saves a
    checkpoint and ends ``interrupted``, and a later call resumes it.
    """
    out = Path(out)
    preflight(cfg, out, stages)  # every check, before anything is written
    ctx = setup_distributed(resolve_device(cfg.stage2.device))
    log = log if ctx.is_main else (lambda *_: None)
    if ctx.is_main:  # rank 0 trains or checks the tokenizer; the others then load it
        record_kind(out, "vlm")  # before anything else is written; another kind is refused
        tok = run_tokenizer(cfg, out)
    ctx.barrier()
    if not ctx.is_main:
        tok = run_tokenizer(cfg, out)
    full, defaults = to_dict(cfg), to_dict(type(cfg)())
    results: dict[int, TrainResult | None] = {}
    for stage in stages:
        train_cfg = cfg.stage1 if stage == 1 else cfg.stage2
        if stage == 2:
            # rank 0 writes stage 1's final status after the others have left its loop: wait
            # for it, so that every rank reads the same files
            ctx.barrier()
            if RunDir(out / "stage1").exists() and not RunDir(out / "stage2").is_done():
                check_stage1(RunDir(out / "stage1"))  # before stage 2's directory is written
        run, done = claim_run(ctx, out / f"stage{stage}", {**full, "stage": stage}, defaults)
        if done:
            log(f"{run.path}: already done; nothing to do")
            results[stage] = None
            continue
        try:
            model = build_vlm(cfg.model, vocab_size=len(tok), seed=train_cfg.seed)
            if stage == 2 and RunDir(out / "stage1").exists():
                model.load_state_dict(stage1_weights(RunDir(out / "stage1")))
            elif stage == 2:
                log(f"{out}: no stage 1 run; stage 2 starts from a randomly initialised projector")
            model.set_stage(stage)
            params = count_parameters(model.lm)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            log(
                f"{run.path}: {cfg.model.lm.arch}-VL stage {stage}: LM {params['total']:,} "
                f"parameters, {trainable:,} trainable, {model.num_visual_tokens} visual tokens"
            )
            # what the LM holds after reading the image: its decoding state at that length
            memory = state_size(model.lm, model.num_visual_tokens)
            run.write_status(
                "running",
                params={**params, "trainable": trainable},
                arch=cfg.model.lm.arch,
                stage=stage,
                state_size={**memory, "tokens": model.num_visual_tokens},
            )
            device = ctx.device(resolve_device(train_cfg.device))
            data = open_data(
                cfg.data,
                stage,
                out,
                is_main=ctx.is_main,
                barrier=ctx.barrier,
                length_fn=lambda text: len(tok.encode(text, add_special_tokens=False)),
                max_length=cfg.model.sequence.max_length,
                image_tokens=image_tokens(cfg.model.sequence, model.grid, tok),
                log=log,
            )
            task = VLMTask(cfg, model, tok, train_cfg.batch_size, device, data)
            results[stage] = train(
                model, task, train_cfg, run, progress=progress, should_stop=should_stop
            )
        finally:
            run.release()  # the stage's writer lock (see RunDir.claim)
    return results
