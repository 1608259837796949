"""Directories written by an earlier vlab keep working: a sweep written by commit 2c5bbbe (the
layout before ``vlab.rundir`` and ``vlab.training`` moved out of ``vlab.models``) with two tiny
runs, pythia done and mamba stopped at step 15 of 30, is shown, resumed and reported by today's
code, and the resumed run ends exactly where an uninterrupted run of today's code does."""

import json
import shutil
from pathlib import Path

from vlab.cli import main
from vlab.config import from_dict
from vlab.fileio import read_json, read_jsonl
from vlab.probes.config import ProbeRunConfig
from vlab.probes.trainer import run_probe

FIXTURE = Path(__file__).parent / "fixtures" / "sweep-2c5bbbe"


def test_a_sweep_written_before_the_layout_change_shows_resumes_and_reports(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURE, sweep)
    assert main(["sweep", "status", str(sweep), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["pythia"]["state"] == "done" and rows["mamba"]["state"] == "interrupted"
    assert rows["mamba"]["step"] == 15

    assert main(["sweep", "resume", str(sweep), "--executor", "debug"]) == 0
    assert read_json(sweep / "runs" / "mamba" / "status.json")["state"] == "done"
    resumed = read_jsonl(sweep / "runs" / "mamba" / "metrics.jsonl")
    config = from_dict(ProbeRunConfig, read_json(sweep / "runs" / "mamba" / "config.json"))
    run_probe(config, tmp_path / "fresh", progress=False, log=lambda *_: None)
    assert resumed == read_jsonl(tmp_path / "fresh" / "metrics.jsonl")
    assert [m["step"] for m in resumed] == [0, 10, 20, 30]

    assert main(["report", str(sweep), "--no-html"]) == 0
    assert (sweep / "report.ipynb").is_file()
