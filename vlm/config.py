"""The run config of a VLM experiment (``vlab vlm train`` writes it, ``vlab vlm eval`` reads it).

One dataclass for everything a run needs (model, data, both stages' training settings, the
held-out generation settings) plus the named presets. It lives apart from ``train`` so that
commands reading a finished run (evaluation, analysis) load its ``config.json`` without
importing the training code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vlab.config import deep_merge, from_dict
from vlab.errors import ConfigError
from vlab.models.vlm.data.prepared import MixtureConfig
from vlab.models.vlm.data.run_data import VLMDataConfig
from vlab.models.vlm.data.sources import SourceConfig
from vlab.models.vlm.parts import VLMConfig
from vlab.preflight import MAX_NEW_TOKENS, check_at_most
from vlab.training.config import TrainConfig
from vlab.vlm.presets import PRESETS

DATA_ENV = "VLAB_DATA"  # the paper's datasets, where a config does not name them


@dataclass(frozen=True)
class BenchmarkConfig:
    """The benchmark suite a run is scored on once stage 2 is done, one phase per benchmark.

    Why part of the run: a paper's comparison is its benchmark tables, so a run that ends
    before them is not finished; each benchmark is a phase of its own
    (``RUN/eval/<benchmark>/``), so a killed evaluation resumes at the benchmark it was on and
    a finished one is never scored again.

    ``suite``: whose benchmarks (``shakeup``, ``mambavlm``: the sets of
    :func:`~vlab.models.vlm.data.paper_data.paper_benchmarks`); None: no suite, the run ends
    with its held-out evaluation. ``data_root``: the folder holding the suite's datasets in
    the paper's layout; None reads ``VLAB_DATA`` at construction, and the folder used is what
    config.json then holds. ``names``: the benchmarks to score, in order; empty means every
    benchmark of the suite, written out at construction. ``limit``: at most N examples per
    benchmark (a smoke run; None: all of them).
    """

    suite: str | None = None
    data_root: str | None = None
    names: tuple[str, ...] = ()
    limit: int | None = None

    def __post_init__(self) -> None:
        from vlab.models.vlm.data.paper_data import PAPERS

        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", f"must be >= 1, got {self.limit}")
        if self.suite is None:
            if self.names:
                raise ConfigError(
                    "names",
                    f"no suite to take them from: set benchmarks.suite ({', '.join(PAPERS)})",
                )
            return
        if self.suite not in PAPERS:
            raise ConfigError("suite", f"{self.suite!r} is not one of {', '.join(PAPERS)}")
        root = self.data_root or os.environ.get(DATA_ENV)
        if not root:
            raise ConfigError(
                "data_root",
                f"the {self.suite} suite's datasets are nowhere: give benchmarks.data_root "
                f"(vlab vlm train --data-root DIR) or set {DATA_ENV}",
            )
        object.__setattr__(self, "data_root", os.path.abspath(root))
        known = list(self._specs())
        for name in self.names:
            if name not in known:
                raise ConfigError(
                    "names",
                    f"{name!r} is not a benchmark of the {self.suite} suite ({', '.join(known)})",
                )
        if len(set(self.names)) != len(self.names):
            twice = next(n for n in self.names if self.names.count(n) > 1)
            raise ConfigError("names", f"{twice!r} is named twice")
        if not self.names:
            object.__setattr__(self, "names", tuple(known))

    def _specs(self) -> dict[str, dict]:
        """The suite's source specs under ``data_root``, by benchmark name."""
        from vlab.models.vlm.data.paper_data import paper_benchmarks

        specs = paper_benchmarks(self.data_root or "", self.suite or "shakeup")
        return {s.get("name") or s["reader"]: s for s in specs}

    def mixture(self) -> MixtureConfig:
        """The benchmarks of ``names`` as one mixture of held-out sources (one source per
        benchmark, unpacked, ``limit`` examples each); no sources without a suite."""
        if self.suite is None:
            return MixtureConfig(sources=(), pack=False)
        specs = self._specs()
        sources = []
        for name in self.names:
            spec = specs[name] if self.limit is None else {**specs[name], "limit": self.limit}
            sources.append(from_dict(SourceConfig, spec, prefix=f"benchmarks.{name}"))
        return MixtureConfig(sources=tuple(sources), pack=False)

    def check_files(self) -> None:
        """Every benchmark the run asks for has its annotation files and image folders under
        ``data_root``, else one ConfigError naming each benchmark with what it lacks (before
        any work: a sweep learns it when expanded, not after days of training)."""
        lacking = [
            f"{s.label} ({', '.join(s.describe_missing())})"
            for s in self.mixture().sources
            if s.missing()
        ]
        if lacking:
            raise ConfigError(
                "benchmarks.data_root",
                f"{self.data_root} lacks {len(lacking)} benchmark(s) the run asks for: "
                f"{'; '.join(lacking)}; put them there, or leave them out of benchmarks.names",
            )


@dataclass(frozen=True)
class VLMRunConfig:
    """Everything a ``vlab vlm train`` run needs: model, data, both stages' settings and the
    benchmark suite its stage 2 is scored on (:class:`BenchmarkConfig`; none by default)."""

    model: VLMConfig = field(default_factory=VLMConfig)
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    stage1: TrainConfig = field(default_factory=TrainConfig)
    stage2: TrainConfig = field(default_factory=TrainConfig)
    benchmarks: BenchmarkConfig = field(default_factory=BenchmarkConfig)
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
