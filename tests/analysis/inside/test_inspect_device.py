"""``vlab inspect --device/--dtype/--max-memory-gb`` end to end on trained tiny runs with a
Pythia-sized vocabulary: a device the machine lacks is one line with nothing written; the
dtype and device are recorded and the dtype decides what counts as done; a memory cap
chooses small batches that respect the estimate and give the uncapped tables."""

import json
import shutil

import pandas as pd
import pytest
import torch

from vlab.analysis.inside import inspection
from vlab.analysis.inside.budget import GIB, peak_bytes, plan_batch
from vlab.analysis.inside.placement import Placement
from vlab.analysis.inside.runs import open_run, probe_shape
from vlab.cli import main
from vlab.config import from_dict
from vlab.errors import VlabError
from vlab.probes.config import ProbeRunConfig
from vlab.probes.trainer import run_probe

WIDE = {"vocab_size": 50_000, "hidden_size": 16, "num_hidden_layers": 1}
ARMS = {"pythia": {**WIDE, "num_attention_heads": 2}, "mamba": {**WIDE, "intermediate_size": 32}}
EXAMPLES = 8


def train(out, arch):
    cfg = from_dict(
        ProbeRunConfig,
        {
            "task": {"length": 4, "n_heldout": 16},
            "model": {"arch": arch, "overrides": ARMS[arch]},
            "train": {"steps": 10, "eval_every": 10, "threads": 1},
        },
    )
    run_probe(cfg, out, progress=False, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("wide")
    for arch in ARMS:
        train(root / "runs" / arch, arch)
    return root


@pytest.fixture
def fresh(sweep, tmp_path):
    shutil.copytree(sweep, tmp_path / "sweep")
    return tmp_path / "sweep"


def inside_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("inside/**/*") if p.is_file())


def _meta(run, analysis):
    return json.loads(inspection.result_paths(run, 10, analysis)[1].read_text())


def _table(run, analysis):
    return pd.read_csv(inspection.result_paths(run, 10, analysis)[0])


MISSING = f"cuda:{torch.cuda.device_count()}"  # one past this machine's last GPU


