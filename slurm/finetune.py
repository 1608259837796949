"""Finetune runs in sweeps (``SweepSpec(kind="vlm-finetune")``): config, run, state.

A run of such a sweep is what ``vlab vlm finetune --out RUN`` makes
(:mod:`vlab.models.vlm.finetune`): a stage-2 VLM finetuned on one task at one resolution,
then scored on that task's held-out set::

    RUN/config.json, status.json, metrics.jsonl, checkpoints/   the finetune's training
    RUN/eval/heldout/status.json, results.json                  its held-out evaluation

Its config is a :class:`~vlab.models.vlm.finetune.FinetuneConfig` as nested dict or dotted
keys; ``source`` names the stage-2 run to start from (per arch: ``per_arch`` or
``--set-arch ARCH:source=RUN``, keyed by the config's ``arch``). Expansion reads each
source's config, so a wrong task, resolution or arch fails before anything is submitted.
A run is done when its training and evaluation are: :func:`finetune_status` reads that from
the files alone, as :func:`vlab.slurm.vlm.vlm_status` does for a VLM run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlab.config import to_dict
from vlab.rundir import RunDir
from vlab.slurm.sweepdir import setting
from vlab.slurm.vlm import eval_dir, eval_phase, phase

ARCH_KEY = "arch"


def resolve_finetune_config(config: dict) -> dict:
    """Validate a finetune config against its source run (the paper's recipe under the
    fields not given) and write out every default; the task's files must exist."""
    from vlab.models.vlm.finetune import finetune_config

    cfg = finetune_config(config)
    cfg.check_files()
    return to_dict(cfg)


def run_finetune(
    config: dict,
    out: str | Path,
    *,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], Any] = print,
) -> dict:
    """Train and evaluate the finetune into ``out`` (resuming, or reading back a finished
    one); returns :func:`finetune_status`."""
    from vlab.config import from_dict
    from vlab.models.vlm.finetune import FinetuneConfig, finetune

    cfg = from_dict(FinetuneConfig, config)
    finetune(cfg, out, progress=progress, log=log, should_stop=should_stop)
    return finetune_status(out, config)


def finetune_status(run: str | Path, config: dict) -> dict:
    """Where a finetune run stands, from its files: the status of its current phase.

    ``stage`` is ``finetune`` (training) or ``eval``; ``steps`` the finetune's budget (with
    ``epochs`` known once training started); ``benchmarks`` the evaluated ones. ``state`` is
    absent before anything started (the sweep's "pending"). Reads files only, without
    importing torch (the report's loader calls it): the evaluation is in ``RUN/eval/heldout``,
    as for a VLM run (:func:`vlab.slurm.vlm.eval_dir`, the same folder as
    :func:`vlab.models.vlm.finetune.eval_dir`).
    """
    run = Path(run)
    status = RunDir(run).read_status()
    steps = setting(config, "train.steps") if setting(config, "epochs") is None else None
    if not status:
        return {"stage": "finetune", "steps": steps, "benchmarks": []}
    steps = status.get("steps", steps)
    if status.get("state") != "done":
        return phase(status, "finetune", steps)
    return eval_phase(eval_dir(run), status, steps, "finetuned")
