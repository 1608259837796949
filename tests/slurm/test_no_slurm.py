"""``--executor slurm`` where no SLURM cluster answers: every command that takes it refuses in
one line naming what is missing, exit code 2, before writing anything. No cluster needed."""

import json
import shutil
import time
from pathlib import Path

import pytest

from vlab.cli import main
from vlab.slurm.spec import expand, load_spec
from vlab.slurm.sweepdir import SweepDir

SPEC = {
    "name": "noslurm",
    "base": {
        "task": {"length": 4, "n_heldout": 16},
        "model": {"preset": "tiny"},
        "train": {"steps": 4, "eval_every": 2, "threads": 1},
    },
    "axes": {"task.variant": ["suffix", "prefix"]},
}
FAILING = (  # what a SLURM client says when no controller answers
    "#!/bin/sh\n"
    'echo "$0: error: Unable to contact slurm controller (connect failure)" >&2\n'
    "exit 1\n"
)
SUBMITTED = "#!/bin/sh\necho 'Submitted batch job 1'\n"


def fake_bin(tmp_path: Path, **scripts: str) -> str:
    """A PATH of one folder holding only the given shell scripts (name -> text)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return str(folder)


# (PATH contents, extra environment, what the one line must say)
SITUATIONS = {
    "no-sbatch": ({}, {}, "sbatch not found on PATH"),
    "sbatch-but-no-query-command": ({"sbatch": SUBMITTED}, {}, "neither sinfo nor squeue"),
    "sinfo-fails": (
        {"sbatch": SUBMITTED, "sinfo": FAILING, "squeue": FAILING},
        {},
        "no SLURM controller answering (",
    ),
    "squeue-fails": ({"sbatch": SUBMITTED, "squeue": FAILING}, {}, "Unable to contact slurm"),
    "no-config": (
        {"sbatch": SUBMITTED, "sinfo": SUBMITTED},
        {"SLURM_CONF": "/nonexistent/slurm.conf"},
        "no SLURM configuration (SLURM_CONF=/nonexistent/slurm.conf is not a file)",
    ),
}


@pytest.fixture(params=list(SITUATIONS))
def no_slurm(request, tmp_path, monkeypatch) -> str:
    """PATH (and SLURM_CONF) of a machine without a reachable cluster; returns the expected
    part of the error line."""
    scripts, env, says = SITUATIONS[request.param]
    monkeypatch.setenv("PATH", fake_bin(tmp_path, **scripts))
    monkeypatch.delenv("SLURM_CONF", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return says


def snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


def refused(capsys, argv: list[str], says: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("vlab: error: --executor slurm: ") and says in lines[0], lines[0]
    assert "Traceback" not in captured.out + captured.err


def spec_file(tmp_path: Path) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return str(path)


def test_sweep_submit_writes_nothing(tmp_path, capsys, no_slurm):
    out = tmp_path / "sw"
    argv = ["sweep", "submit", spec_file(tmp_path), "--executor", "slurm", "--out", str(out)]
    refused(capsys, argv, no_slurm)
    assert not out.exists()


@pytest.mark.parametrize("explicit", [True, False])
def test_sweep_resume_writes_nothing(tmp_path, capsys, no_slurm, explicit):
    sweep = SweepDir(tmp_path / "sw")
    sweep.write("noslurm", "probe", expand(load_spec(spec_file(tmp_path))), "spec.json")
    # a previous SLURM submission: resume without --executor reuses it
    sweep.record_submission({"executor": "slurm", "runs": [], "options": {}, "jobs": {}})
    before = snapshot(sweep.path)
    argv = ["sweep", "resume", str(sweep.path)] + (["--executor", "slurm"] * explicit)
    refused(capsys, argv, no_slurm)
    assert snapshot(sweep.path) == before


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from vlab.config import from_dict
    from vlab.probes.config import ProbeRunConfig
    from vlab.probes.trainer import run_probe

    out = tmp_path_factory.mktemp("inspect") / "run"
    run_probe(from_dict(ProbeRunConfig, SPEC["base"]), out, progress=False, log=lambda *_: None)
    return out


def test_inspect_writes_nothing(trained_run, capsys, no_slurm):
    before = snapshot(trained_run)
    argv = ["inspect", str(trained_run), "--analyses", "logit_lens", "--no-progress"]
    refused(capsys, [*argv, "--executor", "slurm"], no_slurm)
    assert snapshot(trained_run) == before
    assert not (trained_run / "inside").exists()


def test_the_real_client_without_a_cluster_is_refused_quickly(tmp_path, capsys, monkeypatch):
    """With the machine's own SLURM client (where installed): a missing SLURM_CONF is named
    at once, without waiting for the client's minute of retries."""
    if shutil.which("sbatch") is None:
        pytest.skip("no SLURM client installed here")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "missing.conf"))
    out = tmp_path / "sw"
    start = time.monotonic()
    argv = ["sweep", "submit", spec_file(tmp_path), "--executor", "slurm", "--out", str(out)]
    refused(capsys, argv, f"SLURM_CONF={tmp_path / 'missing.conf'} is not a file")
    assert time.monotonic() - start < 10 and not out.exists()
