"""SHAKEUP's benchmark tables from the runs' benchmark suites (``RUN/eval/<benchmark>/``):
Tables 1 and 2 with the paper's columns, splits and per-group sums, Table 11 (task-aware vs
task-agnostic, relative gain per benchmark), and the per-benchmark slices; pure functions of the
tidy tables of :mod:`vlab.analysis.vlm` (``suite``, ``slices``, ``runs``).

Why a module apart from :mod:`vlab.analysis.vlm_tables`: those tables read the held-out
validation (``eval/heldout``, the run's own data, grouped coarse vs fine), which stays a table of
its own; these read the paper's test benchmarks and group them as the paper does.

The paper's grouping (SHAKEUP, Pantazopoulos et al. 2024, Tables 1 and 2, as recalled; where the
paper's exact column list is not certain the choice is stated here and in the README):

- Table 1. *Image Captioning*: COCO Karpathy test, NoCaps val (CIDEr). *General VQA*: VQAv2
  val, GQA test-dev, Visual7W telling test. *Visual Grounding*: RefCOCO testA / testB,
  RefCOCO+ testA / testB, RefCOCOg test (accuracy at IoU 0.5), Visual7W pointing test
  (four-way box choice).
- Table 2. *Reading Comprehension*: TextCaps val (CIDEr), TextVQA val, AI2D test. *Misc*:
  VSR test, POPE random / popular / adversarial (accuracy), each POPE split a column. Table 2's
  groups are shown unsummed, as in the paper (the spec's "unsummed").

A Table 1 group's sum (Σ) adds the x100 scores of the group's columns, as the paper sums per group
(CIDEr x100 and accuracies in % add within a group only, never across groups). It is taken over
the columns **every** evaluated run has, so the rows compare; the columns no run has, and those
only some runs have, are named under the table (:func:`coverage_notes`) and the Σ header says
"k of n" when it sums fewer than the group's n. Anything the suite scored that is not a paper
column (the RefCOCO val splits, MambaVLM's VizWiz and TallyQA, a benchmark of your own) is shown
under *Other benchmarks*, never summed.

Intervals are Student t intervals over seeds (or seed pairs), as in the rest of the VLM report
(:func:`vlab.analysis.stats.t_mean_ci`): a few seeds are too few for a bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vlab.analysis import vlm
from vlab.analysis.stats import t_mean_ci
from vlab.analysis.vlm_tables import (
    _groups,
    gain_cells,
    interval_text,
    paired_gains,
    seed_means,
    wide_display,
)

OTHER_GROUP = "Other benchmarks"
OTHER_TABLE = 0  # the table number of benchmarks that are no paper column


@dataclass(frozen=True)
class PaperGroup:
    """A task group of the paper's tables: its ``name``, the ``table`` it is in (1 or 2), its
    ``columns``: (results.json key "benchmark/task", column label), in the paper's order, and
    whether the paper sums it (``summed``: Table 1's groups; Table 2's are shown unsummed)."""

    name: str
    table: int
    columns: tuple[tuple[str, str], ...]
    summed: bool = True


PAPER_GROUPS: tuple[PaperGroup, ...] = (
    PaperGroup(
        "Image Captioning", 1, (("coco/caption", "COCO test"), ("nocaps/caption", "NoCaps val"))
    ),
    PaperGroup(
        "General VQA",
        1,
        (
            ("vqav2/vqa", "VQAv2 val"),
            ("gqa/vqa", "GQA test-dev"),
            ("visual7w_telling/mcvqa", "V7W telling"),
        ),
    ),
    PaperGroup(
        "Visual Grounding",
        1,
        (
            ("refcoco_testA/grounding", "RefCOCO testA"),
            ("refcoco_testB/grounding", "RefCOCO testB"),
            ("refcoco+_testA/grounding", "RefCOCO+ testA"),
            ("refcoco+_testB/grounding", "RefCOCO+ testB"),
            ("refcocog_test/grounding", "RefCOCOg test"),
            ("visual7w_pointing/mcvqa", "V7W pointing"),
        ),
    ),
    PaperGroup(
        "Reading Comprehension",
        2,
        (
            ("textcaps/caption", "TextCaps val"),
            ("textvqa/vqa", "TextVQA val"),
            ("ai2d/mcvqa", "AI2D"),
        ),
        summed=False,
    ),
    PaperGroup(
        "Misc",
        2,
        (
            ("vsr/itm", "VSR"),
            ("pope_random/pope", "POPE random"),
            ("pope_popular/pope", "POPE popular"),
            ("pope_adversarial/pope", "POPE adversarial"),
        ),
        summed=False,
    ),
)
GROUNDING = "Visual Grounding"  # the group of Figure 4


@dataclass(frozen=True)
class PaperColumn:
    """Where a key goes in the paper's tables: ``label``, ``group``, ``table`` (0: other) and
    ``order`` (the sort key of its column)."""

    key: str
    label: str
    group: str
    table: int
    order: tuple


def sum_key(group: str) -> str:
    """The pseudo-benchmark key of a group's sum ("sum:General VQA")."""
    return f"sum:{group}"


