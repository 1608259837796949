"""VLM sweeps in the report: their run directories read into tidy tables, and the grouping of
benchmarks into coarse and fine. The tables built from them are in :mod:`vlab.analysis.vlm_tables`,
the figures in :mod:`vlab.analysis.vlm_plots`; ``notebooks/vlm.ipynb`` only calls them.

Files read (written by ``vlab sweep`` with ``kind: vlm``, see :mod:`vlab.vlm.experiment`; nothing
else, never a model)::

    SWEEP/sweep.json                                kind "vlm", runs (name, id, resolved config)
    SWEEP/runs/RUN/stage{1,2}/{config,status}.json  the run's config; each stage's state
    SWEEP/runs/RUN/stage{1,2}/metrics.jsonl         loss and held-out scores per evaluation
    SWEEP/runs/RUN/eval/heldout/results.json        final scores per benchmark ("source/task")
    SWEEP/runs/RUN/eval/heldout/predictions.jsonl   every held-out answer (target locations)
    SWEEP/runs/RUN/eval/<benchmark>/results.json    a benchmark of the suite (the paper's
    SWEEP/runs/RUN/eval/<benchmark>/status.json     tables): read when its status says done

Benchmark-suite folders (``eval/<benchmark>/``, one per benchmark, as a sweep with
``benchmarks.suite`` or ``vlab vlm eval --data-root`` writes them; or ``eval/NAME/`` of ``vlab
vlm eval --name NAME``, several benchmarks in one) are every ``eval/`` folder but ``heldout``
whose results.json is there and whose status.json, if any, says done; they are read whatever
the run's own phase, so a run still scoring its suite shows the benchmarks it has.

A folder without ``sweep.json`` works too: a ``vlab vlm train --out RUN`` directory, or a folder
of them (then ``runs/`` or its subfolders are the runs).

Tables of :class:`VLMSweep` (pandas, one row per observation):

- ``runs``: one row per run, columns :data:`RUN_COLUMNS`; ``setting`` names what varies
  within an arch besides the ordering and the seeds, ``seed`` the seeds that vary (the replicas a
  mean is taken over), both as ``key=value`` text ("" when nothing varies).
- ``scores``: one row per (run, benchmark) of the held-out results.json, columns
  :data:`SCORE_COLUMNS` (the held-out validation table, kept apart from the paper's tables).
- ``suite``: one row per (run, benchmark) of the benchmark suite's results, columns
  :data:`SUITE_COLUMNS` (``folder``: the ``eval/`` folder it came from).
- ``slices``: one row per (run, benchmark, slice key, value) of the suite's ``slices`` (VQAv2's
  answer types, NoCaps' domains, TallyQA's subsets), columns :data:`SLICE_COLUMNS`.
- ``curves``: one row per (run, stage, evaluation, metric), columns :data:`CURVE_COLUMNS`.
- ``locations``: one row per held-out example whose answer is about one located object
  (grounding: the box to name; dense captions: the box to describe), columns
  :data:`LOCATION_COLUMNS`.

Benchmarks are grouped once, in :data:`BENCHMARKS`: *coarse* tasks, whose answer summarises the
image (captions, VQA, POPE, image-text matching, multiple choice), and *fine* tasks, whose answer
must retrieve one region (grounding, dense captions): the split SHAKEUP's Tables 1 and 2 draw and
its finding is about. A key the mapping does not know goes to ``other``, and the table says so.
Scores are shown x100 (accuracies in %, CIDEr x100), as the papers print them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlab.analysis.load import (
    UNREADABLE,
    as_float,
    as_int,
    read_lines_leniently,
    read_metrics_leniently,
)
from vlab.config import setting
from vlab.errors import ConfigError, VlabError
from vlab.experiment import experiment, kind_of
from vlab.locks import lock_holder
from vlab.process import writer_alive
from vlab.records import NonNegative, Real, parse_record, read_json_file, resolved
from vlab.run_records import MetricsLine
from vlab.rundir import RunDir

VLM_KIND, FINETUNE_KIND = "vlm", "vlm-finetune"  # sweep.json kinds with a report here
KIND_TITLES = {"probe": "probe", VLM_KIND: "VLM", FINETUNE_KIND: "finetune (vlm-finetune)"}
ARCH_KEY = "model.lm.arch"
ORDERING_KEY = "model.sequence.ordering"
# task-agnostic (image first, the default) before task-aware (instruction first)
ORDERINGS = ("task_agnostic", "task_aware")
ORDERING_STYLES = {"task_agnostic": "-", "task_aware": "--"}
STAGES = (1, 2)
HELDOUT = "heldout"  # RUN/eval/heldout: held-out validation; every other eval/ folder: the suite
SCALE = 100.0  # scores are shown x100, as the papers print them

COARSE, FINE, OTHER = "coarse", "fine", "other"
GROUPS = (COARSE, FINE, OTHER)
GROUP_TITLES = {
    COARSE: "coarse (summary)",
    FINE: "fine (retrieval)",
    OTHER: "other (group not known)",
}

# (source, task) of a results.json key "source/task" -> (column label, group). A source also
# matches with a split after "_" ("pope_random", "refcoco+_testA"), appended to the label. The
# sources are those `paper_benchmarks` names (models/vlm/data/paper_data.py) and the readers'
# defaults; the shapes dataset scores one benchmark per task. Column order is this order.
BENCHMARKS: dict[tuple[str, str], tuple[str, str]] = {
    ("shapes", "caption"): ("shapes caption", COARSE),
    ("shapes", "vqa"): ("shapes VQA", COARSE),
    ("shapes", "pope"): ("shapes POPE", COARSE),
    ("shapes", "itm"): ("shapes ITM", COARSE),
    ("coco", "caption"): ("COCO", COARSE),
    ("nocaps", "caption"): ("NoCaps", COARSE),
    ("vqav2", "vqa"): ("VQAv2", COARSE),
    ("gqa", "vqa"): ("GQA", COARSE),
    ("visual7w_telling", "mcvqa"): ("V7W telling", COARSE),
    ("vsr", "itm"): ("VSR", COARSE),
    ("pope", "pope"): ("POPE", COARSE),
    ("textcaps", "caption"): ("TextCaps", COARSE),
    ("textvqa", "vqa"): ("TextVQA", COARSE),
    ("ai2d", "mcvqa"): ("AI2D", COARSE),
    ("vizwiz", "vqa"): ("VizWiz", COARSE),
    ("tallyqa", "vqa"): ("TallyQA", COARSE),
    ("shapes", "grounding"): ("shapes grounding", FINE),
    ("shapes", "dense_caption"): ("shapes dense caption", FINE),
    ("refcoco", "grounding"): ("RefCOCO", FINE),
    ("refcoco+", "grounding"): ("RefCOCO+", FINE),
    ("refcocog", "grounding"): ("RefCOCOg", FINE),
    ("visual7w_pointing", "mcvqa"): ("V7W pointing", FINE),  # the papers' 4-way box choice
    ("visual7w_pointing", "grounding"): ("V7W pointing (open)", FINE),
    ("refcoco", "dense_caption"): ("RefCOCO dense caption", FINE),
    ("refcoco+", "dense_caption"): ("RefCOCO+ dense caption", FINE),
    ("refcocog", "dense_caption"): ("RefCOCOg dense caption", FINE),
    ("visual_genome", "dense_caption"): ("VG dense caption", FINE),
    ("visual_genome", "grounding"): ("VG grounding", FINE),
}
_SPLIT_ORDER = {"val": 0, "testA": 1, "testB": 2, "test": 3}
_SPLIT_ORDER.update({"random": 0, "popular": 1, "adversarial": 2, "simple": 0, "complex": 1})
# tasks whose example is about one object with a box: the location analysis
LOCATED_TASKS = ("grounding", "dense_caption")

RUN_COLUMNS = [
    "name",
    "id",
    "arch",
    "ordering",
    "setting",
    "seed",
    "state",
    "stage",
    "step",
    "steps",
    "reason",
    "evaluated",
    "n_benchmarks",
    "n_suite",
    "path",
]
SCORE_COLUMNS = ["run", "benchmark", "source", "task", "label", "group", "metric", "score"]
SUITE_COLUMNS = [*SCORE_COLUMNS, "folder"]
SLICE_COLUMNS = ["run", "benchmark", "slice", "value", "score"]
CURVE_COLUMNS = ["run", "stage", "step", "fraction", "metric", "value"]
LOCATION_COLUMNS = [
    "run",
    "index",
    "benchmark",
    "task",
    "score",
    "cx",
    "cy",
    "row",
    "col",
    "patch",
    "grid_rows",
    "grid_cols",
]
# the curves' first panels; the held-out score of every task follows
CURVE_BASE = {"loss": "training loss", "eval_loss": "held-out loss", "accuracy": "held-out mean"}


# records of the files read here ------------------------------------------------------------
# Checked as :mod:`vlab.records` checks every file vlab reads back; a damaged file of one run
# is that run's warning (as in :mod:`vlab.analysis.load`), never the whole report's error.

RESULTS_FIX = "delete it: resume evaluates again"
PREDICTIONS_FIX = "delete it: resume evaluates again"


def _numbers(values: dict[str, Any] | None, field_name: str) -> None:
    """Each value of ``values`` a JSON number or null (a score), else a ConfigError naming
    the key: a record's ``dict`` annotation checks the mapping, not its values."""
    for key, value in (values or {}).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"{field_name}.{key}", f"expected a number, got {value!r:.60}")


