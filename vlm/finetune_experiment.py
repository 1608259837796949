"""The finetune experiment (run kind ``vlm-finetune``): config, run, state, opening.

A finetune, whether ``vlab vlm finetune --out RUN`` or a sweep (``SweepSpec(kind=
"vlm-finetune")``) starts it (:mod:`vlab.vlm.finetune`), is a stage-2 VLM finetuned on one
task at one resolution, then scored on that task's held-out set::

    RUN/config.json, status.json, metrics.jsonl, checkpoints/   the finetune's training
    RUN/eval/heldout/status.json, results.json                  its held-out evaluation
    RUN/eval/<benchmark>/status.json, results.json              each of its ``benchmarks``

Its config is a :class:`~vlab.vlm.finetune.FinetuneConfig` as nested dict or dotted
keys; ``source`` names the stage-2 run to start from (per arch: ``per_arch`` or
``--set-arch ARCH:source=RUN``, keyed by the config's ``arch``). Expansion reads each
source's config, so a wrong task, resolution or arch fails before anything is submitted.
A run is done when its training and evaluation are: :func:`finetune_status` reads that from
the files alone, as :func:`vlab.vlm.experiment.vlm_status` does for a VLM run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vlab.config import setting, to_dict
from vlab.rundir import RunDir
from vlab.vlm.experiment import TrainedVLMExperiment, benchmark_phases, eval_phase, phase
from vlab.vlm.files import eval_dir

if TYPE_CHECKING:
    from vlab.vlm.trained import OpenedParts


def resolve_finetune_config(config: dict) -> dict:
    """Validate a finetune config against its source run (the paper's recipe under the
    fields not given) and write out every default; the task's files must exist."""
    from vlab.vlm.finetune import finetune_config

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
    from vlab.vlm.finetune import FinetuneConfig, finetune

    cfg = from_dict(FinetuneConfig, config)
    finetune(cfg, out, progress=progress, log=log, should_stop=should_stop)
    return finetune_status(out, config)


def finetune_status(run: str | Path, config: dict) -> dict:
    """Where a finetune run stands, from its files: the status of its current phase.

    ``stage`` is ``finetune`` (training), ``eval`` (the held-out evaluation) or
    ``eval:<benchmark>`` (one of the config's ``benchmarks``, in order: the paper's split
    where it is not the held-out set); ``steps`` the finetune's budget (with ``epochs`` known
    once training started); ``benchmarks`` the evaluated ones. ``state`` is
    absent before anything started (the sweep's "pending"). Reads files only, without
    importing torch (the report's loader calls it): the evaluation is in ``RUN/eval/heldout``,
    as for a VLM run (:func:`vlab.vlm.experiment.eval_dir`, the same folder as
    :func:`vlab.vlm.finetune.eval_dir`).
    """
    run = Path(run)
    status = RunDir(run).read_status()
    steps = setting(config, "train.steps") if setting(config, "epochs") is None else None
    if not status:
        return {"stage": "finetune", "steps": steps, "benchmarks": []}
    steps = status.get("steps", steps)
    if status.get("state") != "done":
        return phase(status, "finetune", steps)
    heldout = eval_phase(eval_dir(run), status, steps, "finetuned")
    given = config.get("benchmarks")
    sources = [b for b in given if isinstance(b, dict)] if isinstance(given, list) else []
    names = [b.get("name") or b.get("reader") for b in sources]
    return benchmark_phases(run, names, heldout, status, steps)


# the experiment ------------------------------------------------------------------------------


class FinetuneExperiment(TrainedVLMExperiment):
    """A finetune run: a stage-2 VLM (``source``) finetuned on one task at one resolution,
    then scored on the task's held-out set; done when both are."""

    kind: ClassVar[str] = "vlm-finetune"
    config_type: ClassVar[str] = "vlab.vlm.finetune:FinetuneConfig"
    arch_key: ClassVar[str] = "arch"
    name_labels: ClassVar[dict[str, str]] = {
        "arch": "",
        "task": "",
        "resolution": "r",
        "epochs": "ep",
        "train.lr": "lr",
    }
    report_template: ClassVar[str] = "finetune"
    phased: ClassVar[bool] = True
    rank_sections: ClassVar[tuple[str, ...]] = ("train",)

    def resolve(self, config: dict) -> dict:
        return resolve_finetune_config(config)

    def run(self, config, out, *, progress=False, should_stop=None, log=print) -> dict:
        return run_finetune(config, out, progress=progress, should_stop=should_stop, log=log)

    def status(self, path: str | os.PathLike, config: dict | None = None) -> dict:
        if config is None:
            files = RunDir(path)
            config = files.read_config() if files.exists() else {}
        return finetune_status(path, config)

    def build(self, config: Any, tokenizer: Any = None) -> Any:
        """The finetune's VLM (the source's stage-2 model at ``resolution``), untrained."""
        from vlab.vlm.finetune import finetune_setup, source_tokenizer

        return finetune_setup(config, tokenizer or source_tokenizer(config))[1]

    def parts(self, path: Path, stage: int) -> OpenedParts:
        return _finetune_parts(path, stage)


def _finetune_parts(path: Path, stage: int) -> OpenedParts:
    """A finetune: its run directory, its run config at its resolution, the source's
    tokenizer, its VLM (built untrained: the weights are loaded next) and what its results
    record of it (source, task, resolution, grid)."""
    from vlab.config import from_dict
    from vlab.errors import ConfigError, VlabError
    from vlab.vlm.finetune import FinetuneConfig, config_defaults, finetune_setup, source_tokenizer
    from vlab.vlm.trained import FINETUNE_RUN, OpenedParts

    if stage != 2:
        raise VlabError(
            f"{path} is a vlab vlm finetune directory (one model, finetuned from a stage 2); "
            f"drop --stage {stage}"
        )
    files = RunDir(path)
    files._defaults = config_defaults()  # fields added since its checkpoint, as a resume does
    stored = files.read_config()
    try:
        cfg = from_dict(FinetuneConfig, stored)
    except ConfigError as e:  # its source run moved or gone: the message says which
        raise VlabError(f"{path} is a finetune whose config does not load: {e}") from None
    tok = source_tokenizer(cfg)
    run_cfg, model = finetune_setup(cfg, tok)
    about = {"source": cfg.source, "task": cfg.task, "resolution": cfg.resolution}
    about["grid"] = list(model.grid)
    return OpenedParts(files, run_cfg, tok, FINETUNE_RUN, model, about)
