"""Findings in words (``vlab.analysis.inside.findings``) on hand-made tables with known answers,
and the Findings section of the rendered inside report."""

import contextlib
import io
import json
import math
import os
import re

os.environ.setdefault("MPLBACKEND", "Agg")

import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vlab.analysis.inside import findings as fs  # noqa: E402
from vlab.analysis.inside.findings import (  # noqa: E402
    Estimate,
    Finding,
    findings,
    findings_markdown,
)
from vlab.analysis.inside.results import COLUMNS, RUN_KEYS  # noqa: E402
from vlab.cli import main  # noqa: E402

L = 4


def _table(analysis: str, rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*RUN_KEYS, "step", *COLUMNS[analysis]])


def _run(arch: str, seed: int, step: int = 100, variant: str = "suffix") -> dict:
    return {"run": f"{arch}-s{seed}", "arch": arch, "variant": variant, "length": L, "step": step}


def _lens(accuracy, archs=("pythia", "mamba"), seeds=(0, 1, 2), step=100) -> pd.DataFrame:
    """``accuracy(arch, seed, layer)`` at every target position, layers -1..3."""
    rows = [
        {**_run(arch, seed, step), "layer": layer, "target_position": p,
         "probability": 0.5, "accuracy": accuracy(arch, seed, layer), "rank": 1.0}
        for arch in archs for seed in seeds for layer in range(-1, 4) for p in range(L)
    ]  # fmt: skip
    return _table("logit_lens", rows)


def _only(found: list[Finding], topic: str, start: str) -> Finding:
    chosen = [f for f in found if f.topic == topic and f.sentence.startswith(start)]
    assert len(chosen) == 1, [f.sentence for f in found]
    return chosen[0]


# Estimate ------------------------------------------------------------------------------------


def test_estimate_is_a_t_interval_over_runs_and_none_for_one_run():
    est = Estimate.of([0.8, 0.9, 1.0])
    assert est.n == 3 and est.mean == pytest.approx(0.9)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert (est.lower, est.upper) == pytest.approx((0.9 - half, 0.9 + half))
    assert est.text() == f"0.90 [{0.9 - half:.2f}, {0.9 + half:.2f}]"
    one = Estimate.of([0.7, math.nan])
    assert one.n == 1 and not one.has_interval and one.text() == "0.70"
    assert not one.above(0.0) and not one.apart(est)
    assert Estimate.of([0.1, 0.15, 0.2]).apart(Estimate.of([0.8, 0.85, 0.9]))
    assert not Estimate.of([0.1, 0.2]).apart(Estimate.of([0.8, 0.9]))  # t_{0.975, 1} = 12.7
    assert not Estimate.of([0.1, 0.9]).apart(Estimate.of([0.4, 0.6]))


# logit lens ----------------------------------------------------------------------------------


def test_lens_names_the_layer_where_one_arm_reads_the_answer_and_says_the_other_never_does():
    def accuracy(arch, seed, layer):
        if arch == "pythia":
            return 0.95 + 0.01 * seed if layer >= 2 else 0.25 + 0.01 * seed
        return 0.30 + 0.01 * seed  # mamba: flat, just above chance 1/4

    found = fs.logit_lens_findings(_lens(accuracy))
    pythia = _only(found, "logit lens", "pythia (suffix, L = 4, 3 runs)")
    assert "readable after block 2 (lens accuracy 0.96 [" in pythia.sentence
    assert "first such layer per run: 2, 2, 2" in pythia.sentence
    assert "first above chance (1/L = 0.25) by the interval after block 2" in pythia.sentence
    assert pythia.numbers["block 2"].mean == pytest.approx(0.96)
    assert pythia.selection["arch"] == "pythia" and pythia.selection["step"] == [100]
    assert pythia.selection["run"] == ["pythia-s0", "pythia-s1", "pythia-s2"]
    mamba = _only(found, "logit lens", "mamba (suffix, L = 4, 3 runs)")
    assert "never becomes readable (accuracy ≥ 0.9) at any layer" in mamba.sentence
    # 0.30, 0.31, 0.32: the interval (0.285, 0.335) is above 1/4 at every layer
    assert "first above chance (1/L = 0.25) by the interval after the embeddings" in mamba.sentence
    compared = _only(found, "logit lens", "suffix, L = 4, lens accuracy at the output")
    assert compared.sentence.endswith(
        "pythia 0.96 [0.94, 0.98], mamba 0.31 [0.29, 0.33]; pythia is above mamba by the intervals."
    )


