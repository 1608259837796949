"""The retrieval probe with an image for a context: the data side, free of torch at import.

The task of :mod:`vlab.probes.tasks` where the L context items are image patches that a VLM's
vision encoder and connector turn into visual tokens, instead of added ``<s_k>`` tokens::

    suffix (task-agnostic):  [image] <out> [query]          -> target(p)
    prefix (task-aware):     <out> [query] [image] <ans>    -> target(p)

``[image]`` is the VLM's own image segment (:mod:`vlab.models.vlm.sequence`): markers around a
side x side grid of patch slots, e.g. the paper layout for L = 4: ``## c0 c1 && c2 c3 && ##``.
Image first is the VLM's task-agnostic ordering, query first its task-aware one.
``[query]`` is one visual token naming the queried patch by its content: the patch tiled over
a whole canvas, through the same encoder and connector, its tokens averaged (see
:mod:`vlab.probes.image_model`). The answer is the position p as in the text probe (``<p_k>``
or a vocabulary token).

The image: a canvas of side x side cells of P x P pixels, P the encoder's patch size, so each
cell is exactly one visual token; cell k (row k // side, column k % side) holds context item k
for k < L, the remaining cells are blank (mid-grey). ``side`` is ceil(sqrt(L)) unless set.

The patches: a pool of V distinct patches of uniform RGB noise, drawn from the task's seed.
Random patches, not rendered shapes: they are the text probe's pool one for one (V items of any
number, distinct by construction, identity = content and nothing else, so there is no shortcut
through what a shape or colour means), any V works (the paper's L = 200 needs V >= 200, more
than the shapes dataset has shape x colour pairs), and an image costs microseconds to render.

The data is the text probe's own generator (:class:`~vlab.probes.tasks.ProbeData`): contexts of
L distinct pool indices drawn from ``(seed, split, index)``, example i targeting position
i mod L, training contexts that collide with held-out ones redrawn. Balance, determinism and
disjointness are therefore the text probe's; only how a context reaches the model differs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from vlab.errors import ConfigError
from vlab.probes.tasks import ProbeData, ProbeTaskConfig, ProbeVocab

if TYPE_CHECKING:
    from vlab.models.backbones import BackboneConfig
    from vlab.models.vlm.parts import ImageLayout, VisionConfig

LayoutName = Literal["paper", "authors", "none"]
LAYOUTS: tuple[str, ...] = ("paper", "authors", "none")
# The VLM's name for each variant's ordering (image first, or the task before the image).
ORDERINGS = {"suffix": "task_agnostic", "prefix": "task_aware"}
BLANK = 128  # the grey value of every pixel of an empty cell
_POOL_STREAM = 3  # random stream of the patch pool (0, 1, 2: training, held-out, epoch order)
_SLOT_ID = 0  # the token id under a patch or query slot (overwritten by its visual token)


@dataclass(frozen=True)
class ImageProbeConfig:
    """The image side of a probe run with ``task.modality = "image"`` (``image.*``).

    ``grid``: cells per side of the square image (None: the smallest that holds L,
    ceil(sqrt(L))). ``layout``: the VLM's markers around the patches: ``paper`` (``##``, ``&&``
    after each row, ``##``), ``authors`` (``###`` ... ``###`` then ``##``), ``none`` (the patch
    tokens alone, as the text probe's context). ``vision``: fields of
    :class:`~vlab.models.vlm.vision.VisionConfig` (default the tiny raw-patch encoder, which
    trains with the probe); ``image_size`` follows from the grid (grid x patch size: a
    resolved config holds it, a value that differs is an error).
    ``projector``: fields of :class:`~vlab.models.vlm.connectors.ProjectorConfig` (an
    ``mlp``: one encoder; widths are those of the encoder and LM). Both are plain mappings here
    so that configs validate without torch; :func:`resolve_image` checks and writes them out.
    """

    grid: int | None = None
    layout: LayoutName = "paper"
    vision: dict = field(default_factory=lambda: {"kind": "patch", "preset": "tiny"})
    projector: dict = field(default_factory=lambda: {"kind": "mlp"})

    def __post_init__(self) -> None:
        if self.grid is not None and self.grid < 1:
            raise ConfigError("grid", f"must be >= 1 cell per side, got {self.grid}")
        if self.layout not in LAYOUTS:
            raise ConfigError("layout", f"{self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.vision.get("image_size") is not None and self.grid is None:
            raise ConfigError(
                "vision.image_size",
                "the probe sizes the image (grid x the encoder's patch size); set image.grid",
            )
        if self.projector.get("kind", "mlp") != "mlp":
            raise ConfigError(
                "projector.kind",
                f"the probe has one encoder, so an mlp projector, not {self.projector['kind']!r}",
            )

    def side(self, length: int) -> int:
        """Cells per side for a context of ``length`` patches (ConfigError if they do not fit)."""
        side = self.grid if self.grid is not None else math.isqrt(length - 1) + 1
        if side * side < length:
            raise ConfigError(
                "grid",
                f"{side} x {side} = {side * side} cells cannot hold a context of length "
                f"{length}; use grid >= {math.isqrt(length - 1) + 1} or leave it unset",
            )
        return side


def resolve_image(image: ImageProbeConfig, length: int, lm: BackboneConfig) -> ImageProbeConfig:
    """``image`` with every setting written out: the grid, the encoder's full config at the
    image size the grid needs, the projector's with the encoder's and LM's widths.

    Imports torch (the VLM's configs live beside their modules): called for image runs only,
    so text runs and their sweeps stay free of it. Errors name ``image.vision.*`` /
    ``image.projector.*``.
    """
    from vlab.config import from_dict, to_dict
    from vlab.models.vlm.parts import ProjectorConfig, VisionConfig

    side = image.side(length)
    vision = from_dict(VisionConfig, image.vision, prefix="image.vision")
    patch, width = encoder_shape(vision)
    if vision.image_size not in (None, side * patch):
        raise ConfigError(
            "image.vision.image_size",
            f"{vision.image_size} px is not the {side} x {side} grid of {patch} px patches "
            f"({side * patch} px); leave it unset",
        )
    vision = dataclasses.replace(vision, image_size=side * patch)
    widths = {"vision_widths": [width], "lm_width": lm.hf_settings()["hidden_size"]}
    for key, value in widths.items():
        given = image.projector.get(key)
        if given is not None and given != value:
            raise ConfigError(
                f"image.projector.{key}",
                f"{given} is not the width the encoder and LM give ({value}); leave it unset",
            )
    projector = from_dict(ProjectorConfig, {**image.projector, **widths}, prefix="image.projector")
    return dataclasses.replace(
        image, grid=side, vision=to_dict(vision), projector=to_dict(projector)
    )


def encoder_shape(vision: VisionConfig) -> tuple[int, int]:
    """(patch size in pixels, feature width) of the encoder a ``VisionConfig`` builds, read
    without weights: a local Hugging Face tower's config.json, else the preset built on the
    meta device (an eva02 checkpoint has its preset's shapes)."""
    from vlab.models.vlm.parts import HF_KINDS
    from vlab.models.vlm.vision import build_vision_encoder

    if vision.pretrained is not None and vision.kind in HF_KINDS:
        import json
        from pathlib import Path

        data = json.loads((Path(vision.pretrained) / "config.json").read_text())
        data = data.get("vision_config", data)
        return int(data["patch_size"]), int(data["hidden_size"])
    encoder = build_vision_encoder(dataclasses.replace(vision, pretrained=None), device="meta")
    return encoder.patch_size, encoder.width


# vocabulary and sequence ------------------------------------------------------------------


def image_layout(name: str) -> ImageLayout:
    """The VLM's :class:`~vlab.models.vlm.sequence.ImageLayout` a layout name stands for."""
    from vlab.models.vlm.parts import ImageLayout

    if name == "paper":
        return ImageLayout.paper()
    if name == "authors":
        return ImageLayout.authors()
    if name == "none":
        return ImageLayout(start=None, row_break=None, end=None)
    raise ConfigError("image.layout", f"{name!r} is not one of {', '.join(LAYOUTS)}")


def marker_strings(layout: ImageLayout) -> tuple[str, ...]:
    """The distinct marker strings of a layout, in order of first use."""
    found = (layout.start, layout.row_break, layout.end, layout.text_sep)
    return tuple(dict.fromkeys(m for m in found if m))


@dataclass(frozen=True)
class ImageVocab:
    """Where the image probe's tokens live in the LM's vocabulary.

    ``tokens`` is the text probe's :class:`~vlab.probes.tasks.ProbeVocab` without patch tokens
    (``pool`` 0: the patches are pixels): ``<out>``, ``<ans>`` and, in position mode,
    ``<p0> … <p{L-1}>`` right after the backbone's vocabulary; then one token per marker
    string of the image layout (``##``, ``&&``, ...), named by the string itself.
    """

    tokens: ProbeVocab
    markers: tuple[str, ...]

    @classmethod
    def for_task(
        cls, task: ProbeTaskConfig, markers: tuple[str, ...], base_vocab_size: int
    ) -> ImageVocab:
        checked = ProbeVocab.for_task(task, base_vocab_size)  # vocab targets must fit
        return cls(dataclasses.replace(checked, pool=0), tuple(markers))

    @property
    def base_vocab_size(self) -> int:
        return self.tokens.base_vocab_size

    @property
    def out_id(self) -> int:
        return self.tokens.out_id

    @property
    def ans_id(self) -> int:
        return self.tokens.ans_id

    def target_id(self, p: int | np.ndarray) -> int | np.ndarray:
        return self.tokens.target_id(p)

    def marker_id(self, marker: str) -> int:
        if marker not in self.markers:
            raise KeyError(f"{marker!r} is not a marker of this layout ({self.markers})")
        return self.tokens.vocab_size + self.markers.index(marker)

    @property
    def new_token_names(self) -> list[str]:
        return [*self.tokens.new_token_names, *self.markers]

    @property
    def vocab_size(self) -> int:
        """Size of the resized vocabulary (backbone + new tokens)."""
        return self.base_vocab_size + len(self.new_token_names)


class MarkerTokenizer:
    """The tokenizer :func:`~vlab.models.vlm.sequence.assemble` reads the image markers with:
    each marker string is its one added token. Any other text is an error: the probe has no
    text but its markers."""

    eos_token_id = None

    def __init__(self, vocab: ImageVocab):
        self.vocab = vocab

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab.marker_id(text)]


@dataclass(frozen=True)
class ImageSequence:
    """The token layout shared by every example of an image task (only the pixels differ).

    ``input_ids`` (T,) int64, with a placeholder id under patch and query slots;
    ``patch_index`` (T,) the grid cell (r * side + c) of each patch slot, -1 elsewhere (the
    VLM's convention); ``query_index`` the sequence index of the query slot;
    ``context_index`` (L,) the sequence index of context position k's slot. The prediction
    is read at T - 1.
    """

    input_ids: np.ndarray
    patch_index: np.ndarray
    query_index: int
    context_index: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)


