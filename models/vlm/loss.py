"""The VLM loss: cross-entropy averaged over each sequence's target tokens, then over sequences.

A plain token mean would let long responses (dense captions, packed sequences of 20 QA pairs)
outweigh short ones; averaging per sequence first makes every example weigh the same, as the
paper does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlab.models.vlm.sequence import IGNORE


def per_sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of each sequence over its target tokens.

    ``logits`` (B, T, V) predict the token after each position; ``labels`` (B, T) hold the
    token ids to predict at each position (IGNORE elsewhere), unshifted: position t's label is
    predicted by logits at t - 1. Returns (B,); a sequence without targets gets 0 and is left
    out of :func:`sequence_mean_loss`.
    """
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(shift_labels.shape)
    mask = (shift_labels != IGNORE).float()
    return (token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)


def sequence_mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sequence means averaged over the sequences that have targets (a scalar)."""
    per_seq = per_sequence_loss(logits, labels)
    has_targets = (labels[:, 1:] != IGNORE).any(1)
    if not has_targets.any():
        return per_seq.sum() * 0.0
    return per_seq[has_targets].mean()
