"""The synthetic multimodal retrieval task ("synthetic grounding"), as pure functions.

A context of L distinct "patch" tokens ``<s0> … <s{V-1}>`` (stand-ins for image patches, added
to the LM's vocabulary) and a query naming one of them; the model must output a token standing
for the queried token's position p (0-based)::

    suffix (task-agnostic):  <s..> x L, <out>, <s_q>         -> target(p)
    prefix (task-aware):     <out>, <s_q>, <s..> x L, <ans>  -> target(p)

Loss and accuracy are taken on the target only, predicted at the last input position.

Every example is a pure function of ``(seed, split, index)``: training data streams without
being held in memory, any step's batch can be rebuilt after a resume, and held-out and training
sets are reproducible. Target positions are balanced by construction (example ``i`` targets
position ``i mod L``), and training sequences that collide with a held-out sequence are
redrawn, so the two sets are disjoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import lgamma, log, perm
from typing import Literal

import numpy as np

from vlab.errors import ConfigError

Variant = Literal["suffix", "prefix"]
TargetMode = Literal["vocab", "position"]
Modality = Literal["tokens", "image"]

_TRAIN, _HELDOUT = 0, 1


@dataclass(frozen=True)
class ProbeTaskConfig:
    """The task: context length, pool, layout and data sizes.

    ``pool_size`` None means ``2 * length`` (free choice of the spec; must be >= length).
    ``target_offset`` is the id of the original-vocabulary token that stands for position 0 in
    ``vocab`` mode (position p is ``target_offset + p``). ``n_train`` / ``n_heldout`` must be
    multiples of ``length`` so that every position is the target of exactly 1/L of them; None
    means the paper's 1M training examples (rounded down to a multiple of L) and 32 held-out
    examples per position (the paper's 100k is a config value away).

    ``modality`` "tokens" is this module's task; "image" shows the context as an image of
    patches through a VLM's encoder and connector (:mod:`vlab.probes.image_task`; the run's
    ``image`` section). The data is the same either way; ``pool_size`` then counts patch images.
    """

    length: int = 8
    pool_size: int | None = None
    variant: Variant = "suffix"
    target_mode: TargetMode = "vocab"
    target_offset: int = 0
    n_train: int | None = None
    n_heldout: int | None = None
    seed: int = 0
    modality: Modality = "tokens"

    def __post_init__(self) -> None:
        if self.modality not in ("tokens", "image"):
            raise ConfigError("modality", f"{self.modality!r} is not one of 'tokens', 'image'")
        if self.length < 1:
            raise ConfigError("length", f"must be >= 1, got {self.length}")
        if self.pool_size is not None and self.pool_size < self.length:
            raise ConfigError(
                "pool_size",
                f"the pool of patch tokens ({self.pool_size}) must be >= the context length "
                f"({self.length}): a context holds distinct tokens",
            )
        if self.target_offset < 0:
            raise ConfigError("target_offset", f"must be >= 0, got {self.target_offset}")
        for name, n in (("n_train", self.train_size), ("n_heldout", self.heldout_size)):
            if n < self.length or n % self.length:
                raise ConfigError(
                    name,
                    f"must be a positive multiple of length={self.length} so target positions "
                    f"are balanced, got {n}",
                )
        if self.seed < 0:
            raise ConfigError("seed", f"must be >= 0, got {self.seed}")
        # Disjoint, duplicate-free held-out set needs enough distinct sequences.
        if _log_num_sequences(self.pool, self.length) < log(4 * self.heldout_size):
            raise ConfigError(
                "n_heldout",
                f"{self.heldout_size} held-out examples is too many for length={self.length} and "
                f"pool_size={self.pool}: too few distinct sequences to keep training disjoint",
            )

    @property
    def pool(self) -> int:
        return self.pool_size if self.pool_size is not None else 2 * self.length

    @property
    def train_size(self) -> int:
        return self.n_train if self.n_train is not None else 1_000_000 // self.length * self.length

    @property
    def heldout_size(self) -> int:
        return self.n_heldout if self.n_heldout is not None else 32 * self.length

    @property
    def seq_len(self) -> int:
        """Input length: L context tokens, marker and query (+ ``<ans>`` for prefix); an
        image task's is its :class:`~vlab.probes.image_task.ImageSequence`'s."""
        return self.length + (2 if self.variant == "suffix" else 3)


def num_sequences(pool: int, length: int) -> int:
    """How many distinct examples the task has: ordered contexts of ``length`` distinct tokens
    from ``pool``, times the ``length`` positions a query can name. When a run sees more
    training examples than this (minus the held-out set), it sees repeats and can memorise."""
    return perm(pool, length) * length


def _log_num_sequences(pool: int, length: int) -> float:
    """log of (ordered contexts of ``length`` distinct tokens from ``pool``) x (queries)."""
    return lgamma(pool + 1) - lgamma(pool - length + 1) + log(length)


@dataclass(frozen=True)
class ProbeVocab:
    """Where the task's tokens live in the model's vocabulary.

    New tokens are appended after the ``base_vocab_size`` tokens of the backbone, in this order:
    ``<s0> … <s{V-1}>``, ``<out>``, ``<ans>``, then ``<p0> … <p{L-1}>`` in ``position`` mode.
    """

    base_vocab_size: int
    pool: int
    length: int
    target_mode: TargetMode = "vocab"
    target_offset: int = 0

    @classmethod
    def for_task(cls, task: ProbeTaskConfig, base_vocab_size: int) -> ProbeVocab:
        if task.target_mode == "vocab" and task.target_offset + task.length > base_vocab_size:
            raise ConfigError(
                "task.target_offset",
                f"vocab targets need ids target_offset..target_offset+length-1 = "
                f"{task.target_offset}..{task.target_offset + task.length - 1} inside the "
                f"backbone's vocabulary of {base_vocab_size} tokens",
            )
        return cls(base_vocab_size, task.pool, task.length, task.target_mode, task.target_offset)

    def patch_id(self, k: int | np.ndarray) -> int | np.ndarray:
        return self.base_vocab_size + k

    @property
    def out_id(self) -> int:
        return self.base_vocab_size + self.pool

    @property
    def ans_id(self) -> int:
        return self.base_vocab_size + self.pool + 1

    def target_id(self, p: int | np.ndarray) -> int | np.ndarray:
        if self.target_mode == "vocab":
            return self.target_offset + p
        return self.base_vocab_size + self.pool + 2 + p

    @property
    def new_token_names(self) -> list[str]:
        names = [f"<s{k}>" for k in range(self.pool)] + ["<out>", "<ans>"]
        if self.target_mode == "position":
            names += [f"<p{p}>" for p in range(self.length)]
        return names

    @property
    def vocab_size(self) -> int:
        """Size of the resized vocabulary (backbone + new tokens)."""
        return self.base_vocab_size + len(self.new_token_names)


@dataclass(frozen=True)
class ProbeBatch:
    """A batch of examples as arrays.

    ``input_ids`` (N, seq_len) int64 (L+2 for suffix, L+3 for prefix); ``targets`` (N,) int64
    token ids; ``positions`` (N,) the target position p of each example (the slice key for
    per-position accuracy).
    """

    input_ids: np.ndarray
    targets: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


def layout(context: np.ndarray, query_pos: int, variant: Variant, vocab: ProbeVocab) -> np.ndarray:
    """Token ids of one example's input, given its context (L pool indices) and target p."""
    patches = vocab.patch_id(np.asarray(context, dtype=np.int64))
    query = patches[query_pos]
    if variant == "suffix":
        return np.concatenate([patches, [vocab.out_id, query]]).astype(np.int64)
    if variant == "prefix":
        return np.concatenate([[vocab.out_id, query], patches, [vocab.ans_id]]).astype(np.int64)
    raise ConfigError("variant", f"{variant!r} is not one of 'suffix', 'prefix'")


