"""The retrieval probe as the training engine sees it (:class:`~vlab.training.engine.TrainTask`).

Batches come from :class:`~vlab.probes.tasks.ProbeData` by step, the loss is cross-entropy on
the target token only (predicted at the last input position), and each evaluation records
held-out accuracy overall and per target position. The image probe's task
(:class:`~vlab.probes.image_model.ImageProbeTrainTask`) is this one with image inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlab.models.backbones.last_position import last_position_only
from vlab.probes.tasks import ProbeBatch, ProbeData
from vlab.probes.tracking import per_position_accuracy
from vlab.training.engine import Batch


def target_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits (N, vocab) at the last input position, where the target is predicted.

    Nothing else is read, so the final block runs at that position only where the
    architecture allows (:func:`~vlab.models.backbones.last_position.last_position_only`: the
    same logits and gradients to float rounding, a quarter less time for a tiny Pythia)."""
    with last_position_only(model):
        out = model(input_ids=input_ids, logits_to_keep=1, use_cache=False)
    return out.logits[:, -1].float()


class ProbeTrainTask:
    """The retrieval probe as seen by the engine.

    What a batch of examples feeds the model is :meth:`inputs`, how the target logits are
    read is :meth:`logits`: the image task (:class:`~vlab.probes.image_model.
    ImageProbeTrainTask`) changes those two and keeps the loss and the evaluation.
    """

    def __init__(
        self, data: ProbeData, batch_size: int, eval_batch_size: int, device: torch.device
    ):
        self.data = data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.device = device

    def inputs(self, batch: ProbeBatch, rows: slice = slice(None)) -> Batch:
        """The model inputs of examples ``rows`` of ``batch``: CPU tensors [N, ...]."""
        return {"input_ids": torch.from_numpy(batch.input_ids[rows])}

    def logits(self, model: nn.Module, inputs: Batch) -> torch.Tensor:
        """(N, vocab) target logits of :meth:`inputs` (on the model's device)."""
        return target_logits(model, inputs["input_ids"])

    def train_batch(self, step: int) -> Batch:
        b = self.data.train_batch(step, self.batch_size)
        return {**self.inputs(b), "targets": torch.from_numpy(b.targets)}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch), batch["targets"])

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        held = self.data.heldout
        losses, correct = [], []
        for i in range(0, len(held), self.eval_batch_size):
            rows = slice(i, i + self.eval_batch_size)
            inputs = {k: v.to(self.device) for k, v in self.inputs(held, rows).items()}
            tgt = torch.from_numpy(held.targets[rows]).to(self.device)
            logits = self.logits(model, inputs)
            losses.append(F.cross_entropy(logits, tgt, reduction="sum").item())
            correct.append((logits.argmax(-1) == tgt).cpu().numpy())
        hits = np.concatenate(correct)
        return {
            "eval_loss": sum(losses) / len(held),
            "accuracy": float(hits.mean()),
            "per_position": per_position_accuracy(hits, held.positions, self.data.task.length),
        }
