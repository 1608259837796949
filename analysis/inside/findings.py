"""Findings in words: the look-inside tables of a sweep summed up as short English sentences.

The inside report opens with these sentences. Each :class:`Finding` says one thing about one
arm (an architecture) of one panel (variant, length), or compares the arms of a panel, or a
checkpoint with an earlier one, and carries what a reader needs to check it: the table it
comes from (``analysis``), the rows it used (``selection``: column -> value), how the rows
were reduced (``method``) and the numbers (:class:`Estimate`: mean, interval, runs).

Replicates are the runs of one (arch, variant, length), as the report's figures average them:
each run is first reduced to one number (e.g. its lens accuracy after a layer, mean over the
target positions), then the runs give a mean and a Student t interval
(:func:`vlab.analysis.stats.t_mean_ci`, level :data:`CONFIDENCE`). A sentence claims only what
the intervals support:

- "above chance" / "looks at the queried token" / "recovers more": the interval's lower bound
  is above the reference (or the two intervals do not overlap, a conservative test);
- with fewer than :data:`MIN_RUNS` runs there is no interval: the sentence gives the numbers of
  that run and says that nothing is claimed beyond them;
- two estimates whose intervals overlap "cannot be told apart" with that many runs; among
  several (arms, sites) the one with the highest mean is set against each other one.

Thresholds (named constants, one place): :data:`READABLE_ACCURACY` (the logit lens "reads" the
answer at a layer when the mean accuracy over runs, among the L answer tokens, reaches it).

What is said, per panel and arm (functions of the tables of
:class:`~vlab.analysis.inside.results.InsideResults`, one checkpoint per run for all but
:func:`training_findings`):

- logit lens: the first layer after which the answer is readable, and the first above chance
  (1/L) by the interval; across arms, the accuracy at the model's output;
- state probe: per source (residual at the prediction position, SSM state after the context)
  and layer, which context positions, counted back from the end of the context (0: its last
  token), still decode above the probe's chance;
- patching: per corruption and site (every site the table holds), the (layer, position) whose
  clean activation recovers the most, overall and before the prediction position, and which
  site carries the most before it (a maximum over cells: read it as "at best");
- attention: the layer whose prediction position puts the most weight on the queried token,
  against the mean weight on each other context position;
- training: the headline number of each of those at each run's first and last inspected
  checkpoint, and whether it changed beyond the intervals.

VLM runs (:func:`vlm_findings`, the report's *VLM runs* section) have panels (ordering, stage)
instead of (variant, length), the LM's arch as arms and the runs (seeds) of one (arch,
ordering, stage) as replicates: the layer whose answer puts the largest share of its image
weight on the target, against the target's share of the patches (``image_attention``); the
first layer at which the box's first varying token is readable, and above a guess among the
digits (:data:`DIGIT_CHANCE`) by the interval (``vlm_logit_lens``); from which source and
layers each probe label decodes above chance (``vlm_state_probe``); per corruption, the
position class and site that recover most (``vlm_patching``); then the arms of a panel, and
the orderings of an (arch, stage), compared on one headline number each (:data:`VLM_HEADLINES`).

pandas and numpy only, never torch (the report kernel does not load it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from vlab.analysis.stats import t_mean_ci
from vlab.analysis.tables import VARIANT_ORDER
from vlab.models.backbones import families

CONFIDENCE = 0.95  # level of every interval (Student t over runs)
MIN_RUNS = 2  # fewer runs than this: no interval, no claim beyond the numbers
# Logit lens: the answer is "readable" after a layer when the mean accuracy over runs (each run:
# mean over target positions of the share of examples whose top logit among the L answer
# tokens is the right one) reaches this.
READABLE_ACCURACY = 0.9
# Text of the known patching sites and probe sources; any other name is shown as it is.
SITE_TEXT = {
    "resid_pre": "residual stream",
    "ssm_state": "SSM state",
    "conv_window": "conv window",
    "state_and_window": "SSM state + conv window",
}
SOURCE_TEXT = {
    "residual": "residual at the prediction position",
    "ssm_state": "SSM state after the context",
}
TOPICS = ("logit lens", "state probe", "patching", "attention", "training")


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` runs with its t interval (``lower``, ``upper``: NaN for one run)."""

    mean: float
    lower: float
    upper: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray | pd.Series) -> Estimate:
        """The estimate of one number per run, ``values`` (runs,); NaN values are left out."""
        x = np.asarray(values, dtype=float)
        mean, lower, upper = t_mean_ci(x, CONFIDENCE)
        return cls(mean, lower, upper, int(np.isfinite(x).sum()))

    @property
    def has_interval(self) -> bool:
        return self.n >= MIN_RUNS and math.isfinite(self.lower) and math.isfinite(self.upper)

    def above(self, value: float) -> bool:
        """Whether the interval lies wholly above ``value`` (False without an interval)."""
        return self.has_interval and self.lower > value

    def apart(self, other: Estimate) -> bool:
        """Whether both have intervals and they do not overlap."""
        return (
            self.has_interval
            and other.has_interval
            and (self.lower > other.upper or other.lower > self.upper)
        )

    def text(self) -> str:
        """``0.97 [0.93, 1.00]`` (mean [interval]), or ``0.97`` without an interval."""
        if not math.isfinite(self.mean):
            return "n/a"
        if not self.has_interval:
            return f"{self.mean:.2f}"
        return f"{self.mean:.2f} [{self.lower:.2f}, {self.upper:.2f}]"


@dataclass(frozen=True)
class Finding:
    """One sentence and where its numbers are: ``analysis`` (the table,
    ``inside/step-<step>/<analysis>.csv`` of each run), ``selection`` (column -> value, or
    list of values, of the rows used), ``method`` (how they were reduced) and ``numbers``
    (name -> :class:`Estimate`)."""

    topic: str
    sentence: str
    analysis: str
    selection: dict[str, Any]
    method: str
    numbers: dict[str, Estimate] = field(default_factory=dict)

    @property
    def source(self) -> str:
        """``logit_lens.csv: arch = pythia, variant = suffix, ...; <method>``."""
        rows = ", ".join(f"{k} = {_value_text(v)}" for k, v in self.selection.items())
        return f"{self.analysis}.csv: {rows}; {self.method}"


def findings(
    tables: Mapping[str, pd.DataFrame], all_steps: Mapping[str, pd.DataFrame] | None = None
) -> list[Finding]:
    """Every finding of ``tables`` (analysis -> table at one checkpoint per run, as
    :meth:`InsideResults.at_step` gives them), then the training findings of ``all_steps``
    (every inspected checkpoint, :attr:`InsideResults.tables`) when given. Analyses absent or
    empty add nothing."""
    out: list[Finding] = []
    for analysis, make in PER_CHECKPOINT.items():
        table = tables.get(analysis)
        if table is not None and not table.empty:
            out += make(table)
    if all_steps is not None:
        out += training_findings(all_steps)
    return out