def _texts(values: dict[str, Any] | None, field_name: str) -> None:
    """Each value of ``values`` a string (a metric's name), else a ConfigError naming it."""
    for key, value in (values or {}).items():
        if not isinstance(value, str):
            raise ConfigError(f"{field_name}.{key}", f"expected a string, got {value!r:.60}")


@dataclass(frozen=True)
class Results:
    """``eval/heldout/results.json`` (``vlab vlm eval``, a sweep's evaluation) as the reports
    read it: ``sources`` ("source/task" -> score), ``metrics`` (task -> metric name), the
    number of ``examples``, a finetune's ``grid`` (rows, cols); the rest kept."""

    sources: dict[str, Any]
    metrics: dict[str, Any] | None = None
    examples: NonNegative | None = None
    accuracy: Real | None = None
    grid: list[NonNegative] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _numbers(self.sources, "sources")
        _texts(self.metrics, "metrics")


@dataclass(frozen=True)
class StageMetricsLine(MetricsLine):
    """A line of a VLM stage's metrics.jsonl: a metrics line with each task's held-out score
    (``tasks``) and the share of the budget done (``fraction``)."""

    tasks: dict[str, Any] | None = None
    fraction: Real | None = None

    def __post_init__(self) -> None:
        _numbers(self.tasks, "tasks")