def test_lens_claims_no_difference_when_the_intervals_overlap():
    spread = {0: 0.5, 1: 0.9, 2: 0.7}

    def accuracy(arch, seed, layer):
        return spread[seed] + (0.05 if arch == "pythia" else 0.0)

    found = fs.logit_lens_findings(_lens(accuracy))
    compared = _only(found, "logit lens", "suffix, L = 4, lens accuracy at the output")
    assert (
        "the highest mean, pythia, cannot be told apart from mamba with 3 runs" in compared.sentence
    )
    assert "by the intervals" not in compared.sentence


def test_lens_with_one_run_gives_numbers_without_an_interval_or_a_claim():
    found = fs.logit_lens_findings(
        _lens(lambda arch, seed, layer: 1.0 if layer >= 1 else 0.25, seeds=(0,))
    )
    pythia = _only(found, "logit lens", "pythia (suffix, L = 4, one run)")
    assert "readable after block 1 (lens accuracy 1.00 ≥ 0.9)" in pythia.sentence
    assert "one run, so no interval and no claim about chance" in pythia.sentence
    assert "[" not in pythia.sentence
    compared = _only(found, "logit lens", "suffix, L = 4, lens accuracy at the output")
    assert compared.sentence.endswith(
        "pythia 1.00, mamba 1.00; no interval (one run each), so no difference is claimed."
    )


def test_lens_keeps_variants_apart_and_claims_nothing_against_an_arm_of_one_run():
    suffix = _lens(lambda arch, seed, layer: 0.95 if layer >= 2 else 0.25, archs=("pythia",))
    prefix = _lens(lambda arch, seed, layer: 0.95, archs=("pythia",))
    prefix["variant"], prefix["run"] = "prefix", prefix["run"] + "-prefix"
    lone = _lens(lambda arch, seed, layer: 0.3, archs=("mamba",), seeds=(0,))
    found = fs.logit_lens_findings(pd.concat([suffix, prefix, lone], ignore_index=True))
    assert "readable after block 2" in _only(found, "logit lens", "pythia (suffix").sentence
    prefixed = _only(found, "logit lens", "pythia (prefix, L = 4, 3 runs)")
    assert "readable after the embeddings" in prefixed.sentence
    assert prefixed.selection["run"] == ["pythia-s0-prefix", "pythia-s1-prefix", "pythia-s2-prefix"]
    compared = _only(found, "logit lens", "suffix, L = 4, lens accuracy at the output")
    assert "no interval for mamba, so no difference is claimed" in compared.sentence
    assert not [f for f in found if f.sentence.startswith("prefix, L = 4")]  # one arm: nothing


# state probe ---------------------------------------------------------------------------------


def _probe(accuracy, seeds=(0, 1, 2)) -> pd.DataFrame:
    """mamba's residual (layers -1..1) and SSM state (layers 0..1); chance 0.25."""
    rows = [
        {**_run("mamba", seed), "layer": layer, "source": source, "label": "token",
         "position": p, "accuracy": accuracy(source, layer, p, seed), "chance": 0.25,
         "n_train": 24, "n_test": 8, "n_classes": 4}
        for seed in seeds
        for source, layers in (("residual", (-1, 0, 1)), ("ssm_state", (0, 1)))
        for layer in layers for p in range(L)
    ]  # fmt: skip
    rows += [{**r, "label": "query_position", "position": -1, "accuracy": 1.0} for r in rows[:2]]
    return _table("state_probe", rows)


def test_state_probe_says_how_far_back_the_tokens_decode_per_layer():
    def accuracy(source, layer, p, seed):
        noise = 0.02 * seed
        if source == "residual":
            return 0.25 + noise - 0.01  # around chance: interval contains 0.25
        reach = 1 if layer == 0 else 3  # state: the last 1, then the last 3 positions
        if p >= L - reach or (layer == 1 and p == 0):  # layer 1 also keeps position 0
            return 0.9 + noise
        return 0.2 + noise

    found = fs.state_probe_findings(_probe(accuracy))
    state = _only(found, "state probe", "mamba (suffix, L = 4, 3 runs), SSM state after")
    assert "decodes above chance by the interval: block 0: 0; block 1: all 4." in state.sentence
    residual = _only(found, "state probe", "mamba (suffix, L = 4, 3 runs), residual")
    assert "by the interval: the embeddings to block 1: none." in residual.sentence
    assert state.selection["source"] == "ssm_state" and state.selection["label"] == "token"


