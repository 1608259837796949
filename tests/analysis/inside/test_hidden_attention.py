"""Mamba's hidden attention reproduces the mixer: alpha applied to the SSM input gives the
mixer's output to float tolerance; on a hand-sized case it equals the closed form."""

import math

import pytest
import torch

from vlab.models.backbones import BackboneConfig, build_backbone
from vlab.models.backbones.mamba_internals import hidden_attention, mixer_internals, ssm_output


@pytest.mark.parametrize("layer", [0, 1])
def test_hidden_attention_applied_to_the_input_reproduces_the_mixer(layer):
    model = build_backbone(BackboneConfig(arch="mamba"), seed=3).eval()
    mixer = model.backbone.layers[layer].mixer
    hidden = torch.randn(
        2, 11, model.config.hidden_size, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        want = mixer(hidden)
        internals = mixer_internals(mixer, hidden)
        alpha = hidden_attention(internals.delta, internals.A, internals.B, internals.C)
        got = mixer.out_proj(ssm_output(internals, alpha).transpose(1, 2))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert alpha.shape == (2, mixer.intermediate_size, 11, 11)
    assert torch.all(alpha.triu(diagonal=1) == 0)  # nothing from the future


def test_closed_form_on_a_hand_sized_case():
    # one channel, one state, constant step:
    # alpha[t, s] = C_t * exp(A * delta * (t - s)) * delta * B_s
    delta = torch.full((1, 1, 4), 0.5)
    A = torch.tensor([[-0.8]])
    B = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    C = torch.tensor([[[0.5, -1.0, 2.0, 1.5]]])
    alpha = hidden_attention(delta, A, B, C)[0, 0]
    for t in range(4):
        for s in range(4):
            want = C[0, 0, t] * math.exp(-0.8 * 0.5 * (t - s)) * 0.5 * B[0, 0, s] if s <= t else 0.0
            assert alpha[t, s].item() == pytest.approx(float(want), rel=1e-6, abs=1e-7)
