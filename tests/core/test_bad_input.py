"""The bad-input battery: every case goes through the ``vlab`` command line and must end with
exit code 2, one line ``vlab: error: ...`` naming the problem, no traceback, and nothing left
behind (no run or sweep directory, no stray files)."""

import json

import pytest

from vlab.cli import main

PROBE = ["probe", "run", "--arch", "pythia", "--length", "4", "--out", "OUT"]

CASES = {
    # optimisation settings
    "lr-infinite": (["--lr", "Infinity"], "train.lr"),
    "lr-nan": (["--lr", "nan"], "train.lr"),
    "lr-zero": (["--lr", "0"], "train.lr"),
    "lr-negative": (["--lr", "-1"], "train.lr"),
    "grad-clip-nan": (["--set", "train.grad_clip=NaN"], "train.grad_clip"),
    "weight-decay-negative": (["--set", "train.weight_decay=-1"], "train.weight_decay"),
    "beta1-one": (["--set", "train.beta1=1"], "train.beta1"),
    "warmup-above-one": (["--set", "train.warmup_ratio=2"], "train.warmup_ratio"),
    "steps-negative": (["--steps", "-1"], "train.steps"),
    "steps-absurd": (["--steps", "10000000000"], "train.steps"),
    "batch-zero": (["--batch-size", "0"], "train.batch_size"),
    "batch-absurd": (["--batch-size", "2000000"], "train.batch_size"),
    "accum-does-not-split": (["--set", "train.grad_accum=3"], "train.grad_accum"),
    "threshold-above-one": (["--set", "train.threshold=1.5"], "train.threshold"),
    "threshold-nan": (["--set", "train.threshold=NaN"], "train.threshold"),
    "threads-zero": (["--set", "train.threads=0"], "train.threads"),
    "device-unknown": (["--set", "train.device=tpu"], "train.device"),
    "precision-unknown": (["--set", "train.precision=fp8"], "train.precision"),
    "eval-every-zero": (["--set", "train.eval_every=0"], "train.eval_every"),
    "eval-fraction-zero": (["--set", "train.eval_fraction=0"], "train.eval_fraction"),
    "patience-negative": (["--set", "train.nonfinite_patience=-1"], "nonfinite_patience"),
    "seed-negative": (["--seed", "-1"], "init_seed"),
    "data-seed-negative": (["--data-seed", "-1"], "task.seed"),
    "eval-batch-zero": (["--set", "eval_batch_size=0"], "eval_batch_size"),
    # the task
    "length-zero": (["--length", "0"], "task.length"),
    "pool-too-small": (["--set", "task.pool_size=3"], "task.pool_size"),
    "targets-outside-vocab": (
        ["--set", "task.target_mode=vocab", "--set", "task.target_offset=253"],
        "task.target_offset",
    ),
    "target-mode-unknown": (["--set", "task.target_mode=bogus"], "task.target_mode"),
    # the model
    "init-std-nan": (["--set", "model.init_std=NaN"], "model.init_std"),
    "init-std-infinite": (["--set", "model.init_std=Infinity"], "model.init_std"),
    "init-scheme-unknown": (["--set", "model.init_scheme=zeros"], "model.init_scheme"),
    "override-typo": (["--set", "model.overrides.num_hiden_layers=3"], "num_hidden_layers"),
    "preset-unknown": (["--set", "model.preset=huge"], "model.preset"),
    "pretrained-missing": (["--pretrained", "/nonexistent/model"], "model.pretrained"),
    "pretrained-other-family": (["--pretrained", "MAMBA_DIR"], "holds a 'mamba' model"),
    # the shape of the overrides
    "section-given-a-value": (["--set", "train=5"], "'train': is a section"),
    "unknown-section": (["--set", "bogus.key=1"], "bogus"),
    "unknown-field": (["--set", "train.bogus=1"], "bogus"),
    "number-expected": (["--set", "train.lr=abc"], "train.lr"),
    "integer-expected": (["--set", "train.steps=1.5"], "train.steps"),
    "set-without-equals": (["--set", "notkeyvalue"], "--set expects key=value"),
    "config-missing": (["--config", "missing.json"], "no such file"),
    "config-a-list": (["--config", "LIST"], "expected a JSON object"),
    "config-not-json": (["--config", "GARBAGE"], "not valid JSON"),
    "out-empty": (["--out", ""], "--out"),
}