def test_state_probe_lists_positions_that_decode_out_of_order():
    def accuracy(source, layer, p, seed):
        return 0.9 + 0.02 * seed if p in (0, 3) else 0.25 + 0.02 * seed - 0.02

    found = fs.state_probe_findings(_probe(accuracy))
    state = _only(found, "state probe", "mamba (suffix, L = 4, 3 runs), SSM state after")
    assert "by the interval: block 0 to block 1: 0, 3." in state.sentence  # positions 3 and 0
    margin = state.numbers["block 1, context position 0 (accuracy - chance)"]
    assert margin.mean == pytest.approx(0.67)


def test_state_probe_with_one_run_lists_accuracies_without_a_claim():
    found = fs.state_probe_findings(_probe(lambda s, layer, p, seed: 0.25 + 0.2 * p, seeds=(0,)))
    state = _only(found, "state probe", "mamba (suffix, L = 4, one run), SSM state after")
    assert "one run, so no interval and no claim about chance" in state.sentence
    assert "back is 0.85, 0.65, 0.45, 0.25 (chance 0.25)" in state.sentence
    assert "above chance" not in state.sentence.replace("no claim about chance", "")


# patching ------------------------------------------------------------------------------------

TOKENS = ["ctx0", "ctx1", "ctx2", "ctx3", "query", "out"]


def _patching(recovery, sites=("resid_pre", "ssm_state", "mixer_out"), seeds=(0, 1, 2)):
    """mamba, 'moved': ``recovery(site, layer, position, seed)``; resid_pre has layers 0..2
    (2: leaving the last block), the other sites 0..1."""
    rows = [
        {**_run("mamba", seed), "corruption": "moved", "site": site, "layer": layer,
         "position": t, "token": TOKENS[t], "recovery": recovery(site, layer, t, seed),
         "ld_clean": 2.0, "ld_corrupted": -2.0, "ld_patched": 0.0, "n": 32}
        for seed in seeds for site in sites
        for layer in range(3 if site == "resid_pre" else 2) for t in range(len(TOKENS))
    ]  # fmt: skip
    return _table("patching", rows)


def test_patching_names_the_best_cell_of_every_site_and_the_site_that_carries_the_answer():
    def recovery(site, layer, t, seed):
        noise = 0.01 * seed
        if site == "resid_pre":
            return 1.0 if t == 5 and layer == 2 else (0.3 + noise if (t, layer) == (2, 0) else 0)
        if site == "ssm_state":
            return 0.8 + noise if (layer, t) == (1, 4) else 0.1
        return 0.5 + noise if (layer, t) == (0, 3) else math.nan  # a new site: kept as it is

    found = fs.patching_findings(_patching(recovery))
    f = _only(found, "patching", "mamba (suffix, L = 4, 3 runs), 'moved' corruption")
    assert (
        "residual stream 1.00 [1.00, 1.00] leaving block 1 at position 5 (out, the prediction "
        "position); before it 0.31 [0.29, 0.33] entering block 0 at position 2 (ctx2); "
        "SSM state 0.81 [0.79, 0.83] in block 1 after position 4 (query); "
        "site mixer_out 0.51 [0.49, 0.53] in block 0 at position 3 (ctx3)." in f.sentence
    )
    assert f.sentence.endswith(
        "SSM state is above residual stream and site mixer_out by the intervals."
    )
    assert f.numbers["SSM state, best"].mean == pytest.approx(0.81)
    assert f.selection["corruption"] == "moved"


def test_patching_with_one_run_claims_no_site_over_another():
    found = fs.patching_findings(
        _patching(lambda site, layer, t, seed: 0.9 if site == "ssm_state" else 0.1, seeds=(0,))
    )
    f = _only(found, "patching", "mamba (suffix, L = 4, one run)")
    assert "no difference is claimed" in f.sentence and "by the intervals" not in f.sentence


# attention -----------------------------------------------------------------------------------


