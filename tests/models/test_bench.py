"""``vlab bench``'s arms: every arm is the model its plan names (a preset of its family, or a
local checkpoint), each refused before anything is timed when it cannot be. Known answers
only: speed is never asserted."""

from pathlib import Path

import pytest
import torch

from vlab.errors import ConfigError
from vlab.models.backbones import PRESETS, BackboneConfig, build_backbone
from vlab.models.bench import (
    ARCHS,
    BASELINE,
    SCAN_ARCH,
    BenchPlan,
    bench_scan,
    bench_train,
    check_training_memory,
    shared_presets,
)

CPU = torch.device("cpu")
QUIET = dict(log=lambda *_: None)
# the smallest plan that still runs every step of the training and scan measurements
MICRO = dict(train_lengths=(4,), batch=2, repeats=1, reference_length=4)


def save_checkpoint(path: Path, arch: str, dtype: torch.dtype = torch.float32, **overrides) -> str:
    """A tiny ``arch`` model with ``overrides`` (e.g. an unusual ``hidden_size``, so that the
    JSON shows which model was timed), saved with ``save_pretrained`` as a user's would be."""
    model = build_backbone(BackboneConfig(arch=arch, overrides=overrides), seed=1)
    model.to(dtype).save_pretrained(path)
    return str(path)


def test_every_arm_shares_only_the_cpu_presets():
    # the papers' sizes differ by family, so one preset for all arms is tiny or small
    assert shared_presets() == ("tiny", "small")
    assert all(name in PRESETS[arch] for arch in ARCHS for name in shared_presets())


def test_a_preset_one_arm_lacks_is_refused_naming_the_arm_and_the_shared_presets():
    lacking = next(arch for arch in ARCHS if "1.4b" not in PRESETS[arch])
    with pytest.raises(ConfigError, match="presets every arm has: tiny, small") as e:
        BenchPlan(preset="1.4b")
    assert e.value.field == "preset" and f"not a {lacking} preset" in str(e.value)
    assert f"presets['{lacking}']" in str(e.value)  # how to give that arm its own
    own = next(name for name in PRESETS[lacking] if name not in PRESETS[BASELINE])
    plan = BenchPlan(preset="1.4b", presets={lacking: own})
    assert plan.backbone(lacking).preset == own and plan.backbone(BASELINE).preset == "1.4b"
    with pytest.raises(ConfigError, match="is not an arm") as e:
        BenchPlan(presets={"gpt2": "tiny"})
    assert e.value.field == "presets"


def test_a_checkpoint_is_refused_when_missing_weightless_of_another_family_or_doubled(tmp_path):
    other = next(arch for arch in ARCHS if arch != BASELINE)
    with pytest.raises(ConfigError, match="no such directory") as e:
        BenchPlan(pretrained={BASELINE: str(tmp_path / "missing")})
    assert e.value.field == "pretrained"
    directory = save_checkpoint(tmp_path / "ckpt", BASELINE)
    with pytest.raises(ConfigError, match="gpt_neox"):
        BenchPlan(pretrained={other: directory})
    with pytest.raises(ConfigError, match="both a preset"):
        BenchPlan(presets={BASELINE: "tiny"}, pretrained={BASELINE: directory})
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no weights"):
        BenchPlan(pretrained={BASELINE: directory})


def test_training_one_arm_at_a_time_times_each_arms_own_model_and_records_its_source(tmp_path):
    # one arm at a time is the GPU's way (tests/bench/test_suite.py runs the arms alternately)
    directory = save_checkpoint(tmp_path / "ckpt", BASELINE, hidden_size=40)
    plan = BenchPlan(
        preset="small", pretrained={BASELINE: directory}, train_alternate=False, **MICRO
    )
    result = bench_train(plan, CPU, **QUIET)
    arms = result["arms"]
    assert arms[BASELINE]["pretrained"] == directory and arms[BASELINE]["preset"] is None
    assert arms[BASELINE]["hidden_size"] == 40  # the checkpoint, not the small preset (128)
    for arch in ARCHS[1:]:
        assert arms[arch]["preset"] == "small" and arms[arch]["pretrained"] is None
        assert arms[arch]["hidden_size"] == PRESETS[arch]["small"]["hidden_size"]
        assert arms[arch]["layers"] == PRESETS[arch]["small"]["num_hidden_layers"]
    # one row per arm and length in the registry's order, as when the arms alternate
    assert [r["arch"] for r in result["train"]] == list(ARCHS)
    assert all(r["params"] == arms[r["arch"]]["params"] for r in result["train"])
    assert result["mamba_reference_train"]["length"] == 4
    assert result["train_speedup_vs_reference"] > 0


def test_the_scan_alone_has_the_scan_arms_checkpoint_shape(tmp_path):
    directory = save_checkpoint(tmp_path / "ckpt", SCAN_ARCH, hidden_size=40)
    plan = BenchPlan(pretrained={SCAN_ARCH: directory}, **MICRO)
    assert bench_scan(plan, CPU, **QUIET)["scan"]["dim"] == 2 * 40  # expand 2 x hidden size


def test_a_half_precision_checkpoint_is_timed_in_fp32_like_the_presets(tmp_path):
    directory = save_checkpoint(tmp_path / "ckpt", BASELINE, dtype=torch.float16)
    from vlab.models.bench import _model

    model = _model(BenchPlan(pretrained={BASELINE: directory}).backbone(BASELINE), CPU)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_training_memory_is_refused_against_the_arms_together_or_the_largest(monkeypatch):
    monkeypatch.setattr("vlab.preflight.device_memory", lambda name: ("a test device", 2**20))
    with pytest.raises(ConfigError, match="every arm at once") as e:
        check_training_memory(BenchPlan(train_alternate=True), CPU)
    assert e.value.field == "preset" and "of a test device" in str(e.value)
    with pytest.raises(ConfigError, match="takes at least") as e:
        check_training_memory(BenchPlan(train_alternate=False), CPU, ("--preset", "--pg"))
    assert e.value.field == "--preset" and "every arm" not in str(e.value)
    monkeypatch.setattr("vlab.preflight.device_memory", lambda name: ("a test device", 2**40))
    check_training_memory(BenchPlan(), CPU)