@dataclass(frozen=True)
class Prediction:
    """A line of ``eval/heldout/predictions.jsonl`` (``generate_predictions``): one held-out
    answer, and for a located task the ``target_box`` (x1, y1, x2, y2) of a dataset file."""

    index: NonNegative | None = None
    source: str | None = None
    task: str | None = None
    prompt: str | None = None
    prediction: str | None = None
    reference: str | None = None
    target_box: list[Real] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# benchmarks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """One results.json key ``source/task`` as the tables show it: ``label``, ``group`` (one of
    :data:`GROUPS`) and ``order`` (the sort key of its column)."""

    key: str
    label: str
    group: str
    order: tuple


def benchmark(key: str) -> Benchmark:
    """What :data:`BENCHMARKS` says of ``key`` ("refcoco+_testA/grounding" -> "RefCOCO+ testA",
    fine); an unknown key is its own label in group ``other``."""
    source, _, task = key.rpartition("/")
    for rank, ((src, t), (label, group)) in enumerate(BENCHMARKS.items()):
        if task != t:
            continue
        if source == src:
            return Benchmark(key, label, group, (rank, -1, ""))
        if source.startswith(src + "_"):
            split = source[len(src) + 1 :]
            order = (rank, _SPLIT_ORDER.get(split, len(_SPLIT_ORDER)), split)
            return Benchmark(key, f"{label} {split}", group, order)
    return Benchmark(key, key, OTHER, (len(BENCHMARKS), 0, key))


def group_sum_key(group: str) -> str:
    """The pseudo-benchmark key of a group's sum ("sum:coarse") in the summary tables."""
    return f"sum:{group}"


def column_order(keys) -> list[str]:
    """Benchmark keys in table order: coarse, its sum, fine, its sum, other, its sum."""
    known = sorted({k for k in keys if not k.startswith("sum:")}, key=lambda k: benchmark(k).order)
    out = []
    for g in GROUPS:
        members = [k for k in known if benchmark(k).group == g]
        if members:
            out.extend(members)
            if group_sum_key(g) in set(keys):
                out.append(group_sum_key(g))
    return out


def column_label(key: str) -> str:
    """A column's header: the benchmark's label, or "Σ coarse" for a group's sum."""
    return f"Σ {key.split(':', 1)[1]}" if key.startswith("sum:") else benchmark(key).label


def column_group(key: str) -> str:
    """A column's group (one of :data:`GROUPS`), a group sum's included."""
    return key.split(":", 1)[1] if key.startswith("sum:") else benchmark(key).group


