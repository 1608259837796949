"""Findings in words on the VLM runs' tables (``vlab.analysis.inside.findings.vlm_findings``):
hand-made tables with known answers (three seeds that separate, intervals that overlap, one
seed), and the VLM findings cell of the rendered inside report on hand-made run folders."""

import contextlib
import io
import json
import os
import re
from html import unescape

os.environ.setdefault("MPLBACKEND", "Agg")

import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vlab.analysis.inside import findings as fs  # noqa: E402
from vlab.analysis.inside.findings import Finding, vlm_findings, vlm_findings_markdown  # noqa: E402
from vlab.analysis.inside.results import VLM_COLUMNS, VLM_KEYS  # noqa: E402
from vlab.cli import main  # noqa: E402

AGNOSTIC, AWARE = "task_agnostic", "task_aware"


def _run(arch: str, seed: int, ordering: str = AGNOSTIC, stage: int = 2) -> dict:
    return {"run": f"{arch}-{ordering}-s{seed}/stage{stage}", "arch": arch,
            "ordering": ordering, "stage": stage, "step": 4}  # fmt: skip


def _table(analysis: str, rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[*VLM_KEYS, "step", *VLM_COLUMNS[analysis]])


def _only(found: list[Finding], topic: str, start: str) -> Finding:
    chosen = [f for f in found if f.topic == topic and f.sentence.startswith(start)]
    assert len(chosen) == 1, [f.sentence for f in found]
    return chosen[0]


# image attention -----------------------------------------------------------------------------


def _attention(share, runs) -> pd.DataFrame:
    """One example per run on a 2 x 2 grid whose target covers cell (0, 0) (a quarter of the
    patches), layers 0 and 1: ``share(arch, ordering, seed, layer)`` of the image weight (1 in
    all) on the target, the rest spread over the other three cells."""
    rows = []
    for arch, ordering, seed in runs:
        for layer in (0, 1):
            a = share(arch, ordering, seed, layer)
            for cell in range(4):
                rows.append({**_run(arch, seed, ordering), "example": 0, "layer": layer,
                             "kind": "attention", "row": cell // 2, "col": cell % 2,
                             "weight": a if cell == 0 else (1 - a) / 3, "target": "red circle",
                             "target_row": 0, "target_col": 0, "on_target": cell == 0})  # fmt: skip
    return _table("image_attention", rows)


def test_image_attention_names_the_layer_on_the_target_and_compares_arms_and_orderings():
    def share(arch, ordering, seed, layer):
        if arch == "pythia":
            return 0.70 + 0.05 * seed if layer == 1 else 0.25
        if ordering == AWARE:
            return 0.60 + 0.05 * seed if layer == 1 else 0.25
        return 0.22 + 0.03 * seed if layer == 0 else 0.10  # mamba, task-agnostic: even spread

    runs = [(a, AGNOSTIC, s) for a in ("pythia", "mamba") for s in range(3)]
    runs += [("mamba", AWARE, s) for s in range(3)]
    found = vlm_findings({"image_attention": _attention(share, runs)})
    pythia = _only(found, "image attention", "Pythia-VL (task-agnostic, stage 2, 3 runs)")
    assert "on the target at layer 1, 0.75 [" in pythia.sentence
    assert "against the target's share of the patches 0.25 [0.25, 0.25]" in pythia.sentence
    assert pythia.sentence.endswith("more than an even spread would put there, by the interval.")
    assert pythia.numbers["layer 1, share"].mean == pytest.approx(0.75)
    assert pythia.selection["ordering"] == AGNOSTIC and pythia.selection["stage"] == 2
    mamba = _only(found, "image attention", "Mamba-VL (task-agnostic, stage 2, 3 runs)")
    assert "at layer 0, 0.25 [" in mamba.sentence
    assert mamba.sentence.endswith("cannot be told apart from an even spread with 3 runs.")
    arms = _only(found, "VLM arms and orderings", "task-agnostic, stage 2, largest share")
    assert arms.sentence.endswith("Pythia-VL is above Mamba-VL by the intervals.")
    by_ordering = _only(found, "VLM arms and orderings", "Mamba-VL, stage 2, largest share")
    assert "by ordering: task-agnostic 0.25 [" in by_ordering.sentence
    assert by_ordering.sentence.endswith("task-aware is above task-agnostic by the intervals.")
    assert by_ordering.selection["ordering"] == [AGNOSTIC, AWARE]
    assert not [f for f in found if f.sentence.startswith("task-aware, stage 2")]  # one arm