def findings_markdown(found: Sequence[Finding]) -> str:
    """The findings as Markdown: a list per topic, each sentence followed by its source."""
    if not found:
        return (
            "No findings: no probe run has logit-lens, probe, patching or attention results "
            "here (see *Warnings and notes*)."
        )
    lines = [
        f"Brackets: {CONFIDENCE:.0%} t interval over the runs (seeds) of an arm; "
        f"'readable': lens accuracy at least {READABLE_ACCURACY:g}. "
        "Each source names the table and its rows."
    ]
    return _topic_lists(lines, found, TOPICS)


def _topic_lists(lines: list[str], found: Sequence[Finding], topics: Sequence[str]) -> str:
    """``lines`` (the preamble) then, per topic in order, a bold heading and the findings of
    that topic as a list, each sentence followed by its source (both report sections)."""
    for topic in topics:
        these = [f for f in found if f.topic == topic]
        if these:
            lines = [*lines, "", f"**{topic[0].upper() + topic[1:]}**", ""]
            lines += [f"- {_escape(f.sentence)}  \n  *Source: {_escape(f.source)}*" for f in these]
    return "\n".join(lines)


# logit lens ----------------------------------------------------------------------------------


def logit_lens_findings(table: pd.DataFrame) -> list[Finding]:
    """Per panel and arm, the first layer after which the answer is readable (mean accuracy
    >= :data:`READABLE_ACCURACY`) and the first above chance (1/L) by the interval; per panel,
    the arms' accuracy at the output (the last layer) compared."""
    out = []
    for variant, length, panel in _panels(table):
        outputs: dict[str, Estimate] = {}
        for arch, rows in _arms(panel):
            curve, per_run = _lens_curve(rows)
            if not curve:  # no layer measured in every run
                continue
            chance = 1 / length
            n = _n_runs(rows)
            numbers = {_layer_text(layer): est for layer, est in curve.items()}
            readable = [layer for layer, est in curve.items() if est.mean >= READABLE_ACCURACY]
            who = _who(arch, variant, length, n)
            if readable:
                first = readable[0]
                seen = [_first_reaching(accuracy) for _, accuracy in per_run.iterrows()]
                said = (
                    f"{who}: the answer becomes readable after {_layer_text(first)} "
                    f"(lens accuracy {curve[first].text()} ≥ {READABLE_ACCURACY:g}"
                    + (f"; first such layer per run: {_layers_text(seen)})" if n > 1 else ")")
                )
            else:
                best = max(curve, key=lambda layer: curve[layer].mean)
                said = (
                    f"{who}: the answer never becomes readable (accuracy ≥ "
                    f"{READABLE_ACCURACY:g}) at any layer; best {curve[best].text()} after "
                    f"{_layer_text(best)}"
                )
            above = [layer for layer, est in curve.items() if est.above(chance)]
            if n < MIN_RUNS:
                said += "; one run, so no interval and no claim about chance."
            elif above:
                said += (
                    f"; first above chance (1/L = {chance:.2f}) by the interval after "
                    f"{_layer_text(above[0])}."
                )
            else:
                said += f"; at no layer above chance (1/L = {chance:.2f}) by the interval."
            out.append(
                Finding(
                    "logit lens",
                    said,
                    "logit_lens",
                    _selection(rows, arch=arch, variant=variant, length=length),
                    "accuracy, mean over target positions per run and layer, then over runs",
                    numbers,
                )
            )
            outputs[arch] = curve[max(curve)]
        if len(outputs) > 1:
            out.append(
                Finding(
                    "logit lens",
                    f"{_panel_text(variant, length)}, lens accuracy at the output (last "
                    f"layer): {_compare(outputs)}",
                    "logit_lens",
                    _selection(panel, variant=variant, length=length, layer="last per arch"),
                    "accuracy at each arch's last layer, mean over target positions, then runs",
                    outputs,
                )
            )
    return out


def _lens_curve(rows: pd.DataFrame) -> tuple[dict[int, Estimate], pd.DataFrame]:
    """Per layer (every layer all runs have, in order) the estimate over runs of the accuracy,
    and the per-run table (runs x layers)."""
    per_run = rows.groupby(["run", "layer"])["accuracy"].mean().unstack("layer")
    per_run = per_run.dropna(axis=1).sort_index(axis=1)
    return {int(layer): Estimate.of(per_run[layer]) for layer in per_run.columns}, per_run


def _first_reaching(accuracy: pd.Series) -> int | None:
    hits = [int(layer) for layer, value in accuracy.items() if value >= READABLE_ACCURACY]
    return hits[0] if hits else None


# state probe ---------------------------------------------------------------------------------


def state_probe_findings(table: pd.DataFrame) -> list[Finding]:
    """Per panel, arm and source: at each layer, which context positions, counted back from
    the end of the context (0: the last context token), decode above chance (the interval
    over runs of probe accuracy minus its chance above 0), and the farthest back."""
    out = []
    tokens = table[table["label"] == "token"]
    for variant, length, panel in _panels(tokens):
        for arch, rows in _arms(panel):
            n = _n_runs(rows)
            for source in _ordered(rows["source"].unique(), list(SOURCE_TEXT)):
                these = rows[rows["source"] == source]
                margins = _probe_margins(these)  # (layer, position) -> Estimate
                who = f"{_who(arch, variant, length, n)}, {SOURCE_TEXT.get(source, source)}"
                layers = sorted({layer for layer, _ in margins})
                last = layers[-1]
                numbers = {}
                if n < MIN_RUNS:
                    accuracy = _probe_accuracy(these, last)
                    said = (
                        f"{who}: one run, so no interval and no claim about chance; at "
                        f"{_layer_text(last)} the probe's accuracy from the last context token "
                        f"back is {', '.join(f'{a:.2f}' for a in accuracy['accuracy'])} "
                        f"(chance {accuracy['chance'].mean():.2f})."
                    )
                else:
                    back = {
                        layer: [
                            length - 1 - p
                            for p in range(length - 1, -1, -1)
                            if margins.get((layer, p), _NONE).above(0)
                        ]
                        for layer in layers
                    }
                    said = (
                        f"{who}: positions back from the end of the context (0: its last token) "
                        "whose token decodes above chance by the interval: "
                        f"{_grouped({x: _back_text(d, length) for x, d in back.items()})}."
                    )
                    numbers = {
                        f"{_layer_text(last)}, context position {p} (accuracy - chance)": est
                        for (layer, p), est in sorted(margins.items())
                        if layer == last
                    }
                out.append(
                    Finding(
                        "state probe",
                        said,
                        "state_probe",
                        _selection(
                            these,
                            arch=arch,
                            variant=variant,
                            length=length,
                            label="token",
                            source=source,
                        ),
                        "accuracy - chance per run, layer and position, then t interval over "
                        "runs; d positions back is context position L - 1 - d",
                        numbers,
                    )
                )
    return out


