"""The training engine shared by the probes and the VLM: one loop, readable top to bottom.

AdamW, linear warmup then cosine decay, gradient clipping and accumulation, evaluation every
1% of the steps (configurable), early stop at an accuracy threshold, a checkpoint at every
evaluation, and resume. What is trained is given by a :class:`TrainTask`: the engine asks it for
the batch of a step (a pure function of the step, so a resumed run sees the same data without
replaying a loader), for the loss of a batch, and for held-out metrics.

Resume equals uninterrupted: the checkpoint holds model, optimizer, scheduler, RNG states and
the loop's own counters (:class:`LoopState`), and ``metrics.jsonl`` is cut back to the
checkpoint's step before the loop continues.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from vlab.errors import ConfigError, VlabError
from vlab.records import DamagedFile
from vlab.run_records import Checkpoint
from vlab.rundir import CHECKPOINT_FIX, ReadOnlyRunDir, RunDir
from vlab.training.config import TrainConfig
from vlab.training.distributed import (
    DistContext,
    load_model_state,
    load_optimizer_state,
    lost_a_rank,
    model_state,
    optimizer_state,
    setup_distributed,
    shard_model,
)
from vlab.training.precision import autocast_for, bf16_enabled

Batch = dict[str, torch.Tensor]


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


@dataclass
class LoopState:
    """The loop's own counters, saved in every checkpoint next to model, optimizer, scheduler
    and RNG states, so a resumed run carries on exactly where the checkpoint was taken.

    ``loss_sum`` / ``loss_count`` accumulate the (rank-averaged) training loss since the last
    evaluation; that evaluation's metrics line reports their mean as ``loss``.
    ``last_eval_step`` is -1 before the first evaluation. ``last_metrics`` is the last metrics
    line as rank 0 wrote it (the other ranks record None).
    """

    step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    threshold_step: int | None = None
    last_eval_step: int = -1
    last_metrics: dict | None = None
    nonfinite_steps: int = 0  # non-finite steps in a row (see ``TrainConfig.nonfinite_patience``)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> LoopState:
        """The counters of a checkpoint already checked as a record (types, bounds; the
        defaults of keys an older vlab did not write are the record's)."""
        return cls(
            step=ckpt.step,
            loss_sum=ckpt.loss_sum,
            loss_count=ckpt.loss_count,
            threshold_step=ckpt.threshold_step,
            last_eval_step=ckpt.last_eval_step,
            last_metrics=ckpt.last_metrics,
            nonfinite_steps=ckpt.nonfinite_steps,
        )

    def checkpoint_entries(self) -> dict[str, Any]:
        """The checkpoint's loop keys. Names are never changed or removed, only added (with a
        default in :meth:`from_checkpoint`), so existing run directories keep resuming."""
        return {
            "step": self.step,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "threshold_step": self.threshold_step,
            "last_eval_step": self.last_eval_step,
            "last_metrics": self.last_metrics,
            "nonfinite_steps": self.nonfinite_steps,
        }


@dataclass(frozen=True)
class _Setup:
    """What the loop trains with, fixed once :func:`_set_up` has built it.

    ``model`` is the module itself (under FSDP sharded in place): evaluation, gradient clipping
    and checkpoints use it. ``net`` is what the training forward runs through: the DDP wrapper
    (its backward all-reduces the gradients) or ``model`` itself. ``files`` is the run
    directory on rank 0 and a read-only view of it on the other ranks.
    """

    ctx: DistContext
    device: torch.device
    files: RunDir
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    autocast: torch.autocast
    sharded: bool
    snapshot_steps: frozenset[int]  # evaluation steps whose checkpoints are kept


def _set_up(model: nn.Module, cfg: TrainConfig, run: RunDir) -> _Setup:
    """Seed, place (and under ``torchrun`` wrap or shard) ``model``; make its optimizer."""
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
    use_bf16 = bf16_enabled(device, cfg.precision)
    autocast = autocast_for(device, cfg.precision)
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
    return _Setup(
        ctx, device, files, model, net, optimizer, scheduler, autocast, sharded, cfg.snapshot_steps
    )


def _resume(setup: _Setup, run: RunDir) -> LoopState:
    """Load ``run``'s checkpoint if it has one (else start at step 0) and mark it running.

    ``metrics.jsonl`` is cut back to the checkpoint's last evaluation: lines written after it
    (by a run killed before its next checkpoint) would otherwise be written twice.
    """
    state = LoopState()
    setup.files.remove_temporary_files()
    # sharded, the full checkpoint stays on the CPU; each rank copies only its shards over
    ckpt = run.read_checkpoint(map_location="cpu" if setup.sharded else setup.device)
    if ckpt is not None:
        setup.files.check_checkpoint_config({"config": ckpt.config})
        _load_states(setup, ckpt, run.checkpoint_path)
        state = LoopState.from_checkpoint(ckpt)
        if _kept_step(setup, state) and not setup.files.snapshot_path(state.step).exists():
            setup.files.keep_snapshot(state.step, _snapshot(_entries(ckpt)))  # killed between
    # only now, with the checkpoint read whole: cutting metrics.jsonl back is not undone
    setup.files.truncate_metrics(state.last_eval_step, None if ckpt is None else ckpt.step)
    setup.files.write_status(
        "running",
        step=state.step,
        threshold_step=state.threshold_step,
        environment=run_environment(setup.device),
    )
    return state


def _load_states(setup: _Setup, ckpt: Checkpoint, path: Any) -> None:
    """Load the checkpoint's model, optimizer, scheduler and RNG states. One that does not fit
    (weights of another model, an optimizer of other parameters, a state of another shape)
    is a :class:`~vlab.records.DamagedFile` naming the checkpoint and the part, never a
    traceback of torch's, so the run is marked failed with that line."""
    load_model_state(setup.model, ckpt.model, setup.sharded, source=path)
    epoch = ckpt.scheduler.get("last_epoch")
    if epoch != ckpt.step:  # the scheduler steps once a step, from 0: it is at ``step``
        problem = f"is at step {epoch!r}, not the checkpoint's {ckpt.step}"
        raise DamagedFile(path, "scheduler", problem, CHECKPOINT_FIX)
    with _fits(path, "optimizer"):
        load_optimizer_state(setup.model, setup.optimizer, ckpt.optimizer, setup.sharded)
    with _fits(path, "scheduler"):
        setup.scheduler.load_state_dict(ckpt.scheduler)
    with _fits(path, "rng"):
        _set_rng_state(ckpt.rng)


@contextmanager
def _fits(path: Any, part: str) -> Iterator[None]:
    """Turn torch's complaint about a state of the wrong shape (a key missing, a tensor of
    another type) into a one-line :class:`~vlab.records.DamagedFile` naming ``part``."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        said = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        problem = f"does not fit this run ({type(e).__name__}: {said})"
        raise DamagedFile(path, part, problem, CHECKPOINT_FIX) from e


def _entries(ckpt: Checkpoint) -> dict[str, Any]:
    """A checkpoint record's keys as the file holds them (for :func:`_snapshot`)."""
    return {
        "model": ckpt.model,
        "step": ckpt.step,
        "threshold_step": ckpt.threshold_step,
        "last_metrics": ckpt.last_metrics,
        "config": ckpt.config,
    }


def _checkpoint(setup: _Setup, state: LoopState) -> None:
    """Every rank calls this (sharded, gathering the state is a collective); rank 0 saves.
    At a kept step (``TrainConfig.snapshot_steps``) the weights are also kept by step."""
    checkpoint = {
        "model": model_state(setup.model, setup.sharded),
        "optimizer": optimizer_state(setup.model, setup.optimizer, setup.sharded),
        "scheduler": setup.scheduler.state_dict(),
        "rng": _rng_state(),
        **state.checkpoint_entries(),
        "config": setup.files.read_config(),  # what was trained: checked on resume
    }
    setup.files.save_checkpoint(checkpoint)
    if _kept_step(setup, state):
        setup.files.keep_snapshot(state.step, _snapshot(checkpoint))


def _kept_step(setup: _Setup, state: LoopState) -> bool:
    """Whether the checkpoint of ``state`` is one to keep: an evaluation at a kept step."""
    return state.step in setup.snapshot_steps and state.step == state.last_eval_step


def _snapshot(checkpoint: dict) -> dict:
    """What a kept step holds: the weights and what describes them, not the optimizer."""
    keys = ("model", "step", "threshold_step", "last_metrics", "config")
    return {k: checkpoint.get(k) for k in keys}


def _done_reason(cfg: TrainConfig, state: LoopState) -> str | None:
    """Why the run is finished before another step, or None while it goes on."""
    if cfg.stop_at_threshold and state.threshold_step is not None:
        return f"reached accuracy >= {cfg.threshold} at step {state.threshold_step}"
    if cfg.steps == 0:
        return "evaluated the starting model (train.steps = 0: zero-shot, no training)"
    if state.step >= cfg.steps:
        return f"finished the budget of {cfg.steps} steps"
    return None


def _train_step(setup: _Setup, task: TrainTask, cfg: TrainConfig, step: int) -> tuple[float, bool]:
    """Optimizer step ``step``; returns its training loss, averaged over the ranks, and
    whether the loss and gradient norm were finite (the weights are updated only if so).

    ``task.train_batch(step)`` is the global batch (every tensor ``[batch_size, ...]``); each
    rank keeps its slice ``[batch_size / world, ...]`` and runs it as ``grad_accum``
    micro-batches ``[micro, ...]``, each loss divided by ``grad_accum`` so that the
    accumulated gradient is that of the mean loss.
    """
    ctx = setup.ctx
    micro = cfg.batch_size // ctx.world // cfg.grad_accum
    batch = {k: ctx.shard(v) for k, v in task.train_batch(step).items()}
    setup.optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i in range(cfg.grad_accum):
        part = {
            k: v[i * micro : (i + 1) * micro].to(setup.device, non_blocking=True)
            for k, v in batch.items()
        }
        with setup.autocast:
            loss = task.loss(setup.net, part) / cfg.grad_accum
        loss.backward()
        total += loss.item()
    total = ctx.mean(total)
    norm = None
    if cfg.grad_clip:
        norm = torch.nn.utils.clip_grad_norm_(setup.model.parameters(), cfg.grad_clip)
    finite = math.isfinite(total) and (norm is None or _finite_norm(norm))
    if finite:
        setup.optimizer.step()
    else:  # a NaN or inf would poison the weights and AdamW's moments for good
        setup.optimizer.zero_grad(set_to_none=True)
    setup.scheduler.step()
    return total, finite


def _finite_norm(norm: torch.Tensor) -> bool:
    """Whether a total gradient norm is finite (FSDP returns it as a DTensor)."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return bool(torch.isfinite(norm))


def _evaluate_and_record(
    setup: _Setup, task: TrainTask, cfg: TrainConfig, state: LoopState
) -> dict | None:
    """Evaluate at ``state.step``, append the metrics line, checkpoint, update status.json.

    Returns the metrics line on rank 0 (None elsewhere); every rank learns the threshold step.
    Sharded, every rank evaluates (rank 0 cannot run the model alone) and the others'
    identical metrics are dropped. Updates ``state``: the threshold step, and the loss
    accumulators restart for the next interval.
    """
    ctx, model, files = setup.ctx, setup.model, setup.files
    record = None
    if ctx.is_main or setup.sharded:
        model.eval()
        with torch.no_grad(), setup.autocast:
            metrics = task.evaluate(model)
        model.train()
    if ctx.is_main:
        record = {
            "step": state.step,
            "examples_seen": state.step * cfg.batch_size,
            "fraction": state.step / cfg.steps if cfg.steps else 1.0,
            "loss": state.loss_sum / state.loss_count if state.loss_count else None,
            "lr": setup.optimizer.param_groups[0]["lr"],
            **metrics,
        }
        if state.threshold_step is None and record["accuracy"] >= cfg.threshold:
            state.threshold_step = state.step
        files.append_metrics(record)
    state.threshold_step = ctx.broadcast_int(state.threshold_step)
    state.loss_sum, state.loss_count = 0.0, 0
    state.last_eval_step, state.last_metrics = state.step, record
    _checkpoint(setup, state)
    files.write_status(
        "running",
        step=state.step,
        threshold_step=state.threshold_step,
        accuracy=record["accuracy"] if record else None,
    )
    return record


def _finish(files: RunDir, state: LoopState, status: str, reason: str) -> TrainResult:
    last = state.last_metrics
    files.write_status(
        status,
        reason,
        step=state.step,
        threshold_step=state.threshold_step,
        accuracy=last.get("accuracy") if last else None,
    )
    return TrainResult(status, reason, state.step, state.threshold_step, last)


def _record_failure(files: RunDir, state: LoopState, error: BaseException) -> None:
    """status.json says why the loop died: Ctrl-C is "interrupted", anything else "failed"."""
    by_user = isinstance(error, KeyboardInterrupt)
    reason = "interrupted by the user" if by_user else f"{type(error).__name__}: {error}"
    if not by_user and lost_a_rank(error):
        reason = f"lost another rank of the run (its own failure or log says why): {reason}"
    files.write_status(
        "interrupted" if by_user else "failed",
        reason,
        step=state.step,
        threshold_step=state.threshold_step,
    )


def _record_speed(run: RunDir, files: RunDir, steps: int, elapsed: float) -> None:
    """Add this process's training speed to status.json, keeping its state and reason."""
    if steps > 0 and elapsed > 0:
        status = run.read_status() or {}
        files.write_status(
            status.get("state", "running"), status.get("reason"), steps_per_s=steps / elapsed
        )


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
    setup = _set_up(model, cfg, run)
    try:
        state = _resume(setup, run)
    except BaseException as e:  # a damaged checkpoint or metrics file: say so, never "running"
        by_user = isinstance(e, KeyboardInterrupt)
        reason = str(e) if isinstance(e, VlabError) else f"{type(e).__name__}: {e}"
        setup.files.write_status("interrupted" if by_user else "failed", reason)
        raise
    interval = cfg.eval_interval
    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=state.step,
        disable=not progress or not setup.ctx.is_main,
        desc=run.path.name,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
    )
    start_time, start_step = time.perf_counter(), state.step
    try:
        if state.step == 0 and cfg.eval_at_start and state.last_eval_step < 0:
            _evaluate_and_record(setup, task, cfg, state)
        while (reason := _done_reason(cfg, state)) is None:
            loss, finite = _train_step(setup, task, cfg, state.step)
            state.step += 1
            bar.update(1)
            if finite:
                state.nonfinite_steps = 0
                state.loss_sum, state.loss_count = state.loss_sum + loss, state.loss_count + 1
            else:
                state.nonfinite_steps += 1
                if state.nonfinite_steps > cfg.nonfinite_patience:
                    reason = (
                        f"diverged: loss or gradient not finite at step {state.step} "
                        f"(loss {loss}; {state.nonfinite_steps} such steps in a row, "
                        f"train.nonfinite_patience={cfg.nonfinite_patience}); lower the "
                        "learning rate or resume from the last checkpoint"
                    )
                    return _finish(setup.files, state, "failed", reason)
            if state.step % interval == 0 or state.step == cfg.steps:
                record = _evaluate_and_record(setup, task, cfg, state)
                if record is not None:
                    bar.set_postfix(
                        loss=f"{record['loss']:.3f}",
                        acc=f"{record['accuracy']:.3f}",
                        refresh=False,
                    )
            # a collective: every rank stops at the same step if any rank was asked to
            if setup.ctx.any(should_stop is not None and should_stop()):
                if state.step != state.last_eval_step:  # else the evaluation just saved it
                    _checkpoint(setup, state)
                reason = f"stopped on request at step {state.step}"
                return _finish(setup.files, state, "interrupted", reason)
        return _finish(setup.files, state, "done", reason)
    except BaseException as e:
        _record_failure(setup.files, state, e)
        raise
    finally:
        bar.close()
        _record_speed(run, setup.files, state.step - start_step, time.perf_counter() - start_time)
