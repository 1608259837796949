"""Looking inside a VLM: the weight from the answer of grounding examples to the image
patches equals what the LM's own attention (or Mamba's hidden attention) says, the image is
found in both orderings, and ``vlab inspect`` writes it into VLM runs."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from vlab.analysis.inside import inspection
from vlab.analysis.inside.activations import trace
from vlab.analysis.inside.runs import open_any_run
from vlab.analysis.inside.vlm import (
    COLUMNS,
    grounding_examples,
    image_attention_table,
    load_vlm,
    on_target_share,
    run_examples,
)
from vlab.cli import main
from vlab.config import from_dict
from vlab.models.vlm.batch import pixel_values
from vlab.models.vlm.data.instructions import instruction_for
from vlab.models.vlm.sequence import IGNORE
from vlab.probes.config import ProbeRunConfig
from vlab.probes.trainer import run_probe
from vlab.vlm.config import config_from
from vlab.vlm.train import train_vlm

TINY = {
    "stage2": {"steps": 4, "eval_every": 2, "batch_size": 4, "threads": 2, "keep_checkpoints": 2},
    "data": {"n_heldout": 2},
    "max_new_tokens": 2,
}


@pytest.fixture(scope="module")
def vlm_runs(tmp_path_factory):
    """OUT directories of tiny stage-2-only VLM runs (4 steps: the analysis needs weights
    and a run directory, not a good model)."""
    root = tmp_path_factory.mktemp("vlm")
    for arch in ("pythia", "mamba", "hybrid"):
        cfg = config_from("tiny-shapes", arch, TINY)
        train_vlm(cfg, root / arch, stages=(2,), progress=False, log=lambda *_: None)
    return root


def loaded(vlm_runs, arch):
    run = open_any_run(vlm_runs / arch / "stage2")
    vlm, tok = load_vlm(run, 4)
    return run, vlm, tok


def single(examples, vlm, tok, b):
    """Example b alone, unpadded: (1, T_b, H) merged embeddings, its answer positions and
    image positions in patch order, found directly from its labels and patch slots."""
    batch = examples.batch
    length = int(batch["attention_mask"][b].sum())
    ids, patch = batch["input_ids"][b : b + 1, :length], batch["patch_index"][b : b + 1, :length]
    pixels = [p[b : b + 1] for p in pixel_values(batch)]
    with torch.no_grad():
        embeds = vlm.embed(ids, patch, pixels)
    labels = batch["labels"][b, :length]
    answer = [j - 1 for j in range(length) if labels[j] not in (IGNORE, tok.eos_token_id)]
    slots = [j for j in range(length) if patch[0, j] >= 0]
    image = sorted(slots, key=lambda j: int(patch[0, j]))
    return embeds, answer, image


def weights_of(table, example, layer, grid):
    part = table[(table["example"] == example) & (table["layer"] == layer)]
    out = np.full(grid, np.nan)
    out[part["row"].to_numpy(), part["col"].to_numpy()] = part["weight"].to_numpy()
    return out


def test_pythia_weights_are_the_lm_attention_from_answer_to_patches(vlm_runs):
    run, vlm, tok = loaded(vlm_runs, "pythia")
    examples = run_examples(run, vlm, tok, 5)
    table = image_attention_table(vlm, examples, batch_size=2)  # padded batches
    assert set(table["kind"]) == {"attention"}
    assert len(table) == 5 * 2 * vlm.num_visual_tokens
    vlm.lm.set_attn_implementation("eager")
    try:
        for b in range(5):
            embeds, answer, image = single(examples, vlm, tok, b)
            # the answer positions predict exactly the box text
            sample = examples.samples[b]
            ids = examples.batch["input_ids"][b]
            assert tok.decode(ids[[t + 1 for t in answer]]) == sample.turns[0].response
            with torch.no_grad():
                attentions = vlm.lm(inputs_embeds=embeds, output_attentions=True).attentions
            for layer, pattern in enumerate(attentions):
                want = pattern[0].mean(0)[answer][:, image].mean(0).reshape(vlm.grid)
                got = weights_of(table, b, layer, vlm.grid)
                np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-6)
    finally:
        vlm.lm.set_attn_implementation("sdpa")


def test_mamba_weights_are_the_share_of_hidden_attention(vlm_runs):
    run, vlm, tok = loaded(vlm_runs, "mamba")
    examples = run_examples(run, vlm, tok, 4)
    table = image_attention_table(vlm, examples, batch_size=3)
    assert set(table["kind"]) == {"hidden_attention"}
    for b in range(4):
        embeds, answer, image = single(examples, vlm, tok, b)
        names = [f"blocks.{i}.ssm.hidden_attention" for i in range(2)]
        acts = trace(vlm.lm, embeds, names)
        for layer, name in enumerate(names):
            alpha = acts[name][0].abs().mean(0)  # (T, T), zero above the diagonal
            share = alpha / alpha.sum(-1, keepdim=True)
            want = share[answer][:, image].mean(0).reshape(vlm.grid)
            got = weights_of(table, b, layer, vlm.grid)
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-7)
    # the target columns say where the target is: its centre cell overlaps its box
    centre = table[(table["row"] == table["target_row"]) & (table["col"] == table["target_col"])]
    assert centre["on_target"].all() and len(centre) == 4 * 2
    shares = on_target_share(table)
    assert list(shares["layer"]) == [0, 1] and shares["share"].between(0, 1).all()


def test_a_hybrid_lm_gets_each_layers_own_kind_of_weights(vlm_runs):
    """The tiny hybrid: layer 0 Mamba (hidden-attention share), layer 1 attention."""
    run, vlm, tok = loaded(vlm_runs, "hybrid")
    examples = run_examples(run, vlm, tok, 3)
    table = image_attention_table(vlm, examples, batch_size=2)
    kinds = table.groupby("layer")["kind"].unique()
    assert [list(k) for k in kinds] == [["hidden_attention"], ["attention"]]
    for b in range(3):
        embeds, answer, image = single(examples, vlm, tok, b)
        acts = trace(vlm.lm, embeds, ["blocks.0.ssm.hidden_attention", "blocks.1.attn.pattern"])
        alpha = acts["blocks.0.ssm.hidden_attention"][0].abs().mean(0)
        wants = [alpha / alpha.sum(-1, keepdim=True), acts["blocks.1.attn.pattern"][0].mean(0)]
        for layer, weights in enumerate(wants):
            want = weights[answer][:, image].mean(0).reshape(vlm.grid)
            got = weights_of(table, b, layer, vlm.grid)
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ordering", ["task_agnostic", "task_aware"])
def test_image_positions_come_from_the_assembly_in_both_orderings(vlm_runs, ordering):
    run, vlm, tok = loaded(vlm_runs, "mamba")
    sequence = dataclasses.replace(run.config.model.sequence, ordering=ordering)
    examples = grounding_examples(vlm, tok, run.config.data.shapes, sequence, 3)
    positions = examples.image_positions
    assert positions.shape == (3, vlm.num_visual_tokens * 1)  # one image per example
    for b, sample in enumerate(examples.samples):
        ids = examples.batch["input_ids"][b]
        first = int(positions[b, 0])
        before = tok.decode(ids[:first])
        head = f"{instruction_for('grounding')} {sample.turns[0].prompt}\n"
        assert before == ("##" if ordering == "task_agnostic" else head + "##")
        # row-major: a row's patches are adjacent, a row break between rows
        rows, cols = vlm.grid
        grid = positions[b].reshape(rows, cols)
        assert (grid[:, 1:] - grid[:, :-1] == 1).all()
        assert tok.decode(ids[int(grid[0, -1]) + 1 : int(grid[1, 0])]) == "&&"
        assert examples.answer_positions[b].min() > positions[b].max()
    table = image_attention_table(vlm, examples)
    sums = table.groupby(["example", "layer"])["weight"].sum()
    assert ((sums > 0) & (sums <= 1 + 1e-6)).all()


def inside_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("inside/**/*") if p.is_file())


ONLY = ["image_attention"]  # the other VLM analyses: test_vlm_analyses.py


@pytest.fixture
def fresh(vlm_runs, tmp_path):
    shutil.copytree(vlm_runs / "pythia", tmp_path / "pythia")
    return tmp_path / "pythia"


def test_inspect_writes_image_attention_into_a_vlm_run_and_a_rerun_skips(fresh, capsys):
    argv = ["inspect", str(fresh), "--examples", "3", "--no-progress"]
    assert main([*argv, "--analyses", "image_attention"]) == 0
    stage = fresh / "stage2"
    table_path, meta_path = inspection.result_paths(stage, 4, "image_attention")
    images = inspection.extras_dir(stage, 4, "image_attention")
    written = [table_path, meta_path, images / "examples.json"]
    written += [images / f"example-{k}.png" for k in range(3)]
    assert inside_files(fresh) == sorted(p.relative_to(fresh).as_posix() for p in written)
    got = pd.read_csv(table_path)
    run = open_any_run(stage)
    vlm, tok = load_vlm(run, 4)
    want = image_attention_table(vlm, run_examples(run, vlm, tok, 3))
    pd.testing.assert_frame_equal(got.drop(columns="step"), want, check_dtype=False, atol=1e-6)
    assert json.loads(meta_path.read_text())["examples"] == 3
    before = table_path.stat().st_mtime_ns
    assert inspection.inspect_paths([fresh], ONLY, examples=3, progress=False)[:2] == (0, 1)
    assert main(["inspect", str(stage), "--analyses", "image_attention", "--examples", "3",
                 "--no-progress"]) == 0  # fmt: skip
    assert "1 already done" in capsys.readouterr().out
    assert table_path.stat().st_mtime_ns == before


def _edit_config(out, **stage2):
    path = out / "stage2" / "config.json"
    config = json.loads(path.read_text())
    config["stage2"].update(stage2)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    "args,damage,message",
    [
        (["--analyses", "logit_lens"], None, "logit_lens is not for a vlm run"),
        ([], lambda out: _edit_config(out, lr=0.5), "differs from the config its checkpoint"),
        ([], lambda out: shutil.rmtree(out / "tokenizer"), "no tokenizer at"),
    ],
    ids=["probe-analysis", "config-mismatch", "no-tokenizer"],
)
def test_bad_input_on_a_vlm_run_is_one_line_and_nothing_is_written(
    fresh, capsys, args, damage, message
):
    if damage is not None:
        damage(fresh)
    code = main(["inspect", str(fresh), "--examples", "3", "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert inside_files(fresh) == []


def test_a_vlm_analysis_on_a_probe_run_is_one_line(tmp_path, capsys):
    cfg = from_dict(
        ProbeRunConfig,
        {
            "task": {"length": 4, "n_heldout": 8},
            "model": {"arch": "pythia"},
            "train": {"steps": 2, "eval_every": 2, "threads": 1},
        },
    )
    run_probe(cfg, tmp_path / "probe", progress=False, log=lambda *_: None)
    code = main(["inspect", str(tmp_path / "probe"), "--analyses", "image_attention",
                 "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "image_attention is not for a probe run" in err
    assert len(err.splitlines()) == 1 and inside_files(tmp_path) == []


def test_draw_over_image_lays_the_grid_over_the_whole_image():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from vlab.analysis.inside.image_figures import draw_over_image

    grid = np.arange(6, dtype=float).reshape(2, 3)
    fig, ax = plt.subplots()
    overlay = draw_over_image(Image.new("RGB", (60, 40)), grid, ax, box=(0.5, 0.0, 1.0, 0.5))
    np.testing.assert_array_equal(overlay.get_array(), grid)
    assert overlay.get_extent() == [0, 60, 40, 0]
    (rect,) = ax.patches
    assert (rect.get_x(), rect.get_y(), rect.get_width(), rect.get_height()) == (30, 0, 30, 20)
    plt.close(fig)


# example images and the report -----------------------------------------------------------------


def test_inspect_writes_the_example_images_with_their_boxes_before_the_marker(fresh, monkeypatch):
    from PIL import Image

    from vlab.analysis.inside import vlm as vlm_module

    stage = fresh / "stage2"
    table_path, meta_path = inspection.result_paths(stage, 4, "image_attention")
    images = inspection.extras_dir(stage, 4, "image_attention")
    write = vlm_module.write_example_images

    def killed(*args, **kwargs):
        write(*args, **kwargs)
        raise KeyboardInterrupt  # the unit is killed after its images, before its table

    monkeypatch.setattr(vlm_module, "write_example_images", killed)
    with pytest.raises(KeyboardInterrupt):
        inspection.inspect_paths([fresh], ONLY, examples=10, progress=False)
    assert (images / "examples.json").is_file() and not meta_path.exists()
    monkeypatch.undo()
    assert inspection.inspect_paths([fresh], ONLY, examples=10, progress=False)[:2] == (1, 0)
    assert sorted(p.name for p in images.glob("*.png")) == [f"example-{k}.png" for k in range(8)]

    listing = json.loads((images / "examples.json").read_text())
    run = open_any_run(stage)
    vlm, tok = load_vlm(run, 4)
    assert listing["grid"] == list(vlm.grid) == listing["image_grid"]
    samples = run_examples(run, vlm, tok, 8).samples
    table = pd.read_csv(table_path)
    for k, (entry, sample) in enumerate(zip(listing["examples"], samples, strict=True)):
        obj = sample.meta["objects"][sample.meta["target"]]
        side = sample.meta["width"]
        assert entry["index"] == k and entry["file"] == f"example-{k}.png"
        assert entry["box"] == [v / side for v in obj["box_px"]]
        assert entry["target"] == f"{obj['color']} {obj['shape']}"
        assert entry["prompt"] == sample.turns[0].prompt == f"the {entry['target']}"
        assert entry["response"] == sample.turns[0].response
        assert set(table[table["example"] == k]["target"]) == {entry["target"]}
        png = np.asarray(Image.open(images / entry["file"]).convert("RGB"))
        np.testing.assert_array_equal(png, np.asarray(sample.image.convert("RGB")))
    # fewer examples: the images of the larger inspection go
    assert inspection.inspect_paths([fresh], ONLY, examples=2, progress=False)[:2] == (1, 0)
    assert sorted(p.name for p in images.glob("*.png")) == ["example-0.png", "example-1.png"]
    assert [e["index"] for e in json.loads((images / "examples.json").read_text())["examples"]] == [
        0,
        1,
    ]


def test_inside_report_draws_the_vlm_runs_beside_a_probe_run(vlm_runs, tmp_path, monkeypatch):
    import nbformat

    monkeypatch.setenv("MPLBACKEND", "Agg")
    root = tmp_path / "mixed"
    for arch in ("pythia", "mamba"):
        shutil.copytree(vlm_runs / arch, root / "vlm" / arch)
    cfg = from_dict(
        ProbeRunConfig,
        {
            "task": {"length": 4, "n_heldout": 8},
            "model": {"arch": "pythia"},
            "train": {"steps": 2, "eval_every": 2, "threads": 1},
        },
    )
    run_probe(cfg, root / "probe", progress=False, log=lambda *_: None)
    # the VLM runs as an older vlab inspected them: image_attention alone (the report shows
    # the other VLM analyses when they are there: test_vlm_analyses.py)
    argv = ["--examples", "4", "--no-progress"]
    assert main(["inspect", str(root / "probe"), *argv]) == 0
    assert main(["inspect", str(root / "vlm"), "--analyses", "image_attention", *argv]) == 0
    assert main(["report", str(root), "--template", "inside", "--no-html"]) == 0

    nb = nbformat.read(root / "inside.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    written = {p.stem for p in (root / "figures-inside").glob("*.png")}
    assert {"image_attention_task_agnostic_stage2", "image_target_share", "logit_lens"} <= written
    assert sum("image/png" in o.get("data", {}) for o in outputs) == len(written)
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "<td>vlm/mamba/stage2</td>" in html and "<td>vlm/pythia/stage2</td>" in html
    assert "No VLM runs" not in html


# results.py on a hand-made VLM run ------------------------------------------------------------


def _vlm_run_dir(root, name, arch, ordering, stage=2):
    path = root / name
    path.mkdir(parents=True)
    config = {
        "model": {"lm": {"arch": arch}, "sequence": {"ordering": ordering}},
        "stage1": {},
        "stage2": {},
        "stage": stage,
    }
    (path / "config.json").write_text(json.dumps(config))
    (path / "status.json").write_text(json.dumps({"state": "done", "arch": arch}))
    return path


def _vlm_table(step, weights, on_target):
    """One example on a 2 x 2 grid, two layers: ``weights[layer]`` (4,) row-major."""
    rows = []
    for layer, w in enumerate(weights):
        for cell in range(4):
            rows.append(
                [step, 0, layer, "attention", cell // 2, cell % 2, w[cell], "red circle", 0, 0,
                 on_target[cell]]
            )  # fmt: skip
    return pd.DataFrame(rows, columns=["step", *COLUMNS])


def _vlm_result(run, step, table, examples=True, png=True):
    from PIL import Image

    folder = run / "inside" / f"step-{step:09d}"
    (folder / "image_attention").mkdir(parents=True)
    table.to_csv(folder / "image_attention.csv", index=False)
    if examples:
        listing = {
            "grid": [2, 2],
            "image_grid": [2, 2],
            "examples": [
                {"index": 0, "file": "example-0.png", "box": [0.0, 0.0, 0.5, 0.5],
                 "target": "red circle", "prompt": "the red circle", "response": "[0.00, ...]"}
            ],
        }  # fmt: skip
        (folder / "image_attention" / "examples.json").write_text(json.dumps(listing))
        if png:
            Image.new("RGB", (8, 8)).save(folder / "image_attention" / "example-0.png")
    (folder / "image_attention.json").write_text(json.dumps({"examples": 1, "seconds": 0.1}))


def test_load_inside_reads_vlm_runs_and_their_example_images(tmp_path):
    from vlab.analysis.inside.image_figures import image_grid
    from vlab.analysis.inside.results import (
        EXAMPLE_COLUMNS,
        VLM_COLUMNS,
        VLM_KEYS,
        load_inside,
        target_share,
    )

    on = [True, False, False, False]  # the target covers cell (0, 0) of four
    a = _vlm_run_dir(tmp_path, "a/stage2", "mamba", "task_aware")
    _vlm_result(a, 2, _vlm_table(2, [[0.1, 0.1, 0.1, 0.1], [0.2, 0.1, 0.05, 0.05]], on))
    _vlm_result(a, 4, _vlm_table(4, [[0.3, 0.1, 0.0, 0.0], [0.6, 0.0, 0.0, 0.2]], on))
    b = _vlm_run_dir(tmp_path, "b/stage1", "pythia", "task_agnostic", stage=1)
    _vlm_result(b, 3, _vlm_table(3, [[0.1] * 4, [0.1] * 4], on), examples=False)
    c = _vlm_run_dir(tmp_path, "c/stage2", "pythia", "task_agnostic")
    _vlm_result(c, 5, _vlm_table(5, [[0.1] * 4, [0.1] * 4], on), png=False)
    results = load_inside(tmp_path)

    table = results.image_attention
    assert VLM_COLUMNS["image_attention"] == COLUMNS  # the report reads what inspect writes
    assert list(table.columns) == [*VLM_KEYS, "step", *COLUMNS]
    keys = table[VLM_KEYS].drop_duplicates().values.tolist()
    assert keys == [
        ["a/stage2", "mamba", "task_aware", 2],
        ["b/stage1", "pythia", "task_agnostic", 1],
        ["c/stage2", "pythia", "task_agnostic", 2],
    ]
    assert results.runs.empty and all(results.tables[x].empty for x in ("logit_lens", "patching"))
    vlm_runs = results.vlm_runs.set_index("run")
    assert vlm_runs["inspected_steps"].to_dict() == {"a/stage2": 2, "b/stage1": 1, "c/stage2": 1}
    assert vlm_runs["example_images"].to_dict() == {"a/stage2": 2, "b/stage1": 0, "c/stage2": 0}
    assert set(results.units["analysis"]) == {"image_attention"} and len(results.units) == 4

    examples = results.image_examples
    assert list(examples.columns) == EXAMPLE_COLUMNS
    assert examples[["run", "step"]].values.tolist() == [["a/stage2", 2], ["a/stage2", 4]]
    first = examples.iloc[0]
    assert [first[k] for k in ("x1", "y1", "x2", "y2")] == [0.0, 0.0, 0.5, 0.5]
    assert first["file"] == str(a / "inside/step-000000002/image_attention/example-0.png")
    text = "\n".join(results.warnings)
    assert "b/stage1: inside/step-000000003/image_attention/examples.json is missing" in text
    assert "c/stage2: inside/step-000000005/image_attention: example-0.png listed" in text
    assert len(results.warnings) == 2

    shown = results.at_step("last")
    assert shown.image_attention.groupby("run")["step"].max().to_dict() == {
        "a/stage2": 4,
        "b/stage1": 3,
        "c/stage2": 5,
    }
    assert shown.image_examples[["run", "step"]].values.tolist() == [["a/stage2", 4]]
    assert results.at_step(2).image_examples["step"].tolist() == [2]

    # share on target: (0.3 / 0.4, 0.6 / 0.8) at step 4; one cell of four is the target's
    share = target_share(shown.image_attention[shown.image_attention["run"] == "a/stage2"],
                         ["layer"])  # fmt: skip
    np.testing.assert_allclose(share["share"], [0.75, 0.75])
    np.testing.assert_allclose(share["image_weight"], [0.4, 0.8])
    np.testing.assert_allclose(share["target_cells"], [0.25, 0.25])
    # the grid as drawn: mean over the layers asked for, two stacked maps summed
    one = shown.image_attention[shown.image_attention["run"] == "a/stage2"]
    np.testing.assert_allclose(image_grid(one, [0, 1], (2, 2), (2, 2)), [[0.45, 0.05], [0, 0.1]])
    np.testing.assert_allclose(image_grid(one, [1], (2, 2), (1, 2)), [[0.6, 0.2]])
