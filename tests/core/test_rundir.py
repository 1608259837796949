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
