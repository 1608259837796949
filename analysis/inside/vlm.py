"""Where a VLM looks when it answers: weight from the answer positions to the image patches.

The lab's question is whether Mamba-VL trails Pythia-VL on grounding because it cannot
*retrieve* from the image: a model that grounds "the red circle" by looking should, while it
writes the box, put its weight on the patches the circle covers. This module measures that on
the built-in shapes dataset, where every target's box is known exactly.

- A VLM run (one stage of ``vlab vlm train``: ``OUT/stage{N}``, its tokenizer in
  ``OUT/tokenizer`` or where the config says) is opened and loaded at a checkpoint
  (:func:`open_vlm_run`, :func:`load_vlm`), refusing a checkpoint trained under another
  config than its ``config.json`` as probe runs do.
- :func:`grounding_examples` builds N held-out grounding samples of the run's shapes
  dataset, assembled exactly as training assembled them (same ordering and image markers).
  The patch slots and the answer are located from the assembled sequence itself (its
  ``patch_index`` and response labels), never from fixed offsets, so both orderings
  (image first, or instruction first) and any marker layout work.
- :func:`image_attention_table` feeds the VLM's merged embeddings (text embeddings with the
  projected patches in their slots) to its language model and reads, per layer, the weight
  from every *answer position* t (a position whose next-token prediction is a response token
  of the box, the closing end-of-sequence excluded) to every patch slot:

  * GPT-NeoX (``kind="attention"``): ``blocks.{i}.attn.pattern[b, :, t, s]`` averaged over the
    heads; rows sum to one over all positions t attends to, and the table keeps that
    normalisation (the rest went to text and marker tokens);
  * Mamba (``kind="hidden_attention"``): the selective scan's implicit attention ``alpha[t, s]``
    (:mod:`vlab.models.backbones.mamba_internals`) as a share, ``|alpha|`` averaged over the
    D channels and divided by its sum over all source positions ``s <= t``, as
    :mod:`vlab.analysis.inside.attention` does for the probe. Only the needed rows are
    computed (memory B x D x T x N per row, not the T x T matrix).

  Each example's weights are averaged over its answer positions and laid out on the patch
  grid (``row``, ``col``), next to where the target is (``target_row``, ``target_col``: the
  cell of the box's centre; ``on_target``: the cell overlaps the box), so
  :func:`on_target_share` can say how much of the image weight falls on the target.
- :func:`write_example_images` writes the images of the first examples beside the table
  (``image_attention/example-<k>.png`` and ``examples.json``: box, target, prompt), so the
  report (which loads no torch and reads only files) can draw the weights over them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vlab.analysis.inside.activations import num_layers, trace
from vlab.analysis.inside.attention import _source, _ssm_row, readout_kind
from vlab.analysis.inside.results import VLM_COLUMNS
from vlab.analysis.inside.runs import VLM, VLMRun
from vlab.errors import VlabError
from vlab.experiment import experiment, stage_of
from vlab.fileio import atomic_write_bytes, atomic_write_json
from vlab.models.vlm.data.records import VLSample
from vlab.models.vlm.data.shapes import ShapesConfig, shapes_sample, task_of
from vlab.models.vlm.model import VLM as VisionLanguageModel
from vlab.models.vlm.parts import SequenceConfig
from vlab.models.vlm.sequence import IGNORE

COLUMNS = VLM_COLUMNS["image_attention"]
GROUNDING = "grounding"
EXAMPLE_IMAGES = 8  # the examples whose images are written beside the table
EXAMPLES_FILE = "examples.json"


# runs -----------------------------------------------------------------------------------------


def check_vlm_run(run: VLMRun) -> None:
    """What :func:`image_attention_table` needs from a run, checked before any work: the
    shapes dataset with its grounding task (the target boxes), and the run's tokenizer."""
    data = run.config.data
    if data.dataset != "shapes":
        raise VlabError(
            f"{run.path}: trained on data.dataset={data.dataset!r}; image_attention needs the "
            "built-in shapes dataset (its ground truth says where each target is)"
        )
    if GROUNDING not in data.shapes.tasks:
        raise VlabError(
            f"{run.path}: data.shapes.tasks ({', '.join(data.shapes.tasks)}) has no grounding "
            "task; image_attention reads the answers to grounding examples"
        )
    if data.tokenizer is None and run.config.model.lm.pretrained is None:
        saved = run.out / "tokenizer" / "tokenizer.json"
        if not saved.is_file():
            raise VlabError(
                f"{run.path}: no tokenizer at {saved} (vlab vlm train saves it beside the "
                "stages); copy the run with its tokenizer folder"
            )


