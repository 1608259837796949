"""The VLM experiment (run kind ``vlm``): config, training, evaluation, state, opening.

A VLM run, whether ``vlab vlm train --out RUN`` or a sweep (``SweepSpec(kind="vlm")``) starts
it (:func:`train_and_evaluate` either way), is ``RUN/tokenizer``, ``RUN/stage1``,
``RUN/stage2`` (run directories with their own status) followed by the evaluation of stage 2
on the run's held-out benchmarks, then (``benchmarks.suite``) on each benchmark of a paper's
suite, one phase per benchmark::

    RUN/eval/heldout/results.json   scores per benchmark ("source/task"), as vlab vlm eval writes
    RUN/eval/heldout/status.json    running | done | failed | interrupted, as a stage's
    RUN/eval/heldout/predictions.jsonl   every held-out answer (shapes: with the target's box)
    RUN/eval/<benchmark>/           the same files for one benchmark of the suite, in
                                    benchmarks.names' order (vlab vlm eval --data-root's layout)

The held-out benchmarks are the config's own: ``data.heldout``'s sources for dataset files
(scored by :func:`vlab.vlm.evaluate.evaluate_run`, which resumes a killed evaluation),
the shapes dataset's ``held_out`` split of ``data.n_heldout`` scenes for the built-in data
(scored as training's held-out evaluation scores it, one benchmark per task). A run is done
when stage 1, stage 2 and the evaluations are: :func:`vlm_status` reads that from those files
alone, as :class:`~vlab.rundir.RunDir` does for a probe run, so ``vlab sweep status``,
resubmission and resume decide the same way whoever trained the run.

Configs: a run's config is a :class:`~vlab.vlm.config.VLMRunConfig` as nested dict or
dotted keys, optionally with ``preset`` (``tiny-shapes``, ``paper-1.4b``): the preset is the
base the rest is merged over, as ``vlab vlm train --preset`` does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vlab.config import from_dict, setting, to_dict
from vlab.errors import ConfigError, VlabError
from vlab.experiment import Experiment
from vlab.fileio import read_json_object
from vlab.rundir import RunDir
from vlab.vlm.files import HELDOUT, eval_dir, evaluated

if TYPE_CHECKING:
    from collections.abc import Callable

    from vlab.vlm.config import VLMRunConfig
    from vlab.vlm.trained import OpenedParts


def with_preset(config: dict) -> dict:
    """``config`` merged over its ``preset`` (popped), as ``vlab vlm train --preset`` does."""
    from vlab.vlm.config import preset_config

    data = dict(config)
    preset = data.pop("preset", None)
    if preset is None:
        return data
    if not isinstance(preset, str):
        raise ConfigError("preset", f"expected a VLM preset name, got {preset!r}")
    return preset_config(preset, None, data)


def resolve_vlm_config(config: dict) -> dict:
    """Validate a VLM run config (a ``preset`` is applied first) and write out every default.

    Besides the fields' own checks (an unknown key or a checkpoint of another arch names its
    field), the files the run will read must exist: dataset annotation files, the benchmarks
    of its suite and the tokenizer directory. A sweep learns that when it is expanded, not
    hours later in a job.
    """
    from vlab.vlm.config import VLMRunConfig

    cfg = from_dict(VLMRunConfig, with_preset(config))
    cfg.data.check_files()
    cfg.benchmarks.check_files()
    _check_tokenizer(cfg)
    return to_dict(cfg)


def _check_tokenizer(cfg: VLMRunConfig) -> None:
    """The tokenizer a run will load (``data.tokenizer``, else the pretrained LM's directory)
    has a tokenizer file: the check ``run_tokenizer`` makes when the run starts."""
    from vlab.models.vlm.tokenizer import TOKENIZER_FILES

    source = cfg.data.tokenizer or cfg.model.lm.pretrained
    if source is None:
        return
    field = "data.tokenizer" if cfg.data.tokenizer else "model.lm.pretrained"
    if not Path(source).is_dir():
        raise ConfigError(field, f"{source!r}: no such tokenizer directory")
    if not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(
            field,
            f"{source} holds no tokenizer ({', '.join(TOKENIZER_FILES)}); set data.tokenizer "
            "(per arch in a sweep: per_arch or --set-arch ARCH:data.tokenizer=DIR)",
        )


# training ------------------------------------------------------------------------------------


def run_vlm(
    config: dict,
    out: str | Path,
    *,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], Any] = print,
) -> dict:
    """Train both stages of the run into ``out`` (resuming or skipping finished ones), then
    evaluate it on its held-out benchmarks and its suite; returns :func:`vlm_status`."""
    from vlab.vlm.config import VLMRunConfig

    cfg = from_dict(VLMRunConfig, config)
    train_and_evaluate(cfg, out, (1, 2), progress=progress, should_stop=should_stop, log=log)
    return vlm_status(out, config)


def train_and_evaluate(
    cfg: VLMRunConfig,
    out: str | Path,
    stages: tuple[int, ...] = (1, 2),
    *,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], Any] = print,
) -> tuple[dict[int, Any], dict[str, dict] | None]:
    """Train ``stages`` into ``out`` (resuming or skipping finished ones) and, once stage 2 is
    done, score it on the run's held-out benchmarks (:func:`evaluate_heldout`) and then on
    each benchmark of its suite (:func:`evaluate_suite`), on the main process of a torchrun
    group; returns each stage's ``TrainResult`` (None: already done, or not reached) and the
    evaluations' results by folder (``heldout``, then each benchmark finished; None: not
    evaluated). ``vlab vlm train`` and a sweep's worker both come here, so a run is done the
    same way whoever started it.

    Stages are trained one call each, so a stage that ends unfinished (stopped, diverged) stops
    the run there, and a stop asked for between stages (or benchmarks) is honoured before the
    next starts.
    """
    from vlab.training.distributed import is_main_process
    from vlab.vlm.train import train_vlm

    out = Path(out)
    results: dict[int, Any] = {}
    for stage in stages:
        if should_stop is not None and should_stop():
            return results, None
        kwargs = dict(progress=progress, log=log, should_stop=should_stop)
        results[stage] = train_vlm(cfg, out, (stage,), **kwargs)[stage]
        if results[stage] is not None and results[stage].state != "done":
            return results, None
    if 2 not in stages or not RunDir(out / "stage2").is_done() or not is_main_process():
        return results, None
    if should_stop is not None and should_stop():
        return results, None
    evaluations = {HELDOUT: evaluate_heldout(cfg, out, progress=progress, log=log)}
    suite = evaluate_suite(cfg, out, progress=progress, log=log, should_stop=should_stop)
    return results, {**evaluations, **suite}


# evaluation ----------------------------------------------------------------------------------


def evaluate_heldout(
    cfg: VLMRunConfig, out: str | Path, *, progress: bool = False, log: Callable = print
) -> dict:
    """Score stage 2 of ``out`` on the run's held-out benchmarks into ``RUN/eval/heldout``;
    returns the results. Done already (status done and results.json there): read back.

    status.json there follows the evaluation (running, then done or failed with the reason),
    so ``vlab sweep status`` tells an evaluation that failed from one never started.
    """
    from vlab.vlm.evaluate import record_evaluated, recorded_evaluation

    out = Path(out)
    where = eval_dir(out)
    results_path = where / "results.json"
    if RunDir(where).is_done() and results_path.is_file():
        return read_json_object(results_path, "delete it: resume evaluates again")
    stage2 = RunDir(out / "stage2").read_status() or {}
    with recorded_evaluation(where, stage2.get("step"), cfg.stage2.threads) as files:
        if cfg.data.dataset == "files":
            results = _evaluate_files(cfg, out, progress, log)
        else:
            results = _evaluate_shapes(cfg, out, progress)
    record_evaluated(files, results)
    return results


def _evaluate_files(cfg: VLMRunConfig, out: Path, progress: bool, log: Callable) -> dict:
    """``vlab vlm eval`` of stage 2 on every example of ``data.heldout``'s sources (no SPICE:
    a held-out set is for following training, the suite is where SPICE is reported)."""
    from vlab.vlm.evaluate import evaluate_run, select_sources

    return evaluate_run(
        out,
        select_sources(cfg.data.heldout, log=log),
        HELDOUT,
        stage=2,
        device=cfg.stage2.device,
        progress=progress,
        log=log,
        spice=False,
    )


def evaluate_suite(
    cfg: VLMRunConfig,
    out: str | Path,
    *,
    progress: bool = False,
    log: Callable[[str], Any] = print,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, dict]:
    """Score stage 2 of ``out`` on each benchmark of the run's suite (``benchmarks``: a
    paper's benchmarks under its data root) into ``RUN/eval/<benchmark>/``, one phase each
    (:func:`vlab.vlm.evaluate.evaluate_benchmarks`: a finished benchmark is read back, a
    killed one resumes); returns {benchmark: results} of those finished. No suite: {}."""
    from vlab.vlm.evaluate import evaluate_benchmarks

    if cfg.benchmarks.suite is None:
        return {}
    return evaluate_benchmarks(
        out,
        cfg.benchmarks.mixture(),
        stage=2,
        device=cfg.stage2.device,
        threads=cfg.stage2.threads,
        progress=progress,
        log=log,
        should_stop=should_stop,
    )


def _evaluate_shapes(cfg: VLMRunConfig, out: Path, progress: bool) -> dict:
    """Stage 2's final weights on the shapes ``held_out`` split (rendered in memory, so not
    through ``evaluate_run``, which prepares dataset files), scored by training's own held-out
    evaluation and written by the one evaluator (:func:`vlab.vlm.evaluate.write_evaluation`)
    in ``vlab vlm eval``'s layout, every answer with its target's box."""
    from vlab.models.vlm.data.run_data import ShapesData
    from vlab.vlm.evaluate import write_evaluation

    trained = VLMExperiment().open(out, stage=2, device=cfg.stage2.device)
    samples = ShapesData(cfg.data).heldout
    fields = {"run": str(out), "stage": 2}
    return write_evaluation(trained, eval_dir(out), samples, fields, shapes=True)


# state ---------------------------------------------------------------------------------------


def vlm_status(run: str | Path, config: dict) -> dict:
    """Where a VLM run stands, from its files: the status of its current phase.

    ``stage`` is the phase (``stage1``, ``stage2``, ``eval`` for the held-out evaluation,
    ``eval:<benchmark>`` for a benchmark of the suite), ``step`` / ``steps`` the current
    stage's (the evaluations' are stage 2's), ``benchmarks`` the evaluated ones (the held-out
    ``source/task`` keys, then the suite's benchmarks done). ``state`` is absent before
    anything started (the sweep's "pending"); a phase that has not started after a finished
    one is ``interrupted`` (a live process then holds the sweep's lock, which ``vlab sweep
    status`` shows as running).
    """
    run = Path(run)
    steps = {n: setting(config, f"stage{n}.steps") for n in (1, 2)}
    stage1 = RunDir(run / "stage1").read_status()
    if not stage1:
        return {"stage": "stage1", "steps": steps[1], "benchmarks": []}
    if stage1.get("state") != "done":
        return phase(stage1, "stage1", steps[1])
    stage2 = RunDir(run / "stage2").read_status()
    if not stage2:
        return {
            "state": "interrupted",
            "reason": "stage 1 done, stage 2 not started; resume continues",
            "stage": "stage2",
            "step": None,
            "steps": steps[2],
            "benchmarks": [],
        }
    if stage2.get("state") != "done":
        return phase(stage2, "stage2", steps[2])
    heldout = eval_phase(eval_dir(run), stage2, steps[2], "both stages trained")
    names = setting(config, "benchmarks.names")
    return benchmark_phases(
        run, names if isinstance(names, list) else [], heldout, stage2, steps[2]
    )


def eval_phase(where: Path, trained: dict, steps: int | None, what: str) -> dict:
    """The status row of a run whose training is done (``trained``: its status.json) and whose
    held-out evaluation lives in ``where``: done with results, running or failed, or not
    written yet (``interrupted``, so resume runs it; ``what`` says what is finished)."""
    ev = RunDir(where).read_status()
    results_path = where / "results.json"
    if ev and ev.get("state") == "done" and results_path.is_file():
        results = read_json_object(results_path, "delete it: resume evaluates again")
        return {
            **phase(ev, "eval", steps),
            "step": trained.get("step"),
            "accuracy": results.get("accuracy"),
            "benchmarks": sorted(results.get("sources", {})),
        }
    if not ev or ev.get("state") == "done":  # not started, or its results.json was removed
        return {
            "state": "interrupted",
            "reason": f"{what}, held-out evaluation not written; resume runs it",
            "stage": "eval",
            "step": trained.get("step"),
            "steps": steps,
            "benchmarks": [],
        }
    return {**phase(ev, "eval", steps), "step": trained.get("step")}


def benchmark_phases(
    run: Path, names: list[str], heldout: dict, trained: dict, steps: int | None
) -> dict:
    """The status row of a run whose held-out evaluation's row is ``heldout`` and whose suite
    is ``names`` (``RUN/eval/<name>/``, one phase each, in order): the held-out row until it
    is done, then the first benchmark not evaluated (``eval:<name>``: running or failed as
    its status.json says, ``interrupted`` when not started, so resume runs it), else done
    with every benchmark listed. ``trained``: the trained model's status.json (its step)."""
    names = [n for n in names if isinstance(n, str)]  # a hand-edited config: shown, not crashed
    if heldout.get("state") != "done" or not names:
        return heldout
    done: list[str] = []
    for name in names:
        where = eval_dir(run, name)
        if evaluated(where):
            done.append(name)
            continue
        row = {
            "stage": f"eval:{name}",
            "steps": steps,
            "accuracy": heldout.get("accuracy"),
            "benchmarks": [*heldout["benchmarks"], *done],
        }
        ev = RunDir(where).read_status()
        if not ev or ev.get("state") == "done":  # not started, or its results.json removed
            what = f"{len(done)} of {len(names)} benchmarks" if done else "held-out evaluation"
            reason = f"{what} done, {name} not evaluated; resume evaluates it"
            return {"state": "interrupted", "reason": reason, "step": trained.get("step"), **row}
        return {**ev, **row, "step": trained.get("step")}
    return {
        **heldout,
        "reason": f"{heldout.get('reason')}; {len(names)} benchmarks of the suite evaluated",
        "benchmarks": [*heldout["benchmarks"], *names],
    }


def phase(status: dict, stage: str, steps: int | None) -> dict:
    """A phase's status.json as a sweep status row's fields."""
    return {
        **status,
        "stage": stage,
        "steps": steps,
        "benchmarks": status.get("benchmarks") or [],
    }


# the experiment ------------------------------------------------------------------------------

# How an axis value shows in a run name: a label prefix per dotted key ("" = value alone).
NAME_LABELS = {
    "preset": "",
    "model.lm.arch": "",
    "model.lm.preset": "",
    "model.sequence.ordering": "",
    "stage1.lr": "s1lr",
    "stage2.lr": "s2lr",
    "stage1.steps": "s1steps",
    "stage2.steps": "s2steps",
    "stage1.seed": "s1seed",
    "stage2.seed": "s2seed",
}


class TrainedVLMExperiment(Experiment):
    """An experiment whose runs are trained VLMs (a ``vlab vlm train`` run, a finetune): they
    open the same way, from the parts each reads from its directory (:meth:`parts`)."""

    def parts(self, path: Path, stage: int) -> OpenedParts:
        """The run directory, run config, tokenizer (and model, where the experiment builds it
        itself) of stage ``stage`` of the run at ``path``, before weights are loaded."""
        raise NotImplementedError

    def open(
        self,
        path: str | os.PathLike,
        step: int | None = None,
        *,
        stage: int = 2,
        device: str = "auto",
        changes: dict | None = None,
    ) -> Any:
        """Stage ``stage`` of the run at ``path`` as a :class:`~vlab.vlm.trained.TrainedVLM`
        with the weights of ``step`` (None: the last) on ``device``; ``changes`` replace
        run-config fields (``eval_batch_size``, ``max_new_tokens``)."""
        from vlab.vlm.trained import opened

        return opened(self.parts(Path(path), stage), stage, step, device, changes)


class VLMExperiment(TrainedVLMExperiment):
    """A VLM run: stage 1 (projector), stage 2 (projector and LM), then the held-out
    evaluation of stage 2 and its benchmark suite, a phase per benchmark
    (:func:`train_and_evaluate`); done when all are."""

    kind: ClassVar[str] = "vlm"
    config_type: ClassVar[str] = "vlab.vlm.config:VLMRunConfig"
    arch_key: ClassVar[str] = "model.lm.arch"
    name_labels: ClassVar[dict[str, str]] = NAME_LABELS
    analyses: ClassVar[tuple[str, ...]] = (
        "image_attention",
        "vlm_state_probe",
        "vlm_patching",
        "vlm_logit_lens",
    )
    report_template: ClassVar[str] = "vlm"
    phased: ClassVar[bool] = True
    rank_sections: ClassVar[tuple[str, ...]] = ("stage1", "stage2")

    def resolve(self, config: dict) -> dict:
        return resolve_vlm_config(config)

    def arch_of(self, config: dict) -> Any:
        """The arch a (not yet resolved) config selects: its own, else its preset's."""
        return setting(with_preset(config), self.arch_key)

    def run(self, config, out, *, progress=False, should_stop=None, log=print) -> dict:
        return run_vlm(config, out, progress=progress, should_stop=should_stop, log=log)

    def status(self, path: str | os.PathLike, config: dict | None = None) -> dict:
        if config is None:  # both stages' settings are in each stage's config.json
            config = stored_config(Path(path))
        return vlm_status(path, config)

    def build(self, config: VLMRunConfig, vocab_size: int | None = None, seed: int = 0) -> Any:
        """The VLM of ``config`` (``vocab_size``: the run tokenizer's length)."""
        from vlab.models.vlm.model import build_vlm

        return build_vlm(config.model, vocab_size=vocab_size, seed=seed)

    def parts(self, path: Path, stage: int) -> OpenedParts:
        return _train_parts(path, stage)


def stored_config(run: Path) -> dict:
    """A ``vlab vlm train`` run's config as its stages recorded it (``{}`` before any)."""
    for stage in (1, 2):
        files = RunDir(run / f"stage{stage}")
        if files.exists():
            return files.read_config()
    return {}


def _train_parts(path: Path, stage: int) -> OpenedParts:
    """A train run's stage: its run directory, run config and the run's tokenizer."""
    from vlab.vlm.config import VLMRunConfig, stage_config
    from vlab.vlm.tokenizer import run_tokenizer
    from vlab.vlm.trained import TRAIN_RUN, OpenedParts

    files = RunDir(path / f"stage{stage}")
    if not files.exists():
        raise VlabError(f"{files.path} is not a run directory: stage {stage} was not trained")
    # a field added by a later vlab (benchmarks) that a resume wrote into config.json with its
    # default is no change from the config the checkpoint recorded, as a resume judges it
    files._defaults = to_dict(VLMRunConfig())
    try:
        cfg = stage_config(files.read_config())
    except ConfigError as e:
        raise VlabError(f"{files.config_path} does not load: {e}") from None
    own_tokenizer = cfg.data.tokenizer is None and cfg.model.lm.pretrained is None
    if own_tokenizer and not (path / "tokenizer" / "tokenizer.json").is_file():
        gone = path / "tokenizer"
        raise VlabError(f"{gone} holds no tokenizer.json: the run's tokenizer is gone")
    return OpenedParts(files, cfg, run_tokenizer(cfg, path), TRAIN_RUN)
