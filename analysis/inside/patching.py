"""What causes the answer: activation patching between clean and corrupted inputs.

Each example has a corrupted twin (``examples.corrupt``) whose answer is another position:
``moved`` swaps the queried token with another context token, ``other_query`` asks for
another token of the same context. An image run's twins are built in the image's terms
(``moved`` swaps the queried patch with another patch of the grid, ``other_query`` queries
another patch of the same image) and embedded by the run's VLM as the clean images are, so the
LM reads clean and corrupted sequences of one layout, index for index (the patched runs feed
it input embeddings, as its other analyses do). We run the CORRUPTED input with one CLEAN
activation patched in (the denoising direction) and ask how much of the clean answer comes
back. The measure is the logit difference at the prediction position T - 1,

    LD = logit[clean target] - logit[corrupted target],

normalised as ``recovery = (LD_patched - LD_corrupted) / (LD_clean - LD_corrupted)`` over the
means of a group of examples: 0 = as corrupted, 1 = as clean (NaN when clean and corrupted
means agree to 1e-6). The group is all examples together, not one per target position, so the
table stays one row per (corruption, site, layer, position).

Sites (per layer i and sequence index t; ``token`` names what sits at t: ``ctx{p}`` context
position p, ``query``, ``out``, ``ans`` and, in an image run, its markers (``##``, ``&&``)
and ``blank`` grid cells):

- ``resid_pre``: the residual stream entering block i at t (layers 0..n-1), plus layer n =
  the residual stream leaving the last block (``blocks.{n-1}.resid_post``);
- ``ssm_state`` (blocks with an SSM state: every Mamba and Mamba-2 layer, the hybrid's Mamba
  layers): the recurrent state of block i after t (see
  :class:`vlab.analysis.inside.activations.StatePatch`);
- ``conv_window`` (the same layers): the causal conv's window after t alone (the pre-conv
  inputs of positions t-K+2..t that the conv at t+1..t+K-1 still reads, ``ssm.conv_window``);
- ``state_and_window``: the state and the window after t together, everything later positions
  receive from positions up to t through block i's mixer. Beside ``ssm_state`` this tells
  "the state does not carry the answer" from "the conv carries it": in a one-block model
  (or patched in every SSM block at once) state and window together at the last position
  where clean and corrupted inputs differ restore the clean answer exactly.

Cost: (n + 1, plus three per SSM layer) x T patched forward passes per example and corruption
(the two window sites add two per SSM layer). The T positions of an example run together in
one batch: a patched pass holds the T copies of
``batch_size // T`` examples (at least one), so at most ``batch_size`` sequences (512 by
default: a quarter of the time of 64 on the tiny CPU presets; lower it for large models, or
let ``vlab inspect --max-memory-gb`` choose it, :mod:`vlab.analysis.inside.budget`): with T
above ``batch_size`` an example's copies are split over several passes. Every pass unembeds
the last position alone (a 50k vocabulary's full logits would be (B * T, T, V)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from vlab.analysis.inside.activations import (
    Patch,
    layers_with,
    num_layers,
    outputs_with_patches,
    trace,
)
from vlab.analysis.inside.results import COLUMNS as TABLE_COLUMNS
from vlab.probes.examples import CORRUPTIONS, Corruption, ProbeExamples, corrupt
from vlab.probes.image_task import ImageVocab
from vlab.probes.tasks import ProbeVocab

COLUMNS = TABLE_COLUMNS["patching"]
# The SSM sites: (site, patch the state, patch the conv window), in the table's order.
CARRIED_SITES = (
    ("ssm_state", True, False),
    ("conv_window", False, True),
    ("state_and_window", True, True),
)
# |LD_clean - LD_corrupted| below this: clean and corrupted are not told apart, no recovery.
_FLAT = 1e-6


def token_labels(examples: ProbeExamples) -> list[str]:
    """What sits at each sequence index: ``ctx{p}`` for context position p, ``out``,
    ``query`` and (prefix variant) ``ans``; an image run's examples name theirs
    (``examples.labels``: the same names, its markers and blank cells besides)."""
    if examples.labels is not None:
        return list(examples.labels)
    labels = ["out"] * examples.input_ids.shape[1]
    labels[examples.query_index] = "query"
    for p, t in enumerate(examples.context_positions):
        labels[t] = f"ctx{p}"
    if examples.variant == "prefix":
        labels[-1] = "ans"
    return labels


def logit_diff(
    logits: torch.Tensor, clean_targets: torch.Tensor, corrupted_targets: torch.Tensor
) -> torch.Tensor:
    """LD (B,) = logit[clean target] - logit[corrupted target] at the last position, from
    ``logits`` (B, T, V) (or (B, 1, V), the last position's alone) and target token ids (B,),
    in float32 whatever the model's dtype."""
    last = logits[:, -1].float()
    rows = torch.arange(last.shape[0], device=last.device)
    clean = last[rows, clean_targets.to(last.device)]
    return (clean - last[rows, corrupted_targets.to(last.device)]).cpu()


def recovery(ld_patched: float, ld_clean: float, ld_corrupted: float) -> float:
    """(LD_patched - LD_corrupted) / (LD_clean - LD_corrupted): 0 as corrupted, 1 as clean;
    NaN when the denominator is below 1e-6 in size."""
    span = ld_clean - ld_corrupted
    return math.nan if abs(span) < _FLAT else (ld_patched - ld_corrupted) / span


@dataclass
class PatchedDiffs:
    """Logit differences of B examples: ``clean`` and ``corrupted`` (B,) unpatched, and
    ``patched[(site, layer)]`` (B, T): the corrupted input with the clean activation of that
    site and layer patched in at sequence index t."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    patched: dict[tuple[str, int], torch.Tensor]


def _resid_names(model: nn.Module) -> list[tuple[int, str]]:
    """(layer, name) of the residual stream entering each block, then leaving the last."""
    n = num_layers(model)
    return [(i, f"blocks.{i}.resid_pre") for i in range(n)] + [(n, f"blocks.{n - 1}.resid_post")]


def _each_position(corrupted: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """(B * T, T, ...) from two (B, T, ...) activations: copy (b, t) is ``corrupted[b]`` with
    sequence index t taken from ``clean[b]``."""
    length = corrupted.shape[1]
    values = corrupted.unsqueeze(1).repeat(1, length, *([1] * (corrupted.dim() - 1)))
    index = torch.arange(length, device=corrupted.device)
    values[:, index, index] = clean
    return values.flatten(0, 1)


def patched_logit_diffs(
    model: nn.Module,
    clean_ids: torch.Tensor,
    corrupted_ids: torch.Tensor,
    clean_targets: torch.Tensor,
    corrupted_targets: torch.Tensor,
    *,
    chunk: int | None = None,
) -> PatchedDiffs:
    """Patch every site, layer and sequence index of ``clean_ids`` (B, T) into a run of
    ``corrupted_ids`` (B, T), one at a time; LDs between the target ids (B,) of each. Both
    may be input embeddings (B, T, H) instead (an image run's).

    The T sequence indices of one site run as one batch of B * T copies of the corrupted
    input, each patched at every index (its own corrupted value except at t, which gets the
    clean one: the same as patching t alone, up to float rounding of the batch size). The SSM
    state and/or conv window (of each layer that has one) are patched by replacing the mixer's
    output with :func:`vlab.analysis.inside.activations.outputs_with_patches`, exactly what a
    ``StatePatch`` does. ``chunk``: at most this many copies per patched pass (None: all B * T
    at once); every pass unembeds the last position alone.
    """
    device = next(model.parameters()).device
    clean_ids, corrupted_ids = clean_ids.to(device), corrupted_ids.to(device)
    batch, length = corrupted_ids.shape[:2]
    resid = _resid_names(model)
    layers = layers_with(model, "ssm.state")
    resid_names = [name for _, name in resid]
    carried = [f"blocks.{i}.ssm.{n}" for i in layers for n in ("state", "conv_window")]
    clean = trace(model, clean_ids, resid_names + carried, logits_to_keep=1)
    mixer_ins = [f"blocks.{i}.mixer_in" for i in layers]
    corrupted = trace(model, corrupted_ids, resid_names + mixer_ins, logits_to_keep=1)
    copies = corrupted_ids.repeat_interleave(length, dim=0)
    clean_rep = clean_targets.repeat_interleave(length)
    corrupted_rep = corrupted_targets.repeat_interleave(length)
    everywhere = list(range(length))

    def run(name: str, values: torch.Tensor) -> torch.Tensor:
        step, diffs = chunk or len(copies), []
        for start in range(0, len(copies), step):
            part = slice(start, start + step)
            patch = Patch(name, everywhere, values[part])
            out = trace(model, copies[part], patches=[patch], logits_to_keep=1)
            diffs.append(logit_diff(out["logits"], clean_rep[part], corrupted_rep[part]))
        return torch.cat(diffs).view(batch, length)

    patched = {}
    for layer, name in resid:
        values = _each_position(corrupted[name], clean[name])
        patched[("resid_pre", layer)] = run(name, values)
    # what an SSM block carries past t: its state, its conv window, both (see the docstring)
    for site, with_state, with_window in CARRIED_SITES:
        for layer in layers:
            state = clean[f"blocks.{layer}.ssm.state"] if with_state else None
            window = clean[f"blocks.{layer}.ssm.conv_window"] if with_window else None
            mixer_in = corrupted[f"blocks.{layer}.mixer_in"]
            outputs = outputs_with_patches(model, layer, mixer_in, state, window)  # (B, T, T, H)
            patched[(site, layer)] = run(f"blocks.{layer}.mixer_out", outputs.flatten(0, 1))
    return PatchedDiffs(
        clean=logit_diff(clean["logits"], clean_targets, corrupted_targets),
        corrupted=logit_diff(corrupted["logits"], clean_targets, corrupted_targets),
        patched=patched,
    )


def patching_table(
    model: nn.Module,
    examples: ProbeExamples,
    vocab: ProbeVocab | ImageVocab,
    *,
    corruptions: Sequence[Corruption] = CORRUPTIONS,
    batch_size: int = 512,
) -> pd.DataFrame:
    """Recovery of the clean answer when one clean activation is patched into the corrupted
    run: one row per corruption, site (``resid_pre``, ``ssm_state``, ``conv_window``,
    ``state_and_window``), layer and sequence index ``position`` (``token`` says what sits
    there), with the mean LDs (clean, corrupted, patched) over all ``n`` examples and their
    ``recovery``. ``vocab`` builds the corrupted
    twins of token examples (:func:`vlab.probes.examples.corrupt`; an image run's
    examples embed theirs). Layer n of ``resid_pre`` is the residual stream after the last
    block."""
    labels = token_labels(examples)
    length = len(labels)
    per_batch = max(1, batch_size // length)
    rows = []
    with torch.no_grad():
        for how in corruptions:
            twins = corrupt(examples, vocab, how)
            clean, corrupted, patched = [], [], {}
            for start in range(0, len(examples), per_batch):
                part = slice(start, start + per_batch)
                diffs = patched_logit_diffs(
                    model,
                    examples.input_ids[part],
                    twins.input_ids[part],
                    examples.targets[part],
                    twins.targets[part],
                    chunk=batch_size,
                )
                clean.append(diffs.clean)
                corrupted.append(diffs.corrupted)
                for key, value in diffs.patched.items():
                    patched.setdefault(key, []).append(value)
            ld_clean = torch.cat(clean).double().mean().item()
            ld_corrupted = torch.cat(corrupted).double().mean().item()
            for (site, layer), parts in patched.items():
                means = torch.cat(parts).double().mean(dim=0)
                for t in range(length):
                    ld = means[t].item()
                    rows.append(
                        (how, site, layer, t, labels[t], recovery(ld, ld_clean, ld_corrupted))
                        + (ld_clean, ld_corrupted, ld, len(examples))
                    )
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.astype({"layer": np.int64, "position": np.int64, "n": np.int64})
