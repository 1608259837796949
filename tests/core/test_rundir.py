"""Run directories: resume only the same config, tolerating fields a later vlab added."""

import json

import pytest

from vlab.errors import VlabError
from vlab.rundir import RunDir

DEFAULTS = {"train": {"lr": 0.002, "parallel": "ddp"}, "task": {"length": 8}}


def test_claim_resumes_a_run_stored_before_a_field_existed(tmp_path):
    run = RunDir(tmp_path / "r")
    old = {"train": {"lr": 0.002}, "task": {"length": 8}}
    assert run.claim(old, DEFAULTS) is False
    run.release()  # a claim holds the run's writer lock until released
    new = {"train": {"lr": 0.002, "parallel": "ddp"}, "task": {"length": 8}}
    assert run.claim(new, DEFAULTS) is False
    run.release()
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == new  # completed
    # a new field set away from its default is a different run
    run2 = RunDir(tmp_path / "r2")
    run2.claim(old, DEFAULTS)
    run2.release()
    with pytest.raises(VlabError, match=r"fields: train\.parallel"):
        run2.claim({"train": {"lr": 0.002, "parallel": "fsdp"}, "task": {"length": 8}}, DEFAULTS)
    # a changed existing field is refused whatever the defaults say
    with pytest.raises(VlabError, match=r"fields: train\.lr"):
        run.claim({"train": {"lr": 0.1, "parallel": "ddp"}, "task": {"length": 8}}, DEFAULTS)
    # without defaults every missing field counts as a difference
    run3 = RunDir(tmp_path / "r3")
    run3.claim(old)
    run3.release()
    with pytest.raises(VlabError, match="parallel"):
        run3.claim(new)


def as_rank(monkeypatch, rank: int, world: int = 2, job: str = "7", restart: str = "0") -> None:
    """This process as rank ``rank`` of a ``world``-process SLURM job's attempt."""
    for name, value in (("RANK", rank), ("WORLD_SIZE", world), ("SLURM_JOB_ID", job)):
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("SLURM_RESTART_COUNT", restart)


def test_a_non_zero_rank_writes_its_own_failure_and_nothing_else(tmp_path, monkeypatch):
    from vlab.rundir import ReadOnlyRunDir

    RunDir(tmp_path).write_status("running", step=3)
    as_rank(monkeypatch, 1)
    seen = ReadOnlyRunDir(tmp_path)
    seen.write_status("done", "finished")
    assert RunDir(tmp_path).read_status()["state"] == "running"
    seen.write_status("failed", "ValueError: a broken image")
    status = RunDir(tmp_path).read_status()
    assert status["state"] == "failed" and status["step"] == 3
    assert status["reason"] == "rank 1 of 2: ValueError: a broken image"


def test_the_first_failure_of_an_attempt_stays_and_a_new_attempt_writes_its_own(
    tmp_path, monkeypatch
):
    from vlab.rundir import ReadOnlyRunDir

    as_rank(monkeypatch, 1)
    ReadOnlyRunDir(tmp_path).write_status("failed", "MemoryError: out of memory")
    as_rank(monkeypatch, 0)  # rank 0 then fails on the connection to rank 1
    RunDir(tmp_path).write_status("failed", "RuntimeError: Connection reset by peer")
    assert RunDir(tmp_path).read_status()["reason"] == "rank 1 of 2: MemoryError: out of memory"
    as_rank(monkeypatch, 0, restart="1")  # the requeued job is a new attempt
    RunDir(tmp_path).write_status("failed", "RuntimeError: Connection reset by peer")
    said = RunDir(tmp_path).read_status()["reason"]
    assert said == "rank 0 of 2: RuntimeError: Connection reset by peer"


def test_one_process_writes_failures_as_before(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    RunDir(tmp_path).write_status("failed", "first")
    RunDir(tmp_path).write_status("failed", "second")
    status = RunDir(tmp_path).read_status()
    assert status["reason"] == "second" and "attempt" not in status
