"""Readers for captioning, chat and grounded-captioning sources.

Each reader streams :class:`VLSample` s from the dataset's own files; ``image`` is the
dataset's relative image path joined to ``image_root``; ``split`` is recorded in
``meta["split"]`` (these files hold one split each).

Formats:

* COCO captions (``captions_train2017.json``): ``{"images": [{"id", "file_name", "width",
  "height"}], "annotations": [{"id", "image_id", "caption"}]}`` -> one ``caption`` sample per
  annotation, empty prompt.
* TextCaps (``TextCaps_0.1_train.json``): ``{"data": [{"image_id", "caption_str",
  "caption_id", "reference_strs", "image_width", "image_height"}]}``, images
  ``<image_id>.jpg`` (TextVQA ``train_images``) -> one ``caption`` sample per caption; rows
  without ``caption_str`` (the test file) are skipped.
* LLaVA pretraining (``chat.json`` of CC3M-595K, ``blip_laion_cc_sbu_558k.json``): a list of
  ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": caption}]}`` -> ``caption`` samples. Free choice: the prompt is
  empty (the spec's caption instruction replaces LLaVA's varied "describe the image" requests,
  which are kept in ``meta["original_prompt"]``).
* LLaVA-Instruct (``llava_instruct_150k.json``) and LLaVA-1.5's mixture
  (``llava_v1_5_mix665k.json``, image paths under per-dataset folders such as
  ``coco/train2017/...``, so ``image_root`` is the folder holding them): same layout,
  multi-turn -> one ``chat`` sample per conversation, one turn per human/gpt pair, ``<image>``
  tags and the newline around them removed. Rows without ``image`` (LLaVA-665K's ShareGPT
  conversations) become text-only samples (``image`` None), which train without image tokens.
* GRIT (``*.jsonl`` rows, or img2dataset's per-image ``*.json``): ``{"key", "url", "caption",
  "width", "height", "noun_chunks": [[start, end, x1, y1, x2, y2, score], ...]}`` with boxes
  normalised to 0-1 -> ``grounded_caption`` samples, see :func:`grit_grounded_caption`. Image
  path: the row's ``image`` field if present, else img2dataset's layout
  ``<key[:5]>/<key>.jpg``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from vlab.errors import VlabError
from vlab.models.vlm.data._files import (
    PathLike,
    format_errors,
    image_path,
    load_json,
    load_jsonl,
)
from vlab.models.vlm.data.records import Turn, VLSample, format_norm_box


def read_coco_captions(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """COCO captions -> ``caption`` samples (source ``coco``); meta: split, caption_id, width,
    height."""
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a COCO captions file"):
        images = {im["id"]: im for im in data["images"]}
        for ann in data["annotations"]:
            im = images[ann["image_id"]]
            meta = {
                "split": split,
                "caption_id": ann["id"],
                "width": im["width"],
                "height": im["height"],
            }
            yield VLSample(
                image_path(image_root, im["file_name"]),
                str(im["id"]),
                "caption",
                "coco",
                [Turn("", ann["caption"].strip())],
                meta,
            )


def read_textcaps(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """TextCaps -> ``caption`` samples (source ``textcaps``); meta: split, caption_id,
    reference_strs (all captions of the image, for CIDEr), width, height."""
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a TextCaps file"):
        for row in data["data"]:
            if not row.get("caption_str"):
                continue
            meta = {
                "split": split,
                "caption_id": row.get("caption_id"),
                "reference_strs": row.get("reference_strs", []),
                "width": row.get("image_width"),
                "height": row.get("image_height"),
            }
            yield VLSample(
                image_path(image_root, f"{row['image_id']}.jpg"),
                str(row["image_id"]),
                "caption",
                "textcaps",
                [Turn("", row["caption_str"].strip())],
                meta,
            )


def strip_image_tag(text: str) -> str:
    """LLaVA text without the ``<image>`` placeholder and the newline next to it."""
    return text.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").strip()


def _conversation_turns(conv: Sequence[dict], where: str) -> list[Turn]:
    """human/gpt pairs -> turns; a conversation that does not alternate is an error."""
    if len(conv) % 2:
        raise VlabError(f"{where}: conversation has an odd number of messages")
    turns = []
    for human, gpt in zip(conv[::2], conv[1::2], strict=True):
        if human["from"] != "human" or gpt["from"] != "gpt":
            raise VlabError(f"{where}: messages must alternate human, gpt")
        turns.append(Turn(strip_image_tag(human["value"]), gpt["value"].strip()))
    if not turns:
        raise VlabError(f"{where}: empty conversation")
    return turns


def read_llava_pretrain(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """LLaVA pretraining captions -> ``caption`` samples (source ``llava_pretrain``), empty
    prompt; meta: split, original_prompt."""
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a LLaVA pretraining file"):
        for row in data:
            where = f"{annotation_path} id {row['id']}"
            turns = _conversation_turns(row["conversations"], where)
            if len(turns) != 1:
                raise VlabError(
                    f"{where}: a pretraining caption has one exchange, not {len(turns)}"
                )
            turn = turns[0]
            yield VLSample(
                image_path(image_root, row["image"]),
                str(row["id"]),
                "caption",
                "llava_pretrain",
                [Turn("", turn.response)],
                {"split": split, "original_prompt": turn.prompt},
            )


def read_llava_instruct(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """LLaVA-Instruct / LLaVA-665K conversations -> ``chat`` samples (source
    ``llava_instruct``; give the source a ``name`` to label the 665K mixture apart). A row
    without an ``image`` key (or with an empty one) is a text-only sample (``image`` None).
    meta: split."""
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a LLaVA-Instruct file"):
        for row in data:
            where = f"{annotation_path} id {row['id']}"
            image = image_path(image_root, row["image"]) if row.get("image") else None
            yield VLSample(
                image,
                str(row["id"]),
                "chat",
                "llava_instruct",
                _conversation_turns(row["conversations"], where),
                {"split": split},
            )


def grit_grounded_caption(caption: str, noun_chunks: Sequence[Sequence[float]]) -> str:
    """The caption with each entity followed by its box(es).

    ``"a dog playing with a ball"`` with chunks (0, 5) and (18, 24) becomes
    ``"a dog [0.10, 0.20, 0.50, 0.90] playing with a ball [0.40, 0.60, 0.55, 0.75]"``.
    Several boxes for the same span are written one after the other, separated by a space,
    in the order of the file; a chunk overlapping an earlier (different) span is skipped, so
    the text is always the caption with boxes inserted.
    """
    spans: dict[tuple[int, int], list[str]] = {}
    for chunk in noun_chunks:
        start, end = int(chunk[0]), int(chunk[1])
        spans.setdefault((start, end), []).append(format_norm_box(*chunk[2:6]))
    out, pos = [], 0
    for (start, end), boxes in sorted(spans.items()):
        if start < pos or end <= start:
            continue
        out.append(caption[pos:end])
        out.append(" " + " ".join(boxes))
        pos = end
    out.append(caption[pos:])
    return "".join(out).strip()


def _grit_rows(paths: Iterable[PathLike]) -> Iterator[tuple[PathLike, dict]]:
    for p in paths:
        if str(p).endswith(".jsonl"):
            for row in load_jsonl(p):
                yield p, row
        else:
            yield p, load_json(p)


def read_grit(
    annotation_paths: PathLike | Sequence[PathLike], image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """GRIT rows -> ``grounded_caption`` samples (source ``grit``), empty prompt.

    meta: split, key, url, width, height, caption (raw), noun_chunks (raw, for
    :func:`~vlab.models.vlm.data.filters.filter_grit`). Rows without noun chunks are skipped.
    """
    if isinstance(annotation_paths, (str, Path)):
        annotation_paths = [annotation_paths]
    for path, row in _grit_rows(annotation_paths):
        with format_errors(path, "a GRIT row"):
            chunks = row["noun_chunks"]
            if not chunks:
                continue
            key = str(row["key"] if "key" in row else row["id"])
            rel = row.get("image") or f"{key[:5]}/{key}.jpg"
            meta = {
                "split": split,
                "key": key,
                "url": row.get("url"),
                "width": row["width"],
                "height": row["height"],
                "caption": row["caption"],
                "noun_chunks": chunks,
            }
            turn = Turn("", grit_grounded_caption(row["caption"], chunks))
        yield VLSample(image_path(image_root, rel), key, "grounded_caption", "grit", [turn], meta)
