"""``vlab inspect --executor slurm`` on a real single-node SLURM cluster: one array task per
run, results in the run directories equal to a local inspection, resubmitting does nothing."""

import pandas as pd
import pytest

from vlab.analysis.inside import inspection
from vlab.cli import main
from vlab.config import from_dict
from vlab.probes.config import ProbeRunConfig
from vlab.probes.trainer import run_probe

pytestmark = pytest.mark.slurm


def train(out, arch):
    cfg = from_dict(
        ProbeRunConfig,
        {
            "task": {"length": 4, "n_heldout": 16},
            "model": {"arch": arch},
            "train": {"steps": 20, "eval_every": 10, "threads": 1},
        },
    )
    run_probe(cfg, out, progress=False, log=lambda *_: None)


def test_inspection_as_a_slurm_array(capsys, tmp_path, slurm_cluster):
    sweep = tmp_path / "sweep"
    for arch in ("pythia", "mamba"):
        train(sweep / "runs" / arch, arch)
    args = ["inspect", str(sweep), "--analyses", "logit_lens,attention", "--no-progress"]
    slurm = ["--executor", "slurm", "--partition", slurm_cluster.partition, "--time-min", "10"]
    assert main([*args, *slurm, "--wait"]) == 0
    out = capsys.readouterr().out
    assert "2 runs as one SLURM job array" in out, out
    local = tmp_path / "local"
    for arch in ("pythia", "mamba"):
        train(local / "runs" / arch, arch)
    inspection.inspect_paths([local], ["logit_lens", "attention"], progress=False)
    for arch in ("pythia", "mamba"):
        for analysis in ("logit_lens", "attention"):
            got = pd.read_csv(inspection.result_paths(sweep / "runs" / arch, 20, analysis)[0])
            want = pd.read_csv(inspection.result_paths(local / "runs" / arch, 20, analysis)[0])
            pd.testing.assert_frame_equal(got, want, atol=1e-5, rtol=1e-4)
    logs = list((sweep / "inside-submitit").rglob("*.out"))
    assert len(logs) == 2
    assert main([*args, *slurm]) == 0  # all done: nothing is submitted
    assert "nothing to submit" in capsys.readouterr().out