def paper_column(key: str) -> PaperColumn:
    """What :data:`PAPER_GROUPS` says of ``key`` (a results.json key, or a group's
    :func:`sum_key`); a key of no paper column goes to :data:`OTHER_GROUP`, labelled as the
    held-out tables label it."""
    for g_rank, group in enumerate(PAPER_GROUPS):
        if key == sum_key(group.name):
            return PaperColumn(key, "Σ", group.name, group.table, (g_rank, len(group.columns), ""))
        for c_rank, (k, label) in enumerate(group.columns):
            if k == key:
                return PaperColumn(key, label, group.name, group.table, (g_rank, c_rank, ""))
    rank = (len(PAPER_GROUPS), *vlm.benchmark(key).order[:2], key)
    return PaperColumn(key, vlm.benchmark(key).label, OTHER_GROUP, OTHER_TABLE, rank)


def paper_order(keys) -> list[str]:
    """Keys (benchmarks and group sums) in the paper's column order, other benchmarks last."""
    return sorted(set(keys), key=lambda k: paper_column(k).order)


# per run -----------------------------------------------------------------------------------


def suite_wide(runs: pd.DataFrame, suite: pd.DataFrame) -> pd.DataFrame:
    """The suite's scores x100 (accuracy in %, CIDEr x100) of every run that has one: index
    ``run`` in ``runs``' order, one column per benchmark key in the paper's order."""
    if suite.empty:
        return pd.DataFrame(index=pd.Index([], name="run"))
    wide = suite.pivot_table(index="run", columns="benchmark", values="score", aggfunc="first")
    order = [n for n in runs["name"] if n in wide.index]
    return (wide.loc[order, paper_order(wide.columns)] * vlm.SCALE).rename_axis(columns=None)


