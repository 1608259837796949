"""Probe examples as the analyses see them, and their corrupted twins for patching.

The probe experiment owns how its examples are made, so ``vlab inspect`` (``vlab.analysis.
inside``) reads them from here instead of rebuilding them from the probe's internals. Built
from a run's own task config (``vlab.probes.tasks``): the held-out examples the run was
evaluated on, with where each part of the sequence lies. Pure functions of the task. An image
run's examples (:func:`image_heldout_examples`) are the input embeddings its VLM gives the LM,
since the LM is what the analyses look inside; their corrupted twins are new images (patches
swapped, another patch queried) that the same VLM embeds, so every sequence index holds what
it holds in the clean example.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from vlab.probes.tasks import ProbeData, ProbeTaskConfig, ProbeVocab, layout

if TYPE_CHECKING:
    from vlab.probes.image_model import ImageProbe
    from vlab.probes.image_task import ImageVocab

Corruption = Literal["moved", "other_query"]
CORRUPTIONS: tuple[Corruption, ...] = ("moved", "other_query")


@dataclass(frozen=True)
class ProbeExamples:
    """N probe examples of one task.

    input_ids (N, T) token ids, or (N, T, H) float input embeddings (an image run's: the
    analyses' ``trace`` feeds them to the LM as ``inputs_embeds``); contexts (N, L) the pool
    index of the token (or patch) at each context position; positions (N,) the queried
    (target) position p; targets (N,) its target token id; context_start: sequence index of
    context position 0 (0 for suffix, 2 for prefix), so context position p sits at
    ``context_start + p``, unless context_index (L,) gives each position's index (an image
    run's patch slots, between markers); the prediction is read at T - 1; target_ids (L,)
    the token id standing for each position (the answer's vocabulary).

    An image run's examples also have ``labels`` (T,), what sits at each sequence index
    (``ctx{k}``, ``query``, ``out``, ``ans``, ``blank`` and the markers: ``##``, ``&&``), and
    ``embed``, which makes the input embeddings (N, T, H) of contexts (N, L) queried at
    positions (N,) as ``input_ids`` were made (render, encoder, connector): what
    :func:`corrupt` makes the twins with.
    """

    input_ids: torch.Tensor
    contexts: np.ndarray
    positions: np.ndarray
    targets: torch.Tensor
    context_start: int
    target_ids: torch.Tensor
    variant: str
    context_index: np.ndarray | None = None
    labels: tuple[str, ...] | None = None
    embed: Callable[[np.ndarray, np.ndarray], torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def length(self) -> int:
        return self.contexts.shape[1]

    @property
    def context_positions(self) -> np.ndarray:
        """(L,) the sequence index of each context position."""
        if self.context_index is not None:
            return np.asarray(self.context_index, dtype=np.int64)
        return self.context_start + np.arange(self.length, dtype=np.int64)

    @property
    def context_end(self) -> int:
        """Sequence index of the last context token: the state "right after the context"."""
        return int(self.context_positions[-1])

    @property
    def query_index(self) -> int:
        """Sequence index of the query token."""
        return self.input_ids.shape[1] - 1 if self.variant == "suffix" else 1


def heldout_examples(task: ProbeTaskConfig, vocab: ProbeVocab, n: int) -> ProbeExamples:
    """The first ``n`` held-out examples of ``task`` (balanced over target positions when n is
    a multiple of L: example i targets position i mod L)."""
    data = ProbeData(task, vocab)
    n = min(n, len(data.heldout))
    contexts = np.stack(
        [(data.heldout.input_ids[i] - vocab.base_vocab_size)[_context(task)] for i in range(n)]
    )
    positions = data.heldout.positions[:n]
    return ProbeExamples(
        input_ids=torch.from_numpy(data.heldout.input_ids[:n]),
        contexts=contexts.astype(np.int64),
        positions=positions.astype(np.int64),
        targets=torch.from_numpy(data.heldout.targets[:n]),
        context_start=0 if task.variant == "suffix" else 2,
        target_ids=torch.as_tensor(vocab.target_id(np.arange(task.length)), dtype=torch.long),
        variant=task.variant,
    )


def image_heldout_examples(probe: ImageProbe, n: int) -> ProbeExamples:
    """The first ``n`` held-out examples of an image run, as the LM of ``probe`` (its weights
    loaded) reads them: the input embeddings its VLM makes of each image and query."""
    from vlab.probes.image_model import heldout_embeddings
    from vlab.probes.image_task import sequence_labels

    held, sequence = probe.data.heldout, probe.sequence
    n = min(n, len(held))
    length = probe.data.task.length
    return ProbeExamples(
        input_ids=heldout_embeddings(probe.model, probe.data, n),
        contexts=held.contexts[:n].astype(np.int64),
        positions=held.positions[:n].astype(np.int64),
        targets=torch.from_numpy(held.targets[:n]),
        context_start=int(sequence.context_index[0]),
        target_ids=torch.as_tensor(probe.vocab.target_id(np.arange(length)), dtype=torch.long),
        variant=probe.data.task.variant,
        context_index=sequence.context_index,
        labels=sequence_labels(sequence, probe.vocab),
        embed=_ImageEmbedder(probe),
    )


@dataclass(frozen=True)
class _ImageEmbedder:
    """``ProbeExamples.embed`` of an image run: contexts and queried positions -> the input
    embeddings its VLM makes of their images and queries."""

    probe: ImageProbe

    def __call__(self, contexts: np.ndarray, positions: np.ndarray) -> torch.Tensor:
        from vlab.probes.image_model import embeddings
        from vlab.probes.image_task import ImageProbeBatch

        targets = np.asarray(self.probe.vocab.target_id(positions), dtype=np.int64)
        batch = ImageProbeBatch(np.asarray(contexts), np.asarray(positions), targets)
        return embeddings(self.probe.model, self.probe.data, batch)


def _context(task: ProbeTaskConfig) -> slice:
    start = 0 if task.variant == "suffix" else 2
    return slice(start, start + task.length)


def corrupt(
    examples: ProbeExamples,
    vocab: ProbeVocab | ImageVocab | None,
    how: Corruption,
    shift: int | None = None,
) -> ProbeExamples:
    """The corrupted twin of each example, whose answer is another position p' = p + shift
    (mod L; default L // 2, at least 1):

    - ``moved``: the queried token swaps places with the token at p' (same query, same set of
      context tokens, the answer moves);
    - ``other_query``: the same context, the query names the token at p'.

    Token examples are laid out again with ``vocab``; image examples (``examples.embed``)
    swap two patches of the image, or query another patch of it, and are embedded again by
    their VLM (``vocab`` unused): the twin's pixels differ from the clean image's only in the
    two swapped cells, or its query image alone differs.
    """
    length = examples.length
    if length < 2:
        raise ValueError("corrupting needs a context of at least 2 positions")
    shift = max(1, length // 2) if shift is None else shift
    others = (examples.positions + shift) % length
    contexts = examples.contexts.copy()
    rows = np.arange(len(examples))
    if how == "moved":
        contexts[rows, others] = examples.contexts[rows, examples.positions]
        contexts[rows, examples.positions] = examples.contexts[rows, others]
    elif how != "other_query":
        raise ValueError(f"unknown corruption {how!r} (known: {', '.join(CORRUPTIONS)})")
    if examples.embed is not None:
        inputs = examples.embed(contexts, others)
    elif examples.input_ids.is_floating_point() or not isinstance(vocab, ProbeVocab):
        raise ValueError("corrupting input embeddings needs examples.embed to embed the twins")
    else:
        inputs = torch.from_numpy(
            np.stack(
                [
                    layout(c, int(p), examples.variant, vocab)
                    for c, p in zip(contexts, others, strict=True)
                ]
            )
        )
    return replace(
        examples,
        input_ids=inputs,
        contexts=contexts,
        positions=others,
        targets=examples.target_ids[torch.from_numpy(others)],
    )
