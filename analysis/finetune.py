"""Finetune sweeps in the report (SHAKEUP's Figure 3): does an arm gain from a longer image
sequence? Their run directories read into tidy tables, and the tables the report shows; the
figure is in :mod:`vlab.analysis.finetune_plots`, ``notebooks/finetune.ipynb`` only calls them.

Files read (written by ``vlab sweep`` with ``kind: vlm-finetune``, see
:mod:`vlab.vlm.finetune_experiment`, or by ``vlab vlm finetune --out``; nothing else, never a
model)::

    SWEEP/sweep.json                          kind "vlm-finetune", runs (name, id, resolved config)
    SWEEP/runs/RUN/config.json                the finetune: source, task, resolution, train.lr ...
    SWEEP/runs/RUN/status.json                its state, and its grid and visual tokens
    SWEEP/runs/RUN/metrics.jsonl              held-out scores per evaluation; step 0 scores the
                                              stage-2 model at the new resolution, not finetuned
    SWEEP/runs/RUN/eval/heldout/results.json  the finetuned model's held-out (val) scores
                                              ("source/task"), read once the run is done or
                                              eval/heldout/status.json says done
    SWEEP/runs/RUN/eval/<benchmark>/results.json  the finetuned model on another split, the
                                              paper's test split (RefCOCOg test:
                                              "refcocog_test/grounding"), read where its
                                              status.json says done (or it has none), by
                                              :func:`vlab.analysis.vlm.suite_folders`
    SOURCE/stage2/config.json                 the source run's config (its seeds), read only

A folder without ``sweep.json`` works too: one finetune directory, or a folder of them (a run's
``RUN/finetune/``, or a ``runs/`` folder).

Tables of :class:`FinetuneSweep` (pandas, one row per observation):

- ``runs``: one row per run, columns :data:`RUN_COLUMNS`; ``setting`` names what varies
  within an (arch, task) besides the resolution, the lr and the seeds, ``seed`` the seeds that
  vary (the replicas a mean is taken over), both as ``key=value`` text ("" when nothing
  varies). The split is the VLM report's (:func:`vlab.analysis.vlm.settings_and_seeds`): a
  key whose last part says seed is a seed. The runs are compared on their own config and on
  their source run's (``source.`` + its key, from ``SOURCE/stage2/config.json``): finetunes of
  stage-2 runs that differ only in seeds (``source.stage1.seed``, ``source.stage2.seed``
  ...) are replicas too; where a source's config is unreadable, the sources of its arm are
  settings of their own (``source.run=PATH``), their seeds being unknown.
- ``scores``: one row per (run, benchmark), columns :data:`SCORE_COLUMNS`: ``score`` the
  finetuned model's (results.json; NaN until evaluated), ``start`` the step-0 evaluation's
  (metrics.jsonl; NaN until logged), both as the files hold them (0-1; the tables show x100).
- ``tests``: one row per (run, benchmark) of its ``eval/<benchmark>/`` folders, columns
  :data:`TEST_COLUMNS`: ``heldout`` the held-out benchmark of the run it is the test split of
  (the same source and task, or a folder the run's config names under ``benchmarks``; None
  for any other benchmark scored by hand), ``score`` as the file holds it.

Every point of the figure and the tables is a mean over seeds with a Student t interval
(:func:`vlab.analysis.stats.t_mean_ci`; none with one seed), as in the VLM report: per (arm,
setting, resolution, lr) over the finetunes' seeds (:func:`seed_means`); the stage-2 point over
the source runs. The best lr of an (arm, resolution) is the one with the highest mean, chosen on
the held-out score that is plotted, as the paper's figure does: there is no separate validation
split, so the best score is an optimistic estimate, and every table and figure that uses it
says so.

Figure 3 on the paper's splits (:func:`reported_points`): where a task's runs are also scored
on a test split (``eval/<benchmark>/``, RefCOCOg test), each (arm, setting, resolution) shows
the test score of the lr chosen on the held-out (val) score, :func:`best_lr`'s choice: the test
split never picks the lr, so its point is not optimistic. A task without a test split (VQAv2,
reported on val2014, its held-out set; the shapes dataset) shows its held-out score there, the
lr chosen on that same score, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vlab.analysis.load import UNREADABLE, as_float, as_int, read_metrics_leniently
from vlab.analysis.stats import t_mean_ci
from vlab.analysis.vlm import (
    BENCHMARKS,
    FINETUNE_KIND,
    HELDOUT,
    SCALE,
    _entries_from_scan,
    _entries_from_sweep_json,
    _Entry,
    _flatten,
    _numbers,
    _results,
    _stage_config,
    _status,
    arch_order,
    benchmark,
    is_finetune_run,
    settings_and_seeds,
    suite_rows,
)
from vlab.analysis.vlm import summary_line as _vlm_summary_line
from vlab.analysis.vlm_tables import interval_text
from vlab.errors import ConfigError, VlabError
from vlab.locks import lock_holder
from vlab.records import NonNegative, Real, parse_record, resolved
from vlab.run_records import MetricsLine
from vlab.rundir import CONFIG_FIX, RunDir

# what a finetune sweep's grid crosses; anything else that varies within an (arch, task) is a
# seed (replicas, averaged) or a setting (a panel of its own). The source run is compared by its
# config (``source.`` keys), not by its path. ``benchmarks`` (what is scored after training,
# the test split) changes nothing trained: a run without a test split is no setting of its own.
AXES = ("arch", "task", "resolution", "train.lr", "source", "benchmarks")
SOURCE_PREFIX = "source."


@dataclass(frozen=True)
class FinetuneColumns:
    """A finetune's config.json as far as the runs table reads it (the fields of
    :class:`vlab.vlm.finetune.FinetuneConfig` it shows, by type; the rest kept): a
    field of the wrong type would put a list into a column the table groups by."""

    source: str | None = None
    task: str | None = None
    resolution: NonNegative | None = None
    arch: str | None = None
    train: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lr = (self.train or {}).get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float)):
            raise ConfigError("train.lr", f"expected a number, got {lr!r:.60}")


@dataclass(frozen=True)
class FinetuneMetricsLine(MetricsLine):
    """A line of a finetune's metrics.jsonl: a metrics line with the scores per benchmark
    (``sources``; the step-0 line scores the stage-2 weights) and each task's metric name."""

    sources: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    fraction: Real | None = None

    def __post_init__(self) -> None:
        _numbers(self.sources, "sources")