def _probe_margins(rows: pd.DataFrame) -> dict[tuple[int, int], Estimate]:
    """(layer, position) -> estimate over runs of accuracy - chance."""
    margin = rows.assign(margin=rows["accuracy"] - rows["chance"])
    per_run = margin.groupby(["layer", "position", "run"])["margin"].mean()
    return {
        (int(layer), int(p)): Estimate.of(values)
        for (layer, p), values in per_run.groupby(level=["layer", "position"])
    }


def _probe_accuracy(rows: pd.DataFrame, layer: int) -> pd.DataFrame:
    """One run's accuracy and chance per position at ``layer``, last position first."""
    at = rows[rows["layer"] == layer].groupby("position")[["accuracy", "chance"]].mean()
    return at.sort_index(ascending=False)


def _back_text(back: list[int], length: int) -> str:
    """``none``, ``all 4``, or ``0, 1, 3`` (ascending: the last is the farthest back)."""
    if not back:
        return "none"
    return f"all {length}" if len(back) == length else ", ".join(map(str, back))


# patching ------------------------------------------------------------------------------------


def patching_findings(table: pd.DataFrame) -> list[Finding]:
    """Per panel, arm and corruption: for each site the table holds, the (layer, position)
    whose clean activation recovers the most (mean over runs), and the most before the
    prediction position (the last sequence index, where patching the whole residual stream
    restores the clean answer trivially); which site recovers most before it, when the
    intervals tell the sites apart."""
    out = []
    for variant, length, panel in _panels(table):
        for arch, rows in _arms(panel):
            n = _n_runs(rows)
            for corruption in sorted(rows["corruption"].unique()):
                these = rows[rows["corruption"] == corruption]
                last = int(these["position"].max())  # the prediction position
                parts, before, numbers = [], {}, {}
                for site in _ordered(these["site"].unique(), list(SITE_TEXT)):
                    cells = _recovery_cells(these[these["site"] == site])
                    if not cells:
                        continue
                    name = _site_text(site)
                    best = max(cells, key=lambda c: cells[c][0].mean)
                    text = f"{name} {cells[best][0].text()} {_cell_text(site, best, cells, last)}"
                    numbers[f"{name}, best"] = cells[best][0]
                    earlier = {c: v for c, v in cells.items() if c[1] < last}
                    if earlier:
                        top = max(earlier, key=lambda c: earlier[c][0].mean)
                        before[name] = earlier[top][0]
                        numbers[f"{name}, best before the prediction position"] = before[name]
                        if best[1] == last:
                            text += (
                                f"; before it {earlier[top][0].text()} "
                                f"{_cell_text(site, top, cells, last)}"
                            )
                    parts.append(text)
                if not parts:
                    continue
                said = (
                    f"{_who(arch, variant, length, n)}, '{corruption}' corruption: largest "
                    f"recovery per site: {'; '.join(parts)}"
                )
                if len(before) > 1:
                    said += ". Largest before the prediction position: " + _compare(before)
                elif n < MIN_RUNS:
                    said += "; one run, so no interval."
                else:
                    said += "."
                out.append(
                    Finding(
                        "patching",
                        said,
                        "patching",
                        _selection(
                            these, arch=arch, variant=variant, length=length, corruption=corruption
                        ),
                        "recovery per run and (site, layer, position), mean over runs; the "
                        "largest mean per site (a maximum over cells: at best)",
                        numbers,
                    )
                )
    return out


def _recovery_cells(rows: pd.DataFrame) -> dict[tuple[int, int], tuple[Estimate, str, int]]:
    """(layer, position) -> (estimate over runs of recovery, token, the site's top layer),
    cells measured (finite recovery) in at least one run."""
    top = int(rows["layer"].max())
    out = {}
    for (layer, position), cell in rows.groupby(["layer", "position"]):
        est = Estimate.of(cell.groupby("run")["recovery"].mean())
        if est.n:
            out[(int(layer), int(position))] = (est, str(cell["token"].iloc[0]), top)
    return out


def _cell_text(site: str, cell: tuple[int, int], cells: dict, last: int) -> str:
    """Where a cell is: ``entering block 1 at position 3 (ctx3)``, ``in block 0 after
    position 5 (query, the prediction position)``."""
    layer, position = cell
    _, token, top = cells[cell]
    if site == "resid_pre":
        where = f"leaving block {layer - 1}" if layer == top else f"entering block {layer}"
    else:
        where = f"in block {layer}"
    when = "after" if site == "ssm_state" else "at"
    what = f"{token}, the prediction position" if position == last else token
    return f"{where} {when} position {position} ({what})"


def _site_text(site: str) -> str:
    return SITE_TEXT.get(site, f"site {site}")


# attention -----------------------------------------------------------------------------------


def attention_findings(table: pd.DataFrame) -> list[Finding]:
    """Per panel and arm (mean over heads, ``head == -1``): the layer where the prediction
    position puts the most weight on the queried token, against the mean weight on each
    other context position; "looks at it" only when the interval of the difference (per
    run) lies above 0."""
    out = []
    mean_heads = table[table["head"] == -1]
    for variant, length, panel in _panels(mean_heads):
        for arch, rows in _arms(panel):
            n = _n_runs(rows)
            per_run = _queried_vs_other(rows)
            if per_run.empty:
                continue
            layers = sorted(per_run.index.get_level_values("layer").unique())
            est = {
                layer: {
                    k: Estimate.of(per_run.xs(layer, level="layer")[k])
                    for k in ("queried", "other", "difference")
                }
                for layer in layers
            }
            best = max(layers, key=lambda layer: est[layer]["queried"].mean)
            kinds = rows[rows["layer"] == best]["kind"].iloc[0]
            weight = "hidden-attention share" if kinds == "hidden_attention" else "attention"
            said = (
                f"{_who(arch, variant, length, n)}: the prediction position puts the most "
                f"{weight} on the queried token at layer {best}, {est[best]['queried'].text()}, "
                f"against {est[best]['other'].text()} on each other context position on average"
            )
            if n < MIN_RUNS:
                said += "; one run, so no interval."
            elif est[best]["difference"].above(0):
                said += "; more on the queried token by the interval."
            else:
                said += f"; cannot be told apart with {n} runs."
            numbers = {f"layer {best}, {k}": v for k, v in est[best].items()}
            out.append(
                Finding(
                    "attention",
                    said,
                    "attention",
                    _selection(rows, arch=arch, variant=variant, length=length, head=-1),
                    "per run and layer: weight where source_position == target_position, and "
                    "the mean weight on the other context positions, each averaged over target "
                    "positions; then over runs",
                    numbers,
                )
            )
    return out


