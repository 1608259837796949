"""Read the look-inside results of a sweep (``vlab inspect``'s tables) for the report.

``vlab inspect`` writes, per run directory and checkpoint step, ``inside/step-<step>/
<analysis>.csv`` (a tidy table whose first column is ``step``) and, last, ``<analysis>.json``
(the marker that the table is complete). :func:`load_inside` concatenates every finished table
of every run into one tidy table per analysis, with the run's ``run``, ``arch``, ``variant`` and
``length`` in front, and says in :attr:`InsideResults.warnings` what it could not use (a run
never inspected, an analysis missing, a table unreadable). Nothing is dropped silently and
nothing raises on a partial sweep.

VLM runs (a stage of ``vlab vlm train``, told apart by their config as
:func:`vlab.experiment.stage_of` does) have ``image_attention`` and the probe analyses on
grounding examples (``vlm_state_probe``, ``vlm_patching``, ``vlm_logit_lens``,
:mod:`vlab.analysis.inside.vlm_analyses`): their tables get ``run``, ``arch`` (the LM's),
``ordering`` (``model.sequence.ordering``: ``task_agnostic``, image first, or ``task_aware``,
instruction first) and ``stage`` in front, and the images of ``image_attention``'s first
examples (``step-<step>/image_attention/examples.json`` and ``example-<k>.png``) are listed
in :attr:`InsideResults.image_examples`.

pandas only, never torch: ``vlab report`` loads this module and must stay light (see
``tests/core/test_layering.py``). Run metadata comes from :func:`vlab.analysis.load.load_sweep`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from vlab.analysis.load import UNREADABLE, load_sweep, run_dirs
from vlab.errors import ConfigError, VlabError
from vlab.experiment import stage_in
from vlab.records import NonNegative, Real, join_relative, parse_record, read_json_file
from vlab.rundir import RunDir

INSIDE = "inside"  # the folder in a run directory (as vlab.analysis.inside.inspection writes it)
STEP_PREFIX = "step-"
# Columns each analysis's CSV holds after ``step``: the one list the analysis modules build
# their tables with (their ``COLUMNS``) and this reader checks, kept here, free of torch.
COLUMNS: dict[str, list[str]] = {
    "logit_lens": ["layer", "target_position", "probability", "accuracy", "rank"],
    "attention": ["layer", "head", "kind", "target_position", "source_position", "weight"],
    "state_probe": [
        "layer",
        "source",
        "label",
        "position",
        "accuracy",
        "chance",
        "n_train",
        "n_test",
        "n_classes",
    ],
    "patching": [
        "corruption",
        "site",
        "layer",
        "position",
        "token",
        "recovery",
        "ld_clean",
        "ld_corrupted",
        "ld_patched",
        "n",
    ],
}
ANALYSES = tuple(COLUMNS)  # the probe runs' analyses
RUN_KEYS = ["run", "arch", "variant", "length"]
RUN_COLUMNS = [*RUN_KEYS, "state", "inspected_steps", "last_step", *ANALYSES, "path"]
UNIT_COLUMNS = ["run", "step", "analysis", "examples", "examples_used", "rows", "seconds"]
# VLM runs: their analyses' columns (``vlab.analysis.inside.vlm.COLUMNS`` is this), keys, files.
VLM_COLUMNS: dict[str, list[str]] = {
    "image_attention": [
        "example",
        "layer",
        "kind",
        "row",
        "col",
        "weight",
        "target",
        "target_row",
        "target_col",
        "on_target",
    ],
    # vlab.analysis.inside.vlm_analyses: the probe analyses on grounding examples
    "vlm_state_probe": [*COLUMNS["state_probe"], "row", "col"],
    "vlm_patching": [*COLUMNS["patching"][:5], "row", "col", *COLUMNS["patching"][5:]],
    "vlm_logit_lens": ["layer", "answer_index", "token", "probability", "accuracy", "rank", "n"],
}
VLM_ANALYSES = tuple(VLM_COLUMNS)
VLM_KEYS = ["run", "arch", "ordering", "stage"]
VLM_RUN_COLUMNS = [
    *VLM_KEYS,
    "state",
    "inspected_steps",
    "last_step",
    *VLM_ANALYSES,
    "example_images",
    "path",
]
EXAMPLES_FOLDER, EXAMPLES_FILE = "image_attention", "examples.json"
EXAMPLE_COLUMNS = [
    *VLM_KEYS,
    "step",
    "example",
    "file",
    "x1",
    "y1",
    "x2",
    "y2",
    "target",
    "prompt",
    "response",
    "grid_rows",
    "grid_cols",
    "image_rows",
    "image_cols",
]

# What to do about a damaged results file: ``vlab inspect`` redoes a unit whose marker does
# not match (see :func:`vlab.analysis.inside.inspection.is_done`).
REDO = "delete it and run `vlab inspect` on the run again: it redoes that step's analysis"


@dataclass(frozen=True)
class UnitMarker:
    """``inside/step-<step>/<analysis>.json``, written last by ``vlab inspect``
    (:func:`vlab.analysis.inside.inspection._run_unit`): the settings the table was made with
    (``analysis``, ``version``, ``examples``), what it used and took; its presence says the
    table beside it is complete, so a damaged one leaves the table out, as a missing one
    does."""

    analysis: str | None = None
    examples: NonNegative | None = None
    examples_used: NonNegative | None = None
    rows: NonNegative | None = None
    seconds: Real | None = None
    step: NonNegative | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExamplesFile:
    """``inside/step-<step>/image_attention/examples.json``
    (:func:`vlab.analysis.inside.vlm.write_example_images`): the VLM's ``grid`` and its
    encoder's ``image_grid`` (rows, cols) and one object per drawn example (each checked
    where it is drawn: a bad one leaves out that example only)."""

    grid: list[NonNegative]
    image_grid: list[NonNegative]
    examples: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("grid", "image_grid"):
            value = getattr(self, name)
            if len(value) != 2 or 0 in value:
                raise ConfigError(name, f"expected [rows, cols] of two counts > 0, got {value}")


@dataclass
class InsideResults:
    """The look-inside tables of a sweep.

    ``tables[analysis]``: every finished result of that analysis, columns :data:`RUN_KEYS` +
    ``step`` + :data:`COLUMNS` ``[analysis]``, one table for all runs and steps (empty, with
    those columns, when no run has it); for the VLM analyses (``image_attention``)
    :data:`VLM_KEYS` + ``step`` + :data:`VLM_COLUMNS` ``[analysis]``. ``runs``: one row per
    probe run of the sweep, columns :data:`RUN_COLUMNS` (per analysis, the number of steps
    with its results); ``vlm_runs`` the same for VLM runs (:data:`VLM_RUN_COLUMNS`).
    ``units``: one row per finished (run, step, analysis), from its JSON marker.
    ``image_examples``: one row per example image written beside an ``image_attention``
    table (:data:`EXAMPLE_COLUMNS`; ``file`` its absolute path, the box as fractions of the
    image, the VLM's grid and its encoder's). ``warnings``: what could not be used, one line
    each, naming the run and the file.
    """

    root: Path
    name: str
    runs: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    units: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    step: str | int | None = None  # set by at_step: the checkpoint these tables hold
    vlm_runs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=VLM_RUN_COLUMNS))
    image_examples: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=EXAMPLE_COLUMNS)
    )

    @property
    def logit_lens(self) -> pd.DataFrame:
        return self.tables["logit_lens"]

    @property
    def attention(self) -> pd.DataFrame:
        return self.tables["attention"]

    @property
    def state_probe(self) -> pd.DataFrame:
        return self.tables["state_probe"]

    @property
    def patching(self) -> pd.DataFrame:
        return self.tables["patching"]

    @property
    def image_attention(self) -> pd.DataFrame:
        return self.tables["image_attention"]

    def has(self, analysis: str) -> bool:
        """Whether any run has results of ``analysis``."""
        return not self.tables[analysis].empty

    def missing_note(self, analysis: str) -> str:
        """One line saying that ``analysis`` has no results (here) and how to make them."""
        if isinstance(self.step, int):
            return (
                f"no {analysis} results at step {self.step} in any run: inspect that "
                f"checkpoint with `vlab inspect {self.root} --analyses {analysis} "
                f"--checkpoints {self.step}`, or show another step"
            )
        return (
            f"no {analysis} results in any run: run `vlab inspect {self.root} "
            f"--analyses {analysis}` (add `--checkpoints all` for every kept step)"
        )

    def at_step(self, step: str | int = "last") -> InsideResults:
        """The results at one checkpoint per run: ``"last"`` (each run's last inspected step,
        per analysis) or a step number (runs without results there are left out, with a
        warning naming them)."""
        if step == "last":
            tables = {a: last_step(t) for a, t in self.tables.items()}
            return replace(self, tables=tables, image_examples=self._examples_of(tables), step=step)
        if isinstance(step, bool) or not isinstance(step, int):
            raise VlabError(f"step must be 'last' or a checkpoint step (an integer), got {step!r}")
        tables, notes = {}, []
        for analysis, table in self.tables.items():
            tables[analysis] = table[table["step"] == step].reset_index(drop=True)
            lacking = sorted(set(table["run"]) - set(tables[analysis]["run"]))
            if lacking:
                notes.append(
                    f"{', '.join(lacking)}: no {analysis} results at step {step}; left out "
                    f"(steps there: {_steps_text(table[table['run'].isin(lacking)]['step'])})"
                )
        return replace(
            self,
            tables=tables,
            image_examples=self._examples_of(tables),
            warnings=[*self.warnings, *notes],
            step=step,
        )

    def _examples_of(self, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        """The example images of the (run, step) pairs that ``tables`` keep."""
        shown = tables["image_attention"][["run", "step"]].drop_duplicates()
        kept = self.image_examples.merge(shown, on=["run", "step"])
        return kept[EXAMPLE_COLUMNS].reset_index(drop=True)


def last_step(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last step in ``table`` (a table of :class:`InsideResults`)."""
    if table.empty:
        return table.copy()
    last = table.groupby("run")["step"].transform("max")
    return table[table["step"] == last].reset_index(drop=True)


