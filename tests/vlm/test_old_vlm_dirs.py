"""VLM run and sweep directories written before runs recorded their kind (vlab at cf11976,
tests/vlm/fixtures/vlm-cf11976) keep loading, resuming and reporting."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from vlab.cli import main
from vlab.experiment import KIND_FILE, experiment, kind_of, read_kind

OLD = Path(__file__).parent / "fixtures" / "vlm-cf11976"


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def old(tmp_path) -> Path:
    shutil.copytree(OLD, tmp_path / "old")
    return tmp_path / "old"


def test_an_old_vlm_sweep_shows_done_in_its_status_and_its_report(old):
    from vlab.analysis.vlm import load_vlm_sweep
    from vlab.slurm.status import sweep_status
    from vlab.slurm.sweepdir import SweepDir

    run = old / "sweep" / "runs" / "mamba"
    assert read_kind(run) is None and kind_of(run) == "vlm"
    (row,) = sweep_status(SweepDir(old / "sweep"))
    assert (row["state"], row["stage"], row["step"]) == ("done", "eval", 4)
    assert row["benchmarks"] == [
        "shapes/caption",
        "shapes/dense_caption",
        "shapes/grounding",
        "shapes/vqa",
    ]
    sweep = load_vlm_sweep(old / "sweep")
    assert sweep.runs.set_index("name").loc["mamba", "state"] == "done"
    assert set(sweep.scores["run"]) == {"mamba"}


def test_resubmitting_an_old_finished_sweep_trains_nothing(old):
    before = _digest(old / "sweep" / "runs")
    code = main(["sweep", "resume", str(old / "sweep"), "--executor", "local", "--wait"])
    assert code == 0
    assert _digest(old / "sweep" / "runs") == before


def test_an_old_vlab_vlm_train_run_resumes_to_done_by_evaluating_only(old, capsys):
    run = old / "cli" / "run"
    status = experiment("vlm").status(run)
    assert status["state"] == "interrupted" and "held-out evaluation" in status["reason"]
    stages = {s: _digest(run / s) for s in ("stage1", "stage2")}
    argv = ["vlm", "train", "--preset", "tiny-shapes", "--arch", "pythia"]
    argv += ["--config", str(old / "cli" / "config.json"), "--no-progress", "--out", str(run)]
    assert main(argv) == 0
    assert "eval/heldout/results.json" in capsys.readouterr().out
    assert read_kind(run) == "vlm" and (run / KIND_FILE).is_file()
    status = experiment("vlm").status(run)
    assert status["state"] == "done" and status["step"] == 4 and status["benchmarks"]
    for stage, digest in stages.items():  # nothing retrained: checkpoints and metrics as written
        after = _digest(run / stage)
        kept = [k for k in digest if k not in ("status.json", "config.json")]
        assert {k: after[k] for k in kept} == {k: digest[k] for k in kept}
        # config.json completed with the fields vlab added since, at their defaults
        config = json.loads((run / stage / "config.json").read_text())
        old_config = json.loads((OLD / "cli" / "run" / stage / "config.json").read_text())
        assert {k: v for k, v in config.items() if k != "benchmarks"} == old_config
        assert config["benchmarks"] == {
            "suite": None,
            "data_root": None,
            "names": [],
            "limit": None,
        }


def test_an_old_run_opens_for_answering_at_its_last_step(old):
    trained = experiment("vlm").open(old / "sweep" / "runs" / "mamba", device="cpu")
    assert trained.step == 4 and trained.stage == 2 and not trained.model.training