@pytest.mark.parametrize(
    "args,message",
    [
        (["--device", MISSING], "--device"),
        (["--device", "tpu"], "--device 'tpu': use auto, cpu or cuda"),
        (["--max-memory-gb", "0.000001"], "--max-memory-gb 1e-06: logit_lens needs about"),
    ],
    ids=["missing-gpu", "not-a-device", "cap-too-small"],
)
def test_a_placement_that_cannot_be_is_one_line_and_nothing_is_written(
    fresh, capsys, args, message
):
    code = main(["inspect", str(fresh), "--analyses", "logit_lens", "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert inside_files(fresh) == []


def test_placement_is_checked_on_construction():
    with pytest.raises(VlabError, match="--dtype 'int8'"):
        Placement(dtype="int8")
    with pytest.raises(VlabError, match="--max-memory-gb must be > 0"):
        Placement(max_memory_gb=0)
    with pytest.raises(VlabError, match="--device 'mps'"):
        Placement(device="mps")
    assert Placement().torch_device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_dtype_is_recorded_and_decides_what_is_done(fresh):
    analyses = ["logit_lens", "attention"]
    half = Placement("cpu", "bfloat16")
    assert inspection.inspect_paths([fresh], analyses, placement=half, progress=False)[:2] == (
        4,
        0,
    )
    run = fresh / "runs" / "mamba"
    assert {k: _meta(run, "attention")[k] for k in ("dtype", "device")} == {
        "dtype": "bfloat16",
        "device": "cpu",
    }
    low = {a: _table(run, a) for a in analyses}
    # a float32 inspection does not take the bfloat16 results for its own
    assert inspection.inspect_paths([fresh], analyses, progress=False)[:2] == (4, 0)
    assert _meta(run, "attention")["dtype"] == "float32"
    for analysis in analyses:  # the model's rounding apart, the same tables
        pd.testing.assert_frame_equal(low[analysis], _table(run, analysis), atol=0.05, rtol=0.1)
    # results written before --dtype existed are float32 ones
    meta = inspection.result_paths(run, 10, "attention")[1]
    meta.write_text(json.dumps({k: v for k, v in _meta(run, "attention").items() if k != "dtype"}))
    assert inspection.inspect_paths([fresh], analyses, progress=False)[:2] == (0, 4)
    assert inspection.inspect_paths([fresh], analyses, placement=half, progress=False)[0] == 4


def test_a_memory_cap_chooses_batches_within_the_estimate_with_the_same_tables(fresh, tmp_path):
    other = tmp_path / "uncapped"
    shutil.copytree(fresh, other)
    analyses = ["logit_lens", "state_probe", "patching"]
    run = fresh / "runs" / "pythia"
    dims, length = probe_shape(open_run(run))
    # the cap at which 3 patched sequences per pass are the most that fit
    cap = peak_bytes(dims, "patching", length, EXAMPLES, 3)
    code = main(["inspect", str(fresh), "--analyses", ",".join(analyses), "--examples",
                 str(EXAMPLES), "--max-memory-gb", repr(cap / GIB), "--no-progress"])  # fmt: skip
    assert code == 0
    inspection.inspect_paths([other], analyses, examples=EXAMPLES, progress=False)
    for arch in ARMS:
        dims, length = probe_shape(open_run(fresh / "runs" / arch))
        for analysis in analyses:
            meta = _meta(fresh / "runs" / arch, analysis)
            batch = meta["batch_size"]
            assert batch == plan_batch(dims, analysis, length, EXAMPLES, cap)
            assert peak_bytes(dims, analysis, length, EXAMPLES, batch) <= cap
            assert meta["device"] == "cpu"
            if arch == "pythia":  # patching splits each example's T = 6 copies over 2 passes
                assert batch == 3 if analysis == "patching" else batch < EXAMPLES
            assert "batch_size" not in _meta(other / "runs" / arch, analysis)
            # recovery divides by LD_clean - LD_corrupted, next to 0 after 10 steps: its
            # inputs, the mean LDs, are compared
            pd.testing.assert_frame_equal(
                _table(fresh / "runs" / arch, analysis).drop(columns="recovery", errors="ignore"),
                _table(other / "runs" / arch, analysis).drop(columns="recovery", errors="ignore"),
                atol=1e-5,
                rtol=1e-4,
            )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_inspection_writes_the_cpu_tables(fresh, tmp_path):
    other = tmp_path / "cpu"
    shutil.copytree(fresh, other)
    analyses = ["logit_lens", "attention", "patching"]
    inspection.inspect_paths([fresh], analyses, placement=Placement("cuda"), progress=False)
    inspection.inspect_paths([other], analyses, placement=Placement("cpu"), progress=False)
    for arch in ARMS:
        for analysis in analyses:
            assert _meta(fresh / "runs" / arch, analysis)["device"].startswith("cuda")
            pd.testing.assert_frame_equal(
                _table(fresh / "runs" / arch, analysis),
                _table(other / "runs" / arch, analysis),
                atol=1e-4,
                rtol=1e-3,
            )


def test_a_slurm_task_checks_its_node_and_runs_with_the_placement_it_was_given(fresh):
    from vlab.analysis.inside.submit import InspectJob

    run = str(fresh / "runs" / "pythia")
    with pytest.raises(VlabError, match="--device"):
        InspectJob()(run, ["logit_lens"], "last", EXAMPLES, Placement(MISSING))
    assert inside_files(fresh) == []
    done = InspectJob()(run, ["logit_lens"], "last", EXAMPLES, Placement("cpu", "bfloat16"))
    assert done == {"run": run, "done": 1, "skipped": 0}
    assert _meta(fresh / "runs" / "pythia", "logit_lens")["dtype"] == "bfloat16"