# loading ------------------------------------------------------------------------------------


@dataclass
class VLMSweep:
    """Everything the VLM report knows about a sweep: four tidy tables and the warnings.

    ``metrics``: task -> metric name (exact_match, iou@0.5, CIDEr ...) as results.json says.
    """

    root: Path
    name: str
    source: str  # "sweep.json" or "scan"
    runs: pd.DataFrame
    scores: pd.DataFrame
    curves: pd.DataFrame
    locations: pd.DataFrame
    metrics: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    suite: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SUITE_COLUMNS))
    slices: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SLICE_COLUMNS))


def recorded_kind(path: Path) -> str | None:
    """The run kind at ``path`` (:func:`vlab.experiment.kind_of`: its run.json, or its files),
    None for no run or an unreadable one (its loader names the damaged file)."""
    try:
        return kind_of(path) if path.is_dir() else None
    except UNREADABLE:
        return None


def is_vlm_run(path: Path) -> bool:
    """A VLM run directory (``vlab vlm train --out``)."""
    return recorded_kind(path) == VLM_KIND


def is_finetune_run(path: Path) -> bool:
    """A finetune run directory (``vlab vlm finetune --out``, or a run of a ``vlm-finetune``
    sweep)."""
    return recorded_kind(path) == FINETUNE_KIND


def sweep_kind(path: str | Path) -> str:
    """The kind of sweep at ``path``, which picks its report: sweep.json's ``kind`` ("probe"
    when absent or unreadable), or, without sweep.json, "vlm" when ``path`` or a folder in it
    (or in its ``runs/``) is a VLM run, "vlm-finetune" when it is a finetune run (a
    ``RUN/finetune`` folder of them), else "probe"."""
    root = Path(path).expanduser()
    spec = root / "sweep.json"
    if spec.is_file():
        try:
            data = read_json_file(spec, "")
        except UNREADABLE:
            return "probe"  # the probe loader names the broken file
        kind = data.get("kind", "probe") if isinstance(data, dict) else "probe"
        return kind if isinstance(kind, str) else "probe"
    if not root.is_dir():
        return "probe"
    for kind, is_run in ((VLM_KIND, is_vlm_run), (FINETUNE_KIND, is_finetune_run)):
        if is_run(root):
            return kind
        for parent in (root, root / "runs"):
            if parent.is_dir() and any(is_run(p) for p in parent.iterdir() if p.is_dir()):
                return kind
    return "probe"


@dataclass
class _Entry:
    name: str
    path: Path
    id: str | None = None
    config: dict | None = None
    lock: Path | None = None  # the sweep's lock of the run, held by the worker running it


def load_vlm_sweep(path: str | Path, *, locations: bool = True) -> VLMSweep:
    """Load the VLM sweep (or VLM run directory, or folder of them) at ``path``.

    Raises :class:`~vlab.errors.VlabError` (one line) on a probe sweep or a folder without VLM
    runs. Runs listed in sweep.json without a directory are ``pending``; anything unreadable
    becomes a warning, never an exception. ``locations`` False leaves predictions.jsonl unread
    (and torch unimported, see :func:`encoder_grid`): what ``vlab report`` needs for its
    summary line before the kernel reads the sweep.
    """
    root = resolved(path)
    if not root.is_dir():
        raise VlabError(f"{path}: no such directory")
    warnings: list[str] = []
    if (root / "sweep.json").exists():  # a directory there is a damaged sweep, not a scan
        name, entries, source = *_entries_from_sweep_json(root), "sweep.json"
    else:
        name, entries, source = root.name, _entries_from_scan(root), "scan"
        if not entries:
            raise VlabError(
                f"{path} is not a VLM sweep: it has no sweep.json and no VLM run directories "
                "(folders with stage1/ or stage2/ written by `vlab vlm train` or `vlab sweep`)"
            )
    rows, scores, curves, located, metrics = [], [], [], [], {}
    suite, slices = [], []
    for entry in entries:
        row, run_scores, run_curves, run_locations, run_metrics = _load_run(
            entry, locations, warnings
        )
        run_suite, run_slices, suite_metrics = suite_rows(entry.name, entry.path, warnings)
        row["n_suite"] = len(run_suite)
        rows.append(row)
        scores.extend(run_scores)
        curves.extend(run_curves)
        located.extend(run_locations)
        suite.extend(run_suite)
        slices.extend(run_slices)
        metrics.update(suite_metrics)
        metrics.update(run_metrics)
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    configs = {e.name: _flatten(e.config or {}) for e in entries}
    runs["setting"], runs["seed"] = settings_and_seeds(
        runs["name"], runs["arch"].fillna("?"), configs, (ARCH_KEY, ORDERING_KEY)
    )
    for col in ("step", "steps", "n_benchmarks", "n_suite"):
        runs[col] = runs[col].astype("Int64")
    return VLMSweep(
        root,
        name,
        source,
        runs,
        pd.DataFrame(scores, columns=SCORE_COLUMNS),
        pd.DataFrame(curves, columns=CURVE_COLUMNS),
        pd.DataFrame(located, columns=LOCATION_COLUMNS),
        dict(sorted(metrics.items())),
        warnings,
        pd.DataFrame(suite, columns=SUITE_COLUMNS),
        pd.DataFrame(slices, columns=SLICE_COLUMNS),
    )


