"""The causal conv's window as a patch site, beside the SSM state (Mamba-1 and Mamba-2).

What a mixer's outputs after position t receive from positions up to t is the state h_t and
the conv window (the last K-1 pre-conv inputs up to t): known answers on tiny random mixers
whose clean and corrupted inputs agree after t. Patching both from the clean run restores the
clean outputs after t exactly; either alone does not; a run's own window changes nothing.
"""

from types import ModuleType

import pytest
import torch

from vlab.models.backbones import BackboneConfig, build_backbone
from vlab.models.backbones import mamba2_internals as m2
from vlab.models.backbones import mamba_internals as m1

OPS = {"mamba": m1, "mamba2": m2}
LENGTH = 11
TOL = dict(atol=1e-5, rtol=1e-5)


def tiny_mixer(arch: str) -> torch.nn.Module:
    """Layer 1's mixer of a tiny random ``arch`` model (weights large enough to matter)."""
    cfg = BackboneConfig(arch=arch, overrides={"initializer_range": 0.3})
    return build_backbone(cfg, seed=0).eval().backbone.layers[1].mixer


def clean_and_corrupted(mixer: torch.nn.Module, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two mixer inputs (B=2, T=11, H) equal at positions > t, different at positions <= t."""
    g = torch.Generator().manual_seed(1)
    hidden = mixer.in_proj.in_features
    clean = torch.randn(2, LENGTH, hidden, generator=g)
    corrupted = clean.clone()
    corrupted[:, : t + 1] = torch.randn(2, t + 1, hidden, generator=g)
    return clean, corrupted


def width(mixer: torch.nn.Module) -> int:
    return mixer.conv1d.kernel_size[0] - 1


@pytest.mark.parametrize("arch", list(OPS))
def test_the_window_is_the_pre_conv_inputs_up_to_t_padded_with_zeros(arch):
    ops: ModuleType = OPS[arch]
    mixer = tiny_mixer(arch)
    clean, _ = clean_and_corrupted(mixer, 0)
    k1 = width(mixer)
    with torch.no_grad():
        inputs = ops.conv_input(mixer, clean)  # (B, C, T)
    channels = mixer.conv1d.in_channels
    assert inputs.shape == (2, channels, LENGTH)
    every = ops.computed(mixer, clean, "conv_window")
    assert every.shape == (2, channels, k1, LENGTH)
    for t in range(LENGTH):
        window = ops.conv_window(mixer, clean, t)
        assert window.shape == (2, channels, k1)
        assert torch.equal(every[..., t], window)
        start = t - k1 + 1
        if start >= 0:
            assert torch.equal(window, inputs[..., start : t + 1])
        else:  # reaching before position 0: the causal conv's zero padding
            assert torch.equal(window[..., :-start], torch.zeros_like(window[..., :-start]))
            assert torch.equal(window[..., -start:], inputs[..., : t + 1])


@pytest.mark.parametrize("arch", list(OPS))
def test_a_segment_continued_from_its_window_has_the_whole_runs_internals(arch):
    ops = OPS[arch]
    mixer = tiny_mixer(arch)
    clean, _ = clean_and_corrupted(mixer, 0)
    t = 4
    with torch.no_grad():
        whole = ops.mixer_internals(mixer, clean)
        after = ops.mixer_internals(mixer, clean[:, t + 1 :], ops.conv_window(mixer, clean, t))
        cold = ops.mixer_internals(mixer, clean[:, t + 1 :])  # no window: zeros before
    for name in ("x", "z", "delta", "B", "C"):
        torch.testing.assert_close(getattr(after, name), getattr(whole, name)[..., t + 1 :])
    assert not torch.allclose(cold.x[..., :1], whole.x[..., t + 1 : t + 2], **TOL)
    with pytest.raises(ValueError, match="conv window"):
        ops.mixer_internals(mixer, clean, torch.zeros(2, 3, width(mixer)))


@pytest.mark.parametrize("t", [1, 5])
@pytest.mark.parametrize("arch", list(OPS))
def test_state_and_window_together_restore_the_clean_output_after_t(arch, t):
    ops = OPS[arch]
    mixer = tiny_mixer(arch)
    clean, corrupted = clean_and_corrupted(mixer, t)
    with torch.no_grad():
        want = mixer(clean)  # the mixer's own forward pass
        own = mixer(corrupted)
        state = ops.computed(mixer, clean, "state")[..., t]
    window = ops.conv_window(mixer, clean, t)
    both = ops.output_with_patch(mixer, corrupted, t, state=state, window=window)
    only_state = ops.output_with_patch(mixer, corrupted, t, state=state)
    only_window = ops.output_with_patch(mixer, corrupted, t, window=window)
    after, k1 = slice(t + 1, None), width(mixer)
    torch.testing.assert_close(both[:, after], want[:, after], **TOL)
    torch.testing.assert_close(both[:, :t], own[:, :t], **TOL)
    # the window is read only after t: alone it leaves everything up to t as the run's own
    torch.testing.assert_close(only_window[:, : t + 1], own[:, : t + 1], **TOL)
    # either alone misses what the other carries, at t+1..t+K-1 at least
    near = slice(t + 1, t + 1 + k1)
    for partial in (only_state, only_window):
        assert (partial[:, near] - want[:, near]).abs().max() > 1e-3
    assert torch.equal(only_state, ops.output_with_state(mixer, corrupted, t, state))


@pytest.mark.parametrize("arch", list(OPS))
def test_a_runs_own_window_and_state_change_nothing(arch):
    ops = OPS[arch]
    mixer = tiny_mixer(arch)
    clean, _ = clean_and_corrupted(mixer, 0)
    with torch.no_grad():
        want = mixer(clean)
        states = ops.computed(mixer, clean, "state")
    for t in (0, 3, LENGTH - 1):
        window = ops.conv_window(mixer, clean, t)
        unpatched = ops.output_with_patch(mixer, clean, t)
        torch.testing.assert_close(unpatched, want, **TOL)
        for state in (None, states[..., t]):
            got = ops.output_with_patch(mixer, clean, t, state=state, window=window)
            torch.testing.assert_close(got, unpatched, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="position"):
        ops.output_with_patch(mixer, clean, LENGTH)
