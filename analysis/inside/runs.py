"""A run's model at one of its checkpoints, rebuilt from the run directory alone.

Reads only the run-directory contract (``config.json``, ``checkpoints/last.pt``,
``checkpoints/step-<step>.pt``): the model is built from the run's config exactly as training
built it, then the checkpoint's weights are loaded strictly. Runs trained from a local
``--pretrained`` directory need that directory where the config says.

Three kinds of run are inspected: probe runs (``vlab probe run``, loaded here), image probe
runs (the same with ``task.modality = "image"``: a VLM trained on the probe, loaded here too,
inspected through its LM) and VLM runs (a stage of ``vlab vlm train``, loaded by
:mod:`vlab.analysis.inside.vlm`). :func:`open_any_run` tells them apart by their config; the
checkpoint functions serve all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from vlab.config import from_dict
from vlab.errors import ConfigError, VlabError
from vlab.probes.config import ProbeRunConfig
from vlab.probes.tasks import ProbeVocab
from vlab.rundir import RunDir

if TYPE_CHECKING:
    from vlab.probes.image_model import ImageProbe

LAST = "last"
PROBE, IMAGE_PROBE, VLM = "probe", "image_probe", "vlm"


@dataclass(frozen=True)
class Run:
    """A run directory of some kind (``probe`` or ``vlm``): what the checkpoint functions
    below need."""

    kind: ClassVar[str]
    path: Path

    @property
    def files(self) -> RunDir:
        return RunDir(self.path)


@dataclass(frozen=True)
class ProbeRun(Run):
    """A probe run directory and its parsed config."""

    kind: ClassVar[str] = PROBE
    config: ProbeRunConfig

    @property
    def arch(self) -> str:
        return self.config.model.arch


@dataclass(frozen=True)
class ImageProbeRun(ProbeRun):
    """A probe run whose context is an image (``task.modality = "image"``): its model is a
    VLM, its analyses look inside the VLM's LM."""

    kind: ClassVar[str] = IMAGE_PROBE


def open_run(path: str | Path) -> ProbeRun:
    """Parse ``path``'s config.json as a probe run (one-line error if it is not one); an
    image probe run comes back as an :class:`ImageProbeRun`."""
    files = RunDir(path)
    if not files.config_path.is_file():
        raise VlabError(f"{path}: not a run directory (no config.json)")
    try:
        config = from_dict(ProbeRunConfig, files.read_config())
    except ConfigError as e:
        raise VlabError(f"{files.config_path}: not a probe run's config ({e})") from None
    kind = ImageProbeRun if config.task.modality == "image" else ProbeRun
    return kind(Path(path), config)


def run_kind(config: dict) -> str:
    """``vlm`` for the config.json of a ``vlab vlm train`` stage (it has both stages'
    settings), ``probe`` otherwise."""
    return VLM if isinstance(config, dict) and {"stage1", "stage2"} <= set(config) else PROBE


def open_any_run(path: str | Path) -> Run:
    """``path`` as a probe run or a VLM run, whichever its config.json describes."""
    files = RunDir(path)
    if not files.config_path.is_file():
        raise VlabError(f"{path}: not a run directory (no config.json)")
    if run_kind(files.read_config()) == VLM:
        from vlab.analysis.inside.vlm import open_vlm_run

        return open_vlm_run(path)
    return open_run(path)


def available_steps(run: Run) -> list[int]:
    """Every checkpoint step of ``run``: the kept steps and the last one."""
    steps = set(run.files.snapshots())
    if run.files.checkpoint_path.is_file():
        steps.add(last_step(run))
    return sorted(steps)


def resolve_steps(run: Run, which: str) -> list[int]:
    """The checkpoint steps that ``--checkpoints`` names: ``last``, ``all`` or ``STEP,...``."""
    available = available_steps(run)
    if not available:
        raise VlabError(
            f"{run.path}: no checkpoints to inspect (checkpoints/ is empty: the run has not "
            "reached its first evaluation, or it was trained with nothing kept)"
        )
    if which == LAST:  # last.pt is written at every evaluation: no kept step is later
        return [available[-1]]
    if which == "all":
        return available
    try:
        wanted = [int(s) for s in which.split(",") if s.strip()]
    except ValueError:
        raise VlabError(
            f"--checkpoints {which!r}: give last, all or steps like 0,100,2000"
        ) from None
    missing = [s for s in wanted if s not in available]
    if missing or not wanted:
        have = ", ".join(str(s) for s in available) or "none"
        what = f"no checkpoint at step {missing[0]}" if missing else "no steps given"
        raise VlabError(f"{run.path}: {what} (checkpoints at steps: {have})")
    return sorted(set(wanted))


def last_step(run: Run) -> int:
    """The step of ``checkpoints/last.pt`` (or of the newest kept step without it)."""
    checkpoint = run.files.load_checkpoint()
    if checkpoint is not None:
        return int(checkpoint["step"])
    kept = run.files.snapshots()
    if not kept:
        raise VlabError(f"{run.path}: no checkpoints to inspect")
    return max(kept)


def load_model(run: ProbeRun, step: int) -> tuple[nn.Module, ProbeVocab]:
    """The run's model with the weights of ``step`` (eval mode, CPU) and its task vocabulary.

    Refuses a checkpoint trained under another config than ``config.json`` holds, and one
    whose weights do not fit the model the config builds.
    """
    from vlab.models.backbones import add_tokens, base_vocab_size, build_backbone

    checkpoint = check_checkpoint(run, step)
    cfg = run.config
    model = build_backbone(cfg.model, seed=cfg.train.seed)
    vocab = ProbeVocab.for_task(cfg.task, base_vocab_size=base_vocab_size(model))
    add_tokens(model, len(vocab.new_token_names), cfg.model)
    load_weights(run, model, checkpoint, step)
    return model.eval(), vocab


def load_image_probe(run: ImageProbeRun, step: int) -> ImageProbe:
    """An image run's model (weights of ``step``, eval mode, CPU), vocabulary, data and token
    layout, built from its config as training built them."""
    from vlab.probes.image_model import build_image_probe

    checkpoint = check_checkpoint(run, step)
    probe = build_image_probe(run.config)
    load_weights(run, probe.model, checkpoint, step)
    probe.model.eval()
    return probe


def load_weights(run: Run, model: nn.Module, checkpoint: dict, step: int) -> None:
    """Load ``checkpoint``'s weights into ``model`` strictly; weights that do not fit the model
    the run's config builds are a one-line error (a run of either kind)."""
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError) as e:
        said = str(e).strip().splitlines()[0][:200]
        raise VlabError(
            f"{run.path}: the checkpoint at step {step} does not fit the model its config "
            f"builds ({said})"
        ) from None


def check_checkpoint(run: Run, step: int) -> dict:
    """The checkpoint of ``step`` (of a run of either kind), refused (one line) if it was
    trained under another config than config.json holds or holds no weights."""
    kept = run.files.snapshots()
    if step in kept:
        checkpoint = run.files.load_checkpoint(step=step)
    else:
        checkpoint = run.files.load_checkpoint()
        if checkpoint is not None and int(checkpoint["step"]) != step:
            checkpoint = None
    if checkpoint is None:
        raise VlabError(f"{run.path}: no checkpoint at step {step}")
    if not isinstance(checkpoint.get("model"), dict):
        raise VlabError(f"{run.path}: the checkpoint at step {step} holds no model weights")
    run.files.check_checkpoint_config(checkpoint)
    return checkpoint