def image_sequence(
    length: int, side: int, variant: str, layout: str, vocab: ImageVocab
) -> ImageSequence:
    """The sequence of an image task: the VLM's image segment, assembled by its own
    :func:`~vlab.models.vlm.sequence.assemble` with no text around it (markers, side x side
    patch slots, the layout's text separator), placed with ``<out>``, the query slot and, for
    prefix, ``<ans>`` as the text probe places its context."""
    from vlab.models.vlm.parts import SequenceConfig
    from vlab.models.vlm.sequence import PATCH, assemble

    if variant not in ORDERINGS:
        raise ConfigError("task.variant", f"{variant!r} is not one of 'suffix', 'prefix'")
    longest = max(1024, side * (side + 1) + 3)  # the segment never exceeds the limit
    cfg = SequenceConfig(
        layout=image_layout(layout), ordering=ORDERINGS[variant], max_length=longest
    )
    image = assemble([("", "")], None, (side, side), MarkerTokenizer(vocab), cfg)
    ids = np.where(np.asarray(image.input_ids) == PATCH, _SLOT_ID, image.input_ids)
    cells = np.asarray(image.patch_index, dtype=np.int64)
    head = [vocab.out_id, _SLOT_ID]
    no_cell = np.full(2, -1, dtype=np.int64)
    if variant == "suffix":
        input_ids = np.concatenate([ids, head])
        patch_index = np.concatenate([cells, no_cell])
        query_index = len(ids) + 1
    else:
        input_ids = np.concatenate([head, ids, [vocab.ans_id]])
        patch_index = np.concatenate([no_cell, cells, [-1]])
        query_index = 1
    slot_of_cell = {int(c): t for t, c in enumerate(patch_index) if c >= 0}
    context_index = np.asarray([slot_of_cell[k] for k in range(length)], dtype=np.int64)
    return ImageSequence(input_ids.astype(np.int64), patch_index, query_index, context_index)