SWEEP_CASES = {
    "spec-missing": (["sweep", "show", "nosuchspec"], "no sweep spec"),
    "spec-unknown-key": (["sweep", "show", "UNKNOWN_KEY_SPEC"], "unknown key 'bogus'"),
    "spec-syntax-error": (["sweep", "show", "BROKEN_PY"], "SyntaxError"),
    "spec-raises": (["sweep", "show", "RAISING_PY"], "ZeroDivisionError"),
    "spec-run-escapes": (
        ["sweep", "submit", "ESCAPING_SPEC", "--executor", "debug", "--out", "OUT"],
        "not a plain folder name",
    ),
    "status-not-a-sweep": (["sweep", "status", "."], "not a sweep directory"),
    "report-missing-dir": (["report", "nothing-here"], "no such directory"),
    "vlm-preset-unknown": (["vlm", "train", "--preset", "nope", "--out", "OUT"], "preset"),
    "vlm-stage-lr-infinite": (
        ["vlm", "train", "--arch", "pythia", "--set", "stage2.lr=Infinity", "--out", "OUT"],
        "stage2.lr",
    ),
}


def _inputs(tmp_path):
    """The files some cases point at."""
    mamba = tmp_path / "inputs" / "mamba-checkpoint"
    mamba.mkdir(parents=True)
    (mamba / "config.json").write_text(json.dumps({"model_type": "mamba", "vocab_size": 256}))
    files = {"MAMBA_DIR": mamba}
    for name, text in {
        "LIST": "[1, 2]",
        "GARBAGE": "{not json",
        "UNKNOWN_KEY_SPEC": json.dumps({"name": "x", "base": {}, "axes": {}, "bogus": 1}),
        "ESCAPING_SPEC": json.dumps({"name": "x", "runs": [{"name": "../../escaped"}]}),
        "BROKEN_PY": "SPEC = (\n",
        "RAISING_PY": "x = 1 / 0\n",
    }.items():
        suffix = ".py" if name.endswith("_PY") else ".json"
        path = tmp_path / "inputs" / f"{name.lower()}{suffix}"
        path.write_text(text)
        files[name] = path
    return files


def _run(tmp_path, monkeypatch, capsys, argv):
    """``vlab ARGV`` in this process, from an empty working directory: (exit code, stderr)."""
    files = _inputs(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    argv = [str(files.get(a, a)) for a in argv]
    argv = [str(work / "out") if a == "OUT" else a for a in argv]
    monkeypatch.chdir(work)
    capsys.readouterr()
    code = main(argv)  # an exception other than a VlabError would fail the test here
    return code, capsys.readouterr().err, work


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_probe_input(tmp_path, monkeypatch, capsys, case):
    extra, expected = CASES[case]
    argv = [*PROBE, *extra] if extra[0] != "--out" else [*PROBE[:-2], *extra]
    _assert_refused(*_run(tmp_path, monkeypatch, capsys, argv), expected)


@pytest.mark.parametrize("case", sorted(SWEEP_CASES))
def test_bad_sweep_report_and_vlm_input(tmp_path, monkeypatch, capsys, case):
    argv, expected = SWEEP_CASES[case]
    _assert_refused(*_run(tmp_path, monkeypatch, capsys, argv), expected)
    assert not (tmp_path / "escaped").exists()


def _assert_refused(code, stderr, work, expected):
    said = stderr.strip()
    assert code == 2, said
    assert len(said.splitlines()) == 1 and said.startswith("vlab: error: "), said
    assert expected in said and "Traceback" not in said, said
    assert list(work.iterdir()) == [], "left behind"
