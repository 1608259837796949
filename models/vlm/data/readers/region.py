"""Readers for region sources: referring expressions, region descriptions, pointing QA.

Two tasks come from one region and its text (the spec's use of RefCOCO and Visual Genome):

* ``grounding``: prompt = the expression, response = the box (``"[x1, y1, x2, y2]"``, 0-1);
* ``dense_caption``: prompt = the box, response = the expression.

Both carry ``meta["box_xywh"]`` (pixels, as in the file), ``meta["width"]`` and
``meta["height"]``. Choose with ``tasks=``.

Formats (checked against code reading the released files, named per format):

* RefCOCO / RefCOCO+ / RefCOCOg: ``refs(unc).p`` / ``refs(umd).p`` (a pickled list of
  ``{"ref_id", "ann_id", "image_id", "split", "sentences": [{"sent", "raw", "sent_id"}]}``)
  plus ``instances.json`` (COCO: ``images`` with ``file_name``, ``width``, ``height``;
  ``annotations`` with ``id`` and ``bbox`` = [x, y, w, h] pixels). One sample per sentence
  and task; the expression is the tokenised lower-case ``sent``. Splits come from the refs:
  ``train``, ``val``, ``testA``, ``testB`` (unc) or ``test`` (umd). Dense-caption samples of one
  ref share a pack key (the same box with different answers never shares a sequence).
  (The REFER API, as TRI-ML/vlm-evaluation @ d9f5896 ``vlm_eval/util/loading/refer.py``
  carries it: ``refs(<splitBy>).p`` and ``instances.json`` in ``refcoco/``, ``refcoco+/``,
  ``refcocog/``; images ``COCO_train2014_<image_id:012d>.jpg``.)
* Visual Genome regions: ``region_descriptions.json`` (a list of ``{"id", "regions":
  [{"region_id", "image_id", "phrase", "x", "y", "width", "height"}]}``; the releases also
  write the image as ``"image_id"`` and a region's ids as ``"id"`` / ``"image"``, all read)
  with sizes and folders from ``image_data.json`` (``{"image_id" or "id", "width", "height",
  "url", "coco_id", "flickr_id"}``; the image path is the last two parts of the URL,
  ``.../VG_100K_2/1.jpg`` -> ``VG_100K_2/1.jpg``), as huggingface/datasets @ fd7e433
  ``datasets/visual_genome/visual_genome.py`` reads them. Visual Genome has no official
  split: ``split`` is only recorded.
* Visual7W pointing: ``dataset_v7w_pointing.json``: ``{"images": [{"image_id", "filename",
  "split", "qa_pairs": [{"qa_id", "question", "answer": box_id, "multiple_choices":
  [box_id x 3], "type"}]}], "boxes": [{"box_id", "x", "y", "width", "height", "name"}]}``
  (yukezhu/visual7w-toolkit @ 2ba129b, ``common/data_provider.py``: images grouped by
  ``split``, the answer boxes under ``boxes`` by ``box_id``, the answer kept apart from the
  three wrong choices; SHAKEUP's authors read the same boxes from the grounding annotations'
  ``v7w_pointing_answers.json`` and clip negative corners, as :func:`format_box` clamps).
  Two forms (``form=``):

  - ``"choice"``, the papers' benchmark (SHAKEUP's authors' ``evaluate_visual7w.py`` lists the
    four candidate boxes as lettered options and scores the letter): an ``mcvqa`` sample whose
    options are the four candidate boxes as text, in a fixed pseudo-random order keyed by
    ``qa_id`` like Visual7W telling's; response = the answer's letter::

        Which is the dog's tail?
        A. [0.25, 0.05, 0.30, 0.15]
        B. [0.05, 0.20, 0.20, 0.30]
        ...

  - ``"grounding"`` (open pointing): prompt = the question, response = the answer box, scored
    at IoU > 0.5; the four candidates (answer first) stay in ``meta["candidates"]``.

  Image sizes (not in the file) come from a Visual Genome ``image_data.json`` when given
  (Visual7W images are Visual Genome images, ``v7w_<image_id>.jpg``), else from the image files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath

from vlab.errors import ConfigError
from vlab.models.vlm.data._files import (
    PathLike,
    check_split,
    format_errors,
    image_path,
    image_size,
    load_json,
    load_pickle,
)
from vlab.models.vlm.data.multiple_choice import mc_sample, stable_order
from vlab.models.vlm.data.records import PACK_KEY, Turn, VLSample, format_box, xywh_to_xyxy

REGION_TASKS = ("grounding", "dense_caption")


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    bad = [t for t in tasks if t not in REGION_TASKS]
    if bad or not tasks:
        raise ConfigError("tasks", f"{list(tasks)!r}: choose from {', '.join(REGION_TASKS)}")
    return tuple(tasks)


def region_samples(
    image: str,
    image_id: str,
    source: str,
    text: str,
    box_xywh: Sequence[float],
    width: float,
    height: float,
    tasks: Sequence[str],
    meta: dict,
) -> Iterator[VLSample]:
    """The grounding and/or dense-caption sample of one (region, text) pair."""
    box = format_box(*xywh_to_xyxy(box_xywh), width, height)
    meta = dict(meta, box_xywh=list(box_xywh), width=width, height=height, box=box)
    for task in tasks:
        turn = Turn(text, box) if task == "grounding" else Turn(box, text)
        yield VLSample(image, image_id, task, source, [turn], dict(meta))


def read_refcoco(
    refs_path: PathLike,
    instances_path: PathLike,
    image_root: PathLike,
    split: str = "train",
    source: str = "refcoco",
    tasks: Sequence[str] = REGION_TASKS,
) -> Iterator[VLSample]:
    """RefCOCO-family refs -> grounding / dense-caption samples; ``source`` names the variant
    (``refcoco``, ``refcoco+``, ``refcocog``). meta: split, ref_id, ann_id, sent_id, raw."""
    tasks = _check_tasks(tasks)
    check_split(split, ("train", "val", "test", "testA", "testB"))
    refs = load_pickle(refs_path)
    instances = load_json(instances_path)
    with format_errors(instances_path, "a COCO instances file"):
        images = {im["id"]: im for im in instances["images"]}
        boxes = {ann["id"]: ann["bbox"] for ann in instances["annotations"]}
    with format_errors(refs_path, "a RefCOCO refs pickle"):
        for ref in refs:
            if ref["split"] != split:
                continue
            im = images[ref["image_id"]]
            for sent in ref["sentences"]:
                meta = {
                    "split": split,
                    "ref_id": ref["ref_id"],
                    "ann_id": ref["ann_id"],
                    "sent_id": sent["sent_id"],
                    "raw": sent.get("raw"),
                    PACK_KEY: f"{source}:{ref['ref_id']}",
                }
                yield from region_samples(
                    image_path(image_root, im["file_name"]),
                    str(im["id"]),
                    source,
                    sent["sent"].strip(),
                    boxes[ref["ann_id"]],
                    im["width"],
                    im["height"],
                    tasks,
                    meta,
                )


def vg_image_id(entry: dict) -> int:
    """The image id of a Visual Genome annotation entry (``"id"`` or ``"image_id"``)."""
    return entry["id"] if "id" in entry else entry["image_id"]


def load_vg_images(image_data_path: PathLike) -> dict[int, dict]:
    """Visual Genome ``image_data.json`` -> {image_id: {"width", "height", "path"}}."""
    data = load_json(image_data_path)
    with format_errors(image_data_path, "a Visual Genome image_data.json"):
        out = {}
        for im in data:
            iid = im["image_id"] if "image_id" in im else im["id"]
            parts = PurePosixPath(im["url"]).parts[-2:]
            out[iid] = {"width": im["width"], "height": im["height"], "path": "/".join(parts)}
        return out


def read_vg_regions(
    region_descriptions_path: PathLike,
    image_data_path: PathLike,
    image_root: PathLike,
    split: str = "train",
    tasks: Sequence[str] = REGION_TASKS,
) -> Iterator[VLSample]:
    """Visual Genome region descriptions -> grounding / dense-caption samples (source
    ``visual_genome``). meta: split, region_id. Apply
    :func:`~vlab.models.vlm.data.filters.filter_vg_regions` for the spec's area filter."""
    tasks = _check_tasks(tasks)
    images = load_vg_images(image_data_path)
    data = load_json(region_descriptions_path)
    with format_errors(region_descriptions_path, "a Visual Genome region_descriptions.json"):
        for entry in data:
            iid = vg_image_id(entry)
            im = images[iid]
            for reg in entry["regions"]:
                region_id = reg["region_id"] if "region_id" in reg else reg["id"]
                yield from region_samples(
                    image_path(image_root, im["path"]),
                    str(iid),
                    "visual_genome",
                    reg["phrase"].strip(),
                    [reg["x"], reg["y"], reg["width"], reg["height"]],
                    im["width"],
                    im["height"],
                    tasks,
                    {"split": split, "region_id": region_id},
                )


