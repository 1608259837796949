"""A pretrained checkpoint must be a local directory of the arch's own family: checked on the
config, so every command refuses it in one line naming the field before any work starts."""

import json
from pathlib import Path

import pytest

from vlab.cli import main
from vlab.errors import ConfigError
from vlab.models.backbones import FAMILIES, BackboneConfig, build_backbone

ARCHS = list(FAMILIES)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """A tiny save_pretrained checkpoint of every arch (random weights, nothing downloaded)."""
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for arch in ARCHS:
        build_backbone(BackboneConfig(arch=arch)).save_pretrained(root / arch)
        out[arch] = str(root / arch)
    return out


def test_each_checkpoint_records_its_family_model_type(checkpoints):
    for arch, path in checkpoints.items():
        config = json.loads((Path(path) / "config.json").read_text())
        assert config["model_type"] == FAMILIES[arch].MODEL_TYPE
        assert BackboneConfig(arch=arch, pretrained=path).pretrained == path  # accepted


@pytest.mark.parametrize(
    ("saved", "arch", "model_type"),
    [
        ("pythia", "mamba", "gpt_neox"),
        ("mamba", "mamba2", "mamba"),
        ("hybrid", "mamba", "vlab_hybrid"),  # a MambaConfig subclass: loads, wrongly, without
        ("mamba", "hybrid", "mamba"),
        ("mamba2", "pythia", "mamba2"),
    ],
)
def test_a_checkpoint_of_another_arch_is_refused_naming_both(checkpoints, saved, arch, model_type):
    with pytest.raises(ConfigError) as e:
        BackboneConfig(arch=arch, pretrained=checkpoints[saved])
    assert e.value.field == "pretrained"
    message = str(e.value)
    assert len(message.splitlines()) == 1
    assert f"holds a {model_type!r} model (the {saved} arch's)" in message
    assert f"not {FAMILIES[arch].MODEL_TYPE!r} (arch={arch})" in message


def test_missing_directory_no_config_and_no_model_type_are_one_line_each(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "untyped").mkdir()
    (tmp_path / "untyped" / "config.json").write_text('{"vocab_size": 256}')
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "config.json").write_text("[1, 2]")
    cases = {
        "missing": "no such directory",
        "empty": "not a checkpoint directory (no config.json)",
        "untyped": "has no model_type",
        "list": "is not a JSON object",
    }
    for name, words in cases.items():
        with pytest.raises(ConfigError) as e:
            BackboneConfig(arch="pythia", pretrained=str(tmp_path / name))
        assert e.value.field == "pretrained" and words in str(e.value)
        assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["probe", "run", "--arch", "mamba", "--pretrained", "{pythia}"], "model.pretrained"),
        (["vlm", "train", "--arch", "mamba2", "--set", "model.lm.pretrained={mamba}"],
         "model.lm.pretrained"),
    ],
    ids=["probe", "vlm"],
)  # fmt: skip
def test_commands_refuse_a_mismatched_checkpoint_before_any_work(
    capsys, tmp_path, checkpoints, argv, field
):
    out = tmp_path / "run"
    code = main([*(a.format(**checkpoints) for a in argv), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"config field '{field}'" in err and "give each arch its own checkpoint" in err
    assert not out.exists()
