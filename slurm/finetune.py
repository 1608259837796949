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
from vlab.fileio import read_json_object
from vlab.rundir import RunDir

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
    absent before anything started (the sweep's "pending").
    """
    from vlab.models.vlm.finetune import eval_dir

    run = Path(run)
    status = RunDir(run).read_status()
    steps = (config.get("train") or {}).get("steps") if config.get("epochs") is None else None
    if not status:
        return {"stage": "finetune", "steps": steps, "benchmarks": []}
    steps = status.get("steps", steps)
    if status.get("state") != "done":
        return _phase(status, "finetune", steps)
    ev = RunDir(eval_dir(run)).read_status()
    results_path = eval_dir(run) / "results.json"
    if ev and ev.get("state") == "done" and results_path.is_file():
        results = read_json_object(results_path, "delete it: resume evaluates again")
        return {
            **_phase(ev, "eval", steps),
            "step": status.get("step"),
            "accuracy": results.get("accuracy"),
            "benchmarks": sorted(results.get("sources", {})),
        }
    if not ev or ev.get("state") == "done":  # not started, or its results.json was removed
        return {
            "state": "interrupted",
            "reason": "finetuned, held-out evaluation not written; resume runs it",
            "stage": "eval",
            "step": status.get("step"),
            "steps": steps,
            "benchmarks": [],
        }
    return {**_phase(ev, "eval", steps), "step": status.get("step")}


def _phase(status: dict, stage: str, steps: int | None) -> dict:
    """A phase's status.json as a sweep status row's fields."""
    return {**status, "stage": stage, "steps": steps, "benchmarks": status.get("benchmarks") or []}