POINTING_FORMS = ("choice", "grounding")


def read_visual7w_pointing(
    annotation_path: PathLike,
    image_root: PathLike,
    split: str = "train",
    image_data_path: PathLike | None = None,
    form: str = "grounding",
) -> Iterator[VLSample]:
    """Visual7W pointing -> ``mcvqa`` (``form="choice"``) or ``grounding`` samples (source
    ``visual7w_pointing``).

    meta: split, qa_id, type, box_xywh (the answer's), width, height; ``choice`` adds the
    multiple-choice fields (question, choices, answer_index, question_id); ``grounding`` adds
    candidates (the four boxes as text, answer first) and candidates_xywh in that order.
    """
    check_split(split, ("train", "val", "test"))
    if form not in POINTING_FORMS:
        raise ConfigError("form", f"{form!r} is not one of {', '.join(POINTING_FORMS)}")
    sizes = load_vg_images(image_data_path) if image_data_path is not None else None
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a Visual7W pointing file"):
        boxes = {b["box_id"]: b for b in data["boxes"]}
        for im in data["images"]:
            if im["split"] != split:
                continue
            path = image_path(image_root, im["filename"])
            if sizes is not None:
                width, height = sizes[im["image_id"]]["width"], sizes[im["image_id"]]["height"]
            else:
                width, height = image_size(path)
            for qa in im["qa_pairs"]:
                ids = [qa["answer"], *qa["multiple_choices"]]
                if form == "choice":
                    ids = stable_order(ids, str(qa["qa_id"]))
                xywh = [[boxes[i][k] for k in ("x", "y", "width", "height")] for i in ids]
                cands = [format_box(*xywh_to_xyxy(b), width, height) for b in xywh]
                answer = ids.index(qa["answer"])
                meta = {
                    "split": split,
                    "qa_id": qa["qa_id"],
                    "type": qa.get("type"),
                    "box_xywh": xywh[answer],
                    "width": width,
                    "height": height,
                }
                if form == "choice":
                    yield mc_sample(
                        path,
                        str(im["image_id"]),
                        "visual7w_pointing",
                        qa["question"],
                        cands,
                        answer,
                        str(qa["qa_id"]),
                        meta,
                    )
                    continue
                meta.update(candidates=cands, candidates_xywh=xywh)
                yield VLSample(
                    path,
                    str(im["image_id"]),
                    "grounding",
                    "visual7w_pointing",
                    [Turn(qa["question"].strip(), cands[0])],
                    meta,
                )
