"""The probe analyses on a VLM: state probes, activation patching and the logit lens on
grounding examples of the shapes dataset.

``image_attention`` (:mod:`vlab.analysis.inside.vlm`) says where the answer *looks*; these
say what the LM still *holds* about the image, what *causes* the box it writes, and from
which layer on the box can be read off. All three feed the VLM's merged embeddings (text
embeddings with the projected patches in their slots, B x T x H) to its LM, on the held-out
grounding examples :func:`~vlab.analysis.inside.vlm.grounding_examples` builds in the run's
own ordering and markers; every position is found from the assembly (patch slots, response
labels), never from fixed offsets.

- :func:`vlm_state_probe_table`: linear probes (:mod:`~vlab.analysis.inside.linear_probe`,
  chance beside each) reading, per layer, which object (colour and shape, or nothing) covers
  each cell of the image grid (``cell``), which cell holds the grounding target's centre
  (``target_cell``) and which object the prompt names (``target_object``), from three
  representations: the residual stream at the *prediction position* (the last prompt
  position, which predicts the box's first token: ``residual``), the residual at the last
  visual token (``residual_image_end``), and each SSM layer's recurrent state right after
  that token (``ssm_state``). A Transformer can look the image up while it answers; an SSM
  must carry it in its state: these say what each keeps.
- :func:`vlm_patching_table`: each example gets a corrupted twin that differs in the image
  or the prompt only: ``moved`` renders the scene with the target elsewhere (its box's text
  differs from the first coordinate's first digit), ``other_target`` names another object
  of the same image (one whose prompt has as many tokens). Both are teacher-forced on the
  clean answer up to the first box token where the two answers differ, so the clean and the
  corrupted sequences line up index for index, and the logit difference
  ``LD = logit[clean token] - logit[corrupted token]`` at that position is measured with one
  clean activation patched into the corrupted run, per site, layer and position
  (:func:`vlab.analysis.inside.patching.patched_logit_diffs`, fed input embeddings; whatever
  sites it patches pass through). Prompts and answer prefixes differ in length between
  examples, so positions are named by their role (``token``): ``img{k}`` visual token k,
  ``pre-{d}`` d tokens before the image, ``mark{k}`` a marker after visual token k,
  ``text-{d}`` d tokens before the answer (``text-0`` predicts its first token),
  ``ans{i}`` answer token i; and three summaries per example: ``target_cells`` (mean over
  the visual tokens overlapping the clean target), ``corrupted_cells`` (the corrupted
  answer's object) and ``last`` (the prediction position). Recovery per row is over the
  examples that have the role (``n``).
- :func:`vlm_logit_lens_table`: per layer, the residual stream at every answer position read
  through the LM's final norm and unembedding: the probability, top-1 accuracy and rank
  (over the whole vocabulary) of the box token that follows, per answer token index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from vlab.analysis.inside import activations as acts
from vlab.analysis.inside.linear_probe import ProbeFitConfig, probe_accuracy
from vlab.analysis.inside.patching import patched_logit_diffs, recovery
from vlab.analysis.inside.results import VLM_COLUMNS
from vlab.analysis.inside.vlm import VLMExamples
from vlab.errors import VlabError
from vlab.models.vlm.data.records import Turn, VLSample, format_box
from vlab.models.vlm.data.shapes import PALETTE, ShapeObject, ShapesConfig, render
from vlab.models.vlm.model import VLM as VisionLanguageModel
from vlab.models.vlm.sequence import IGNORE

PROBE_COLUMNS = VLM_COLUMNS["vlm_state_probe"]
PATCHING_COLUMNS = VLM_COLUMNS["vlm_patching"]
LENS_COLUMNS = VLM_COLUMNS["vlm_logit_lens"]
VLM_CORRUPTIONS = ("moved", "other_target")
SUMMARIES = ("target_cells", "corrupted_cells", "last")  # per-example roles, position -1
EMBED_LAYER = -1
_PLACEMENTS = 500  # tries to find the moved target a free place
MIN_PROBE_EXAMPLES = 4  # a probe needs a training and a test split
# Patching costs (layers + 1 + 3 per SSM layer) x T patched passes of length T per example
# (T about 110 on the tiny presets' 8 x 8 grid: 1.4 s an example for Pythia-VL, 24 s for
# Mamba-VL on one CPU thread), so it takes the first this many of the examples.
PATCHING_EXAMPLES = 32


# inputs ---------------------------------------------------------------------------------------


def _rows(batch: dict[str, torch.Tensor], index: Sequence[int]) -> dict[str, torch.Tensor]:
    picked = torch.as_tensor(list(index), dtype=torch.long)
    return {k: v[picked] for k, v in batch.items()}


def merged_embeddings(vlm: VisionLanguageModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, T, H): the text embeddings of ``batch`` with its patch slots holding the projected
    visual tokens, what the VLM feeds its LM."""
    from vlab.models.vlm.batch import pixel_values

    device = next(vlm.parameters()).device
    part = {k: v.to(device) for k, v in batch.items()}
    return vlm.embed(part["input_ids"], part["patch_index"], pixel_values(part))


