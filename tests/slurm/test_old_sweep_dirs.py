"""Directories written by an earlier vlab keep working: a sweep written by commit 2c5bbbe (the
layout before ``vlab.rundir`` and ``vlab.training`` moved out of ``vlab.models``) with two tiny
runs, pythia done and mamba stopped at step 15 of 30, is shown, resumed and reported by today's
code: the history written before the stop is kept line for line, and the resumed run ends where
an uninterrupted run of today's code does.

"Where" is what every machine can promise. The fixture's first 15 steps ran on the CPU that wrote
it; another CPU (other SIMD widths, other BLAS kernels) rounds float32 differently in the last
bits, so the losses of the resumed and the fresh run agree to float32 rounding carried through
30 steps, not bit for bit. The schedule (steps, examples, learning rates) is exact everywhere.
Bit-for-bit resumption on one machine is the kill matrix's promise
(tests/core/training/test_kill_matrix.py), where the stop and the resume share a CPU."""

import json
import shutil
from pathlib import Path

import pytest

from vlab.cli import main
from vlab.config import from_dict
from vlab.fileio import read_json, read_jsonl
from vlab.probes.config import ProbeRunConfig
from vlab.probes.trainer import run_probe

FIXTURE = Path(__file__).parent / "fixtures" / "sweep-2c5bbbe"
EXACT = ("step", "examples_seen", "fraction", "lr")  # the schedule: no float32 arithmetic
LOSSES = ("loss", "eval_loss")
N_HELDOUT = 16  # the fixture's task.n_heldout


def assert_same_run(resumed: list[dict], fresh: list[dict]) -> None:
    """The two runs' metrics lines agree field by field: the schedule exactly, losses to float32
    rounding over 30 steps (relative 1e-4; a changed training step moves them by far more), and
    accuracies to within one held-out example (an argmax at a near-tie may flip)."""
    assert [sorted(m) for m in resumed] == [sorted(m) for m in fresh]
    for old, new in zip(resumed, fresh, strict=True):
        assert {k: old[k] for k in EXACT} == {k: new[k] for k in EXACT}
        for key in LOSSES:
            assert (old[key] is None) == (new[key] is None), (key, old["step"])
            if old[key] is not None:
                assert old[key] == pytest.approx(new[key], rel=1e-4), (key, old["step"])
        assert old["accuracy"] == pytest.approx(new["accuracy"], abs=1 / N_HELDOUT + 1e-9)
        one = len(old["per_position"]) / N_HELDOUT  # one example of a position's share
        assert old["per_position"] == pytest.approx(new["per_position"], abs=one + 1e-9)


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
    written_before_the_stop = read_jsonl(FIXTURE / "runs" / "mamba" / "metrics.jsonl")
    assert resumed[: len(written_before_the_stop)] == written_before_the_stop
    config = from_dict(ProbeRunConfig, read_json(sweep / "runs" / "mamba" / "config.json"))
    run_probe(config, tmp_path / "fresh", progress=False, log=lambda *_: None)
    assert_same_run(resumed, read_jsonl(tmp_path / "fresh" / "metrics.jsonl"))
    assert [m["step"] for m in resumed] == [0, 10, 20, 30]

    assert main(["report", str(sweep), "--no-html"]) == 0
    assert (sweep / "report.ipynb").is_file()
