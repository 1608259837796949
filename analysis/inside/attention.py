"""Where the model looks: the weight the prediction position gives each context position.

The answer to a probe example is the queried token's position p, so a model that retrieves by
looking should put its weight on context position p when it predicts (at sequence index T - 1).
This module reads that weight per layer, for every (target position p, context position s):

- Attention blocks (GPT-NeoX; the hybrid's attention layers; ``kind="attention"``): the
  softmax pattern ``blocks.{i}.attn.pattern[b, h, T-1, :]``, per head and as the mean over
  heads (``head=-1``). Rows sum to one over all T positions; the table keeps that
  normalisation and holds only the L context columns, so a row of the table sums to at most
  one (the rest went to the marker, query, ... tokens).
- SSM blocks (Mamba; the hybrid's Mamba layers; Mamba-2; ``kind="hidden_attention"``): the
  selective scan's implicit attention ``blocks.{i}.ssm.hidden_attention[b, :, T-1, :]`` (D
  channels for Mamba-1, see :mod:`vlab.models.backbones.mamba_internals`; one weight per head
  for Mamba-2, shared by its P channels, before its gated norm, see
  :mod:`vlab.models.backbones.mamba2_internals`), as a *share*: its absolute value averaged over the
  channels (Ali et al. 2024 also aggregate over channels), divided by that average's sum over
  all T source positions. Unlike softmax attention the raw weights neither sum to one nor
  stay positive; the share is what makes the two kinds comparable. One row per layer,
  ``head=-1``.

A hybrid's table has both kinds, each layer its own; ``kind`` says which (the block record's
``readout``, :func:`readout_kind`).

Weights are means over the examples that query each position p, one row per (layer, head, p, s).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from vlab.analysis.inside.activations import (
    block,
    layers_with,
    mixer,
    num_layers,
    ssm_module,
    trace,
)
from vlab.analysis.inside.results import COLUMNS as TABLE_COLUMNS
from vlab.probes.examples import ProbeExamples

COLUMNS = TABLE_COLUMNS["attention"]
MEAN_HEAD = -1  # the head index of the mean over heads (and of an SSM's channel aggregate)


def readout_kind(model: torch.nn.Module, layer: int) -> str:
    """The ``kind`` of layer ``layer``'s rows: its block record's ``readout``
    ("attention" | "hidden_attention")."""
    return block(model, layer).readout


def _share(row: torch.Tensor) -> torch.Tensor:
    """An SSM's raw last-row weights (B, channels or heads, T) as one share row (B, 1, T):
    the absolute value averaged over channels, over its sum across the T positions."""
    mean = row.float().abs().mean(dim=1)
    return (mean / mean.sum(dim=-1, keepdim=True)).unsqueeze(1)


def _ssm_row(model: torch.nn.Module, layer: int, mixer_in: torch.Tensor) -> torch.Tensor:
    """The share row (B, 1, T) of SSM block ``layer`` from its input (B, T, H), through the
    block's internals module (its ``last_row``: (B, D, T) per channel for Mamba-1, (B, heads,
    T) for Mamba-2, whose weights are shared by a head's channels, so their mean over heads
    is the mean over channels)."""
    internals = ssm_module(model, layer)
    return _share(internals.last_row(internals.mixer_internals(mixer(model, layer), mixer_in)))


def _source(model: torch.nn.Module, layer: int) -> str:
    """What layer ``layer``'s weights are read from: its pattern, or its SSM's input."""
    if layer in layers_with(model, "attn.pattern"):
        return f"blocks.{layer}.attn.pattern"
    return f"blocks.{layer}.mixer_in"


def _attention_rows(model: torch.nn.Module, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, the weights (B, K, T) from the last position to every position, K as in
    :func:`_heads` (per layer): the softmax heads and their mean for an attention block, the
    channel-aggregated share for an SSM block."""
    names = [_source(model, i) for i in range(num_layers(model))]
    acts = trace(model, input_ids, names, logits_to_keep=1)
    rows = []
    for i, name in enumerate(names):
        if name.endswith("attn.pattern"):
            row = acts[name][:, :, -1, :].float()  # (B, heads, T)
            rows.append(torch.cat([row, row.mean(dim=1, keepdim=True)], dim=1))
        else:
            rows.append(_ssm_row(model, i, acts[name]))
    return rows


def _heads(model: torch.nn.Module, layer: int) -> list[int]:
    """The ``head`` label of each row :func:`_attention_rows` returns for ``layer``."""
    if layer in layers_with(model, "attn.pattern"):
        return [*range(model.config.num_attention_heads), MEAN_HEAD]
    return [MEAN_HEAD]


def _layer_table(
    layer: int, kind: str, heads: list[int], present: np.ndarray, means: np.ndarray
) -> pd.DataFrame:
    """One layer's rows from its mean weights ``means`` (K heads, P targets, L sources)."""
    h, p, s = np.meshgrid(np.asarray(heads), present, np.arange(means.shape[-1]), indexing="ij")
    return pd.DataFrame(
        {
            "layer": layer,
            "head": h.ravel(),
            "kind": kind,
            "target_position": p.ravel(),
            "source_position": s.ravel(),
            "weight": means.ravel(),
        }
    )


def attention_table(
    model: torch.nn.Module, examples: ProbeExamples, *, batch_size: int = 64
) -> pd.DataFrame:
    """Tidy table of where the prediction position looks, averaged over the examples that
    query each position.

    Columns: ``layer``, ``head`` (-1: mean over heads; an SSM layer's only row), ``kind``
    ("attention" | "hidden_attention", per layer), ``target_position`` p (the queried
    position), ``source_position`` s (context position 0..L-1, sequence index
    ``context_positions[s]``), ``weight`` (see the module docstring: the softmax weight, or an
    SSM's share). One row per (layer, head, p, s) for the target positions present in
    ``examples``.
    """
    model.eval()
    length, layers = examples.length, range(num_layers(model))
    heads = [_heads(model, i) for i in layers]
    context = torch.as_tensor(examples.context_positions)
    positions = torch.as_tensor(np.asarray(examples.positions), dtype=torch.long)
    # per layer, the weights summed over the examples of each target: (L_p, K, L_s)
    sums = [torch.zeros(length, len(h), length, dtype=torch.float64) for h in heads]
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            ids = examples.input_ids[start : start + batch_size].to(device)
            where = positions[start : start + batch_size]
            for i, rows in enumerate(_attention_rows(model, ids)):
                sums[i].index_add_(0, where, rows.cpu()[:, :, context].double())
    counts = torch.bincount(positions, minlength=length).double()
    present = torch.nonzero(counts).flatten()
    parts = []
    for i in layers:
        means = (sums[i][present] / counts[present, None, None]).transpose(0, 1)  # (K, P, L_s)
        kind = readout_kind(model, i)
        parts.append(_layer_table(i, kind, heads[i], present.numpy(), means.numpy()))
    table = pd.concat(parts, ignore_index=True)
    return table.astype({c: "int64" for c in COLUMNS if c not in ("kind", "weight")})


def queried_mass(table: pd.DataFrame) -> pd.DataFrame:
    """The weight on the queried token's own position: per (layer, head, kind,
    target_position), the ``weight`` at ``source_position == target_position`` as ``mass``."""
    on_target = table[table["source_position"] == table["target_position"]]
    keys = ["layer", "head", "kind", "target_position"]
    out = on_target[[*keys, "weight"]].rename(columns={"weight": "mass"})
    return out.sort_values(keys).reset_index(drop=True)