RUN_COLUMNS = [
    "name",
    "id",
    "arch",
    "task",
    "source",
    "resolution",
    "lr",
    "setting",
    "seed",
    "visual_tokens",
    "data",
    "state",
    "stage",
    "step",
    "steps",
    "reason",
    "evaluated",
    "test_splits",
    "path",
]
SCORE_COLUMNS = ["run", "benchmark", "label", "metric", "score", "start", "examples"]
# one row per (run, benchmark) of its eval/<benchmark>/ folders (the test splits)
TEST_COLUMNS = ["run", "benchmark", "heldout", "label", "metric", "score", "folder"]
# one row per (run, benchmark) of every run whose task has a known benchmark
GRID_COLUMNS = [
    "run",
    "benchmark",
    "label",
    "metric",
    "arch",
    "task",
    "setting",
    "seed",
    "source",
    "resolution",
    "visual_tokens",
    "lr",
    "state",
    "score",
    "start",
]
# one row per (benchmark, arch, setting, resolution, lr): the mean over seeds
POINT_COLUMNS = [
    "benchmark",
    "label",
    "metric",
    "arch",
    "setting",
    "resolution",
    "visual_tokens",
    "lr",
    "n",
    "seeds",
    "mean",
    "lo",
    "hi",
    "values",
    "waiting",
]
# one row per (benchmark, arch, setting, resolution): the best lr and the stage-2 point
SUMMARY_COLUMNS = [
    "benchmark",
    "label",
    "metric",
    "arch",
    "setting",
    "resolution",
    "visual_tokens",
    "best",
    "lo",
    "hi",
    "n",
    "seeds",
    "lr",
    "evaluated",
    "lrs",
    "start",
    "start_lo",
    "start_hi",
    "sources",
    "start_spread",
]
STAGE2 = "stage 2 (step 0)"  # the score table's row of the model before finetuning


@dataclass
class FinetuneSweep:
    """Everything the finetune report knows about a sweep: two tidy tables and the warnings."""

    root: Path
    name: str
    source: str  # "sweep.json" or "scan"
    runs: pd.DataFrame
    scores: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    tests: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TEST_COLUMNS))


# loading ------------------------------------------------------------------------------------


def load_finetune_sweep(path: str | Path) -> FinetuneSweep:
    """Load the finetune sweep (or finetune directory, or folder of them) at ``path``.

    Raises :class:`~vlab.errors.VlabError` (one line) on a sweep of another kind or a folder
    without finetune runs. Runs listed in sweep.json without a directory are ``pending``;
    anything unreadable becomes a warning, never an exception. Imports no torch.
    """
    root = resolved(path)
    if not root.is_dir():
        raise VlabError(f"{path}: no such directory")
    warnings: list[str] = []
    if (root / "sweep.json").exists():  # a directory there is a damaged sweep, not a scan
        name, entries = _entries_from_sweep_json(root, FINETUNE_KIND)
        source = "sweep.json"
    else:
        name, entries, source = root.name, _entries_from_scan(root, is_finetune_run), "scan"
        if not entries:
            raise VlabError(
                f"{path} is not a finetune sweep: it has no sweep.json and no finetune run "
                "directories (folders whose config.json names a source and a resolution, "
                "written by `vlab vlm finetune` or `vlab sweep`)"
            )
    rows, scores, tests = [], [], []
    for entry in entries:
        row, run_scores, run_tests = _load_run(entry, warnings)
        rows.append(row)
        scores.extend(run_scores)
        tests.extend(run_tests)
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    runs["setting"], runs["seed"] = _settings_and_seeds(runs, entries, warnings)
    for col in ("resolution", "visual_tokens", "step", "steps"):
        runs[col] = runs[col].astype("Int64")
    runs["lr"] = runs["lr"].astype(float)
    tests = pd.DataFrame(tests, columns=TEST_COLUMNS).astype({"score": float})
    scores = pd.DataFrame(scores, columns=SCORE_COLUMNS)
    return FinetuneSweep(root, name, source, runs, scores, warnings, tests)


def _load_run(entry: _Entry, warnings: list[str]) -> tuple[dict, list[list], list[list]]:
    """The run's row, its score rows (finetuned and step-0 scores per held-out benchmark)
    and its test rows (:data:`TEST_COLUMNS`, every finished ``eval/<benchmark>/``)."""
    name, path = entry.name, entry.path
    run = RunDir(path)
    if entry.config is None and run.config_path.exists():  # a directory there: said
        try:
            entry.config = run.read_config()
        except UNREADABLE as e:
            warnings.append(f"{name}: config.json is unreadable ({e}); run shown without config")
    config = entry.config if isinstance(entry.config, dict) else {}
    try:
        parse_record(FinetuneColumns, config, run.config_path, CONFIG_FIX)
    except VlabError as e:
        warnings.append(f"{name}: {e}; run shown without config")
        config = entry.config = {}
    status = _status(path, config, name, warnings, FINETUNE_KIND, steps_key="train.steps")
    if status["state"] in ("pending", "interrupted") and entry.lock and lock_holder(entry.lock):
        status.update(state="running", reason="a live worker holds its lock")
    # a run scoring its test split is not done, but its held-out results are final
    final_heldout = status["state"] == "done" or _heldout_done(path)
    results = _results(path, name, warnings) if final_heldout else None
    trained = _training_status(path)
    tokens = as_int(trained.get("visual_tokens"))
    grid = (results or {}).get("grid")
    if tokens is None and isinstance(grid, list) and len(grid) == 2:
        tokens = as_int(grid[0] * grid[1]) if all(isinstance(g, int) for g in grid) else None
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    row = {
        "name": name,
        "id": entry.id,
        "arch": config.get("arch") or _text(trained.get("arch")),
        "task": config.get("task"),
        "source": config.get("source") if isinstance(config.get("source"), str) else None,
        "resolution": as_int(config.get("resolution")),
        "lr": as_float(train.get("lr")),
        "setting": "",
        "seed": "",
        "visual_tokens": tokens,
        "data": "files" if config.get("train_source") else "shapes",
        **status,
        "evaluated": results is not None,
        "test_splits": ", ".join(_configured_benchmarks(config)),
        "path": str(path),
    }
    start = _step0(path, name, warnings)
    final = (results or {}).get("sources") or {}
    metrics = {**((start or {}).get("metrics") or {}), **((results or {}).get("metrics") or {})}
    scores = []
    for key in dict.fromkeys([*final, *((start or {}).get("sources") or {})]):
        task = key.rpartition("/")[2]
        scores.append(
            [
                name,
                key,
                benchmark(key).label,
                str(metrics[task]) if task in metrics else None,
                as_float(final.get(key)),
                as_float(((start or {}).get("sources") or {}).get(key)),
                as_int((results or {}).get("examples")),
            ]
        )
    heldout = [s[1] for s in scores]
    tests = []
    for key, label, metric, value, folder in _test_rows(name, path, warnings):
        pair = _paired(key, folder, heldout, row["test_splits"].split(", "))
        tests.append([name, key, pair, label, metric, value, folder])
    return row, scores, tests


