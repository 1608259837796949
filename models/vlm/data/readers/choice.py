"""Readers for multiple-choice (``mcvqa``) and image-text matching (``itm``) sources.

Multiple-choice samples are built by :func:`~vlab.models.vlm.data.multiple_choice.mc_sample`
(prompt = question + lettered options, response = letter); apply
:func:`~vlab.models.vlm.data.multiple_choice.expand_rotations` for the spec's augmentation.

Formats:

* Visual7W telling: ``dataset_v7w_telling.json``: ``{"images": [{"image_id", "filename",
  "split", "qa_pairs": [{"qa_id", "question", "answer", "multiple_choices": [3 wrong],
  "type"}]}]}``. The file does not order the options (the answer is separate), so the four are
  put in a fixed pseudo-random order keyed by ``qa_id`` (the same on every machine and run).
  (yukezhu/visual7w-toolkit @ 2ba129b, ``common/data_provider.py``, which shuffles them too;
  SHAKEUP's authors shuffle the test options at random, gpantaz/vl_mamba @ c788f5f,
  ``visual7w_loader.py``.)
* AI2D (``ai2d-all.zip``, unpacking to ``ai2d/``): one ``questions/<image>.json`` per
  diagram: ``{"imageName", "questions": {question: {"answerTexts", "correctAnswer" (index),
  "abcLabel" (bool), "questionId" (str)}}}``; options in file order. (TRI-ML/vlm-evaluation
  @ d9f5896 ``harnesses/ai2d.py``; gpantaz/vl_mamba @ c788f5f ``ai2d_loader.py``, which adds
  to every AI2D prompt, training and test, an "OCR text:" block listing each annotated text
  box as ``<replacementText>: <value>`` and shows the original diagram; vlm-evaluation shows
  the original diagram without it. Neither uses ``abc_images``.)
  AI2D ships no split inside these files: pass ``test_ids_path`` (one image id per line, such
  as AllenAI's ``ai2d_test_ids.csv``, bare ids; ``12`` and ``12.png`` both match) to select
  ``train`` (not listed) or ``test`` (listed); without it every question is read and
  ``split`` only recorded.
  Questions with ``abcLabel`` true name the diagram's text labels by letters ("What is A in
  the diagram?"): by the dataset's convention the model sees the diagram with each annotated
  text box replaced by its letter: ``abc_images/<image>`` next to ``images/`` in the AI2D
  layouts that evaluation suites read (e.g. InternVL's data layout; AI2D's own README, v1.0.0,
  lists only ``images/``, ``annotations/``, ``questions/`` and ``categories.json``, so whether
  ``ai2d-all.zip`` carries the folder is not verified here). Give ``abc_images_dir`` to use
  them; an image missing there is drawn into that folder (once, then reused) from
  ``annotations/<image>.json`` (``{"text": {"T1": {"rectangle": [[x1, y1], [x2, y2]],
  "value": "nose", "replacementText": "A"}, ...}}``, pixels) when ``annotations_dir`` is
  given: each box filled white with its letter centred in black (:func:`draw_text_labels`).
  Free choice: drawn files live on disk rather than being drawn at load time, so prepared data
  keeps plain image paths and the dataset's own ``abc_images`` and vlab's drawings are used
  the same way. Without ``abc_images_dir`` every question sees the original diagram (the
  reader's behaviour before letters were drawn).
* A-OKVQA: ``aokvqa_v1p0_<split>.json`` (``aokvqa_v1p0.tar.gz``): a list of ``{"split",
  "question_id" (str), "image_id", "question", "choices", "correct_choice_idx",
  "direct_answers", "difficult_direct_answer", "rationales"}``; COCO 2017 images
  ``<image_id:012d>.jpg`` (gpantaz/vl_mamba @ c788f5f, ``aok_vqa_loader.py``).
* VSR: ``<split>.jsonl`` rows ``{"image", "image_link", "caption", "label": 1 | 0,
  "relation", "subj", "obj", "annotator_id", "vote_true_validator_id",
  "vote_false_validator_id"}`` (cambridgeltl/visual-spatial-reasoning @ af55c2c,
  ``data/splits/{random,zeroshot}/{train,dev,test}.jsonl``; SHAKEUP's authors use the random
  split, Prismatic's and Cobra's evaluation the zero-shot test) -> ``itm`` samples. Free
  choice: prompt = the caption, response ``"yes"`` (label 1) or ``"no"``. The images are
  COCO 2017's, from both ``train2017`` and ``val2017`` (``image`` names the file only, its
  ``image_link`` the split), or VSR's own ``vsr_images.zip`` (``images/``): give the source
  ``more_image_roots`` so each is found in whichever folder holds it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from PIL import Image, ImageDraw, ImageFont

from vlab.errors import VlabError
from vlab.models.vlm.data._files import (
    PathLike,
    check_split,
    format_errors,
    image_path,
    load_json,
    load_jsonl,
)
from vlab.models.vlm.data.multiple_choice import mc_sample, stable_order
from vlab.models.vlm.data.records import Turn, VLSample

ITM_YES, ITM_NO = "yes", "no"


def read_visual7w_telling(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """Visual7W telling -> ``mcvqa`` samples (source ``visual7w_telling``). meta: split, type,
    question, choices, answer_index, question_id."""
    check_split(split, ("train", "val", "test"))
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a Visual7W telling file"):
        for im in data["images"]:
            if im["split"] != split:
                continue
            for qa in im["qa_pairs"]:
                choices = stable_order([qa["answer"], *qa["multiple_choices"]], str(qa["qa_id"]))
                yield mc_sample(
                    image_path(image_root, im["filename"]),
                    str(im["image_id"]),
                    "visual7w_telling",
                    qa["question"],
                    choices,
                    choices.index(qa["answer"]),
                    str(qa["qa_id"]),
                    {"split": split, "type": qa.get("type")},
                )


def _ai2d_files(questions: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(questions, (str, Path)) and Path(questions).is_dir():
        return sorted(Path(questions).glob("*.json"))
    if isinstance(questions, (str, Path)):
        return [Path(questions)]
    return [Path(p) for p in questions]


def _ai2d_id(name: str) -> str:
    return name.strip().split(",")[0].removesuffix(".png")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def draw_text_labels(
    image: Image.Image, labels: Sequence[tuple[Sequence[float], str]]
) -> Image.Image:
    """A copy of ``image`` (RGB) with each ``(x1, y1, x2, y2)`` pixel box filled white and its
    text drawn centred in black, sized to the box: AI2D's ``abc_images`` from the original
    diagram and its annotated text boxes."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    for box, text in labels:
        x1, x2 = sorted((float(box[0]), float(box[2])))
        y1, y2 = sorted((float(box[1]), float(box[3])))
        draw.rectangle((x1, y1, x2, y2), fill="white")
        size = max(8, int(0.8 * min(y2 - y1, (x2 - x1) / max(1, len(text)) * 1.6)))
        centre = ((x1 + x2) / 2, (y1 + y2) / 2)
        draw.text(centre, text, fill="black", anchor="mm", font=_font(size))
    return out