def group_sums(wide: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each paper group's sum per run, over the group's columns that every run of ``wide``
    (index run, columns benchmark keys, x100) scores, so rows compare; and what each sum
    covers.

    Returns (sums, coverage): ``sums`` has index run and one column :func:`sum_key` per group
    with at least one summed column; ``coverage`` one row per group: group, table, summed,
    summable (the paper sums it: Table 1's groups), partial (columns only some runs have: left
    out of the sum), missing (no run has them), as lists of labels, and n_summed, n_columns.
    """
    sums, rows = {}, []
    for group in PAPER_GROUPS:
        summed, partial, missing = [], [], []
        for key, label in group.columns:
            values = wide[key].to_numpy(dtype=float) if key in wide.columns else np.array([])
            have = np.isfinite(values)
            if have.size and have.all():
                summed.append((key, label))
            elif have.any():
                partial.append(label)
            else:
                missing.append(label)
        if summed and group.summed:
            sums[sum_key(group.name)] = wide[[k for k, _ in summed]].sum(axis=1)
        labels = [label for _, label in summed] if group.summed else []
        n_summed = len(summed) if group.summed else 0
        row = [group.name, group.table, group.summed, labels, partial, missing, n_summed]
        rows.append([*row, len(group.columns)])
    cols = ["group", "table", "summable", "summed", "partial", "missing", "n_summed"]
    cols.append("n_columns")
    return pd.DataFrame(sums, index=wide.index), pd.DataFrame(rows, columns=cols)


def with_sums(wide: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``wide`` with each group's sum after the group's columns (:func:`group_sums`), and the
    coverage of the sums."""
    sums, coverage = group_sums(wide)
    both = pd.concat([wide, sums], axis=1)
    return both[paper_order(both.columns)], coverage


def coverage_notes(coverage: pd.DataFrame) -> list[str]:
    """One line per group whose sum covers fewer than its columns: which it sums, which are
    missing (no run has them) and which only some runs have (left out so the rows compare)."""
    notes = []
    for _, r in coverage.iterrows():
        if not r["summable"]:  # shown unsummed, as in the paper: only say what is missing
            if r["missing"]:
                missing = ", ".join(r["missing"])
                notes.append(
                    f"{r['group']} (Table {r['table']}): missing {missing} (no run has it)"
                )
            continue
        if r["n_summed"] == r["n_columns"]:
            continue
        what = (
            f"Σ over {', '.join(r['summed'])} ({r['n_summed']} of {r['n_columns']})"
            if r["summed"]
            else "no sum (no column every run has)"
        )
        parts = [f"{r['group']} (Table {r['table']}): {what}"]
        if r["missing"]:
            parts.append(f"missing {', '.join(r['missing'])} (no run has it)")
        if r["partial"]:
            parts.append(f"left out {', '.join(r['partial'])} (only some runs have it)")
        notes.append("; ".join(parts))
    return notes


# over seeds ------------------------------------------------------------------------------------


def paper_summary(
    runs: pd.DataFrame, suite: pd.DataFrame, confidence: float = 0.95
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables 1 and 2 (and the other benchmarks) in long form: per (arch, ordering, setting)
    and column (group sums included), the mean over seeds of the x100 scores with a Student t
    interval at ``confidence`` (NaN with one seed) and the per-seed ``values``; and the sums'
    coverage (:func:`group_sums`).

    Columns: arch, ordering, setting, benchmark, label, group, table, n, mean, lo, hi, values.
    """
    cols = ["arch", "ordering", "setting", "benchmark", "label", "group", "table", "n"]
    cols += ["mean", "lo", "hi", "values"]
    wide, coverage = with_sums(suite_wide(runs, suite))
    if wide.empty:
        return pd.DataFrame(columns=cols), coverage
    rows = []
    for (arch, ordering, setting), key, stats in seed_means(runs, wide, confidence):
        c = paper_column(key)
        rows.append([arch, ordering, setting, key, c.label, c.group, c.table, *stats])
    return pd.DataFrame(rows, columns=cols), coverage


def _display(long: pd.DataFrame, index: list[str], cell, coverage: pd.DataFrame) -> pd.DataFrame:
    """``long`` as a table with two header rows, group over column label, in the paper's
    order; a sum's header says "Σ (k of n)" when it covers k of the group's n columns."""
    n = {r["group"]: (r["n_summed"], r["n_columns"]) for _, r in coverage.iterrows()}

    def header(key: str) -> tuple[str, str]:
        c = paper_column(key)
        label = c.label
        if key.startswith("sum:") and n.get(c.group, (0, 0))[0] < n.get(c.group, (0, 0))[1]:
            label = f"Σ ({n[c.group][0]} of {n[c.group][1]})"
        return c.group, label

    return wide_display(long, index, cell, paper_order, header)


def paper_table(summary: pd.DataFrame, coverage: pd.DataFrame, table: int) -> pd.DataFrame:
    """Table ``table`` (1, 2; 0: the other benchmarks) of :func:`paper_summary` as the paper
    prints it: a row per (arch, ordering, setting) with its seeds, a column per benchmark under
    its group, each group's Σ last; cells "mean [t interval]" x100, "–" where not scored."""
    part = summary[summary["table"] == table] if not summary.empty else summary
    if part.empty:
        return pd.DataFrame()
    part = part.assign(seeds=part.groupby(["arch", "ordering", "setting"])["n"].transform("max"))
    index = ["arch", "ordering", "setting", "seeds"]
    if (part["setting"] == "").all():
        index.remove("setting")
    return _display(part, index, lambda r: interval_text(r["mean"], r["lo"], r["hi"]), coverage)


# Table 11 --------------------------------------------------------------------------------------


def paper_gains(runs: pd.DataFrame, suite: pd.DataFrame) -> pd.DataFrame:
    """Table 11 per pair of runs: ``(aware - agnostic) / agnostic`` per benchmark and group
    sum of the suite, each task-aware run paired with the task-agnostic run of the same arch,
    setting and seeds (:func:`vlab.analysis.vlm_tables.paired_gains`; columns as there)."""
    wide, _ = with_sums(suite_wide(runs, suite))

    def describe(key: str) -> tuple[str, str]:
        c = paper_column(key)
        return (f"Σ {c.group}" if key.startswith("sum:") else c.label), c.group

    return paired_gains(runs, wide, describe)


def paper_gain_table(summary: pd.DataFrame, coverage: pd.DataFrame) -> pd.DataFrame:
    """:func:`vlab.analysis.vlm_tables.gain_summary` of :func:`paper_gains` as Table 11: a row
    per (arch, setting) with its seed pairs, a column per benchmark in the paper's order (the
    other benchmarks last); cells "+12.3% [t interval]", "undefined" where every task-agnostic
    score was 0."""
    if summary.empty:
        return pd.DataFrame()
    return _display(*gain_cells(summary), coverage)


def grounding_keys(summary: pd.DataFrame) -> list[str]:
    """The Visual Grounding columns (and their Σ) of a gain summary, in the paper's order:
    Figure 4's bars."""
    keys = summary["benchmark"].unique() if not summary.empty else []
    return [k for k in paper_order(keys) if paper_column(k).group == GROUNDING]


# slices ------------------------------------------------------------------------------------------


def slice_table(runs: pd.DataFrame, slices: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The suite's per-benchmark slices (VQAv2's answer types, NoCaps' domains, TallyQA's
    subsets ...): one row per (benchmark, slice key, value), one column per (arch, ordering,
    setting) with the x100 score's mean over seeds "[t interval]" ("–" where not scored).

    Why: a group sum hides where an arch wins (counting questions, out-of-domain images);
    the slices are what the papers' per-split discussion reads. ``slices`` is
    :attr:`vlab.analysis.vlm.VLMSweep.slices`."""
    if slices.empty:
        return pd.DataFrame()
    meta = runs.set_index("name").loc[slices["run"].unique(), ["arch", "ordering", "setting"]]
    arms = _groups(meta)
    columns = []
    for arch, ordering, setting in (k for k, _ in arms):
        columns.append(" ".join(p for p in (arch, ordering.replace("_", "-"), setting) if p))
    keyed = slices.assign(rank=[paper_column(k).order for k in slices["benchmark"]])
    keyed = keyed.sort_values(["rank", "slice", "value"], kind="stable")
    rows = []
    for (key, slice_key, value), g in keyed.groupby(["benchmark", "slice", "value"], sort=False):
        cells = []
        for _, names in arms:
            values = g.loc[g["run"].isin(names), "score"].to_numpy(dtype=float) * vlm.SCALE
            finite = values[np.isfinite(values)]
            cells.append(interval_text(*t_mean_ci(finite, confidence)) if finite.size else "–")
        rows.append([paper_column(key).label, slice_key, value, *cells])
    return pd.DataFrame(rows, columns=["benchmark", "slice", "value", *columns])


def suite_notes(sweep: vlm.VLMSweep, coverage: pd.DataFrame) -> list[str]:
    """What a reader must know before the paper's tables: runs with no suite results (left
    out), runs that lack a benchmark others have, and the group sums' coverage."""
    notes = []
    runs, suite = sweep.runs, sweep.suite
    if suite.empty:
        return [
            "No run has benchmark-suite results (RUN/eval/<benchmark>/results.json): Tables 1, "
            "2 and 11 appear once a run's suite (benchmarks.suite) or `vlab vlm eval "
            "--data-root` has scored a benchmark."
        ]
    without = [n for n in runs["name"] if n not in set(suite["run"])]
    if without:
        notes.append(f"{len(without)} run(s) without suite results: {', '.join(without)}")
    have = suite.groupby("run")["benchmark"].apply(set)
    every = set().union(*have)
    for run, keys in have.items():
        if keys != every:
            lacking = ", ".join(paper_column(k).label for k in paper_order(every - keys))
            notes.append(f"{run}: no score for {lacking}")
    return notes + coverage_notes(coverage)
