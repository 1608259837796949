"""The probe analyses on a VLM (state probes, patching, logit lens on grounding examples):
known answers on tiny Pythia-VL and Mamba-VL runs, and ``vlab inspect`` running them all,
resumably, into a VLM stage."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from vlab.analysis.inside import inspection, vlm_analyses
from vlab.analysis.inside.activations import layers_with, num_layers
from vlab.analysis.inside.linear_probe import ProbeFitConfig
from vlab.analysis.inside.results import VLM_COLUMNS, load_inside
from vlab.analysis.inside.runs import open_any_run
from vlab.analysis.inside.vlm import load_vlm, run_examples
from vlab.analysis.inside.vlm_analyses import (
    Pair,
    cell_classes,
    corrupted_pairs,
    merged_embeddings,
    moved_twin,
    object_class,
    other_target_twin,
    patch_pairs,
    probe_rows,
    roles_of,
    vlm_logit_lens_table,
    vlm_patching_table,
    vlm_state_probe_table,
)
from vlab.cli import main
from vlab.models.vlm.data.records import Turn, VLSample
from vlab.models.vlm.data.shapes import ShapeObject, render
from vlab.vlm.config import config_from
from vlab.vlm.train import train_vlm

# 32 px encoder input: a 4 x 4 grid of visual tokens, so sequences (and patching) stay short
TINY = {
    "stage2": {"steps": 4, "eval_every": 2, "batch_size": 4, "threads": 2, "keep_checkpoints": 2},
    "data": {"n_heldout": 2},
    "max_new_tokens": 2,
    "model": {"vision": {"image_size": 32}},
}
ARCHS = ("pythia", "mamba")
CELLS = 16


@pytest.fixture(scope="module")
def vlm_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm-analyses")
    for arch in ARCHS:
        cfg = config_from("tiny-shapes", arch, TINY)
        train_vlm(cfg, root / arch, stages=(2,), progress=False, log=lambda *_: None)
    return root


def loaded(vlm_runs, arch, n):
    run = open_any_run(vlm_runs / arch / "stage2")
    vlm, tok = load_vlm(run, 4)
    return vlm, run_examples(run, vlm, tok, n)


# logit lens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_lens_at_the_last_layer_is_the_lms_own_prediction(vlm_runs, arch):
    vlm, examples = loaded(vlm_runs, arch, 4)
    table = vlm_logit_lens_table(vlm, examples, batch_size=3)
    assert list(table.columns) == VLM_COLUMNS["vlm_logit_lens"]
    depth = num_layers(vlm.lm)
    answer = len(examples.answer_positions[0])  # every box is "[0.xx, 0.xx, 0.xx, 0.xx]"
    assert len(table) == (depth + 1) * answer and set(table["n"]) == {4}
    assert sorted(set(table["layer"])) == list(range(-1, depth))
    first = table[table["answer_index"] == 0]
    assert set(first["token"]) == {"["}
    last = table[table["layer"] == depth - 1].set_index("answer_index")
    probability, hit, rank = np.zeros(answer), np.zeros(answer), np.zeros(answer)
    with torch.no_grad():
        for b in range(4):
            embeds = merged_embeddings(vlm, {k: v[b : b + 1] for k, v in examples.batch.items()})
            logits = vlm.lm(inputs_embeds=embeds).logits[0].float()
            where = examples.answer_positions[b]
            targets = examples.batch["input_ids"][b, where + 1]
            rows = logits[where]
            correct = rows.gather(1, targets[:, None])
            probability += rows.softmax(-1).gather(1, targets[:, None])[:, 0].numpy() / 4
            hit += (rows.argmax(-1) == targets).float().numpy() / 4
            rank += (rows > correct).sum(-1).float().numpy() / 4
    np.testing.assert_allclose(last["probability"], probability, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(last["accuracy"], hit)
    np.testing.assert_allclose(last["rank"], rank)


# state probes ----------------------------------------------------------------------------------


def test_cell_classes_are_the_objects_covering_each_cell(vlm_runs):
    """A 64 px scene on the 4 x 4 grid (16 px cells): a red square filling cell (0, 0) and a
    blue circle inscribed in cell (1, 2); every other cell is background."""
    vlm, examples = loaded(vlm_runs, "pythia", 1)
    shapes = examples.shapes
    objects = (ShapeObject("square", "red", 0, 0, 16), ShapeObject("circle", "blue", 32, 16, 16))
    meta = {
        "width": 64,
        "height": 64,
        "target": 0,
        "objects": [
            {"shape": o.shape, "color": o.color, "box_px": list(o.box_px)} for o in objects
        ],
    }
    sample = VLSample(render(shapes, objects), "x", "grounding", "shapes", [Turn("p", "r")], meta)
    import dataclasses

    one = dataclasses.replace(examples, samples=[sample])
    want = np.zeros(CELLS, dtype=np.int64)
    want[0] = object_class(shapes, "red", "square")
    want[1 * 4 + 2] = object_class(shapes, "blue", "circle")
    np.testing.assert_array_equal(cell_classes(vlm, one)[0], want)
    assert object_class(shapes, "red", "circle") == 1 and want[0] != want[6]


def test_a_probe_reads_a_planted_label_and_finds_chance_in_constant_features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=64)
    planted = np.eye(3)[y] + 0.01 * rng.normal(size=(64, 3))
    features = {("residual", 0): planted, ("residual", -1): np.ones((64, 5))}
    table = probe_rows(features, [("cell", 5, y), ("target_cell", -1, y)], cols=4)
    assert list(table.columns) == VLM_COLUMNS["vlm_state_probe"]
    readable = table[table["layer"] == 0]
    assert (readable["accuracy"] == 1.0).all() and (readable["chance"] < 0.6).all()
    constant = table[table["layer"] == -1]
    assert (constant["accuracy"] == constant["chance"]).all()
    assert table[table["label"] == "cell"][["row", "col"]].values.tolist() == [[1, 1], [1, 1]]
    assert set(table[table["label"] == "target_cell"]["row"]) == {-1}
    few = probe_rows({("residual", 0): planted[:3]}, [("cell", 0, y[:3])], cols=4)
    assert few["accuracy"].isna().all() and few["n_train"].tolist() == [3]


@pytest.mark.parametrize("arch", ARCHS)
def test_state_probe_table_has_every_source_layer_and_label(vlm_runs, arch):
    vlm, examples = loaded(vlm_runs, arch, 12)
    table = vlm_state_probe_table(vlm, examples, batch_size=5, fit=ProbeFitConfig(max_iter=50))
    assert list(table.columns) == VLM_COLUMNS["vlm_state_probe"]
    depth, ssm = num_layers(vlm.lm), layers_with(vlm.lm, "ssm.state")
    sources = table.groupby("source")["layer"].unique().apply(sorted).to_dict()
    want = {"residual": list(range(-1, depth)), "residual_image_end": list(range(-1, depth))}
    if ssm:
        want["ssm_state"] = ssm
    assert sources == want
    assert len(table) == sum(len(v) for v in want.values()) * (CELLS + 2)
    cells = table[table["label"] == "cell"]
    assert sorted(set(cells["position"])) == list(range(CELLS))
    assert (cells["row"] * 4 + cells["col"] == cells["position"]).all()
    assert (table["n_train"] + table["n_test"] == 12).all()
    # layer -1 at the prediction position is the embedding of the same token ("\n") in every
    # example: nothing to read, so every probe there is at chance
    constant = table[(table["source"] == "residual") & (table["layer"] == -1)]
    assert (constant["accuracy"] == constant["chance"]).all()
    assert table["accuracy"].between(0, 1).all()


# patching --------------------------------------------------------------------------------------


def test_twins_move_the_target_or_name_another_object(vlm_runs):
    vlm, examples = loaded(vlm_runs, "pythia", 12)
    tok = examples.tokenizer
    named = 0
    for b, sample in enumerate(examples.samples):
        twin = moved_twin(examples.shapes, sample, b)
        target = sample.meta["target"]
        assert twin.turns[0].prompt == sample.turns[0].prompt
        assert twin.turns[0].response[:4] != sample.turns[0].response[:4]
        old, new = sample.meta["objects"], twin.meta["objects"]
        assert [o for k, o in enumerate(old) if k != target] == [
            o for k, o in enumerate(new) if k != target
        ]
        assert new[target]["box_px"] != old[target]["box_px"]
        assert np.asarray(twin.image).tolist() != np.asarray(sample.image).tolist()
        assert twin == moved_twin(examples.shapes, sample, b)  # deterministic
        other = other_target_twin(sample, tok)
        if other is not None:
            named += 1
            assert other.image is sample.image and other.meta["target"] != target
            assert len(tok.encode(other.turns[0].prompt)) == len(tok.encode(sample.turns[0].prompt))
    assert named > 0


@pytest.mark.parametrize("arch,n", [("pythia", 3), ("mamba", 1)])  # Mamba's 9 sites are slow
def test_patching_a_clean_run_into_itself_gives_the_clean_ld_everywhere(vlm_runs, arch, n):
    vlm, examples = loaded(vlm_runs, arch, n)
    pairs, _ = corrupted_pairs(vlm, examples, "moved")
    assert len(pairs) == n
    itself = [
        Pair(p.clean, p.clean, p.length, p.clean_token, p.corrupted_token, p.roles, (), ())
        for p in pairs
    ]
    batch = examples.batch
    clean, corrupted, patched = patch_pairs(vlm, itself, batch, batch)
    np.testing.assert_allclose(corrupted, clean, atol=1e-5)
    assert (clean.abs() > 0).all()
    sites = {site for site, _ in patched}
    assert {"resid_pre"} <= sites and ("ssm_state" in sites) == (arch == "mamba")
    for values in patched.values():
        for p, row in enumerate(values):
            assert row.shape == (pairs[p].length,)
            np.testing.assert_allclose(row, clean[p].expand_as(row), atol=1e-4)


def test_patching_table_known_recoveries(vlm_runs):
    vlm, examples = loaded(vlm_runs, "pythia", 3)
    table = vlm_patching_table(vlm, examples, corruptions=("moved",), max_examples=2)
    assert list(table.columns) == VLM_COLUMNS["vlm_patching"]
    assert set(table["corruption"]) == {"moved"} and set(table["n"]) <= {1, 2}
    depth = num_layers(vlm.lm)
    resid = table[table["site"] == "resid_pre"]
    assert sorted(set(resid["layer"])) == list(range(depth + 1))
    summaries = table[table["position"] == -1]
    assert set(summaries["token"]) == {"target_cells", "corrupted_cells", "last"}
    images = table[table["token"].str.startswith("img")]
    assert (images["row"] * 4 + images["col"] == images["token"].str[3:].astype(int)).all()
    assert set(images["token"]) == {f"img{k}" for k in range(CELLS)}
    # the stream leaving the last block at the prediction position is the whole answer
    out = resid[resid["layer"] == depth].set_index("token")
    assert out.loc["last", "recovery"] == pytest.approx(1.0, abs=1e-3)
    # ... and at any position before the answer it changes nothing
    earlier = out[(out["position"] >= 0) & ~out.index.str.startswith("ans")]
    assert len(earlier) > CELLS
    np.testing.assert_allclose(earlier["ld_patched"], earlier["ld_corrupted"], atol=1e-5)
    # the text before the answer is the same in clean and moved: patching its embedding
    # changes nothing
    text = resid[(resid["layer"] == 0) & resid["token"].str.match(r"^(pre|text)-")]
    assert len(text) > 5
    np.testing.assert_allclose(text["ld_patched"], text["ld_corrupted"], atol=1e-5)
    # roles are ordered by where they sit: the image's tokens before the answer's
    order = resid[resid["layer"] == 0].set_index("token")["position"]
    assert order["pre-1"] < order["img0"] < order["img15"] < order["text-0"] < order["ans0"]


def test_roles_name_each_position_from_the_assembly():
    patch = torch.tensor([-1, -1, 0, 1, -1, 2, 3, -1, -1, -1, -1, -1])
    assert roles_of(patch, answer_start=8, length=11) == [
        "pre-2", "pre-1", "img0", "img1", "mark1", "img2", "img3",
        "text-1", "text-0", "ans0", "ans1",
    ]  # fmt: skip


# vlab inspect ----------------------------------------------------------------------------------

VLM_UNITS = ["image_attention", "vlm_state_probe", "vlm_patching", "vlm_logit_lens"]


def test_inspect_runs_every_vlm_analysis_and_resumes(vlm_runs, tmp_path, monkeypatch):
    out = tmp_path / "pythia"
    shutil.copytree(vlm_runs / "pythia", out)
    stage = out / "stage2"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the inspection is killed in its patching unit

    monkeypatch.setattr(vlm_analyses, "vlm_patching_table", killed)
    with pytest.raises(KeyboardInterrupt):
        inspection.inspect_paths([out], None, examples=6, progress=False)
    monkeypatch.undo()
    done = [a for a in VLM_UNITS if inspection.result_paths(stage, 4, a)[1].is_file()]
    assert "vlm_patching" not in done and len(done) >= 1
    mtimes = {a: inspection.result_paths(stage, 4, a)[0].stat().st_mtime_ns for a in done}
    assert inspection.inspect_paths([out], None, examples=6, progress=False)[:2] == (
        4 - len(done),
        len(done),
    )
    for a in done:  # what was finished is not redone
        assert inspection.result_paths(stage, 4, a)[0].stat().st_mtime_ns == mtimes[a]
    for analysis in VLM_UNITS:
        table_path, meta_path = inspection.result_paths(stage, 4, analysis)
        table = pd.read_csv(table_path)
        assert list(table.columns) == ["step", *VLM_COLUMNS[analysis]] and len(table) > 0
        assert json.loads(meta_path.read_text())["examples"] == 6
    assert inspection.inspect_paths([out], None, examples=6, progress=False)[:2] == (0, 4)
    results = load_inside(out)
    for analysis in VLM_UNITS[1:]:
        assert set(results.tables[analysis]["run"]) == {"stage2"}
        assert results.vlm_runs[analysis].tolist() == [1]
    assert main(["inspect", str(stage), "--analyses", "vlm_logit_lens", "--examples", "6",
                 "--no-progress"]) == 0  # fmt: skip


def test_inside_report_shows_the_vlm_analyses(vlm_runs, tmp_path, monkeypatch):
    import nbformat

    monkeypatch.setenv("MPLBACKEND", "Agg")
    root = tmp_path / "vlms"
    for arch in ARCHS:
        shutil.copytree(vlm_runs / arch, root / arch)
    argv = ["inspect", str(root), "--examples", "4", "--no-progress"]
    assert main([*argv, "--analyses", "image_attention,vlm_state_probe,vlm_logit_lens"]) == 0
    # patching (slow on Mamba) on the first example alone, as vlab inspect would write it
    for arch in ARCHS:
        run = open_any_run(root / arch / "stage2")
        vlm, examples = loaded(vlm_runs, arch, 4)
        table = vlm_patching_table(vlm, examples, corruptions=("moved",), max_examples=1)
        table.insert(0, "step", 4)
        csv, marker = inspection.result_paths(run.path, 4, "vlm_patching")
        table.to_csv(csv, index=False)
        marker.write_text(json.dumps({"analysis": "vlm_patching", "examples": 4, "seconds": 1}))
    assert main(["report", str(root), "--template", "inside", "--no-html"]) == 0
    nb = nbformat.read(root / "inside.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    written = {p.stem for p in (root / "figures-inside").glob("*.png")}
    assert {"vlm_logit_lens", "vlm_state_probe", "vlm_patching_moved"} <= written
    assert sum("image/png" in o.get("data", {}) for o in outputs) == len(written)