def _needs(examples: VLMExamples, what: str) -> None:
    if examples.shapes is None or examples.tokenizer is None or examples.sequence is None:
        raise VlabError(
            f"{what} needs examples built by grounding_examples (with their shapes config, "
            "sequence layout and tokenizer)"
        )


def _prediction_positions(examples: VLMExamples, index: Sequence[int]) -> torch.Tensor:
    """(B,) the position whose next token is the box's first token."""
    return torch.as_tensor([int(examples.answer_positions[b][0]) for b in index])


# state probes ---------------------------------------------------------------------------------


def object_class(shapes: ShapesConfig, color: str, shape: str) -> int:
    """The class id of a colour-shape pair: 1 + colour index x shapes + shape index (0 is
    "nothing")."""
    return 1 + shapes.colors.index(color) * len(shapes.shapes) + shapes.shapes.index(shape)


def cell_classes(vlm: VisionLanguageModel, examples: VLMExamples) -> np.ndarray:
    """(N, rows x cols) the object class covering most of each cell of the encoder's grid
    (row-major; 0: background), read off the rendered image: a pixel belongs to an object
    when it lies in its box and has its colour (boxes never overlap)."""
    _needs(examples, "vlm_state_probe")
    encoder = vlm.encoders[0]
    rows, cols = encoder.grid
    cells = encoder.image_size / encoder.patch_size  # cells per image side
    out = np.zeros((len(examples), rows * cols), dtype=np.int64)
    for b, sample in enumerate(examples.samples):
        pixels = np.asarray(sample.image.convert("RGB"), dtype=np.int64)
        height, width = pixels.shape[:2]
        owner = np.zeros((height, width), dtype=np.int64)
        for obj in sample.meta["objects"]:
            x1, y1, x2, y2 = obj["box_px"]
            region = pixels[y1:y2, x1:x2]
            painted = (region == np.asarray(PALETTE[obj["color"]])).all(axis=-1)
            cls = object_class(examples.shapes, obj["color"], obj["shape"])
            owner[y1:y2, x1:x2][painted] = cls
        for k in range(rows * cols):
            r, c = divmod(k, cols)
            ys = slice(int(r * height / cells), int((r + 1) * height / cells))
            xs = slice(int(c * width / cells), int((c + 1) * width / cells))
            out[b, k] = np.bincount(owner[ys, xs].ravel()).argmax()
    return out


