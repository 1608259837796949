"""The report's opening statement, in words computed from the data.

Per (length, variant): which architecture reached the accuracy threshold with fewer training
examples, each at its selected learning rate (:func:`vlab.analysis.tables.lr_selection`), by how
much (ratio and difference of the Kaplan-Meier medians), and how strong the evidence is (log-rank
p, seeds per architecture, censored runs). Every sentence is built from the table it is given;
nothing is assumed about which architecture wins.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from vlab.analysis.stats import kaplan_meier, km_median, logrank_test
from vlab.analysis.tables import PANEL, TIME_UNITS, VARIANT_ORDER


def evidence_words(p: float) -> str:
    """How strong a p-value is, in words (conventional cut-offs; the p is printed beside)."""
    if math.isnan(p):
        return "no test possible"
    if p < 0.001:
        return "very strong"
    if p < 0.01:
        return "strong"
    if p < 0.05:
        return "moderate"
    if p < 0.1:
        return "weak"
    return "none to speak of (a difference this size could be chance)"


def _fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else (f"{p:.2g}" if p >= 1e-4 else "< 1e-4")


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _lr(lr: object) -> str:
    return "?" if lr is None or pd.isna(lr) else f"{lr:g}"


def _arm(g: pd.DataFrame, time: str, confidence: float) -> dict:
    km = kaplan_meier(g[time], g["event"], confidence)
    med, lo, hi = km_median(km)
    return {
        "n": len(g),
        "reached": int(g["event"].sum()),
        "censored": int((~g["event"]).sum()),
        "unfinished": int((g["state"] != "done").sum()),
        "median": med,
        "low": lo,
        "high": hi,
        "longest": float(g[time].max()),
        "lr": g["lr"].iloc[0] if "lr" in g else None,
    }


def _interval(a: dict) -> str:
    hi = "not reached" if math.isinf(a["high"]) else _n(a["high"])
    lo = "not reached" if math.isinf(a["low"]) else _n(a["low"])
    return f"{lo} – {hi}"


def _counts(arms: dict[str, dict]) -> str:
    parts = []
    for name, a in arms.items():
        text = f"{name} {a['n']} run{'s' if a['n'] != 1 else ''}, {a['censored']} censored"
        if a["unfinished"]:
            text += f", {a['unfinished']} not finished"
        parts.append(text)
    return "; ".join(parts)


def panel_sentence(
    sel: pd.DataFrame,
    time: str = "examples",
    confidence: float = 0.95,
    threshold: float | None = None,
) -> str:
    """The statement for one (length, variant): ``sel`` holds its runs of the selected learning
    rates (columns arch, lr, ``time``, event, state)."""
    unit = TIME_UNITS[time]
    pct = f"{confidence:.0%}"
    target = "the threshold" if threshold is None else f"accuracy {threshold:g}"
    sel = sel[np.isfinite(sel[time].astype(float))]
    arms = {
        arch: _arm(g, time, confidence)
        for arch, g in sorted(sel.groupby("arch"), key=lambda x: x[0])
    }
    if not arms:
        return "no run has been evaluated yet: nothing to compare."
    lrs = ", ".join(f"{k} {_lr(a['lr'])}" for k, a in arms.items())
    if len(arms) < 2:
        ((name, a),) = arms.items()
        got = (
            f"median {_n(a['median'])} {unit}"
            if math.isfinite(a["median"])
            else "median not reached"
        )
        return (
            f"only {name} has evaluated runs ({a['n']}, {a['reached']} reached {target}, "
            f"{got}); not enough runs to compare."
        )
    order = sorted(arms, key=lambda k: (arms[k]["median"], -arms[k]["reached"], k))
    best, second = order[0], order[1]
    a, b = arms[best], arms[second]
    pair = sel[sel["arch"].isin([best, second])]
    p = logrank_test(pair[time], pair["event"], pair["arch"]).p_value
    evidence = (
        f"Evidence of a difference: {evidence_words(p)} "
        f"(log-rank p = {_fmt_p(p)}; {_counts(arms)})."
        if not math.isnan(p)
        else f"Evidence of a difference: no test possible ({_counts(arms)})."
    )
    if len(arms) > 2:
        p_all = logrank_test(sel[time], sel["event"], sel["arch"]).p_value
        evidence += f" Across all {len(arms)} architectures: log-rank p = {_fmt_p(p_all)}."
    small = min(x["n"] for x in arms.values())
    if small < 3:
        evidence += f" With {small} run(s) in the smallest arm, read this as a pilot."
    if any(x["unfinished"] for x in arms.values()):
        evidence += " Runs are still going: the numbers can change."
    lr_note = f" (selected learning rates: {lrs})"
    if math.isinf(a["median"]):
        reached = ", ".join(f"{k} {x['reached']} of {x['n']}" for k, x in arms.items())
        return (
            f"neither architecture reached {target} in half of its runs within "
            f"the budget (runs at the threshold: {reached}); no median to compare{lr_note}. "
            + evidence
        )
    head = (
        f"**{best}** reached {target} with fewer {unit}: median {_n(a['median'])} "
        f"({pct} CI {_interval(a)})"
    )
    if math.isinf(b["median"]):
        ratio = b["longest"] / a["median"] if a["median"] > 0 else math.inf
        more = f": more than {ratio:.2g}x {best}'s median" if math.isfinite(ratio) else ""
        text = (
            f"{head}; {second} did not within the budget: {b['reached']} of {b['n']} runs "
            f"reached it, so its median lies beyond {_n(b['longest'])} {unit}, the longest any "
            f"{second} run was followed{more}{lr_note}. "
        )
    elif a["median"] == b["median"]:
        text = (
            f"{best} and {second} reached {target} with the same median, "
            f"{_n(a['median'])} {unit}{lr_note}. "
        )
    else:
        ratio = b["median"] / a["median"] if a["median"] > 0 else math.inf
        times = f"{ratio:.2g}x as many" if math.isfinite(ratio) else "more"
        text = (
            f"{head}, against {_n(b['median'])} ({pct} CI {_interval(b)}) for {second}: "
            f"{second} needed {times} ({_n(b['median'] - a['median'])} more){lr_note}. "
        )
    return text + evidence


def comparison_summary(
    sel: pd.DataFrame,
    time: str = "examples",
    confidence: float = 0.95,
    threshold: float | None = None,
) -> str:
    """Markdown: one bullet per (length, variant) of ``sel`` (runs of the selected learning
    rates, as :func:`vlab.analysis.tables.selected_runs` returns), via :func:`panel_sentence`."""
    if sel.empty:
        return "No run has been evaluated yet: there is nothing to compare."
    keys = sorted(
        {(int(r.length), r.variant) for r in sel[PANEL].itertuples()},
        key=lambda k: (k[0], VARIANT_ORDER.get(k[1], 9), k[1]),
    )
    lines = []
    for length, variant in keys:
        g = sel[(sel["length"] == length) & (sel["variant"] == variant)]
        lines.append(
            f"- **L = {length}, {variant}**: {panel_sentence(g, time, confidence, threshold)}"
        )
    return "\n".join(lines)
