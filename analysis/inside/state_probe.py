"""What the state still knows: linear probes that decode the context from a representation.

For each layer, a regularised linear probe (``linear_probe``; held-out split, majority-class
chance reported beside it) reads, from the representation at the prediction position (and
for SSM blocks also from the recurrent state right after the context: every Mamba and
Mamba-2 layer, the hybrid's Mamba layers), which token sat at each context position p, and
separately which position the query named. A Transformer can look the context up at the
prediction position, so its residual there needs to hold only the answer; an SSM must carry
the whole context through its fixed-size state: these tables show what each actually keeps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from vlab.analysis.inside import activations as acts
from vlab.analysis.inside.linear_probe import ProbeFitConfig, probe_accuracy
from vlab.analysis.inside.results import COLUMNS as TABLE_COLUMNS
from vlab.probes.examples import ProbeExamples

COLUMNS = TABLE_COLUMNS["state_probe"]


def features(
    model: nn.Module, examples: ProbeExamples, *, batch_size: int = 64
) -> dict[tuple[str, int], np.ndarray]:
    """Representations (N, F) by (source, layer): ``residual`` at the prediction position for
    layer -1 (the embeddings) and every block's output; ``ssm_state`` (each layer with an SSM
    state: all of a Mamba or Mamba-2, the hybrid's Mamba layers) the state after the last
    context position, flattened (D x N for Mamba-1, heads x P x N for Mamba-2)."""
    n_layers = acts.num_layers(model)
    ssm_layers = acts.layers_with(model, "ssm.state")
    names = ["embed", *(f"blocks.{i}.resid_post" for i in range(n_layers))]
    names += [f"blocks.{i}.ssm.state" for i in ssm_layers]
    chunks: dict[tuple[str, int], list[np.ndarray]] = {}
    for start in range(0, len(examples), batch_size):
        ids = examples.input_ids[start : start + batch_size]
        with torch.no_grad():
            got = acts.trace(model, ids, names, logits_to_keep=1)
        for layer, name in enumerate(names[: n_layers + 1], start=-1):
            chunks.setdefault(("residual", layer), []).append(_numpy(got[name][:, -1]))
        for layer in ssm_layers:
            state = got[f"blocks.{layer}.ssm.state"][..., examples.context_end]
            chunks.setdefault(("ssm_state", layer), []).append(_numpy(state.flatten(1)))
    return {key: np.concatenate(parts) for key, parts in chunks.items()}


def state_probe_table(
    model: nn.Module,
    examples: ProbeExamples,
    vocab: object = None,
    *,
    batch_size: int = 64,
    fit: ProbeFitConfig | None = None,
) -> pd.DataFrame:
    """One row per (source, layer, label, position): held-out probe accuracy and chance.

    ``label`` is ``token`` (which of the pool's tokens sat at context ``position``) or
    ``query_position`` (the queried position; ``position`` is -1 on those rows).
    """
    fit = fit or ProbeFitConfig()
    rows = []
    for (source, layer), x in features(model, examples, batch_size=batch_size).items():
        targets = [("token", p, examples.contexts[:, p]) for p in range(examples.length)]
        targets.append(("query_position", -1, examples.positions))
        for label, position, y in targets:
            score = probe_accuracy(x, np.asarray(y, dtype=np.int64), fit)
            rows.append(
                {
                    "layer": layer,
                    "source": source,
                    "label": label,
                    "position": position,
                    "accuracy": score.accuracy,
                    "chance": score.chance,
                    "n_train": score.n_train,
                    "n_test": score.n_test,
                    "n_classes": score.n_classes,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()
