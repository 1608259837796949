"""Every check before the first write (#25): a command refused for its arguments exits 2 with
one line ``vlab: error: ...`` naming the problem, no traceback, and leaves the disk as it was
(no ``--out`` directory, an existing run byte for byte); the corrected command then runs into
the same ``--out``. Every case goes through the real ``vlab`` command line in this process."""

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlab.cli import main

TINY_PROBE = [
    "probe", "run", "--arch", "pythia", "--length", "4", "--steps", "10", "--no-progress",
    "--set", "train.eval_every=5", "--set", "train.threads=1", "--set", "task.n_heldout=16",
]  # fmt: skip
TINY_VLM = [
    "vlm", "train", "--arch", "pythia", "--no-progress",
    "--set", "stage1.steps=2", "--set", "stage1.eval_every=2", "--set", "stage1.batch_size=4",
    "--set", "stage2.steps=2", "--set", "stage2.eval_every=2", "--set", "stage2.batch_size=4",
    "--set", "stage1.threads=1", "--set", "stage2.threads=1",
    "--set", "data.n_heldout=2", "--set", "max_new_tokens=4",
]  # fmt: skip
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def vlab(capsys, argv) -> tuple[int, str]:
    """``vlab ARGV`` in this process: (exit status, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def refused(code: int, err: str, *expected: str) -> None:
    said = err.strip()
    assert code == 2, said
    assert len(said.splitlines()) == 1 and said.startswith("vlab: error: "), said
    assert "Traceback" not in said, said
    for text in expected:
        assert text in said, said


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def weightless(tmp_path) -> Path:
    """A checkpoint folder with a config.json and no weights."""
    path = tmp_path / "inputs" / "weightless"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "vocab_size": 256}))
    return path


PROBE_CASES = {
    "override-nan": (["--set", "model.overrides.layer_norm_eps=NaN"], "layer_norm_eps"),
    "override-infinite": (["--set", "model.overrides.rotary_emb_base=Infinity"], "finite"),
    "override-negative-size": (["--set", "model.overrides.hidden_size=-4"], "hidden_size"),
    "override-zero-layers": (["--set", "model.overrides.num_hidden_layers=0"], "num_hidden"),
    "override-heads-do-not-divide": (
        ["--set", "model.overrides.num_attention_heads=5"],
        "model.overrides",
    ),
    "pool-huge": (["--set", "task.pool_size=100000000"], "task.pool_size"),
    "length-huge": (
        ["--length", "100000", "--target-mode", "position", "--set", "task.n_heldout=3200000"],
        "'task.length'",
    ),
    "threads-huge": (["--threads", "100000"], "train.threads"),
    "model-beyond-memory": (  # 34 billion parameters: 514 GiB to train, beyond any test machine
        [
            "--set",
            "model.overrides.hidden_size=32768",
            "--set",
            "model.overrides.num_hidden_layers=8",
        ],
        "34,479,605,248 parameters",
    ),
    "pretrained-without-weights": (["--pretrained", "WEIGHTLESS"], "no weights"),
    "value-and-section": (["--set", "task.seed=1", "--set", "task.seed.x=2"], "'task.seed'"),
    # torch seeds take 64 bits: 10**23 failed in torch.manual_seed after config.json was written
    "seed-beyond-64-bits": (["--seed", str(10**23)], "'train.seed'"),
    "init-seed-beyond-64-bits": (["--set", f"model.init_seed={2**64}"], "'model.init_seed'"),
    "overrides-a-list": (["--set", "model.overrides=[1]"], "'model.overrides'"),
    "set-a-5000-digit-number": (["--set", "train.steps=1" + "0" * 5000], "--set train.steps"),
}


@pytest.mark.parametrize("case", sorted(PROBE_CASES))
def test_probe_refuses_before_writing(tmp_path, capsys, weightless, case):
    extra, expected = PROBE_CASES[case]
    extra = [weightless if a == "WEIGHTLESS" else a for a in extra]
    before = snapshot(tmp_path)
    refused(*vlab(capsys, [*TINY_PROBE, *extra, "--out", tmp_path / "out"]), expected)
    assert snapshot(tmp_path) == before


@NO_GPU
@pytest.mark.parametrize("flags", [["--device", "cuda"], ["--set", "train.device=cuda:1"]])
def test_probe_on_a_missing_gpu_writes_nothing_and_the_cpu_retry_runs(tmp_path, capsys, flags):
    out = tmp_path / "out"
    refused(*vlab(capsys, [*TINY_PROBE, *flags, "--out", out]), "train.device", "no CUDA")
    assert not out.exists()
    assert vlab(capsys, [*TINY_PROBE, "--device", "cpu", "--out", out])[0] == 0
    assert json.loads((out / "status.json").read_text())["state"] == "done"


def test_probe_bad_override_then_the_corrected_command_runs_into_the_same_out(tmp_path, capsys):
    out = tmp_path / "out"
    bad = [*TINY_PROBE, "--set", "model.overrides.layer_norm_eps=NaN", "--out", out]
    refused(*vlab(capsys, bad), "model.overrides.layer_norm_eps", "finite")
    assert not out.exists()
    assert vlab(capsys, [*TINY_PROBE, "--out", out])[0] == 0
    done = snapshot(out)
    # on the finished run, a bad command changes nothing either
    refused(*vlab(capsys, [*TINY_PROBE, "--set", "task.pool_size=100000000", "--out", out]))
    assert snapshot(out) == done


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_an_output_path_that_is_or_goes_through_a_file_is_one_line(tmp_path, capsys, where):
    (tmp_path / "f").write_text("keep")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "run"
    refused(*vlab(capsys, [*TINY_PROBE, "--out", out]), "--out", "is a file")
    assert snapshot(tmp_path) == {"f": b"keep"}


CONFIG_FILES = {  # --config FILE contents the JSON reader or the field checks once let through
    "nested-too-deeply": ('{"a":' * 100_000 + "1" + "}" * 100_000, "--config"),
    "a-5000-digit-number": ('{"train": {"steps": 1' + "0" * 5000 + "}}", "--config"),
    "overrides-a-list": ('{"model": {"overrides": [1]}}', "'model.overrides'"),
    "vision-a-list": ('{"image": {"vision": ["patch"]}}', "'image.vision'"),
    "seed-beyond-64-bits": ('{"train": {"seed": 99999999999999999999999}}', "'train.seed'"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FILES))
def test_a_config_file_of_odd_contents_is_one_line_before_writing(tmp_path, capsys, case):
    text, expected = CONFIG_FILES[case]
    (tmp_path / "c.json").write_text(text)
    before = snapshot(tmp_path)
    argv = [*TINY_PROBE, "--config", tmp_path / "c.json", "--out", tmp_path / "out"]
    refused(*vlab(capsys, argv), expected)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["a-loop", "under-a-loop", "newline-under-a-file"])
def test_an_output_path_through_a_link_loop_or_with_a_newline_is_one_line(tmp_path, capsys, where):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "f").write_text("keep")
    out = {
        "a-loop": tmp_path / "a",
        "under-a-loop": tmp_path / "a" / "run",
        "newline-under-a-file": tmp_path / "f" / "run\nx",
    }[where]
    refused(*vlab(capsys, [*TINY_PROBE, "--out", out]), "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "f"]
    assert (tmp_path / "f").read_text() == "keep"


def test_vlm_eval_of_a_missing_data_root_lists_what_is_missing_on_one_line(tmp_path, capsys):
    """The list of missing benchmark files was one path a line: an error of 33 lines."""
    argv = ["vlm", "eval", "--run", tmp_path / "run", "--data-root", tmp_path / "data"]
    refused(*vlab(capsys, argv), "do not exist", "coco", "; ")
    assert list(tmp_path.iterdir()) == []


def test_set_a_value_and_a_section_of_the_same_key_is_refused_in_either_order(tmp_path, capsys):
    for sets in (["train.lr=1", "train.lr.x=2"], ["train.lr.x=2", "train.lr=1"]):
        argv = [*TINY_PROBE, *[a for s in sets for a in ("--set", s)], "--out", tmp_path / "o"]
        refused(*vlab(capsys, argv), "'train.lr'", "both a value")
    assert list(tmp_path.iterdir()) == []


# the VLM ---------------------------------------------------------------------------------------

VLM_CASES = {
    "lm-override-nan": (["--set", "model.lm.overrides.layer_norm_eps=NaN"], "model.lm.overrides"),
    "lm-override-negative": (["--set", "model.lm.overrides.hidden_size=-4"], "hidden_size"),
    "vision-override-negative": (["--set", "model.vision.overrides.width=-3"], "model.vision"),
    "image-size-huge": (["--set", "model.vision.image_size=100000"], "model.vision.image_size"),
    "max-length-huge": (["--set", "model.sequence.max_length=10000000"], "max_length"),
    "max-new-tokens-huge": (["--set", "max_new_tokens=1000000"], "max_new_tokens"),
    "threads-huge": (["--set", "stage1.threads=5000"], "stage1.threads"),
}


@pytest.mark.parametrize("case", sorted(VLM_CASES))
def test_vlm_train_refuses_before_writing(tmp_path, capsys, case):
    extra, expected = VLM_CASES[case]
    refused(*vlab(capsys, [*TINY_VLM, *extra, "--out", tmp_path / "out"]), expected)
    assert list(tmp_path.iterdir()) == []


@NO_GPU
def test_vlm_train_on_a_missing_gpu_writes_nothing(tmp_path, capsys):
    argv = [*TINY_VLM, "--set", "stage2.device=cuda", "--out", tmp_path / "out"]
    refused(*vlab(capsys, argv), "stage2.device")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished tiny Pythia-VL run (both stages, two steps each: seconds on a CPU)."""
    out = tmp_path_factory.mktemp("vlm") / "run"
    assert main([*TINY_VLM, "--out", str(out)]) == 0
    return out


