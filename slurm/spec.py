"""Sweeps declared as code: a base config plus axes that expand to a grid of named runs.

A spec is a Python file that defines ``SPEC`` (a :class:`SweepSpec`) or ``def sweep() ->
SweepSpec``, or a JSON / YAML file with the same fields. Built-in specs live in
``vlab.slurm.specs`` and are addressed by name (``cpu-small``, ``paper-grounding``); anything
else by path.

Expansion: every combination of the ``axes`` values (a grid, in the order the axes are
written), crossed with each entry of ``runs`` (explicit override sets for non-grid cases).
Each run gets a readable name from its axis values (``pythia-suffix-L8-lr0.002``) and an id,
the hash of its fully resolved config, so a changed config is never mistaken for a finished
run. ``per_arch`` then gives each architecture its own settings (a pretrained checkpoint and
tokenizer of that arch), applied to every run of the arch. All of it is validated before
anything is submitted.

Kinds: ``probe`` runs are :class:`~vlab.probes.config.ProbeRunConfig` s (arch at
``model.arch``); ``vlm`` runs are :class:`~vlab.vlm.config.VLMRunConfig` s (arch at
``model.lm.arch``) whose base may name a VLM preset (``base="tiny-shapes"`` or a ``preset``
key), trained stage 1, stage 2, then evaluated (:mod:`vlab.vlm.experiment`); ``vlm-finetune`` runs
are :class:`~vlab.vlm.finetune.FinetuneConfig` s (arch at ``arch``, the source
stage-2 run at ``source``), finetuned on one task at one resolution, then evaluated
(:mod:`vlab.vlm.finetune_experiment`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from vlab.config import deep_merge, nest
from vlab.errors import ConfigError, VlabError
from vlab.experiment import KINDS, experiment
from vlab.records import plain_name

SPECS_DIR = Path(__file__).parent / "specs"

# The most runs one spec may expand to: a grid is checked against it before it is expanded, so
# a spec with a mistaken axis (a range of a million values) is refused at once, not after
# minutes of resolving configs and a sweep.json of gigabytes.
MAX_RUNS = 10_000


@dataclass
class SweepSpec:
    """A named set of runs: ``base`` config, ``axes`` to grid over, explicit ``runs``.

    ``base`` and the entries of ``runs`` are nested dicts or dotted keys
    (``{"train.lr": 1e-3}``); ``axes`` maps dotted keys to non-empty lists of values.
    ``kind`` is what each run trains: ``probe`` (a probe run), ``vlm`` (both VLM stages, then
    the held-out evaluation) or ``vlm-finetune`` (a stage-2 VLM finetuned on one task at one
    resolution, then evaluated); a ``vlm`` base may be a preset name (``"tiny-shapes"``, the same
    as ``{"preset": "tiny-shapes"}``). ``name_keys`` picks the dotted keys (in order) whose
    values name a run; None names it by all of its overrides. Use it when a run's overrides
    carry settings that follow from the named ones (an arm's recipe).

    ``per_arch`` maps an architecture to settings for its runs only, e.g. each arm's own
    checkpoint: ``{"pythia": {"model.pretrained": "/ckpt/pythia-160m"}, "mamba": {...}}``
    (VLM runs: ``model.lm.pretrained`` and ``data.tokenizer``). They go over ``base`` and
    under the run's own axis values and ``runs`` entries, and do not name runs.

    ``slurm`` holds the spec's SLURM resources for each run's job, as ``vlab sweep submit``'s
    flags name them (:class:`~vlab.slurm.executors.SlurmOptions`): ``{"gpus_per_node": 4}``
    trains each run on 4 GPUs of one node as the paper did. Flags given on the command line
    win; the local and debug executors run each run in one process and ignore them.
    """

    name: str
    base: dict = field(default_factory=dict)
    axes: dict[str, list] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    kind: str = "probe"
    description: str = ""
    name_keys: list[str] | None = None
    per_arch: dict[str, dict] = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.base, str):  # a VLM preset by name (validated by expand)
            self.base = {"preset": self.base}


@dataclass(frozen=True)
class RunSpec:
    """One expanded run: its name, config id and fully resolved config (a nested dict)."""

    name: str
    id: str
    config: dict
    overrides: dict


def config_id(config: dict) -> str:
    """Stable short hash of a resolved config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _label(kind: str, key: str, value: Any) -> str:
    """How ``key = value`` shows in a run name: the experiment's label for the key (its
    :attr:`~vlab.experiment.Experiment.name_labels`), else the key's last part, then the
    value."""
    prefix = experiment(kind).name_labels.get(key, key.rsplit(".", 1)[-1])
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{prefix}{text}".replace("/", "_").replace(" ", "")


def environment(spec_name: str, needed: dict[str, str]) -> dict[str, str]:
    """The environment variables a built-in spec reads its paths from (name -> what it holds),
    or one line naming every one that is unset and what it should hold: a spec for somebody's
    cluster refuses to load rather than train on nothing."""
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        what = "; ".join(f"{name}: {needed[name]}" for name in missing)
        raise VlabError(f"sweep spec {spec_name}: set {' and '.join(missing)} ({what})")
    return {name: os.environ[name] for name in needed}


def count_runs(spec: SweepSpec) -> int:
    """How many runs ``expand`` makes, without resolving their configs: a listing of specs
    stays light (resolving a VLM config imports torch). The spec's shape is checked first
    (:func:`check_spec`), its size is not."""
    check_spec(spec, bounded=False)
    grid = 1
    for values in spec.axes.values():
        grid *= len(values)
    return grid * max(1, len(spec.runs))


def check_spec(spec: SweepSpec, *, bounded: bool = True) -> None:
    """The spec's shape, field by field, before anything is expanded: a spec file is the
    user's (JSON, YAML or Python), and a wrong type in it must be one line naming the field,
    not a traceback from deep in the expansion. ``bounded``: also refuse a spec of more than
    :data:`MAX_RUNS` runs, counted without expanding it."""
    if not isinstance(spec.name, str) or not spec.name or "/" in spec.name:
        raise VlabError(
            f"sweep spec: name must be a non-empty string without '/', got {_short(spec.name)}"
        )

    def bad(field: str, problem: str) -> VlabError:
        return VlabError(f"sweep spec {spec.name}: field '{field}': {problem}")

    if not isinstance(spec.kind, str) or spec.kind not in KINDS:
        raise VlabError(
            f"sweep spec {spec.name}: unknown kind {_short(spec.kind)} ({', '.join(KINDS)})"
        )
    if not isinstance(spec.description, str):
        raise bad("description", f"expected a string, got {_short(spec.description)}")
    if not isinstance(spec.base, dict):
        raise VlabError(
            f"sweep spec {spec.name}: base must be a mapping of settings"
            + (" or a VLM preset name" if spec.kind == "vlm" else "")
            + f", got {_short(spec.base)}"
        )
    _check_settings(spec.base, "base", bad)
    if not isinstance(spec.axes, dict):
        raise bad("axes", f"must map dotted keys to lists of values, got {_short(spec.axes)}")
    for key, values in spec.axes.items():
        if not isinstance(key, str) or not key:
            raise bad("axes", f"axis names are dotted keys (train.lr), got {_short(key)}")
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise VlabError(
                f"sweep spec {spec.name}: axis '{key}' is empty; give it a list of values"
                if isinstance(values, (list, tuple))
                else f"sweep spec {spec.name}: field 'axes.{key}': expected a list of values, "
                f"got {_short(values)}"
            )
    if not isinstance(spec.runs, (list, tuple)):
        raise bad("runs", f"expected a list of run settings, got {_short(spec.runs)}")
    for i, extra in enumerate(spec.runs):
        if not isinstance(extra, dict):
            raise bad(f"runs[{i}]", f"expected a mapping of settings, got {_short(extra)}")
        _check_settings(extra, f"runs[{i}]", bad)
    if spec.name_keys is not None and (
        not isinstance(spec.name_keys, (list, tuple))
        or not all(isinstance(k, str) for k in spec.name_keys)
    ):
        raise VlabError(
            f"sweep spec {spec.name}: name_keys must be a list of dotted keys, "
            f"got {_short(spec.name_keys)}"
        )
    if not isinstance(spec.per_arch, dict):
        raise VlabError(
            f"sweep spec {spec.name}: per_arch must map architectures to settings, "
            f"got {_short(spec.per_arch)}"
        )
    for arch, settings in spec.per_arch.items():
        if isinstance(settings, dict):  # _per_arch names any other type
            _check_settings(settings, f"per_arch.{arch}", bad)
    _check_slurm(spec)
    if bounded:
        size = 1
        for values in spec.axes.values():
            size *= len(values)
        size *= max(1, len(spec.runs))
        if size > MAX_RUNS:
            shape = " x ".join(str(len(v)) for v in spec.axes.values()) or "1"
            raise VlabError(
                f"sweep spec {spec.name}: {size:,} runs ({shape} axis values"
                + (f" x {len(spec.runs)} runs" if len(spec.runs) > 1 else "")
                + f") is more than the {MAX_RUNS:,} one sweep may hold; split it into "
                "several specs or shorten an axis"
            )


def _check_settings(settings: dict, field: str, bad) -> None:
    """Settings (``base``, a ``runs`` entry, a ``per_arch`` entry) are nested mappings with
    string keys, and no dotted key runs through a setting that is a value (``train`` and
    ``train.lr`` side by side, ``train`` a number)."""
    for key, value in settings.items():
        if not isinstance(key, str) or not key:
            raise bad(field, f"setting names are strings, got {_short(key)}")
        if isinstance(value, dict):
            _check_settings(value, f"{field}.{key}", bad)
    try:
        nest(settings)
    except (AttributeError, TypeError, ConfigError):
        raise bad(field, "a setting is both a value and a section of settings") from None


def _short(value: Any) -> str:
    """A value for a one-line message: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def expand(spec: SweepSpec) -> list[RunSpec]:
    """The runs of a spec, validated: a wrong shape (:func:`check_spec`), more than
    :data:`MAX_RUNS` runs, unknown keys, empty axes and duplicate names fail."""
    check_spec(spec)
    per_arch = _per_arch(spec)
    resolve = experiment(spec.kind).resolve
    keys = list(spec.axes)
    grid = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*spec.axes.values())]
    explicit = spec.runs or [{}]
    runs: list[RunSpec] = []
    seen: dict[str, int] = {}
    for extra in explicit:
        for point in grid:
            overrides = {**point, **_flatten(extra)}
            where = f"run {_short(overrides)}"
            try:
                data = _combine(spec.base, {}, overrides, spec.name, where)
                arch = _arch_of(spec.kind, data)
                if arch in per_arch:  # over base, under the run's own settings
                    where += f", per_arch[{arch!r}]"
                    data = _combine(spec.base, per_arch[arch], overrides, spec.name, where)
                config = resolve(data)
            except ConfigError as e:
                raise VlabError(f"sweep spec {spec.name}: {e} ({where})") from None
            named = overrides if spec.name_keys is None else _pick(overrides, spec.name_keys)
            name = str(
                extra.get("name") or "-".join(_label(spec.kind, k, v) for k, v in named.items())
            )
            _check_run_name(spec.name, name or spec.name)
            if name in seen:
                raise VlabError(
                    f"sweep spec {spec.name}: duplicate run name {name!r} (runs {seen[name]} and "
                    f"{len(runs)}); add an axis, name runs by more keys (name_keys) or give "
                    "explicit runs distinct 'name' values"
                )
            seen[name] = len(runs)
            runs.append(RunSpec(name or spec.name, config_id(config), config, overrides))
    return runs


def _combine(base: dict, arch: dict, overrides: dict, sweep: str, where: str) -> dict:
    """``base``, then ``arch``'s settings, then the run's ``overrides``, nested; a dotted key
    that runs through a value (an axis ``train`` of numbers beside ``train.lr``) is one line
    naming the run."""
    try:  # a ConfigError (a value given twice) goes to the caller, which names the run
        return deep_merge(deep_merge(nest(base), nest(arch)), nest(overrides))
    except (AttributeError, TypeError):
        raise VlabError(
            f"sweep spec {sweep}: a setting is both a value and a section of settings ({where})"
        ) from None


def _check_slurm(spec: SweepSpec) -> None:
    """``spec.slurm`` is a valid set of SLURM resources (the flags' names, checked values)."""
    from vlab.config import from_dict
    from vlab.errors import ConfigError
    from vlab.slurm.options import SlurmOptions

    if not isinstance(spec.slurm, dict):
        raise VlabError(
            f"sweep spec {spec.name}: slurm must map SLURM options (gpus_per_node, nodes, "
            f"...) to values, got {_short(spec.slurm)}"
        )
    try:
        from_dict(SlurmOptions, spec.slurm, prefix="slurm")
    except ConfigError as e:
        raise VlabError(f"sweep spec {spec.name}: {e}") from None


def _per_arch(spec: SweepSpec) -> dict[str, dict]:
    """``spec.per_arch`` checked: known archs, mappings of settings that leave the arch alone."""
    from vlab.models.backbones import FAMILIES

    if not isinstance(spec.per_arch, dict):
        raise VlabError(
            f"sweep spec {spec.name}: per_arch must map architectures to settings, "
            f"got {spec.per_arch!r}"
        )
    arch_key = experiment(spec.kind).arch_key
    out = {}
    for arch, settings in spec.per_arch.items():
        if arch not in FAMILIES:
            raise VlabError(
                f"sweep spec {spec.name}: per_arch: {arch!r} is not an architecture "
                f"({', '.join(FAMILIES)})"
            )
        if not isinstance(settings, dict):
            raise VlabError(
                f"sweep spec {spec.name}: per_arch[{arch!r}] must be a mapping of settings, "
                f"got {settings!r}"
            )
        flat = _flatten(settings)
        if arch_key in flat:
            raise VlabError(
                f"sweep spec {spec.name}: per_arch[{arch!r}] sets {arch_key}; it may only "
                "set what differs between the runs of that arch and others"
            )
        out[arch] = flat
    return out


def _arch_of(kind: str, data: dict) -> str:
    """The architecture a run's (unresolved) config selects: what its experiment reads there
    (:meth:`~vlab.experiment.Experiment.arch_of`), else the config class's default."""
    from vlab.models.backbones import BackboneConfig

    arch = experiment(kind).arch_of(data)
    return arch if isinstance(arch, str) else BackboneConfig.arch


def _pick(overrides: dict, keys: list[str]) -> dict:
    """The overrides named by ``keys``, in that order (keys a run does not set are skipped)."""
    return {k: overrides[k] for k in keys if k in overrides}


def _check_run_name(sweep: str, name: str) -> None:
    """A run name becomes a folder under ``runs/`` and a lock and log file name: it must be one
    plain path component (:func:`vlab.records.plain_name`, the rule sweep.json is read back
    with), or a spec could write outside its sweep directory."""
    try:
        plain_name(name, "run name")
    except VlabError as e:
        problem = str(e).split(" is not a plain name: ", 1)[-1]
        raise VlabError(
            f"sweep spec {sweep}: run name {_short(name)} is not a plain folder name: {problem} "
            "(no '/', '\\', control characters or leading '.' or '-')"
        ) from None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if k == "name" and not prefix:
            continue
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v and not key.endswith("overrides"):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


# loading ------------------------------------------------------------------------------------


def builtin_specs() -> dict[str, Path]:
    """Built-in spec names (file stem with '_' as '-') -> their files."""
    return {
        p.stem.replace("_", "-"): p for p in sorted(SPECS_DIR.glob("*.py")) if p.stem != "__init__"
    }


def load_spec(ref: str) -> SweepSpec:
    """A built-in spec by name, or a spec file (.py, .json, .yaml) by path."""
    builtin = builtin_specs()
    path = builtin.get(ref) or Path(ref)
    if not path.is_file():
        names = ", ".join(builtin) or "none"
        raise VlabError(f"no sweep spec {ref!r}: not a built-in ({names}) and no such file")
    if path.suffix == ".py":
        return _load_python_spec(path)
    if path.suffix in (".json", ".yaml", ".yml"):
        return _spec_from_mapping(_read_mapping(path), str(path))
    raise VlabError(f"sweep spec {path}: use a .py, .json or .yaml file")


def _load_python_spec(path: Path) -> SweepSpec:
    module_name = f"vlab_sweep_spec_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise VlabError(f"sweep spec {path}: cannot be imported")
    module = importlib.util.module_from_spec(loader_spec)
    try:  # the spec is Python: it runs here, as any script would
        loader_spec.loader.exec_module(module)
        if hasattr(module, "SPEC"):
            spec = module.SPEC
        elif hasattr(module, "sweep"):
            spec = module.sweep()
        else:
            spec = None
    except VlabError:
        raise
    except Exception as e:
        where = ""
        tb = e.__traceback__
        while tb is not None:  # the innermost line of the spec file itself
            if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
                where = f" (line {tb.tb_lineno})"
            tb = tb.tb_next
        if isinstance(e, SyntaxError) and e.lineno:
            where = f" (line {e.lineno})"
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise VlabError(
            f"sweep spec {path}{where}: {type(e).__name__}: {message}; fix the file "
            "(vlab --debug sweep show shows the traceback)"
        ) from e
    if spec is None:
        raise VlabError(f"sweep spec {path}: define SPEC = SweepSpec(...) or def sweep()")
    if isinstance(spec, dict):
        spec = _spec_from_mapping(spec, str(path))
    if not isinstance(spec, SweepSpec):
        raise VlabError(f"sweep spec {path}: SPEC must be a SweepSpec, got {type(spec).__name__}")
    return spec


def _read_mapping(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        said = " ".join(str(e).split())[:200] or type(e).__name__  # YAML's spans lines
        raise VlabError(f"sweep spec {path}: cannot be parsed ({said})") from e


def _spec_from_mapping(data: Any, where: str) -> SweepSpec:
    if not isinstance(data, dict):
        raise VlabError(f"sweep spec {where}: expected a mapping at the top level")
    known = {f.name for f in fields(SweepSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise VlabError(
            f"sweep spec {where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})"
        )
    if "name" not in data:
        raise VlabError(f"sweep spec {where}: missing 'name'")
    return SweepSpec(**data)