def probe_features(
    vlm: VisionLanguageModel, examples: VLMExamples, *, batch_size: int = 8
) -> dict[tuple[str, int], np.ndarray]:
    """Representations (N, F) by (source, layer): ``residual`` at the prediction position and
    ``residual_image_end`` at the last visual token, for layer -1 (the merged embeddings) and
    every block's output; ``ssm_state`` of every layer with one, after the last visual token,
    flattened (D x N for Mamba-1, heads x P x N for Mamba-2)."""
    lm = vlm.lm
    n_layers = acts.num_layers(lm)
    ssm_layers = acts.layers_with(lm, "ssm.state")
    names = ["embed", *(f"blocks.{i}.resid_post" for i in range(n_layers))]
    names += [f"blocks.{i}.ssm.state" for i in ssm_layers]
    chunks: dict[tuple[str, int], list[np.ndarray]] = {}

    def add(key: tuple[str, int], value: torch.Tensor) -> None:
        chunks.setdefault(key, []).append(value.detach().float().flatten(1).cpu().numpy())

    for start in range(0, len(examples), batch_size):
        index = range(start, min(start + batch_size, len(examples)))
        embeds = merged_embeddings(vlm, _rows(examples.batch, index))
        got = acts.trace(lm, embeds, names)
        device = embeds.device
        rows = torch.arange(len(index), device=device)
        where = {
            "residual": _prediction_positions(examples, index).to(device),
            "residual_image_end": examples.image_positions[list(index)].max(dim=1).values,
        }
        where["residual_image_end"] = where["residual_image_end"].to(device)
        for layer, name in enumerate(names[: n_layers + 1], start=EMBED_LAYER):
            for source, positions in where.items():
                add((source, layer), got[name][rows, positions])
        end = where["residual_image_end"]
        for layer in ssm_layers:
            state = got[f"blocks.{layer}.ssm.state"].movedim(-1, 1)  # (B, T, ...)
            add(("ssm_state", layer), state[rows, end])
    return {key: np.concatenate(parts) for key, parts in chunks.items()}


def probe_labels(vlm: VisionLanguageModel, examples: VLMExamples) -> list[tuple[str, int, Any]]:
    """(label, position, classes (N,)): ``cell`` k per cell of the encoder's grid, then
    ``target_cell`` and ``target_object`` (position -1)."""
    cells = cell_classes(vlm, examples)
    cols = vlm.encoders[0].grid[1]
    target_cell = np.asarray([t["row"] * cols + t["col"] for t in examples.targets])
    named = [s.meta["objects"][s.meta["target"]] for s in examples.samples]
    target_object = np.asarray(
        [object_class(examples.shapes, o["color"], o["shape"]) for o in named]
    )
    labels = [("cell", k, cells[:, k]) for k in range(cells.shape[1])]
    return labels + [("target_cell", -1, target_cell), ("target_object", -1, target_object)]


def probe_rows(
    features: dict[tuple[str, int], np.ndarray],
    labels: list[tuple[str, int, Any]],
    cols: int,
    fit: ProbeFitConfig | None = None,
) -> pd.DataFrame:
    """One row per (source, layer, label, position): held-out accuracy of a linear probe for
    the label from the features (N, F), with chance (:data:`PROBE_COLUMNS`); ``row``, ``col``
    the cell of a ``cell`` label on a grid ``cols`` wide (-1 for the others). Fewer than
    :data:`MIN_PROBE_EXAMPLES` examples cannot be split: accuracy and chance are NaN."""
    fit = fit or ProbeFitConfig()
    rows = []
    for (source, layer), x in features.items():
        for label, position, y in labels:
            y = np.asarray(y, dtype=np.int64)
            cell = divmod(position, cols) if position >= 0 else (-1, -1)
            if len(y) < MIN_PROBE_EXAMPLES:  # too few to split: nothing measured
                score = (math.nan, math.nan, len(y), 0, len(np.unique(y)))
            else:
                fitted = probe_accuracy(x, y, fit)
                score = (fitted.accuracy, fitted.chance, fitted.n_train, fitted.n_test)
                score += (fitted.n_classes,)
            rows.append((layer, source, label, position, *score, *cell))
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def vlm_state_probe_table(
    vlm: VisionLanguageModel,
    examples: VLMExamples,
    *,
    batch_size: int = 8,
    fit: ProbeFitConfig | None = None,
) -> pd.DataFrame:
    """What the LM holds about the image: see the module docstring. Columns
    :data:`PROBE_COLUMNS` (``state_probe``'s, with the cell's ``row`` and ``col`` on the
    encoder's grid); classes are 0 (nothing) or 1 + colour x shapes + shape."""
    vlm.eval()
    with torch.no_grad():
        features = probe_features(vlm, examples, batch_size=batch_size)
    return probe_rows(features, probe_labels(vlm, examples), vlm.encoders[0].grid[1], fit)


# corrupted twins ------------------------------------------------------------------------------