def test_image_attention_claims_nothing_from_overlapping_intervals_or_one_run():
    spread = {0: 0.3, 1: 0.7, 2: 0.5}

    def share(arch, ordering, seed, layer):
        return spread[seed] if arch == "pythia" else 0.40 + 0.05 * seed

    runs = [(a, AGNOSTIC, s) for a in ("pythia", "mamba") for s in range(3)]
    found = vlm_findings({"image_attention": _attention(share, runs)})
    arms = _only(found, "VLM arms and orderings", "task-agnostic, stage 2, largest share")
    assert "cannot be told apart from Mamba-VL with 3 runs" in arms.sentence
    assert "by the intervals" not in arms.sentence

    one = vlm_findings({"image_attention": _attention(share, [("pythia", AGNOSTIC, 1)])})
    assert len(one) == 1
    assert one[0].sentence == (
        "Pythia-VL (task-agnostic, stage 2, one run): the answer puts the largest share of its "
        "image weight on the target at layer 0, 0.70, against the target's share of the "
        "patches 0.25; one run, so no interval and no claim."
    )


# VLM logit lens ------------------------------------------------------------------------------


def _lens(accuracy, archs=("pythia", "mamba"), seeds=(0, 1, 2)) -> pd.DataFrame:
    """The box ``[0.x…``: answer tokens 0-2 fixed (accuracy 1), 3 the first varying one
    (``accuracy(arch, seed, layer)``), 4 varying too (accuracy 0); layers -1..2."""
    tokens = ["[", "0", ".", "*", "*"]
    rows = [
        {**_run(arch, seed), "layer": layer, "answer_index": j, "token": t,
         "probability": 0.5, "accuracy": accuracy(arch, seed, layer) if j == 3 else float(j < 3),
         "rank": 1.0, "n": 16}
        for arch in archs for seed in seeds for layer in range(-1, 3)
        for j, t in enumerate(tokens)
    ]  # fmt: skip
    return _table("vlm_logit_lens", rows)


def test_vlm_lens_reads_the_first_varying_token_against_a_guess_among_the_digits():
    def accuracy(arch, seed, layer):
        if arch == "pythia":
            return 0.95 + 0.01 * seed if layer >= 1 else 0.05 + 0.01 * seed
        return 0.30 + 0.01 * seed

    found = fs.vlm_logit_lens_findings(_lens(accuracy))
    pythia = _only(found, "VLM logit lens", "Pythia-VL (task-agnostic, stage 2, 3 runs)")
    assert "first varying token becomes readable after block 1 (lens accuracy 0.96 [" in (
        pythia.sentence
    )
    assert pythia.sentence.endswith(
        "first above chance (0.1, a guess among the digits) by the interval after block 1."
    )
    assert pythia.selection["answer_index"] == 3
    mamba = _only(found, "VLM logit lens", "Mamba-VL (task-agnostic, stage 2, 3 runs)")
    assert "never becomes readable (accuracy ≥ 0.9); best 0.31 [" in mamba.sentence
    assert "by the interval after the embeddings." in mamba.sentence
    arms = _only(vlm_findings({"vlm_logit_lens": _lens(accuracy)}), "VLM arms and orderings", "")
    assert arms.sentence.endswith("Pythia-VL is above Mamba-VL by the intervals.")

    one = fs.vlm_logit_lens_findings(_lens(accuracy, archs=("pythia",), seeds=(0,)))
    assert one[0].sentence.endswith("one run, so no interval and no claim about chance.")