def load_inside(path: str | Path) -> InsideResults:
    """Every finished look-inside table of the sweep, folder of runs or run at ``path``.

    Raises :class:`~vlab.errors.VlabError` only when ``path`` holds no runs at all.
    """
    sweep = load_sweep(path)
    warnings: list[str] = []
    parts: dict[str, list[pd.DataFrame]] = {a: [] for a in (*ANALYSES, *VLM_ANALYSES)}
    examples: list[dict] = []
    units: list[dict] = []
    rows, vlm_rows = [], []
    targets = [
        run._replace(name=name, path=str(path))
        for run in sweep.runs.itertuples(index=False)
        for name, path in (run_dirs(run.name, Path(run.path)) or [(run.name, Path(run.path))])
    ]
    for run in targets:
        config = _config(Path(run.path))
        if stage_in(config) is not None:  # a vlab vlm train stage's config
            meta = _vlm_meta(run, config)
            keys, analyses = VLM_KEYS, VLM_ANALYSES
        else:
            meta = {
                "run": run.name,
                "arch": run.arch,
                "variant": run.variant,
                "length": None if pd.isna(run.length) else int(run.length),
            }
            keys, analyses = RUN_KEYS, ANALYSES
        found = _load_run(Path(run.path), run.state, meta, keys, analyses, parts, units, warnings)
        steps = sorted({s for a in found.values() for s in a})
        row = {
            **meta,
            "state": run.state,
            "inspected_steps": len(steps),
            "last_step": steps[-1] if steps else None,
            **{a: len(found[a]) for a in analyses},
            "path": run.path,
        }
        if analyses == VLM_ANALYSES:
            for step in found["image_attention"]:
                examples += _read_examples(Path(run.path), step, meta, warnings)
            row["example_images"] = sum(1 for e in examples if e["run"] == run.name)
            vlm_rows.append(row)
        else:
            rows.append(row)
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    runs["length"] = runs["length"].astype("Int64")
    runs["last_step"] = runs["last_step"].astype("Int64")
    vlm_runs = pd.DataFrame(vlm_rows, columns=VLM_RUN_COLUMNS)
    vlm_runs["stage"] = vlm_runs["stage"].astype("Int64")
    vlm_runs["last_step"] = vlm_runs["last_step"].astype("Int64")
    warnings += _gap_notes(runs)
    tables = {a: _concat(parts[a], [*RUN_KEYS, "step", *COLUMNS[a]]) for a in ANALYSES}
    for a in VLM_ANALYSES:
        tables[a] = _concat(parts[a], [*VLM_KEYS, "step", *VLM_COLUMNS[a]])
    image_examples = pd.DataFrame(examples, columns=EXAMPLE_COLUMNS)
    return InsideResults(
        sweep.root,
        sweep.name,
        runs,
        tables,
        pd.DataFrame(units, columns=UNIT_COLUMNS),
        warnings,
        vlm_runs=vlm_runs,
        image_examples=image_examples,
    )


