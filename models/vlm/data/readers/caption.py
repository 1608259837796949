"""Readers for captioning, chat and grounded-captioning sources.

Each reader streams :class:`VLSample` s from the dataset's own files; ``image`` is the
dataset's relative image path joined to ``image_root``; ``split`` is recorded in
``meta["split"]`` (these files hold one split each).

Formats:

* COCO captions (``captions_train2017.json``): ``{"images": [{"id", "file_name", "width",
  "height"}], "annotations": [{"id", "image_id", "caption"}]}`` -> one ``caption`` sample per
  annotation, empty prompt.
* COCO captions in Karpathy's split (``dataset_coco.json`` of Karpathy's
  ``caption_datasets.zip``): ``{"images": [{"filepath": "train2014" | "val2014", "filename",
  "cocoid", "split": "train" | "restval" | "val" | "test", "sentids", "sentences": [{"raw",
  "tokens", "sentid"}]}], "dataset": "coco"}`` -> one ``caption`` sample per sentence (the
  ``raw`` text), image ``<filepath>/<filename>``. ``split="train"`` takes ``train`` and
  ``restval`` (113,287 images), as SHAKEUP's authors train; they test on ``test`` (5,000
  images; gpantaz/vl_mamba @ c788f5f, ``coco_loader.py``, ``evaluate_on_all.sh``).
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
* LVIS-Instruct4V (``lvis_instruct4v_220k.json``, MambaVLM's training data): the same
  conversation layout, images ``coco/train2017/...`` and ``coco/val2017/...`` (the LVIS
  images are COCO 2017's), so ``image_root`` is the folder holding ``coco/`` -> ``chat``
  samples (source ``lvis_instruct4v``). Checked against Cobra's preparation script
  (h-zhao1997/cobra @ 4b81082, ``scripts/additional-datasets/lvis_instruct_4v.py``: the rows'
  ``image`` is relative to the folder holding ``coco/``).
* LRV-Instruction (``filter_cap1.json``, ``filter_cap_more1.json``, the chart set
  ``chart_release_update.json``; MambaVLM's training data): a list of ``{"image_id",
  "question", "answer", "task"}``, one instruction per row (positive and negative ones). The
  Visual Genome images come in the authors' own ``image.tar.gz`` (``image/<image_id>.jpg``;
  their ids are not Visual Genome's), the chart images in ``chart_image.zip``, where
  ``image_id`` is already the file name (checked against Cobra's preparation script,
  h-zhao1997/cobra @ 4b81082, ``scripts/additional-datasets/lrv_instruct.py``, which reads
  ``image_id``, ``question`` and ``answer`` and renames the two folders ``lrv-vg`` and
  ``lrv-chart``). -> one single-turn ``chat`` sample per row (source
  ``lrv_instruct``), as LLaVA-style mixtures use it; free choice: rows are not merged per
  image (the packer never packs chat, and the rows of one image are often contradictory
  negative / positive pairs).
* NoCaps (evaluation): ``nocaps_val_4500_captions.json``, COCO captions format whose images
  carry ``"domain"``: ``in-domain`` | ``near-domain`` | ``out-domain`` and ``open_images_id``
  (also ``coco_url``); images by ``file_name`` (Open Images' ``validation`` folder, as
  TRI-ML/vlm-evaluation @ d9f5896 ``tasks/registry.py`` downloads it). -> ``caption``
  samples (source ``nocaps``) with ``meta["domain"]`` (CIDEr is reported per domain). The test file
  (``nocaps_test_image_info.json``) has no captions: one sample per image with an empty
  response (predictions for the evaluation server only).
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
    check_split,
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


KARPATHY_SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


def read_coco_karpathy(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """COCO captions in Karpathy's split -> ``caption`` samples (source ``coco``); meta: split,
    caption_id (the sentence id), karpathy_split (``restval`` rows of ``train`` say so)."""
    keep = KARPATHY_SPLITS[check_split(split, tuple(KARPATHY_SPLITS))]
    data = load_json(annotation_path)
    with format_errors(annotation_path, "Karpathy's dataset_coco.json"):
        for im in data["images"]:
            if im["split"] not in keep:
                continue
            rel = f"{im['filepath']}/{im['filename']}" if im.get("filepath") else im["filename"]
            for sent in im["sentences"]:
                meta = {"split": split, "caption_id": sent["sentid"], "karpathy_split": im["split"]}
                yield VLSample(
                    image_path(image_root, rel),
                    str(im["cocoid"]),
                    "caption",
                    "coco",
                    [Turn("", sent["raw"].strip())],
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


def _read_conversations(
    annotation_path: PathLike, image_root: PathLike, split: str, source: str, what: str
) -> Iterator[VLSample]:
    data = load_json(annotation_path)
    with format_errors(annotation_path, what):
        for row in data:
            where = f"{annotation_path} id {row['id']}"
            image = image_path(image_root, row["image"]) if row.get("image") else None
            yield VLSample(
                image,
                str(row["id"]),
                "chat",
                source,
                _conversation_turns(row["conversations"], where),
                {"split": split},
            )


def read_llava_instruct(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """LLaVA-Instruct / LLaVA-665K conversations -> ``chat`` samples (source
    ``llava_instruct``; give the source a ``name`` to label the 665K mixture apart). A row
    without an ``image`` key (or with an empty one) is a text-only sample (``image`` None).
    meta: split."""
    return _read_conversations(
        annotation_path, image_root, split, "llava_instruct", "a LLaVA-Instruct file"
    )


def read_lvis_instruct4v(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """LVIS-Instruct4V conversations -> ``chat`` samples (source ``lvis_instruct4v``), as
    :func:`read_llava_instruct`. meta: split."""
    return _read_conversations(
        annotation_path, image_root, split, "lvis_instruct4v", "a LVIS-Instruct4V file"
    )


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".webp")


def read_lrv_instruct(
    annotation_paths: PathLike | Sequence[PathLike], image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """LRV-Instruction rows (one file or several) -> single-turn ``chat`` samples (source
    ``lrv_instruct``). Image: ``<image_id>.jpg``, or ``image_id`` itself where it is a file name
    (the chart set). meta: split, task (the row's instruction type, when given)."""
    if isinstance(annotation_paths, (str, Path)):
        annotation_paths = [annotation_paths]
    for path in annotation_paths:
        data = load_json(path)
        with format_errors(path, "an LRV-Instruction file"):
            rows = data["annotations"] if isinstance(data, dict) else data
            for row in rows:
                image_id = str(row["image_id"])
                suffix = Path(image_id).suffix.lower()
                name = image_id if suffix in _IMAGE_SUFFIXES else f"{image_id}.jpg"
                turn = Turn(row["question"].strip(), str(row["answer"]).strip())
                yield VLSample(
                    image_path(image_root, name),
                    Path(name).stem,
                    "chat",
                    "lrv_instruct",
                    [turn],
                    {"split": split, "task": row.get("task")},
                )


NOCAPS_DOMAINS = ("in-domain", "near-domain", "out-domain")


def read_nocaps(
    annotation_path: PathLike, image_root: PathLike, split: str = "val"
) -> Iterator[VLSample]:
    """NoCaps -> ``caption`` samples (source ``nocaps``), one per caption (one per image with an
    empty response where the file has none). meta: split, domain, open_images_id,
    caption_id, width, height."""
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a NoCaps annotation file"):
        captions: dict[int, list[dict]] = {}
        for ann in data.get("annotations") or []:
            captions.setdefault(ann["image_id"], []).append(ann)
        for im in data["images"]:
            if im.get("domain") not in NOCAPS_DOMAINS:
                raise VlabError(
                    f"{annotation_path}: image {im['id']} has domain {im.get('domain')!r}, "
                    f"not one of {', '.join(NOCAPS_DOMAINS)}"
                )
            for ann in captions.get(im["id"]) or [{"id": None, "caption": ""}]:
                meta = {
                    "split": split,
                    "domain": im["domain"],
                    "open_images_id": im.get("open_images_id"),
                    "caption_id": ann["id"],
                    "width": im.get("width"),
                    "height": im.get("height"),
                }
                yield VLSample(
                    image_path(image_root, im["file_name"]),
                    str(im["id"]),
                    "caption",
                    "nocaps",
                    [Turn("", ann["caption"].strip())],
                    meta,
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