FINETUNE_CASES = {
    "resolution-huge": (["--resolution", "100000"], "'resolution'", "limit of 2,048"),
    "resolution-zero": (["--resolution", "0"], "'resolution'", "positive"),
    "threads-huge": (["--resolution", "64", "--set", "train.threads=5000"], "train.threads", ""),
    "out-a-file": (["--resolution", "64", "--out", "FILE"], "--out", "is a file"),
}


@pytest.mark.parametrize("case", sorted(FINETUNE_CASES))
def test_vlm_finetune_refuses_before_writing(source, tmp_path, capsys, case):
    extra, *expected = FINETUNE_CASES[case]
    (tmp_path / "file").write_text("keep")
    extra = [tmp_path / "file" if a == "FILE" else a for a in extra]
    before = snapshot(source)
    argv = ["vlm", "finetune", "--run", source, "--task", "vqa", "--no-progress", *extra]
    refused(*vlab(capsys, argv), *expected)
    assert snapshot(source) == before
    assert snapshot(tmp_path) == {"file": b"keep"}


@NO_GPU
def test_vlm_finetune_on_a_missing_gpu_writes_nothing(source, capsys):
    before = snapshot(source)
    argv = ["vlm", "finetune", "--run", source, "--task", "vqa", "--resolution", "64"]
    refused(*vlab(capsys, [*argv, "--set", "train.device=cuda"]), "train.device")
    assert snapshot(source) == before


