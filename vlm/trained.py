"""A trained VLM directory, opened for answering: a ``vlab vlm train`` run or a finetune.

``vlab vlm eval`` and ``vlab vlm generate`` take either kind of directory and tell them apart
from their files alone (:func:`trained_kind`):

* a ``vlab vlm train --out RUN`` directory: ``RUN/stage{1,2}/`` (run directories: config.json,
  ``checkpoints/last.pt``) and, for an LM trained from scratch, its BPE in ``RUN/tokenizer/``;
* a ``vlab vlm finetune`` directory (``RUN/finetune/<task>-r<R>-lr<lr>``, or a run of a
  ``vlm-finetune`` sweep): a run directory whose ``config.json`` is a
  :class:`~vlab.vlm.finetune.FinetuneConfig` (``source``, ``task``, ``resolution`` ...).
  Its model is the source's stage-2 model at ``resolution`` (encoders, visual tokens and
  ``max_length`` as :func:`~vlab.vlm.finetune.finetune_setup` makes them for training),
  its weights its own ``checkpoints/last.pt``, its tokenizer the source run's. The source run
  must still be there: its config and tokenizer are read, never written.

Anything else (a missing folder, one stage of a run, a probe run, an empty folder) is a
one-line :class:`~vlab.errors.VlabError` naming the path and what it lacks. Nothing here trains
or writes anything.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vlab.errors import ConfigError, VlabError
from vlab.experiment import experiment, kind_of, stage_of
from vlab.rundir import RunDir

if TYPE_CHECKING:
    from vlab.models.vlm.model import VLM
    from vlab.vlm.config import VLMRunConfig

TRAIN_RUN, FINETUNE_RUN = "vlm", "vlm-finetune"  # their kinds (vlab.experiment.KINDS)


@dataclass
class TrainedVLM:
    """A trained VLM loaded for answering: the model (eval mode, on ``device``) with the last
    checkpoint's weights, its tokenizer and run config (for a finetune: at its resolution, its
    ``stage2`` the finetune's training settings), the stage, and the checkpoint's step.

    ``kind`` is :data:`TRAIN_RUN` or :data:`FINETUNE_RUN`; ``files`` the run directory the
    weights come from (``RUN/stage{N}`` or the finetune directory); ``about`` what a finetune's
    results record of it (source, task, resolution, grid), empty for a train run.
    """

    model: VLM
    tokenizer: Any
    config: VLMRunConfig
    stage: int
    step: int
    device: torch.device
    kind: str = TRAIN_RUN
    files: RunDir | None = None
    about: dict = dataclasses.field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The autocast precision the weights trained in (``auto``, ``fp32``, ``bf16``)."""
        return self.config.train_config(self.stage).precision


def pick_device(name: str) -> torch.device:
    """``--device``: "auto" (CUDA when there is one), else a torch device name, checked as a
    run's device is (:func:`vlab.preflight.check_device`: a typo or a GPU-less machine is a
    one-line error rather than a traceback deep in ``.to``), then resolved as training
    resolves it (:func:`vlab.training.engine.resolve_device`)."""
    from vlab.preflight import check_device
    from vlab.training.engine import resolve_device

    check_device(name, "device")
    return resolve_device(name)


def trained_kind(path: str | os.PathLike) -> str:
    """:data:`TRAIN_RUN` or :data:`FINETUNE_RUN`: the run kind at ``path``
    (:func:`vlab.experiment.kind_of`); a VlabError naming ``path`` when it is neither (a stage
    directory is told to give its run directory)."""
    path = Path(path)
    if not path.is_dir():
        raise VlabError(f"run directory {path} does not exist")
    config = path / "config.json"
    if config.exists() and not config.is_file():
        RunDir(path).read_config()  # a directory where config.json belongs: one line
    try:
        kind = kind_of(path)
        stage = stage_of(path)
    except ValueError as e:  # json's own, for an integer of thousands of digits
        raise VlabError(f"{config} is unreadable ({e})") from None
    if kind in (TRAIN_RUN, FINETUNE_RUN):
        return kind
    if stage is not None:
        raise VlabError(
            f"{path} is stage {stage} of a vlab vlm train run; give the run directory "
            f"{path.parent} (and --stage {stage})"
        )
    if config.exists():
        raise VlabError(
            f"{path} is not a VLM run: its config.json is neither a vlab vlm finetune's nor "
            "a stage's (a probe run?)"
        )
    raise VlabError(
        f"{path} is not a trained VLM: no stage1/ or stage2/ (vlab vlm train --out) and no "
        "config.json (vlab vlm finetune --out)"
    )


def load_trained(
    path: str | os.PathLike,
    stage: int = 2,
    device: str = "auto",
    *,
    changes: dict | None = None,
    step: int | None = None,
) -> TrainedVLM:
    """The VLM at ``path`` (a train run's ``stage``, or a finetune) in the model its config
    describes, with the weights of checkpoint ``step`` (None: the last), on ``device``: its
    experiment's :meth:`~vlab.experiment.Experiment.open`.

    ``changes`` replace run-config fields (``eval_batch_size``, ``max_new_tokens``) and are
    validated as the config's own. Raises VlabError, naming the path, when the directory is
    not a trained VLM, the stage was not trained, the checkpoint or the tokenizer is missing.
    """
    if stage not in (1, 2):
        raise ConfigError("stage", f"must be 1 or 2, got {stage}")
    kind = trained_kind(path)
    return experiment(kind).open(path, step, stage=stage, device=device, changes=changes)


def opened(
    parts: OpenedParts,
    stage: int,
    step: int | None,
    device: str,
    changes: dict | None,
) -> TrainedVLM:
    """A trained VLM from its experiment's parts: ``changes`` applied to the run config, the
    model built (unless the parts hold it), the weights of ``step`` loaded strictly, moved to
    the device (resolved here, once) in eval mode."""
    from vlab.models.vlm.model import build_vlm

    cfg = dataclasses.replace(parts.config, **changes) if changes else parts.config
    dev = pick_device(device)
    model = parts.model or build_vlm(cfg.model, vocab_size=len(parts.tokenizer), seed=0)
    checkpoint = parts.files.weights_at(step)
    parts.files.load_weights(model, checkpoint)
    model.to(dev).eval()
    return TrainedVLM(
        model,
        parts.tokenizer,
        cfg,
        stage,
        int(checkpoint["step"]),
        dev,
        parts.kind,
        parts.files,
        parts.about,
    )


@dataclass
class OpenedParts:
    """What an experiment reads from a trained VLM directory before weights are loaded: the
    run directory holding the checkpoints, the run config (a finetune's at its resolution),
    the tokenizer, the model when the experiment builds it itself (None: built from the
    config), the kind (:data:`TRAIN_RUN`, :data:`FINETUNE_RUN`) and what results record."""

    files: RunDir
    config: VLMRunConfig
    tokenizer: Any
    kind: str
    model: VLM | None = None
    about: dict = dataclasses.field(default_factory=dict)


def _check_checkpoint(files: RunDir) -> None:
    if not files.checkpoint_path.is_file():
        raise VlabError(f"{files.path} has no checkpoint (checkpoints/last.pt) to load")
