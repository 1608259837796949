"""The image probe end to end: it learns, its run directory is the text probe's (so sweeps, the
report's loader and ``vlab inspect`` take it), it resumes exactly, and the query token is the
queried patch's own visual token."""

import json

import numpy as np
import pytest
import torch

from vlab.analysis.inside import figures as inside_figures
from vlab.analysis.inside.inspection import inspect_paths, result_paths
from vlab.analysis.inside.results import load_inside
from vlab.analysis.load import load_sweep
from vlab.cli import main
from vlab.config import from_dict
from vlab.errors import VlabError
from vlab.fileio import read_jsonl
from vlab.probes.config import ProbeRunConfig, resolve
from vlab.probes.image_model import build_image_probe, heldout_embeddings
from vlab.probes.trainer import run_probe
from vlab.rundir import RunDir
from vlab.slurm.spec import expand, load_spec

QUIET = {"progress": False, "log": lambda *_: None}


def cfg(modality="image", **sections) -> ProbeRunConfig:
    base = {
        "task": {"length": 4, "n_heldout": 32, "target_mode": "position", "modality": modality},
        "model": {"arch": "pythia"},
        "train": {"steps": 40, "eval_every": 10, "threads": 1},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return from_dict(ProbeRunConfig, base)


@pytest.mark.parametrize("variant", ["suffix", "prefix"])
def test_tiny_mamba_vlm_learns_to_name_the_patchs_position(tmp_path, variant):
    """Chance is 1/4; 0.9 of 64 held-out examples by luck has probability below 1e-25.
    Measured on the machine that wrote this test (1 thread, a busy 2-core CPU), seeds 0 and 1:
    0.95 at steps 150 (suffix) and 200-250 (prefix), so the 500-step budget has room to spare.
    The marker-free layout: with ``##`` / ``&&`` markers the tiny models learn the same task
    several times slower (``cpu-image-probe`` runs that layout)."""
    c = cfg(
        model={"arch": "mamba"},
        task={"length": 4, "n_heldout": 64, "variant": variant},
        train={"steps": 500, "eval_every": 50, "threads": 1, "lr": 3e-3, "threshold": 0.9},
        image={"layout": "none"},
    )
    result = run_probe(c, tmp_path / "run", **QUIET)
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert metrics[0]["step"] == 0 and metrics[0]["accuracy"] < 0.5
    assert result.threshold_step is not None, [m["accuracy"] for m in metrics]
    assert metrics[-1]["accuracy"] >= 0.9 and metrics[-1]["step"] == result.threshold_step < 500
    assert min(metrics[-1]["per_position"]) > 0.5  # every position, not a few


def test_run_directory_has_the_text_probes_files_and_fields(tmp_path):
    text = run_probe(cfg("tokens"), tmp_path / "text", **QUIET)
    image = run_probe(cfg(), tmp_path / "image", **QUIET)
    assert text.state == image.state == "done"
    t, i = RunDir(tmp_path / "text"), RunDir(tmp_path / "image")
    files = [sorted(p.relative_to(r.path) for p in r.path.rglob("*")) for r in (t, i)]
    assert files[0] == files[1]  # config, metrics, status, checkpoints (last and kept steps)
    assert set(i.read_config()) == set(t.read_config())
    config = i.read_config()
    assert config["task"]["modality"] == "image" and config["image"]["grid"] == 2
    assert t.read_config()["image"] is None
    for a, b in zip(t.read_metrics(), i.read_metrics(), strict=True):
        assert set(a) == set(b) and a["step"] == b["step"]
        assert a["examples_seen"] == b["examples_seen"] == b["step"] * 64
        assert len(b["per_position"]) == 4
        assert abs(sum(b["per_position"]) / 4 - b["accuracy"]) < 1e-9  # balanced held-out
    status = i.read_status()
    assert set(status) == set(t.read_status()) and status["state"] == "done"
    assert status["params"]["vision"] > 0
    assert (
        status["params"]["total"]
        == status["params"]["non_embedding"] + status["params"]["embedding"]
    )
    assert status["state_size"]["tokens"] == 10  # ## c0 c1 && c2 c3 && ## <out> Q
    assert status["state_size"]["kv_cache"] > 0 and status["state_size"]["recurrent_state"] == 0


def test_interrupted_image_run_resumes_to_the_same_metrics(tmp_path):
    c = cfg(model={"arch": "mamba"}, task={"variant": "prefix"}, train={"stop_at_threshold": False})
    run_probe(c, tmp_path / "full", **QUIET)
    calls = {"n": 0}

    def stop_after_15_steps():
        calls["n"] += 1
        return calls["n"] == 15

    first = run_probe(c, tmp_path / "cut", should_stop=stop_after_15_steps, **QUIET)
    assert first.state == "interrupted" and first.step == 15
    assert run_probe(c, tmp_path / "cut", **QUIET).state == "done"
    full, cut = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("full", "cut"))
    assert cut == full
    assert run_probe(c, tmp_path / "cut", **QUIET) is None  # finished: nothing to do