def sequence_labels(sequence: ImageSequence, vocab: ImageVocab) -> tuple[str, ...]:
    """What sits at each index of ``sequence``, named as the text probe's look-inside tables
    name tokens: ``ctx{k}`` the slot of context position k, ``blank`` a grid cell past the
    L-th, ``query``, ``out``, ``ans``, and each marker by its own string (``##``, ``&&``)."""
    names = {vocab.out_id: "out", vocab.ans_id: "ans"}
    names.update({vocab.marker_id(m): m for m in vocab.markers})
    labels = []
    for t, (token, cell) in enumerate(zip(sequence.input_ids, sequence.patch_index, strict=True)):
        if t == sequence.query_index:
            labels.append("query")
        elif cell >= 0:
            labels.append("blank")  # a context cell is renamed below
        else:
            labels.append(names[int(token)])
    for k, t in enumerate(sequence.context_index):
        labels[int(t)] = f"ctx{k}"
    return tuple(labels)


# pixels ------------------------------------------------------------------------------------


def patch_pool(seed: int, pool: int, patch_size: int) -> np.ndarray:
    """(V, P, P, 3) uint8: V distinct patches of uniform RGB noise from stream ``(seed, 3)``,
    none of them the blank patch (a duplicate, vanishingly rare, is redrawn)."""
    rng = np.random.default_rng([seed, _POOL_STREAM])
    shape = (patch_size, patch_size, 3)
    patches = rng.integers(0, 256, size=(pool, *shape), dtype=np.uint8)
    blank = np.full(shape, BLANK, dtype=np.uint8).tobytes()
    seen = {blank}
    for k in range(pool):
        while patches[k].tobytes() in seen:
            patches[k] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        seen.add(patches[k].tobytes())
    return patches


