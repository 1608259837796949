"""What an experiment is, the one registry of run kinds, and the kind each run directory records.

An experiment (the probe, the image probe, the VLM, the VLM finetune) is everything vlab knows
about one kind of run, in its own package: its config type, how a sweep's config is resolved,
how a run is trained *and* evaluated (so a run is done the same way whoever started it: ``vlab
probe run`` / ``vlab vlm train`` or a sweep), its status read from files alone, how its model is
built from a config and reopened from a run directory at a step, what a sweep keys per-arch
settings by and labels run names with, the analyses ``vlab inspect`` runs on it and the report
template that renders a sweep of it.

:data:`KINDS` maps each kind to the class that implements :class:`Experiment`, as a dotted path:
core never imports an experiment (the layering: core <- models <- probes <- vlm <- slurm <-
analysis), and :func:`experiment` imports one only when it is asked for. Experiment modules
import torch inside the methods that need it, so resolving a spec, listing a sweep's status or
choosing a report template stays torch-free.

Every run directory records its kind when it is claimed (``run.json``, :func:`record_kind`);
directories written before vlab recorded it are recognised by :func:`legacy_kind` from their
files. Adding an experiment is one module in its own package, one line in :data:`KINDS` and one
notebook template.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vlab.config import setting
from vlab.errors import ConfigError, VlabError
from vlab.fileio import atomic_write_json
from vlab.records import read_json_file, read_record

KIND_FILE = "run.json"

# kind -> "module:Class" implementing Experiment (imported on first use).
KINDS: dict[str, str] = {
    "probe": "vlab.probes.experiment:ProbeExperiment",
    "image-probe": "vlab.probes.experiment:ImageProbeExperiment",
    "vlm": "vlab.vlm.experiment:VLMExperiment",
    "vlm-finetune": "vlab.vlm.finetune_experiment:FinetuneExperiment",
}


class Experiment:
    """One kind of run. Subclasses set the class attributes and implement the methods.

    ``config_type``: ``"module:Class"`` of the run
    config (a dataclass validated on construction, importable without torch); ``arch_key``:
    the dotted config key of the run's architecture (what a sweep's ``per_arch`` is keyed by);
    ``name_labels``: dotted key -> short label naming runs by that setting; ``analyses``: what
    ``vlab inspect`` can run on it (empty: not inspectable); ``report_template``: the notebook
    a sweep of it is rendered with; ``phased``: a run goes through phases (training stages,
    then its evaluation), which its status names in ``stage`` with the evaluated ``benchmarks``;
    ``rank_sections``: the training sections of its config whose runs may be trained by
    several processes together (a sweep's ``--gpus-per-node``; empty: one process a run).
    """

    kind: ClassVar[str]
    config_type: ClassVar[str]
    arch_key: ClassVar[str]
    name_labels: ClassVar[dict[str, str]] = {}
    analyses: ClassVar[tuple[str, ...]] = ()
    report_template: ClassVar[str]
    phased: ClassVar[bool] = False
    rank_sections: ClassVar[tuple[str, ...]] = ()

    def config_class(self) -> type:
        module, name = self.config_type.split(":")
        return getattr(importlib.import_module(module), name)

    def arch_of(self, config: dict) -> Any:
        """The architecture a run's config (not yet resolved) selects, or None when it does
        not say (the config class's default applies)."""
        return setting(config, self.arch_key)

    def check_ranks(self, config: dict, ranks: int) -> None:
        """Refuse, in one line before anything is submitted, a run of (resolved) ``config``
        trained by ``ranks`` processes together that this kind cannot use: one whose kind
        trains in one process (no ``rank_sections``), or whose global batch does not split
        into ``ranks`` x ``grad_accum`` equal slices in one of its ``rank_sections`` (the
        training sections of its config, each a :class:`~vlab.training.config.TrainConfig`)."""
        if ranks <= 1:
            return
        if not self.rank_sections:
            raise VlabError(
                f"{self.kind} runs train in one process each: a sweep of them spreads its runs "
                f"over the jobs, not one run over {ranks} processes (leave out --nodes, "
                "--tasks-per-node and --gpus-per-node)"
            )
        for section in self.rank_sections:
            batch = setting(config, f"{section}.batch_size")
            accum = setting(config, f"{section}.grad_accum") or 1
            if isinstance(batch, int) and batch % (ranks * accum):
                raise ConfigError(
                    f"{section}.batch_size",
                    f"{batch} does not split into {ranks} ranks x {accum} micro-batches "
                    f"(give a multiple of {ranks * accum}, or fewer processes per run)",
                )

    def resolve(self, config: dict) -> dict:
        """The run config with every default written out (what config.json holds), validated
        (a one-line :class:`~vlab.errors.ConfigError` naming the field) and its input files
        checked, before anything is submitted."""
        raise NotImplementedError

    def run(
        self,
        config: dict,
        out: str | os.PathLike,
        *,
        progress: bool = False,
        should_stop: Callable[[], bool] | None = None,
        log: Callable[[str], Any] = print,
    ) -> dict:
        """Train and evaluate a run of ``config`` into ``out`` (resuming, or nothing to do when
        it is done); returns :meth:`status`."""
        raise NotImplementedError

    def status(self, path: str | os.PathLike, config: dict | None = None) -> dict:
        """Where the run at ``path`` stands, from its files alone (``{}`` before it started):
        ``state`` (running, done, failed, interrupted), ``reason``, ``step``, ``steps``,
        ``accuracy``, and for a run in phases its ``stage`` and evaluated ``benchmarks``.
        ``config``: the run's config when the caller has it (a sweep's), else config.json."""
        raise NotImplementedError

    def build(self, config: Any) -> Any:
        """The model a run of ``config`` trains, freshly initialised, as training builds it."""
        raise NotImplementedError

    def open(self, path: str | os.PathLike, step: int | None = None, **options: Any) -> Any:
        """The trained run at ``path`` with the weights of checkpoint ``step`` (None: the last),
        built by :meth:`build` from the run's own config: what ``vlab inspect``, ``vlab vlm
        eval`` and ``vlab vlm generate`` read."""
        raise NotImplementedError


def experiment(kind: str) -> Experiment:
    """The experiment of run kind ``kind`` (one of :data:`KINDS`)."""
    if kind not in _LOADED:
        if kind not in KINDS:
            raise VlabError(f"unknown run kind {kind!r} (known: {', '.join(KINDS)})")
        module, name = KINDS[kind].split(":")
        _LOADED[kind] = getattr(importlib.import_module(module), name)()
    return _LOADED[kind]


_LOADED: dict[str, Experiment] = {}


# the kind a run directory records -------------------------------------------------------------


@dataclass(frozen=True)
class RunKind:
    """``run.json``: what kind of run the directory holds (one of :data:`KINDS`), written once
    when the run is first claimed; unknown keys are kept (a later vlab may add some)."""

    kind: str
    extra: dict[str, Any] = field(default_factory=dict)


def record_kind(path: str | os.PathLike, kind: str) -> None:
    """Write ``path/run.json`` naming ``kind``, unless it is there already. A directory that
    holds a run of another kind (recorded, or told by its files: :func:`kind_of`) is refused
    in one line: nothing of it is touched."""
    if kind not in KINDS:
        raise VlabError(f"unknown run kind {kind!r} (known: {', '.join(KINDS)})")
    recorded = read_kind(path)
    found = recorded or legacy_kind(path)
    if found is not None and found != kind:
        where = KIND_FILE if recorded else "files"
        raise VlabError(
            f"{path} holds a {found} run (its {where} say so); give another output directory "
            f"for this {kind} run"
        )
    if recorded is None:
        Path(path).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(path) / KIND_FILE, {"kind": kind})


def read_kind(path: str | os.PathLike) -> str | None:
    """The kind ``path/run.json`` records, or None when there is none; a damaged run.json is a
    :class:`~vlab.records.DamagedFile` naming it."""
    file = Path(path) / KIND_FILE
    if not file.exists() and not file.is_symlink():
        return None
    fix = "delete it: vlab then tells the run's kind from its other files"
    record = read_record(RunKind, file, fix)
    if record.kind not in KINDS:
        from vlab.records import DamagedFile

        raise DamagedFile(file, "kind", f"{record.kind!r} is not one of {', '.join(KINDS)}", fix)
    return record.kind


def kind_of(path: str | os.PathLike) -> str | None:
    """The kind of the run at ``path``: what its run.json records, else what its files say
    (:func:`legacy_kind`); None when ``path`` holds no run."""
    return read_kind(path) or legacy_kind(path)


def legacy_kind(path: str | os.PathLike) -> str | None:
    """The kind of a run directory written before vlab recorded kinds, from its files: a
    ``vlab vlm train`` run holds ``stage1/`` or ``stage2/``; a finetune's config.json names
    its ``source`` run and ``resolution``; a probe's has ``task`` and ``model`` (an image probe:
    ``task.modality`` is ``image``). None otherwise (a VLM stage directory included: it is a
    part of a ``vlm`` run, see :func:`stage_of`)."""
    path = Path(path)
    if any((path / f"stage{s}" / "config.json").is_file() for s in (1, 2)):
        return "vlm"
    config = path / "config.json"
    if not config.is_file():
        return None
    data = read_json_file(config, "delete the run directory or restore its config.json")
    if not isinstance(data, dict):
        return None
    if "source" in data and "resolution" in data:
        return "vlm-finetune"
    if "stage1" in data and "stage2" in data:
        return None
    task = data.get("task")
    if isinstance(task, dict) and isinstance(data.get("model"), dict):
        return "image-probe" if task.get("modality") == "image" else "probe"
    return None


def stage_of(path: str | os.PathLike) -> int | None:
    """The stage (1 or 2) when ``path`` is a stage directory of a ``vlab vlm train`` run, else
    None (:func:`stage_in` of its config.json)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    return stage_in(read_json_file(config, "delete the run directory or restore its config.json"))


def stage_in(config: Any) -> int | None:
    """The stage (1 or 2) a config.json already read belongs to when it is a ``vlab vlm train``
    stage's (it holds both stages' settings and the ``stage`` it trained), else None."""
    if isinstance(config, dict) and {"stage1", "stage2"} <= set(config):
        stage = config.get("stage")
        return stage if stage in (1, 2) else None
    return None
