"""Asking for several processes per run: what each run kind and executor can use is checked in
one line before anything is written or submitted. No cluster needed: these refusals come
before the cluster is asked."""

import json

import pytest

from tests.cli import vlab
from tests.slurm.test_vlm_sweeps import FAST
from vlab.errors import ConfigError
from vlab.slurm.options import SlurmOptions

PROBE = {
    "name": "p",
    "base": {"task": {"length": 4}, "model": {"preset": "tiny"}, "train": {"steps": 4}},
    "axes": {"model.arch": ["pythia"]},
}
VLM = {
    "name": "v",
    "kind": "vlm",
    "base": {"preset": "tiny-shapes", **FAST},
    "axes": {"model.lm.arch": ["pythia"]},
}


def spec_file(tmp_path, spec: dict) -> str:
    path = tmp_path / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def refused(capsys, tmp_path, spec: dict, *flags: str) -> str:
    """Submit with ``flags``; assert the one-line refusal and that nothing was written."""
    out = tmp_path / "sw"
    code, _, err = vlab(
        capsys, "sweep", "submit", spec_file(tmp_path, spec), "--out", str(out), *flags
    )
    assert code == 2 and not out.exists()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_the_local_executor_refuses_flags_for_several_processes(capsys, tmp_path):
    said = refused(capsys, tmp_path, VLM, "--executor", "local", "--gpus-per-node", "2")
    assert "--gpus-per-node needs --executor slurm" in said


def test_a_probe_run_is_refused_more_than_one_process(capsys, tmp_path):
    said = refused(capsys, tmp_path, PROBE, "--executor", "slurm", "--tasks-per-node", "2")
    assert "probe runs train in one process each" in said


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused_by_field(capsys, tmp_path):
    spec = {**VLM, "base": {**VLM["base"], "stage2": {**FAST["stage2"], "batch_size": 6}}}
    said = refused(
        capsys, tmp_path, spec, "--executor", "slurm", "--nodes", "2", "--tasks-per-node", "2"
    )
    assert "stage2.batch_size" in said and "6 does not split into 4 ranks" in said


def test_processes_and_gpus_must_pair_up(capsys, tmp_path):
    flags = ("--executor", "slurm", "--gpus-per-node", "2", "--tasks-per-node", "3")
    said = refused(capsys, tmp_path, VLM, *flags)
    assert "tasks_per_node" in said and "one process per GPU" in said


def test_a_spec_s_own_slurm_resources_are_checked_by_name(capsys, tmp_path):
    spec = {**VLM, "slurm": {"gpus_per_node": 0}}
    said = refused(capsys, tmp_path, spec, "--executor", "slurm")
    assert "slurm.gpus_per_node" in said


def test_a_spec_s_ranks_are_checked_against_its_runs(capsys, tmp_path):
    spec = {**PROBE, "slurm": {"gpus_per_node": 2}}
    said = refused(capsys, tmp_path, spec, "--executor", "slurm")
    assert "probe runs train in one process each" in said


def test_vlab_inspect_refuses_several_processes_per_job(capsys, tmp_path):
    code, _, err = vlab(capsys, "inspect", str(tmp_path), "--executor", "local", "--nodes", "2")
    assert code == 2 and "--nodes needs --executor slurm" in err


@pytest.mark.parametrize(
    "options, ranks, gpus",
    [
        ({}, 1, 0),
        ({"gpus_per_task": 1}, 1, 1),  # the one-process form sweeps recorded before
        ({"gpus_per_node": 4}, 4, 4),  # one process per GPU
        ({"nodes": 2, "gpus_per_node": 4}, 8, 4),
        ({"tasks_per_node": 2}, 2, 0),  # CPU ranks (gloo)
    ],
)
def test_ranks_and_gpus_follow_from_the_options(options, ranks, gpus):
    opts = SlurmOptions(**options)
    assert (opts.ranks, opts.gpus) == (ranks, gpus)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"nodes": 0}, "nodes"),
        ({"gpus_per_node": 2, "gpus_per_task": 1}, "gpus_per_task"),
        ({"tasks_per_node": 2, "gpus_per_task": 1}, "gpus_per_task"),
        ({"tasks_per_node": 0}, "tasks_per_node"),
    ],
)
def test_options_that_cannot_be_met_name_their_field(options, field):
    with pytest.raises(ConfigError, match=field):
        SlurmOptions(**options)