# VLM state probe -----------------------------------------------------------------------------


def _probe(archs=("pythia", "mamba"), seeds=(0, 1, 2)) -> pd.DataFrame:
    """``cell`` (4 cells) 0.6 + noise against chance 0.5 everywhere; ``target_object`` 0.9 +
    noise from the residual at the prediction position after blocks 1 and 2, else chance (0.2)
    +- noise; Mamba also has its SSM state (layers 0, 1) at chance."""
    rows = []
    for arch in archs:
        sources = ["residual", "residual_image_end"] + (["ssm_state"] if arch == "mamba" else [])
        for seed in seeds:
            for source in sources:
                layers = range(0, 2) if source == "ssm_state" else range(-1, 3)
                for layer in layers:
                    labels = [("cell", k) for k in range(4)] + [("target_object", -1)]
                    for label, position in labels:
                        if label == "cell":
                            accuracy, chance = 0.6 + 0.01 * seed, 0.5
                        elif source == "residual" and layer >= 1:
                            accuracy, chance = 0.9 + 0.01 * seed, 0.2
                        else:
                            accuracy, chance = 0.19 + 0.01 * seed, 0.2
                        rows.append({**_run(arch, seed), "layer": layer, "source": source,
                                     "label": label, "position": position, "accuracy": accuracy,
                                     "chance": chance, "n_train": 24, "n_test": 8, "n_classes": 5,
                                     "row": position // 2 if position >= 0 else -1,
                                     "col": position % 2 if position >= 0 else -1})  # fmt: skip
    return _table("vlm_state_probe", rows)


def test_vlm_state_probe_says_which_label_decodes_from_which_source_and_layer():
    found = fs.vlm_state_probe_findings(_probe())
    named = _only(found, "VLM state probe", "Mamba-VL (task-agnostic, stage 2, 3 runs), the named")
    assert named.sentence == (
        "Mamba-VL (task-agnostic, stage 2, 3 runs), the named object: decodes above chance by "
        "the interval from the residual at the prediction position: blocks 1-2; the residual "
        "after the image: no layer; the SSM state after the image: no layer; the largest "
        "accuracy - chance is 0.71 [0.69, 0.73] from the residual at the prediction position "
        "after block 1."
    )
    cells = _only(
        found, "VLM state probe", "Pythia-VL (task-agnostic, stage 2, 3 runs), the object"
    )
    assert "the residual at the prediction position: the embeddings, blocks 0-2;" in cells.sentence
    assert cells.selection["label"] == "cell"
    contrasts = [f for f in vlm_findings({"vlm_state_probe": _probe()})
                 if f.topic == "VLM arms and orderings"]  # fmt: skip
    assert len(contrasts) == 2  # one per label, both arms alike: not told apart
    assert all("cannot be told apart from" in f.sentence for f in contrasts)

    one = fs.vlm_state_probe_findings(_probe(archs=("pythia",), seeds=(0,)))
    assert [f.sentence for f in one] == [
        "Pythia-VL (task-agnostic, stage 2, one run), the object in each cell (mean over cells): "
        "one run, so no interval and no claim about chance; the largest accuracy - chance is "
        "0.10 from the residual at the prediction position after the embeddings.",
        "Pythia-VL (task-agnostic, stage 2, one run), the named object: one run, so no interval "
        "and no claim about chance; the largest accuracy - chance is 0.70 from the residual at "
        "the prediction position after block 1.",
    ]


# VLM patching --------------------------------------------------------------------------------


