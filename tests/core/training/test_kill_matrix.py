"""The kill matrix: a run killed (SIGKILL, no chance to clean up) at any of ten points, in
evaluation, checkpoint writes, metrics appends, status writes, a training step or the very
end, then resumed, ends byte-identical to an uninterrupted run, for both arms, with nothing
left behind."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from vlab.cli import main
from vlab.rundir import RunDir

ARGS = ["--length", "4", "--steps", "30", "--no-progress"]
SETS = [
    "--set", "train.eval_every=10", "--set", "train.threads=1", "--set", "task.n_heldout=16",
    "--set", "train.stop_at_threshold=false",
]  # fmt: skip

# Runs ``vlab ARGV`` with one function replaced so that its N-th call kills the process.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    point, nth, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    calls = {"n": 0}

    def now():
        calls["n"] += 1
        return calls["n"] == nth

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    import torch
    import vlab.rundir as rundir
    import vlab.training.engine as engine
    from vlab.probes.train_task import ProbeTrainTask

    def wrap(owner, name, before=None, after=None):
        real = getattr(owner, name)

        def patched(*args, **kwargs):
            if before is not None and now():
                before(*args, **kwargs)
            out = real(*args, **kwargs)
            if after is not None and now():
                die()
            return out

        setattr(owner, name, patched)

    def torn_save(obj, f, *args, **kwargs):  # half a checkpoint reaches the disk
        import io
        buf = io.BytesIO()
        torch_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        die()

    def torn_line(path, record):  # half a metrics line, no newline
        import json
        with open(path, "a") as f:
            f.write(json.dumps(record)[:40])
        die()

    def torn_status(path, obj):  # the temporary file of an atomic write, never renamed
        with open(os.path.join(os.path.dirname(path), ".status.json.killed.tmp"), "w") as f:
            f.write("{")
        die()

    torch_save = torch.save
    if point == "evaluate":
        wrap(ProbeTrainTask, "evaluate", after=True)
    elif point == "checkpoint-write":
        wrap(torch, "save", before=torn_save)
    elif point == "after-checkpoint":
        wrap(rundir.RunDir, "save_checkpoint", after=True)
    elif point == "metrics-append":
        wrap(rundir, "append_jsonl", before=torn_line)
    elif point == "after-metrics":
        wrap(rundir, "append_jsonl", after=True)
    elif point == "status-write":
        wrap(rundir, "atomic_write_json", before=torn_status)
    elif point == "train-step":
        wrap(engine, "_train_step", before=lambda *a, **k: die())
    elif point == "finish":
        wrap(engine, "_finish", before=lambda *a, **k: die())
    from vlab.cli import main
    sys.exit(main(argv))
    """
)

POINTS = [
    ("evaluate", 1),  # the evaluation at step 0, before anything is recorded
    ("evaluate", 3),  # a later evaluation
    ("checkpoint-write", 1),  # half of the first checkpoint on disk
    ("checkpoint-write", 3),  # half of a later one, a good one beside it
    ("after-checkpoint", 2),  # checkpoint saved, status not yet updated
    ("metrics-append", 2),  # a torn metrics line
    ("after-metrics", 3),  # metrics line written, its checkpoint not
    ("status-write", 4),  # an atomic status write interrupted
    ("train-step", 17),  # between evaluations
    ("finish", 1),  # everything written but the final "done"
]


def _argv(arch, out):
    return ["probe", "run", "--arch", arch, *ARGS, *SETS, "--out", str(out)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = {}
    for arch in ("pythia", "mamba"):
        path = tmp_path_factory.mktemp("reference") / arch
        assert main(_argv(arch, path)) == 0
        out[arch] = (path / "metrics.jsonl").read_bytes()
    return out


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
@pytest.mark.parametrize(("point", "nth"), POINTS, ids=[f"{p}-{n}" for p, n in POINTS])
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_result(
    tmp_path, uninterrupted, arch, point, nth
):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, point, str(nth), *_argv(arch, out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]  # it really died at that point
    assert main(_argv(arch, out)) == 0
    assert (out / "metrics.jsonl").read_bytes() == uninterrupted[arch]
    assert json.loads((out / "status.json").read_text())["state"] == "done"
    assert sorted(RunDir(out).snapshots()) == [0, 10, 20, 30]  # every kept step, once
    leftovers = [p.name for p in [*out.glob(".*.tmp"), *(out / "checkpoints").glob(".*.tmp")]]
    assert leftovers == [] and not (out / "writer.lock").exists()
