"""``train.steps = 0``: a zero-shot run. The starting model (a local ``--pretrained``
checkpoint) is evaluated once and kept at step 0, so reports and ``vlab inspect`` open it like
a trained run, as a baseline beside trained ones."""

import json

import pandas as pd
import pytest
import torch

from vlab.analysis.inside import inspection
from vlab.cli import main
from vlab.models.backbones import BackboneConfig, build_backbone


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrained") / "pythia"
    build_backbone(BackboneConfig(arch="pythia"), seed=3).save_pretrained(path)
    return path


def run(out, base, *extra):
    return main(
        ["probe", "run", "--pretrained", str(base), "--length", "4", "--threads", "1",
         "--set", "task.n_heldout=32", "--no-progress", "--out", str(out), *extra]
    )  # fmt: skip


def test_a_zero_shot_run_evaluates_and_keeps_the_pretrained_model_once(tmp_path, base):
    out = tmp_path / "zero"
    assert run(out, base, "--steps", "0") == 0
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == 0
    assert "zero-shot" in status["reason"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0] and records[0]["examples_seen"] == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "last.pt",
        "step-000000000.pt",
    ]
    kept = torch.load(out / "checkpoints" / "step-000000000.pt", weights_only=False)["model"]
    pretrained = build_backbone(BackboneConfig(arch="pythia", pretrained=str(base)))
    grown = set()
    for name, weight in pretrained.state_dict().items():
        assert kept[name].shape[1:] == weight.shape[1:], name
        if kept[name].shape[0] != weight.shape[0]:  # the task's token rows, appended
            grown.add(name)
        assert torch.equal(kept[name][: weight.shape[0]], weight), name
    assert grown == {"gpt_neox.embed_in.weight", "lm_head.weight"}
    # finished: a rerun adds nothing
    assert run(out, base, "--steps", "0") == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_vlab_inspect_opens_a_zero_shot_run_at_step_0(tmp_path, base):
    out = tmp_path / "zero"
    assert run(out, base, "--steps", "0") == 0
    done, _, _ = inspection.inspect_paths([out], ["logit_lens"], examples=32, progress=False)
    assert done == 1
    table = pd.read_csv(inspection.result_paths(out, 0, "logit_lens")[0])
    assert set(table["step"]) == {0} and sorted(table["layer"].unique()) == [-1, 0, 1]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "-1"], "'train.steps': must be >= 0"),
        (["--steps", "0", "--set", "train.eval_at_start=false"], "needs train.eval_at_start"),
    ],
)
def test_a_zero_shot_run_that_would_do_nothing_is_refused(tmp_path, base, capsys, extra, message):
    out = tmp_path / "zero"
    assert run(out, base, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_pretrained_alone_chooses_the_arm(tmp_path):
    base = tmp_path / "mamba"
    build_backbone(BackboneConfig(arch="mamba"), seed=1).save_pretrained(base)
    out = tmp_path / "zero"
    assert run(out, base, "--steps", "0") == 0
    assert json.loads((out / "config.json").read_text())["model"]["arch"] == "mamba"


def test_vlab_inspect_pretrained_makes_the_zero_shot_run_and_inspects_it(tmp_path, base):
    out = tmp_path / "zero"
    code = main(
        ["inspect", "--pretrained", str(base), "--out", str(out), "--set", "task.length=4",
         "--set", "task.n_heldout=32", "--analyses", "logit_lens", "--examples", "32",
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["steps"] == 0 and config["model"]["pretrained"] == str(base)
    table = pd.read_csv(inspection.result_paths(out, 0, "logit_lens")[0])
    assert set(table["step"]) == {0}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "train.steps=5"], "--set train.steps: a zero-shot run trains nothing"),
        (["--analyses", "image_attention"], "is not for a probe run"),
        (["--analyses", "telepathy"], "unknown analysis 'telepathy'"),
        (["--set", "task.length=0"], "task.length"),
        (["somewhere"], "not both"),
    ],
)
def test_vlab_inspect_pretrained_refuses_bad_input_before_making_anything(
    tmp_path, base, capsys, extra, message
):
    out = tmp_path / "zero"
    code = main(["inspect", "--pretrained", str(base), "--out", str(out), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_vlab_inspect_out_without_pretrained_is_refused(tmp_path, capsys):
    assert main(["inspect", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "with --pretrained" in capsys.readouterr().err
    assert main(["inspect", "--no-progress"]) == 2
    assert "--pretrained DIR --out OUT" in capsys.readouterr().err
