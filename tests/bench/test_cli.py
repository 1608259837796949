"""``vlab bench`` runs and writes the documented JSON (speed is measured, never asserted)."""

import json

import pytest

from vlab.cli import main
from vlab.models.bench import fit_exponent


def test_fit_exponent_recovers_known_growth():
    tokens = [256, 1024, 4096, 16384]
    assert fit_exponent(tokens, [3e-6 * t for t in tokens]) == pytest.approx(1.0)
    assert fit_exponent(tokens, [1e-9 * t**2 for t in tokens]) == pytest.approx(2.0)
    # only points >= 1k tokens count: a constant overhead at 256 is ignored
    assert fit_exponent(tokens, [1.0, 1e-3 * 1024, 1e-3 * 4096, 1e-3 * 16384]) == pytest.approx(1.0)


def test_bench_quick_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--threads", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("Mamba", "Mamba-2", "Hybrid"):
        assert f"{name} / Pythia training tokens/s" in printed
        assert f"{name} / Pythia decoding tokens/s (64 new tokens" in printed
    result = json.loads(out.read_text())
    # every arm is its tiny preset by default, the protocol's too
    assert {a: (r["preset"], r["pretrained"]) for a, r in result["arms"].items()} == {
        a: ("tiny", None) for a in ("pythia", "mamba", "mamba2", "hybrid")
    }
    assert {r["preset"] for r in result["protocol"]} == {"tiny"}
    archs = {r["arch"] for r in result["train"]}
    assert archs == {"pythia", "mamba", "mamba2", "hybrid"}
    assert set(result["vs_pythia_train"]) == {"mamba", "mamba2", "hybrid"}
    assert result["mamba_vs_pythia_train"] == result["vs_pythia_train"]["mamba"]
    for row in result["train"]:
        assert {"arch", "length", "batch", "params", "tokens_per_s"} <= set(row)
        assert row["tokens_per_s"] > 0 and row["batch"] == 64
    assert result["scan_speedup_vs_reference"] > 0
    assert {(r["arch"], r["tokens"]) for r in result["forward"]} >= {
        ("mamba", 256),
        ("pythia", 4096),
    }
    assert all(r["seconds"] > 0 for r in result["forward"])
    assert set(result["forward_exponent"]) == {"pythia", "mamba", "mamba2", "hybrid"}
    # decoding: every arm at every N of the quick plan, exactly the requested tokens
    assert {(r["arch"], r["visual_tokens"]) for r in result["decode"]} == {
        (a, n) for a in ("pythia", "mamba", "mamba2", "hybrid") for n in (16, 64, 256)
    }
    for row in result["decode"]:
        assert row["generated_tokens"] == row["new_tokens"] == 64
        assert row["prefill_seconds"] > 0 and row["decode_tokens_per_s"] > 0
        assert row["cache_bytes_end"] >= row["cache_bytes_prompt"] > 0
    # the protocol step: every arm at the quick length, before and after, one evaluation
    # every 1% of a 3000-step budget
    assert {(r["arch"], r["length"]) for r in result["protocol"]} == {
        (a, 4) for a in ("pythia", "mamba", "mamba2", "hybrid")
    }
    for row in result["protocol"]:
        assert row["eval_every"] == 30 and row["batch"] == 64
        assert row["protocol_step_ms"] == pytest.approx(row["step_ms"] + row["eval_ms"] / 30)
        assert row["speedup"] == pytest.approx(
            row["protocol_step_ms_before"] / row["protocol_step_ms"]
        )
    assert set(result["protocol_speedup"]) == {"pythia", "mamba", "mamba2", "hybrid"}
    assert "Pythia probe protocol step, now vs before: L=4:" in printed
    for key in ("vs_pythia_decode", "vs_pythia_generate"):
        assert set(result[key]) == {"mamba", "mamba2", "hybrid"}
        assert all(set(by_n) == {"16", "64", "256"} for by_n in result[key].values())


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--decode-visual-tokens", "16,x"], "comma-separated token counts"),
        (["--decode-visual-tokens", "16,-1"], "must be >= 0"),
    ],
)
def test_bench_refuses_bad_decoding_counts_before_measuring(flags, message, capsys):
    assert main(["bench", *flags]) == 2
    assert message in capsys.readouterr().err