def load_vlm(run: VLMRun, step: int) -> tuple[VisionLanguageModel, Any]:
    """The stage's VLM with the weights of ``step`` (eval mode, CPU) and its tokenizer: the
    VLM experiment's :meth:`~vlab.vlm.experiment.VLMExperiment.open` of the stage.

    Refuses (one line) a checkpoint trained under another config than ``config.json`` holds,
    and one whose weights do not fit the model the config builds.
    """
    check_vlm_run(run)
    stage = run.stage or stage_of(run.path)
    trained = experiment(VLM).open(run.out, step, stage=stage, device="cpu")
    return trained.model, trained.tokenizer


# examples -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VLMExamples:
    """N grounding examples as the VLM reads them (P = the VLM's visual tokens per image;
    the shapes dataset has one image per example).

    ``batch``: the collated batch (``input_ids``, ``patch_index``, ``labels``,
    ``attention_mask`` (N, T), right-padded; ``pixel_values_{i}`` (N, 3, S, S)).
    ``image_positions`` (N, P): the sequence index of visual token k (row-major on the grid).
    ``answer_positions``: per example, the positions whose next token is a response token.
    ``grid``: (rows, cols) of the visual tokens. ``targets``: per example the target's name,
    its box ``(x1, y1, x2, y2)`` as fractions of the image, and the cell of its centre.
    ``on_target`` (N, P): visual token k's patch overlaps the target's box.
    ``shapes``, ``sequence``, ``tokenizer``: what built them (the dataset's config, the
    sequence layout, the VLM's tokenizer), so an analysis can build their corrupted twins
    (:mod:`vlab.analysis.inside.vlm_analyses`) the same way.
    """

    samples: list[VLSample]
    batch: dict[str, torch.Tensor]
    image_positions: torch.Tensor
    answer_positions: list[torch.Tensor]
    grid: tuple[int, int]
    targets: list[dict[str, Any]]
    on_target: np.ndarray
    shapes: ShapesConfig | None = None
    sequence: SequenceConfig | None = None
    tokenizer: Any = None

    def __len__(self) -> int:
        return len(self.samples)


def grounding_samples(shapes: ShapesConfig, n: int) -> list[VLSample]:
    """The first ``n`` held-out grounding samples of ``shapes`` (held-out scenes never occur
    in training, by construction of the dataset's splits)."""
    if GROUNDING not in shapes.tasks:
        raise VlabError(f"shapes.tasks ({', '.join(shapes.tasks)}) has no grounding task")
    if n < 1:
        raise VlabError(f"number of examples must be >= 1, got {n}")
    samples, index = [], 0
    while len(samples) < n:
        if task_of(shapes, index) == GROUNDING:
            samples.append(shapes_sample(shapes, "held_out", index))
        index += 1
    return samples


def grounding_examples(
    vlm: VisionLanguageModel,
    tokenizer: Any,
    shapes: ShapesConfig,
    sequence: SequenceConfig,
    n: int,
) -> VLMExamples:
    """``n`` held-out grounding examples assembled for ``vlm`` under ``sequence`` (its
    ordering and markers), with the image and answer positions read off the assembly."""
    from vlab.models.vlm.batch import batch_of

    samples = grounding_samples(shapes, n)
    batch = batch_of(samples, vlm, tokenizer, sequence)
    patch, labels = batch["patch_index"], batch["labels"]
    count = vlm.num_visual_tokens
    image_positions = torch.full((len(samples), count), -1, dtype=torch.long)
    answers = []
    for b in range(len(samples)):
        slots = torch.nonzero(patch[b] >= 0).flatten()
        if len(slots) != count or sorted(patch[b, slots].tolist()) != list(range(count)):
            raise VlabError(
                f"example {b} has {len(slots)} patch slots, not the VLM's {count} visual tokens"
            )
        image_positions[b, patch[b, slots]] = slots
        response = torch.nonzero(labels[b] != IGNORE).flatten()
        if tokenizer.eos_token_id is not None:
            response = response[labels[b, response] != tokenizer.eos_token_id]
        answers.append(response - 1)
    targets = [_target(s, vlm) for s in samples]
    on_target = _on_target(vlm, targets)
    return VLMExamples(
        samples,
        batch,
        image_positions,
        answers,
        vlm.grid,
        targets,
        on_target,
        shapes=shapes,
        sequence=sequence,
        tokenizer=tokenizer,
    )


