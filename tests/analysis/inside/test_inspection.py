"""``vlab inspect``: results land in the run directories, finished work is skipped, a killed
unit is redone, and bad input is one line with nothing written."""

import json
import shutil

import pandas as pd
import pytest

from vlab.analysis.inside import inspection
from vlab.analysis.inside.logit_lens import logit_lens_table
from vlab.analysis.inside.runs import available_steps, load_model, open_run
from vlab.cli import main
from vlab.config import from_dict
from vlab.models.backbones import BackboneConfig, build_backbone
from vlab.probes.config import ProbeRunConfig
from vlab.probes.examples import heldout_examples
from vlab.probes.trainer import run_probe


def train(out, arch, **model):
    cfg = from_dict(
        ProbeRunConfig,
        {
            "task": {"length": 4, "n_heldout": 32},
            "model": {"arch": arch, **model},
            "train": {"steps": 30, "eval_every": 10, "threads": 1, "keep_checkpoints": 3},
        },
    )
    run_probe(cfg, out, progress=False, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for arch in ("pythia", "mamba"):
        train(root / "runs" / arch, arch)
    return root


@pytest.fixture
def fresh(sweep, tmp_path):
    """A copy of the trained sweep, without results."""
    shutil.copytree(sweep, tmp_path / "sweep")
    return tmp_path / "sweep"


def inside_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("inside/**/*") if p.is_file())


def test_results_go_into_each_run_at_each_step_and_equal_the_analysis(fresh):
    code = main(["inspect", str(fresh), "--analyses", "logit_lens", "--checkpoints", "all",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    for arch in ("pythia", "mamba"):
        run = open_run(fresh / "runs" / arch)
        steps = available_steps(run)
        assert steps[0] == 0 and steps[-1] == 30 and len(steps) >= 3
        for step in steps:
            table, meta = inspection.result_paths(run.path, step, "logit_lens")
            got = pd.read_csv(table)
            assert set(got["step"]) == {step}
            assert json.loads(meta.read_text())["examples"] == inspection.DEFAULT_EXAMPLES
        # the file holds what the analysis computes on the model loaded at that step
        model, vocab = load_model(run, 30)
        want = logit_lens_table(model, heldout_examples(run.config.task, vocab, 256))
        got = pd.read_csv(inspection.result_paths(run.path, 30, "logit_lens")[0])
        pd.testing.assert_frame_equal(got.drop(columns="step"), want, check_dtype=False)
    assert {p.split("/")[0] for p in inside_files(fresh)} == {"runs"}


def test_a_rerun_skips_finished_work_and_redoes_a_killed_unit(fresh):
    args = [str(fresh), "--analyses", "logit_lens", "--no-progress"]
    done, skipped, _ = inspection.inspect_paths([fresh], ["logit_lens"], progress=False)
    assert (done, skipped) == (2, 0)
    before = {p: (fresh / p).stat().st_mtime_ns for p in inside_files(fresh)}
    assert inspection.inspect_paths([fresh], ["logit_lens"], progress=False)[:2] == (0, 2)
    assert main(["inspect", *args]) == 0
    assert {p: (fresh / p).stat().st_mtime_ns for p in inside_files(fresh)} == before
    # killed between the table and its done marker: that unit alone is redone
    table, meta = inspection.result_paths(fresh / "runs" / "mamba", 30, "logit_lens")
    meta.unlink()
    table.write_text("half a tab")
    assert inspection.inspect_paths([fresh], ["logit_lens"], progress=False)[:2] == (1, 1)
    assert pd.read_csv(table)["step"].eq(30).all()
    # other settings are other work
    assert inspection.inspect_paths([fresh], ["logit_lens"], examples=16, progress=False)[0] == 2


def test_parallel_workers_write_what_one_process_writes(fresh, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(fresh, other)
    inspection.inspect_paths([fresh], ["attention"], progress=False)
    inspection.inspect_paths([other], ["attention"], workers=2, progress=False)
    for arch in ("pythia", "mamba"):
        one = pd.read_csv(inspection.result_paths(fresh / "runs" / arch, 30, "attention")[0])
        two = pd.read_csv(inspection.result_paths(other / "runs" / arch, 30, "attention")[0])
        pd.testing.assert_frame_equal(one, two, atol=1e-6, rtol=1e-5)


def _edit_config(run, **train):
    path = run / "config.json"
    config = json.loads(path.read_text())
    config["train"].update(train)
    path.write_text(json.dumps(config))


def _no_checkpoints(run):
    shutil.rmtree(run / "checkpoints")


@pytest.mark.parametrize(
    "args,damage,message",
    [
        (["--analyses", "logit_lens,lenses"], None, "unknown analysis 'lenses'"),
        (["--checkpoints", "12345"], None, "no checkpoint at step 12345"),
        (["--checkpoints", "ten"], None, "give last, all or steps"),
        (["--examples", "1"], None, "--examples must be >= 2"),
        ([], lambda run: _edit_config(run, lr=0.5), "differs from the config its checkpoint"),
    ],
    ids=["analysis", "step", "step-syntax", "examples", "config-mismatch"],
)
def test_bad_input_is_one_line_and_nothing_is_written(fresh, capsys, args, damage, message):
    if damage is not None:
        damage(fresh / "runs" / "mamba")
    code = main(["inspect", str(fresh), "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert inside_files(fresh) == []


def test_only_inspects_the_runs_whose_names_match(fresh, capsys):
    code = main(["inspect", str(fresh), "--analyses", "logit_lens", "--only", "mam*",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    assert {p.split("/")[1] for p in inside_files(fresh)} == {"mamba"}
    code = main(["inspect", str(fresh), "--only", "rwkv*", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--only rwkv* matches none of the 2 runs" in err
    assert len(err.splitlines()) == 1


def test_a_folder_without_runs_is_refused(tmp_path, capsys):
    assert main(["inspect", str(tmp_path), "--no-progress"]) == 2
    assert "no run directories" in capsys.readouterr().err


def test_a_run_trained_from_a_local_pretrained_checkpoint(tmp_path):
    base = build_backbone(BackboneConfig(arch="pythia"), seed=5)
    base.save_pretrained(tmp_path / "base")
    run = train(tmp_path / "run", "pythia", pretrained=str(tmp_path / "base"))
    done, _, _ = inspection.inspect_paths([run], ["logit_lens"], progress=False)
    assert done == 1
    table = pd.read_csv(inspection.result_paths(run, 30, "logit_lens")[0])
    assert sorted(table["layer"].unique()) == [-1, 0, 1]


def test_a_run_without_checkpoints_is_an_error_alone_and_left_out_of_a_sweep(fresh, capsys):
    _no_checkpoints(fresh / "runs" / "mamba")
    code = main(["inspect", str(fresh / "runs" / "mamba"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no checkpoints to inspect" in err and len(err.splitlines()) == 1
    assert inside_files(fresh) == []
    # a sweep still training: the others are inspected, the unstarted run is named
    assert main(["inspect", str(fresh), "--analyses", "logit_lens", "--no-progress"]) == 0
    assert "runs/mamba: no checkpoints yet; left out" in capsys.readouterr().err
    assert {p.split("/")[1] for p in inside_files(fresh)} == {"pythia"}
    _no_checkpoints(fresh / "runs" / "pythia")
    assert main(["inspect", str(fresh), "--no-progress"]) == 2
    assert "none of the 2 runs has a checkpoint" in capsys.readouterr().err
