"""One writer per run directory, whatever starts it: a second ``vlab probe run`` on the same
``--out`` is refused while the first lives, and takes over once it is killed; a lock naming a
live but different process (a reused pid) is stale."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from vlab.cli import main
from vlab.fileio import read_jsonl
from vlab.locks import acquire, lock_holder
from vlab.process import process_start
from vlab.rundir import RunDir

ARGS = ["--arch", "pythia", "--length", "4", "--no-progress"]
SETS = ["--set", "train.eval_every=10", "--set", "train.threads=1", "--set", "task.n_heldout=16"]


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_second_writer_on_the_same_run_directory_is_refused_until_the_first_is_gone(
    tmp_path, capsys
):
    out = tmp_path / "run"
    argv = ["probe", "run", *ARGS, *SETS, "--steps", "100000", "--out", str(out)]
    first = subprocess.Popen(
        [sys.executable, "-m", "vlab.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_for(lambda: len(RunDir(out).read_metrics()) >= 2)  # it is training
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"is being trained by pid {first.pid} on host {socket.gethostname()}" in err
        lines = len(read_jsonl(out / "metrics.jsonl"))
        assert lines >= 2  # the refused process wrote nothing, cut nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    holder = json.loads((out / "writer.lock").read_text())
    assert holder["pid"] == first.pid and lock_holder(out / "writer.lock") is None  # stale
    config = json.loads((out / "config.json").read_text())
    assert json.loads((out / "status.json").read_text())["state"] == "running"  # as left
    run = RunDir(out)
    assert run.claim(config) is False  # the killed run is taken over by the next writer
    assert json.loads((out / "writer.lock").read_text())["pid"] == os.getpid()
    run.release()
    assert not (out / "writer.lock").exists()


def test_a_lock_naming_a_live_but_different_process_is_stale(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "writer.lock"
        real = {
            "host": socket.gethostname(),
            "pid": sleeper.pid,
            "start": process_start(sleeper.pid),
            "job_id": None,
            "time": time.time(),
        }
        path.write_text(json.dumps(real))
        assert lock_holder(path) == real  # the recorded process itself: held
        path.write_text(json.dumps({**real, "start": "another-boot:1"}))
        assert lock_holder(path) is None  # same pid, another process: stale
        assert acquire(path) is not None  # and taken over
        assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        sleeper.kill()
        sleeper.wait()