def _queried_vs_other(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (run, layer): ``queried`` (mean over targets of the weight on the queried
    position), ``other`` (mean over targets of the mean weight on each other context
    position) and their ``difference``."""
    on = rows["source_position"] == rows["target_position"]
    keys = ["run", "layer", "target_position"]
    queried = rows[on].groupby(keys)["weight"].mean()
    other = rows[~on].groupby(keys)["weight"].mean()
    both = pd.DataFrame({"queried": queried, "other": other}).fillna({"other": 0.0})
    per_run = both.groupby(["run", "layer"]).mean()
    per_run["difference"] = per_run["queried"] - per_run["other"]
    return per_run


# training ------------------------------------------------------------------------------------


def training_findings(tables: Mapping[str, pd.DataFrame]) -> list[Finding]:
    """Per analysis, panel and arm whose runs were each inspected at two or more checkpoints:
    the headline numbers at each run's first and last inspected step, and whether they changed
    beyond the intervals (:func:`headlines`)."""
    out = []
    for analysis, headline in HEADLINES.items():
        table = tables.get(analysis)
        if table is None or table.empty:
            continue
        steps = table.groupby("run")["step"].agg(["min", "max"])
        several = steps[steps["min"] < steps["max"]].index
        table = table[table["run"].isin(several)]
        if table.empty:
            continue
        first_step = table.groupby("run")["step"].transform("min")
        last_step = table.groupby("run")["step"].transform("max")
        first = headline(table[table["step"] == first_step])
        last = headline(table[table["step"] == last_step])
        for key in [k for k in last if k in first]:
            (variant, length, arch, name) = key
            rows = table[
                (table["variant"] == variant)
                & (table["length"] == length)
                & (table["arch"] == arch)
            ]
            a, b = first[key], last[key]
            n = min(a.n, b.n)
            steps_first = _steps_text(rows[rows["step"] == first_step[rows.index]]["step"])
            steps_last = _steps_text(rows[rows["step"] == last_step[rows.index]]["step"])
            said = (
                f"{_who(arch, variant, length, n)}, {name}: {a.text()} at the first inspected "
                f"checkpoint ({steps_first}), {b.text()} at the last ({steps_last})"
            )
            if n < MIN_RUNS:
                said += "; one run, so no interval and no claim of a change."
            elif a.apart(b):
                said += f"; {'rose' if b.mean > a.mean else 'fell'} beyond the intervals."
            else:
                said += f"; no change that {n} runs can tell apart."
            out.append(
                Finding(
                    "training",
                    said,
                    analysis,
                    _selection(rows, arch=arch, variant=variant, length=length)
                    | {"step": f"each run's first ({steps_first}) and last ({steps_last})"},
                    f"{name} at each checkpoint as in the {analysis} findings",
                    {"first": a, "last": b},
                )
            )
    return out


def _lens_headline(table: pd.DataFrame) -> dict[tuple, Estimate]:
    out = {}
    for variant, length, panel in _panels(table):
        for arch, rows in _arms(panel):
            curve, _ = _lens_curve(rows)
            if curve:
                out[(variant, length, arch, "lens accuracy at the output")] = curve[max(curve)]
    return out


def _probe_headline(table: pd.DataFrame) -> dict[tuple, Estimate]:
    """Per source: the probe's accuracy - chance at the last layer, mean over positions."""
    out = {}
    tokens = table[table["label"] == "token"]
    for variant, length, panel in _panels(tokens):
        for arch, rows in _arms(panel):
            for source in _ordered(rows["source"].unique(), list(SOURCE_TEXT)):
                these = rows[rows["source"] == source]
                last = these[these["layer"] == these["layer"].max()]
                margin = (last["accuracy"] - last["chance"]).groupby(last["run"]).mean()
                name = f"{SOURCE_TEXT.get(source, source)}, accuracy - chance at the last layer"
                out[(variant, length, arch, name + " (mean over positions)")] = Estimate.of(margin)
    return out


def _patching_headline(table: pd.DataFrame) -> dict[tuple, Estimate]:
    """Per corruption: the largest recovery before the prediction position, any site."""
    out = {}
    for variant, length, panel in _panels(table):
        for arch, rows in _arms(panel):
            for corruption in sorted(rows["corruption"].unique()):
                these = rows[rows["corruption"] == corruption]
                earlier = these[these["position"] < these["position"].max()]
                best = [
                    cell[0]
                    for site in earlier["site"].unique()
                    for cell in _recovery_cells(earlier[earlier["site"] == site]).values()
                ]
                if best:
                    name = f"'{corruption}', largest recovery before the prediction position"
                    out[(variant, length, arch, name)] = max(best, key=lambda e: e.mean)
    return out


def _attention_headline(table: pd.DataFrame) -> dict[tuple, Estimate]:
    """The largest weight on the queried token over layers (mean over heads)."""
    out = {}
    for variant, length, panel in _panels(table[table["head"] == -1]):
        for arch, rows in _arms(panel):
            per_run = _queried_vs_other(rows)["queried"]
            if per_run.empty:
                continue
            by_layer = {layer: Estimate.of(v) for layer, v in per_run.groupby(level="layer")}
            best = max(by_layer.values(), key=lambda e: e.mean)
            out[(variant, length, arch, "largest weight on the queried token (any layer)")] = best
    return out


PER_CHECKPOINT: dict[str, Callable[[pd.DataFrame], list[Finding]]] = {
    "logit_lens": logit_lens_findings,
    "state_probe": state_probe_findings,
    "patching": patching_findings,
    "attention": attention_findings,
}
HEADLINES: dict[str, Callable[[pd.DataFrame], dict[tuple, Estimate]]] = {
    "logit_lens": _lens_headline,
    "state_probe": _probe_headline,
    "patching": _patching_headline,
    "attention": _attention_headline,
}


# shared --------------------------------------------------------------------------------------

_NONE = Estimate(math.nan, math.nan, math.nan, 0)


def _panels(table: pd.DataFrame) -> Iterator[tuple[str, int, pd.DataFrame]]:
    """(variant, length, rows) per panel: lengths ascending, suffix before prefix."""
    usable = table.dropna(subset=["arch", "variant", "length"])
    for length in sorted(int(x) for x in usable["length"].unique()):
        at = usable[usable["length"] == length]
        for variant in sorted(at["variant"].unique(), key=lambda v: (VARIANT_ORDER.get(v, 9), v)):
            yield variant, length, at[at["variant"] == variant]


def _arms(panel: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """(arch, rows) in the reports' order: the paper's arms first, then others by name."""
    for arch in _ordered(panel["arch"].unique(), [f.arch for f in families()]):
        yield arch, panel[panel["arch"] == arch]


def _ordered(values: Sequence | np.ndarray, known: list[str]) -> list:
    return sorted(values, key=lambda v: (known.index(v) if v in known else len(known), str(v)))


def _n_runs(rows: pd.DataFrame) -> int:
    return int(rows["run"].nunique())


def _who(arch: str, variant: str, length: int, n: int) -> str:
    runs = "one run" if n == 1 else f"{n} runs"
    return f"{arch} ({variant}, L = {length}, {runs})"


def _panel_text(variant: str, length: int) -> str:
    return f"{variant}, L = {length}"


def _layer_text(layer: int | None) -> str:
    """Logit-lens and probe layers: -1 the embeddings, i the output of block i."""
    if layer is None:
        return "never"
    return "the embeddings" if layer == -1 else f"block {layer}"


def _layers_text(layers: list[int | None]) -> str:
    return ", ".join("never" if x is None else ("emb" if x == -1 else str(x)) for x in layers)


def _grouped(values: dict[int, str]) -> str:
    """``block 0: X; layers 1-3: Y`` from layer -> text, consecutive equal texts merged."""
    groups: list[list[int]] = []
    for layer in sorted(values):
        if groups and values[groups[-1][-1]] == values[layer] and groups[-1][-1] == layer - 1:
            groups[-1].append(layer)
        else:
            groups.append([layer])
    parts = []
    for g in groups:
        if len(g) == 1:
            where = _layer_text(g[0])
        else:
            where = f"{_layer_text(g[0])} to {_layer_text(g[-1])}"
        parts.append(f"{where}: {values[g[0]]}")
    return "; ".join(parts)


def _compare(estimates: dict[str, Estimate]) -> str:
    """The estimates side by side, then the one with the highest mean against each other:
    above it by the intervals, or not told apart."""
    listed = ", ".join(f"{k} {e.text()}" for k, e in estimates.items())
    lacking = [k for k, e in estimates.items() if not e.has_interval]
    if len(lacking) == len(estimates):
        return f"{listed}; no interval (one run each), so no difference is claimed."
    if lacking:
        return f"{listed}; no interval for {_and(lacking)}, so no difference is claimed."
    top = max(estimates, key=lambda k: estimates[k].mean)
    rest = [k for k in estimates if k != top]
    apart = [k for k in rest if estimates[top].apart(estimates[k])]
    together = [k for k in rest if k not in apart]
    said = listed
    if apart:
        said += f"; {top} is above {_and(apart)} by the intervals"
    if together:
        runs = sorted({e.n for e in estimates.values()})
        said += (
            f"; the highest mean, {top}, cannot be told apart from {_and(together)} with "
            f"{' and '.join(map(str, runs))} runs"
        )
    return said + "."


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _selection(rows: pd.DataFrame, **fixed: Any) -> dict[str, Any]:
    """The filter that finds ``rows``: the fixed columns, then the runs and steps."""
    return {
        **fixed,
        "run": sorted(rows["run"].unique()),
        "step": sorted(int(s) for s in rows["step"].unique()),
    }


def _steps_text(steps: pd.Series) -> str:
    values = sorted({int(s) for s in steps})
    return ("step " if len(values) == 1 else "steps ") + ", ".join(map(str, values))


def _value_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _escape(text: str) -> str:
    """Markdown-safe text: the tables' names hold underscores (``resid_pre``, ``other_query``)."""
    for ch in ("\\", "*", "_", "`", "[", "]"):
        text = text.replace(ch, "\\" + ch)
    return text.replace("<", "&lt;").replace(">", "&gt;")


# VLM runs ------------------------------------------------------------------------------------
#
# The VLM runs' tables (image_attention, vlm_logit_lens, vlm_state_probe, vlm_patching) have
# their own panels: (ordering, stage) instead of (variant, length); the arms are still the
# LM's ``arch`` and the replicates the runs (seeds) of one (arch, ordering, stage).

VLM_TOPICS = (
    "image attention",
    "VLM logit lens",
    "VLM state probe",
    "VLM patching",
    "VLM arms and orderings",
)
VLM_ORDERINGS = ("task_agnostic", "task_aware")  # image first; instruction first
ORDERING_TEXT = {"task_agnostic": "task-agnostic", "task_aware": "task-aware"}
# vlm_logit_lens: "above chance" on the box's first varying token (a digit) means above a
# guess among the ten digits. The lens's accuracy is top-1 over the whole vocabulary, so this
# reference is conservative (a tokenizer with multi-digit tokens has a lower chance).
DIGIT_CHANCE = 0.1
PROBE_LABEL_TEXT = {
    "cell": "the object in each cell (mean over cells)",
    "target_cell": "the target's cell",
    "target_object": "the named object",
}
VLM_SOURCE_TEXT = {
    "residual": "the residual at the prediction position",
    "residual_image_end": "the residual after the image",
    "ssm_state": "the SSM state after the image",
}
# vlm_patching: the positions' roles (``token``) grouped into classes; the first three are the
# per-example summaries (position -1), the others the prefixes of the role names.
ROLE_CLASS_TEXT = {
    "target_cells": "the clean target's patches",
    "corrupted_cells": "the corrupted target's patches",
    "last": "the prediction position",
    "img": "a single image patch",
    "pre": "the text before the image",
    "mark": "a marker",
    "text": "the text between the image and the answer",
    "ans": "an answer token",
}
IMAGE_CLASSES = ("target_cells", "corrupted_cells", "img")


def vlm_findings(tables: Mapping[str, pd.DataFrame]) -> list[Finding]:
    """Every finding of the VLM runs' tables in ``tables`` (analysis -> table at one checkpoint
    per run, as :meth:`InsideResults.at_step` gives them): per analysis, panel (ordering,
    stage) and arm, then the arms of a panel, and the orderings of an (arch, stage), compared
    (:func:`vlm_contrast_findings`). Tables absent or empty add nothing."""
    out: list[Finding] = []
    for analysis, make in VLM_PER_CHECKPOINT.items():
        table = tables.get(analysis)
        if table is not None and not table.empty:
            out += make(table)
    return out + vlm_contrast_findings(tables)


def vlm_findings_markdown(found: Sequence[Finding]) -> str:
    """The VLM findings as Markdown: a list per topic, each sentence followed by its source."""
    if not found:
        return (
            "No VLM findings: no VLM run has image-attention, logit-lens, probe or patching "
            "results here."
        )
    lines = [
        f"Brackets: {CONFIDENCE:.0%} t interval over the runs (seeds) of an arm (LM "
        f"architecture), ordering and stage; 'readable': lens accuracy at least "
        f"{READABLE_ACCURACY:g}. Each source names the table and its rows."
    ]
    return _topic_lists(lines, found, VLM_TOPICS)


# image attention


def image_attention_findings(table: pd.DataFrame) -> list[Finding]:
    """Per panel and arm: the layer whose answer positions put the largest share of their
    image weight on the target's patches (mean over runs), against the target's share of the
    patches (what an even spread would put there); "more than an even spread" only when the
    interval of the difference (per run) lies above 0."""
    out = []
    for ordering, stage, panel in _vlm_panels(table):
        for arch, rows in _arms(panel):
            n = _n_runs(rows)
            est = _share_by_layer(rows)
            if not est:
                continue
            best = max(est, key=lambda layer: est[layer]["share"].mean)
            share, even, gap = (est[best][k] for k in ("share", "target_cells", "difference"))
            said = (
                f"{_vlm_who(arch, ordering, stage, n)}: the answer puts the largest share of "
                f"its image weight on the target at layer {best}, {share.text()}, against the "
                f"target's share of the patches {even.text()}"
            )
            if n < MIN_RUNS:
                said += "; one run, so no interval and no claim."
            elif gap.above(0):
                said += "; more than an even spread would put there, by the interval."
            elif gap.has_interval and gap.upper < 0:
                said += "; less than an even spread would put there, by the interval."
            else:
                said += f"; cannot be told apart from an even spread with {n} runs."
            out.append(
                Finding(
                    "image attention",
                    said,
                    "image_attention",
                    _selection(rows, arch=arch, ordering=ordering, stage=stage),
                    "per run and layer: the weight on the target's cells (on_target) over the "
                    "weight on the image, and the share of the cells on the target, each "
                    "averaged over examples; then over runs; the layer with the largest mean",
                    {f"layer {best}, {k}": v for k, v in est[best].items()},
                )
            )
    return out


def _share_by_layer(rows: pd.DataFrame) -> dict[int, dict[str, Estimate]]:
    """layer -> estimates over runs of ``share`` (on the target), ``target_cells`` (the
    target's share of the cells) and their ``difference``."""
    from vlab.analysis.inside.results import target_share

    per = target_share(rows, ["run", "layer"])
    per["difference"] = per["share"] - per["target_cells"]
    out = {
        int(layer): {k: Estimate.of(at[k]) for k in ("share", "target_cells", "difference")}
        for layer, at in per.groupby("layer")
    }
    return {layer: est for layer, est in out.items() if est["share"].n}  # no weight: no share


# VLM logit lens


def vlm_logit_lens_findings(table: pd.DataFrame) -> list[Finding]:
    """Per panel and arm, on the box's first varying token (the first ``answer_index`` whose
    ``token`` is ``*``: a digit of the first coordinate): the first layer after which it is
    readable (mean accuracy >= :data:`READABLE_ACCURACY`) and the first above chance
    (:data:`DIGIT_CHANCE`) by the interval."""
    out = []
    for ordering, stage, panel in _vlm_panels(table):
        for arch, rows in _arms(panel):
            curve, these = _vlm_lens_curve(rows)
            if not curve:
                continue
            n = _n_runs(these)
            index = sorted(int(i) for i in these["answer_index"].unique())
            who = _vlm_who(arch, ordering, stage, n)
            readable = [layer for layer, est in curve.items() if est.mean >= READABLE_ACCURACY]
            if readable:
                said = (
                    f"{who}: the box's first varying token becomes readable after "
                    f"{_layer_text(readable[0])} (lens accuracy {curve[readable[0]].text()} ≥ "
                    f"{READABLE_ACCURACY:g})"
                )
            else:
                best = max(curve, key=lambda layer: curve[layer].mean)
                said = (
                    f"{who}: the box's first varying token never becomes readable (accuracy ≥ "
                    f"{READABLE_ACCURACY:g}); best {curve[best].text()} after {_layer_text(best)}"
                )
            above = [layer for layer, est in curve.items() if est.above(DIGIT_CHANCE)]
            if n < MIN_RUNS:
                said += "; one run, so no interval and no claim about chance."
            elif above:
                said += (
                    f"; first above chance ({DIGIT_CHANCE:g}, a guess among the digits) by the "
                    f"interval after {_layer_text(above[0])}."
                )
            else:
                said += f"; at no layer above chance ({DIGIT_CHANCE:g}) by the interval."
            out.append(
                Finding(
                    "VLM logit lens",
                    said,
                    "vlm_logit_lens",
                    _selection(
                        these,
                        arch=arch,
                        ordering=ordering,
                        stage=stage,
                        answer_index=index[0] if len(index) == 1 else index,
                    ),
                    "top-1 accuracy (over the vocabulary) per run and layer at each run's first "
                    "answer_index whose token is '*', then over runs",
                    {_layer_text(layer): est for layer, est in curve.items()},
                )
            )
    return out


def _vlm_lens_curve(rows: pd.DataFrame) -> tuple[dict[int, Estimate], pd.DataFrame]:
    """Per layer (those every run has) the estimate over runs of the accuracy on each run's
    first varying answer token, and the rows used."""
    varying = rows[rows["token"].astype(str) == "*"]
    if varying.empty:
        return {}, varying
    first = varying.groupby("run")["answer_index"].transform("min")
    these = varying[varying["answer_index"] == first]
    per_run = these.groupby(["run", "layer"])["accuracy"].mean().unstack("layer")
    per_run = per_run.dropna(axis=1).sort_index(axis=1)
    return {int(layer): Estimate.of(per_run[layer]) for layer in per_run.columns}, these


# VLM state probe


def vlm_state_probe_findings(table: pd.DataFrame) -> list[Finding]:
    """Per panel, arm and label (the object in each cell, the target's cell, the named
    object): from which source and at which layers the label decodes above chance (the
    interval over runs of accuracy - chance, for ``cell`` first averaged over the cells, lies
    above 0), and the largest margin."""
    out = []
    measured = table.dropna(subset=["accuracy", "chance"])
    for ordering, stage, panel in _vlm_panels(measured):
        for arch, rows in _arms(panel):
            n = _n_runs(rows)
            who = _vlm_who(arch, ordering, stage, n)
            for label in _ordered(rows["label"].unique(), list(PROBE_LABEL_TEXT)):
                these = rows[rows["label"] == label]
                margins = _vlm_probe_margins(these)  # (source, layer) -> Estimate
                best = max(margins, key=lambda k: margins[k].mean)
                where = f"from {_vlm_source_text(best[0])} after {_layer_text(best[1])}"
                text = PROBE_LABEL_TEXT.get(label, label)
                if n < MIN_RUNS:
                    said = (
                        f"{who}, {text}: one run, so no interval and no claim about chance; the "
                        f"largest accuracy - chance is {margins[best].text()} {where}."
                    )
                else:
                    parts = []
                    for source in _ordered(these["source"].unique(), list(VLM_SOURCE_TEXT)):
                        above = sorted(
                            layer for (s, layer), e in margins.items() if s == source and e.above(0)
                        )
                        parts.append(f"{_vlm_source_text(source)}: {_layer_list(above)}")
                    said = (
                        f"{who}, {text}: decodes above chance by the interval from "
                        f"{'; '.join(parts)}; the largest accuracy - chance is "
                        f"{margins[best].text()} {where}."
                    )
                out.append(
                    Finding(
                        "VLM state probe",
                        said,
                        "vlm_state_probe",
                        _selection(these, arch=arch, ordering=ordering, stage=stage, label=label),
                        "accuracy - chance per run, source and layer (mean over positions, i.e. "
                        "cells, for 'cell'), then t interval over runs",
                        {
                            f"{_vlm_source_text(s)}, {_layer_text(layer)} (accuracy - chance)": e
                            for (s, layer), e in margins.items()
                            if (s, layer) == best or layer == max(x for _, x in margins)
                        },
                    )
                )
    return out


def _vlm_probe_margins(rows: pd.DataFrame) -> dict[tuple[str, int], Estimate]:
    """(source, layer) -> estimate over runs of accuracy - chance (mean over positions)."""
    margin = rows.assign(margin=rows["accuracy"] - rows["chance"])
    per_run = margin.groupby(["source", "layer", "run"])["margin"].mean()
    return {
        (str(source), int(layer)): Estimate.of(values)
        for (source, layer), values in per_run.groupby(level=["source", "layer"])
    }


def _vlm_source_text(source: str) -> str:
    return VLM_SOURCE_TEXT.get(source, source)


def _layer_list(layers: list[int]) -> str:
    """``no layer``, or ``the embeddings, blocks 0-2 and 4`` (consecutive blocks merged)."""
    if not layers:
        return "no layer"
    parts = ["the embeddings"] if -1 in layers else []
    runs: list[list[int]] = []
    for layer in (x for x in layers if x >= 0):
        if runs and runs[-1][-1] == layer - 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    if runs:
        spans = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
        word = "block" if len(spans) == 1 and len(runs[0]) == 1 else "blocks"
        parts.append(f"{word} {_and(spans)}")
    return ", ".join(parts)


# VLM patching


def vlm_patching_findings(table: pd.DataFrame) -> list[Finding]:
    """Per panel, arm and corruption: per position class (:data:`ROLE_CLASS_TEXT`) the
    (site, layer, position) of the class whose clean activation recovers the most (mean over
    runs; a maximum over cells: "at best"); which of the image's classes recovers most, and
    which site at the clean target's patches, when the intervals tell them apart."""
    out = []
    for ordering, stage, panel in _vlm_panels(_finite_recovery(table)):
        for arch, rows in _arms(panel):
            n = _n_runs(rows)
            for corruption in sorted(rows["corruption"].unique()):
                these = rows[rows["corruption"] == corruption]
                best = _best_per_class(these)
                if not best:
                    continue
                top = _top_layers(these)
                parts = [
                    f"{ROLE_CLASS_TEXT[c]} {e.text()} ({_site_text(site)} "
                    f"{_vlm_where(site, layer, top)}{_at_role(c, token)})"
                    for c, (e, site, layer, token) in best.items()
                ]
                said = (
                    f"{_vlm_who(arch, ordering, stage, n)}, '{corruption}' corruption: largest "
                    f"recovery per position class (any site and layer: at best): {'; '.join(parts)}"
                )
                image = {ROLE_CLASS_TEXT[c]: best[c][0] for c in IMAGE_CLASSES if c in best}
                sites = _best_per_site(these[these["token"] == "target_cells"])
                if n < MIN_RUNS:
                    said += "; one run, so no interval."
                else:
                    if len(image) > 1:
                        said += ". Among the image's positions: " + _compare(image)[:-1]
                    if len(sites) > 1:
                        said += ". At the clean target's patches, per site: " + _compare(sites)[:-1]
                    said += "."
                numbers = {ROLE_CLASS_TEXT[c]: v[0] for c, v in best.items()}
                numbers |= {f"the clean target's patches, {s}": e for s, e in sites.items()}
                out.append(
                    Finding(
                        "VLM patching",
                        said,
                        "vlm_patching",
                        _selection(
                            these, arch=arch, ordering=ordering, stage=stage, corruption=corruption
                        ),
                        "recovery per run and (site, layer, token), mean over runs; per class of "
                        "token (role), the largest mean (a maximum over cells: at best)",
                        numbers,
                    )
                )
    return out


def _finite_recovery(table: pd.DataFrame) -> pd.DataFrame:
    return table[np.isfinite(pd.to_numeric(table["recovery"], errors="coerce"))]


def _role_class(token: str) -> str | None:
    """``target_cells`` -> itself; ``img12`` -> ``img``; ``text-0`` -> ``text``; else None."""
    token = str(token)
    if token in ROLE_CLASS_TEXT:
        return token
    for prefix in ("img", "pre-", "mark", "text-", "ans"):
        if token.startswith(prefix) and token[len(prefix) :].isdigit():
            return prefix.rstrip("-")
    return None


def _recovery_by_cell(rows: pd.DataFrame) -> dict[tuple[str, int, str], Estimate]:
    """(site, layer, token) -> estimate over runs of the recovery."""
    per_run = rows.groupby(["site", "layer", "token", "run"])["recovery"].mean()
    return {
        (str(site), int(layer), str(token)): Estimate.of(values)
        for (site, layer, token), values in per_run.groupby(level=["site", "layer", "token"])
    }


def _best_per_class(rows: pd.DataFrame) -> dict[str, tuple[Estimate, str, int, str]]:
    """Class -> (estimate, site, layer, token) of the cell with the largest mean, classes in
    :data:`ROLE_CLASS_TEXT`'s order."""
    best: dict[str, tuple[Estimate, str, int, str]] = {}
    for (site, layer, token), est in _recovery_by_cell(rows).items():
        c = _role_class(token)
        if c is not None and est.n and (c not in best or est.mean > best[c][0].mean):
            best[c] = (est, site, layer, token)
    return {c: best[c] for c in ROLE_CLASS_TEXT if c in best}


def _best_per_site(rows: pd.DataFrame) -> dict[str, Estimate]:
    """Site text -> the largest mean recovery over layers (and tokens) of that site."""
    best: dict[str, Estimate] = {}
    for (site, _, _), est in _recovery_by_cell(rows).items():
        if est.n and (site not in best or est.mean > best[site].mean):
            best[site] = est
    return {_site_text(s): best[s] for s in _ordered(list(best), list(SITE_TEXT))}


def _top_layers(rows: pd.DataFrame) -> dict[str, int]:
    return {str(s): int(x) for s, x in rows.groupby("site")["layer"].max().items()}


def _vlm_where(site: str, layer: int, top: dict[str, int]) -> str:
    """``entering block 1`` (``leaving block 3`` past the last) for the residual stream,
    ``in block 1`` for the other sites."""
    if site == "resid_pre":
        return f"leaving block {layer - 1}" if layer == top[site] else f"entering block {layer}"
    return f"in block {layer}"


def _at_role(cls: str, token: str) -> str:
    """``, at img12`` for a class of several positions; nothing for a summary."""
    return "" if cls == token else f", at {token}"


# across arms and orderings


def vlm_contrast_findings(tables: Mapping[str, pd.DataFrame]) -> list[Finding]:
    """Per analysis and headline number (:data:`VLM_HEADLINES`): the arms of each panel
    (ordering, stage) side by side, then the orderings of each (arch, stage), where there are
    two or more; a difference is claimed only where the intervals separate them
    (:func:`_compare`)."""
    out = []
    for analysis, headline in VLM_HEADLINES.items():
        table = tables.get(analysis)
        if table is None or table.empty:
            continue
        heads = headline(table)  # (ordering, stage, arch, name) -> Estimate
        method = f"as in the {analysis} findings, per arm, ordering and stage"
        arms: dict[tuple[str, int, str], dict[str, Estimate]] = {}
        orderings: dict[tuple[int, str, str], dict[str, Estimate]] = {}
        for (ordering, stage, arch, name), est in heads.items():
            arms.setdefault((ordering, stage, name), {})[arch] = est
            orderings.setdefault((stage, arch, name), {})[ordering] = est
        for (ordering, stage, name), by_arch in arms.items():
            if len(by_arch) > 1:
                rows = table[(table["ordering"] == ordering) & (table["stage"] == stage)]
                rows = rows[rows["arch"].isin(by_arch)]
                named = {_vl_name(a): e for a, e in by_arch.items()}
                out.append(
                    Finding(
                        "VLM arms and orderings",
                        f"{ORDERING_TEXT.get(ordering, ordering)}, stage {stage}, {name}: "
                        f"{_compare(named)}",
                        analysis,
                        _selection(rows, ordering=ordering, stage=stage, arch=list(by_arch)),
                        method,
                        named,
                    )
                )
        for (stage, arch, name), by_ordering in orderings.items():
            if len(by_ordering) > 1:
                rows = table[(table["arch"] == arch) & (table["stage"] == stage)]
                rows = rows[rows["ordering"].isin(by_ordering)]
                named = {ORDERING_TEXT.get(o, o): e for o, e in by_ordering.items()}
                out.append(
                    Finding(
                        "VLM arms and orderings",
                        f"{_vl_name(arch)}, stage {stage}, {name}, by ordering: {_compare(named)}",
                        analysis,
                        _selection(rows, arch=arch, stage=stage, ordering=list(by_ordering)),
                        method,
                        named,
                    )
                )
    return out


def _share_headline(table: pd.DataFrame) -> dict[tuple, Estimate]:
    out = {}
    for ordering, stage, panel in _vlm_panels(table):
        for arch, rows in _arms(panel):
            est = _share_by_layer(rows)
            if est:
                best = max((e["share"] for e in est.values()), key=lambda e: e.mean)
                name = "largest share of the image weight on the target (any layer)"
                out[(ordering, stage, arch, name)] = best
    return out


def _vlm_lens_headline(table: pd.DataFrame) -> dict[tuple, Estimate]:
    out = {}
    for ordering, stage, panel in _vlm_panels(table):
        for arch, rows in _arms(panel):
            curve, _ = _vlm_lens_curve(rows)
            if curve:
                name = "lens accuracy on the box's first varying token at the output"
                out[(ordering, stage, arch, name)] = curve[max(curve)]
    return out


def _vlm_probe_headline(table: pd.DataFrame) -> dict[tuple, Estimate]:
    out = {}
    for ordering, stage, panel in _vlm_panels(table.dropna(subset=["accuracy", "chance"])):
        for arch, rows in _arms(panel):
            for label in _ordered(rows["label"].unique(), list(PROBE_LABEL_TEXT)):
                margins = _vlm_probe_margins(rows[rows["label"] == label])
                best = max(margins.values(), key=lambda e: e.mean)
                text = PROBE_LABEL_TEXT.get(label, label)
                name = f"probe for {text}, largest accuracy - chance (any source and layer)"
                out[(ordering, stage, arch, name)] = best
    return out


def _vlm_patching_headline(table: pd.DataFrame) -> dict[tuple, Estimate]:
    out = {}
    for ordering, stage, panel in _vlm_panels(_finite_recovery(table)):
        for arch, rows in _arms(panel):
            for corruption in sorted(rows["corruption"].unique()):
                these = rows[(rows["corruption"] == corruption) & (rows["token"] == "target_cells")]
                sites = _best_per_site(these)
                if sites:
                    name = (
                        f"'{corruption}', largest recovery at the clean target's patches (any "
                        "site and layer)"
                    )
                    out[(ordering, stage, arch, name)] = max(sites.values(), key=lambda e: e.mean)
    return out


VLM_PER_CHECKPOINT: dict[str, Callable[[pd.DataFrame], list[Finding]]] = {
    "image_attention": image_attention_findings,
    "vlm_logit_lens": vlm_logit_lens_findings,
    "vlm_state_probe": vlm_state_probe_findings,
    "vlm_patching": vlm_patching_findings,
}
VLM_HEADLINES: dict[str, Callable[[pd.DataFrame], dict[tuple, Estimate]]] = {
    "image_attention": _share_headline,
    "vlm_logit_lens": _vlm_lens_headline,
    "vlm_state_probe": _vlm_probe_headline,
    "vlm_patching": _vlm_patching_headline,
}


def _vlm_panels(table: pd.DataFrame) -> Iterator[tuple[str, int, pd.DataFrame]]:
    """(ordering, stage, rows) per panel: task-agnostic first, then by stage."""
    usable = table.dropna(subset=["arch", "ordering", "stage"])
    orderings = _ordered(usable["ordering"].unique(), list(VLM_ORDERINGS))
    for ordering in orderings:
        at = usable[usable["ordering"] == ordering]
        for stage in sorted(int(s) for s in at["stage"].unique()):
            yield str(ordering), stage, at[at["stage"] == stage]


def _vl_name(arch: str) -> str:
    """``Pythia-VL``, ``Mamba-VL`` (the family records' VLM names); ``<arch>-VL`` else."""
    names = {f.arch: f.vlm_name for f in families()}
    return names.get(arch, f"{arch}-VL")


def _vlm_who(arch: str, ordering: str, stage: int, n: int) -> str:
    runs = "one run" if n == 1 else f"{n} runs"
    return f"{_vl_name(arch)} ({ORDERING_TEXT.get(ordering, ordering)}, stage {stage}, {runs})"
