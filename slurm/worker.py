"""Train one run of a sweep: the function every executor calls, locally or in a SLURM job.

It reads the run's config from ``sweep.json`` (the previous step's file), takes the run's
lock, and trains into ``runs/<name>`` with the kind's trainer, which resumes from the run's
last checkpoint. A finished run returns at once; a run locked by a live process is skipped.

Run as a program (``python -m vlab.slurm.worker SWEEP_DIR NAME``) it is the local executor's
worker process: SIGTERM then stops training cleanly at the next step with a checkpoint.
"""

from __future__ import annotations

import signal
import sys

import submitit

from vlab.errors import VlabError
from vlab.locks import acquire
from vlab.slurm.sweepdir import SweepDir


def run_one(sweep_dir: str, name: str, *, progress: bool = False, should_stop=None) -> dict:
    """Train run ``name`` of the sweep at ``sweep_dir``; returns its final status."""
    sweep = SweepDir(sweep_dir)
    entry = sweep.run(name)
    kind = sweep.read().get("kind", "probe")
    lock = acquire(sweep.lock_path(name))
    if lock is None:
        return {"name": name, "state": "skipped", "reason": "locked by another live process"}
    try:
        if kind != "probe":
            raise VlabError(f"sweep run {name}: unknown kind {kind!r}")
        from vlab.config import from_dict
        from vlab.probes.config import ProbeRunConfig
        from vlab.probes.trainer import run_probe

        cfg = from_dict(ProbeRunConfig, entry["config"])
        run_probe(cfg, sweep.run_path(name), progress=progress, should_stop=should_stop)
    finally:
        lock.release()
    from vlab.rundir import RunDir

    return {"name": name, **(RunDir(sweep.run_path(name)).read_status() or {})}


class SweepJob(submitit.helpers.Checkpointable):
    """The callable submitted to SLURM: one run of a sweep, requeued on preemption.

    On the preemption / timeout signal submitit calls ``checkpoint`` (inherited), which
    resubmits the same call; the requeued job resumes from the run's last on-disk checkpoint
    (saved at every evaluation). A job killed without warning resumes the same way on
    ``vlab sweep resume``.
    """

    def __call__(self, sweep_dir: str, name: str) -> dict:
        return run_one(sweep_dir, name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m vlab.slurm.worker SWEEP_DIR RUN_NAME", file=sys.stderr)
        return 2
    stop = {"requested": False}

    def on_term(signum, frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        status = run_one(argv[0], argv[1], progress=True, should_stop=lambda: stop["requested"])
    except VlabError as e:
        print(f"vlab: error: {e}", file=sys.stderr)
        return 2
    print(f"{argv[1]}: {status.get('state')}: {status.get('reason')}")
    return 0 if status.get("state") in ("done", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
