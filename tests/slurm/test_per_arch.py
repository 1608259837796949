"""Per-arch settings of a sweep (``per_arch``, ``--set-arch``): each arm its own checkpoint."""

import json

import pytest

from tests.cli import vlab
from vlab.errors import VlabError
from vlab.models.backbones import BackboneConfig, build_backbone, count_parameters
from vlab.slurm.spec import SweepSpec, expand
from vlab.slurm.status import sweep_status
from vlab.slurm.sweepdir import SweepDir

PROBE = {
    "task": {"length": 4, "n_heldout": 16},
    "train": {"steps": 4, "eval_every": 2, "threads": 1},
}
# one layer: a shape no preset has, so a run built from the preset instead would show
ONE_LAYER = {"num_hidden_layers": 1}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """One-layer pythia and mamba checkpoints with a tokenizer (save_pretrained, offline)."""
    from vlab.models.vlm.tokenizer import train_bpe_tokenizer

    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for arch in ("pythia", "mamba"):
        build_backbone(BackboneConfig(arch=arch, overrides=ONE_LAYER)).save_pretrained(root / arch)
        tok = train_bpe_tokenizer(["a red circle", "two blue squares"], vocab_size=300)
        tok.save_pretrained(root / arch)
        out[arch] = str(root / arch)
    (root / "bare").mkdir()  # a checkpoint without a tokenizer
    build_backbone(BackboneConfig(arch="mamba", overrides=ONE_LAYER)).save_pretrained(root / "bare")
    out["bare"] = str(root / "bare")
    return out


def spec_file(tmp_path, spec: dict) -> str:
    path = tmp_path / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_each_arm_trains_from_its_own_checkpoint(capsys, tmp_path, checkpoints):
    per_arch = {a: {"model.pretrained": checkpoints[a]} for a in ("pythia", "mamba")}
    path = spec_file(
        tmp_path,
        {
            "name": "c",
            "base": PROBE,
            "axes": {"model.arch": ["pythia", "mamba"]},
            "per_arch": per_arch,
        },
    )
    out = tmp_path / "sw"
    assert vlab(capsys, "sweep", "submit", path, "--executor", "debug", "--out", str(out))[0] == 0
    assert [r["state"] for r in sweep_status(SweepDir(out))] == ["done", "done"]
    for arch in ("pythia", "mamba"):
        run = out / "runs" / arch
        assert (
            json.loads((run / "config.json").read_text())["model"]["pretrained"]
            == (checkpoints[arch])
        )
        # the run's LM is the one-layer checkpoint's (task tokens change only the embeddings)
        trained = json.loads((run / "status.json").read_text())["params"]["non_embedding"]
        saved = build_backbone(BackboneConfig(arch=arch, pretrained=checkpoints[arch]))
        preset = build_backbone(BackboneConfig(arch=arch))
        assert trained == count_parameters(saved)["non_embedding"]
        assert trained < count_parameters(preset)["non_embedding"]


def test_set_arch_is_per_arch_on_the_command_line(capsys, tmp_path, checkpoints):
    spec = {"name": "c", "base": PROBE, "axes": {"model.arch": ["pythia", "mamba"]}}
    flags = [f"--set-arch={a}:model.pretrained={checkpoints[a]}" for a in ("pythia", "mamba")]
    code, stdout, err = vlab(capsys, "sweep", "show", spec_file(tmp_path, spec), "--json", *flags)
    assert code == 0, err
    by_flag = json.loads(stdout)["runs"]
    spec["per_arch"] = {a: {"model": {"pretrained": checkpoints[a]}} for a in ("pythia", "mamba")}
    code, stdout, _ = vlab(capsys, "sweep", "show", spec_file(tmp_path, spec), "--json")
    assert json.loads(stdout)["runs"] == by_flag
    assert [r["config"]["model"]["pretrained"] for r in by_flag] == [
        checkpoints["pythia"],
        checkpoints["mamba"],
    ]


