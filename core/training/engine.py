"""The training engine shared by the probes and the VLM: one loop, readable top to bottom.

AdamW, linear warmup then cosine decay, gradient clipping and accumulation, evaluation every
1% of the steps (configurable), early stop at an accuracy threshold, a checkpoint at every
evaluation, and resume. What is trained is given by a :class:`TrainTask`: the engine asks it for
the batch of a step (a pure function of the step, so a resumed run sees the same data without
replaying a loader), for the loss of a batch, and for held-out metrics.

Resume equals uninterrupted: the checkpoint holds model, optimizer, scheduler, RNG states and
the loop's own counters, and ``metrics.jsonl`` is cut back to the checkpoint's step before the
loop continues.

Under ``torchrun`` the same loop is data parallel (see :mod:`vlab.training.distributed`):
``TrainConfig.parallel`` "ddp" (DistributedDataParallel; whole model on every rank) for the
probes and models up to ~1B, "fsdp" (FSDP2, parameters/gradients/optimizer state sharded) for
the 1B+ models, as MambaVLM (FSDP) and SHAKEUP (ZeRO 2/3) trained theirs::

    torchrun --nproc_per_node 8 -m vlab.cli vlm train ... --set stage2.parallel=fsdp

Either way the checkpoint is the plain single-process one: a run checkpointed under FSDP
resumes in one process or on another number of ranks, and the other way round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from vlab.errors import ConfigError
from vlab.rundir import ReadOnlyRunDir, RunDir
from vlab.training.distributed import (
    load_model_state,
    load_optimizer_state,
    model_state,
    optimizer_state,
    setup_distributed,
    shard_model,
)

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings. Budgets are in steps, never wall-clock, so runs reproduce.

    Defaults suit the CPU probe presets (lr 2e-3 without weight decay learns L=8 in about 1k
    steps); the VLM presets set their own values.

    ``eval_every`` None means every ``eval_fraction`` of ``steps`` (the paper's 1%).
    ``batch_size`` is the global batch per optimizer step; it is split into ``grad_accum``
    equal micro-batches. ``precision`` "auto" is bf16 autocast on CUDA and fp32 on CPU.

    ``parallel`` matters only under ``torchrun`` with more than one process: "ddp" replicates
    the model on every rank, "fsdp" shards it (for the 1B+ models; see
    :mod:`vlab.training.distributed`). It does not change what is computed, only where.
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_ratio: float = 0.03
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int | None = None
    eval_fraction: float = 0.01
    eval_at_start: bool = True
    threshold: float = 0.95
    stop_at_threshold: bool = True
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    threads: int | None = None
    parallel: Literal["ddp", "fsdp"] = "ddp"

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "grad_accum")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError("lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(name, f"must be in [0, 1), got {getattr(self, name)}")
        for name in ("warmup_ratio", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(name, f"must be in [0, 1], got {getattr(self, name)}")
        if self.grad_clip < 0:
            raise ConfigError("grad_clip", f"must be >= 0 (0 disables), got {self.grad_clip}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                "grad_accum",
                f"batch_size={self.batch_size} does not split into {self.grad_accum} micro-batches",
            )
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError("eval_every", f"must be >= 1, got {self.eval_every}")
        if not 0 < self.eval_fraction <= 1:
            raise ConfigError("eval_fraction", f"must be in (0, 1], got {self.eval_fraction}")
        if not 0 <= self.threshold <= 1:
            raise ConfigError("threshold", f"must be in [0, 1], got {self.threshold}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", f"must be >= 1, got {self.threads}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError("device", f"{self.device!r} is not 'auto', 'cpu' or 'cuda[:N]'")
        if self.parallel not in ("ddp", "fsdp"):
            raise ConfigError("parallel", f"{self.parallel!r} is not 'ddp' or 'fsdp'")

    @property
    def eval_interval(self) -> int:
        if self.eval_every is not None:
            return self.eval_every
        return max(1, round(self.steps * self.eval_fraction))

    @property
    def warmup_steps(self) -> int:
        return round(self.steps * self.warmup_ratio)


class TrainTask(Protocol):
    """What the engine trains: batches by step, a loss, and held-out metrics."""

    def train_batch(self, step: int) -> Batch:
        """The global batch of optimizer step ``step`` (0-based), tensors on the CPU."""

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Scalar training loss of a (micro-)batch, already on the model's device."""

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """Held-out metrics; must hold ``accuracy`` (checked against the threshold)."""


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier of the peak lr at a step: linear warmup, then cosine to ``min_lr_ratio``."""
    warmup, total, floor = cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_environment(device: torch.device) -> dict[str, Any]:
    """What a run's exact trajectory depends on besides its config, written to status.json.

    Given its seeds a run is bit-for-bit reproducible on the same software, CPU and thread
    count (``train.threads`` fixes the latter); another thread count or CPU changes the
    order of floating-point reductions, so the numbers differ slightly and the curves drift.
    """
    import platform

    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on biases, norms, or 1-d SSM params)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


@dataclass
class TrainResult:
    state: str
    reason: str
    step: int
    threshold_step: int | None
    final_metrics: dict | None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    model: nn.Module,
    task: TrainTask,
    cfg: TrainConfig,
    run: RunDir,
    *,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``task`` into ``run``, resuming from its checkpoint if there is one.

    ``should_stop`` is polled after every step (a preemption signal handler sets it); when it
    returns True the loop checkpoints at the current step and returns state ``interrupted``.

    Under ``torchrun`` (see :mod:`vlab.training.distributed`) each rank trains on its slice of
    every global batch and rank 0 alone writes the run directory. With ``cfg.parallel`` "ddp"
    the model is wrapped in DistributedDataParallel and rank 0 alone evaluates. With "fsdp"
    it is sharded in place (no rank holds all its weights), so every rank runs
    ``task.evaluate`` in lockstep on the same held-out data (its forward passes are
    collectives; the task must be deterministic, including where a generation loop stops,
    which it is given identical weights and inputs) and rank 0 alone records the metrics;
    checkpoints gather the full state to rank 0.
    """
    ctx = setup_distributed(resolve_device(cfg.device))
    device = ctx.device(resolve_device(cfg.device))
    if ctx.enabled and cfg.batch_size % (ctx.world * cfg.grad_accum):
        raise ConfigError(
            "batch_size",
            f"{cfg.batch_size} does not split into {ctx.world} ranks x {cfg.grad_accum} "
            "micro-batches",
        )
    files = run if ctx.is_main else ReadOnlyRunDir(run.path)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model.to(device)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
    sharded = ctx.enabled and cfg.parallel == "fsdp"
    net = model
    if sharded:
        shard_model(model, device, bf16=use_bf16)  # in place: ``model`` is the sharded net
    elif ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    optimizer = make_optimizer(model, cfg)  # after sharding: it must hold the sharded params
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))

    step, loss_sum, loss_count, threshold_step = 0, 0.0, 0, None
    last_metrics: dict | None = None
    # sharded, the full checkpoint stays on the CPU; each rank copies only its shards over
    ckpt = run.load_checkpoint(map_location="cpu" if sharded else device)
    if ckpt is not None:
        load_model_state(model, ckpt["model"], sharded)
        load_optimizer_state(model, optimizer, ckpt["optimizer"], sharded)
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        step, loss_sum, loss_count = ckpt["step"], ckpt["loss_sum"], ckpt["loss_count"]
        threshold_step = ckpt["threshold_step"]
        last_metrics = ckpt.get("last_metrics")
        files.truncate_metrics(ckpt["last_eval_step"])
    else:
        files.truncate_metrics(-1)
    last_eval_step = ckpt["last_eval_step"] if ckpt else -1
    files.write_status(
        "running", step=step, threshold_step=threshold_step, environment=run_environment(device)
    )

    def checkpoint() -> None:
        """Every rank calls this (sharded, gathering the state is a collective); rank 0 saves."""
        files.save_checkpoint(
            {
                "model": model_state(model, sharded),
                "optimizer": optimizer_state(model, optimizer, sharded),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "step": step,
                "loss_sum": loss_sum,
                "loss_count": loss_count,
                "threshold_step": threshold_step,
                "last_eval_step": last_eval_step,
                "last_metrics": last_metrics,
            }
        )

    def evaluate() -> dict | None:
        """Held-out metrics on rank 0 (None elsewhere); every rank learns the threshold.

        Sharded, every rank evaluates (rank 0 cannot run the model alone) and the others'
        identical metrics are dropped.
        """
        nonlocal loss_sum, loss_count, last_eval_step, last_metrics, threshold_step
        record = None
        if ctx.is_main or sharded:
            model.eval()
            with torch.no_grad(), autocast:
                metrics = task.evaluate(model)
            model.train()
        if ctx.is_main:
            record = {
                "step": step,
                "examples_seen": step * cfg.batch_size,
                "fraction": step / cfg.steps,
                "loss": loss_sum / loss_count if loss_count else None,
                "lr": optimizer.param_groups[0]["lr"],
                **metrics,
            }
            if threshold_step is None and record["accuracy"] >= cfg.threshold:
                threshold_step = step
            files.append_metrics(record)
        threshold_step = ctx.broadcast_int(threshold_step)
        loss_sum, loss_count, last_eval_step, last_metrics = 0.0, 0, step, record
        checkpoint()
        files.write_status(
            "running",
            step=step,
            threshold_step=threshold_step,
            accuracy=record["accuracy"] if record else None,
        )
        return record

    def finish(state: str, reason: str) -> TrainResult:
        files.write_status(
            state,
            reason,
            step=step,
            threshold_step=threshold_step,
            accuracy=last_metrics["accuracy"] if last_metrics else None,
        )
        return TrainResult(state, reason, step, threshold_step, last_metrics)

    interval = cfg.eval_interval
    micro = cfg.batch_size // ctx.world // cfg.grad_accum
    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not progress or not ctx.is_main,
        desc=run.path.name,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
    )
    start_time, start_step = time.perf_counter(), step
    try:
        if step == 0 and cfg.eval_at_start and last_eval_step < 0:
            evaluate()
        while True:
            if cfg.stop_at_threshold and threshold_step is not None:
                return finish(
                    "done", f"reached accuracy >= {cfg.threshold} at step {threshold_step}"
                )
            if step >= cfg.steps:
                return finish("done", f"finished the budget of {cfg.steps} steps")
            batch = {k: ctx.shard(v) for k, v in task.train_batch(step).items()}
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for i in range(cfg.grad_accum):
                part = {
                    k: v[i * micro : (i + 1) * micro].to(device, non_blocking=True)
                    for k, v in batch.items()
                }
                with autocast:
                    loss = task.loss(net, part) / cfg.grad_accum
                loss.backward()
                total += loss.item()
            total = ctx.mean(total)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum, loss_count = loss_sum + total, loss_count + 1
            bar.update(1)
            if step % interval == 0 or step == cfg.steps:
                record = evaluate()
                if record is not None:
                    bar.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        acc=f"{record['accuracy']:.3f}",
                        refresh=False,
                    )
            if ctx.any(should_stop is not None and should_stop()):
                checkpoint_now = step != last_eval_step
                if checkpoint_now:
                    checkpoint()
                return finish("interrupted", f"stopped on request at step {step}")
    except BaseException as e:
        reason = (
            "interrupted by the user"
            if isinstance(e, KeyboardInterrupt)
            else (f"{type(e).__name__}: {e}")
        )
        files.write_status(
            "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
            reason,
            step=step,
            threshold_step=threshold_step,
        )
        raise
    finally:
        bar.close()
        elapsed = time.perf_counter() - start_time
        if step > start_step and elapsed > 0:
            status = run.read_status() or {}
            files.write_status(
                status.get("state", "running"),
                status.get("reason"),
                steps_per_s=(step - start_step) / elapsed,
            )