def ai2d_text_labels(annotation_path: PathLike) -> list[tuple[list[float], str]]:
    """The ``(box, letter)`` of every text box of an AI2D ``annotations/<image>.json``."""
    data = load_json(annotation_path)
    with format_errors(annotation_path, "an AI2D annotation file"):
        labels = []
        for entry in (data.get("text") or {}).values():
            (x1, y1), (x2, y2) = entry["rectangle"]
            labels.append(([x1, y1, x2, y2], str(entry["replacementText"])))
        return labels


def ai2d_letter_image(
    name: str, image_root: PathLike, abc_images_dir: PathLike, annotations_dir: PathLike | None
) -> str:
    """The path of diagram ``name`` with its text boxes lettered: the dataset's own
    ``abc_images`` file, else one drawn there from the annotations (once)."""
    out = Path(abc_images_dir) / name
    if out.is_file():
        return str(out)
    if annotations_dir is None:
        raise VlabError(
            f"{out} does not exist: give the AI2D source's annotations_dir to draw it, or the "
            "abc_images folder of ai2d-all.zip as abc_images_dir"
        )
    labels = ai2d_text_labels(Path(annotations_dir) / f"{name}.json")
    src = image_path(image_root, name)
    try:
        with Image.open(src) as im:
            drawn = draw_text_labels(im, labels)
    except OSError as e:
        raise VlabError(f"cannot read AI2D image {src} to draw its letters ({e})") from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.drawing{out.suffix}")
        drawn.save(tmp)
        os.replace(tmp, out)
    except OSError as e:
        raise VlabError(
            f"cannot write {out} ({e}): point the AI2D source's abc_images_dir at a writable folder"
        ) from None
    return str(out)


