"""Connectors (projectors): vision features in, LM-width visual tokens out.

Three designs, all built from one :class:`ProjectorConfig` by :func:`build_projector`:

* ``"mlp"`` (:class:`MLPConnector`): LLaVA-1.5's Linear-GELU-Linear on one encoder's
  features, SHAKEUP's connector. (B, rows, cols, Dv) or (B, N, Dv) -> (B, N, Dlm).
* ``"channel_concat"`` (:class:`ChannelConcatConnector`): Cobra's fusion, MambaVLM's baseline:
  two encoders' features concatenated along channels, then the same MLP.
  (B, N, Da) + (B, N, Db) -> (B, N, Dlm).
* ``"mamba"`` (:class:`MambaProjector`): MambaVLM's projector. The two maps are concatenated
  along the *sequence* (2N tokens), mixed by a depthwise conv, scanned in four cross-scan
  orders by Mamba blocks and merged. (B, rows, cols, Da) + (B, rows, cols, Db) ->
  (B, 2N, Dlm), map A's N tokens then map B's, each in patch (row-major) order.

Cross-scan (``cross_scan_permutations``). Patch order numbers map A's tokens 0..N-1 and map
B's N..2N-1, row-major within each map. The four per-map orders are row-major, column-major,
row-major reversed and column-major reversed. Per order o (a permutation of 0..N-1, applied
to both maps) the two maps are interleaved:

* ``cross_cat``: A[o[0]], ..., A[o[N-1]], B[o[0]], ..., B[o[N-1]];
* ``cross_stitch``: A[o[0]], B[o[0]], A[o[1]], B[o[1]], ...: the scan alternates between the
  maps token by token, visiting the same patch position in both before moving on.

``reversed_scans`` says how the two reversed orders are formed. ``"flip"`` (default, VMamba's
definition): a reversed sequence is the forward sequence read backwards, so under cross-cat
the reversed scans put map B first and map A's tokens can see map B (with A always first, A
would never see B in any scan). ``"per_map"``: each map's order is reversed and the maps are
interleaved A-first as in the forward scans.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlab.errors import ConfigError, VlabError
from vlab.models.ops.selective_scan import install_into_transformers
from vlab.models.vlm.parts import Interleave, ProjectorConfig, ReversedScans


def _tokens(features: torch.Tensor, name: str) -> torch.Tensor:
    """(B, rows, cols, D) or (B, N, D) -> (B, N, D)."""
    if features.dim() == 4:
        return features.flatten(1, 2)
    if features.dim() == 3:
        return features
    raise VlabError(
        f"{name}: expected features of shape (B, rows, cols, D) or (B, N, D), "
        f"got {tuple(features.shape)}"
    )


class MLPConnector(nn.Module):
    """LLaVA-1.5's two-layer MLP: Linear(Dv, H) - GELU - Linear(H, Dlm), H = Dlm by default.

    (B, rows, cols, Dv) or (B, N, Dv) -> (B, N, Dlm), tokens in patch (row-major) order.
    """

    num_inputs = 1

    def __init__(self, vision_width: int, lm_width: int, hidden_width: int | None = None):
        super().__init__()
        hidden = hidden_width or lm_width
        self.fc1 = nn.Linear(vision_width, hidden)
        self.fc2 = nn.Linear(hidden, lm_width)

    def num_tokens(self, num_patches: int) -> int:
        """Visual tokens produced for ``num_patches`` patches per map."""
        return num_patches

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(_tokens(features, "MLPConnector"))))


class ChannelConcatConnector(nn.Module):
    """Cobra's fusion (MambaVLM's baseline): concatenate two maps along channels, then MLP.

    (B, rows, cols, Da) + (B, rows, cols, Db) (or (B, N, D*)) -> (B, N, Dlm). Both maps must
    have the same grid; channels are ordered [A, B].
    """

    num_inputs = 2

    def __init__(
        self, vision_widths: tuple[int, int], lm_width: int, hidden_width: int | None = None
    ):
        super().__init__()
        self.mlp = MLPConnector(sum(vision_widths), lm_width, hidden_width)

    def num_tokens(self, num_patches: int) -> int:
        return num_patches

    def forward(self, features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
        a = _tokens(features_a, "ChannelConcatConnector")
        b = _tokens(features_b, "ChannelConcatConnector")
        if a.shape[:2] != b.shape[:2]:
            raise VlabError(
                f"ChannelConcatConnector: maps differ in batch or token count: "
                f"{tuple(a.shape)} vs {tuple(b.shape)}"
            )
        return self.mlp(torch.cat([a, b], dim=-1))


# --------------------------------------------------------------------------- cross-scan


def scan_orders(rows: int, cols: int) -> torch.Tensor:
    """(4, N) LongTensor: the four per-map scan orders over patch indices r * cols + c.

    Row 0: row-major; 1: column-major; 2: row-major reversed; 3: column-major reversed.
    Entry [k, t] is the patch visited at step t of order k.
    """
    grid = torch.arange(rows * cols).view(rows, cols)
    row_major = grid.flatten()
    col_major = grid.t().flatten()
    return torch.stack([row_major, col_major, row_major.flip(0), col_major.flip(0)])


def cross_scan_permutations(
    rows: int, cols: int, interleave: str, reversed_scans: str = "flip"
) -> torch.Tensor:
    """(4, 2N) LongTensor: for each order, which patch-order token sits at each sequence step.

    Patch order is map A's tokens 0..N-1 then map B's N..2N-1, each row-major. Each row is a
    permutation of 0..2N-1; ``seq = tokens[:, perm]`` builds the scan sequence and
    ``seq[:, argsort(perm)]`` undoes it. See the module docstring for the definitions.
    """
    n = rows * cols
    orders = scan_orders(rows, cols)

    def interleave_maps(order: torch.Tensor) -> torch.Tensor:
        a, b = order, order + n
        if interleave == "cross_cat":
            return torch.cat([a, b])
        if interleave == "cross_stitch":
            return torch.stack([a, b], dim=1).flatten()
        raise ConfigError("interleave", f"{interleave!r} is not cross_stitch or cross_cat")

    forward = [interleave_maps(orders[0]), interleave_maps(orders[1])]
    if reversed_scans == "flip":
        backward = [forward[0].flip(0), forward[1].flip(0)]
    elif reversed_scans == "per_map":
        backward = [interleave_maps(orders[2]), interleave_maps(orders[3])]
    else:
        raise ConfigError("reversed_scans", f"{reversed_scans!r} is not flip or per_map")
    return torch.stack(forward + backward)


def cross_scan(tokens: torch.Tensor, perms: torch.Tensor) -> list[torch.Tensor]:
    """(B, 2N, D) patch-order tokens -> four (B, 2N, D) scan sequences, one per order."""
    return [tokens[:, perm] for perm in perms]


def cross_merge(sequences: list[torch.Tensor], perms: torch.Tensor) -> torch.Tensor:
    """Undo each order and sum: four (B, 2N, D) sequences -> (B, 2N, D) in patch order."""
    inverses = torch.argsort(perms, dim=1)
    return sum(seq[:, inv] for seq, inv in zip(sequences, inverses, strict=True))


# --------------------------------------------------------------------------- Mamba projector


def _mamba_block(d_model: int, d_state: int, d_conv: int, expand: int) -> nn.Module:
    """One pre-norm residual Mamba block (RMSNorm, mixer, residual) from ``transformers``.

    HF's ``MambaBlock`` leaves the SSM parameters to the pretrained model's initialiser, so
    they are initialised here as in the Mamba paper: A = -(1..d_state) per channel (S4D-real),
    D = 1, dt drawn log-uniformly in [1e-3, 0.1] and stored through the inverse softplus.
    """
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaBlock

    config = MambaConfig(
        hidden_size=d_model,
        state_size=d_state,
        conv_kernel=d_conv,
        expand=expand,
        num_hidden_layers=1,
        residual_in_fp32=False,
        use_bias=False,
        use_conv_bias=True,
    )
    block = MambaBlock(config, layer_idx=0)
    mixer = block.mixer
    with torch.no_grad():
        inner, rank = mixer.intermediate_size, mixer.time_step_rank
        a = torch.arange(1, d_state + 1, dtype=torch.float32).expand(inner, d_state)
        mixer.A_log.copy_(torch.log(a))
        mixer.D.fill_(1.0)
        std = rank**-0.5
        nn.init.uniform_(mixer.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(
            min=1e-4
        )
        mixer.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
    return block


class MambaProjector(nn.Module):
    """MambaVLM's projector over two feature maps of the same grid, concatenated in sequence.

    With R_a, R_b the maps (B, rows, cols, D_a / D_b):

    1. ``H = DWConv(W1 R)``: a per-map Linear W1_i to ``d_model``, then one 2-D depthwise conv
       (``dw_kernel`` square, zero padding) shared by both maps and applied to each map's grid
       separately, so mixing is spatial and never crosses between the maps. 2-D (not a 1-D
       causal conv over the sequence) because the maps are images: the conv sees all eight
       neighbours, and the scans add the sequence mixing.
    2. H in patch order (A's N tokens, then B's) is permuted into the four cross-scan
       sequences (module docstring) and each runs through a Mamba block (RMSNorm, mixer,
       residual).
    3. Each output is permuted back to patch order; the four are summed.
    4. Merge (free choice, VMamba's SS2D output gate): ``W3(LayerNorm(sum) * SiLU(W2 R))``
       with a per-map W2_i to ``d_model`` and W3: ``d_model`` -> ``lm_width``. The norm tames
       the scale of a sum of four residual streams before the gate.

    Output: (B, 2N, lm_width), A's N tokens then B's, each row-major.
    """

    num_inputs = 2

    def __init__(
        self,
        vision_widths: tuple[int, int],
        lm_width: int,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dw_kernel: int = 3,
        interleave: Interleave = "cross_stitch",
        reversed_scans: ReversedScans = "flip",
        shared_block: bool = False,
    ) -> None:
        super().__init__()
        install_into_transformers()  # HF Mamba's scan through vlab's fast kernel
        self.interleave = interleave
        self.reversed_scans = reversed_scans
        self.w1 = nn.ModuleList([nn.Linear(w, d_model) for w in vision_widths])
        self.dwconv = nn.Conv2d(d_model, d_model, dw_kernel, padding=dw_kernel // 2, groups=d_model)
        n_blocks = 1 if shared_block else 4
        self.blocks = nn.ModuleList(
            [_mamba_block(d_model, d_state, d_conv, expand) for _ in range(n_blocks)]
        )
        self.w2 = nn.ModuleList([nn.Linear(w, d_model) for w in vision_widths])
        self.norm = nn.LayerNorm(d_model)
        self.w3 = nn.Linear(d_model, lm_width)

    def num_tokens(self, num_patches: int) -> int:
        """Visual tokens produced for ``num_patches`` patches per map: both maps' tokens."""
        return 2 * num_patches

    def _scan(self, sequences: list[torch.Tensor]) -> list[torch.Tensor]:
        """Runs the four (B, 2N, d_model) sequences through their Mamba block(s)."""
        if len(self.blocks) == 1:
            batch = sequences[0].shape[0]
            out = self.blocks[0](torch.cat(sequences, dim=0))
            return list(out.split(batch, dim=0))
        return [block(seq) for block, seq in zip(self.blocks, sequences, strict=True)]

    def forward(self, features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
        if features_a.dim() != 4 or features_b.dim() != 4:
            raise VlabError(
                "MambaProjector needs feature grids (B, rows, cols, D) to scan by rows and "
                f"columns, got {tuple(features_a.shape)} and {tuple(features_b.shape)}"
            )
        if features_a.shape[:3] != features_b.shape[:3]:
            raise VlabError(
                "MambaProjector: the two maps must share batch and grid, got "
                f"{tuple(features_a.shape)} and {tuple(features_b.shape)}"
            )
        batch, rows, cols = features_a.shape[:3]
        maps = (features_a, features_b)
        h = []
        for w1, r in zip(self.w1, maps, strict=True):
            x = w1(r).permute(0, 3, 1, 2)  # (B, d, rows, cols)
            h.append(self.dwconv(x).permute(0, 2, 3, 1).reshape(batch, rows * cols, -1))
        tokens = torch.cat(h, dim=1)  # (B, 2N, d) patch order
        perms = cross_scan_permutations(rows, cols, self.interleave, self.reversed_scans)
        perms = perms.to(tokens.device)
        merged = cross_merge(self._scan(cross_scan(tokens, perms)), perms)
        gate = torch.cat([w2(r).flatten(1, 2) for w2, r in zip(self.w2, maps, strict=True)], 1)
        return self.w3(self.norm(merged) * F.silu(gate))


# --------------------------------------------------------------------------- factory

Projector = MLPConnector | ChannelConcatConnector | MambaProjector


def build_projector(cfg: ProjectorConfig, seed: int = 0) -> Projector:
    """The connector ``cfg`` describes, randomly initialised from ``seed``.

    Every projector has ``num_inputs`` (feature maps its ``forward`` takes) and
    ``num_tokens(num_patches)`` (visual tokens it returns per image).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.kind == "mlp":
            return MLPConnector(cfg.vision_widths[0], cfg.lm_width, cfg.mlp_hidden)
        if cfg.kind == "channel_concat":
            return ChannelConcatConnector(cfg.vision_widths, cfg.lm_width, cfg.mlp_hidden)
        return MambaProjector(
            cfg.vision_widths,
            cfg.lm_width,
            cfg.model_width,
            d_state=cfg.d_state,
            d_conv=cfg.d_conv,
            expand=cfg.expand,
            dw_kernel=cfg.dw_kernel,
            interleave=cfg.interleave,
            reversed_scans=cfg.reversed_scans,
            shared_block=cfg.shared_block,
        )
