"""A run's model at one of its checkpoints, rebuilt from the run directory alone.

Reads only the run-directory contract (``config.json``, ``checkpoints/last.pt``,
``checkpoints/step-<step>.pt``): the model is built from the run's config exactly as training
built it, then the checkpoint's weights are loaded strictly. Runs trained from a local
``--pretrained`` directory need that directory where the config says.

Three kinds of run are inspected: probe runs (``vlab probe run``, loaded here), image probe
runs (the same with ``task.modality = "image"``: a VLM trained on the probe, loaded here too,
inspected through its LM) and VLM runs (a stage of ``vlab vlm train``). :func:`open_any_run`
tells them apart by their files; each is loaded by its experiment's ``open``
(:class:`vlab.experiment.Experiment`), never rebuilt here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from vlab.errors import ConfigError, VlabError
from vlab.experiment import experiment, stage_of
from vlab.probes.config import ProbeRunConfig
from vlab.probes.tasks import ProbeVocab
from vlab.rundir import RunDir
from vlab.vlm.config import VLMRunConfig, stage_config

if TYPE_CHECKING:
    import torch

    from vlab.analysis.inside.budget import ModelDims
    from vlab.probes.image_model import ImageProbe

LAST = "last"
PROBE, IMAGE_PROBE, VLM = "probe", "image-probe", "vlm"  # run kinds (vlab.experiment.KINDS)


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
    image probe run comes back as an :class:`ImageProbeRun`
    (:meth:`vlab.probes.experiment.ProbeExperiment.config_of` reads it)."""
    config = experiment(PROBE).config_of(path)
    kind = ImageProbeRun if config.task.modality == "image" else ProbeRun
    return kind(Path(path), config)


@dataclass(frozen=True)
class VLMRun(Run):
    """One stage of a ``vlab vlm train`` run: ``path`` is ``OUT/stage{N}``."""

    kind: ClassVar[str] = VLM
    config: VLMRunConfig
    stage: int | None

    @property
    def out(self) -> Path:
        """The ``vlab vlm train`` output directory the stage belongs to (its tokenizer)."""
        return self.path.parent


def open_vlm_run(path: str | Path) -> VLMRun:
    """Parse ``path``'s config.json as a VLM stage's (one-line error if it is not one)."""
    files = RunDir(path)
    stored = files.read_config()
    try:
        config = stage_config(stored)
    except ConfigError as e:
        raise VlabError(f"{files.config_path}: not a VLM run's config ({e})") from None
    return VLMRun(Path(path), config, stored.get("stage"))


def open_any_run(path: str | Path) -> Run:
    """``path`` as a probe run or a VLM stage, whichever its files say
    (:func:`vlab.experiment.stage_of`: a stage of a ``vlab vlm train`` run)."""
    files = RunDir(path)
    if not files.config_path.is_file():
        raise VlabError(f"{path}: not a run directory (no config.json)")
    if stage_of(path) is not None:
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
    """The run's model with the weights of ``step`` (eval mode, CPU) and its task vocabulary:
    the probe experiment's :meth:`~vlab.probes.experiment.ProbeExperiment.open`."""
    probe = experiment(PROBE).open(run.path, step)
    return probe.model, probe.vocab


def load_image_probe(run: ImageProbeRun, step: int) -> ImageProbe:
    """An image run's model (weights of ``step``, eval mode, CPU), vocabulary, data and token
    layout: the image probe experiment's ``open``."""
    return experiment(IMAGE_PROBE).open(run.path, step)


def probe_shape(run: Run, dtype: torch.dtype | None = None) -> tuple[ModelDims, int] | None:
    """The dims of the LM a probe run's analyses look inside (an image run's: its VLM's LM),
    its weights taken in ``dtype``, and the sequence length T of its examples, for
    :mod:`vlab.analysis.inside.budget`; None for a VLM run. Built on the meta device from
    config.json alone: no weights are read or allocated."""
    import torch

    from vlab.analysis.inside.budget import model_dims

    if not isinstance(run, ProbeRun):
        return None
    with torch.device("meta"):
        probe = experiment(run.kind).build(run.config)
    if run.kind == IMAGE_PROBE:
        return model_dims(probe.model.lm, dtype), len(probe.sequence)
    return model_dims(probe.model, dtype), run.config.task.seq_len