def test_query_token_is_the_visual_token_of_the_queried_cell_and_embeddings_give_the_logits():
    """With the raw-patch encoder every tile of the query image has the patch's own token, so
    the query slot must hold exactly the token of the cell at the target position."""
    probe = build_image_probe(resolve(cfg(task={"length": 5, "n_heldout": 20})))  # 3 x 3, blanks
    model = probe.model.eval()
    held, seq = probe.data.heldout, probe.sequence
    emb = heldout_embeddings(model, probe.data, 20)  # (N, T, D)
    assert emb.shape == (20, len(seq), model.lm.config.hidden_size)
    rows = torch.arange(20)
    targets = torch.as_tensor(seq.context_index)[torch.as_tensor(held.positions)]
    assert torch.allclose(emb[:, seq.query_index], emb[rows, targets], atol=1e-6)
    others = torch.as_tensor(seq.context_index)[(torch.as_tensor(held.positions) + 1) % 5]
    assert not torch.allclose(emb[:, seq.query_index], emb[rows, others])
    with torch.no_grad():
        images, queries = (torch.from_numpy(a) for a in probe.data.pixels(held))
        direct = model(images, queries)
        via = model.lm(inputs_embeds=emb).logits[:, -1].float()
    assert torch.allclose(direct, via, atol=1e-5)


def test_sweep_of_image_runs_runs_with_the_debug_executor_and_reports(tmp_path, capsys):
    spec = {
        "name": "img",
        "base": {
            "task": {"length": 4, "n_heldout": 16, "modality": "image", "target_mode": "position"},
            "model": {"preset": "tiny"},
            "train": {"steps": 20, "eval_every": 10, "threads": 1},
        },
        "axes": {"task.variant": ["suffix", "prefix"], "model.arch": ["pythia", "mamba"]},
    }
    path = tmp_path / "img.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "sweep"
    assert main(["sweep", "submit", str(path), "--executor", "debug", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["sweep", "status", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["state"] for r in rows) == ["done"] * 4
    sweep = load_sweep(out)  # what `vlab report` reads
    assert sweep.warnings == []
    assert sorted(sweep.runs["state"]) == ["done"] * 4
    assert set(sweep.runs["length"]) == {4} and set(sweep.runs["n_evals"]) == {3}
    assert len(sweep.per_position) == 4 * 3 * 4  # runs x evaluations x positions
    assert sweep.per_position["position"].max() == 3
    assert main(["report", str(out), "--no-html"]) == 0  # curves and heatmaps, as for text runs
    assert (out / "report.ipynb").is_file() and list((out / "figures").glob("*.png"))


def test_inspect_takes_an_image_run_through_its_lm(tmp_path):
    run = tmp_path / "run"
    run_probe(cfg(model={"arch": "mamba"}, train={"steps": 20}), run, **QUIET)
    done, skipped, _ = inspect_paths([run], examples=16, progress=False)
    assert (done, skipped) == (4, 0)  # logit_lens, attention, state_probe, patching
    step = RunDir(run).read_metrics()[-1]["step"]
    tables = {}
    for analysis in ("logit_lens", "attention", "state_probe", "patching"):
        table, meta = result_paths(run, step, analysis)
        assert table.is_file() and meta.is_file()
        tables[analysis] = table.read_text().splitlines()
    header = tables["attention"][0].split(",")
    sources = {
        int(line.split(",")[header.index("source_position")]) for line in tables["attention"][1:]
    }
    assert sources == {0, 1, 2, 3}  # the four context cells, wherever the markers put them
    # patching: every index of ## c0 c1 && c2 c3 && ## <out> Q, named, for both corruptions
    # and both sites of the two Mamba blocks; the report draws it as a text run's
    inside = load_inside(run)
    patching = inside.patching
    assert inspect_paths([run], examples=16, progress=False)[:2] == (0, 4)
    assert set(patching["corruption"]) == {"moved", "other_query"}
    assert set(patching["site"]) == {"resid_pre", "ssm_state", "conv_window", "state_and_window"}
    assert len(patching) == 2 * (3 + 3 * 2) * 10
    tokens = patching.drop_duplicates("position").sort_values("position")["token"]
    labels = ["##", "ctx0", "ctx1", "&&", "ctx2", "ctx3", "&&", "##", "out", "query"]
    assert list(tokens) == labels
    assert set(patching["length"]) == {4} and set(patching["arch"]) == {"mamba"}
    # the stream leaving the last block restores the answer at T - 1 (recovery 1) and
    # nowhere else; at the start marker, where clean and corrupted agree, nothing (0)
    assert (patching["ld_clean"] - patching["ld_corrupted"]).abs().min() > 1e-4
    out = patching[(patching["site"] == "resid_pre") & (patching["layer"] == 2)]
    last = out["position"] == 9
    like = np.where(last, out["ld_clean"], out["ld_corrupted"])
    np.testing.assert_allclose(out["ld_patched"], like, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["recovery"], last.astype(float), atol=1e-2)
    start = patching[patching["position"] == 0]
    np.testing.assert_allclose(start["ld_patched"], start["ld_corrupted"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(start["recovery"], 0, atol=1e-2)
    figure = inside_figures.patching_heatmaps(patching, 4, "moved")
    drawn = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert drawn == labels
    with pytest.raises(VlabError, match="image_attention is not for a image-probe run"):
        inspect_paths([run], ["image_attention"], examples=16, progress=False)


def test_builtin_image_spec_expands_to_pythia_and_mamba_on_image_contexts():
    runs = expand(load_spec("cpu-image-probe"))
    assert len(runs) == 8
    assert {r.config["task"]["modality"] for r in runs} == {"image"}
    assert {(r.config["model"]["arch"], r.config["task"]["variant"]) for r in runs} == {
        (a, v) for a in ("pythia", "mamba") for v in ("suffix", "prefix")
    }
    assert {r.config["image"]["grid"] for r in runs} == {2, 3}  # L = 4 and 9: full grids
    assert np.all([r.config["image"]["layout"] == "paper" for r in runs])