def _config(path: Path) -> dict:
    """The run's config.json as :meth:`~vlab.rundir.RunDir.read_config` reads it; {} when it
    is missing or damaged (:func:`~vlab.analysis.load.load_sweep` has warned of it)."""
    try:
        return RunDir(path).read_config()
    except UNREADABLE:
        return {}


def _vlm_meta(run, config: dict) -> dict:
    """``run``, ``arch`` (the LM's), ``ordering`` and ``stage`` of a VLM stage's config."""
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    lm = model.get("lm") if isinstance(model.get("lm"), dict) else {}
    sequence = model.get("sequence") if isinstance(model.get("sequence"), dict) else {}
    stage = config.get("stage")
    return {
        "run": run.name,
        "arch": lm.get("arch", run.arch),
        "ordering": sequence.get("ordering"),
        "stage": stage if isinstance(stage, int) and not isinstance(stage, bool) else None,
    }


def _load_run(
    path: Path,
    state: str,
    meta: dict,
    keys: list[str],
    analyses: tuple[str, ...],
    parts: dict[str, list[pd.DataFrame]],
    units: list[dict],
    warnings: list[str],
) -> dict[str, list[int]]:
    """Append the run's finished tables of ``analyses`` to ``parts`` (``keys`` of ``meta`` in
    front); returns, per analysis, its steps."""
    name = meta["run"]
    found: dict[str, list[int]] = {a: [] for a in analyses}
    inside = path / INSIDE
    if not inside.is_dir():
        why = "pending, no run directory yet" if state == "pending" else "never inspected"
        warnings.append(f"{name}: no inside/ results ({why}); run `vlab inspect {path}`")
        return found
    lacking = [k for k in keys if meta[k] is None or _isnan(meta[k])]
    if lacking:
        said = ", ".join(keys[1:-1]) + " or " + keys[-1]
        warnings.append(
            f"{name}: its config.json gives no {said}; its inside/ results "
            "cannot be placed in the figures and are left out"
        )
        return found
    for folder in sorted(inside.iterdir()):
        step = _step_of(folder)
        if step is None:
            if not folder.name.startswith("."):
                warnings.append(
                    f"{name}: inside/{folder.name} is not a step-<step> folder; ignored"
                )
            continue
        for analysis in analyses:
            read = _read_table(folder, analysis, step, name, warnings)
            if read is None:
                continue
            table, marker = read
            for key in reversed(keys):
                table.insert(0, key, meta[key])
            parts[analysis].append(table)
            found[analysis].append(step)
            units.append(_unit(marker, name, step, analysis, len(table)))
    if not any(found.values()):
        warnings.append(f"{name}: inside/ holds no finished results; run `vlab inspect {path}`")
    return found


