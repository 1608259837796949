"""The probe protocol's cost per training step, per arm and context length, before and after
vlab's CPU shortcuts, timed side by side in one process.

What a sweep run pays per optimizer step: the batch drawn from the task
(``BenchPlan.protocol_batch``: 64, target encoding ``position``), forward and backward through
the tiny preset, gradient clipping and AdamW, plus its share of the held-out evaluation that
the engine runs every 1% of the budget (``BenchPlan.protocol_budget`` steps: an evaluation
every budget / 100 steps). Checkpoint writes are left out (disk, not compute). Always the tiny
preset and the probes' batch, whatever ``BenchPlan.preset``, ``pretrained`` and ``batch`` give
the models' own measurements: this times the probe protocol, and the protocol trains the tiny
preset.

"Before" runs the same models on the same batches with the shortcuts switched off: the
final block on every position (:func:`~vlab.models.backbones.last_position.full_forward`) and,
for the arms with Mamba-1 mixers, transformers' grouped ``conv1d``
(:func:`~vlab.models.ops.ssd.use_hf_conv`). "Before" and "after" alternate in
:func:`~vlab.models.bench.best_times`, so load from other processes hits both alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from vlab.config import from_dict
from vlab.models.backbones import family
from vlab.models.backbones.last_position import full_forward
from vlab.models.bench import ARCHS, BenchPlan, best_times
from vlab.models.ops.ssd import use_hf_conv
from vlab.probes.build import build_probe
from vlab.probes.config import ProbeRunConfig, resolve
from vlab.probes.train_task import ProbeTrainTask
from vlab.training.engine import make_optimizer

PRESET = "tiny"  # the probes' preset, whatever preset the plan gives the models' measurements
STEPS_PER_TIMING = 4  # optimizer steps per timed call: one step is too short to time alone


@contextlib.contextmanager
def before(arch: str) -> Iterator[None]:
    """The arm as it trained before the shortcuts: transformers' forward of the final block,
    and its conv where the arm has Mamba-1 mixers (Mamba-2's conv was already vlab's)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(full_forward())
        if family(arch).selective_scan:
            stack.enter_context(use_hf_conv())
        yield


def protocol_task(arch: str, length: int, batch: int, device: torch.device):
    """(model, engine task, optimizer) of a default probe run of ``arch`` at ``length``."""
    cfg = resolve(
        from_dict(
            ProbeRunConfig,
            {
                "model": {"arch": arch, "preset": PRESET},
                "task": {"length": length, "target_mode": "position"},
                "train": {"batch_size": batch, "device": str(device)},
            },
        )
    )
    probe = build_probe(cfg)
    model = probe.model.to(device).train()
    task = ProbeTrainTask(probe.data, batch, cfg.eval_batch_size, device)
    return model, task, make_optimizer(model, cfg.train)


def _train_steps(model, task: ProbeTrainTask, optimizer, device) -> Callable[[], None]:
    """A closure running :data:`STEPS_PER_TIMING` steps as the engine does, each on its own
    step's batch (drawn inside: data generation is part of a step's cost)."""
    counter = iter(range(10**9))

    def run() -> None:
        for _ in range(STEPS_PER_TIMING):
            batch = {k: v.to(device) for k, v in task.train_batch(next(counter)).items()}
            optimizer.zero_grad(set_to_none=True)
            task.loss(model, batch).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

    return run


def _evaluation(model, task: ProbeTrainTask) -> Callable[[], None]:
    """A closure running one held-out evaluation as the engine does (eval mode, no grad)."""

    def run() -> None:
        model.eval()
        with torch.no_grad():
            task.evaluate(model)
        model.train()

    return run


def _timed(arch: str, fast: bool, fn: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with contextlib.nullcontext() if fast else before(arch):
            fn()

    return run


def bench_protocol(plan: BenchPlan, device: torch.device, log=print) -> dict:
    """Milliseconds per protocol step (train step + its share of evaluation) per arm and
    length, before and after, and the speed-up (before / after)."""
    interval = max(1, plan.protocol_budget // 100)
    rows = []
    for length in plan.protocol_lengths:
        for arch in ARCHS:
            model, task, optimizer = protocol_task(arch, length, plan.protocol_batch, device)
            train = _train_steps(model, task, optimizer, device)
            evaluate = _evaluation(model, task)
            calls = {
                "train": _timed(arch, True, train),
                "train_before": _timed(arch, False, train),
                "eval": _timed(arch, True, evaluate),
                "eval_before": _timed(arch, False, evaluate),
            }
            best = best_times(calls, plan.repeats, device)
            ms = {k: t.wall * 1000 for k, t in best.items()}
            step, step_before = (ms[k] / STEPS_PER_TIMING for k in ("train", "train_before"))
            after = step + ms["eval"] / interval
            previous = step_before + ms["eval_before"] / interval
            rows.append(
                {
                    "arch": arch,
                    "preset": PRESET,
                    "length": length,
                    "batch": plan.protocol_batch,
                    "eval_every": interval,
                    "step_ms": step,
                    "step_ms_before": step_before,
                    "eval_ms": ms["eval"],
                    "eval_ms_before": ms["eval_before"],
                    "protocol_step_ms": after,
                    "protocol_step_ms_before": previous,
                    "speedup": previous / after,
                }
            )
            log(
                f"protocol {arch:7s} L={length:3d}: {after:6.1f} ms/step "
                f"(before {previous:6.1f}; {previous / after:.2f}x)"
            )
    return {
        "protocol": rows,
        "protocol_speedup": {
            arch: {str(r["length"]): r["speedup"] for r in rows if r["arch"] == arch}
            for arch in ARCHS
        },
    }
