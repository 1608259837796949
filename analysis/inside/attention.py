"""Where the model looks: the weight the prediction position gives each context position.

The answer to a probe example is the queried token's position p, so a model that retrieves by
looking should put its weight on context position p when it predicts (at sequence index T - 1).
This module reads that weight per layer, for every (target position p, context position s):

- GPT-NeoX (``kind="attention"``): the softmax pattern ``blocks.{i}.attn.pattern[b, h, T-1, :]``,
  per head and as the mean over heads (``head=-1``). Rows sum to one over all T positions; the
  table keeps that normalisation and holds only the L context columns, so a row of the table
  sums to at most one (the rest went to the marker, query, ... tokens).
- Mamba (``kind="hidden_attention"``): the selective scan's implicit attention
  ``blocks.{i}.ssm.hidden_attention[b, :, T-1, :]`` (D channels, see
  :mod:`vlab.analysis.inside.hidden_attention`), as a *share*: its absolute value averaged over
  the D channels (Ali et al. 2024 also aggregate over channels), divided by that average's sum
  over all T source positions. Unlike softmax attention the raw weights neither sum to one nor
  stay positive; the share is what makes the two arms comparable. One row per layer,
  ``head=-1``.

Weights are means over the examples that query each position p, one row per (layer, head, p, s).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from vlab.analysis.inside.activations import mixer, model_type, num_layers, trace
from vlab.analysis.inside.examples import ProbeExamples
from vlab.analysis.inside.hidden_attention import MixerInternals, mixer_internals
from vlab.analysis.inside.results import COLUMNS as TABLE_COLUMNS

COLUMNS = TABLE_COLUMNS["attention"]
MEAN_HEAD = -1  # the head index of the mean over heads (and of Mamba's channel aggregate)
KINDS = {"gpt_neox": "attention", "mamba": "hidden_attention"}


def _last_row(internals: MixerInternals) -> torch.Tensor:
    """``hidden_attention(...)[:, :, T-1, :]`` (B, D, T) without the (T, T) matrix.

    alpha[T-1, s] = sum_n C_{T-1}[n] exp(A[n] sum_{k=s+1..T-1} delta_k) delta_s B_s[n]: memory
    B x D x T x N instead of B x D x T x T x N (gigabytes for a paper-sized Mamba and a long
    context). Tested against the full matrix of ``trace``.
    """
    delta, A, B, C = internals.delta, internals.A, internals.B, internals.C
    cum = torch.cumsum(delta, dim=-1)  # (B, D, T)
    gap = cum[..., -1:] - cum  # (B, D, T): the delta mass between s and T - 1
    decay = torch.exp(gap.unsqueeze(-1) * A[None, :, None, :])  # (B, D, T, N)
    return torch.einsum("bn,bdsn,bds,bns->bds", C[..., -1], decay, delta, B)


def _attention_rows(model: torch.nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, the weights (B, K, T) from the last position to every position, K as in
    :func:`_heads`: the softmax heads and their mean for GPT-NeoX, Mamba's channel-aggregated
    share for Mamba."""
    layers = range(num_layers(model))
    if model_type(model) == "gpt_neox":
        names = [f"blocks.{i}.attn.pattern" for i in layers]
        acts = trace(model, input_ids, names)
        rows = [acts[n][:, :, -1, :].float() for n in names]  # (B, heads, T)
        return [torch.cat([r, r.mean(dim=1, keepdim=True)], dim=1) for r in rows]
    names = [f"blocks.{i}.mixer_in" for i in layers]
    acts = trace(model, input_ids, names)
    rows = []
    for i, name in zip(layers, names, strict=True):
        row = _last_row(mixer_internals(mixer(model, i), acts[name])).abs().mean(dim=1)  # (B, T)
        rows.append((row / row.sum(dim=-1, keepdim=True)).unsqueeze(1))
    return rows


def _heads(model: torch.nn.Module) -> list[int]:
    """The ``head`` label of each row :func:`_attention_rows` returns."""
    if model_type(model) == "gpt_neox":
        return [*range(model.config.num_attention_heads), MEAN_HEAD]
    return [MEAN_HEAD]


def attention_table(
    model: torch.nn.Module, examples: ProbeExamples, *, batch_size: int = 64
) -> pd.DataFrame:
    """Tidy table of where the prediction position looks, averaged over the examples that
    query each position.

    Columns: ``layer``, ``head`` (-1: mean over heads; Mamba's only row), ``kind``
    ("attention" | "hidden_attention"), ``target_position`` p (the queried position),
    ``source_position`` s (context position 0..L-1, sequence index ``context_start + s``),
    ``weight`` (see the module docstring: the softmax weight, or Mamba's share). One row per
    (layer, head, p, s) for the target positions present in ``examples``.
    """
    model.eval()
    length, heads = examples.length, _heads(model)
    context = examples.context_start + torch.arange(length)
    positions = torch.as_tensor(np.asarray(examples.positions), dtype=torch.long)
    # per layer, the weights summed over the examples of each target: (L_p, K, L_s)
    sums = torch.zeros(num_layers(model), length, len(heads), length, dtype=torch.float64)
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            ids = examples.input_ids[start : start + batch_size].to(device)
            where = positions[start : start + batch_size]
            for i, rows in enumerate(_attention_rows(model, ids)):
                sums[i].index_add_(0, where, rows.cpu()[:, :, context].double())
    counts = torch.bincount(positions, minlength=length).double()
    present = torch.nonzero(counts).flatten()
    means = sums[:, present] / counts[present, None, None]
    means = means.transpose(1, 2).numpy()  # (layers, K, P, L_s)
    layer, h, p, s = np.meshgrid(
        np.arange(num_layers(model)),
        np.asarray(heads),
        present.numpy(),
        np.arange(length),
        indexing="ij",
    )
    table = pd.DataFrame(
        {
            "layer": layer.ravel(),
            "head": h.ravel(),
            "kind": KINDS[model_type(model)],
            "target_position": p.ravel(),
            "source_position": s.ravel(),
            "weight": means.ravel(),
        }
    )
    return table.astype({c: "int64" for c in COLUMNS if c not in ("kind", "weight")})


def queried_mass(table: pd.DataFrame) -> pd.DataFrame:
    """The weight on the queried token's own position: per (layer, head, kind,
    target_position), the ``weight`` at ``source_position == target_position`` as ``mass``."""
    on_target = table[table["source_position"] == table["target_position"]]
    keys = ["layer", "head", "kind", "target_position"]
    out = on_target[[*keys, "weight"]].rename(columns={"weight": "mass"})
    return out.sort_values(keys).reset_index(drop=True)