def run_examples(run: VLMRun, vlm: VisionLanguageModel, tokenizer: Any, n: int) -> VLMExamples:
    """:func:`grounding_examples` of the run's own shapes data and sequence layout."""
    check_vlm_run(run)
    cfg = run.config
    return grounding_examples(vlm, tokenizer, cfg.data.shapes, cfg.model.sequence, n)


def _target(sample: VLSample, vlm: VisionLanguageModel) -> dict[str, Any]:
    """The grounded object's name, box (fractions of the image) and the encoder-grid cell
    (row, col) of the box's centre."""
    obj = sample.meta["objects"][sample.meta["target"]]
    x1, y1, x2, y2 = obj["box_px"]
    w, h = sample.meta["width"], sample.meta["height"]
    box = (x1 / w, y1 / h, x2 / w, y2 / h)
    encoder = vlm.encoders[0]
    rows, cols = encoder.grid
    cells = encoder.image_size / encoder.patch_size  # patch cells per image side
    row = min(int((box[1] + box[3]) / 2 * cells), rows - 1)
    col = min(int((box[0] + box[2]) / 2 * cells), cols - 1)
    return {"name": f"{obj['color']} {obj['shape']}", "box": box, "row": row, "col": col}


def _on_target(vlm: VisionLanguageModel, targets: list[dict[str, Any]]) -> np.ndarray:
    """(N, P): whether visual token k's patch overlaps each target's box.

    A patch (r, c) of the encoder's grid covers ``[c p / S, (c + 1) p / S)`` of the image's
    width (p the patch side, S the encoder's input side: the image is resized, never cropped)
    and likewise in height. With two stacked maps (a two-encoder projector) row r of the
    VLM's grid is row ``r % rows`` of the image.
    """
    encoder = vlm.encoders[0]
    rows, cols = encoder.grid
    cell = encoder.patch_size / encoder.image_size
    grid_rows, grid_cols = vlm.grid
    r, c = np.divmod(np.arange(grid_rows * grid_cols), grid_cols)
    r = r % rows
    out = np.zeros((len(targets), grid_rows * grid_cols), dtype=bool)
    for b, t in enumerate(targets):
        x1, y1, x2, y2 = t["box"]
        overlap_x = (c * cell < x2) & ((c + 1) * cell > x1)
        overlap_y = (r * cell < y2) & ((r + 1) * cell > y1)
        out[b] = overlap_x & overlap_y
    return out


# the analysis ---------------------------------------------------------------------------------


def _answer_rows(
    lm: torch.nn.Module, embeds: torch.Tensor, answers: list[torch.Tensor]
) -> list[list[torch.Tensor]]:
    """Per layer, per example b, the weights (A_b, T) from its answer positions to every
    position of ``embeds`` (B, T, H): mean-over-heads attention for an attention layer, the
    SSM's share for a Mamba or Mamba-2 layer (a hybrid has both)."""
    layers = range(num_layers(lm))
    names = [_source(lm, i) for i in layers]
    acts = trace(lm, embeds, names)
    length = embeds.shape[1]
    wanted = sorted({int(t) for a in answers for t in a})
    out = []
    for i, name in zip(layers, names, strict=True):
        if name.endswith("attn.pattern"):
            mean = acts[name].float().mean(dim=1)  # (B, T, T)
            out.append([mean[b, a] for b, a in enumerate(answers)])
            continue
        # the SSM is causal: its row at t is the last row of the first t + 1 positions
        shares = {t: _ssm_row(lm, i, acts[name][:, : t + 1])[:, 0] for t in wanted}
        per_example = []
        for b, a in enumerate(answers):
            rows = torch.zeros(len(a), length, device=embeds.device)
            for k, t in enumerate(a.tolist()):
                rows[k, : t + 1] = shares[t][b]
            per_example.append(rows)
        out.append(per_example)
    return out


