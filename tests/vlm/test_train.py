"""Tiny VLMs on each LM arm train end to end on the built-in dataset; resume is exact."""

import json

import pytest

from vlab.cli import main
from vlab.fileio import read_jsonl
from vlab.vlm.config import config_from
from vlab.vlm.train import train_vlm

FAST = {
    "stage1": {"steps": 10, "eval_every": 10, "threads": 2},
    "stage2": {"steps": 60, "eval_every": 30, "threads": 2, "stop_at_threshold": False},
    "data": {"n_heldout": 12},
    "max_new_tokens": 12,
}


@pytest.mark.parametrize("arch", ["pythia", "mamba", "mamba2", "hybrid"])
def test_tiny_vlm_trains_both_stages_and_held_out_loss_falls(tmp_path, arch):
    cfg = config_from("tiny-shapes", arch, FAST)
    results = train_vlm(cfg, tmp_path / "vlm", progress=False, log=lambda *_: None)
    assert results[1].state == results[2].state == "done"
    s1 = read_jsonl(tmp_path / "vlm" / "stage1" / "metrics.jsonl")
    s2 = read_jsonl(tmp_path / "vlm" / "stage2" / "metrics.jsonl")
    # stage 2 starts from stage 1's weights: its first evaluation equals stage 1's last
    assert s2[0]["eval_loss"] == pytest.approx(s1[-1]["eval_loss"], rel=1e-5)
    assert s2[-1]["eval_loss"] < 0.8 * s1[0]["eval_loss"]
    assert set(s2[-1]["tasks"]) == {"caption", "vqa", "grounding", "dense_caption", "itm", "pope"}
    status = json.loads((tmp_path / "vlm" / "stage2" / "status.json").read_text())
    assert status["stage"] == 2 and status["params"]["trainable"] > 0
    memory = status["state_size"]  # the LM's decoding state after the image's tokens
    assert memory["tokens"] > 0 and memory["total"] > 0
    assert (memory["kv_cache"] > 0) == (arch in ("pythia", "hybrid"))


def test_stage1_trains_only_the_projector(tmp_path):
    from vlab.models.vlm.model import build_vlm

    cfg = config_from("tiny-shapes", "pythia", {})
    model = build_vlm(cfg.model, vocab_size=300)
    model.set_stage(1)
    assert not any(p.requires_grad for p in model.lm.parameters())
    assert all(p.requires_grad for p in model.projector.parameters())
    model.set_stage(2)
    assert all(p.requires_grad for p in model.lm.parameters())


def test_interrupted_vlm_stage_resumes_to_the_same_metrics(tmp_path):
    cfg = config_from("tiny-shapes", "pythia", FAST)
    train_vlm(cfg, tmp_path / "full", stages=(2,), progress=False, log=lambda *_: None)

    calls = {"n": 0}

    def stop_at_40():
        calls["n"] += 1
        return calls["n"] == 40

    first = train_vlm(
        cfg,
        tmp_path / "cut",
        stages=(2,),
        progress=False,
        log=lambda *_: None,
        should_stop=stop_at_40,
    )
    assert first[2].state == "interrupted"
    train_vlm(cfg, tmp_path / "cut", stages=(2,), progress=False, log=lambda *_: None)
    assert read_jsonl(tmp_path / "cut" / "stage2" / "metrics.jsonl") == read_jsonl(
        tmp_path / "full" / "stage2" / "metrics.jsonl"
    )


def test_vlm_cli_rejects_bad_values_naming_the_field(capsys, tmp_path):
    code = main(
        ["vlm", "train", "--set", "model.sequence.ordering=sideways", "--out", str(tmp_path / "v")]
    )
    assert code == 2 and "model.sequence.ordering" in capsys.readouterr().err
    code = main(["vlm", "train", "--preset", "huge", "--out", str(tmp_path / "v")])
    assert code == 2 and "preset" in capsys.readouterr().err


def test_tokenizer_comes_from_the_pretrained_lm_directory(tmp_path):
    from vlab.errors import ConfigError
    from vlab.models.backbones import BackboneConfig, build_backbone
    from vlab.models.vlm.tokenizer import train_bpe_tokenizer
    from vlab.vlm.tokenizer import run_tokenizer

    lm = build_backbone(BackboneConfig(arch="pythia", preset="tiny"))
    lm_dir, empty = tmp_path / "lm", tmp_path / "no-tokenizer"
    lm.save_pretrained(str(lm_dir))
    lm.save_pretrained(str(empty))
    train_bpe_tokenizer(["a red circle", "two blue squares"], vocab_size=300).save_pretrained(
        str(lm_dir)
    )
    cfg = config_from("tiny-shapes", "pythia", {"model": {"lm": {"pretrained": str(lm_dir)}}})
    tok = run_tokenizer(cfg, tmp_path / "out")
    assert tok.decode(tok.encode("a red circle")) == "a red circle"
    assert not (tmp_path / "out" / "tokenizer").exists()  # nothing trained
    cfg = config_from("tiny-shapes", "pythia", {"model": {"lm": {"pretrained": str(empty)}}})
    with pytest.raises(ConfigError, match="model.lm.pretrained"):
        run_tokenizer(cfg, tmp_path / "out")


def test_a_vlab_vlm_train_run_is_done_with_its_held_out_scores_as_a_sweep_run_is(tmp_path, capsys):
    """`vlab vlm train` trains and evaluates as a sweep's worker does, so the same run is done,
    with its held-out scores, in the sweep-status listing and in the VLM report."""
    from vlab.analysis.vlm import load_vlm_sweep
    from vlab.experiment import experiment, read_kind
    from vlab.slurm.status import format_table

    out = tmp_path / "runs" / "cli"
    config = tmp_path / "fast.json"
    config.write_text(
        json.dumps({**FAST, "stage2": {**FAST["stage2"], "steps": 20, "eval_every": 20}})
    )
    argv = ["vlm", "train", "--preset", "tiny-shapes", "--arch", "mamba", "--config", str(config)]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "results: " in said and "eval/heldout/results.json" in said
    assert read_kind(out) == "vlm"
    status = experiment("vlm").status(out)
    assert status["state"] == "done" and status["stage"] == "eval"
    assert status["benchmarks"] and status["step"] == 20
    row = {"name": "cli", "job_id": None, "scheduler": None, "log": None, **status}
    row.update(threshold_step=None, reason=None)
    assert "done" in format_table([row]).splitlines()[1]
    sweep = load_vlm_sweep(tmp_path / "runs", locations=False)
    (run,) = sweep.runs.to_dict("records")
    assert run["state"] == "done"
    assert set(sweep.scores["run"]) == {"cli"} and len(sweep.scores) >= 1
    # a second call finds everything done and evaluates nothing again
    before = (out / "eval" / "heldout" / "results.json").stat().st_mtime_ns
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    assert (out / "eval" / "heldout" / "results.json").stat().st_mtime_ns == before
