"""A sweep directory written before a setting existed takes a resubmission of the same spec."""

import json

import pytest

from vlab.errors import VlabError
from vlab.slurm.spec import SweepSpec, config_id, expand
from vlab.slurm.sweepdir import SweepDir

SPEC = SweepSpec(name="s", base={"train": {"steps": 10}}, axes={"model.arch": ["pythia", "mamba"]})


def test_runs_recorded_without_a_later_default_are_the_same_runs(tmp_path):
    runs = expand(SPEC)
    sweep = SweepDir(tmp_path / "sw")
    sweep.write("s", "probe", runs, "spec")
    # what an earlier vlab wrote: no task.modality and no image section, so another id
    doc = json.loads(sweep.spec_path.read_text())
    for entry in doc["runs"]:
        del entry["config"]["task"]["modality"], entry["config"]["image"]
        entry["id"] = config_id(entry["config"])
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps(doc))
    assert {e.id for e in sweep.runs()}.isdisjoint({r.id for r in runs})

    sweep.write("s", "probe", runs, "spec")  # not refused: the same runs
    assert [e.id for e in sweep.runs()] == [e["id"] for e in doc["runs"]]

    changed = expand(SweepSpec(name="s", base={"train": {"steps": 11}}, axes=SPEC.axes))
    with pytest.raises(VlabError, match="different config"):
        sweep.write("s", "probe", changed, "spec")