def image_attention_table(
    vlm: VisionLanguageModel, examples: VLMExamples, *, batch_size: int = 8
) -> pd.DataFrame:
    """Tidy table of the weight each example's answer puts on each image patch, per layer.

    Columns: ``example`` (0..N-1), ``layer``, ``kind`` ("attention" | "hidden_attention"),
    ``row``, ``col`` (the visual token's cell on the VLM's grid), ``weight`` (see the module
    docstring; the mean over the example's answer positions), ``target`` (the grounded
    object, e.g. "red circle"), ``target_row``, ``target_col`` (the cell of its box's centre),
    ``on_target`` (this cell overlaps the box). One row per (example, layer, cell).

    GPT-NeoX attention patterns are (B, heads, T, T) per layer for a batch: lower
    ``batch_size`` for long sequences.
    """
    from vlab.models.vlm.batch import pixel_values

    vlm.eval()
    lm = vlm.lm
    n, count, depth = len(examples), vlm.num_visual_tokens, num_layers(lm)
    weights = np.zeros((n, depth, count))
    device = next(vlm.parameters()).device
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            part = {k: v[start:stop].to(device) for k, v in examples.batch.items()}
            embeds = vlm.embed(part["input_ids"], part["patch_index"], pixel_values(part))
            answers = [a.to(device) for a in examples.answer_positions[start:stop]]
            for layer, rows in enumerate(_answer_rows(lm, embeds, answers)):
                for b, row in enumerate(rows):
                    image = examples.image_positions[start + b].to(device)
                    weights[start + b, layer] = row[:, image].mean(dim=0).double().cpu().numpy()
    example, layer, cell = np.meshgrid(
        np.arange(n), np.arange(depth), np.arange(count), indexing="ij"
    )
    example, layer, cell = example.ravel(), layer.ravel(), cell.ravel()
    cols = examples.grid[1]
    targets = examples.targets
    return pd.DataFrame(
        {
            "example": example,
            "layer": layer,
            "kind": np.array([readout_kind(lm, i) for i in range(depth)])[layer],
            "row": cell // cols,
            "col": cell % cols,
            "weight": weights.ravel(),
            "target": np.asarray([t["name"] for t in targets])[example],
            "target_row": np.asarray([t["row"] for t in targets])[example],
            "target_col": np.asarray([t["col"] for t in targets])[example],
            "on_target": examples.on_target[example, cell],
        }
    )


def on_target_share(table: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, kind): the share of the image weight that falls on the target's cells,
    ``on_target_weight / image_weight`` per example, averaged over the examples (``share``),
    with the mean total weight on the image (``image_weight``). The report computes the same
    without torch (:func:`vlab.analysis.inside.results.target_share`)."""
    from vlab.analysis.inside.results import target_share

    return target_share(table, ["layer", "kind"])[["layer", "kind", "share", "image_weight"]]


# example images -------------------------------------------------------------------------------


def example_file(k: int) -> str:
    """The file name of example k's image."""
    return f"example-{k}.png"


def write_example_images(
    vlm: VisionLanguageModel,
    examples: VLMExamples,
    folder: Path,
    count: int = EXAMPLE_IMAGES,
) -> list[dict[str, Any]]:
    """Write the images of the first ``count`` examples into ``folder`` (``example-<k>.png``,
    k the table's ``example``) and, last, ``examples.json``: per example its ``index`` (k),
    ``file``, the target's ``box`` (x1, y1, x2, y2, fractions of the image), ``target``
    (e.g. "red circle"), ``prompt`` and ``response`` (the box as text), ``image_id``; with
    the VLM's ``grid`` (rows, cols of the table) and the ``image_grid`` of its encoder (the
    VLM's grid stacks ``grid[0] // image_grid[0]`` maps of the same image). Each file is
    written atomically and example images of an earlier, larger inspection are removed.
    Returns the per-example records."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for k, (sample, target) in enumerate(
        zip(examples.samples[:count], examples.targets[:count], strict=True)
    ):
        image = sample.image
        if not hasattr(image, "save"):
            raise VlabError(
                f"example {k}: its image is not in memory ({image!r}); image_attention needs "
                "the built-in shapes dataset"
            )
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        atomic_write_bytes(folder / example_file(k), buffer.getvalue())
        records.append(
            {
                "index": k,
                "file": example_file(k),
                "box": [float(v) for v in target["box"]],
                "target": target["name"],
                "prompt": sample.turns[0].prompt,
                "response": sample.turns[0].response,
                "image_id": sample.image_id,
            }
        )
    atomic_write_json(
        folder / EXAMPLES_FILE,
        {
            "grid": list(vlm.grid),
            "image_grid": list(vlm.encoders[0].grid),
            "examples": records,
        },
    )
    kept = {r["file"] for r in records}
    for stale in folder.glob("example-*.png"):
        if stale.name not in kept:
            stale.unlink()
    return records
