"""The hybrid arm: Mamba-1 blocks with attention blocks, cached decoding, checkpoints, bad input."""

import copy

import pytest
import torch

from vlab.cli import main
from vlab.errors import ConfigError
from vlab.models.backbones import BackboneConfig, build_backbone


def test_without_attention_layers_the_hybrid_is_the_mamba_arm():
    """Same block shapes and parameter names as transformers' Mamba: with no attention layer,
    Mamba's weights load into the hybrid unchanged and give the same logits."""
    mamba = build_backbone(BackboneConfig(arch="mamba"), seed=3).eval()
    overrides = {"hidden_size": 64, "attention_layers": []}
    hybrid = build_backbone(BackboneConfig(arch="hybrid", overrides=overrides)).eval()
    missing, unexpected = hybrid.load_state_dict(mamba.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k for k in missing)
    ids = torch.randint(0, 256, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(hybrid(input_ids=ids).logits, mamba(input_ids=ids).logits)


def test_attention_layers_sit_where_asked():
    def kinds(**overrides):
        model = build_backbone(BackboneConfig(arch="hybrid", overrides=overrides))
        return [type(layer.mixer).__name__ for layer in model.backbone.layers]

    assert kinds() == ["MambaMixer", "GPTNeoXAttention"]  # the tiny preset
    assert kinds(attention_layers=[0]) == ["GPTNeoXAttention", "MambaMixer"]
    assert (
        kinds(num_hidden_layers=4, attention_period=2, attention_offset=1)
        == [
            "MambaMixer",
            "GPTNeoXAttention",
        ]
        * 2
    )


def test_cached_greedy_decoding_equals_recomputing_the_whole_sequence():
    model = build_backbone(BackboneConfig(arch="hybrid"), seed=1).eval()
    ids = torch.randint(1, 256, (2, 7))
    with torch.no_grad():
        fast = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False
        )
        seq = ids
        for _ in range(6):
            nxt = model(input_ids=seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(fast, seq)


def test_its_mamba_layers_run_vlabs_scan():
    import transformers.models.mamba.modeling_mamba as modeling

    build_backbone(BackboneConfig(arch="hybrid"))
    assert hasattr(modeling.mamba_selective_scan, "vlab_original")


@pytest.mark.parametrize(
    "overrides",
    [{"attention_layers": [2]}, {"attention_layers": [-1]}, {"attention_layers": "1"}],
)
def test_attention_layers_out_of_range_name_the_field(overrides):
    with pytest.raises(ConfigError) as e:
        BackboneConfig(arch="hybrid", overrides=overrides)
    assert e.value.field == "overrides.attention_layers"


def test_a_bad_attention_layer_is_one_line_before_any_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["probe", "run", "--arch", "hybrid", "--steps", "2", "--out", str(out),
         "--set", "model.overrides.attention_layers=[5]"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "model.overrides.attention_layers" in err and "index 5" in err
    assert not out.exists()


def test_a_bfloat16_hybrid_runs_and_agrees_with_float32():
    """Its final norm may return float32: the head still gets its own dtype (the forward
    failed in bfloat16 before, so `vlab inspect --dtype bfloat16` could not open a hybrid)."""
    model = build_backbone(BackboneConfig(arch="hybrid"), seed=0).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        full = model(ids).logits
        half = copy.deepcopy(model).to(torch.bfloat16)(ids).logits
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, atol=0.05, rtol=0.05)
