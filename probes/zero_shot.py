"""Zero-shot probe runs: a pretrained LM on the probe task as it is, without training.

``train.steps = 0`` makes the engine evaluate the starting model once and keep it as the
step-0 checkpoint (:class:`vlab.training.TrainConfig`), so such a run directory is read by
``vlab inspect`` and the reports like a trained run: the baseline beside trained runs of the
same arm. ``vlab probe run --pretrained DIR --steps 0`` makes one; ``vlab inspect
--pretrained DIR --out OUT`` makes one and inspects it.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlab.config import cli_overrides, deep_merge, from_dict
from vlab.errors import VlabError
from vlab.probes.config import ProbeRunConfig


def with_checkpoint_arch(data: dict) -> dict:
    """``data`` (a probe config as plain data) with ``model.arch`` taken from its
    ``model.pretrained`` directory's config.json when it names no arch, so ``--pretrained DIR``
    alone chooses the arm; a directory no vlab arch saved is left to the config's own check."""
    from vlab.models.backbones import arch_of_checkpoint

    model = data.get("model")
    if not isinstance(model, dict) or "arch" in model:
        return data
    if not isinstance(model.get("pretrained"), str):
        return data
    arch = arch_of_checkpoint(model["pretrained"])
    return data if arch is None else deep_merge(data, {"model": {"arch": arch}})


def zero_shot_config(
    pretrained: str, settings: Sequence[str] = (), device: str | None = None
) -> ProbeRunConfig:
    """The validated config of a zero-shot run of the LM in ``pretrained`` (its arch read from
    the directory), the probe task and the rest set by ``settings`` (``--set`` assignments such
    as ``task.length=16``) over the defaults; ``device`` where the evaluation runs (unless a
    setting says). A setting of ``train.steps`` is refused: the run trains nothing."""
    data = cli_overrides(None, list(settings))
    if "steps" in (data.get("train") or {}):
        raise VlabError(
            "--set train.steps: a zero-shot run trains nothing (train.steps = 0); to train from "
            "the checkpoint use `vlab probe run --pretrained DIR`"
        )
    data = deep_merge(data, {"model": {"pretrained": pretrained}, "train": {"steps": 0}})
    if device is not None and "device" not in data["train"]:
        data = deep_merge(data, {"train": {"device": device}})
    return from_dict(ProbeRunConfig, with_checkpoint_arch(data))