def _patching(recovery, archs=("pythia", "mamba"), seeds=(0, 1, 2)) -> pd.DataFrame:
    """'moved' only; the residual stream (layers 0-2: entering blocks 0, 1, leaving block 1)
    and, for Mamba, the SSM state (blocks 0, 1); roles: the three summaries, four patches,
    the text before the answer. ``recovery(arch, seed, site, layer, token)``."""
    tokens = [("target_cells", -1), ("corrupted_cells", -1), ("last", -1)]
    tokens += [(f"img{k}", 1 + k) for k in range(4)] + [("text-0", 5)]
    rows = []
    for arch in archs:
        sites = [("resid_pre", range(3))] + ([("ssm_state", range(2))] if arch == "mamba" else [])
        for seed in seeds:
            for site, layers in sites:
                for layer in layers:
                    for token, position in tokens:
                        rows.append({**_run(arch, seed), "corruption": "moved", "site": site,
                                     "layer": layer, "position": position, "token": token,
                                     "row": -1, "col": -1,
                                     "recovery": recovery(arch, seed, site, layer, token),
                                     "ld_clean": 2.0, "ld_corrupted": -2.0, "ld_patched": 0.0,
                                     "n": 8})  # fmt: skip
    return _table("vlm_patching", rows)


def _recovery(arch, seed, site, layer, token):
    noise = 0.01 * seed
    if token == "last" and site == "resid_pre" and layer == 2:
        return 1.0  # the whole residual stream at the prediction position: trivially back
    if arch == "pythia" and token == "target_cells" and site == "resid_pre" and layer == 1:
        return 0.8 + noise
    if arch == "mamba" and token == "target_cells" and site == "ssm_state" and layer == 0:
        return 0.6 + noise
    if token == "img2" and layer == 0:
        return 0.3 + noise
    return 0.1 + noise


def test_vlm_patching_names_the_position_class_and_site_that_recover_most():
    found = fs.vlm_patching_findings(_patching(_recovery))
    pythia = _only(found, "VLM patching", "Pythia-VL (task-agnostic, stage 2, 3 runs), 'moved'")
    s = pythia.sentence
    assert "the clean target's patches 0.81 [0.79, 0.83] (residual stream entering block 1)" in s
    assert "the prediction position 1.00 [1.00, 1.00] (residual stream leaving block 1)" in s
    assert "a single image patch 0.31 [0.29, 0.33] (residual stream entering block 0, at img2)" in s
    assert (
        "Among the image's positions: the clean target's patches 0.81 [0.79, 0.83], the "
        "corrupted target's patches 0.11 [0.09, 0.13], a single image patch 0.31 [0.29, 0.33]; "
        "the clean target's patches is above the corrupted target's patches and a single image "
        "patch by the intervals."
    ) in s
    assert "per site" not in s  # one site
    mamba = _only(found, "VLM patching", "Mamba-VL (task-agnostic, stage 2, 3 runs), 'moved'")
    assert mamba.sentence.endswith(
        "At the clean target's patches, per site: residual stream 0.11 [0.09, 0.13], SSM state "
        "0.61 [0.59, 0.63]; SSM state is above residual stream by the intervals."
    )
    assert mamba.numbers["the clean target's patches, SSM state"].mean == pytest.approx(0.61)
    arms = _only(vlm_findings({"vlm_patching": _patching(_recovery)}), "VLM arms and orderings", "")
    assert arms.sentence.startswith("task-agnostic, stage 2, 'moved', largest recovery at the")
    assert arms.sentence.endswith("Pythia-VL is above Mamba-VL by the intervals.")

    one = fs.vlm_patching_findings(_patching(_recovery, seeds=(0,)))
    assert all(f.sentence.endswith("one run, so no interval.") for f in one) and len(one) == 2


