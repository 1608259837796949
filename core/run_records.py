"""What the files of a run directory hold, as records checked before a run is resumed or
read (see :mod:`vlab.records` for the rules and :mod:`vlab.rundir` for the files).

Each record names the fields vlab relies on, with their types; every other key is kept in
``extra`` (a later vlab may add some, a task adds its own numbers to a metrics line). Fields
an older vlab did not write have defaults, so old run directories keep loading
(``tests/slurm/fixtures`` holds one). Readers keep working with the plain dicts (or checkpoint
dicts) the files hold: :func:`checked` validates one and gives it back unchanged.

Pure Python, no torch: a checkpoint's tensors are only carried here, checked where they are
loaded into a model (:func:`vlab.training.distributed.load_model_state`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vlab.errors import ConfigError
from vlab.records import NonNegative, Real, parse_record

R = TypeVar("R")

# What a writer records in status.json (re-exported by :mod:`vlab.rundir`).
WRITTEN_STATES = ("running", "done", "failed", "interrupted")


@dataclass(frozen=True)
class Status:
    """``status.json``: the run's ``state`` and why (``reason``), where it is (``step``), when
    it first reached the threshold, who wrote it last (``host``, ``pid``, SLURM job) and on
    what (``environment``). Probe runs add ``params``, ``arch``, ``state_size``, ... (kept)."""

    state: str
    step: NonNegative | None = None
    threshold_step: NonNegative | None = None
    reason: str | None = None
    accuracy: Real | None = None
    updated: Real | None = None
    pid: int | None = None
    host: str | None = None
    slurm_job_id: str | None = None
    environment: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in WRITTEN_STATES:
            known = ", ".join(WRITTEN_STATES)
            raise ConfigError("state", f"{self.state!r} is not one of {known}")


@dataclass(frozen=True)
class MetricsLine:
    """One line of ``metrics.jsonl``: one evaluation at ``step``. ``per_position`` holds one
    held-out accuracy per target position (NaN where a position had no example); a task's
    other numbers (``fraction``, ``lr``, a VLM's benchmark scores) are kept as they are."""

    step: NonNegative
    accuracy: Real | None = None
    loss: Real | None = None
    eval_loss: Real | None = None
    examples_seen: NonNegative | None = None
    per_position: list[Real | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Checkpoint:
    """``checkpoints/last.pt``: the model, optimizer, scheduler and RNG states and the loop's
    counters (:class:`vlab.training.engine.LoopState`) at ``step``, and the config it was
    trained with (absent in checkpoints from before vlab recorded it, as is
    ``nonfinite_steps``). ``last_eval_step`` is -1 before the first evaluation."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    step: NonNegative
    loss_sum: Real
    loss_count: NonNegative
    threshold_step: NonNegative | None
    last_eval_step: int
    last_metrics: dict[str, Any] | None = None
    nonfinite_steps: NonNegative = 0
    config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A checkpoint is taken at an evaluation or after it, never before: a later
        # last_eval_step would make the resume cut metrics lines the run never rewrites.
        if not -1 <= self.last_eval_step <= self.step:
            raise ConfigError(
                "last_eval_step", f"{self.last_eval_step} is not in -1..step ({self.step})"
            )


@dataclass(frozen=True)
class Snapshot:
    """``checkpoints/step-<step>.pt``: the weights kept at ``step`` and what describes them
    (no optimizer; see :meth:`vlab.rundir.RunDir.keep_snapshot`)."""

    model: dict[str, Any]
    step: NonNegative
    threshold_step: NonNegative | None = None
    last_metrics: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LockRecord:
    """A lock file (``writer.lock``, a sweep's ``locks/<run>.lock``): who holds it. ``start``
    is :func:`vlab.process.process_start` (boot id and clock ticks, a string), so a reused
    pid is told apart from the holder; ``time`` is when the lock was taken."""

    host: str | None = None
    pid: int | None = None
    start: str | None = None
    job_id: str | None = None
    time: Real | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.pid is not None and not 0 < self.pid < 2**31:  # names no process at all
            raise ConfigError("pid", f"{self.pid} is not a process id")


def checked(
    cls: type[R], data: Any, path: str | os.PathLike, what_to_do: str, field: str = ""
) -> Any:
    """``data`` itself, once it has been checked as record ``cls`` (a
    :class:`~vlab.records.DamagedFile` otherwise): readers keep their plain dicts, with the
    keys the file holds (no defaults filled in). ``field`` as in
    :func:`~vlab.records.parse_record` (``line 3``)."""
    parse_record(cls, data, path, what_to_do, field=field)
    return data
