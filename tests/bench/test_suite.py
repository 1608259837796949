"""``vlab bench``'s JSON at another size than the tiny presets: each arm's source and the model
actually timed are recorded, the existing keys are all there, and the probe protocol stays on
its own tiny preset and batch. Known answers only: speed is never asserted."""

import json

import torch

from tests.models.test_bench import save_checkpoint
from vlab.bench.suite import run_bench
from vlab.models.backbones import PRESETS
from vlab.models.bench import ARCHS, BASELINE, BenchPlan

# the smallest plan that runs every measurement once
MICRO = dict(
    train_lengths=(4,),
    batch=2,
    repeats=1,
    reference_length=4,
    forward_tokens=(8, 16),
    decode_visual_tokens=(2,),
    decode_new_tokens=2,
    decode_text_tokens=1,
    protocol_lengths=(4,),
    protocol_budget=100,
    protocol_batch=3,
)


def test_the_json_records_each_arms_source_and_the_model_timed(tmp_path):
    directory = save_checkpoint(tmp_path / "ckpt", BASELINE, hidden_size=40)
    plan = BenchPlan(preset="small", pretrained={BASELINE: directory}, **MICRO)
    result = json.loads(json.dumps(run_bench(plan, torch.device("cpu"), log=lambda *_: None)))
    assert result["plan"]["preset"] == "small"
    assert result["plan"]["pretrained"] == {BASELINE: directory}
    assert result["arms"][BASELINE] | {"params": 0, "params_total": 0} == {
        "preset": None,
        "pretrained": directory,
        "hidden_size": 40,
        "layers": 2,
        "params": 0,
        "params_total": 0,
    }
    small = {arch: PRESETS[arch]["small"]["hidden_size"] for arch in ARCHS[1:]}
    assert {a: result["arms"][a]["preset"] for a in small} == dict.fromkeys(small, "small")
    assert {a: result["arms"][a]["hidden_size"] for a in small} == small
    decoded = {r["arch"]: r["hidden_size"] for r in result["decode"]}
    assert decoded == {BASELINE: 40, **small}  # decoding timed the same models
    # the keys older readers know are all there
    for key in (
        "train",
        "vs_pythia_train",
        "mamba_vs_pythia_train",
        "mamba_reference_train",
        "scan",
        "forward",
        "forward_exponent",
        "decode",
        "vs_pythia_decode",
        "vs_pythia_generate",
        "protocol",
        "protocol_speedup",
    ):
        assert key in result
    assert {r["batch"] for r in result["train"]} == {2}
    # the probe protocol times the probes' tiny preset at its own batch, whatever the arms are
    assert {(r["preset"], r["batch"]) for r in result["protocol"]} == {("tiny", 3)}