def test_vlm_findings_of_no_tables_and_their_markdown():
    empty = {a: _table(a, []) for a in VLM_COLUMNS}
    assert vlm_findings({}) == [] and vlm_findings(empty) == []
    unmeasured = {  # probes on too few examples (NaN), recoveries of LD_clean == LD_corrupted
        "vlm_state_probe": _probe().assign(accuracy=float("nan")),
        "vlm_patching": _patching(lambda *_: float("inf")),
        "vlm_logit_lens": _lens(lambda *_: 0.5).assign(token="["),  # no varying token
    }
    assert vlm_findings(unmeasured) == []
    assert vlm_findings_markdown([]).startswith("No VLM findings")
    text = vlm_findings_markdown(vlm_findings({"vlm_patching": _patching(_recovery)}))
    assert "**VLM patching**" in text and "**VLM arms and orderings**" in text
    assert r"*Source: vlm\_patching.csv: arch = pythia, ordering = task\_agnostic" in text


# the report ----------------------------------------------------------------------------------


def _write_run(root, run: str, tables: dict[str, pd.DataFrame]) -> None:
    """A hand-made VLM stage folder (as ``vlab vlm train`` writes its config) with ``tables``
    written as ``vlab inspect`` would, at step 4."""
    from PIL import Image

    rows = next(iter(tables.values()))
    arch, ordering, stage = (rows[k].iloc[0] for k in ("arch", "ordering", "stage"))
    path = root / run
    folder = path / "inside" / "step-000000004"
    (folder / "image_attention").mkdir(parents=True)
    config = {"model": {"lm": {"arch": arch}, "sequence": {"ordering": ordering}},
              "stage1": {}, "stage2": {}, "stage": int(stage)}  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    (path / "status.json").write_text(json.dumps({"state": "done", "arch": arch}))
    for analysis, table in tables.items():
        table.drop(columns=VLM_KEYS).to_csv(folder / f"{analysis}.csv", index=False)
    listing = {"grid": [2, 2], "image_grid": [2, 2], "examples": [
        {"index": 0, "file": "example-0.png", "box": [0.0, 0.0, 0.5, 0.5], "target": "red circle",
         "prompt": "the red circle", "response": "[0.00, 0.00, 0.50, 0.50]"}]}  # fmt: skip
    (folder / "image_attention" / "examples.json").write_text(json.dumps(listing))
    Image.new("RGB", (8, 8)).save(folder / "image_attention" / "example-0.png")
    for analysis in tables:
        (folder / f"{analysis}.json").write_text(json.dumps({"examples": 1, "seconds": 0.1}))


def test_inside_report_opens_the_vlm_section_with_its_findings(tmp_path):
    """Hand-made VLM stages (three seeds per arm; image_attention and vlm_logit_lens, as an
    inspection that ran only those would leave) rendered by ``vlab report --template inside``:
    the VLM findings come first in the VLM section and say what the tables say."""

    def share(arch, ordering, seed, layer):
        return 0.70 + 0.05 * seed if arch == "pythia" and layer == 1 else 0.25 + 0.01 * seed

    attention = _attention(share, [(a, AGNOSTIC, s) for a in ("pythia", "mamba") for s in range(3)])
    lens = _lens(lambda arch, seed, layer: 0.95 if layer >= 1 else 0.05 + 0.01 * seed)
    for run, rows in attention.groupby("run"):
        _write_run(tmp_path, run, {"image_attention": rows,
                                   "vlm_logit_lens": lens[lens["run"] == run]})  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(tmp_path), "--template", "inside"]) == 0

    nb = nbformat.read(tmp_path / "inside.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    html = (tmp_path / "inside.html").read_text()
    assert html.index(">VLM runs: findings") < html.index(">VLM runs: where the answer looks")
    text = unescape(re.sub(r"<[^>]+>", "", html))
    assert "Pythia-VL (task-agnostic, stage 2, 3 runs): the answer puts the largest share" in text
    assert "more than an even spread would put there, by the interval." in text
    assert "Pythia-VL is above Mamba-VL by the intervals" in text
    assert "the box's first varying token becomes readable after block 1" in text
    assert "Source: vlm_logit_lens.csv: arch = mamba, ordering = task_agnostic" in text
