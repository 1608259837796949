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
    grounding_examples,
    image_attention_table,
    load_vlm,
    on_target_share,
    run_examples,
)
from vlab.cli import main
from vlab.config import from_dict
from vlab.models.vlm.batch import pixel_values
from vlab.models.vlm.config import config_from
from vlab.models.vlm.data.instructions import instruction_for
from vlab.models.vlm.sequence import IGNORE
from vlab.models.vlm.train import train_vlm
from vlab.probes.config import ProbeRunConfig
from vlab.probes.trainer import run_probe

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
    for arch in ("pythia", "mamba"):
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


@pytest.fixture
def fresh(vlm_runs, tmp_path):
    shutil.copytree(vlm_runs / "pythia", tmp_path / "pythia")
    return tmp_path / "pythia"


def test_inspect_writes_image_attention_into_a_vlm_run_and_a_rerun_skips(fresh, capsys):
    assert main(["inspect", str(fresh), "--examples", "3", "--no-progress"]) == 0
    stage = fresh / "stage2"
    table_path, meta_path = inspection.result_paths(stage, 4, "image_attention")
    assert inside_files(fresh) == [
        p.relative_to(fresh).as_posix() for p in sorted([table_path, meta_path])
    ]
    got = pd.read_csv(table_path)
    run = open_any_run(stage)
    vlm, tok = load_vlm(run, 4)
    want = image_attention_table(vlm, run_examples(run, vlm, tok, 3))
    pd.testing.assert_frame_equal(got.drop(columns="step"), want, check_dtype=False, atol=1e-6)
    assert json.loads(meta_path.read_text())["examples"] == 3
    before = table_path.stat().st_mtime_ns
    assert inspection.inspect_paths([fresh], None, examples=3, progress=False)[:2] == (0, 1)
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
