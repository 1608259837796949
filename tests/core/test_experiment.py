"""Every run kind has one experiment, found through one registry; a run directory records its
kind when it is claimed, and directories written before that are still told apart."""

import json
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from vlab.cli import main
from vlab.errors import VlabError
from vlab.experiment import (
    KIND_FILE,
    KINDS,
    Experiment,
    experiment,
    kind_of,
    legacy_kind,
    read_kind,
    record_kind,
    stage_of,
)
from vlab.records import DamagedFile

REPO = Path(__file__).resolve().parents[2]
OLD_SWEEP = REPO / "tests" / "slurm" / "fixtures" / "sweep-2c5bbbe"
FAST_PROBE = [
    "--arch",
    "pythia",
    "--preset",
    "tiny",
    "--length",
    "4",
    "--steps",
    "4",
    "--set",
    "train.eval_every=2",
    "--set",
    "task.n_heldout=8",
    "--set",
    "train.threads=1",
    "--no-progress",
]


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_is_a_complete_experiment(kind):
    from vlab.analysis.inside.inspection import ANALYSES

    exp = experiment(kind)
    assert isinstance(exp, Experiment) and exp.kind == kind
    config = exp.config_class()
    assert config.__dataclass_fields__  # a dataclass config, validated on construction
    head = exp.arch_key.split(".")[0]
    assert head in config.__dataclass_fields__
    assert set(exp.analyses) <= set(ANALYSES)
    notebooks = resources.files("vlab.notebooks")
    assert notebooks.joinpath(f"{exp.report_template}.ipynb").is_file()
    for method in ("resolve", "run", "status", "build", "open"):
        assert getattr(type(exp), method) is not getattr(Experiment, method), method


def test_an_unknown_kind_is_one_line_naming_the_known_ones():
    with pytest.raises(VlabError, match="unknown run kind 'nope'.*probe.*vlm"):
        experiment("nope")


def test_the_registry_and_every_experiment_and_config_load_without_torch():
    code = (
        "import sys\n"
        "from vlab.experiment import KINDS, experiment\n"
        "for kind in KINDS:\n"
        "    exp = experiment(kind)\n"
        "    exp.config_class()\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr[-2000:]


def test_record_kind_writes_once_and_refuses_another_kind(tmp_path):
    run = tmp_path / "run"
    record_kind(run, "probe")
    assert json.loads((run / KIND_FILE).read_text()) == {"kind": "probe"}
    record_kind(run, "probe")  # the same kind again: nothing changes
    with pytest.raises(VlabError, match="holds a probe run.*another output directory"):
        record_kind(run, "vlm")
    assert read_kind(run) == kind_of(run) == "probe"


def test_a_damaged_run_json_is_named_not_guessed_around(tmp_path):
    (tmp_path / KIND_FILE).write_text('{"kind": "teleport"}')
    with pytest.raises(DamagedFile, match="run.json.*kind"):
        kind_of(tmp_path)
    (tmp_path / KIND_FILE).write_text('["probe"]')
    with pytest.raises(DamagedFile, match="run.json"):
        kind_of(tmp_path)


def test_directories_written_before_run_json_are_told_apart_by_their_files(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "config.json").write_text(json.dumps({"model": {}, "task": {"modality": "tokens"}}))
    image = tmp_path / "image"
    image.mkdir()
    (image / "config.json").write_text(json.dumps({"model": {}, "task": {"modality": "image"}}))
    finetune = tmp_path / "finetune"
    finetune.mkdir()
    (finetune / "config.json").write_text(json.dumps({"source": "/r", "resolution": 64}))
    vlm = tmp_path / "vlm"
    (vlm / "stage1").mkdir(parents=True)
    (vlm / "stage1" / "config.json").write_text(
        json.dumps({"stage1": {}, "stage2": {}, "stage": 1})
    )
    assert [legacy_kind(p) for p in (probe, image, finetune, vlm)] == [
        "probe",
        "image-probe",
        "vlm-finetune",
        "vlm",
    ]
    assert legacy_kind(vlm / "stage1") is None and stage_of(vlm / "stage1") == 1
    assert legacy_kind(tmp_path / "nothing") is None and stage_of(probe) is None
    for run in OLD_SWEEP.glob("runs/*"):  # written by vlab at 2c5bbbe, before run.json
        assert kind_of(run) == "probe"


def test_a_probe_run_records_its_kind_and_a_resumed_old_run_gains_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["probe", "run", *FAST_PROBE, "--out", str(out)]) == 0
    assert json.loads((out / KIND_FILE).read_text()) == {"kind": "probe"}
    assert experiment("probe").status(out)["state"] == "done"
    old = tmp_path / "old"
    shutil.copytree(next(OLD_SWEEP.glob("runs/*")), old)
    assert not (old / KIND_FILE).exists()
    from vlab.rundir import RunDir

    files = RunDir(old)
    files.claim(files.read_config(), kind="probe")
    files.release()
    assert read_kind(old) == "probe"


def test_a_run_dir_of_another_kind_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    record_kind(out, "vlm-finetune")
    assert main(["probe", "run", *FAST_PROBE, "--out", str(out)]) == 2
    assert "holds a vlm-finetune run" in capsys.readouterr().err
    assert not (out / "config.json").exists() and not (out / "status.json").exists()
    assert read_kind(out) == "vlm-finetune"


def test_a_probe_run_opens_at_a_step_with_the_weights_training_saved(tmp_path):
    import torch

    out = tmp_path / "run"
    assert main(["probe", "run", *FAST_PROBE, "--out", str(out)]) == 0
    probe = experiment("probe").open(out, 4)
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    mine = probe.model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in saved.items())
    assert not probe.model.training
    with pytest.raises(VlabError, match="no checkpoint at step 3"):
        experiment("probe").open(out, 3)