def _entries_from_sweep_json(root: Path, kind: str = VLM_KIND) -> tuple[str, list[_Entry]]:
    """The sweep's name and its runs (config, directory, lock) from sweep.json, which must be
    of ``kind``: another kind is a one-line error naming both. sweep.json is read as ``vlab
    sweep`` reads it (:class:`~vlab.slurm.sweepdir.SweepDir`): a damaged one is a one-line
    error, and run folders and locks are joined from plain names only."""
    from vlab.slurm.sweepdir import SweepDir

    sweep = SweepDir(root)
    spec = sweep.read()
    if spec.kind != kind:
        raise VlabError(
            f"{root} is a {KIND_TITLES.get(spec.kind, spec.kind)} sweep, not a "
            f"{KIND_TITLES[kind]} sweep; drop --template: vlab report picks the report of the "
            "sweep's kind"
        )
    if not spec.runs:
        raise VlabError(f"{sweep.spec_path} lists no runs; nothing to report")
    entries = [
        _Entry(r.name, sweep.run_path(r.name), r.id, r.config, sweep.lock_path(r.name))
        for r in spec.runs
    ]
    return spec.name, entries


def _entries_from_scan(root: Path, is_run: Callable[[Path], bool] = is_vlm_run) -> list[_Entry]:
    """``root`` itself when ``is_run`` says it is a run, else the runs in it or in its
    ``runs/`` (a VLM run by default; the finetune report passes its own test)."""
    if is_run(root):
        return [_Entry(root.name, root)]
    found = []
    for parent in (root, root / "runs"):
        if parent.is_dir():
            found += [_Entry(p.name, p) for p in sorted(parent.iterdir()) if is_run(p)]
    return found


def _stage_config(path: Path) -> dict | None:
    """A run's config from its stage 2 (else stage 1) config.json, without the stage key, as
    :meth:`~vlab.rundir.RunDir.read_config` reads it (a damaged one raises, naming it)."""
    for stage in (2, 1):
        run = RunDir(path / f"stage{stage}")
        if run.config_path.exists():
            return {k: v for k, v in run.read_config().items() if k != "stage"}
    return None


def _load_run(
    entry: _Entry, with_locations: bool, warnings: list[str]
) -> tuple[dict, list, list, list, dict]:
    """The run's row plus its score, curve and location rows and its task -> metric names."""
    name, path = entry.name, entry.path
    if entry.config is None and path.is_dir():
        try:
            entry.config = _stage_config(path)
        except UNREADABLE as e:
            warnings.append(f"{name}: config.json is unreadable ({e}); run shown without config")
    config = entry.config or {}
    status = _status(path, config, name, warnings)
    if status["state"] in ("pending", "interrupted") and entry.lock and lock_holder(entry.lock):
        # a live worker holds the run (between two phases, or about to start)
        status.update(state="running", reason="a live worker holds its lock")
    results = _results(path, name, warnings) if status["state"] == "done" else None
    row = {
        "name": name,
        "id": entry.id,
        "arch": setting(config, ARCH_KEY),
        "ordering": setting(config, ORDERING_KEY) or ORDERINGS[0],
        "setting": "",
        "seed": "",
        **status,
        "evaluated": results is not None,
        "n_benchmarks": len(results["sources"]) if results else 0,
        "path": str(path),
    }
    scores, metrics = [], {}
    if results is not None:
        metrics = {t: str(m) for t, m in (results.get("metrics") or {}).items()}
        for key, value in results["sources"].items():
            b = benchmark(key)
            source, _, task = key.rpartition("/")
            scores.append(
                [name, key, source, task, b.label, b.group, metrics.get(task), as_float(value)]
            )
    curves = [row for stage in STAGES for row in _curve_rows(path, name, stage, warnings)]
    locations = []
    if results is not None and with_locations:
        locations = _location_rows(path, name, config, warnings)
    return row, scores, curves, locations, metrics


