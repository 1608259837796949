"""Readers for multiple-choice (``mcvqa``) and image-text matching (``itm``) sources.

Multiple-choice samples are built by :func:`~vlab.models.vlm.data.multiple_choice.mc_sample`
(prompt = question + lettered options, response = letter); apply
:func:`~vlab.models.vlm.data.multiple_choice.expand_rotations` for the spec's augmentation.

Formats:

* Visual7W telling: ``dataset_v7w_telling.json``: ``{"images": [{"image_id", "filename",
  "split", "qa_pairs": [{"qa_id", "question", "answer", "multiple_choices": [3 wrong],
  "type"}]}]}``. The file does not order the options (the answer is separate), so the four are
  put in a fixed pseudo-random order keyed by ``qa_id`` (the same on every machine and run).
* AI2D: one ``questions/<image>.json`` per diagram: ``{"imageName", "questions": {question:
  {"answerTexts", "correctAnswer", "abcLabel", "questionId"}}}``; options in file order.
  AI2D ships no split inside these files: pass ``test_ids_path`` (one image id per line, such
  as AllenAI's ``ai2d_test_ids.csv``; ``12`` and ``12.png`` both match) to select ``train`` (not
  listed) or ``test`` (listed); without it every question is read and ``split`` only recorded.
* A-OKVQA: ``aokvqa_v1p0_<split>.json``: a list of ``{"question_id", "image_id", "question",
  "choices", "correct_choice_idx", "direct_answers", "rationales"}``; COCO 2017 images
  ``<image_id:012d>.jpg``.
* VSR: ``<split>.jsonl`` rows ``{"image", "caption", "label": 1 | 0, "relation"}`` ->
  ``itm`` samples. Free choice: prompt = the caption, response ``"yes"`` (label 1) or ``"no"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from vlab.errors import VlabError
from vlab.models.vlm.data._files import (
    PathLike,
    check_split,
    format_errors,
    image_path,
    load_json,
    load_jsonl,
)
from vlab.models.vlm.data.multiple_choice import mc_sample
from vlab.models.vlm.data.records import Turn, VLSample

ITM_YES, ITM_NO = "yes", "no"


def stable_order(items: Sequence, key: str) -> list:
    """``items`` in a pseudo-random order fixed by ``key`` (sha256, not Python's hash)."""
    digests = [hashlib.sha256(f"{key}:{i}".encode()).hexdigest() for i in range(len(items))]
    return [items[i] for i in sorted(range(len(items)), key=digests.__getitem__)]


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


def read_ai2d(
    questions: PathLike | Sequence[PathLike],
    image_root: PathLike,
    split: str = "train",
    test_ids_path: PathLike | None = None,
) -> Iterator[VLSample]:
    """AI2D question files (a directory, one file or a list) -> ``mcvqa`` samples (source
    ``ai2d``). meta: split, abc_label, question, choices, answer_index, question_id."""
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
                yield mc_sample(
                    image_path(image_root, name),
                    _ai2d_id(name),
                    "ai2d",
                    question,
                    q["answerTexts"],
                    q["correctAnswer"],
                    str(q["questionId"]),
                    {"split": split, "abc_label": q.get("abcLabel")},
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