def _attention(weight, archs=("pythia", "mamba"), seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = [
        {**_run(arch, seed), "layer": layer, "head": -1,
         "kind": "attention" if arch == "pythia" else "hidden_attention",
         "target_position": p, "source_position": s, "weight": weight(arch, layer, p, s, seed)}
        for arch in archs for seed in seeds for layer in range(2)
        for p in range(L) for s in range(L)
    ]  # fmt: skip
    return _table("attention", rows)


def test_attention_says_where_the_prediction_position_looks():
    def weight(arch, layer, p, s, seed):
        if arch == "pythia" and layer == 1:
            return 0.8 + 0.01 * seed if s == p else 0.05
        return 0.2 + (0.05 * seed if s == p else 0.0)  # mamba: 0.2, 0.25, 0.3 vs 0.2

    found = fs.attention_findings(_attention(weight))
    pythia = _only(found, "attention", "pythia")
    assert "most attention on the queried token at layer 1, 0.81 [" in pythia.sentence
    assert "against 0.05 [0.05, 0.05] on each other context position" in pythia.sentence
    assert "more on the queried token by the interval" in pythia.sentence
    mamba = _only(found, "attention", "mamba")
    assert "hidden-attention share" in mamba.sentence
    assert "cannot be told apart with 3 runs" in mamba.sentence


# training ------------------------------------------------------------------------------------


def test_training_compares_each_runs_first_and_last_checkpoint():
    early = _lens(lambda arch, seed, layer: 0.25 + 0.01 * seed, step=0)
    late = _lens(
        lambda arch, seed, layer: (0.95 if arch == "pythia" else 0.27) + 0.01 * seed, step=500
    )
    found = fs.training_findings({"logit_lens": pd.concat([early, late], ignore_index=True)})
    pythia = _only(found, "training", "pythia (suffix, L = 4, 3 runs), lens accuracy")
    assert (
        "0.26 [" in pythia.sentence
        and "at the first inspected checkpoint (step 0)" in pythia.sentence
    )
    assert "0.96 [" in pythia.sentence and "at the last (step 500); rose beyond" in pythia.sentence
    mamba = _only(found, "training", "mamba (suffix, L = 4, 3 runs), lens accuracy")
    assert "no change that 3 runs can tell apart" in mamba.sentence
    assert pythia.numbers["first"].mean == pytest.approx(0.26)
    # one checkpoint per run: nothing across training
    assert fs.training_findings({"logit_lens": late}) == []


# all together --------------------------------------------------------------------------------


def test_findings_on_partial_results_and_their_markdown():
    lens = _lens(lambda arch, seed, layer: 1.0 if layer >= 2 else 0.25)
    empty = _table("patching", [])
    found = findings({"logit_lens": lens, "patching": empty}, {"logit_lens": lens})
    assert {f.topic for f in found} == {"logit lens"}  # one step: no training finding
    text = findings_markdown(found)
    assert text.startswith("Brackets: 95% t interval over the runs")
    assert "**Logit lens**" in text and "readable after block 2" in text
    assert "logit\\_lens.csv: arch = pythia, variant = suffix, length = 4" in text
    assert findings_markdown([]).startswith("No findings")


# the report ----------------------------------------------------------------------------------


def test_inside_report_opens_with_the_findings_of_a_partial_sweep(tmp_path):
    """Hand-made results (logit lens only, one checkpoint, three runs per arm) rendered by
    ``vlab report --template inside``: the Findings section comes first and says what the
    table says."""
    lens = _lens(lambda arch, seed, layer: 0.96 if arch == "pythia" and layer >= 2 else 0.25)
    for run, rows in lens.groupby("run"):
        path = tmp_path / run
        folder = path / "inside" / "step-000000100"
        folder.mkdir(parents=True)
        arch = rows["arch"].iloc[0]
        config = {"task": {"length": L, "variant": "suffix"}, "model": {"arch": arch}}
        (path / "config.json").write_text(json.dumps({**config, "train": {}}))
        rows.drop(columns=RUN_KEYS).to_csv(folder / "logit_lens.csv", index=False)
        (folder / "logit_lens.json").write_text(json.dumps({"examples": 32, "seconds": 0.1}))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(tmp_path), "--template", "inside"]) == 0

    nb = nbformat.read(tmp_path / "inside.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    html = (tmp_path / "inside.html").read_text()
    assert html.index(">Findings") < html.index(">Overview")
    text = re.sub(r"<[^>]+>", "", html)
    assert "pythia (suffix, L = 4, 3 runs): the answer becomes readable after block 2" in text
    assert "mamba (suffix, L = 4, 3 runs): the answer never becomes readable" in text
    assert "pythia is above mamba by the intervals" in text
    assert "Source: logit_lens.csv: arch = pythia, variant = suffix, length = 4" in text