def _status(
    path: Path,
    config: dict,
    name: str,
    warnings: list[str],
    kind: str = VLM_KIND,
    steps_key: str = "stage1.steps",
) -> dict:
    """state, reason, stage, step, steps of the run's current phase, as the experiment of
    ``kind`` reads them (:meth:`~vlab.experiment.Experiment.status`); ``steps_key`` is the
    config's step budget of a run not started."""
    out = {"state": "pending", "reason": "no run directory yet", "stage": None}
    out.update(step=None, steps=setting(config, steps_key))
    if not path.is_dir():
        return out
    try:
        status = experiment(kind).status(path, config)
    except (VlabError, OSError, ValueError, AttributeError) as e:
        warnings.append(f"{name}: its status files are unreadable ({e})")
        return {**out, "state": "unknown", "reason": "status unreadable"}
    state = status.get("state") or "pending"
    reason = status.get("reason") or ("not started" if state == "pending" else None)
    writer = (status.get("host"), status.get("pid"), status.get("slurm_job_id"))
    if state == "running" and writer_alive(*writer) is False:
        state = "interrupted"
        reason = "its process is gone without finishing (killed or preempted); resume continues it"
    return {
        "state": state,
        "reason": reason,
        "stage": status.get("stage"),
        "step": as_int(status.get("step")),
        "steps": as_int(status.get("steps")),
    }


def _results(path: Path, name: str, warnings: list[str]) -> dict | None:
    """The run's results.json checked as :class:`Results`; None, with a warning naming the
    file and field, when it is missing or damaged (the run is shown, without its scores)."""
    file = path / "eval" / "heldout" / "results.json"
    try:
        results = read_json_file(file, RESULTS_FIX)
        parse_record(Results, results, file, RESULTS_FIX)
    except UNREADABLE as e:
        warnings.append(f"{name}: {file.name} is unreadable ({e}); its scores are left out")
        return None
    return results


def suite_folders(path: Path) -> list[Path]:
    """The run's finished benchmark-suite folders: every ``eval/<folder>`` but ``heldout``
    holding a results.json, whose status.json (when it has one: ``vlab vlm eval --name``
    wrote none before) says done; in name order. Read from the files alone, whoever wrote
    them (a sweep's suite phases or ``vlab vlm eval`` by hand), so both render alike."""
    where = path / "eval"
    if not where.is_dir():
        return []
    found = []
    for folder in sorted(p for p in where.iterdir() if p.is_dir() and p.name != HELDOUT):
        if not (folder / "results.json").is_file():
            continue  # not scored yet, or a results.json removed to score it again
        try:
            status = RunDir(folder).read_status()
        except UNREADABLE:
            status = None  # its results.json, written last, is the evidence
        if status is None or status.get("state") == "done":
            found.append(folder)
    return found


def suite_rows(
    name: str, path: Path, warnings: list[str]
) -> tuple[list[list], list[list], dict[str, str]]:
    """Score rows (:data:`SUITE_COLUMNS`) and slice rows (:data:`SLICE_COLUMNS`) of the run's
    benchmark-suite folders, and their task -> metric names. A damaged results.json is a
    warning naming it; a benchmark key two folders both score keeps the first (named)."""
    rows, slices, metrics, seen = [], [], {}, {}
    for folder in suite_folders(path) if path.is_dir() else []:
        file = folder / "results.json"
        try:
            results = read_json_file(file, RESULTS_FIX)
            parse_record(Results, results, file, RESULTS_FIX)
        except UNREADABLE as e:
            warnings.append(f"{name}: {folder.name}/results.json is unreadable ({e}); left out")
            continue
        found = {t: str(m) for t, m in (results.get("metrics") or {}).items()}
        metrics.update(found)
        for key, value in results["sources"].items():
            if key in seen:
                warnings.append(
                    f"{name}: {key} is scored in both eval/{seen[key]} and eval/{folder.name}; "
                    f"the tables take eval/{seen[key]}"
                )
                continue
            seen[key] = folder.name
            b = benchmark(key)
            source, _, task = key.rpartition("/")
            rows.append(
                [name, key, source, task, b.label, b.group, found.get(task), as_float(value)]
                + [folder.name]
            )
            by_key = (results.get("slices") or {}).get(key)
            for slice_key, parts in (by_key if isinstance(by_key, dict) else {}).items():
                for part, score in (parts if isinstance(parts, dict) else {}).items():
                    slices.append([name, key, str(slice_key), str(part), as_float(score)])
    return rows, slices, metrics