def test_one_checkpoint_for_two_arms_is_refused_in_one_line(capsys, tmp_path, checkpoints):
    spec = {"name": "c", "base": PROBE, "axes": {"model.arch": ["pythia", "mamba"]}}
    path, out = spec_file(tmp_path, spec), tmp_path / "sw"
    for argv in (["show", path], ["submit", path, "--executor", "debug", "--out", str(out)]):
        code, stdout, err = vlab(
            capsys, "sweep", *argv, "--set", f"model.pretrained={checkpoints['pythia']}"
        )
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "config field 'model.pretrained'" in err and "'gpt_neox'" in err
        assert "(arch=mamba)" in err and "--set-arch" in err
    assert not out.exists()
    code, _, err = vlab(capsys, "sweep", "show", path, "--set-arch", "mamba=model.pretrained=x")
    assert code == 2 and "--set-arch expects ARCH:KEY=VALUE" in err


def test_per_arch_goes_over_the_base_and_under_a_run_s_own_settings(checkpoints):
    base = {**PROBE, "model": {"pretrained": checkpoints["pythia"]}}
    spec = SweepSpec(
        name="o",
        base=base,
        runs=[
            {"name": "own", "model.arch": "mamba", "model.pretrained": checkpoints["bare"]},
            {"name": "arm", "model.arch": "mamba"},
            {"name": "base", "model.arch": "pythia"},
        ],
        per_arch={"mamba": {"model.pretrained": checkpoints["mamba"]}},
    )
    dirs = {r.name: r.config["model"]["pretrained"] for r in expand(spec)}
    assert dirs == {
        "own": checkpoints["bare"],
        "arm": checkpoints["mamba"],
        "base": checkpoints["pythia"],
    }
    spec.per_arch = {"rwkv": {}}
    with pytest.raises(VlabError, match="per_arch: 'rwkv' is not an architecture"):
        expand(spec)


def test_a_vlm_sweep_gives_each_arm_its_checkpoint_and_tokenizer(capsys, tmp_path, checkpoints):
    from tests.slurm.test_vlm_sweeps import FAST, SHAPES_BENCHMARKS

    spec = {
        "name": "v",
        "kind": "vlm",
        "base": {"preset": "tiny-shapes", **FAST},
        "axes": {"model.lm.arch": ["pythia", "mamba"]},
        "per_arch": {
            "pythia": {"model.lm.pretrained": checkpoints["pythia"]},
            # the LM from one directory, its tokenizer from another
            "mamba": {
                "model.lm.pretrained": checkpoints["bare"],
                "data.tokenizer": checkpoints["mamba"],
            },
        },
    }
    path, out = spec_file(tmp_path, spec), tmp_path / "sw"
    assert vlab(capsys, "sweep", "submit", path, "--executor", "debug", "--out", str(out))[0] == 0
    rows = sweep_status(SweepDir(out))
    assert [(r["state"], r["benchmarks"]) for r in rows] == [("done", SHAPES_BENCHMARKS)] * 2
    for arch, lm, tokenizer in (
        ("pythia", checkpoints["pythia"], None),
        ("mamba", checkpoints["bare"], checkpoints["mamba"]),
    ):
        config = json.loads((out / "runs" / arch / "stage2" / "config.json").read_text())
        assert config["model"]["lm"]["pretrained"] == lm
        assert config["data"]["tokenizer"] == tokenizer
        assert not (out / "runs" / arch / "tokenizer").exists()  # none trained: the given one
    # a checkpoint without a tokenizer, and no data.tokenizer: refused before anything runs
    spec["per_arch"]["mamba"] = {"model.lm.pretrained": checkpoints["bare"]}
    code, _, err = vlab(capsys, "sweep", "show", spec_file(tmp_path, spec))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "config field 'model.lm.pretrained'" in err and "holds no tokenizer" in err
