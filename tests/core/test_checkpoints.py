"""Checkpoints load as tensors and plain data only: a crafted, truncated, empty or garbage
``last.pt`` is refused with an error naming the file, runs nothing, and leaves the run marked
failed (not running); leftovers of interrupted checkpoint writes are removed on the next start."""

import json
import os

import pytest
import torch

from vlab.cli import main
from vlab.errors import VlabError
from vlab.fileio import read_jsonl
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
    """A run stopped at step 10 of 20 (interrupted, with a checkpoint to resume from)."""
    out = tmp_path / "run"
    assert main(["probe", "run", *ARGS, *SETS, "--steps", "10", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    config["train"]["steps"] = 20  # the same run, now with its full budget
    (out / "config.json").write_text(json.dumps(config))
    status = json.loads((out / "status.json").read_text())
    (out / "status.json").write_text(json.dumps({**status, "state": "interrupted"}))
    return out


def _resume(out):
    return main(["probe", "run", *ARGS, *SETS, "--steps", "20", "--out", str(out)])


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
