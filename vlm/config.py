"""The run config of a VLM experiment (``vlab vlm train`` writes it, ``vlab vlm eval`` reads it).

One dataclass for everything a run needs (model, data, both stages' training settings, the
held-out generation settings) plus the named presets. It lives apart from ``train`` so that
commands reading a finished run (evaluation, analysis) load its ``config.json`` without
importing the training code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlab.config import deep_merge, from_dict
from vlab.errors import ConfigError
from vlab.models.vlm.data.run_data import VLMDataConfig
from vlab.models.vlm.parts import VLMConfig
from vlab.preflight import MAX_NEW_TOKENS, check_at_most
from vlab.training.config import TrainConfig
from vlab.vlm.presets import PRESETS


@dataclass(frozen=True)
class VLMRunConfig:
    """Everything a ``vlab vlm train`` run needs: model, data and both stages' settings."""

    model: VLMConfig = field(default_factory=VLMConfig)
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    stage1: TrainConfig = field(default_factory=TrainConfig)
    stage2: TrainConfig = field(default_factory=TrainConfig)
    eval_batch_size: int = 32
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        if self.eval_batch_size < 1:
            raise ConfigError("eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check_at_most(self.max_new_tokens, MAX_NEW_TOKENS, "max_new_tokens", "tokens")

    def train_config(self, stage: int) -> TrainConfig:
        """The training settings of ``stage`` (1 or 2)."""
        if stage not in (1, 2):
            raise ConfigError("stage", f"must be 1 or 2, got {stage}")
        return self.stage1 if stage == 1 else self.stage2


def preset_config(name: str, arch: str | None = None, overrides: dict | None = None) -> dict:
    """The nested config dict of a preset, with the LM architecture and overrides applied."""
    if name not in PRESETS:
        raise ConfigError("preset", f"{name!r} is not a VLM preset ({', '.join(PRESETS)})")
    data = PRESETS[name]
    if arch is not None:
        data = deep_merge(data, {"model": {"lm": {"arch": arch}}})
    return deep_merge(data, overrides or {})


def config_from(preset: str | None, arch: str | None, overrides: dict) -> VLMRunConfig:
    """A validated run config from a preset name (or none), an arch and nested overrides."""
    if preset:
        data = preset_config(preset, arch, overrides)
    else:
        data = deep_merge({"model": {"lm": {"arch": arch}}} if arch else {}, overrides)
    return from_dict(VLMRunConfig, data)


def stage_config(stored: dict) -> VLMRunConfig:
    """The run config a ``vlab vlm train`` stage's config.json holds (both stages' settings,
    plus the ``stage`` it trained, dropped here); a ConfigError from the config's own checks,
    for the caller to say which file and what it was reading."""
    return from_dict(VLMRunConfig, {k: v for k, v in stored.items() if k != "stage"})
