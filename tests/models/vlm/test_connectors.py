"""Connectors: shapes, the cross-scan orders token by token, gradients, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlab.config import from_dict, to_dict
from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.connectors import (
    ChannelConcatConnector,
    MambaProjector,
    MLPConnector,
    build_projector,
    cross_merge,
    cross_scan,
    cross_scan_permutations,
    scan_orders,
)
from vlab.models.vlm.parts import ProjectorConfig


def maps(rows=2, cols=3, widths=(8, 12), batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, rows, cols, w, generator=gen) for w in widths]


def mamba_cfg(**kw) -> ProjectorConfig:
    base = dict(kind="mamba", vision_widths=(8, 12), lm_width=16, d_model=8, d_state=4)
    return ProjectorConfig(**{**base, **kw})


def test_mlp_connector_is_linear_gelu_linear():
    proj = build_projector(ProjectorConfig(kind="mlp", vision_widths=(8,), lm_width=16))
    assert isinstance(proj, MLPConnector) and proj.num_tokens(6) == 6
    (grid,) = maps(widths=(8,))
    out = proj(grid)
    assert out.shape == (2, 6, 16)
    tokens = grid.reshape(2, 6, 8)
    torch.testing.assert_close(proj(tokens), out)
    torch.testing.assert_close(out, proj.fc2(F.gelu(proj.fc1(tokens))))
    assert proj.fc1.out_features == 16  # hidden width defaults to the LM width (LLaVA-1.5)


def test_channel_concat_baseline_concatenates_channels():
    cfg = ProjectorConfig(kind="channel_concat", vision_widths=(8, 12), lm_width=16)
    proj = build_projector(cfg)
    assert isinstance(proj, ChannelConcatConnector) and proj.num_tokens(6) == 6
    a, b = maps()
    out = proj(a, b)
    assert out.shape == (2, 6, 16)
    torch.testing.assert_close(out, proj.mlp(torch.cat([a, b], dim=-1)))
    with pytest.raises(VlabError, match="token count"):
        proj(a, maps(rows=3)[1])


@pytest.mark.parametrize("interleave", ["cross_stitch", "cross_cat"])
@pytest.mark.parametrize("shared", [False, True])
def test_mamba_projector_shapes(interleave, shared):
    proj = build_projector(mamba_cfg(interleave=interleave, shared_block=shared))
    assert isinstance(proj, MambaProjector) and proj.num_tokens(6) == 12
    assert len(proj.blocks) == (1 if shared else 4)
    out = proj(*maps())
    assert out.shape == (2, 12, 16) and torch.isfinite(out).all()


def test_scan_orders_on_a_2x3_grid():
    # Patches numbered row-major:  0 1 2
    #                              3 4 5
    expected = [
        [0, 1, 2, 3, 4, 5],  # row-major
        [0, 3, 1, 4, 2, 5],  # column-major
        [5, 4, 3, 2, 1, 0],  # row-major reversed
        [5, 2, 4, 1, 3, 0],  # column-major reversed
    ]
    assert scan_orders(2, 3).tolist() == expected


def _names(perm: torch.Tensor, n: int) -> list[str]:
    return [f"A{i}" if i < n else f"B{i - n}" for i in perm.tolist()]


def test_interleavings_token_by_token():
    # 1 x 2 grid: map A has patches A0 A1, map B has B0 B1; column-major = row-major here.
    stitch = cross_scan_permutations(1, 2, "cross_stitch", "flip")
    assert [_names(p, 2) for p in stitch] == [
        ["A0", "B0", "A1", "B1"],
        ["A0", "B0", "A1", "B1"],
        ["B1", "A1", "B0", "A0"],
        ["B1", "A1", "B0", "A0"],
    ]
    cat = cross_scan_permutations(1, 2, "cross_cat", "flip")
    assert [_names(p, 2) for p in cat] == [
        ["A0", "A1", "B0", "B1"],
        ["A0", "A1", "B0", "B1"],
        ["B1", "B0", "A1", "A0"],
        ["B1", "B0", "A1", "A0"],
    ]
    per_map = cross_scan_permutations(1, 2, "cross_stitch", "per_map")
    assert _names(per_map[2], 2) == ["A1", "B1", "A0", "B0"]
    per_map = cross_scan_permutations(1, 2, "cross_cat", "per_map")
    assert _names(per_map[2], 2) == ["A1", "A0", "B1", "B0"]
    # 2 x 2 grid, column-major cross-stitch visits A0 B0 A2 B2 A1 B1 A3 B3.
    col = cross_scan_permutations(2, 2, "cross_stitch", "flip")[1]
    assert _names(col, 4) == ["A0", "B0", "A2", "B2", "A1", "B1", "A3", "B3"]


@pytest.mark.parametrize("interleave", ["cross_stitch", "cross_cat"])
@pytest.mark.parametrize("reversed_scans", ["flip", "per_map"])
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (2, 3), (4, 4), (3, 5)])
def test_every_order_is_a_permutation_undone_exactly(interleave, reversed_scans, rows, cols):
    n = rows * cols
    perms = cross_scan_permutations(rows, cols, interleave, reversed_scans)
    assert perms.shape == (4, 2 * n)
    for perm in perms:
        assert sorted(perm.tolist()) == list(range(2 * n))
    tagged = torch.arange(2 * n, dtype=torch.float64).view(1, -1, 1).expand(2, -1, 3)
    sequences = cross_scan(tagged, perms)
    for seq, perm in zip(sequences, perms, strict=True):
        assert seq[0, :, 0].long().tolist() == perm.tolist()
    torch.testing.assert_close(cross_merge(sequences, perms), 4 * tagged, rtol=0, atol=0)


class CumsumBlock(nn.Module):
    """Stands in for a Mamba block: a causal, order-sensitive pure function; records input."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return x.cumsum(dim=1)


