"""Train one run of a sweep: the function every executor calls, locally or in a SLURM job.

It reads the run's config from ``sweep.json`` (the previous step's file), takes the run's
lock, and trains and evaluates into ``runs/<name>`` with the experiment of the sweep's kind
(:meth:`vlab.experiment.Experiment.run`, the same call ``vlab probe run`` and ``vlab vlm
train`` make), which resumes from the run's last checkpoint. A finished run returns at once;
a run locked by a live process is skipped.

Run as a program it is the local executor's worker process: ``python -m vlab.slurm.worker
SWEEP_DIR NAME`` trains one run; ``--serve SWEEP_DIR`` trains run after run, reading each name
from standard input and answering ``NAME<TAB>EXIT_CODE`` on standard output. A served worker
pays Python's, torch's and transformers' start-up (about 4 s on a laptop core) once rather than
per run, which is most of a short probe run. Either way SIGTERM stops training cleanly at the
next step with a checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path

import submitit

from vlab.errors import VlabError
from vlab.experiment import experiment
from vlab.locks import acquire
from vlab.slurm.sweepdir import run_entry


def run_one(sweep_dir: str, name: str, *, progress: bool = False, should_stop=None) -> dict:
    """Train run ``name`` of the sweep at ``sweep_dir``; returns its final status."""
    sweep, entry, kind = run_entry(sweep_dir, name)
    lock = acquire(sweep.lock_path(name))
    if lock is None:
        return {"name": name, "state": "skipped", "reason": "locked by another live process"}
    try:
        status = experiment(kind).run(
            entry.config, sweep.run_path(name), progress=progress, should_stop=should_stop
        )
    finally:
        lock.release()
    return {"name": name, **status}


class SweepJob(submitit.helpers.Checkpointable):
    """The callable submitted to SLURM: one run of a sweep, requeued on preemption.

    On the preemption / timeout signal submitit calls ``checkpoint`` (inherited), which
    resubmits the same call; the requeued job resumes from the run's last on-disk checkpoint
    (saved at every evaluation). A job killed without warning resumes the same way on
    ``vlab sweep resume``.
    """

    def __call__(self, sweep_dir: str, name: str) -> dict:
        from vlab.slurm.ranks import multi_task_job, run_ranks

        if multi_task_job():  # this task is one rank of a multi-process run
            return run_ranks(sweep_dir, name)
        return run_one(sweep_dir, name)


def _train(sweep_dir: str, name: str, should_stop) -> int:
    """Train one run, report it on stdout; the exit code: 0 done or skipped, 1 not, 2 bad input."""
    try:
        status = run_one(sweep_dir, name, progress=True, should_stop=should_stop)
    except VlabError as e:
        print(f"vlab: error: {e}", file=sys.stderr)
        return 2
    print(f"{name}: {status.get('state')}: {status.get('reason')}")
    return 0 if status.get("state") in ("done", "skipped") else 1


def serve(sweep_dir: str, requests, answers, should_stop) -> None:
    """Train the runs named on ``requests`` (one per line) until it ends or a stop is asked.

    Each run's output, file descriptors 1 and 2 included (native libraries write there too),
    goes to its ``logs/<name>.log``, as with one process per run; ``NAME\tCODE`` is written to
    ``answers`` when it ends. An unexpected error fails that run only (traceback in its log).
    The CPU thread count is restored after each run, so a run that sets ``train.threads``
    does not change the next one's.
    """
    import torch

    from vlab.slurm.sweepdir import SweepDir

    sweep = SweepDir(sweep_dir)
    threads = torch.get_num_threads()
    for line in requests:
        name = line.strip()
        if not name:
            continue
        log_path = sweep.log_path(name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with _output_to(log_path):
            try:
                code = _train(sweep_dir, name, should_stop)
            except Exception:
                traceback.print_exc()
                code = 1
        torch.set_num_threads(threads)
        answers.write(f"{name}\t{code}\n")
        answers.flush()
        if should_stop():
            return


class _output_to:
    """Point file descriptors 1 and 2 (and sys.stdout / sys.stderr) at a file, then back."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        self.file = open(self.path, "a")  # noqa: SIM115 - closed in __exit__
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.file.close()
        return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    serving = len(argv) == 2 and argv[0] == "--serve"
    if len(argv) != 2:
        print(
            "usage: python -m vlab.slurm.worker SWEEP_DIR RUN_NAME\n"
            "       python -m vlab.slurm.worker --serve SWEEP_DIR   (run names on stdin)",
            file=sys.stderr,
        )
        return 2
    stop = {"requested": False}

    def on_term(signum, frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, on_term)
    if not serving:
        return _train(argv[0], argv[1], lambda: stop["requested"])
    # answers go to the original stdout; runs' own output is redirected to their logs
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    serve(argv[1], sys.stdin, answers, lambda: stop["requested"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