def _test_rows(name: str, path: Path, warnings: list[str]) -> list[tuple]:
    """(key, label, metric, score, folder) of every finished ``eval/<benchmark>/`` of the run:
    the VLM report's reader of a run's suite folders (:func:`vlab.analysis.vlm.suite_rows`,
    the same files whoever wrote them), so both reports read them alike."""
    rows, _, _ = suite_rows(name, path, warnings)
    # SUITE_COLUMNS: run, benchmark, source, task, label, group, metric, score, folder
    return [(r[1], r[4], r[6], r[7], r[8]) for r in rows]


def _configured_benchmarks(config: dict) -> list[str]:
    """The folders the finetune's config says it scores besides the held-out set (its
    ``benchmarks``: each source's ``name``, else its ``reader``, as the finetune names its
    ``eval/<benchmark>/``); [] when it names none (no test split)."""
    given = config.get("benchmarks")
    sources = [b for b in given if isinstance(b, dict)] if isinstance(given, list) else []
    names = [b.get("name") or b.get("reader") for b in sources]
    return [n for n in names if isinstance(n, str) and n]


def _base(key: str) -> tuple:
    """A benchmark key without its split: ("refcocog_test/grounding" and
    "refcocog_val/grounding" are both RefCOCOg grounding), the row of :data:`BENCHMARKS` it
    matches, else its source up to the first "_" and its task."""
    source, _, task = key.rpartition("/")
    rank = benchmark(key).order[0]
    return (rank, task) if rank < len(BENCHMARKS) else (source.split("_")[0], task)


def _paired(key: str, folder: str, heldout: list[str], configured: list[str]) -> str | None:
    """The run's held-out benchmark that ``key`` (scored in ``eval/<folder>/``) is a test split
    of: the one of the same benchmark (:func:`_base`), else, for a folder the run's config
    names, its only held-out benchmark of the same task; None for any other benchmark."""
    same = [h for h in heldout if _base(h) == _base(key)]
    if not same and folder in configured:
        same = [h for h in heldout if h.rpartition("/")[2] == key.rpartition("/")[2]]
    return same[0] if len(same) == 1 else None


def _heldout_done(path: Path) -> bool:
    """Whether ``eval/heldout/status.json`` says done and its results.json is there: the
    held-out scores are final while the run goes on to score its test split."""
    where = path / "eval" / HELDOUT
    try:
        status = RunDir(where).read_status() if where.is_dir() else None
    except UNREADABLE:
        return False
    return bool(status) and status.get("state") == "done" and (where / "results.json").is_file()


def _text(value: Any) -> str | None:
    """A status field shown as text: a string, else None (status.json's extra keys are kept
    by its record as they are, not checked)."""
    return value if isinstance(value, str) else None


def _training_status(path: Path) -> dict:
    """The finetune's own status.json (grid, visual tokens, arch) as
    :meth:`~vlab.rundir.RunDir.read_status` reads it, {} if absent or damaged (the run's state
    comes from :func:`vlab.vlm.finetune_experiment.finetune_status`, which reads the same file: its
    damage is said there, once)."""
    try:
        return RunDir(path).read_status() or {}
    except UNREADABLE:
        return {}


def _step0(path: Path, name: str, warnings: list[str]) -> dict | None:
    """The step-0 evaluation of metrics.jsonl (the stage-2 weights at the new resolution)."""
    run = RunDir(path)
    if not run.metrics_path.exists():  # a directory there: said
        return None
    for r in read_metrics_leniently(run, name, warnings, FinetuneMetricsLine):
        if as_int(r.get("step")) == 0:
            return r if isinstance(r.get("sources"), dict) else None
    return None


def _settings_and_seeds(
    runs: pd.DataFrame, entries: list[_Entry], warnings: list[str]
) -> tuple[list[str], list[str]]:
    """Per run, its setting and its seeds (:func:`vlab.analysis.vlm.settings_and_seeds` within
    its (arch, task), the grid's :data:`AXES` aside), told apart by its flat config and its
    source run's (``source.`` + key, from the source's stage2/config.json, read once per
    source): finetunes of source runs that differ only in seeds are replicas too. Where a
    source of an (arch, task) has no readable config, that (arch, task)'s sources are told
    apart by path (``source.run=PATH``, a setting each), with a warning: their seeds are
    unknown."""
    sources: dict[str, dict] = {}
    unreadable: dict[str, str] = {}
    configs = {}
    for entry in entries:
        flat = _flatten(entry.config if isinstance(entry.config, dict) else {})
        source = flat.get("source")
        if isinstance(source, str) and source not in sources:
            sources[source] = _source_config(source, unreadable)
        configs[entry.name] = {**flat, **sources.get(source, {})}
    groups = list(zip(runs["arch"].fillna("?"), runs["task"].fillna("?"), strict=True))
    by_path: dict[tuple, set] = {}
    for group, source in zip(groups, runs["source"], strict=True):
        by_path.setdefault(group, set()).add(source)
    by_path = {g: s for g, s in by_path.items() if s & set(unreadable)}
    for name, group, source in zip(runs["name"], groups, runs["source"], strict=True):
        if group in by_path:
            flat = {k: v for k, v in configs[name].items() if not k.startswith(SOURCE_PREFIX)}
            configs[name] = {**flat, f"{SOURCE_PREFIX}run": source}
    for source, why in unreadable.items():
        if any(source in s and len(s) > 1 for s in by_path.values()):
            warnings.append(
                f"source run {source}: {why}; its seeds are unknown, so its arm's source runs "
                f"are told apart by path ({SOURCE_PREFIX}run), settings of their own, not "
                "replicas"
            )
    return settings_and_seeds(runs["name"], groups, configs, AXES)


