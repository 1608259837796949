"""The sweep directory: what a submission writes and what ``status`` / ``resume`` / reports read.

::

    SWEEP_DIR/
      sweep.json          name, kind and the expanded runs (name, id, resolved config)
      submissions.jsonl   one line per submission: executor, options, run -> job id, logs
      runs/<name>/        one run directory per run (config.json, metrics.jsonl, status.json)
      locks/<name>.lock   held by the process training that run (host, pid, SLURM job id)
      logs/<name>.log     stdout/stderr of local workers; SLURM logs stay in submitit/
      submitit/<stamp>/   submitit's folder, a fresh one per submission (job ids get reused)

A run is owned by whoever holds its lock: two overlapping submissions never train the same
run at once, and a lock whose process is gone (killed, node lost, job requeued) is stale and
taken over.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from vlab.errors import ConfigError, VlabError
from vlab.fileio import append_jsonl, atomic_write_json, read_json_object, read_jsonl
from vlab.slurm.spec import RESOLVERS, RunSpec, config_id


class SweepDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def spec_path(self) -> Path:
        return self.path / "sweep.json"

    @property
    def submissions_path(self) -> Path:
        return self.path / "submissions.jsonl"

    def run_path(self, name: str) -> Path:
        return self.path / "runs" / name

    def lock_path(self, name: str) -> Path:
        return self.path / "locks" / f"{name}.lock"

    def log_path(self, name: str) -> Path:
        return self.path / "logs" / f"{name}.log"

    def exists(self) -> bool:
        return self.spec_path.is_file()

    def read(self) -> dict:
        if not self.spec_path.is_file():
            raise VlabError(f"{self.path} is not a sweep directory (no sweep.json)")
        return read_json_object(
            self.spec_path,
            "restore it, or submit the spec again into a new --out (finished runs can be "
            "moved into its runs/ folder)",
        )

    def runs(self) -> list[dict]:
        return self.read()["runs"]

    def run(self, name: str) -> dict:
        for r in self.runs():
            if r["name"] == name:
                return r
        raise VlabError(f"{self.path}: no run named {name!r} in sweep.json")

    def write(self, name: str, kind: str, runs: list[RunSpec], source: str) -> None:
        """Create sweep.json, or extend it: a rerun of the same spec is a no-op.

        A run name already present with a different config id is refused: its run directory
        holds results of another config, and silently mixing the two would corrupt the sweep.
        """
        existing = {r["name"]: r for r in self.read()["runs"]} if self.exists() else {}
        changed = [
            r.name for r in runs if r.name in existing and not same_run(existing[r.name], r, kind)
        ]
        if changed:
            raise VlabError(
                f"{self.path} already has runs named {', '.join(changed[:3])} with a different "
                "config; submit the changed spec to a new sweep directory"
            )
        merged = dict(existing)
        for r in runs:
            merged.setdefault(
                r.name, {"name": r.name, "id": r.id, "config": r.config, "overrides": r.overrides}
            )
        old = self.read() if self.exists() else {}
        atomic_write_json(
            self.spec_path,
            {
                "name": old.get("name", name),
                "kind": kind,
                "source": old.get("source", source),
                "created": old.get("created", time.time()),
                "runs": list(merged.values()),
            },
        )

    def drop(self, names: list[str]) -> None:
        """Remove runs from sweep.json (atomically); their folders, if any, are not touched."""
        doc = self.read()
        gone = set(names)
        atomic_write_json(
            self.spec_path, {**doc, "runs": [r for r in doc["runs"] if r["name"] not in gone]}
        )

    def record_submission(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.submissions_path, {"time": time.time(), **record})

    def submissions(self) -> list[dict]:
        return read_jsonl(self.submissions_path)

    def last_job(self, name: str) -> dict | None:
        """The latest submission entry of run ``name``: executor, job id, folder, log."""
        for sub in reversed(self.submissions()):
            if name in sub.get("jobs", {}):
                return {
                    "executor": sub["executor"],
                    "folder": sub.get("folder"),
                    **sub["jobs"][name],
                }
        return None


def same_run(entry: dict, run: RunSpec, kind: str) -> bool:
    """Whether a run recorded in sweep.json is ``run``: the same config id, or the same config
    once today's defaults fill in what an earlier vlab did not write (a setting added since,
    such as ``task.modality``), which is how that run's config is read when it resumes."""
    if entry["id"] == run.id:
        return True
    try:
        return config_id(RESOLVERS[kind](entry["config"])) == run.id
    except (ConfigError, VlabError, KeyError):
        return False
