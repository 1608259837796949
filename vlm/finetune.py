"""``vlab vlm finetune``: a stage-2 VLM finetuned on one task at a higher resolution.

SHAKEUP's Figure 3: starting from the instruction-tuned (stage-2) model, finetune on one task
(VQAv2 for 1 epoch, RefCOCOg for 3) at 336 / 448 / 480 / 560 px with lr in {1e-5, 5e-5,
1e-4}, batch 64, AdamW, cosine decay, warmup ratio 0.03, and score the task's held-out set at
the same resolution. Does Mamba gain from the longer image sequence as the Transformer does?

A finetune is a run directory of its own, written by this step and read by the next::

    OUT/config.json, status.json, metrics.jsonl, checkpoints/   training, as a stage's
    OUT/data/{stage2,heldout}/         the task's dataset files, prepared (dataset files only)
    OUT/eval/heldout/status.json       the held-out evaluation: running | done | failed
    OUT/eval/heldout/results.json      scores per benchmark, as ``vlab vlm eval`` writes them
    OUT/eval/heldout/predictions.jsonl greedy answers (dataset files: a killed eval resumes)
    OUT/eval/<benchmark>/              the task's benchmark on the paper's split, where that
                                       is not the held-out set (RefCOCOg test), a phase each

``OUT`` defaults to ``RUN/finetune/<task>-r<R>-lr<lr>``. It resumes like a stage (the engine's
checkpoint at every evaluation), and a finished finetune is not touched again. The source
run (``RUN/stage2`` and its tokenizer) is only read. ``vlab vlm eval`` and ``vlab vlm
generate`` open ``OUT`` as they open a train run (:mod:`vlab.vlm.trained`: the model
at the finetune's resolution, the source's tokenizer); ``vlab report`` on a sweep of finetunes
draws Figure 3 (:mod:`vlab.analysis.finetune`).

What changes with the resolution lives in :mod:`vlab.models.vlm.resolution`: every encoder's
``image_size``, the position embeddings (interpolated), the number of visual tokens and with
it ``max_length``. The data is the task alone: for the built-in shapes dataset one of its
tasks, rendered at the new resolution (scenes are drawn at that size, so objects gain pixels
rather than being upsampled); for dataset files one source of the stage-2 mixture
(``vqav2``, ``refcocog``) and its held-out set, read as stage 2 reads them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlab.config import deep_merge, from_dict, to_dict
from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.data.prepared import MixtureConfig
from vlab.models.vlm.data.run_data import VLMDataConfig
from vlab.models.vlm.data.sources import SourceConfig
from vlab.records import DamagedFile, read_json_file
from vlab.rundir import RunDir
from vlab.training.config import TrainConfig
from vlab.vlm.config import VLMRunConfig, stage_config
from vlab.vlm.files import eval_dir, evaluated

# The paper's recipe (SHAKEUP section 3): batch 64, AdamW, cosine, warmup ratio 0.03; lr is
# the grid's middle value. Evaluation every 10% of the steps and at step 0 (the stage-2
# weights at the new resolution, before any finetuning).
TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 1000,
    "batch_size": 64,
    "lr": 5e-5,
    "warmup_ratio": 0.03,
    "weight_decay": 0.0,
    "stop_at_threshold": False,
    "eval_fraction": 0.1,
}

# The paper's finetuning tasks on its datasets (``data_root``): the stage-2 source trained on
# (``vlab.models.vlm.data.paper_data.paper_data``), the held-out set followed during training
# and scored after it, and the benchmarks on the splits the paper reports, scored last when
# they are not the held-out set (``paper_benchmarks``' names). RefCOCOg trains on its
# grounding expressions only (REC), is followed on val and reported on test (umd split), as
# the paper's grounding tables report it; VQAv2 is followed and reported on val2014, the split
# the SHAKEUP authors' evaluation script scores (gpantaz/vl_mamba @ c788f5f).
PAPER_TASKS: dict[str, tuple[str, str, dict, tuple[str, ...]]] = {
    "vqav2": ("vqav2", "vqav2", {}, ()),
    "refcocog": ("refcocog", "refcocog_val", {"tasks": ["grounding"]}, ("refcocog_test",)),
}


@dataclass(frozen=True)
class FinetuneConfig:
    """One finetune: which stage-2 run, which task, which resolution, how long and how fast.

    ``source``: a ``vlab vlm train`` output directory; its ``stage2`` is the starting point
    (stored as an absolute path). ``task``: for a run on the shapes dataset one of its tasks
    (``vqa``, ``grounding`` ...); for dataset files the label of a source (``vqav2``,
    ``refcocog``). ``resolution``: the image side in pixels, a multiple of the encoder's patch.

    ``train``: the optimisation settings (the paper's recipe by default, see
    ``TRAIN_DEFAULTS``). ``epochs``, when given (dataset files only), sets the step budget
    to ``ceil(epochs x sequences / batch_size)`` once the task's data is prepared;
    ``train.steps`` is then not used. ``max_length`` None grows the source's by the tokens the
    image gains; ``n_heldout``, ``eval_batch_size``, ``max_new_tokens`` None are the source's.

    Dataset files: ``train_source`` / ``heldout_source`` None resolve at construction, from
    ``data_root`` (the paper's layout, tasks ``vqav2`` and ``refcocog``) if given, else from
    the source run's ``data.stage2`` / ``data.heldout`` source labelled ``task``; config.json
    then holds the sources used. ``benchmarks``: sources scored after the held-out
    evaluation, each a phase of its own in ``OUT/eval/<label>/`` (the layout of ``vlab vlm
    eval``); None resolves from ``data_root`` to the task's paper split where that is not the
    held-out set (RefCOCOg test), and stays None (none) otherwise. ``arch`` None resolves to
    the source's LM arch (a sweep keys ``per_arch`` by it); given, it must be the source's.

    Construction reads ``source``'s ``stage2/config.json`` and validates everything against
    it (task, resolution, arch), so a bad value fails in one line before any work.
    """

    source: str = ""
    task: str = ""
    resolution: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS))
    epochs: float | None = None
    max_length: int | None = None
    n_heldout: int | None = None
    eval_batch_size: int | None = None
    max_new_tokens: int | None = None
    data_root: str | None = None
    train_source: SourceConfig | None = None
    heldout_source: SourceConfig | None = None
    benchmarks: tuple[SourceConfig, ...] | None = None
    arch: str | None = None

    def __post_init__(self) -> None:
        if self.resolution < 1:
            raise ConfigError(
                "resolution", f"must be a positive pixel count, got {self.resolution}"
            )
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError("epochs", f"must be > 0, got {self.epochs}")
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError("max_length", f"must be >= 8, got {self.max_length}")
        for name in ("n_heldout", "eval_batch_size", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, f"must be >= 1, got {value}")
        from vlab.preflight import MAX_IMAGE_SIDE, MAX_NEW_TOKENS, MAX_SEQUENCE, check_at_most

        check_at_most(self.resolution, MAX_IMAGE_SIDE, "resolution", "px")
        if self.max_length is not None:
            check_at_most(self.max_length, MAX_SEQUENCE, "max_length", "tokens")
        if self.max_new_tokens is not None:
            check_at_most(self.max_new_tokens, MAX_NEW_TOKENS, "max_new_tokens", "tokens")
        if not self.source:
            raise ConfigError(
                "source",
                "give the vlab vlm train run directory to finetune (in a sweep: set source, "
                "or per arch: --set-arch ARCH:source=RUN)",
            )
        object.__setattr__(self, "source", os.path.abspath(self.source))
        src = _read_source(self.source)
        object.__setattr__(self, "_source_config", src)
        if self.arch is None:
            object.__setattr__(self, "arch", src.model.lm.arch)
        elif self.arch != src.model.lm.arch:
            raise ConfigError(
                "arch", f"{self.arch!r}, but {self.source} is a {src.model.lm.arch} VLM"
            )
        if src.data.dataset == "shapes":
            self._check_shapes(src)
        else:
            self._resolve_sources(src)
        labels = [s.label for s in self.benchmarks or ()]
        for label in labels:
            if labels.count(label) > 1:
                raise ConfigError("benchmarks", f"two benchmarks are labelled {label!r}")
        from vlab.models.vlm.resolution import check_resolution

        check_resolution(src.model, self.resolution)

    def _check_shapes(self, src: VLMRunConfig) -> None:
        from vlab.models.vlm.data.shapes import SHAPES_TASKS

        if self.task not in SHAPES_TASKS:
            raise ConfigError(
                "task",
                f"{self.task!r} is not a task of the shapes dataset {self.source} trained on "
                f"({', '.join(SHAPES_TASKS)})",
            )
        if self.epochs is not None:
            raise ConfigError("epochs", "the shapes dataset has no epochs; give train.steps")
        for name in ("data_root", "train_source", "heldout_source"):
            if getattr(self, name) is not None:
                raise ConfigError(name, f"{self.source} trained on the shapes dataset; drop it")
        try:
            self.data_config()
        except ConfigError as e:  # scenes that do not fit at this size
            raise ConfigError("resolution", f"no shapes scenes at {self.resolution} px: {e}") from e

    def _resolve_sources(self, src: VLMRunConfig) -> None:
        """Fill ``train_source`` and ``heldout_source`` (dataset files)."""
        paper: dict[str, SourceConfig] = {}
        if self.data_root is not None:
            if self.task not in PAPER_TASKS:
                raise ConfigError(
                    "task",
                    f"{self.task!r} is not a paper finetuning task ({', '.join(PAPER_TASKS)}); "
                    "drop data_root and give train_source and heldout_source",
                )
            paper = paper_sources(self.data_root, self.task)
            if self.benchmarks is None and paper["benchmarks"]:
                object.__setattr__(self, "benchmarks", paper["benchmarks"])
        for name, mixture in (
            ("train_source", src.data.stage2),
            ("heldout_source", src.data.heldout),
        ):
            if getattr(self, name) is not None:
                continue
            if paper:
                object.__setattr__(self, name, paper[name])
                continue
            found = [s for s in mixture.sources if s.label == self.task]
            if not found:
                part = "stage2" if name == "train_source" else "heldout"
                labels = ", ".join(s.label for s in mixture.sources) or "none"
                field_name = "task" if name == "train_source" else name
                raise ConfigError(
                    field_name,
                    f"{self.source}'s data.{part} has no source labelled {self.task!r} "
                    f"({labels}); give {name}, or data_root for the paper's layout",
                )
            object.__setattr__(self, name, found[0])

    # what the finetune is made of ---------------------------------------------------------

    @property
    def source_config(self) -> VLMRunConfig:
        """The source run's config (its ``stage2/config.json``)."""
        return self._source_config  # type: ignore[attr-defined]

    @property
    def name(self) -> str:
        """The default run folder under ``RUN/finetune``: ``<task>-r<R>-lr<lr>``."""
        return f"{self.task}-r{self.resolution}-lr{self.train.lr:g}"

    def data_config(self) -> VLMDataConfig:
        """The source's data cut to the task: shapes scenes of the task alone, rendered at
        ``resolution``; or the task's training and held-out sources, mixed as stage 2 mixed."""
        src = self.source_config.data
        n_heldout = self.n_heldout or src.n_heldout
        if src.dataset == "shapes":
            shapes = dataclasses.replace(src.shapes, image_size=self.resolution, tasks=(self.task,))
            return dataclasses.replace(src, shapes=shapes, n_heldout=n_heldout)
        return dataclasses.replace(
            src,
            stage1=dataclasses.replace(src.stage1, sources=()),
            stage2=dataclasses.replace(src.stage2, sources=(self.train_source,)),
            heldout=dataclasses.replace(src.heldout, sources=(self.heldout_source,)),
            n_heldout=n_heldout,
        )

    def check_files(self) -> None:
        """The task's annotation files exist (dataset files), and every benchmark's files and
        image folders (one line naming each benchmark with what it lacks); before any work."""
        if self.source_config.data.dataset == "files":
            for name in ("train_source", "heldout_source"):
                missing = getattr(self, name).missing()
                if missing:
                    raise ConfigError(f"{name}.paths", f"{missing[0]} does not exist")
        lacking = [
            f"{s.label} ({', '.join(s.describe_missing())})"
            for s in self.benchmarks or ()
            if s.missing()
        ]
        if lacking:
            raise ConfigError(
                "benchmarks",
                f"{len(lacking)} benchmark(s) lack their files: {'; '.join(lacking)}; put them "
                "there, or give benchmarks without them ([] for none)",
            )

    def benchmark_mixture(self) -> MixtureConfig:
        """``benchmarks`` as one mixture of held-out sources (unpacked), one per benchmark."""
        return MixtureConfig(sources=tuple(self.benchmarks or ()), pack=False)


def _read_source(source: str) -> VLMRunConfig:
    """The run config of ``source``'s stage 2 (a ConfigError naming ``source`` if none)."""
    run = RunDir(Path(source) / "stage2")
    if not run.config_path.is_file():
        raise ConfigError(
            "source",
            f"{source} holds no stage-2 run (no stage2/config.json); train one with "
            f"vlab vlm train --out {source}",
        )
    try:
        return stage_config(run.read_config())
    except ConfigError as e:
        raise ConfigError("source", f"{run.config_path} does not load: {e}") from e


def paper_sources(root: str | Path, task: str) -> dict[str, Any]:
    """``train_source``, ``heldout_source`` and ``benchmarks`` (the paper's splits besides
    the held-out set, a tuple) of a paper task under the data root ``root``."""
    from vlab.models.vlm.data.paper_data import paper_benchmarks, paper_data

    train_label, heldout_label, options, reported = PAPER_TASKS[task]
    train = [s for s in paper_data(root)["stage2"]["sources"] if _label(s) == train_label]
    suite = {_label(s): s for s in paper_benchmarks(root)}
    train_spec = {**train[0], "options": {**train[0].get("options", {}), **options}}
    return {
        "train_source": from_dict(SourceConfig, train_spec, prefix="train_source"),
        "heldout_source": from_dict(SourceConfig, suite[heldout_label], prefix="heldout_source"),
        "benchmarks": tuple(
            from_dict(SourceConfig, suite[label], prefix=f"benchmarks[{i}]")
            for i, label in enumerate(reported)
        ),
    }


def _label(spec: dict) -> str:
    return spec.get("name") or spec["reader"]


def finetune_config(data: dict) -> FinetuneConfig:
    """A validated config from a nested dict (a sweep's run, the CLI's flags): ``train``
    fields not given take the paper's recipe (``TRAIN_DEFAULTS``), not TrainConfig's."""
    return from_dict(FinetuneConfig, deep_merge({"train": TRAIN_DEFAULTS}, data))


def config_defaults() -> dict:
    """Every field's default as config.json would hold it (what a run directory made by an
    older vlab is completed with, see :meth:`vlab.rundir.RunDir.claim`)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(FinetuneConfig):
        if f.default_factory is not dataclasses.MISSING:
            out[f.name] = dataclasses.asdict(f.default_factory())
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
    return out


# running --------------------------------------------------------------------------------------


def finetune(
    cfg: FinetuneConfig,
    out: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], Any] = print,
    should_stop: Callable[[], bool] | None = None,
) -> dict | None:
    """Finetune into ``out`` (resuming), then evaluate the task's held-out set and its
    benchmarks (:func:`evaluate_finetune_benchmarks`); returns the held-out results, or None
    when training ended unfinished (stopped, diverged: see status.json), on a rank other than
    the main one, or when stopped before the held-out evaluation.

    A finished finetune with its results is not touched again: the results are read back, and
    only benchmarks not yet evaluated are.
    """
    from vlab.training.distributed import claim_run, setup_distributed
    from vlab.training.engine import resolve_device

    out = Path(out)
    preflight(cfg, out)  # every check, before anything is written
    ctx = setup_distributed(resolve_device(cfg.train.device))
    log = log if ctx.is_main else (lambda *_: None)
    run, done = claim_run(ctx, out, to_dict(cfg), config_defaults(), kind="vlm-finetune")
    try:
        heldout = _results(out) if done else None
        if heldout is None:
            tok = source_tokenizer(cfg)
            run_cfg, model = finetune_model(cfg, tok, log)
            if not done:
                result = _train(cfg, run_cfg, model, tok, run, ctx, progress, log, should_stop)
                if result.state != "done":
                    return None
            else:
                log(f"{out}: trained; evaluating")
    finally:
        run.release()
    if not ctx.is_main:
        return None
    if heldout is None:
        if should_stop is not None and should_stop():
            return None
        heldout = evaluate_finetune(cfg, out, progress=progress, log=log)
    elif all(evaluated(eval_dir(out, s.label)) for s in cfg.benchmarks or ()):
        log(f"{out}: already done; nothing to do")
    evaluate_finetune_benchmarks(cfg, out, progress=progress, log=log, should_stop=should_stop)
    return heldout


def preflight(cfg: FinetuneConfig, out: str | Path) -> None:
    """Everything :func:`finetune` can check before it writes: the output directory
    (creatable, not a file), the task's files, the source's stage 2 (finished, with a
    checkpoint) and tokenizer, the device (present) and threads (bounded), and the model at
    the new resolution built on the meta device (no weights in memory). Creates nothing.
    Called before the run is claimed, so a sweep of finetunes gets it too."""
    from vlab.models.backbones import check_backbone
    from vlab.models.vlm.resolution import at_resolution
    from vlab.preflight import check_device, check_output_dir, check_threads
    from vlab.vlm.train import meta_parts

    check_output_dir(out)
    cfg.check_files()
    from vlab.vlm.evaluate import benchmark_dirs

    benchmark_dirs(out, cfg.benchmark_mixture())  # plain names, not heldout, writable
    stage2 = RunDir(Path(cfg.source) / "stage2")
    if not stage2.is_done():
        raise VlabError(
            f"{stage2.path} is not finished; finish it first (vlab vlm train --out {cfg.source})"
        )
    if not stage2.checkpoint_path.is_file():
        raise VlabError(f"{cfg.source}/stage2 has no checkpoint to finetune")
    check_device(cfg.train.device, "train.device")
    check_threads(cfg.train.threads, "train.threads")
    source_tokenizer(cfg)
    src = cfg.source_config
    lm = check_backbone(src.model.lm, "source model.lm")
    width = lm.get_input_embeddings().weight.shape[1]
    meta_parts(at_resolution(src.model, cfg.resolution), width, "resolution")


def source_tokenizer(cfg: FinetuneConfig) -> Any:
    """The tokenizer the source run trained with, read (never trained or written) from it."""
    from vlab.vlm.tokenizer import run_tokenizer

    src = cfg.source_config
    own = Path(cfg.source) / "tokenizer" / "tokenizer.json"
    if src.data.tokenizer is None and src.model.lm.pretrained is None and not own.is_file():
        raise VlabError(f"{cfg.source} has no tokenizer ({own} is missing)")
    return run_tokenizer(src, Path(cfg.source))


def finetune_model(
    cfg: FinetuneConfig, tok: Any, log: Callable[[str], Any] = print
) -> tuple[VLMRunConfig, Any]:
    """The run config at the new resolution (:func:`finetune_setup`) and the VLM built at that
    resolution holding the source's final stage-2 weights, its position embeddings
    interpolated (stage-2 trainable parts: projector and LM; frozen encoders stay frozen)."""
    from vlab.models.vlm.resolution import load_at_resolution

    run_cfg, model = finetune_setup(cfg, tok)
    ckpt = RunDir(Path(cfg.source) / "stage2").load_checkpoint()
    if ckpt is None:
        raise VlabError(f"{cfg.source}/stage2 has no checkpoint to finetune")
    load_at_resolution(model, ckpt["model"])
    model.set_stage(2)
    log(
        f"{cfg.source}/stage2 (step {ckpt['step']}) at {cfg.resolution} px: "
        f"{model.grid[0]}x{model.grid[1]} visual tokens, "
        f"max_length {run_cfg.model.sequence.max_length}"
    )
    return run_cfg, model


def finetune_setup(cfg: FinetuneConfig, tok: Any) -> tuple[VLMRunConfig, Any]:
    """The finetune's run config and its VLM, built (seeded, untrained) at the new resolution.

    The run config is the source's with every encoder at ``resolution``, ``max_length`` grown
    by the tokens the image segment gains (when ``cfg.max_length`` is None), the task's data
    and ``train`` as stage 2: what the finetune trains, evaluates and is loaded back with
    (:mod:`vlab.vlm.trained`). Load weights into the model next: the source's
    (:func:`finetune_model`) or the finetune's own checkpoint.
    """
    from vlab.models.vlm.model import build_vlm
    from vlab.models.vlm.resolution import at_resolution, encoder_geometry, following_max_length

    src = cfg.source_config
    model_cfg = at_resolution(src.model, cfg.resolution)
    model = build_vlm(model_cfg, vocab_size=len(tok), seed=cfg.train.seed)
    max_length = cfg.max_length
    if max_length is None:
        size, patch = encoder_geometry(src.model.vision)
        per_row = model.grid[0] // model.encoders[0].grid[0]  # 2 for two-map projectors
        old_grid = (per_row * (size // patch), size // patch)
        max_length = following_max_length(src.model.sequence, old_grid, model.grid, tok)
    model_cfg = at_resolution(model_cfg, cfg.resolution, max_length)  # weights unchanged
    run_cfg = dataclasses.replace(
        src,
        model=model_cfg,
        data=cfg.data_config(),
        stage2=cfg.train,
        eval_batch_size=cfg.eval_batch_size or src.eval_batch_size,
        max_new_tokens=cfg.max_new_tokens or src.max_new_tokens,
    )
    return run_cfg, model


def _train(
    cfg: FinetuneConfig,
    run_cfg: VLMRunConfig,
    model: Any,
    tok: Any,
    run: RunDir,
    ctx: Any,
    progress: bool,
    log: Callable[[str], Any],
    should_stop: Callable[[], bool] | None,
) -> Any:
    """Prepare the task's data, fix the step budget, train with the shared engine."""
    from vlab.models.vlm.batch import image_tokens
    from vlab.models.vlm.data.run_data import open_data
    from vlab.training.engine import resolve_device, train
    from vlab.vlm.train import VLMTask

    seq = run_cfg.model.sequence
    data = open_data(
        run_cfg.data,
        2,
        run.path,
        is_main=ctx.is_main,
        barrier=ctx.barrier,
        length_fn=lambda text: len(tok.encode(text, add_special_tokens=False)),
        max_length=seq.max_length,
        image_tokens=image_tokens(seq, model.grid, tok),
        log=log,
    )
    train_cfg = cfg.train
    if cfg.epochs is not None:
        sequences = len(data.prepared)
        steps = max(1, math.ceil(cfg.epochs * sequences / train_cfg.batch_size))
        train_cfg = dataclasses.replace(train_cfg, steps=steps)
        log(f"{run.path}: {cfg.epochs:g} epochs of {sequences:,} sequences = {steps:,} steps")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run.write_status(
        "running",
        source=cfg.source,
        task=cfg.task,
        arch=cfg.arch,
        resolution=cfg.resolution,
        grid=list(model.grid),
        visual_tokens=model.num_visual_tokens,
        max_length=seq.max_length,
        steps=train_cfg.steps,
        trainable=trainable,
    )
    device = ctx.device(resolve_device(train_cfg.device))
    task = VLMTask(run_cfg, model, tok, train_cfg.batch_size, device, data)
    return train(model, task, train_cfg, run, progress=progress, should_stop=should_stop)


# evaluation -----------------------------------------------------------------------------------


def _results(out: Path) -> dict | None:
    """The finished evaluation's results, or None while there are none."""
    where = eval_dir(out)
    file, fix = where / "results.json", "delete it: resume evaluates again"
    if RunDir(where).is_done() and file.exists():  # a directory there: DamagedFile
        data = read_json_file(file, fix)
        if not isinstance(data, dict) or not isinstance(data.get("sources"), dict):
            raise DamagedFile(file, "sources", "expected an object of scores", fix)
        return data
    return None


def evaluate_finetune(
    cfg: FinetuneConfig,
    out: str | Path,
    *,
    progress: bool = False,
    log: Callable[[str], Any] = print,
) -> dict:
    """Score the finetune's final weights on the task's held-out set at its resolution into
    ``OUT/eval/heldout`` (``vlab vlm eval``'s results.json layout); returns the results.

    The model is the finetune experiment's :meth:`~vlab.vlm.finetune_experiment.
    FinetuneExperiment.open`, scored by the one evaluator
    (:func:`vlab.vlm.evaluate.write_evaluation`). Shapes: the ``n_heldout`` held-out scenes of
    the task, scored as training's held-out evaluation scores them (its last metrics line holds
    the same numbers). Dataset files: every example of ``heldout_source``, answers appended to
    predictions.jsonl as they come, so a killed evaluation resumes.
    """
    from vlab.experiment import experiment
    from vlab.vlm.evaluate import record_evaluated, recorded_evaluation, write_evaluation

    out = Path(out)
    done = _results(out)
    if done is not None:
        return done
    where, run = eval_dir(out), RunDir(out)
    ckpt = run.read_checkpoint()
    if ckpt is None:
        raise VlabError(f"{out} has no checkpoint to evaluate")
    with recorded_evaluation(where, ckpt.step, cfg.train.threads) as files:
        trained = experiment("vlm-finetune").open(out, device=cfg.train.device)
        fields = {"run": str(out), **trained.about}  # source, task, resolution, grid
        if trained.config.data.dataset == "shapes":
            from vlab.models.vlm.data.run_data import ShapesData

            samples = ShapesData(trained.config.data).heldout
            results = write_evaluation(trained, where, samples, fields, shapes=True)
        else:
            from vlab.models.vlm.data.prepared import PreparedMixture

            data = PreparedMixture(out / "data" / "heldout")
            per_source = {k: v["sequences"] for k, v in data.stats.items()}
            results = write_evaluation(
                trained,
                where,
                list(data),
                fields,
                per_source=per_source,
                progress=progress,
                desc=cfg.task,
            )
    record_evaluated(files, results)
    log(f"{where}/results.json: accuracy {results['accuracy']:.4f}")
    return results


def evaluate_finetune_benchmarks(
    cfg: FinetuneConfig,
    out: str | Path,
    *,
    progress: bool = False,
    log: Callable[[str], Any] = print,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, dict]:
    """Score the finetune's final weights at its resolution on each of ``cfg.benchmarks``
    into ``OUT/eval/<benchmark>/`` (:func:`vlab.vlm.evaluate.evaluate_benchmarks`: a phase
    each, finished ones read back, a killed one resumed); returns {benchmark: results}.
    Why: the paper reports RefCOCOg on its test split, while the held-out set that training
    follows (and a learning rate could be chosen on) is val."""
    from vlab.vlm.evaluate import evaluate_benchmarks

    if not cfg.benchmarks:
        return {}
    return evaluate_benchmarks(
        out,
        cfg.benchmark_mixture(),
        device=cfg.train.device,
        threads=cfg.train.threads,
        progress=progress,
        log=log,
        should_stop=should_stop,
    )