def _source_config(source: str, unreadable: dict[str, str]) -> dict:
    """The source run's flat config under ``source.`` ({} and a reason in ``unreadable``
    when its stage2/config.json cannot be read)."""
    try:
        found = _stage_config(Path(source))
    except UNREADABLE as e:
        unreadable[source] = f"its stage2/config.json is unreadable ({e})"
        return {}
    if found is None:
        unreadable[source] = "it has no stage2/config.json"
        return {}
    return {f"{SOURCE_PREFIX}{k}": v for k, v in _flatten(found).items()}


def summary_line(sweep: FinetuneSweep) -> str:
    """One line: how many runs in which state, how many evaluated."""
    return _vlm_summary_line(sweep, "finetune sweep")


# tables ---------------------------------------------------------------------------------------


def finetune_grid(runs: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, benchmark) for every run whose task has a benchmark some run of that
    task scored (a pending run of the task included, with NaN scores), columns
    :data:`GRID_COLUMNS`; ``score`` and ``start`` x100. In report order: benchmark, arm,
    setting, resolution, lr, seed."""
    if scores.empty:
        return pd.DataFrame(columns=GRID_COLUMNS)
    meta = runs.set_index("name")
    known = scores.merge(runs[["name", "task"]], left_on="run", right_on="name")
    per_task = known.groupby("task", sort=False)["benchmark"].unique()
    about = scores.drop_duplicates("benchmark").set_index("benchmark")
    by_run = scores.set_index(["run", "benchmark"])
    rows = []
    for name, task in zip(runs["name"], runs["task"], strict=True):
        if task not in per_task.index:
            continue
        m = meta.loc[name]
        for key in per_task[task]:
            hit = by_run.loc[(name, key)] if (name, key) in by_run.index else None
            score = SCALE * hit["score"] if hit is not None else math.nan
            start = SCALE * hit["start"] if hit is not None else math.nan
            metric = hit["metric"] if hit is not None else about.loc[key, "metric"]
            rows.append(
                [name, key, about.loc[key, "label"], metric, m["arch"], task, m["setting"]]
                + [m["seed"], m["source"], m["resolution"], m["visual_tokens"], m["lr"]]
                + [m["state"], score, start]
            )
    grid = pd.DataFrame(rows, columns=GRID_COLUMNS)
    grid["score"], grid["start"] = grid["score"].astype(float), grid["start"].astype(float)
    return _sorted(grid, ["resolution", "lr", "seed"])


def _sorted(df: pd.DataFrame, then: list[str]) -> pd.DataFrame:
    """``df`` in report order: benchmarks as the VLM report orders them, vlab's arms first,
    settings by name, then ``then``."""
    if df.empty:
        return df.reset_index(drop=True)
    archs = arch_order(df["arch"].dropna().unique())
    keys = pd.DataFrame(
        {
            "b": [benchmark(k).order for k in df["benchmark"]],
            "a": [archs.index(a) if a in archs else len(archs) for a in df["arch"]],
        },
        index=df.index,
    )
    order = pd.concat([keys, df[["setting", *then]]], axis=1)
    order = order.sort_values(["b", "a", "setting", *then], kind="stable").index
    return df.loc[order].reset_index(drop=True)


CELL = ["benchmark", "arch", "setting", "resolution"]  # a best lr is chosen per cell


def seed_means(grid: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (benchmark, arch, setting, resolution, lr): the mean over seeds of the finetuned
    held-out score x100, its Student t interval at ``confidence`` (``lo``, ``hi``; NaN with one
    seed), the per-seed ``values`` (tuple, in seed order), how many seeds are evaluated
    (``n``) of the most any point of its (benchmark, arch, setting) has (``seeds``: a point
    with ``n`` < ``seeds`` has runs not evaluated yet, or missing), and the states of those not
    evaluated (``waiting``: "pending", "2 pending, failed"). Columns :data:`POINT_COLUMNS`; a point
    without an evaluated seed has NaN ``mean``."""
    if grid.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    rows = []
    for (*cell, lr), g in grid.groupby([*CELL, "lr"], sort=False, dropna=False):
        values = g["score"].to_numpy(dtype=float)
        done = values[pd.notna(values)]
        mean, lo, hi = t_mean_ci(done, confidence)
        waiting = g.loc[g["score"].isna(), "state"].value_counts()
        tokens = g["visual_tokens"].dropna()
        rows.append(
            [cell[0], g["label"].iloc[0], g["metric"].iloc[0], *cell[1:]]
            + [tokens.iloc[0] if not tokens.empty else pd.NA, lr, done.size, len(g)]
            + [mean, lo, hi, tuple(float(v) for v in done)]
            + [", ".join(f"{c} {s}" if c > 1 else s for s, c in waiting.items())]
        )
    out = pd.DataFrame(rows, columns=POINT_COLUMNS)
    out["seeds"] = out.groupby(["benchmark", "arch", "setting"], dropna=False)["seeds"].transform(
        "max"
    )
    out["visual_tokens"] = out["visual_tokens"].astype("Int64")
    return _sorted(out, ["resolution", "lr"])


