"""A trained VLM directory, opened for answering: a ``vlab vlm train`` run or a finetune.

``vlab vlm eval`` and ``vlab vlm generate`` take either kind of directory and tell them apart
from their files alone (:func:`trained_kind`):

* a ``vlab vlm train --out RUN`` directory: ``RUN/stage{1,2}/`` (run directories: config.json,
  ``checkpoints/last.pt``) and, for an LM trained from scratch, its BPE in ``RUN/tokenizer/``;
* a ``vlab vlm finetune`` directory (``RUN/finetune/<task>-r<R>-lr<lr>``, or a run of a
  ``vlm-finetune`` sweep): a run directory whose ``config.json`` is a
  :class:`~vlab.models.vlm.finetune.FinetuneConfig` (``source``, ``task``, ``resolution`` ...).
  Its model is the source's stage-2 model at ``resolution`` (encoders, visual tokens and
  ``max_length`` as :func:`~vlab.models.vlm.finetune.finetune_setup` makes them for training),
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

from vlab.config import from_dict
from vlab.errors import ConfigError, VlabError
from vlab.rundir import RunDir

if TYPE_CHECKING:
    from vlab.models.vlm.config import VLMRunConfig
    from vlab.models.vlm.model import VLM

TRAIN_RUN, FINETUNE_RUN = "train", "finetune"


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
    """``--device``: "auto" (CUDA when there is one), else a torch device name, checked here so
    a typo or a GPU-less machine is a one-line error rather than a traceback deep in ``.to``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError("device", f"{name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{name!r} asked for, but CUDA is not available here")
    return dev


def trained_kind(path: str | os.PathLike) -> str:
    """:data:`TRAIN_RUN` or :data:`FINETUNE_RUN`, from the files at ``path``; a VlabError
    naming ``path`` when it is neither."""
    from vlab.models.vlm.finetune import FinetuneConfig

    path = Path(path)
    if not path.is_dir():
        raise VlabError(f"run directory {path} does not exist")
    config = path / "config.json"
    if config.exists():  # a directory there is damage: read_config says so, in one line
        try:
            data = RunDir(path).read_config()
        except ValueError as e:  # json's own, for an integer of thousands of digits
            raise VlabError(f"{config} is unreadable ({e})") from None
        fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
        if {"source", "resolution"} <= set(data) <= fields:
            return FINETUNE_RUN
        if data.get("stage") in (1, 2):
            raise VlabError(
                f"{path} is stage {data['stage']} of a vlab vlm train run; give the run "
                f"directory {path.parent} (and --stage {data['stage']})"
            )
        raise VlabError(
            f"{path} is not a VLM run: its config.json is neither a vlab vlm finetune's nor "
            "a stage's (a probe run?)"
        )
    if any((path / f"stage{s}" / "config.json").is_file() for s in (1, 2)):
        return TRAIN_RUN
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
) -> TrainedVLM:
    """The last checkpoint of the VLM at ``path`` (a train run's ``stage``, or a finetune) in
    the model its config describes, on ``device``.

    ``changes`` replace run-config fields (``eval_batch_size``, ``max_new_tokens``) and are
    validated as the config's own. Raises VlabError, naming the path, when the directory is
    not a trained VLM, the stage was not trained, the checkpoint or the tokenizer is missing.
    """
    from vlab.models.vlm.model import build_vlm

    if stage not in (1, 2):
        raise ConfigError("stage", f"must be 1 or 2, got {stage}")
    path = Path(path)
    kind = trained_kind(path)
    if kind == FINETUNE_RUN:
        files, cfg, tok, model, about = _finetune_parts(path, stage)
    else:
        files, cfg, tok = _train_parts(path, stage)
        model, about = None, {}
    if changes:
        cfg = dataclasses.replace(cfg, **changes)
    dev = pick_device(device)
    if model is None:
        model = build_vlm(cfg.model, vocab_size=len(tok), seed=0)
    ckpt = files.load_checkpoint()
    model.load_state_dict(ckpt["model"])
    model.to(dev).eval()
    return TrainedVLM(model, tok, cfg, stage, int(ckpt["step"]), dev, kind, files, about)


def _train_parts(path: Path, stage: int) -> tuple[RunDir, VLMRunConfig, Any]:
    """A train run's stage: its run directory, run config and the run's tokenizer."""
    from vlab.models.vlm.config import VLMRunConfig
    from vlab.models.vlm.tokenizer import run_tokenizer

    files = RunDir(path / f"stage{stage}")
    if not files.exists():
        raise VlabError(f"{files.path} is not a run directory: stage {stage} was not trained")
    stored = files.read_config()
    stored.pop("stage", None)
    try:
        cfg = from_dict(VLMRunConfig, stored)
    except ConfigError as e:
        raise VlabError(f"{files.config_path} does not load: {e}") from None
    _check_checkpoint(files)
    own_tokenizer = cfg.data.tokenizer is None and cfg.model.lm.pretrained is None
    if own_tokenizer and not (path / "tokenizer" / "tokenizer.json").is_file():
        gone = path / "tokenizer"
        raise VlabError(f"{gone} holds no tokenizer.json: the run's tokenizer is gone")
    return files, cfg, run_tokenizer(cfg, path)


def _finetune_parts(path: Path, stage: int) -> tuple[RunDir, VLMRunConfig, Any, VLM, dict]:
    """A finetune: its run directory, its run config at its resolution, the source's
    tokenizer, its VLM (built untrained: the weights are loaded next) and what its results
    record of it (source, task, resolution, grid)."""
    from vlab.models.vlm.finetune import FinetuneConfig, finetune_setup, source_tokenizer

    if stage != 2:
        raise VlabError(
            f"{path} is a vlab vlm finetune directory (one model, finetuned from a stage 2); "
            f"drop --stage {stage}"
        )
    files = RunDir(path)
    stored = files.read_config()
    try:
        cfg = from_dict(FinetuneConfig, stored)
    except ConfigError as e:  # its source run moved or gone: the message says which
        raise VlabError(f"{path} is a finetune whose config does not load: {e}") from None
    _check_checkpoint(files)
    tok = source_tokenizer(cfg)
    run_cfg, model = finetune_setup(cfg, tok)
    about = {"source": cfg.source, "task": cfg.task, "resolution": cfg.resolution}
    return files, run_cfg, tok, model, {**about, "grid": list(model.grid)}


def _check_checkpoint(files: RunDir) -> None:
    if not files.checkpoint_path.is_file():
        raise VlabError(f"{files.path} has no checkpoint (checkpoints/last.pt) to load")
