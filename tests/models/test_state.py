"""State size, counted from transformers' own cache, equals each family's formula."""

import pytest

from vlab.models.backbones import BackboneConfig, build_backbone, hf_config
from vlab.models.backbones.state import state_size


def expected(arch: str, seq_len: int) -> dict[str, int]:
    c = hf_config(arch, "tiny")
    if arch == "pythia":  # keys and values of every layer
        kv = c.num_hidden_layers * 2 * seq_len * c.hidden_size
        return {"recurrent_state": 0, "conv_state": 0, "kv_cache": kv}
    inner = c.expand * c.hidden_size
    if arch == "mamba":  # d_inner x N per layer, the conv's last kernel inputs per channel
        n = c.num_hidden_layers
        return {
            "recurrent_state": n * inner * c.state_size,
            "conv_state": n * inner * c.conv_kernel,
            "kv_cache": 0,
        }
    if arch == "mamba2":  # heads x head dim x N; the conv runs over x, B and C
        n = c.num_hidden_layers
        conv_channels = inner + 2 * c.n_groups * c.state_size
        return {
            "recurrent_state": n * c.num_heads * c.head_dim * c.state_size,
            "conv_state": n * conv_channels * c.conv_kernel,
            "kv_cache": 0,
        }
    attention = len(c.attention_layers)  # hybrid: Mamba layers' state + attention layers' cache
    mamba_layers = c.num_hidden_layers - attention
    return {
        "recurrent_state": mamba_layers * inner * c.state_size,
        "conv_state": mamba_layers * inner * c.conv_kernel,
        "kv_cache": attention * 2 * seq_len * c.hidden_size,
    }


@pytest.mark.parametrize("arch", ["pythia", "mamba", "mamba2", "hybrid"])
@pytest.mark.parametrize("seq_len", [1, 10, 33])
def test_state_size_is_each_familys_formula(arch, seq_len):
    model = build_backbone(BackboneConfig(arch=arch))
    model.train()
    got = state_size(model, seq_len)
    want = expected(arch, seq_len)
    assert got == {**want, "total": sum(want.values())}
    assert model.training  # left as it was


def test_state_size_needs_a_token():
    with pytest.raises(ValueError, match="seq_len"):
        state_size(build_backbone(BackboneConfig(arch="mamba")), 0)