def _objects(sample: VLSample) -> list[ShapeObject]:
    return [
        ShapeObject(o["shape"], o["color"], o["box_px"][0], o["box_px"][1],
                    o["box_px"][2] - o["box_px"][0])
        for o in sample.meta["objects"]
    ]  # fmt: skip


def _apart(a: ShapeObject, b: ShapeObject, gap: int) -> bool:
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a.box_px, b.box_px
    return ax2 + gap <= bx1 or bx2 + gap <= ax1 or ay2 + gap <= by1 or by2 + gap <= ay1


def _twin(sample: VLSample, objects: list[ShapeObject], image, target: int) -> VLSample:
    """A grounding sample of ``objects[target]`` on ``image`` (prompt and box from it)."""
    side = sample.meta["width"]
    obj = objects[target]
    meta = {
        **sample.meta,
        "objects": [
            {"shape": o.shape, "color": o.color, "box_px": list(o.box_px)} for o in objects
        ],
        "target": target,
    }
    turn = Turn(f"the {obj.name}", format_box(*obj.box_px, side, side))
    return replace(sample, image=image, turns=[turn], meta=meta)


def moved_twin(shapes: ShapesConfig, sample: VLSample, seed: int) -> VLSample | None:
    """The scene re-rendered with the target elsewhere (same size, clear of the others by
    ``shapes.gap``), its box's text differing from the clean one's first decimal of x1 on;
    None when no such place is found."""
    objects = _objects(sample)
    target = sample.meta["target"]
    side = sample.meta["width"]
    old = objects[target]
    clean_box = format_box(*old.box_px, side, side)
    rng = np.random.default_rng([shapes.seed, 29, seed])
    for _ in range(_PLACEMENTS):
        x = int(rng.integers(0, side - old.size + 1))
        y = int(rng.integers(0, side - old.size + 1))
        new = replace(old, x=x, y=y)
        if format_box(*new.box_px, side, side)[:4] == clean_box[:4]:
            continue
        if all(_apart(new, o, shapes.gap) for k, o in enumerate(objects) if k != target):
            moved = objects[:target] + [new] + objects[target + 1 :]
            return _twin(sample, moved, render(shapes, tuple(moved)), target)
    return None


def other_target_twin(sample: VLSample, tokenizer: Any) -> VLSample | None:
    """The same image with the prompt naming another object that occurs once in it and whose
    prompt has as many tokens as the clean one; None when there is none."""
    objects = _objects(sample)
    names = [o.name for o in objects]
    target = sample.meta["target"]
    length = len(tokenizer.encode(sample.turns[0].prompt, add_special_tokens=False))
    for k, o in enumerate(objects):
        if k == target or names.count(o.name) != 1:
            continue
        if len(tokenizer.encode(f"the {o.name}", add_special_tokens=False)) == length:
            return _twin(sample, objects, sample.image, k)
    return None


def _responses(batch: dict[str, torch.Tensor], eos: int | None) -> list[torch.Tensor]:
    """Per row, the positions of its response tokens (the closing end-of-sequence excluded)."""
    out = []
    for labels in batch["labels"]:
        response = torch.nonzero(labels != IGNORE).flatten()
        if eos is not None:
            response = response[labels[response] != eos]
        out.append(response)
    return out


@dataclass(frozen=True)
class Pair:
    """One clean example and its corrupted twin, teacher-forced to the first differing box
    token: the first ``length`` positions of row ``clean`` of the clean batch and of row
    ``corrupted`` of the twins' batch line up (same patch slots); the last predicts
    ``clean_token`` (clean) or ``corrupted_token`` (twin). ``roles`` (length,) name each
    position; ``target_cells`` / ``corrupted_cells`` the positions of the visual tokens
    overlapping the clean / the twin's target."""

    clean: int
    corrupted: int
    length: int
    clean_token: int
    corrupted_token: int
    roles: tuple[str, ...]
    target_cells: tuple[int, ...]
    corrupted_cells: tuple[int, ...]


