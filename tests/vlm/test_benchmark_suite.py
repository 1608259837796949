"""A VLM run is trained and then evaluated on its benchmark suite, one phase per benchmark.

Known answers, on a data root in the paper's layout made here from the reader fixtures (COCO
Karpathy test, VQAv2 val, POPE random; a few examples each, small made-up images): a run with
``benchmarks.suite`` writes ``RUN/eval/<benchmark>/`` for each benchmark asked for, in order;
a run killed inside its second benchmark resumes there (the first benchmark's files keep
their bytes and times, the second's answers so far are kept) and ends with the numbers of an
unkilled run; a stop asked for between benchmarks leaves the rest for resume; ``vlab vlm
eval --data-root`` on a run made without the option writes the same layout; SPICE is skipped
with its reason where its jars are absent; a data root lacking a benchmark the run asks for
is one line naming it, before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli import vlab
from tests.core.test_checks_before_write import TINY_VLM
from vlab.config import from_dict, to_dict
from vlab.errors import ConfigError
from vlab.experiment import experiment
from vlab.fileio import read_jsonl
from vlab.models.vlm.data.sources import load_source
from vlab.models.vlm.metrics.captions import spice_problem
from vlab.rundir import RunDir
from vlab.vlm.config import BenchmarkConfig, VLMRunConfig, stage_config
from vlab.vlm.experiment import evaluate_suite

FX = Path(__file__).parents[1] / "models" / "vlm" / "fixtures" / "vlm"
NAMES = ["coco", "vqav2", "pope_random"]
PLACES = {  # fixture -> place in the paper layout (vlab.models.vlm.data.paper_data)
    "coco_karpathy/dataset_coco.json": "coco/dataset_coco.json",
    "vqav2/v2_OpenEnded_mscoco_train2014_questions.json": (
        "vqav2/v2_OpenEnded_mscoco_val2014_questions.json"
    ),
    "vqav2/v2_mscoco_train2014_annotations.json": "vqav2/v2_mscoco_val2014_annotations.json",
    "pope/coco_pope_random.json": "pope/coco_pope_random.json",
}
TINY = TINY_VLM  # the smallest vlab vlm train run
SUITE = ["--benchmarks", "--set", f"benchmarks.names={json.dumps(NAMES)}"]
# one worker (the data root made once, the METEOR jar started once, about 7 s)
pytestmark = pytest.mark.xdist_group("benchmark_suite")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Three benchmarks of SHAKEUP's suite under a data root, every image they name drawn."""
    root = tmp_path_factory.mktemp("datasets")
    for fixture, place in PLACES.items():
        (root / place).parent.mkdir(parents=True, exist_ok=True)
        (root / place).write_bytes((FX / fixture).read_bytes())
    (root / "coco" / "val2014").mkdir(parents=True)
    rng = np.random.default_rng(0)
    suite = BenchmarkConfig(suite="shakeup", data_root=str(root), names=tuple(NAMES))
    for source in suite.mixture().sources:
        for sample in load_source(source)[0]:
            if not Path(sample.image).exists():
                pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(sample.image)
    return root