def test_bench_decoding_flags_reach_the_plan_checks(capsys):
    assert main(["bench", "--quick", "--decode-new-tokens", "1"]) == 2
    assert "decode_new_tokens" in capsys.readouterr().err


def _no_measuring(*args, **kwargs):
    raise AssertionError("measured before the arguments were checked")


@pytest.mark.parametrize(
    "flags, message",
    [
        # a size one arm's family lacks: the flag, that arm's presets and the shared ones
        (["--preset", "1.4b"], "'--preset': '1.4b' is not a mamba2 preset (tiny, small, 130m"),
        (["--preset", "1.4b"], "presets every arm has: tiny, small; give mamba2 its own with"),
        (["--preset", "huge"], "'--preset': 'huge' is not a pythia preset"),
        (["--preset", "mamba2=1.4b"], "'1.4b' is not a mamba2 preset"),
        (["--preset", "gpt2=1.4b"], "argument --preset: 'gpt2' in 'gpt2=1.4b' is not an arm"),
        (["--preset", "1.4b", "--preset", "small"], "every arm is given both 1.4b and small"),
        (["--pretrained", "pythia"], "argument --pretrained: expected ARCH=DIR"),
        (["--pretrained", "pythia=MISSING"], "'--pretrained': 'MISSING': no such directory"),
        (["--pretrained", "mamba=EMPTY"], "'--pretrained': 'EMPTY' is not a checkpoint"),
        (["--preset", "pythia=tiny", "--pretrained", "pythia=EMPTY"], "both a preset (tiny)"),
        (["--batch", "0"], "argument --batch: must be an integer from 1"),
    ],
)
def test_bench_refuses_an_arm_it_cannot_build_before_measuring(
    flags, message, tmp_path, monkeypatch, capsys
):
    (tmp_path / "EMPTY").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vlab.bench.suite.run_bench", _no_measuring)
    assert main(["bench", *flags]) == 2
    err = capsys.readouterr().err
    for relative in ("MISSING", "EMPTY"):  # named by its absolute path, as the JSON records it
        message = message.replace(f"'{relative}'", f"'{tmp_path / relative}'")
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_bench_flags_choose_each_arms_model(tmp_path, monkeypatch, capsys):
    from tests.models.test_bench import save_checkpoint

    save_checkpoint(tmp_path / "ckpt", "pythia")
    monkeypatch.chdir(tmp_path)
    seen = []

    def measured(plan, device):
        seen.append(plan)
        return {
            "plan": plan.__dict__.copy(),
            "vs_pythia_train": {},
            "vs_pythia_decode": {},
            "protocol_speedup": {},
            "scan_speedup_vs_reference": 1.0,
            "train_speedup_vs_reference": 1.0,
        }

    monkeypatch.setattr("vlab.bench.suite.run_bench", measured)
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--preset", "small", "--preset", "mamba=tiny", "--batch", "8"]
    argv += ["--pretrained", "pythia=ckpt", "--device", "cpu", "--json", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    (plan,) = seen
    # the relative directory is recorded absolute: the JSON outlives the working directory
    assert plan.pretrained == {"pythia": str(tmp_path / "ckpt")}
    assert (plan.preset, plan.presets, plan.batch) == ("small", {"mamba": "tiny"}, 8)
    assert plan.protocol_batch == 64 and plan.decode_new_tokens == 64  # --quick's
    assert [plan.backbone(a).preset for a in ("mamba", "mamba2", "hybrid")] == [
        "tiny",
        "small",
        "small",
    ]
    written = json.loads(out.read_text())["plan"]
    assert written["pretrained"] == {"pythia": str(tmp_path / "ckpt")}
    assert (written["preset"], written["presets"]) == ("small", {"mamba": "tiny"})