def roles_of(patch: torch.Tensor, answer_start: int, length: int) -> list[str]:
    """What sits at each of the first ``length`` positions of a row with patch slots
    ``patch`` (T,) whose answer's first token is predicted at ``answer_start``: ``img{k}``,
    ``pre-{d}``, ``mark{k}``, ``text-{d}``, ``ans{i}`` (see the module docstring)."""
    slots = torch.nonzero(patch[:length] >= 0).flatten().tolist()
    first, last = slots[0], slots[-1]
    roles, previous = [], -1
    for t in range(length):
        k = int(patch[t])
        if k >= 0:
            roles.append(f"img{k}")
            previous = k
        elif t < first:
            roles.append(f"pre-{first - t}")
        elif t < last:
            roles.append(f"mark{previous}")
        elif t <= answer_start:
            roles.append(f"text-{answer_start - t}")
        else:
            roles.append(f"ans{t - answer_start - 1}")
    return roles


def _cells(vlm: VisionLanguageModel, sample: VLSample, positions: torch.Tensor) -> tuple[int, ...]:
    """The positions of the visual tokens overlapping the sample's target box."""
    from vlab.analysis.inside.vlm import _on_target, _target

    on = _on_target(vlm, [_target(sample, vlm)])[0]
    return tuple(int(positions[k]) for k in np.nonzero(on)[0])


def corrupted_pairs(
    vlm: VisionLanguageModel, examples: VLMExamples, corruption: str, count: int | None = None
) -> tuple[list[Pair], dict[str, torch.Tensor]]:
    """The pairs of ``corruption`` of the first ``count`` examples (None: all; examples
    without a twin, or whose twin does not line up, are left out) and the collated batch of
    the twins."""
    from vlab.models.vlm.batch import batch_of

    _needs(examples, "vlm_patching")
    if corruption not in VLM_CORRUPTIONS:
        raise VlabError(f"unknown corruption {corruption!r} (known: {', '.join(VLM_CORRUPTIONS)})")
    tok = examples.tokenizer
    twins: list[tuple[int, VLSample]] = []
    for b, sample in enumerate(examples.samples[:count]):
        if corruption == "moved":
            twin = moved_twin(examples.shapes, sample, sample.meta.get("index", b))
        else:
            twin = other_target_twin(sample, tok)
        if twin is not None:
            twins.append((b, twin))
    if not twins:
        return [], {}
    batch = batch_of([t for _, t in twins], vlm, tok, examples.sequence)
    responses = _responses(batch, tok.eos_token_id)
    clean_ids, clean_patch = examples.batch["input_ids"], examples.batch["patch_index"]
    pairs = []
    for c, (b, twin) in enumerate(twins):
        start = int(examples.answer_positions[b][0])
        if int(responses[c][0]) - 1 != start:
            continue
        clean_answer = clean_ids[b, start + 1 :][: len(examples.answer_positions[b])]
        twin_answer = batch["input_ids"][c, responses[c]]
        count = min(len(clean_answer), len(twin_answer))
        differ = torch.nonzero(clean_answer[:count] != twin_answer[:count]).flatten()
        if len(differ) == 0:
            continue
        j = int(differ[0])
        length = start + j + 1
        if not torch.equal(clean_patch[b, :length], batch["patch_index"][c, :length]):
            continue
        image = examples.image_positions[b]
        twin_slots = torch.full_like(image, -1)
        slots = torch.nonzero(batch["patch_index"][c] >= 0).flatten()
        twin_slots[batch["patch_index"][c, slots]] = slots
        pairs.append(
            Pair(
                clean=b,
                corrupted=c,
                length=length,
                clean_token=int(clean_answer[j]),
                corrupted_token=int(twin_answer[j]),
                roles=tuple(roles_of(clean_patch[b], start, length)),
                target_cells=_cells(vlm, examples.samples[b], image),
                corrupted_cells=_cells(vlm, twin, twin_slots),
            )
        )
    return pairs, batch


# patching -------------------------------------------------------------------------------------


@dataclass
class _Sums:
    """Running sums of one corruption's LDs per (site, layer, role) and per role."""

    patched: dict[tuple[str, int, str], float]
    count: dict[tuple[str, int, str], int]
    clean: dict[str, float]
    corrupted: dict[str, float]
    seen: dict[str, int]
    index: dict[str, float]


