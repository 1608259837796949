"""The logit lens: from which layer on the answer can be read off the residual stream.

The residual stream at the prediction position (sequence index T - 1) is read after the
embeddings (``layer=-1``, activation ``embed``) and after each block i (``blocks.{i}.resid_post``)
through the model's own final norm and unembedding (:func:`~vlab.analysis.inside.activations.
unembed`), as if the model stopped there. At the last layer this is the model's prediction; the
first layer where the correct position wins says where retrieval is done.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from vlab.analysis.inside.activations import num_layers, trace, unembed
from vlab.analysis.inside.results import COLUMNS as TABLE_COLUMNS
from vlab.probes.examples import ProbeExamples

COLUMNS = TABLE_COLUMNS["logit_lens"]
EMBED_LAYER = -1  # the ``layer`` of the embeddings, before block 0


def _site(layer: int) -> str:
    return "embed" if layer == EMBED_LAYER else f"blocks.{layer}.resid_post"


def logit_lens_table(
    model: torch.nn.Module, examples: ProbeExamples, *, batch_size: int = 64
) -> pd.DataFrame:
    """Tidy table of the lens at every layer, averaged over the examples of each target.

    Columns: ``layer`` (-1 the embeddings, i the output of block i), ``target_position`` p,
    ``probability`` (mean softmax probability, over the whole vocabulary, of the correct target
    token), ``accuracy`` (fraction of examples whose highest logit among the L answer tokens
    ``examples.target_ids`` is the correct one), ``rank`` (mean number of answer tokens scored
    above the correct one: 0 = top, chance (L - 1) / 2). One row per (layer, p) for the target
    positions present in ``examples``.

    Memory: the residual stream of every layer of a batch, and one layer's (B, V) logits at a
    time (the model's own logits are kept at the last position only); ``batch_size`` bounds
    both (``vlab inspect --max-memory-gb`` chooses it, :mod:`vlab.analysis.inside.budget`).
    Softmax, ranks and means are float32 whatever the model's dtype.
    """
    model.eval()
    layers = [EMBED_LAYER, *range(num_layers(model))]
    length = examples.length
    positions = torch.as_tensor(np.asarray(examples.positions), dtype=torch.long)
    sums = torch.zeros(len(layers), length, 3, dtype=torch.float64)  # probability, hit, rank
    device = next(model.parameters()).device
    answers = examples.target_ids.long().to(device)
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            ids = examples.input_ids[start : start + batch_size].to(device)
            where = positions[start : start + batch_size].to(device)
            targets = examples.targets[start : start + batch_size].long().to(device)
            acts = trace(model, ids, [_site(layer) for layer in layers], logits_to_keep=1)
            for k, layer in enumerate(layers):
                logits = unembed(model, acts[_site(layer)][:, -1]).float()  # (B, V)
                probability = logits.softmax(dim=-1).gather(1, targets[:, None])[:, 0]
                scores = logits[:, answers]  # (B, L)
                correct = scores.gather(1, where[:, None])  # (B, 1)
                hit = scores.argmax(dim=-1) == where
                rank = (scores > correct).sum(dim=-1)
                measured = torch.stack([probability, hit.float(), rank.float()], dim=-1)
                sums[k].index_add_(0, where.cpu(), measured.cpu().double())
    counts = torch.bincount(positions, minlength=length).double()
    present = torch.nonzero(counts).flatten()
    means = (sums[:, present] / counts[None, present, None]).numpy()  # (layers, P, 3)
    layer, p = np.meshgrid(np.asarray(layers), present.numpy(), indexing="ij")
    return pd.DataFrame(
        {
            "layer": layer.ravel().astype(np.int64),
            "target_position": p.ravel().astype(np.int64),
            "probability": means[..., 0].ravel(),
            "accuracy": means[..., 1].ravel(),
            "rank": means[..., 2].ravel(),
        }
    )