def _curve_rows(path: Path, name: str, stage: int, warnings: list[str]) -> list[list]:
    """One row per (evaluation, metric) of ``stage``'s metrics.jsonl: the training loss, the
    held-out loss and mean, and every task's held-out score (``held-out <task>``)."""
    rows = []
    run = RunDir(path / f"stage{stage}")
    for r in read_metrics_leniently(run, name, warnings, StageMetricsLine):
        step = as_int(r.get("step"))
        if step is None:
            continue
        fraction = as_float(r.get("fraction"))
        for key, label in CURVE_BASE.items():
            if isinstance(r.get(key), int | float):
                rows.append([name, stage, step, fraction, label, float(r[key])])
        for task, value in (r.get("tasks") or {}).items():
            rows.append([name, stage, step, fraction, f"held-out {task}", as_float(value)])
    return rows


def _location_rows(path: Path, name: str, config: dict, warnings: list[str]) -> list[list]:
    """One row per answered example of :data:`LOCATED_TASKS` in predictions.jsonl: its score,
    the target box centre (0-1) and the patch (row, col, raster index) it falls in."""
    from vlab.models.vlm.data.records import parse_box
    from vlab.models.vlm.metrics.answers import score

    file = path / "eval" / "heldout" / "predictions.jsonl"
    if not file.is_file():
        return []
    grid = encoder_grid(config)  # only here: a preset's shapes import torch
    if grid is None:
        warnings.append(
            f"{name}: the encoder's patch grid cannot be read from its config; its grounding "
            "answers are left out of the location figures"
        )
        return []
    rows = []
    lost = "so the location figures lack those answers"
    for r in read_lines_leniently(file, Prediction, PREDICTIONS_FIX, name, warnings, lost):
        task = r.get("task")
        if task not in LOCATED_TASKS or not isinstance(r.get("prediction"), str):
            continue
        box = r.get("target_box")
        if not (isinstance(box, list) and len(box) == 4):
            # dataset files: the grounding reference is the box; a dense caption's prompt is
            text = r.get("reference") if task == "grounding" else r.get("prompt")
            box = parse_box(text) if isinstance(text, str) else None
        box = [as_float(v) for v in box] if box is not None else []
        if len(box) != 4 or not all(np.isfinite(box)):  # no box, or one no image holds
            continue
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        (row,), (col,) = patch_cells(np.array([cx]), np.array([cy]), grid)
        value = score(task, r["prediction"], str(r.get("reference", "")))
        key = f"{r.get('source')}/{task}"
        rows.append(
            [name, r.get("index"), key, task, value, cx, cy, row, col, row * grid[1] + col, *grid]
        )
    return rows


def summary_line(sweep: VLMSweep, what: str = "VLM sweep") -> str:
    """One line: how many runs in which state, how many evaluated (of any sweep whose ``runs``
    have ``state`` and ``evaluated`` columns: the finetune report's too, ``what`` naming it)."""
    from vlab.rundir import STATES

    counts = sweep.runs["state"].value_counts()
    order = [s for s in STATES if s in counts] + sorted(set(counts.index) - set(STATES))
    states = ", ".join(f"{counts[s]} {s}" for s in order)
    n_eval = int(sweep.runs["evaluated"].sum())
    return (
        f"{what} {sweep.name!r}: {len(sweep.runs)} runs ({states}), {n_eval} evaluated, "
        f"{len(sweep.warnings)} warnings"
    )


# the encoder's patch grid -------------------------------------------------------------------