def _draw_context(rng: np.random.Generator, pool: int, length: int) -> np.ndarray:
    return rng.choice(pool, size=length, replace=False)


def _key(context: np.ndarray, p: int) -> bytes:
    """Identity of a sequence: its context order and query (independent of the layout)."""
    return np.asarray(context, dtype=np.int32).tobytes() + int(p).to_bytes(4, "little")


def _draw(task: ProbeTaskConfig, split: int, index: int, exclude: set[bytes]) -> np.ndarray:
    """The context of example ``index`` of ``split``, redrawn while its key is excluded."""
    rng = np.random.default_rng([task.seed, split, index])
    p = index % task.length
    while True:
        context = _draw_context(rng, task.pool, task.length)
        if _key(context, p) not in exclude:
            return context


class ProbeData:
    """The held-out set and the training stream of one task, deterministic from its seed.

    The held-out set (``task.heldout_size`` examples, distinct sequences) is built once on
    construction; training examples are generated on demand from their index, so 1M examples
    cost no memory. ``train_batch(step, batch_size)`` is a pure function of the step: epoch e
    visits the training indices in the order of a permutation seeded by ``(seed, e)``.
    """

    def __init__(self, task: ProbeTaskConfig, vocab: ProbeVocab):
        self.task = task
        self.vocab = vocab
        self._heldout_keys: set[bytes] = set()
        contexts = []
        for j in range(task.heldout_size):
            context = _draw(task, _HELDOUT, j, self._heldout_keys)
            self._heldout_keys.add(_key(context, j % task.length))
            contexts.append(context)
        self.heldout = self._batch(contexts, np.arange(task.heldout_size) % task.length)
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _batch(self, contexts: list[np.ndarray], positions: np.ndarray) -> ProbeBatch:
        pairs = zip(contexts, positions, strict=True)
        ids = np.stack([layout(c, int(p), self.task.variant, self.vocab) for c, p in pairs])
        return ProbeBatch(
            ids, np.asarray(self.vocab.target_id(positions), dtype=np.int64), positions
        )

    def train_example_context(self, index: int) -> np.ndarray:
        """Context of training example ``index`` (target position ``index % L``)."""
        return _draw(self.task, _TRAIN, index, self._heldout_keys)

    def train_examples(self, indices: np.ndarray) -> ProbeBatch:
        indices = np.asarray(indices, dtype=np.int64)
        contexts = [self.train_example_context(int(i)) for i in indices]
        return self._batch(contexts, indices % self.task.length)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.task.seed, 2, epoch])
            self._perm = rng.permutation(self.task.train_size)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def train_indices(self, step: int, batch_size: int) -> np.ndarray:
        """Training-set indices of the batch at ``step`` (0-based), crossing epochs as needed."""
        n = self.task.train_size
        start = step * batch_size
        out = []
        while len(out) < batch_size:
            epoch, offset = divmod(start + len(out), n)
            take = min(batch_size - len(out), n - offset)
            out.extend(self._epoch_order(epoch)[offset : offset + take].tolist())
        return np.asarray(out, dtype=np.int64)

    def train_batch(self, step: int, batch_size: int) -> ProbeBatch:
        return self.train_examples(self.train_indices(step, batch_size))
