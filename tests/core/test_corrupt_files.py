"""Corrupt run and sweep files give a one-line error naming the file and what to do, never a
traceback; a sweep with one unreadable status still shows its other runs."""

import json
import shutil
from pathlib import Path

import pytest

from vlab.cli import main
from vlab.rundir import RunDir

ARGS = ["--arch", "pythia", "--length", "4", "--steps", "10", "--no-progress"]
SETS = ["--set", "train.eval_every=10", "--set", "train.threads=1", "--set", "task.n_heldout=16"]
SWEEP = Path(__file__).resolve().parents[1] / "slurm" / "fixtures" / "sweep-2c5bbbe"
DAMAGE = {"garbage": b"{not json", "empty": b"", "list": b"[1, 2]", "binary": b"\xff\xfe\x00"}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("name", ["status.json", "config.json"])
def test_a_corrupt_run_file_is_a_one_line_error_naming_it(tmp_path, capsys, name, damage):
    out = tmp_path / "run"
    argv = ["probe", "run", *ARGS, *SETS, "--out", str(out)]
    assert main(argv) == 0
    (out / name).write_bytes(DAMAGE[damage])
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(out / name) in err and "Traceback" not in err


def test_a_corrupt_sweep_json_is_a_one_line_error(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(SWEEP, sweep)
    (sweep / "sweep.json").write_text('{"name": "compat", "runs": [')
    assert main(["sweep", "status", str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sweep.json: not valid JSON" in err


def test_one_corrupt_status_shows_as_unknown_and_the_other_runs_still_show(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(SWEEP, sweep)
    (sweep / "runs" / "mamba" / "status.json").write_text("{truncated")
    assert main(["sweep", "status", str(sweep), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["pythia"]["state"] == "done"
    assert rows["mamba"]["state"] == "unknown" and "status.json" in rows["mamba"]["reason"]
    assert RunDir(sweep / "runs" / "pythia").read_status()["state"] == "done"


def test_a_corrupt_metrics_line_before_the_last_is_refused_on_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["probe", "run", *ARGS, *SETS, "--out", str(out)]
    stop = ["--set", "train.eval_every=5"]
    assert main([*argv, *stop]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:30]  # a line cut short in the middle of the file
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    status = json.loads((out / "status.json").read_text())
    (out / "status.json").write_text(json.dumps({**status, "state": "interrupted"}))
    capsys.readouterr()
    assert main([*argv, *stop]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 2 is not valid JSON" in err
    assert (out / "metrics.jsonl").read_text().splitlines() == lines  # nothing dropped