def stamps(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: its modification time (ns) and bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_suite_option_is_validated_naming_its_field(monkeypatch, tmp_path):
    monkeypatch.delenv("VLAB_DATA", raising=False)

    def refused(benchmarks: dict, field: str, said: str) -> None:
        with pytest.raises(ConfigError, match=said) as err:
            from_dict(VLMRunConfig, {"benchmarks": benchmarks})
        assert err.value.field == field

    refused({"suite": "bogus"}, "benchmarks.suite", "not one of shakeup, mambavlm")
    refused({"names": ["coco"]}, "benchmarks.names", "set benchmarks.suite")
    refused({"suite": "shakeup"}, "benchmarks.data_root", "or set VLAB_DATA")
    root = str(tmp_path)
    at = {"suite": "shakeup", "data_root": root}
    refused({**at, "limit": 0}, "benchmarks.limit", ">= 1")
    refused({**at, "names": ["cocoo"]}, "benchmarks.names", r"\(coco, nocaps, vqav2, ")
    refused({**at, "suite": "mambavlm", "names": ["coco"]}, "benchmarks.names", "'coco'")
    refused({**at, "names": ["coco", "coco"]}, "benchmarks.names", "named twice")
    # the data root from VLAB_DATA, every benchmark of the suite written out
    monkeypatch.setenv("VLAB_DATA", root)
    cfg = from_dict(VLMRunConfig, {"benchmarks": {"suite": "mambavlm"}}).benchmarks
    assert cfg.data_root == root and cfg.names[:2] == ("vqav2", "gqa") and len(cfg.names) == 13
    assert VLMRunConfig().benchmarks.names == ()  # no suite by default


def test_a_benchmark_the_data_root_lacks_is_one_line_naming_it_before_any_work(
    root, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = [*TINY, "--benchmarks", "--set", 'benchmarks.names=["coco","gqa"]']
    code, _, err = vlab(capsys, *argv, "--set", f"benchmarks.data_root={root}", "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'benchmarks.data_root'" in err and "lacks 1 benchmark(s) the run asks for: gqa (" in err
    assert f"{root}/gqa/testdev_balanced_questions.json" in err and "coco (" not in err
    assert not out.exists()


def test_a_run_scores_each_benchmark_into_its_own_folder_and_resumes_at_the_one_it_was_on(
    root, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("VLAB_DATA", str(root))  # --benchmarks without --data-root reads it
    run = tmp_path / "run"
    code, stdout, _ = vlab(capsys, *TINY, *SUITE, "--out", str(run))
    assert code == 0
    for name in NAMES:
        assert f"results: {run}/eval/{name}/results.json" in stdout
    folders = sorted(p.name for p in (run / "eval").iterdir())
    assert folders == sorted(["heldout", *NAMES])
    first = {}
    for name, key in zip(NAMES, ["coco/caption", "vqav2/vqa", "pope_random/pope"], strict=True):
        where = run / "eval" / name
        results = json.loads((where / "results.json").read_text())
        assert (results["benchmark"], list(results["sources"]), results["step"]) == (name, [key], 2)
        status = RunDir(where).read_status()
        assert (status["state"], status["benchmarks"]) == ("done", [key])
        first[name] = results
    # SPICE where its jars are, else the reason (the jars' folder and how to fill it)
    captions = first["coco"]["captions"]
    if spice_problem() is None:
        assert "SPICE" in captions or "SPICE failed" in captions["unavailable"]["SPICE"]
    else:
        assert captions["unavailable"]["SPICE"] == spice_problem()
    status = experiment("vlm").status(run)
    assert (status["state"], status["stage"]) == ("done", "eval")
    assert status["benchmarks"] == ["shapes/caption", "shapes/vqa", *NAMES]
    # vlab vlm eval with neither --data-root nor --config: the run's own suite, all read back
    before = stamps(run / "eval")
    code, again, _ = vlab(capsys, "vlm", "eval", "--run", str(run), "--no-progress")
    assert code == 0 and stamps(run / "eval") == before
    assert [f"results: {run}/eval/{n}/results.json" for n in NAMES] == [
        x for x in again.splitlines() if x.startswith("results:")
    ]

    # killed inside vqav2: its first answer written, pope_random never started
    vqa = run / "eval" / "vqav2"
    predictions = read_jsonl(vqa / "predictions.jsonl")
    (vqa / "predictions.jsonl").write_text(json.dumps(predictions[0]) + "\n")
    (vqa / "results.json").unlink()
    RunDir(vqa).write_status("running", step=2, benchmarks=[])
    for path in sorted((run / "eval" / "pope_random").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (run / "eval" / "pope_random").rmdir()
    status = experiment("vlm").status(run)
    assert (status["state"], status["stage"]) == ("running", "eval:vqav2")
    assert status["benchmarks"] == ["shapes/caption", "shapes/vqa", "coco"]
    before = stamps(run / "eval" / "coco"), stamps(run / "eval" / "heldout")
    code, stdout, _ = vlab(capsys, *TINY, *SUITE, "--out", str(run))
    assert code == 0 and "already done" in stdout
    assert (stamps(run / "eval" / "coco"), stamps(run / "eval" / "heldout")) == before
    assert read_jsonl(vqa / "predictions.jsonl") == predictions
    for name in ("vqav2", "pope_random"):
        again = json.loads((run / "eval" / name / "results.json").read_text())
        assert again == first[name]
    assert experiment("vlm").status(run)["state"] == "done"

    # a stop asked for between benchmarks (a sweep's SIGTERM) leaves the rest to resume
    pope = run / "eval" / "pope_random"
    (pope / "results.json").unlink()  # a removed results.json: evaluate it again
    cfg = stage_config(RunDir(run / "stage2").read_config())
    done = evaluate_suite(cfg, run, should_stop=lambda: True, log=lambda *_: None)
    assert list(done) == ["coco", "vqav2"] and not (pope / "results.json").exists()
    stopped = experiment("vlm").status(run)
    assert (stopped["state"], stopped["stage"]) == ("interrupted", "eval:pope_random")
    assert "2 of 3 benchmarks done, pope_random not evaluated" in stopped["reason"]
    config = to_dict(cfg)  # as a sweep's worker runs it
    assert experiment("vlm").run(config, run, log=lambda *_: None)["state"] == "done"
    assert json.loads((pope / "results.json").read_text()) == first["pope_random"]


def test_vlm_eval_of_a_run_made_by_hand_writes_the_same_layout(root, tmp_path, capsys):
    run = tmp_path / "run"
    assert vlab(capsys, *TINY, "--out", str(run))[0] == 0
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["heldout"]  # no suite
    code, _, err = vlab(capsys, "vlm", "eval", "--run", str(run))  # so nothing to default to
    assert code == 2 and "was trained without a benchmark suite" in err
    argv = ["vlm", "eval", "--run", str(run), "--data-root", str(root), "--no-progress"]
    code, stdout, _ = vlab(capsys, *argv, "--skip-missing")
    assert code == 0 and "skipping nocaps" in stdout
    assert sorted(p.name for p in (run / "eval").iterdir()) == sorted(["heldout", *NAMES])
    for name in NAMES:
        where = run / "eval" / name
        assert sorted(p.name for p in where.iterdir()) == [
            "data",
            "predictions.jsonl",
            "results.json",
            "status.json",
        ]
        assert json.loads((where / "results.json").read_text())["benchmark"] == name
        assert RunDir(where).is_done()
    # evaluated again: every benchmark is read back, nothing is written
    before = stamps(run / "eval")
    code, again, _ = vlab(capsys, *argv, "--skip-missing")
    assert code == 0 and stamps(run / "eval") == before
    assert [x for x in again.splitlines() if "results:" in x] == [
        x for x in stdout.splitlines() if "results:" in x
    ]
    # asked on other data (a smoke run's --limit): refused, rather than read back as if equal
    code, _, err = vlab(capsys, *argv, "--skip-missing", "--limit", "1")
    assert code == 2 and f"{run}/eval/coco holds coco evaluated on other data" in err
    assert stamps(run / "eval") == before
    code, _, err = vlab(capsys, *argv, "--skip-missing", "--stage", "1")  # the suite is stage 2's
    assert code == 2 and "give --name NAME to evaluate stage 1" in err
    # a source named like the run's own held-out evaluation is refused before any work
    (tmp_path / "b.json").write_text(json.dumps({"sources": [{**_pope(root), "name": "heldout"}]}))
    argv = ["vlm", "eval", "--run", str(run), "--config", str(tmp_path / "b.json")]
    code, _, err = vlab(capsys, *argv)
    assert code == 2 and "cannot be called 'heldout'" in err


def _pope(root: Path) -> dict:
    suite = BenchmarkConfig(suite="shakeup", data_root=str(root), names=("pope_random",))
    source = suite.mixture().sources[0]
    return {"reader": source.reader, "paths": list(source.paths), "image_root": source.image_root}


def test_a_sweep_shows_the_benchmark_a_run_is_on_and_resume_scores_only_the_rest(
    root, tmp_path, capsys
):
    base = {
        "preset": "tiny-shapes",
        "stage1": {"steps": 2, "eval_every": 2, "batch_size": 4, "threads": 1},
        "stage2": {"steps": 2, "eval_every": 2, "batch_size": 4, "threads": 1},
        "data": {"n_heldout": 2},
        "max_new_tokens": 4,
        "benchmarks": {"suite": "shakeup", "data_root": str(root), "names": NAMES},
    }
    spec = {"name": "s", "kind": "vlm", "base": base, "axes": {"model.lm.arch": ["mamba"]}}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    out = tmp_path / "sweep"
    argv = ["sweep", "submit", str(tmp_path / "s.json"), "--out", str(out), "--executor", "debug"]
    assert vlab(capsys, *argv)[0] == 0
    code, stdout, _ = vlab(capsys, "sweep", "status", str(out))
    row = stdout.splitlines()[1].split()
    assert row[:4] == ["mamba", "done", "eval", "2/2"] and row[-1].endswith(",".join(NAMES))
    run = out / "runs" / "mamba"
    before = stamps(run / "eval" / "coco")
    for name in ("vqav2", "pope_random"):  # killed before vqav2 started
        (run / "eval" / name / "results.json").unlink()
        RunDir(run / "eval" / name).write_status("running", step=2, benchmarks=[])
    RunDir(run / "eval" / "vqav2").write_status("failed", "killed", step=2, benchmarks=[])
    code, stdout, _ = vlab(capsys, "sweep", "status", str(out))
    row = stdout.splitlines()[1].split()
    assert row[:4] == ["mamba", "failed", "eval:vqav2", "2/2"] and row[-1].endswith(",coco")
    assert vlab(capsys, "sweep", "resume", str(out))[0] == 0
    code, stdout, _ = vlab(capsys, "sweep", "status", str(out))
    assert stdout.splitlines()[1].split()[:3] == ["mamba", "done", "eval"]
    assert stamps(run / "eval" / "coco") == before
