"""``vlab inspect --executor slurm``: one SLURM array task per run, through submitit.

Each task runs the same planning and units as a local inspection (``inspection.plan`` and
``run_units``), so finished units are skipped and a preempted task, requeued by submitit,
redoes only the unit it was in. Results go into the run directories; submitit's own job files
and logs go into ``inside-submitit/<time>/`` beside them (in the sweep directory, or in the run
directory when one run is inspected).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import submitit

from vlab.analysis.inside.inspection import check_placement, plan, run_units
from vlab.analysis.inside.placement import Placement


class InspectJob(submitit.helpers.Checkpointable):
    """The callable a SLURM task runs: every asked-for unit of one run. On preemption submitit
    calls ``checkpoint`` (inherited) and requeues the same call."""

    def __call__(
        self,
        run: str,
        analyses: list[str] | None,
        checkpoints: str,
        examples: int,
        placement: Placement | None = None,
    ) -> dict:
        placement = placement or Placement()
        placement.check_here()  # this node's devices (--device auto: its GPU when it has one)
        units = plan([Path(run)], analyses, checkpoints, examples)
        check_placement(units, examples, placement)
        done = run_units(units, examples, progress=False, placement=placement)
        return {"run": run, "done": len(done), "skipped": len(units) - len(done)}


def log_folder(paths: Sequence[str | Path]) -> Path:
    """Where submitit's files go: ``inside-submitit/<time>`` under the first path given."""
    return Path(paths[0]).resolve() / "inside-submitit" / time.strftime("%Y%m%d-%H%M%S")


def submit_inspection(
    runs: Sequence[Path],
    analyses: Sequence[str] | None,
    checkpoints: str,
    examples: int,
    options,
    folder: Path,
    placement: Placement | None = None,
) -> list:
    """Submit one array task per run (``options``: :class:`vlab.slurm.executors.SlurmOptions`;
    ``placement``: device, dtype and memory cap, the device checked on each task's node);
    returns the submitit jobs at once, in the order of ``runs``."""
    from vlab.slurm.executors import slurm_executor, submit_array

    executor = slurm_executor(options, str(folder), "vlab-inspect")
    chosen = None if analyses is None else list(analyses)
    calls = [(str(run), chosen, checkpoints, examples, placement) for run in runs]
    return submit_array(executor, InspectJob(), calls)


def wait(jobs: Sequence) -> list[dict]:
    """Block until every job ends; a failed task is a one-line error naming its log."""
    from vlab.errors import VlabError

    results = []
    for job in jobs:
        try:
            results.append(job.result())
        except Exception as e:  # noqa: BLE001 - submitit wraps the task's own exception
            said = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
            raise VlabError(
                f"SLURM job {job.job_id} failed ({said}); log: {job.paths.stdout}"
            ) from None
    return results
