"""Per-run state of a sweep, from the run directories, the locks and the scheduler.

States: ``pending`` (not started, or queued), ``running`` (a live process holds the lock, or
the scheduler runs its job), ``done``, ``failed`` (with the reason and the log to read),
``interrupted`` (stopped or killed before the end: ``vlab sweep resume`` continues it).

A run's state is what its experiment reads from its files
(:meth:`vlab.experiment.Experiment.status`): a probe run's status.json; a VLM run's current
phase (stage 1, stage 2, the held-out evaluation), done only when all three are; a finetune's
training or evaluation. For runs in phases the table shows the phase and, once evaluated, the
benchmarks.
"""

from __future__ import annotations

from pathlib import Path

from vlab.config import setting
from vlab.errors import VlabError
from vlab.experiment import experiment
from vlab.locks import lock_holder
from vlab.scheduler import job_states
from vlab.slurm.sweepdir import SweepDir

QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING", "SUSPENDED"}
RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}


def run_status(kind: str, path: Path, config: dict) -> dict:
    """What a run's files say of it (``{}`` before it started), for a run of ``kind``: its
    experiment's :meth:`~vlab.experiment.Experiment.status`."""
    return experiment(kind).status(path, config)


def sweep_status(sweep: SweepDir) -> list[dict]:
    """One dict per run: name, state, step, steps, accuracy, threshold_step, job, reason, log;
    VLM runs also ``stage`` (stage1, stage2, eval) and ``benchmarks`` (the evaluated ones)."""
    spec = sweep.read()
    kind = spec.kind
    runs = spec.runs
    last = sweep.last_jobs()
    jobs = {r.name: last.get(r.name) for r in runs}
    slurm_ids = [j["job_id"] for j in jobs.values() if j and j.get("executor") == "slurm"]
    scheduler = job_states(slurm_ids)
    rows = []
    for r in runs:
        name = r.name
        try:
            status = run_status(kind, sweep.run_path(name), r.config)
            unreadable = None
        except VlabError as e:  # one corrupt status.json must not hide the other runs
            status, unreadable = {}, str(e)
        job = jobs[name] or {}
        sched = scheduler.get(job.get("job_id") or "", "")
        holder = lock_holder(sweep.lock_path(name))
        file_state = status.get("state")
        if file_state == "done":
            state = "done"
        elif holder is not None or sched in RUNNING:
            state = "running"
        elif sched in QUEUED:
            state = "pending"
        elif file_state == "failed":
            state = "failed"
        elif file_state in ("running", "interrupted"):
            state = "interrupted"
        elif sched and sched not in QUEUED | RUNNING:
            state = "failed"  # the job ended without ever writing a status
        else:
            state = "pending"
        reason = status.get("reason")
        if state == "failed" and not reason:
            reason = f"job ended as {sched}" if sched else "no status written"
        if state == "interrupted" and file_state == "running":
            reason = "process gone without finishing (killed or preempted); resume continues it"
        if unreadable and state != "running":
            state, reason = "unknown", unreadable
        rows.append(
            {
                "name": name,
                "state": state,
                "step": status.get("step"),
                "steps": status.get("steps", setting(r.config, "train.steps")),
                "accuracy": status.get("accuracy"),
                "threshold_step": status.get("threshold_step"),
                "job_id": job.get("job_id"),
                "scheduler": sched or None,
                "reason": reason,
                "log": job.get("log")
                or (str(sweep.log_path(name)) if sweep.log_path(name).exists() else None),
            }
        )
        if experiment(kind).phased:
            rows[-1]["stage"] = status.get("stage")
            rows[-1]["benchmarks"] = status.get("benchmarks") or []
    return rows


def unfinished(rows: list[dict]) -> list[str]:
    """Runs that ``resume`` should (re)submit: not done, not running, not queued."""
    return [
        r["name"]
        for r in rows
        if r["state"] in ("failed", "interrupted")
        or (r["state"] == "pending" and not r["scheduler"])
    ]


def format_table(rows: list[dict]) -> str:
    """A plain-text table for the terminal, followed by failure reasons and log paths."""
    vlm = any("stage" in r for r in rows)
    header = ["run", "state", *(["stage"] if vlm else []), "step", "accuracy", "thr_step", "job"]
    if vlm:
        header.append("benchmarks")
    lines = []
    for r in rows:
        step = f"{r['step']}/{r['steps']}" if r["step"] is not None else f"-/{r['steps']}"
        acc = f"{r['accuracy']:.3f}" if isinstance(r["accuracy"], (int, float)) else "-"
        thr = str(r["threshold_step"]) if r["threshold_step"] is not None else "-"
        job = str(r["job_id"] or "-") + (f" ({r['scheduler']})" if r["scheduler"] else "")
        if vlm:
            bench = ",".join(r.get("benchmarks") or []) or "-"
            lines.append([r["name"], r["state"], r.get("stage") or "-", step, acc, thr, job, bench])
        else:
            lines.append([r["name"], r["state"], step, acc, thr, job])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=False)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out += [
        "  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    out.append("")
    out.append("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for r in rows:
        if r["state"] in ("failed", "interrupted", "unknown"):
            out.append(
                f"{r['name']}: {r['state']}: {r['reason']}"
                + (f" (log: {r['log']})" if r["log"] else "")
            )
    return "\n".join(out)