def encoder_grid(config: dict) -> tuple[int, int] | None:
    """(rows, cols) of the (first) vision encoder's patch grid from a run's config, None when
    the config does not say (no model.vision, or a pretrained encoder whose folder is gone).

    The grid is ``image_size // patch_size`` a side, as the encoders cut it: ``image_size``
    from ``model.vision.image_size``, else the preset's (or a Hugging Face checkpoint's
    config.json); ``patch_size`` from ``overrides``, else the preset's. Preset shapes are read
    from :data:`vlab.models.vlm.vision.PRESETS` (imported here only: it loads torch). Two
    encoders share one grid (the model checks it).
    """
    vision = setting(config, "model.vision")
    if not isinstance(vision, dict):
        return None
    kind, overrides = vision.get("kind", "patch"), vision.get("overrides") or {}
    pretrained = vision.get("pretrained")
    if pretrained and kind != "eva02":  # a save_pretrained folder replaces the preset
        shape = _hf_vision_shape(Path(pretrained))
    else:
        from vlab.models.vlm.parts import PRESETS

        shape = dict(PRESETS.get(kind, {}).get(vision.get("preset", "tiny"), {}))
        if kind == "eva02":  # timm's eva02_large_patch14_clip_336, which presets override
            shape = {"patch_size": 14, "img_size": 336, **shape}
    shape.update(overrides)
    patch = shape.get("patch_size")
    size = vision.get("image_size") or shape.get("image_size") or shape.get("img_size")
    if not isinstance(patch, int) or not isinstance(size, int) or patch <= 0:
        return None
    side = size // patch
    return (side, side) if side > 0 else None


def _hf_vision_shape(folder: Path) -> dict:
    """patch_size and image_size of a Hugging Face vision checkpoint ({} if unreadable)."""
    try:
        data = read_json_file(folder / "config.json", "")
    except UNREADABLE:
        return {}
    if not isinstance(data, dict):
        return {}
    data = data.get("vision_config", data) if isinstance(data.get("vision_config"), dict) else data
    return {k: data[k] for k in ("patch_size", "image_size") if k in data}


def patch_cells(
    cx: np.ndarray, cy: np.ndarray, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Patch (row, col) of points ``(cx, cy)`` (n,) in normalised image coordinates (0-1).

    Row ``r`` covers ``[r / rows, (r + 1) / rows)``; a point on the right or bottom edge (1.0)
    is in the last patch. The encoders resize the whole image to a square, so normalised
    coordinates map to patches whatever the image's size. Returns two (n,) int arrays.
    """
    rows, cols = grid
    row = np.clip(np.floor(np.asarray(cy, dtype=float) * rows), 0, rows - 1).astype(int)
    col = np.clip(np.floor(np.asarray(cx, dtype=float) * cols), 0, cols - 1).astype(int)
    return row, col


# settings and seeds -------------------------------------------------------------------------


def is_seed_key(key: str) -> bool:
    """A config key that only seeds a replica: its last dotted part says seed (``stage2.seed``,
    ``model.lm.init_seed``, ``data.shapes.seed``, a finetune's ``train.seed`` ...)."""
    return "seed" in key.rsplit(".", 1)[-1]


def settings_and_seeds(
    names: Sequence[str],
    groups: Sequence[Hashable],
    configs: dict[str, dict],
    fixed: Collection[str] = (),
) -> tuple[list[str], list[str]]:
    """Per run (``names``; ``groups`` the group each is compared within): what varies among
    the flat configs (``configs``: name -> dotted keys) of its group's runs besides the keys
    ``fixed`` (the grid's axes), as two ``key=value, ...`` texts ("" when nothing varies): the
    setting, and the seeds (the keys :func:`is_seed_key` says seed). Runs that differ only in
    seeds are replicas: the reports average over them (Student t intervals,
    :func:`vlab.analysis.stats.t_mean_ci`); a setting is a line or panel of its own."""
    members: dict[Hashable, list[str]] = {}
    for name, group in zip(names, groups, strict=True):
        members.setdefault(group, []).append(name)
    varying: dict[Hashable, list[str]] = {}
    for group, group_names in members.items():
        flats = [configs[n] for n in group_names]
        keys = sorted(set().union(*flats))
        varying[group] = [
            k
            for k in keys
            if k not in fixed and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1
        ]
    settings, seeds = [], []
    for name, group in zip(names, groups, strict=True):
        parts = [(k, configs[name].get(k)) for k in varying[group]]
        settings.append(", ".join(f"{k}={v}" for k, v in parts if not is_seed_key(k)))
        seeds.append(", ".join(f"{k}={v}" for k, v in parts if is_seed_key(k)))
    return settings, seeds


# order ----------------------------------------------------------------------------------------


def arch_order(archs) -> list[str]:
    """vlab's arms first (pythia, mamba, mamba2, hybrid), then the others by name."""
    from vlab.analysis.plots import arch_colors

    return list(arch_colors([a for a in archs if isinstance(a, str)]))


def ordering_rank(o: str) -> int:
    return ORDERINGS.index(o) if o in ORDERINGS else len(ORDERINGS)


# small helpers ------------------------------------------------------------------------------


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
