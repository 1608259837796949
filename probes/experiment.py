"""The retrieval probe as an experiment (:class:`vlab.experiment.Experiment`): text and image.

A probe run is one run directory (config.json, status.json, metrics.jsonl, checkpoints/):
training evaluates held-out accuracy at every evaluation, so a run is done when its training
is, and its status is its status.json. The image probe (``task.modality = "image"``) is the
same experiment with a VLM on the task; it records its own kind so ``vlab inspect`` looks
inside its LM. Nothing here imports torch until a run is trained, built or opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from vlab.config import from_dict, to_dict
from vlab.errors import ConfigError, VlabError
from vlab.experiment import Experiment
from vlab.probes.config import ProbeRunConfig, resolve
from vlab.rundir import RunDir

if TYPE_CHECKING:
    from vlab.probes.build import TokenProbe
    from vlab.probes.image_model import ImageProbe

# How an axis value shows in a run name: a label prefix per dotted key ("" = value alone).
NAME_LABELS = {
    "model.arch": "",
    "task.variant": "",
    "task.length": "L",
    "task.target_mode": "",
    "train.lr": "lr",
    "train.seed": "s",
    "task.seed": "data",
    "model.init_seed": "init",
    "model.init_scheme": "",
    "model.preset": "",
    "task.modality": "",
    "train.steps": "steps",
}
ANALYSES = ("logit_lens", "attention", "state_probe", "patching")


class ProbeExperiment(Experiment):
    """A probe run: a backbone trained on the retrieval probe (:mod:`vlab.probes.trainer`)."""

    kind: ClassVar[str] = "probe"
    config_type: ClassVar[str] = "vlab.probes.config:ProbeRunConfig"
    arch_key: ClassVar[str] = "model.arch"
    name_labels: ClassVar[dict[str, str]] = NAME_LABELS
    analyses: ClassVar[tuple[str, ...]] = ANALYSES
    report_template: ClassVar[str] = "probe_report"

    def resolve(self, config: dict) -> dict:
        return to_dict(resolve(from_dict(ProbeRunConfig, config)))

    def run(
        self,
        config: dict,
        out: str | os.PathLike,
        *,
        progress: bool = False,
        should_stop: Callable[[], bool] | None = None,
        log: Callable[[str], Any] = print,
    ) -> dict:
        from vlab.probes.trainer import run_probe

        cfg = from_dict(ProbeRunConfig, config)
        run_probe(cfg, out, progress=progress, should_stop=should_stop, log=log)
        return self.status(out, config)

    def status(self, path: str | os.PathLike, config: dict | None = None) -> dict:
        return RunDir(path).read_status() or {}

    def config_of(self, path: str | os.PathLike) -> ProbeRunConfig:
        """The run's config.json as a :class:`ProbeRunConfig` (one-line error if the directory
        holds no probe run); :meth:`build` resolves it."""
        files = RunDir(path)
        if not files.config_path.is_file():
            raise VlabError(f"{path}: not a run directory (no config.json)")
        try:
            return from_dict(ProbeRunConfig, files.read_config())
        except ConfigError as e:
            raise VlabError(f"{files.config_path}: not a probe run's config ({e})") from None

    def build(self, config: ProbeRunConfig) -> TokenProbe | ImageProbe:
        """The model and data (:func:`vlab.probes.build.build_probe`)."""
        from vlab.probes.build import build_probe

        return build_probe(resolve(config))

    def open(
        self, path: str | os.PathLike, step: int | None = None, **options: Any
    ) -> TokenProbe | ImageProbe:
        """The run's model (eval mode, CPU) with the weights of ``step``, its vocabulary and
        data, built from config.json as training built them. A checkpoint trained under
        another config, or whose weights do not fit, is refused in one line."""
        files = RunDir(path)
        probe = self.build(self.config_of(path))
        files.load_weights(probe.model, files.weights_at(step))
        probe.model.eval()
        return probe


class ImageProbeExperiment(ProbeExperiment):
    """A probe run whose context is an image: a VLM trained on the probe
    (:mod:`vlab.probes.image_model`); ``vlab inspect`` looks inside its LM."""

    kind: ClassVar[str] = "image-probe"

    def resolve(self, config: dict) -> dict:
        resolved = super().resolve(config)
        if resolved["task"]["modality"] != "image":
            raise ConfigError("task.modality", "an image-probe run's task is an image; say image")
        return resolved
