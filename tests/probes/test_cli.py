"""``vlab probe run``: bad input fails before any work, naming the field; reruns are safe."""

import json

import pytest

from tests.cli import vlab
from vlab.cli import main

FAST = [
    "--length",
    "4",
    "--steps",
    "20",
    "--threads",
    "1",
    "--no-progress",
    "--set",
    "train.eval_every=10",
    "--set",
    "task.n_heldout=16",
]


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--length", "8", "--set", "task.pool_size=4"], "task.pool_size"),
        (["--arch", "rwkv"], "model.arch"),
        (["--steps", "-5"], "train.steps"),
        (["--variant", "middle"], "task.variant"),
        (["--lr", "0"], "train.lr"),
        (["--set", "train.lrr=0.1"], "train.lrr"),
        (["--set", "task.length=eight"], "task.length"),
        (["--preset", "enormous"], "model.preset"),
    ],
)
def test_invalid_values_fail_before_any_work_naming_the_field(capsys, tmp_path, argv, field):
    out = tmp_path / "run"
    code, _, err = vlab(capsys, "probe", "run", *argv, "--out", str(out))
    assert code == 2
    assert f"'{field}'" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_unknown_key_in_a_config_file_is_named(capsys, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"train": {"steps": 10}, "tasks": {"length": 4}}))
    code, _, err = vlab(capsys, "probe", "run", "--config", str(path), "--out", str(tmp_path / "r"))
    assert code == 2 and "'tasks'" in err and "unknown key" in err


def test_config_file_and_flags_merge_with_flags_winning(capsys, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"task": {"variant": "prefix"}, "train": {"lr": 0.005}}))
    out = tmp_path / "r"
    code, stdout, _ = vlab(
        capsys, "probe", "run", "--config", str(path), "--lr", "0.001", *FAST, "--out", str(out)
    )
    assert code == 0 and "done" in stdout
    config = json.loads((out / "config.json").read_text())
    assert config["task"]["variant"] == "prefix" and config["train"]["lr"] == 0.001


def test_rerun_on_a_finished_run_says_so_and_a_changed_config_is_refused(capsys, tmp_path):
    out = str(tmp_path / "r")
    assert vlab(capsys, "probe", "run", *FAST, "--out", out)[0] == 0
    code, stdout, _ = vlab(capsys, "probe", "run", *FAST, "--out", out)
    assert code == 0 and "already done" in stdout
    code, _, err = vlab(capsys, "probe", "run", *FAST, "--lr", "0.01", "--out", out)
    assert code == 2 and "train.lr" in err and "different config" in err


def test_debug_flag_shows_the_traceback(tmp_path):
    from vlab.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "probe", "run", "--steps", "-1", "--out", str(tmp_path / "r")])
