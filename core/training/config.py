"""The training settings of a run (``train.*`` of a probe, ``stage1.*`` / ``stage2.*`` of a VLM).

Apart from the loop (:mod:`vlab.training.engine`) and free of torch, so that configs validate
and sweeps expand without loading it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from vlab.errors import ConfigError


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

    Besides ``checkpoints/last.pt`` a run keeps ``keep_checkpoints`` snapshots over training
    (:attr:`snapshot_steps`: step 0 and evaluation steps spaced evenly in log(step), so early
    learning is resolved finely), for looking inside the model as it learns; 0 keeps none.

    A step whose loss or gradient norm is not finite updates nothing; ``nonfinite_patience``
    such steps in a row are tolerated (bf16 spikes), one more stops the run as "failed"
    with the step named, so a diverged run is never reported "done".

    ``steps`` 0 trains nothing: the starting model (a ``--pretrained`` checkpoint, or the
    initialisation) is evaluated once at step 0 and kept as ``checkpoints/step-000000000.pt``,
    a zero-shot baseline that every reader of a run directory (reports, ``vlab inspect``)
    opens like a trained run. It needs ``eval_at_start``.
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
    nonfinite_patience: int = 0
    keep_checkpoints: int = 12

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f.name, f"must be a finite number, got {value!r}")
        if not 0 <= self.keep_checkpoints <= 1000:
            raise ConfigError(
                "keep_checkpoints", f"must be in [0, 1000], got {self.keep_checkpoints}"
            )
        if self.nonfinite_patience < 0:
            raise ConfigError("nonfinite_patience", f"must be >= 0, got {self.nonfinite_patience}")
        if self.steps < 0:
            raise ConfigError(
                "steps", f"must be >= 0 (0: evaluate the starting model only), got {self.steps}"
            )
        if self.steps == 0 and not self.eval_at_start:
            raise ConfigError(
                "steps",
                "0 steps evaluates the starting model only, which needs train.eval_at_start = "
                "true (else the run would do nothing)",
            )
        positive = ("batch_size", "grad_accum")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        # beyond these a typo (an extra zero or three) would run for weeks or exhaust memory
        for name, limit in (("steps", 10**9), ("batch_size", 2**20)):
            if getattr(self, name) > limit:
                raise ConfigError(name, f"must be <= {limit:,}, got {getattr(self, name):,}")
        if not 0 <= self.seed < 2**63:  # torch.manual_seed takes 64 bits; a VLM adds 1
            raise ConfigError("seed", f"must be in [0, 2**63), got {self.seed}")
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
    def snapshot_steps(self) -> frozenset[int]:
        """The evaluation steps whose checkpoints are kept: step 0 (the initialisation, when
        evaluated) and up to ``keep_checkpoints - 1`` more, nearest to points spaced evenly in
        log(step) from the first evaluation to the last step. A pure function of the config,
        so a resumed run keeps the same ones."""
        if self.keep_checkpoints == 0:
            return frozenset()
        if self.steps == 0:  # a zero-shot run: its one evaluation, at step 0
            return frozenset({0})
        interval = self.eval_interval
        evals = sorted({*range(interval, self.steps + 1, interval), self.steps})
        chosen: set[int] = {0} if self.eval_at_start else set()
        wanted = self.keep_checkpoints - len(chosen)
        if wanted > 0:
            lo, hi = math.log(evals[0]), math.log(evals[-1])
            for i in range(wanted):
                target = lo + (hi - lo) * (i / (wanted - 1) if wanted > 1 else 1.0)
                chosen.add(min(evals, key=lambda s: abs(math.log(s) - target)))
        return frozenset(chosen)

    @property
    def warmup_steps(self) -> int:
        return round(self.steps * self.warmup_ratio)