def _read_table(
    folder: Path, analysis: str, step: int, name: str, warnings: list[str]
) -> tuple[pd.DataFrame, dict] | None:
    """The finished table of ``analysis`` in ``folder`` and its marker (None, with a warning
    when it is there but unusable: a damaged marker, as a missing one, leaves it out)."""
    csv, marker = folder / f"{analysis}.csv", folder / f"{analysis}.json"
    where = f"{name}: inside/{folder.name}/{analysis}.csv"
    if not csv.is_file():
        return None
    if not marker.exists():
        warnings.append(f"{where} has no {analysis}.json (unfinished or being redone); left out")
        return None
    try:
        recorded = read_json_file(marker, REDO)
        parse_record(UnitMarker, recorded, marker, REDO)
    except UNREADABLE as e:
        warnings.append(f"{where}: its marker is damaged ({e}); left out")
        return None
    try:
        table = pd.read_csv(csv)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # pandas' parse errors are ValueErrors
        said = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        warnings.append(f"{where} is unreadable ({said}); left out")
        return None
    wanted = ["step", *{**COLUMNS, **VLM_COLUMNS}[analysis]]
    lacking = [c for c in wanted if c not in table.columns]
    if lacking:
        warnings.append(f"{where} lacks the columns {', '.join(lacking)}; left out")
        return None
    if not (table["step"] == step).all():
        warnings.append(f"{where} holds rows of another step than its folder's; left out")
        return None
    return table[wanted].copy(), recorded


