"""A probe run's model at one of its checkpoints, rebuilt from the run directory alone.

Reads only the run-directory contract (``config.json``, ``checkpoints/last.pt``,
``checkpoints/step-<step>.pt``): the model is built from the run's config exactly as training
built it, then the checkpoint's weights are loaded strictly. Runs trained from a local
``--pretrained`` directory need that directory where the config says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from vlab.config import from_dict
from vlab.errors import ConfigError, VlabError
from vlab.probes.config import ProbeRunConfig
from vlab.probes.tasks import ProbeVocab
from vlab.rundir import RunDir

LAST = "last"


@dataclass(frozen=True)
class ProbeRun:
    """A probe run directory and its parsed config."""

    path: Path
    config: ProbeRunConfig

    @property
    def files(self) -> RunDir:
        return RunDir(self.path)

    @property
    def arch(self) -> str:
        return self.config.model.arch


def open_run(path: str | Path) -> ProbeRun:
    """Parse ``path``'s config.json as a probe run (one-line error if it is not one)."""
    files = RunDir(path)
    if not files.config_path.is_file():
        raise VlabError(f"{path}: not a run directory (no config.json)")
    try:
        config = from_dict(ProbeRunConfig, files.read_config())
    except ConfigError as e:
        raise VlabError(f"{files.config_path}: not a probe run's config ({e})") from None
    return ProbeRun(Path(path), config)


def available_steps(run: ProbeRun) -> list[int]:
    """Every checkpoint step of ``run``: the kept steps and the last one."""
    steps = set(run.files.snapshots())
    if run.files.checkpoint_path.is_file():
        steps.add(last_step(run))
    return sorted(steps)


def resolve_steps(run: ProbeRun, which: str) -> list[int]:
    """The checkpoint steps that ``--checkpoints`` names: ``last``, ``all`` or ``STEP,...``."""
    available = available_steps(run)
    if not available:
        raise VlabError(
            f"{run.path}: no checkpoints to inspect (checkpoints/ is empty: the run has not "
            "reached its first evaluation, or it was trained with nothing kept)"
        )
    if which == LAST:
        return [last_step(run)]
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


def last_step(run: ProbeRun) -> int:
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
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError) as e:
        said = str(e).strip().splitlines()[0][:200]
        raise VlabError(
            f"{run.path}: the checkpoint at step {step} does not fit the model its config "
            f"builds ({said})"
        ) from None
    return model.eval(), vocab


def check_checkpoint(run: ProbeRun, step: int) -> dict:
    """The checkpoint of ``step``, refused (one line) if it was trained under another config
    than config.json holds or holds no weights."""
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
