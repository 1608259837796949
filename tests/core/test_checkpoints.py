"""Checkpoints load as tensors and plain data only: a crafted, truncated, empty or garbage
``last.pt`` is refused with an error naming the file, runs nothing, and leaves the run marked
failed (not running); leftovers of interrupted checkpoint writes are removed on the next start."""

import json
import os

import pytest
import torch

from vlab.cli import build_parser, main
from vlab.errors import VlabError
from vlab.fileio import read_jsonl
from vlab.probes.cli import config_from_args
from vlab.probes.trainer import run_probe
from vlab.rundir import RunDir

ARGS = ["--arch", "pythia", "--length", "4", "--no-progress"]
SETS = ["--set", "train.eval_every=10", "--set", "train.threads=1", "--set", "task.n_heldout=16"]


class _RunsCode:
    """Unpickling this calls ``os.system``: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _stopped_run(tmp_path):
    """A run of 20 steps stopped after step 10, as a preemption leaves it: interrupted, with
    the checkpoint of step 10 to resume from."""
    out = tmp_path / "run"
    argv = ["probe", "run", *ARGS, *SETS, "--steps", "20", "--out", str(out)]
    args = build_parser().parse_args(argv)
    steps = iter(range(1, 100))
    stop = lambda: next(steps) >= 10  # noqa: E731
    run_probe(config_from_args(args), out, progress=False, should_stop=stop, log=lambda *_: 0)
    assert RunDir(out).read_status()["state"] == "interrupted"
    return out


def _resume(out, *extra):
    return main(["probe", "run", *ARGS, *SETS, "--steps", "20", *extra, "--out", str(out)])


@pytest.mark.parametrize("damage", ["crafted", "truncated", "empty", "garbage"])
def test_a_bad_checkpoint_is_refused_with_the_file_named_and_the_run_marked_failed(
    tmp_path, capsys, damage
):
    out = _stopped_run(tmp_path)
    ckpt = out / "checkpoints" / "last.pt"
    marker = tmp_path / "code-ran"
    if damage == "crafted":
        torch.save({"model": _RunsCode(marker)}, ckpt)
    elif damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "empty":
        ckpt.write_bytes(b"")
    else:
        ckpt.write_bytes(b"not a checkpoint at all\n" * 100)
    capsys.readouterr()
    assert _resume(out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "Traceback" not in err
    assert not marker.exists()  # nothing in the file ran
    status = RunDir(out).read_status()
    assert status["state"] == "failed" and str(ckpt) in status["reason"]
    assert [m["step"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 10]  # nothing lost


def test_load_checkpoint_refuses_objects_even_when_called_directly(tmp_path):
    run = RunDir(tmp_path / "r")
    run.checkpoint_path.parent.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"step": 3, "x": _RunsCode(marker)}, run.checkpoint_path)
    with pytest.raises(VlabError, match="refused to load"):
        run.load_checkpoint()
    assert not marker.exists()


def test_leftovers_of_interrupted_checkpoint_writes_are_removed_and_the_run_resumes(tmp_path):
    out = _stopped_run(tmp_path)
    leftover = out / "checkpoints" / ".last.pt.12345.tmp"
    leftover.write_bytes(b"\0" * 4096)  # what a kill in the middle of torch.save leaves
    assert _resume(out) == 0
    assert not leftover.exists()
    assert RunDir(out).read_status()["state"] == "done"
    assert [m["step"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 10, 20]


def test_resuming_under_an_edited_config_json_is_refused_naming_the_fields(tmp_path, capsys):
    out = _stopped_run(tmp_path)  # trained to step 10 with lr 2e-3
    config = json.loads((out / "config.json").read_text())
    config["train"]["lr"] = 0.01  # edited by hand, then rerun with the matching flag
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert _resume(out, "--lr", "0.01") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fields: train.lr" in err
    assert RunDir(out).read_status()["state"] == "failed"
    assert [m["step"] for m in read_jsonl(out / "metrics.jsonl")] == [0, 10]