def _reference_sequence(order: int, rows: int, cols: int, interleave: str) -> list[int]:
    """Patch-order indices of scan sequence ``order`` (flip reversal), written out by loops."""
    n = rows * cols
    if order % 2 == 0:
        visit = [r * cols + c for r in range(rows) for c in range(cols)]
    else:
        visit = [r * cols + c for c in range(cols) for r in range(rows)]
    if interleave == "cross_cat":
        seq = visit + [n + k for k in visit]
    else:
        seq = [i for k in visit for i in (k, n + k)]
    return seq[::-1] if order >= 2 else seq


@pytest.mark.parametrize("interleave", ["cross_stitch", "cross_cat"])
def test_projector_scans_and_unscans_in_patch_order(interleave):
    rows, cols, d = 2, 3, 8
    proj = build_projector(mamba_cfg(vision_widths=(d, d), interleave=interleave))
    with torch.no_grad():  # make H = DWConv(W1 R) = R
        for w1 in proj.w1:
            w1.weight.copy_(torch.eye(d))
            w1.bias.zero_()
        proj.dwconv.weight.zero_()
        proj.dwconv.weight[:, 0, 1, 1] = 1.0
        proj.dwconv.bias.zero_()
    proj.blocks = nn.ModuleList([CumsumBlock() for _ in range(4)])
    a, b = maps(rows, cols, (d, d))
    a[..., 0] = torch.arange(6.0).view(1, rows, cols)  # channel 0 tags the patch-order index
    b[..., 0] = 6 + torch.arange(6.0).view(1, rows, cols)
    out = proj(a, b)

    tokens = torch.cat([a.flatten(1, 2), b.flatten(1, 2)], dim=1)
    merged = torch.zeros_like(tokens)
    for k, block in enumerate(proj.blocks):
        seq = _reference_sequence(k, rows, cols, interleave)
        assert block.seen[0][0, :, 0].tolist() == [float(i) for i in seq]
        scanned = tokens[:, seq].cumsum(dim=1)
        for t, i in enumerate(seq):
            merged[:, i] += scanned[:, t]
    gate = torch.cat([proj.w2[0](a).flatten(1, 2), proj.w2[1](b).flatten(1, 2)], dim=1)
    expected = proj.w3(proj.norm(merged) * F.silu(gate))
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "cfg",
    [
        ProjectorConfig(kind="mlp", vision_widths=(8,), lm_width=16),
        ProjectorConfig(kind="channel_concat", vision_widths=(8, 12), lm_width=16),
        mamba_cfg(),
        mamba_cfg(shared_block=True, interleave="cross_cat"),
    ],
    ids=["mlp", "channel_concat", "mamba", "mamba_shared"],
)
def test_gradients_reach_every_parameter(cfg):
    proj = build_projector(cfg)
    inputs = maps(widths=cfg.vision_widths)
    proj(*inputs).pow(2).mean().backward()
    for name, p in proj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_projectors_are_deterministic():
    a, b = maps()
    first, second = build_projector(mamba_cfg(), seed=1), build_projector(mamba_cfg(), seed=1)
    for p, q in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(p, q)
    out = first(a, b)
    torch.testing.assert_close(second(a, b), out, rtol=0, atol=0)
    torch.testing.assert_close(first(a, b), out, rtol=0, atol=0)
    other = build_projector(mamba_cfg(), seed=2)
    assert not torch.equal(other.w3.weight, first.w3.weight)


def test_mamba_projector_rejects_flat_or_mismatched_maps():
    proj = build_projector(mamba_cfg())
    a, b = maps()
    with pytest.raises(VlabError, match="rows, cols"):
        proj(a.flatten(1, 2), b.flatten(1, 2))
    with pytest.raises(VlabError, match="grid"):
        proj(a, maps(rows=3)[1])


def test_config_validation_and_json_round_trip():
    with pytest.raises(ConfigError, match="'vision_widths'"):
        ProjectorConfig(kind="mamba", vision_widths=(8,))
    with pytest.raises(ConfigError, match="'vision_widths'"):
        ProjectorConfig(kind="mlp", vision_widths=(0,))
    with pytest.raises(ConfigError, match="'kind'"):
        ProjectorConfig(kind="qformer")
    with pytest.raises(ConfigError, match="'dw_kernel'"):
        ProjectorConfig(kind="mamba", vision_widths=(8, 8), dw_kernel=2)
    with pytest.raises(ConfigError, match="'interleave'"):
        ProjectorConfig(kind="mamba", vision_widths=(8, 8), interleave="zigzag")
    with pytest.raises(ConfigError, match="'d_state'"):
        ProjectorConfig(kind="mamba", vision_widths=(8, 8), d_state=0)
    cfg = ProjectorConfig(kind="mamba", vision_widths=[8, 12], lm_width=24)
    assert cfg.vision_widths == (8, 12) and cfg.model_width == 24 and cfg.mlp_hidden == 24
    assert cfg.d_model is None  # None follows lm_width when build_vlm fills it in
    assert from_dict(ProjectorConfig, to_dict(cfg)) == cfg