def read_ai2d(
    questions: PathLike | Sequence[PathLike],
    image_root: PathLike,
    split: str = "train",
    test_ids_path: PathLike | None = None,
    abc_images_dir: PathLike | None = None,
    annotations_dir: PathLike | None = None,
) -> Iterator[VLSample]:
    """AI2D question files (a directory, one file or a list) -> ``mcvqa`` samples (source
    ``ai2d``). meta: split, abc_label, letters (the image shows the letters), question,
    choices, answer_index, question_id. A question with letters has the image id
    ``<id>_abc`` (so it is never packed with questions about the unlettered diagram)."""
    test_ids = None
    if test_ids_path is not None:
        check_split(split, ("train", "test"))
        lines = Path(test_ids_path).read_text(encoding="utf-8").splitlines()
        test_ids = {_ai2d_id(x) for x in lines if x.strip()}
    files = _ai2d_files(questions)
    if not files:
        raise VlabError(f"no AI2D question files found in {questions}")
    for path in files:
        data = load_json(path)
        with format_errors(path, "an AI2D questions file"):
            name = data["imageName"]
            if test_ids is not None and (_ai2d_id(name) in test_ids) != (split == "test"):
                continue
            for question, q in data["questions"].items():
                letters = bool(q.get("abcLabel")) and abc_images_dir is not None
                if letters:
                    image = ai2d_letter_image(name, image_root, abc_images_dir, annotations_dir)
                    image_id = f"{_ai2d_id(name)}_abc"
                else:
                    image, image_id = image_path(image_root, name), _ai2d_id(name)
                yield mc_sample(
                    image,
                    image_id,
                    "ai2d",
                    question,
                    q["answerTexts"],
                    q["correctAnswer"],
                    str(q["questionId"]),
                    {"split": split, "abc_label": q.get("abcLabel"), "letters": letters},
                )


def read_aokvqa(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """A-OKVQA -> ``mcvqa`` samples (source ``aokvqa``). meta: split, direct_answers,
    rationales, question, choices, answer_index, question_id. The test file has no
    ``correct_choice_idx``: its rows get answer index 0 and ``meta["has_answer"]`` False."""
    data = load_json(annotation_path)
    with format_errors(annotation_path, "an A-OKVQA file"):
        for row in data:
            idx = row.get("correct_choice_idx")
            meta = {
                "split": split,
                "direct_answers": row.get("direct_answers", []),
                "rationales": row.get("rationales", []),
                "has_answer": idx is not None,
            }
            yield mc_sample(
                image_path(image_root, f"{int(row['image_id']):012d}.jpg"),
                str(row["image_id"]),
                "aokvqa",
                row["question"],
                row["choices"],
                0 if idx is None else idx,
                str(row["question_id"]),
                meta,
            )


def read_vsr(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """VSR -> ``itm`` samples (source ``vsr``). meta: split, label (bool), relation."""
    for row in load_jsonl(annotation_path):
        with format_errors(annotation_path, "a VSR jsonl file"):
            label = bool(int(row["label"]))
            meta = {"split": split, "label": label, "relation": row.get("relation")}
            turn = Turn(row["caption"].strip(), ITM_YES if label else ITM_NO)
            name = row["image"]
        yield VLSample(
            image_path(image_root, name),
            PurePosixPath(name).stem,
            "itm",
            "vsr",
            [turn],
            meta,
        )