def best_lr(grid: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (benchmark, arch, setting, resolution): the lr whose mean finetuned held-out score
    over seeds is the highest (:func:`seed_means`; ``best`` x100 with its t interval ``lo``,
    ``hi``, and its ``n`` of ``seeds`` seeds; a tie goes to the smaller lr), chosen on that same
    score; how many of the cell's lrs have an evaluated seed (``evaluated`` of ``lrs``); and
    the stage-2 point: the mean step-0 score of the cell's runs per source run, then the mean
    over source runs (``start``, t interval ``start_lo``, ``start_hi`` over ``sources``; one
    source: no interval). Every lr and seed of a source starts from the same weights, so
    ``start_spread``, the largest max - min within a source, is 0 up to nondeterminism.
    Columns :data:`SUMMARY_COLUMNS`; a cell with no evaluated run has NaN ``best`` and
    ``lr``."""
    if grid.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    points = seed_means(grid, confidence)
    by_cell = {k: g for k, g in points.groupby(CELL, sort=False, dropna=False)}
    rows = []
    for cell, g in grid.groupby(CELL, sort=False, dropna=False):
        mine = by_cell[cell]
        done = mine[mine["n"] > 0].sort_values("lr", kind="stable")
        top = done.loc[done["mean"].idxmax()] if not done.empty else None
        starts = g[g["start"].notna()].groupby(g["source"].fillna(""))["start"]
        start, start_lo, start_hi = t_mean_ci(starts.mean().to_numpy(dtype=float), confidence)
        spread = (starts.max() - starts.min()).max() if starts.ngroups else math.nan
        rows.append(
            [cell[0], g["label"].iloc[0], g["metric"].iloc[0], *cell[1:]]
            + [mine["visual_tokens"].iloc[0]]
            + (
                [top["mean"], top["lo"], top["hi"], top["n"], top["seeds"], top["lr"]]
                if top is not None
                else [math.nan, math.nan, math.nan, 0, int(mine["seeds"].max()), math.nan]
            )
            + [len(done), g["lr"].nunique(), start, start_lo, start_hi, starts.ngroups, spread]
        )
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    out["visual_tokens"] = out["visual_tokens"].astype("Int64")
    return _sorted(out, ["resolution"])


def resolution_label(resolution: int, tokens: int | None, sep: str = " / ") -> str:
    """A resolution as the tables and the figure's axis show it: "96 px / 144 tokens"."""
    if tokens is None or tokens is pd.NA:
        return f"{resolution} px"
    return f"{resolution} px{sep}{int(tokens):,} tokens"


def resolution_labels(runs: pd.DataFrame, sep: str = " / ") -> dict[int, str]:
    """Each resolution of the sweep and its label: the visual tokens of the runs at it (known
    once a run started; several counts, when arms' encoders differ, joined with "|")."""
    out = {}
    for resolution, g in runs.dropna(subset=["resolution"]).groupby("resolution"):
        tokens = sorted({int(t) for t in g["visual_tokens"].dropna()})
        label = resolution_label(int(resolution), tokens[0] if len(tokens) == 1 else None, sep)
        if len(tokens) > 1:
            label += sep + "|".join(f"{t:,}" for t in tokens) + " tokens"
        out[int(resolution)] = label
    return out


def _setting_column(df: pd.DataFrame) -> bool:
    return bool((df["setting"].fillna("") != "").any())


def score_table(grid: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Every lr's finetuned held-out score x100 by benchmark, arm, (setting,) lr and
    resolution (columns): the mean over seeds with its t interval ("62.5 [41.2, 83.8]", the
    mean alone with one seed, :func:`seed_means`), ``seeds`` the number of seeds; each (arm,
    benchmark) headed by its :data:`STAGE2` row (the step-0 score at that resolution, a mean
    over its source runs, their number under ``seeds``). ``*`` marks the best lr of an arm at a
    resolution (the highest mean, chosen on this score); a point with fewer seeds evaluated
    than ``seeds`` says how many ("50.0 (1 of 2)"); a point without any shows the states of its
    runs ("pending", "2 pending")."""
    if grid.empty:
        return pd.DataFrame()
    labels = resolution_labels(runs)
    best = best_lr(grid).set_index(CELL)
    points = seed_means(grid).set_index([*CELL, "lr"])
    resolutions = sorted(grid["resolution"].dropna().unique())
    ident = ["benchmark", "arch", *(["setting"] if _setting_column(grid) else []), "lr", "seeds"]
    rows = []
    for (key, arch, setting), g in grid.groupby(
        ["benchmark", "arch", "setting"], sort=False, dropna=False
    ):
        head = {"benchmark": g["label"].iloc[0], "arch": arch, "setting": setting}
        row = {**head, "lr": STAGE2}
        sources = 0
        for r in resolutions:
            at = (key, arch, setting, r)
            if at in best.index:
                b = best.loc[at]
                row[labels[int(r)]] = interval_text(b["start"], b["start_lo"], b["start_hi"])
                sources = max(sources, int(b["sources"]))
            else:
                row[labels[int(r)]] = "–"
        rows.append({**row, "seeds": str(sources)})
        for lr in sorted(g["lr"].dropna().unique()):
            row = {**head, "lr": f"{lr:g}", "seeds": ""}
            for r in resolutions:
                at = (key, arch, setting, r, lr)
                hit = points.loc[at] if at in points.index else None
                row[labels[int(r)]] = _score_cell(hit, best, at[:4])
                if hit is not None:
                    row["seeds"] = str(int(hit["seeds"]))
            rows.append(row)
    table = pd.DataFrame(rows)
    return table[[*ident, *[labels[int(r)] for r in resolutions]]]


def _score_cell(point: pd.Series | None, best: pd.DataFrame, at: tuple) -> str:
    if point is None:
        return ""  # not in the sweep
    if point["n"] == 0:
        return point["waiting"]
    mark = "*" if at in best.index and best.loc[at, "lr"] == point.name[-1] else ""
    text = interval_text(point["mean"], point["lo"], point["hi"]) + mark
    return text + (f" ({point['n']} of {point['seeds']})" if point["n"] < point["seeds"] else "")


def best_table(best: pd.DataFrame) -> pd.DataFrame:
    """Figure 3 as numbers, one row per benchmark, arm, (setting,) and resolution: the visual
    tokens, the stage-2 score at that resolution before finetuning (step 0; a mean over source
    runs), the best lr's finetuned score and that lr (the highest mean over seeds, chosen on
    this same held-out score; "mean [t interval]", the mean alone with one seed), how many
    seeds that mean has ("1 of 2" when some are not evaluated), how many lrs are in, and the
    gains, differences of means: finetuned - stage 2, and finetuned - the arm's finetuned score
    at its lowest resolution (the question: does a longer image sequence help?). Scores
    x100."""
    if best.empty:
        return pd.DataFrame()
    out = best.copy()
    lowest = out[out["best"].notna()].groupby(["benchmark", "arch", "setting"], dropna=False)
    base = lowest.apply(lambda g: g.loc[g["resolution"].idxmin()], include_groups=False)
    gains = []
    for _, r in out.iterrows():
        at = (r["benchmark"], r["arch"], r["setting"])
        ref = base.loc[at] if at in base.index else None
        same = ref is None or ref["resolution"] == r["resolution"]
        gains.append(r["best"] - ref["best"] if not same else math.nan)
    table = pd.DataFrame(
        {
            "benchmark": out["label"],
            "arch": out["arch"],
            "setting": out["setting"],
            "resolution": out["resolution"],
            "visual tokens": out["visual_tokens"],
            STAGE2: [
                interval_text(m, lo, hi)
                for m, lo, hi in zip(out["start"], out["start_lo"], out["start_hi"], strict=True)
            ],
            "finetuned (best lr)": [
                interval_text(m, lo, hi)
                for m, lo, hi in zip(out["best"], out["lo"], out["hi"], strict=True)
            ],
            "best lr": [f"{lr:g}" if math.isfinite(lr) else "–" for lr in out["lr"]],
            "seeds": [
                str(n) if n == of else f"{n} of {of}"
                for n, of in zip(out["n"], out["seeds"], strict=True)
            ],
            "lrs in": [f"{e}/{n}" for e, n in zip(out["evaluated"], out["lrs"], strict=True)],
            "gain over stage 2": [_fmt(v, "{:+.1f}") for v in out["best"] - out["start"]],
            "gain over lowest resolution": [_fmt(v, "{:+.1f}") for v in gains],
        }
    )
    if not _setting_column(out):
        table = table.drop(columns="setting")
    return table


def _fmt(value: float, fmt: str = "{:.1f}") -> str:
    return fmt.format(value) if math.isfinite(value) else "–"


def finetune_overview(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run as the reader wants it: identity (its setting and seeds where they vary),
    state, phase and progress."""
    out = runs.copy()
    out["progress"] = [
        f"{s if s is not None and s is not pd.NA else '–'}/{n if n is not pd.NA else '?'}"
        for s, n in zip(out["step"], out["steps"], strict=True)
    ]
    cols = ["name", "arch", "task", "resolution", "visual_tokens", "lr", "setting", "seed"]
    out = out[[*cols, "state", "stage", "progress", "reason"]].rename(
        columns={"progress": "step", "visual_tokens": "visual tokens"}
    )
    drop = [c for c in ("setting", "seed") if not (runs[c].fillna("") != "").any()]
    return out.drop(columns=drop)


def state_counts(runs: pd.DataFrame) -> pd.DataFrame:
    """How many runs are in each state, per arch and task."""
    keys = runs.assign(arch=runs["arch"].fillna("?"), task=runs["task"].fillna("?"))
    counts = keys.pivot_table(
        index=["arch", "task"], columns="state", values="name", aggfunc="count", fill_value=0
    )
    counts["total"] = counts.sum(axis=1)
    counts = counts.reset_index().rename_axis(columns=None)
    archs = arch_order(counts["arch"].unique())
    rank = [archs.index(a) if a in archs else len(archs) for a in counts["arch"]]
    return counts.iloc[sorted(range(len(counts)), key=lambda i: (rank[i], i))]


def finetune_notes(sweep: FinetuneSweep, grid: pd.DataFrame) -> list[str]:
    """What a reader must know before reading the figure: runs without results, what the
    points average over (seeds, and points with fewer of them), stage-2 points that disagree
    across runs of one source or are missing, and how the two scores were measured."""
    runs, notes = sweep.runs, []
    if not runs["evaluated"].any():
        notes.append(
            "No run has held-out results yet (eval/heldout/results.json): the figure and the "
            "tables show the stage-2 points of the runs that logged their step-0 evaluation."
        )
    waiting = runs[~runs["evaluated"]]
    if not waiting.empty and runs["evaluated"].any():
        states = waiting["state"].value_counts()
        pairs = zip(waiting["name"], waiting["state"], strict=True)
        named = ", ".join(f"{n} ({s})" for n, s in pairs)
        notes.append(
            f"{len(waiting)} of {len(runs)} runs have no held-out results yet "
            f"({', '.join(f'{c} {s}' for s, c in states.items())}): {named}. A best lr is the "
            "best of the lrs evaluated so far ('lrs in'), a mean over the seeds evaluated so "
            "far ('seeds')."
        )
    notes += _seed_notes(runs, grid)
    best = best_lr(grid)
    spread = best[best["start_spread"] > 0.05]  # x100: more than 0.05 points
    for _, r in spread.iterrows():
        notes.append(
            f"{r['label']}, {r['arch']} at {r['resolution']} px: the step-0 scores of its runs "
            f"from one source run differ by {r['start_spread']:.2f} points although they start "
            "from the same weights (nondeterministic kernels?); the stage-2 point is their mean."
        )
    if not grid.empty and grid["start"].isna().all():
        notes.append(
            "No run logged a step-0 evaluation (train.eval_at_start false?): no stage-2 point."
        )
    if (runs["data"] == "files").any():
        notes.append(
            "Dataset files: the stage-2 point is training's step-0 held-out evaluation, on the "
            "first n_heldout examples of the held-out set; the finetuned score is "
            "eval/heldout/results.json, on every example of it. On the shapes dataset both "
            "score the same scenes."
        )
    return notes


def _seed_notes(runs: pd.DataFrame, grid: pd.DataFrame) -> list[str]:
    """Which seeds the points average over, and the points with fewer seeds than their arm."""
    keys = sorted(
        {p.split("=", 1)[0] for text in runs["seed"].fillna("") if text for p in text.split(", ")}
    )
    points = seed_means(grid)
    if points.empty or (points["seeds"].max() < 2 and not keys):
        return []
    notes = [
        "Every point is a mean over seeds: runs that differ only in "
        + (", ".join(keys) if keys else "their source run")
        + " are replicas ('seeds' in the tables: how many); the intervals are 95% Student t "
        "intervals of the mean, none with one seed (with two they are the mean +- 9 sd: the "
        "figure's bars may run off its panel, the tables print them). The best lr is the one "
        "with the highest mean."
    ]
    short = points[(points["n"] > 0) & (points["n"] < points["seeds"])]
    if not short.empty:
        named = ", ".join(
            f"{r['label']}, {r['arch']} {r['resolution']} px lr {r['lr']:g} "
            f"({r['n']} of {r['seeds']})"
            for _, r in short.iterrows()
        )
        notes.append(
            f"{len(short)} of {int((points['n'] > 0).sum())} points average fewer seeds than "
            f"their arm has (the others are not evaluated yet, or missing): {named}. Their "
            "intervals are wider, or absent with one seed, and a best lr may compare means "
            "over different numbers of seeds."
        )
    return notes


# Figure 3 on the paper's splits ----------------------------------------------------------------

REPORTED_COLUMNS = [*GRID_COLUMNS, "heldout", "split"]
# one row per (benchmark, arch, setting, resolution) of the reported split: the lr chosen on
# the held-out score and the reported score at that lr
REPORTED_POINT_COLUMNS = [
    "benchmark",
    "label",
    "metric",
    "heldout",
    "split",
    "arch",
    "setting",
    "resolution",
    "visual_tokens",
    "lr",
    "val",
    "val_lo",
    "val_hi",
    "score",
    "lo",
    "hi",
    "n",
    "seeds",
    "waiting",
]
TEST, HELD_OUT = "test", "held-out"  # the ``split`` a reported point is on
NO_TEST = "no test split"  # the state of a done run whose config scores none


def reported_grid(grid: pd.DataFrame, tests: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """:func:`finetune_grid` on the split each task is reported on, columns
    :data:`REPORTED_COLUMNS`: a held-out benchmark that some run also scored on a test split
    (``tests`` rows paired with it) becomes one row per (run, test benchmark), ``score`` the
    test score x100 (NaN where the run lacks it; its ``state`` then says why: the run's state
    while it is not done, :data:`NO_TEST` when its config scores no test split), ``start`` NaN
    (step 0 scores the held-out set only), ``heldout`` the held-out benchmark the lr is chosen
    on and ``split`` :data:`TEST`; any other held-out benchmark stays as it is (``split``
    :data:`HELD_OUT`): it is its task's reported split (VQAv2's val2014, the shapes
    dataset's held-out scenes)."""
    if grid.empty:
        return pd.DataFrame(columns=REPORTED_COLUMNS)
    paired = tests[tests["heldout"].notna()] if not tests.empty else tests
    test_keys = paired.groupby("heldout", sort=False)["benchmark"].unique().to_dict()
    by_run = paired.set_index(["run", "benchmark"])["score"].to_dict()
    about = paired.drop_duplicates("benchmark").set_index("benchmark")
    configured = dict(zip(runs["name"], runs.get("test_splits", ""), strict=False))
    rows = []
    for _, g in grid.iterrows():
        keys = test_keys.get(g["benchmark"])
        if keys is None:
            rows.append({**g.to_dict(), "heldout": g["benchmark"], "split": HELD_OUT})
            continue
        for key in keys:
            score = by_run.get((g["run"], key), math.nan)
            state = g["state"]
            if not math.isfinite(score) and state == "done":
                state = "not scored" if configured.get(g["run"]) else NO_TEST
            metric = about.loc[key, "metric"]
            rows.append(
                {
                    **g.to_dict(),
                    "benchmark": key,
                    "label": about.loc[key, "label"],
                    "metric": metric if isinstance(metric, str) else g["metric"],
                    "state": state,
                    "score": SCALE * score,
                    "start": math.nan,
                    "heldout": g["benchmark"],
                    "split": TEST,
                }
            )
    out = pd.DataFrame(rows, columns=REPORTED_COLUMNS)
    out["score"], out["start"] = out["score"].astype(float), out["start"].astype(float)
    return _sorted(out, ["resolution", "lr", "seed"])


def reported_points(
    grid: pd.DataFrame, tests: pd.DataFrame, runs: pd.DataFrame, confidence: float = 0.95
) -> pd.DataFrame:
    """SHAKEUP's Figure 3 as the paper reports it, one row per (benchmark, arch, setting,
    resolution) of :func:`reported_grid`, columns :data:`REPORTED_POINT_COLUMNS`.

    The rule: the lr is chosen per (arch, task, setting, resolution) on the held-out (val)
    score, by :func:`best_lr` (the highest mean over seeds; the same choice the held-out
    figure shows), and the point is the reported split's score at that lr (``score``, t
    interval ``lo``, ``hi`` over its ``n`` of ``seeds`` seeds, :func:`seed_means`); ``val``,
    ``val_lo``, ``val_hi`` the held-out score it was chosen on. Why: choosing on the test
    split would make the test point optimistic, as the held-out figure's best lr is; a task
    without a test split (``split`` :data:`HELD_OUT`) has only its held-out score, and its
    point is that optimistic one. ``waiting`` says why a point has no score (the states of
    its runs at the chosen lr, or "no lr evaluated on held-out")."""
    rep = reported_grid(grid, tests, runs)
    if rep.empty:
        return pd.DataFrame(columns=REPORTED_POINT_COLUMNS)
    chosen = best_lr(grid, confidence).set_index(CELL)
    points = seed_means(rep, confidence)
    seeds = points.groupby(["benchmark", "arch", "setting"], dropna=False)["seeds"].max()
    points = points.set_index([*CELL, "lr"])
    rows = []
    for cell, g in rep.groupby(CELL, sort=False, dropna=False):
        at = (g["heldout"].iloc[0], *cell[1:])
        pick = chosen.loc[at] if at in chosen.index else None
        lr = float(pick["lr"]) if pick is not None else math.nan
        key = (*cell, lr)
        point = points.loc[key] if math.isfinite(lr) and key in points.index else None
        tokens = g["visual_tokens"].dropna()
        rows.append(
            [cell[0], g["label"].iloc[0], g["metric"].iloc[0], at[0], g["split"].iloc[0]]
            + [*cell[1:], tokens.iloc[0] if not tokens.empty else pd.NA, lr]
            + ([pick["best"], pick["lo"], pick["hi"]] if pick is not None else [math.nan] * 3)
            + (
                [point["mean"], point["lo"], point["hi"], int(point["n"])]
                if point is not None
                else [math.nan, math.nan, math.nan, 0]
            )
            + [int(seeds.loc[tuple(cell[:3])])]
            + [point["waiting"] if point is not None else "no lr evaluated on held-out"]
        )
    out = pd.DataFrame(rows, columns=REPORTED_POINT_COLUMNS)
    out["visual_tokens"] = out["visual_tokens"].astype("Int64")
    return _sorted(out, ["resolution"])


def reported_table(points: pd.DataFrame) -> pd.DataFrame:
    """Figure 3 on the paper's splits as numbers (:func:`reported_points`), one row per
    benchmark, arm, (setting,) and resolution: the split, the lr chosen on the held-out
    score and that score, the reported split's score at that lr ("mean [t interval]" over
    seeds, the mean alone with one; why not, where it has none), its seeds ("1 of 2" when
    some are missing), and its gain over the arm's lowest resolution. Scores x100."""
    if points.empty:
        return pd.DataFrame()
    done = points[points["score"].notna()]
    lowest = {  # (benchmark, arch, setting) -> (its lowest resolution with a score, that score)
        k: tuple(g.loc[g["resolution"].idxmin(), ["resolution", "score"]])
        for k, g in done.groupby(["benchmark", "arch", "setting"], sort=False, dropna=False)
    }
    gains = []
    for _, r in points.iterrows():
        low, ref = lowest.get((r["benchmark"], r["arch"], r["setting"]), (None, math.nan))
        gains.append(r["score"] - ref if low is not None and low != r["resolution"] else math.nan)
    table = pd.DataFrame(
        {
            "benchmark": points["label"],
            "split": points["split"],
            "arch": points["arch"],
            "setting": points["setting"],
            "resolution": points["resolution"],
            "visual tokens": points["visual_tokens"],
            "lr (chosen on held-out)": [
                f"{v:g}" if math.isfinite(v) else "–" for v in points["lr"]
            ],
            "held-out at that lr": [
                interval_text(m, lo, hi)
                for m, lo, hi in zip(points["val"], points["val_lo"], points["val_hi"], strict=True)
            ],
            "reported score": [
                interval_text(r["score"], r["lo"], r["hi"]) if r["n"] > 0 else r["waiting"]
                for _, r in points.iterrows()
            ],
            "seeds": [
                str(n) if n == of else f"{n} of {of}"
                for n, of in zip(points["n"], points["seeds"], strict=True)
            ],
            "gain over lowest resolution": [_fmt(v, "{:+.1f}") for v in gains],
        }
    )
    if not _setting_column(points):
        table = table.drop(columns="setting")
    return table


def test_split_table(grid: pd.DataFrame, tests: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Every run of a task with a test split, one row per (run, test benchmark): its arm,
    (setting, seeds,) resolution and lr, its held-out score x100 and its test score x100, or
    why it has none (:data:`NO_TEST`: its config scores no test split; else its state:
    ``running`` while it scores it, ``pending``, ``failed`` ...); ``*`` marks the runs at the
    lr chosen for their (arm, resolution) on the held-out score, the ones Figure 3 averages.
    Empty when no run has a test split."""
    rep = reported_grid(grid, tests, runs)
    rep = rep[rep["split"] == TEST]
    if rep.empty:
        return pd.DataFrame()
    held = grid.set_index(["run", "benchmark"])["score"].to_dict()
    chosen = best_lr(grid).set_index(CELL)["lr"].to_dict()
    table = pd.DataFrame(
        {
            "run": rep["run"],
            "benchmark": rep["label"],
            "arch": rep["arch"],
            "setting": rep["setting"],
            "seed": rep["seed"],
            "resolution": rep["resolution"],
            "lr": [
                f"{r['lr']:g}"
                + ("*" if chosen.get((r["heldout"], *[r[c] for c in CELL[1:]])) == r["lr"] else "")
                for _, r in rep.iterrows()
            ],
            "held-out": [
                _fmt(held.get((r, h), math.nan))
                for r, h in zip(rep["run"], rep["heldout"], strict=True)
            ],
            "test": [
                _fmt(s) if math.isfinite(s) else st
                for s, st in zip(rep["score"], rep["state"], strict=True)
            ],
        }
    )
    drop = [c for c in ("setting", "seed") if not (table[c].fillna("") != "").any()]
    return table.drop(columns=drop).reset_index(drop=True)


def test_split_notes(sweep: FinetuneSweep, grid: pd.DataFrame) -> list[str]:
    """What a reader of Figure 3 on the paper's splits must know: the lr rule, which tasks
    have no test split (their points are the held-out ones, optimistic), which runs lack
    their task's test split, and benchmarks scored that are not a test split of the task."""
    rep = reported_grid(grid, sweep.tests, sweep.runs)
    if rep.empty:
        return []
    notes = []
    tested = rep[rep["split"] == TEST]
    if not tested.empty:
        labels = ", ".join(dict.fromkeys(tested["label"]))
        notes.append(
            f"Test splits ({labels}): each point is the test score of the lr chosen for its "
            "arm and resolution on the held-out (val) score, the held-out figure's best lr; "
            "the test split never chooses, so these points are not optimistic."
        )
        lacking = tested[tested["score"].isna()]
        if not lacking.empty:
            named = ", ".join(
                f"{n} ({s})" for n, s in zip(lacking["run"], lacking["state"], strict=True)
            )
            notes.append(
                f"{lacking['run'].nunique()} of {tested['run'].nunique()} runs of a task with a "
                f"test split have no test score: {named}."
            )
    for label in dict.fromkeys(rep.loc[rep["split"] == HELD_OUT, "label"]):
        notes.append(
            f"{label}: no run has a test split (eval/<benchmark>/); its Figure 3 panel is the "
            "held-out score, the lr chosen on that same score (optimistic)."
        )
    other = sweep.tests[sweep.tests["heldout"].isna()] if not sweep.tests.empty else sweep.tests
    if not other.empty:
        named = ", ".join(
            dict.fromkeys(f"{r['label']} (eval/{r['folder']})" for _, r in other.iterrows())
        )
        notes.append(
            f"Also scored, not a split of the finetune's task, left out of Figure 3: {named}."
        )
    return notes