def _add_pairs(
    sums: _Sums, pairs: list[Pair], clean: torch.Tensor, corrupted: torch.Tensor,
    patched: dict[tuple[str, int], torch.Tensor],
) -> None:  # fmt: skip
    for p, pair in enumerate(pairs):
        groups: dict[str, list[int]] = {r: [t] for t, r in enumerate(pair.roles)}
        groups["target_cells"] = list(pair.target_cells)
        groups["corrupted_cells"] = list(pair.corrupted_cells)
        groups["last"] = [pair.length - 1]
        for role, where in groups.items():
            if not where:
                continue
            sums.clean[role] = sums.clean.get(role, 0.0) + float(clean[p])
            sums.corrupted[role] = sums.corrupted.get(role, 0.0) + float(corrupted[p])
            sums.seen[role] = sums.seen.get(role, 0) + 1
            if role not in SUMMARIES:
                sums.index[role] = sums.index.get(role, 0.0) + where[0]
            for (site, layer), values in patched.items():
                key = (site, layer, role)
                value = float(values[p, where].double().mean())
                sums.patched[key] = sums.patched.get(key, 0.0) + value
                sums.count[key] = sums.count.get(key, 0) + 1


def patch_pairs(
    vlm: VisionLanguageModel,
    pairs: list[Pair],
    clean_batch: dict[str, torch.Tensor],
    corrupted_batch: dict[str, torch.Tensor],
    *,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor, dict[tuple[str, int], list[torch.Tensor]]]:
    """Per pair (in order): the clean and corrupted LDs (P,), and per (site, layer) of
    :func:`~vlab.analysis.inside.patching.patched_logit_diffs` the patched LDs, one
    (length,) tensor per pair. Pairs of one length run together, ``batch_size // length``
    (at least one) at a time."""
    n = len(pairs)
    clean, corrupted = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    patched: dict[tuple[str, int], list[torch.Tensor]] = {}
    by_length: dict[int, list[int]] = {}
    for p, pair in enumerate(pairs):
        by_length.setdefault(pair.length, []).append(p)
    for length, members in by_length.items():
        per_batch = max(1, batch_size // length)
        for start in range(0, len(members), per_batch):
            group = members[start : start + per_batch]
            clean_embeds = merged_embeddings(
                vlm, _rows(clean_batch, [pairs[p].clean for p in group])
            )
            twin_embeds = merged_embeddings(
                vlm, _rows(corrupted_batch, [pairs[p].corrupted for p in group])
            )
            diffs = patched_logit_diffs(
                vlm.lm,
                clean_embeds[:, :length],
                twin_embeds[:, :length],
                torch.as_tensor([pairs[p].clean_token for p in group]),
                torch.as_tensor([pairs[p].corrupted_token for p in group]),
            )
            clean[group] = diffs.clean.double()
            corrupted[group] = diffs.corrupted.double()
            for key, values in diffs.patched.items():
                rows = patched.setdefault(key, [torch.empty(0)] * n)
                for k, p in enumerate(group):
                    rows[p] = values[k].double().cpu()
    return clean, corrupted, patched


def vlm_patching_table(
    vlm: VisionLanguageModel,
    examples: VLMExamples,
    *,
    corruptions: Sequence[str] = VLM_CORRUPTIONS,
    batch_size: int = 512,
    max_examples: int = PATCHING_EXAMPLES,
) -> pd.DataFrame:
    """Recovery of the clean box token when one clean activation is patched into the
    corrupted run (see the module docstring): one row per corruption, site, layer and role
    (``token``; ``position`` orders the roles by where they sit on average, -1 for the
    summaries; ``row``, ``col`` a visual token's cell on the VLM's grid, else -1), with the
    mean LDs (clean, corrupted, patched) over the ``n`` examples that have the role. Only
    the first ``max_examples`` examples are patched (see :data:`PATCHING_EXAMPLES`)."""
    vlm.eval()
    cols = vlm.grid[1]
    rows = []
    with torch.no_grad():
        for corruption in corruptions:
            pairs, twins = corrupted_pairs(vlm, examples, corruption, count=max_examples)
            if not pairs:
                continue
            clean, corrupted, patched = patch_pairs(
                vlm, pairs, examples.batch, twins, batch_size=batch_size
            )
            sums = _Sums({}, {}, {}, {}, {}, {})
            stacked = {key: _padded(values) for key, values in patched.items()}
            _add_pairs(sums, pairs, clean, corrupted, stacked)
            order = sorted(sums.index, key=lambda r: (sums.index[r] / sums.seen[r], r))
            position = {r: k for k, r in enumerate(order)} | {r: -1 for r in SUMMARIES}
            for (site, layer, role), total in sums.patched.items():
                n = sums.count[(site, layer, role)]
                ld_clean, ld_corrupted = sums.clean[role] / n, sums.corrupted[role] / n
                ld = total / n
                cell = divmod(int(role[3:]), cols) if role.startswith("img") else (-1, -1)
                rows.append(
                    (corruption, site, layer, position[role], role, *cell)
                    + (recovery(ld, ld_clean, ld_corrupted), ld_clean, ld_corrupted, ld, n)
                )
    table = pd.DataFrame(rows, columns=PATCHING_COLUMNS)
    table = table.sort_values(["corruption", "site", "layer", "position", "token"], kind="stable")
    return table.reset_index(drop=True).astype(
        {"layer": np.int64, "position": np.int64, "row": np.int64, "col": np.int64, "n": np.int64}
    )


def _padded(values: list[torch.Tensor]) -> torch.Tensor:
    """(P, longest) from per-pair tensors of different lengths (NaN after each one's end)."""
    longest = max(len(v) for v in values)
    out = torch.full((len(values), longest), float("nan"), dtype=torch.float64)
    for p, v in enumerate(values):
        out[p, : len(v)] = v
    return out


# logit lens -----------------------------------------------------------------------------------


def vlm_logit_lens_table(
    vlm: VisionLanguageModel, examples: VLMExamples, *, batch_size: int = 8
) -> pd.DataFrame:
    """The logit lens on the answer: per layer (-1 the merged embeddings, i the output of
    block i) and answer token index ``answer_index`` (0: the box's first token), the residual
    stream at the position predicting that token read through the LM's final norm and
    unembedding: mean ``probability`` of the correct token over the whole vocabulary,
    ``accuracy`` (it scores highest), ``rank`` (tokens scored above it: 0 = top), over the
    ``n`` examples whose answer is that long; ``token`` the token when all of them agree
    (``[``, ``.``), else ``*`` (the digits). At the last layer this is the model's own
    teacher-forced prediction."""
    vlm.eval()
    lm = vlm.lm
    layers = [EMBED_LAYER, *range(acts.num_layers(lm))]
    sites = ["embed" if k == EMBED_LAYER else f"blocks.{k}.resid_post" for k in layers]
    longest = max(len(a) for a in examples.answer_positions)
    sums = torch.zeros(len(layers), longest, 3, dtype=torch.float64)
    counts = torch.zeros(longest, dtype=torch.float64)
    tokens: list[set[int]] = [set() for _ in range(longest)]
    ids = examples.batch["input_ids"]
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            index = list(range(start, min(start + batch_size, len(examples))))
            got = acts.trace(lm, merged_embeddings(vlm, _rows(examples.batch, index)), sites)
            for b in index:
                where = examples.answer_positions[b]
                targets = ids[b, where + 1]
                counts[: len(where)] += 1
                for j, t in enumerate(targets.tolist()):
                    tokens[j].add(t)
                for k, site in enumerate(sites):
                    logits = acts.unembed(lm, got[site][b - start, where.to(got[site].device)])
                    logits = logits.float().cpu()  # (A, V)
                    correct = logits.gather(1, targets[:, None])
                    measured = torch.stack(
                        [
                            logits.softmax(-1).gather(1, targets[:, None])[:, 0],
                            (logits.argmax(-1) == targets).float(),
                            (logits > correct).sum(-1).float(),
                        ],
                        dim=-1,
                    )
                    sums[k, : len(where)] += measured.double()
    tok = examples.tokenizer
    rows = []
    for k, layer in enumerate(layers):
        for j in range(longest):
            if counts[j] == 0:
                continue
            means = (sums[k, j] / counts[j]).tolist()
            one = tokens[j]
            text = tok.decode(list(one)) if len(one) == 1 and tok is not None else "*"
            rows.append((layer, j, text, *means, int(counts[j])))
    return pd.DataFrame(rows, columns=LENS_COLUMNS)