@pytest.fixture
def benchmarks(tmp_path) -> Path:
    """A benchmark mixture file of one small COCO captions source (the test fixtures')."""
    from tests.vlm.test_dataset_files import _sources, _write_images

    sources = _sources(tmp_path / "images")
    _write_images({"coco": sources["coco"]})
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"sources": [sources["coco"]]}))
    return path


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--name", "../../escaped"], "not a plain name"),
        (["--name", "a/b"], "not a plain name"),
        (["--limit", "0"], "--limit"),
        (["--max-new-tokens", "0"], "max_new_tokens"),
        (["--max-new-tokens", "100000"], "max_new_tokens"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_vlm_eval_refuses_before_writing(source, benchmarks, tmp_path, capsys, extra, expected):
    before, around = snapshot(source), snapshot(tmp_path)
    argv = ["vlm", "eval", "--run", source, "--config", benchmarks, "--no-progress", *extra]
    refused(*vlab(capsys, argv), expected)
    assert snapshot(source) == before and snapshot(tmp_path) == around
    assert not (source.parent.parent / "escaped").exists()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--threads", "0"], "--threads"),
        (["--threads", "100000"], "from 1 to 1024"),
        (["--decode-new-tokens", "1000000"], "decode_new_tokens"),
        (["--decode-visual-tokens", "16,1000000"], "decode_visual_tokens"),
        (["--json", "DIR"], "is a directory"),
        (["--json", "UNDER_FILE"], "is a file"),
    ],
)
def test_bench_refuses_before_measuring_or_writing(tmp_path, capsys, extra, expected):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("keep")
    swap = {"DIR": tmp_path / "dir", "UNDER_FILE": tmp_path / "file" / "bench.json"}
    refused(*vlab(capsys, ["bench", "--quick", *[swap.get(a, a) for a in extra]]), expected)
    assert snapshot(tmp_path) == {"dir": None, "file": b"keep"}


@pytest.mark.parametrize(
    "argv",
    [
        ["sweep", "submit", "cpu-small", "--executor", "local", "--workers", "0", "--out", "OUT"],
        ["sweep", "resume", "OUT", "--workers", "0"],
        ["inspect", "OUT", "--workers", "0"],
        ["inspect", "OUT", "--examples", "0"],
    ],
)
def test_zero_workers_or_examples_never_mean_a_default(tmp_path, capsys, argv):
    argv = [tmp_path / "out" if a == "OUT" else a for a in argv]
    refused(*vlab(capsys, argv), "must be an integer from 1 to")
    assert list(tmp_path.iterdir()) == []


# bad numbers, generated ------------------------------------------------------------------------

BAD = {
    "train.threads": st.one_of(st.integers(max_value=0), st.integers(min_value=1025)),
    "train.lr": st.one_of(st.floats(max_value=0), st.sampled_from([float("nan"), float("inf")])),
    "task.pool_size": st.integers(min_value=10**7, max_value=10**15),
    "eval_batch_size": st.integers(max_value=0),
    "model.overrides.hidden_size": st.integers(max_value=0),
    "model.overrides.layer_norm_eps": st.one_of(
        st.floats(max_value=-1e-9), st.sampled_from([float("nan"), float("inf"), -float("inf")])
    ),
}


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_bad_numbers_are_refused_in_one_line_before_anything_is_written(tmp_path, capsys, data):
    field = data.draw(st.sampled_from(sorted(BAD)))
    value = data.draw(BAD[field])
    out = tmp_path / "out"
    code, err = vlab(capsys, [*TINY_PROBE, "--set", f"{field}={json.dumps(value)}", "--out", out])
    refused(code, err, field.split(".")[-1])
    assert not out.exists()
