"""Readers for open-ended VQA sources (task ``vqa``: prompt = question, response = answer).

Formats (checked against code that reads the released files: TRI-ML/vlm-evaluation @ d9f5896,
``vlm_eval/tasks/harnesses/*.py``, below "vlm-evaluation"; SHAKEUP's authors' loaders,
gpantaz/vl_mamba @ c788f5f, ``src/vl_mamba/datasets/vl_mamba/*_loader.py``, below "vl_mamba"):

* VQAv2: ``v2_OpenEnded_mscoco_<subtype>_questions.json`` (``{"data_subtype", "questions":
  [{"image_id", "question", "question_id"}]}``) + ``v2_mscoco_<subtype>_annotations.json``
  (``{"annotations": [{"question_id", "multiple_choice_answer", "answers": [{"answer"}] x 10,
  "answer_type", "question_type"}]}``); images ``COCO_<subtype>_<image_id:012d>.jpg``. Response:
  ``multiple_choice_answer``; all ten answers in ``meta["answers"]`` for the VQA score. Without
  annotations (test-dev) the response is empty. (vlm-evaluation ``vqav2.py``; vl_mamba.)
* GQA: ``<split>_balanced_questions.json`` (``questions1.2.zip``): ``{qid: {"imageId",
  "question", "answer", "fullAnswer", "semanticStr", "entailed", "equivalent", ...}}``;
  images ``<imageId>.jpg`` (``images.zip``'s ``images/``). (vlm-evaluation ``gqa.py``.)
* Visual Genome QA: ``question_answers.json`` (``[{"id" (or "image_id"), "qas": [{"qa_id",
  "image_id", "question", "answer", "q_objects", "a_objects"}]}]``; the releases differ in the
  image key, as huggingface/datasets @ fd7e433 ``datasets/visual_genome/visual_genome.py``
  normalises) + ``image_data.json`` for the image folders. Answers lose their final period
  ("Green." -> "Green"), the raw answer stays in ``meta["raw_answer"]``.
* OCR-VQA: ``dataset.json``: ``{book_id: {"imageURL", "questions", "answers", "title",
  "authorName", "genre", "split": 1 | 2 | 3}}`` (1 train, 2 val, 3 test); images as saved by the
  dataset's download script (``loadDataset.py``: ``images/<book_id><extension of
  imageURL>``), which LLaVA-665K's ``ocr_vqa/images`` also follows. (SHAKEUP's authors saved
  each cover under the URL's own file name instead, vl_mamba ``ocr_vqa_loader.py``.)
* DocVQA / InfographicVQA: ``train_v1.0_withQT.json`` (current release, ``spdocvqa_qas.zip``;
  the 2020 release's ``train_v1.0.json``) / ``infographicsVQA_train_v1.0.json`` (the first
  release: ``infographicVQA_train_v1.0.json``): ``{"dataset_name", "dataset_version",
  "dataset_split", "data": [{"questionId", "question", "question_types", "answers", "image"
  (DocVQA, e.g. "documents/xxx.png", also with "docId", "ucsf_document_id",
  "ucsf_document_page_no") or "image_local_name" (InfographicVQA, e.g. "37313.jpeg", with
  "image_url", "ocr_output_file")}]}``. The current DocVQA image archive
  (``spdocvqa_images.tar.gz``) is flat: map the ``documents`` prefix with ``image_folders``.
  Response: the first answer; all answers in ``meta["answers"]`` (ANLS). (vl_mamba
  ``docvqa_loader.py``, ``infographicvqa_loader.py``.)
* TextVQA (evaluation): ``TextVQA_0.5.1_<split>.json``: ``{"data": [{"question_id",
  "question", "image_id", "answers" x 10}]}``; images ``<image_id>.jpg`` (the val images sit in
  ``train_images`` of ``train_val_images.zip``). Response: the most common answer; all ten in
  ``meta["answers"]``. (vlm-evaluation ``textvqa.py``; vl_mamba.) Both papers' protocols give
  the model OCR tokens with the question (SHAKEUP's authors: "OCR text:" from
  ``TextVQA_Rosetta_OCR_v0.2_val.json``; Prismatic / Cobra: LLaVA's
  ``textvqa_val_v051_ocr.jsonl`` questions); this reader gives the question alone.
* POPE (evaluation): ``coco_pope_{random,popular,adversarial}.json`` (AoiDragon/POPE
  ``output/coco``), one JSON object per line, ``{"question_id", "image", "text", "label"}``
  with ``label`` "yes" / "no"; images by file name (``COCO_val2014_...``, COCO val2014).
  Task ``pope``. (vlm-evaluation ``pope.py``; vl_mamba.)
* VizWiz VQA (MambaVLM's evaluation): ``{train,val,test}.json`` (at the top of
  ``Annotations.zip``; vlm-evaluation ``vizwiz.py`` and ``registry.py``, vl_mamba): a list of
  ``{"image": "VizWiz_val_00000000.jpg", "question", "answers": [{"answer",
  "answer_confidence"}] x 10, "answer_type": "other" | "yes/no" | "number" | "unanswerable",
  "answerable": 0 | 1}`` (the test file has only image and question); images in the
  ``train/``, ``val/``, ``test/`` folders of the image zips. Response: ``"unanswerable"`` for
  a question marked ``answerable: 0`` (what the annotators' answers say, whichever wording the
  majority used), else the most common of the ten answers; all ten in ``meta["answers"]``,
  scored by :func:`~vlab.models.vlm.metrics.vqa.vizwiz_accuracy` (VizWiz's own evaluation:
  VQAv2's leave-one-out rule, but its own answer normalisation).
* TallyQA (MambaVLM's evaluation): ``train.json`` / ``test.json`` of ``tallyqa.zip``: a list
  of ``{"image": "VG_100K_2/2410408.jpg" or "train2014/COCO_train2014_....jpg", "question",
  "answer": int, "data_source", "image_id", "question_id", "issimple": bool}``
  (manoja328/tallyqa @ dd83013, README). The test file's images are all Visual Genome's
  (``VG_100K``, ``VG_100K_2``: vlm-evaluation ``tallyqa.py`` finds every one there); the
  train file also names COCO ``train2014`` / ``val2014`` images. So the image root is one
  folder holding those folders, or a source's ``image_folders`` place each. Response: the
  count as digits. ``subset`` keeps the ``simple`` or ``complex`` questions only (the test
  file's two benchmarks). (Prismatic's suite asks TallyQA as a 16-way choice of the numbers
  0-15 and scores exact match; an open count scored by exact match reads the same answer.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import PurePosixPath

from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.data._files import (
    PathLike,
    check_split,
    format_errors,
    image_path,
    load_json,
    load_jsonl,
)
from vlab.models.vlm.data.readers.region import load_vg_images, vg_image_id
from vlab.models.vlm.data.records import Turn, VLSample


def _vqa(image: str, image_id: str, source: str, q: str, a: str, meta: dict) -> VLSample:
    return VLSample(image, image_id, "vqa", source, [Turn(q.strip(), a.strip())], meta)


def read_vqav2(
    questions_path: PathLike,
    annotations_path: PathLike | None,
    image_root: PathLike,
    split: str = "train",
) -> Iterator[VLSample]:
    """VQAv2 -> ``vqa`` samples (source ``vqav2``). meta: split, question_id, answers (10),
    answer_type, question_type."""
    qdata = load_json(questions_path)
    answers: dict[int, dict] = {}
    if annotations_path is not None:
        adata = load_json(annotations_path)
        with format_errors(annotations_path, "a VQAv2 annotations file"):
            answers = {a["question_id"]: a for a in adata["annotations"]}
    with format_errors(questions_path, "a VQAv2 questions file"):
        subtype = qdata["data_subtype"]
        for q in qdata["questions"]:
            ann = answers.get(q["question_id"]) if answers else None
            if answers and ann is None:
                continue
            meta = {
                "split": split,
                "question_id": q["question_id"],
                "answers": [a["answer"] for a in ann["answers"]] if ann else [],
                "answer_type": ann.get("answer_type") if ann else None,
                "question_type": ann.get("question_type") if ann else None,
            }
            name = f"COCO_{subtype}_{q['image_id']:012d}.jpg"
            response = ann["multiple_choice_answer"] if ann else ""
            yield _vqa(
                image_path(image_root, name),
                str(q["image_id"]),
                "vqav2",
                q["question"],
                response,
                meta,
            )


def read_gqa(
    questions_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """GQA balanced questions -> ``vqa`` samples (source ``gqa``). meta: split, question_id,
    full_answer."""
    data = load_json(questions_path)
    with format_errors(questions_path, "a GQA questions file"):
        for qid, q in data.items():
            meta = {"split": split, "question_id": qid, "full_answer": q.get("fullAnswer")}
            yield _vqa(
                image_path(image_root, f"{q['imageId']}.jpg"),
                str(q["imageId"]),
                "gqa",
                q["question"],
                q.get("answer", ""),
                meta,
            )


def read_vg_qa(
    question_answers_path: PathLike,
    image_data_path: PathLike,
    image_root: PathLike,
    split: str = "train",
) -> Iterator[VLSample]:
    """Visual Genome QA -> ``vqa`` samples (source ``visual_genome``). meta: split, qa_id,
    raw_answer."""
    images = load_vg_images(image_data_path)
    data = load_json(question_answers_path)
    with format_errors(question_answers_path, "a Visual Genome question_answers.json"):
        for entry in data:
            iid = vg_image_id(entry)
            path = image_path(image_root, images[iid]["path"])
            for qa in entry["qas"]:
                answer = qa["answer"].strip()
                meta = {"split": split, "qa_id": qa["qa_id"], "raw_answer": qa["answer"]}
                yield _vqa(
                    path,
                    str(iid),
                    "visual_genome",
                    qa["question"],
                    answer[:-1] if answer.endswith(".") else answer,
                    meta,
                )


OCRVQA_SPLITS = {"train": 1, "val": 2, "test": 3}


def read_ocrvqa(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """OCR-VQA -> ``vqa`` samples (source ``ocrvqa``), one per question. meta: split, title,
    genre, image_url. Apply :func:`~vlab.models.vlm.data.filters.filter_ocrvqa` for the spec's
    filters."""
    code = OCRVQA_SPLITS[check_split(split, tuple(OCRVQA_SPLITS))]
    data = load_json(annotation_path)
    with format_errors(annotation_path, "an OCR-VQA dataset.json"):
        for book_id, book in data.items():
            if book["split"] != code:
                continue
            ext = PurePosixPath(book["imageURL"]).suffix or ".jpg"
            path = image_path(image_root, f"{book_id}{ext}")
            meta = {
                "split": split,
                "title": book.get("title"),
                "genre": book.get("genre"),
                "image_url": book["imageURL"],
            }
            for q, a in zip(book["questions"], book["answers"], strict=True):
                yield _vqa(path, str(book_id), "ocrvqa", q, str(a), dict(meta))


def _read_doc_qa(
    annotation_path: PathLike, image_root: PathLike, split: str, source: str
) -> Iterator[VLSample]:
    data = load_json(annotation_path)
    with format_errors(annotation_path, f"a {source} annotation file"):
        for row in data["data"]:
            rel = row["image"] if "image" in row else row["image_local_name"]
            answers = row.get("answers") or [""]
            meta = {"split": split, "question_id": row["questionId"], "answers": answers}
            yield _vqa(
                image_path(image_root, rel),
                PurePosixPath(rel).stem,
                source,
                row["question"],
                answers[0],
                meta,
            )


def read_docvqa(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """DocVQA -> ``vqa`` samples (source ``docvqa``). meta: split, question_id, answers."""
    return _read_doc_qa(annotation_path, image_root, split, "docvqa")


def read_infographicvqa(
    annotation_path: PathLike, image_root: PathLike, split: str = "train"
) -> Iterator[VLSample]:
    """InfographicVQA -> ``vqa`` samples (source ``infographicvqa``). meta as DocVQA."""
    return _read_doc_qa(annotation_path, image_root, split, "infographicvqa")


def read_textvqa(
    annotation_path: PathLike, image_root: PathLike, split: str = "val"
) -> Iterator[VLSample]:
    """TextVQA -> ``vqa`` samples (source ``textvqa``). meta: split, question_id, answers."""
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a TextVQA file"):
        for row in data["data"]:
            answers = [str(a) for a in row.get("answers", [])]
            top = Counter(answers).most_common(1)[0][0] if answers else ""
            meta = {"split": split, "question_id": row["question_id"], "answers": answers}
            yield _vqa(
                image_path(image_root, f"{row['image_id']}.jpg"),
                str(row["image_id"]),
                "textvqa",
                row["question"],
                top,
                meta,
            )


def read_pope(
    annotation_path: PathLike, image_root: PathLike, split: str = "test"
) -> Iterator[VLSample]:
    """POPE -> ``pope`` samples (source ``pope``). meta: split, question_id, label."""
    for row in load_jsonl(annotation_path):
        with format_errors(annotation_path, "a POPE jsonl file"):
            label = str(row["label"]).strip().lower()
            meta = {"split": split, "question_id": row["question_id"], "label": label}
            turn = Turn(row["text"].strip(), label)
            name = row["image"]
            image_id = PurePosixPath(name).stem
            yield VLSample(image_path(image_root, name), image_id, "pope", "pope", [turn], meta)


VIZWIZ_UNANSWERABLE = "unanswerable"
# LLaVA-1.5's VizWiz prompt adds this line after the question (its training data has no
# unanswerable questions, so the model is told what to say)
VIZWIZ_HINT = "When the provided information is insufficient, respond with 'Unanswerable'."


def read_vizwiz(
    annotation_path: PathLike,
    image_root: PathLike,
    split: str = "val",
    unanswerable_hint: bool = False,
) -> Iterator[VLSample]:
    """VizWiz VQA -> ``vqa`` samples (source ``vizwiz``). meta: split, question_id (the image
    file's stem: one question per image), answers (10), answer_type, answerable (None without
    answers). ``unanswerable_hint`` appends :data:`VIZWIZ_HINT` to every question."""
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a VizWiz annotation file"):
        for row in data:
            answers = [str(a["answer"]) for a in row.get("answers") or []]
            answerable = bool(int(row.get("answerable", 1))) if answers else None
            if answerable is False:
                response = VIZWIZ_UNANSWERABLE
            else:
                response = Counter(answers).most_common(1)[0][0] if answers else ""
            name = row["image"]
            meta = {
                "split": split,
                "question_id": PurePosixPath(name).stem,
                "answers": answers,
                "answer_type": row.get("answer_type"),
                "answerable": answerable,
            }
            question = row["question"].strip()
            if unanswerable_hint:
                question = f"{question}\n{VIZWIZ_HINT}"
            yield _vqa(
                image_path(image_root, name),
                PurePosixPath(name).stem,
                "vizwiz",
                question,
                response,
                meta,
            )


TALLY_SUBSETS = ("simple", "complex")


def read_tallyqa(
    annotation_path: PathLike,
    image_root: PathLike,
    split: str = "test",
    subset: str | None = None,
) -> Iterator[VLSample]:
    """TallyQA -> ``vqa`` samples (source ``tallyqa``). meta: split, question_id, data_source,
    subset ("simple" / "complex" from ``issimple``; None where the file has no flag)."""
    if subset is not None and subset not in TALLY_SUBSETS:
        raise ConfigError("subset", f"{subset!r} is not one of {', '.join(TALLY_SUBSETS)}")
    data = load_json(annotation_path)
    with format_errors(annotation_path, "a TallyQA file"):
        for row in data:
            simple = row.get("issimple")
            kind = None if simple is None else TALLY_SUBSETS[0 if simple else 1]
            if subset is not None and kind is None:
                raise VlabError(
                    f"{annotation_path}: question {row['question_id']} has no 'issimple' flag, "
                    f"so it cannot be put in the {subset!r} subset"
                )
            if subset is not None and kind != subset:
                continue
            meta = {
                "split": split,
                "question_id": row["question_id"],
                "data_source": row.get("data_source"),
                "subset": kind,
            }
            yield _vqa(
                image_path(image_root, row["image"]),
                str(row["image_id"]),
                "tallyqa",
                row["question"],
                str(int(row["answer"])),
                meta,
            )