def render_grids(patches: np.ndarray, contexts: np.ndarray, side: int) -> np.ndarray:
    """(N, S, S, 3) uint8 images, S = side x P: context item k of each row of ``contexts``
    (N, L) pool indices in cell (k // side, k % side), blank cells after the L-th."""
    contexts = np.asarray(contexts, dtype=np.int64)
    n, length = contexts.shape
    p = patches.shape[1]
    cells = np.full((n, side * side, p, p, 3), BLANK, dtype=np.uint8)
    cells[:, :length] = patches[contexts]
    grid = cells.reshape(n, side, side, p, p, 3).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(grid.reshape(n, side * p, side * p, 3))


def render_queries(patches: np.ndarray, queries: np.ndarray, side: int) -> np.ndarray:
    """(N, S, S, 3) uint8 query images: pool patch ``queries[i]`` tiled over every cell."""
    queries = np.asarray(queries, dtype=np.int64)
    return render_grids(patches, np.repeat(queries[:, None], side * side, axis=1), side)


def decode_grid(image: np.ndarray, patches: np.ndarray, side: int) -> np.ndarray:
    """The inverse of :func:`render_grids` for one (S, S, 3) image: the pool index in each
    cell, row-major, -1 for a blank cell (a cell matching nothing is a ValueError)."""
    p = patches.shape[1]
    cells = image.reshape(side, p, side, p, 3).transpose(0, 2, 1, 3, 4).reshape(-1, p * p * 3)
    index = {patch.tobytes(): k for k, patch in enumerate(patches.reshape(len(patches), -1))}
    index[np.full(p * p * 3, BLANK, dtype=np.uint8).tobytes()] = -1
    out = []
    for r, cell in enumerate(cells):
        if cell.tobytes() not in index:
            raise ValueError(f"cell {r} of the image is no patch of the pool")
        out.append(index[cell.tobytes()])
    return np.asarray(out, dtype=np.int64)


# data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageProbeBatch:
    """A batch of image examples as arrays, before rendering.

    ``contexts`` (N, L) int64 pool indices, item k shown in cell k; ``positions`` (N,) the
    target position p (the slice key of per-position accuracy); ``targets`` (N,) int64 token
    ids of the answers. Rendering (:meth:`ImageProbeData.pixels`) makes the images.
    """

    contexts: np.ndarray
    positions: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def queries(self) -> np.ndarray:
        """(N,) the pool index of each queried patch: the one at its target position."""
        return self.contexts[np.arange(len(self.contexts)), self.positions]


class ImageProbeData(ProbeData):
    """The text probe's data (:class:`~vlab.probes.tasks.ProbeData`: the same held-out set,
    training stream and epoch order for the same task config) with batches that hold
    contexts for images instead of token ids, and the pool of patch images they index.

    ``patch_size`` P and ``side`` set the images: (N, side P, side P, 3) uint8.
    """

    def __init__(self, task: ProbeTaskConfig, vocab: ImageVocab, patch_size: int, side: int):
        if side * side < task.length:
            raise ConfigError("image.grid", f"{side} x {side} cells cannot hold L={task.length}")
        self.side = side
        self.patches = patch_pool(task.seed, task.pool, patch_size)
        super().__init__(task, vocab)  # a ProbeVocab's stand-in: only _batch reads it

    def _batch(self, contexts: list[np.ndarray], positions: np.ndarray) -> ImageProbeBatch:
        positions = np.asarray(positions, dtype=np.int64)
        targets = np.asarray(self.vocab.target_id(positions), dtype=np.int64)
        stacked = np.stack(contexts).astype(np.int64)
        return ImageProbeBatch(stacked, positions, targets)

    def pixels(self, batch: ImageProbeBatch, rows: slice = slice(None)) -> tuple[np.ndarray, ...]:
        """(images, query images) of ``batch[rows]``, each (N, S, S, 3) uint8."""
        contexts = batch.contexts[rows]
        queries = batch.queries[rows]
        return (
            render_grids(self.patches, contexts, self.side),
            render_queries(self.patches, queries, self.side),
        )
