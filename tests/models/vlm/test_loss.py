"""The VLM loss normalisation against a hand computation."""

import math

import torch

from vlab.models.vlm.loss import per_sequence_loss, sequence_mean_loss
from vlab.models.vlm.sequence import IGNORE


def test_loss_is_a_mean_per_sequence_then_over_sequences():
    V = 3
    # logits that put probability p on token 0 everywhere: loss of target 0 is -log p
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25])).expand(2, 4, V).clone()
    # sequence 0: targets at positions 1, 2, 3 (tokens 0, 1, 1); sequence 1: one target (0)
    labels = torch.tensor([[IGNORE, 0, 1, 1], [IGNORE, IGNORE, IGNORE, 0]])
    seq0 = (-math.log(0.5) - 2 * math.log(0.25)) / 3
    seq1 = -math.log(0.5)
    assert torch.allclose(per_sequence_loss(logits, labels), torch.tensor([seq0, seq1]))
    assert math.isclose(sequence_mean_loss(logits, labels).item(), (seq0 + seq1) / 2, rel_tol=1e-6)
    # a token mean would weigh sequence 0 three times as much: the two differ
    assert not math.isclose((3 * seq0 + seq1) / 4, (seq0 + seq1) / 2)


def test_sequences_without_targets_are_left_out():
    logits = torch.zeros(2, 3, 4, requires_grad=True)
    labels = torch.tensor([[IGNORE, 1, 2], [IGNORE, IGNORE, IGNORE]])
    loss = sequence_mean_loss(logits, labels)
    assert math.isclose(loss.item(), math.log(4), rel_tol=1e-6)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0