def _read_examples(path: Path, step: int, meta: dict, warnings: list[str]) -> list[dict]:
    """The example images beside the run's ``image_attention`` table of ``step`` (rows of
    :data:`EXAMPLE_COLUMNS`); a missing or unusable file is a warning, never an error."""
    folder = path / INSIDE / f"{STEP_PREFIX}{step:09d}" / EXAMPLES_FOLDER
    where = f"{meta['run']}: inside/{folder.parent.name}/{EXAMPLES_FOLDER}"
    listing = folder / EXAMPLES_FILE
    if not listing.is_file():
        warnings.append(
            f"{where}/{EXAMPLES_FILE} is missing (inspected by an older vlab), so its examples "
            f"are not drawn; run `vlab inspect {path}` again"
        )
        return []
    try:
        recorded = parse_record(ExamplesFile, read_json_file(listing, REDO), listing, REDO)
    except UNREADABLE as e:
        warnings.append(f"{where}/{EXAMPLES_FILE} is unreadable ({e}); examples not drawn")
        return []
    grid, image_grid, entries = recorded.grid, recorded.image_grid, recorded.examples
    rows, lost = [], []
    for entry in entries:
        try:
            x1, y1, x2, y2 = (float(v) for v in entry["box"])
            row = {
                **meta,
                "step": step,
                "example": int(entry["index"]),
                # the image lies in this folder: an absolute or ../ path is not drawn
                "file": str(join_relative(folder, entry["file"], f"{EXAMPLES_FILE} file")),
                "x1": x1,
                "y1": y1,
                "x2": x2,
                "y2": y2,
                "target": str(entry["target"]),
                "prompt": str(entry.get("prompt", "")),
                "response": str(entry.get("response", "")),
                "grid_rows": grid[0],
                "grid_cols": grid[1],
                "image_rows": image_grid[0],
                "image_cols": image_grid[1],
            }
        except (KeyError, TypeError, ValueError, OverflowError, VlabError):
            lost.append(_shown(entry.get("file", "?")) if isinstance(entry, dict) else "?")
            continue
        if not Path(row["file"]).is_file():
            lost.append(Path(row["file"]).name)
            continue
        rows.append(row)
    if lost:
        warnings.append(
            f"{where}: {', '.join(lost)} listed in {EXAMPLES_FILE} but missing or malformed; "
            "left out"
        )
    return rows


def _shown(value: object) -> str:
    """A file name from examples.json for a warning: as it is when printable and short, else
    its repr cut short (a damaged file may hold anything there)."""
    if isinstance(value, str) and value.isprintable() and len(value) <= 60:
        return value
    return repr(value)[:60]


def target_share(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per ``keys`` (e.g. run, layer): how much of the image weight of an ``image_attention``
    table falls on the target, ``on-target weight / image weight`` per example, averaged over
    the examples (``share``), beside the mean total weight on the image (``image_weight``) and
    the mean share of the image's cells that overlap the target (``target_cells``: the share
    a uniform spread over the patches would put there)."""
    on_target = table["on_target"].astype(bool)
    per = (
        table.assign(on=table["weight"].where(on_target, 0.0), cell=on_target.astype(float))
        .groupby([*keys, "example"], as_index=False)
        .agg(
            image_weight=("weight", "sum"),
            on_target_weight=("on", "sum"),
            target_cells=("cell", "mean"),
        )
    )
    per["share"] = per["on_target_weight"] / per["image_weight"]
    return per.groupby(keys, as_index=False)[["share", "image_weight", "target_cells"]].mean()


def _unit(recorded: dict, name: str, step: int, analysis: str, rows: int) -> dict:
    """The units row of a finished table, from its marker (checked by :func:`_read_table`)."""
    return {
        "run": name,
        "step": step,
        "analysis": analysis,
        "examples": recorded.get("examples"),
        "examples_used": recorded.get("examples_used"),
        "rows": rows,
        "seconds": recorded.get("seconds"),
    }


def _gap_notes(runs: pd.DataFrame) -> list[str]:
    """Per inspected run, the analyses that other runs have and it lacks (at some steps)."""
    inspected = runs[runs["inspected_steps"] > 0]
    present = [a for a in ANALYSES if (runs[a] > 0).any()]
    notes = []
    for r in inspected.itertuples(index=False):
        lacking = [a for a in present if getattr(r, a) == 0]
        partial = [
            f"{a} at {getattr(r, a)} of {r.inspected_steps} steps"
            for a in present
            if 0 < getattr(r, a) < r.inspected_steps
        ]
        if lacking:
            notes.append(
                f"{r.run}: no {', '.join(lacking)} results (other runs have them); run "
                f"`vlab inspect {r.path} --analyses {','.join(lacking)}`"
            )
        if partial:
            notes.append(f"{r.run}: {'; '.join(partial)} inspected")
    return notes


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=columns)
    table = pd.concat(parts, ignore_index=True)[columns]
    return table.sort_values(["run", "step"], kind="stable").reset_index(drop=True)


def _step_of(folder: Path) -> int | None:
    digits = folder.name[len(STEP_PREFIX) :]
    if not (folder.is_dir() and folder.name.startswith(STEP_PREFIX) and digits.isdigit()):
        return None
    return int(digits)


def _steps_text(steps: pd.Series) -> str:
    values = sorted(set(int(s) for s in steps))
    return ", ".join(str(s) for s in values) or "none"


def _isnan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
