"""SHAKEUP's data as one config: every source at its usual place under one data root.

``vlab vlm train --preset paper-1.4b --data-root /datasets`` trains on the layout below (the
file names each dataset ships with; images where the datasets unpack them). Any source can
be dropped or re-pointed afterwards with ``--config``/``--set`` (``data.stage2.sources`` is a
list: give the whole list in a config file to change it).

Annotation files under the root (images in brackets):

* stage 1, LLaVA CC3M-595K: ``LLaVA-CC3M-Pretrain-595K/chat.json`` (``…/images``)
* COCO captions: ``coco/annotations/captions_train2017.json`` (``coco/train2017``)
* TextCaps: ``textcaps/TextCaps_0.1_train.json`` (``textvqa/train_images``)
* LLaVA-Instruct: ``llava/llava_instruct_150k.json`` (``coco/train2017``)
* RefCOCO, RefCOCO+, RefCOCOg: ``refcoco/refs(unc).p``, ``refcoco+/refs(unc).p``,
  ``refcocog/refs(umd).p``, each with its ``instances.json`` (``coco/train2014``)
* Visual Genome regions and QA: ``vg/region_descriptions.json``, ``vg/question_answers.json``,
  ``vg/image_data.json`` (``vg/images``)
* GRIT: ``grit/*.jsonl`` (``grit/images``)
* VSR: ``vsr/train.jsonl`` (``coco/train2017``)
* AI2D: ``ai2d/questions/`` and ``ai2d/ai2d_test_ids.csv`` (``ai2d/images``)
* Visual7W telling: ``visual7w/dataset_v7w_telling.json`` (``visual7w/images``)
* A-OKVQA: ``aokvqa/aokvqa_v1p0_train.json`` (``coco/train2017``)
* VQAv2: ``vqav2/v2_OpenEnded_mscoco_train2014_questions.json`` and
  ``vqav2/v2_mscoco_train2014_annotations.json`` (``coco/train2014``)
* GQA: ``gqa/train_balanced_questions.json`` (``gqa/images``)
* OCR-VQA: ``ocrvqa/dataset.json`` (``ocrvqa/images``)
* DocVQA: ``docvqa/train_v1.0.json`` (``docvqa``)
* InfographicVQA: ``infographicvqa/infographicVQA_train_v1.0.json`` (``infographicvqa``)

Held out (evaluated during training): COCO ``captions_val2017.json`` (``coco/val2017``),
VQAv2 val2014 (``coco/val2014``) and RefCOCO val grounding.
"""

from __future__ import annotations

from pathlib import Path


def _src(reader: str, paths: list, images: str, **extra) -> dict:
    return {"reader": reader, "paths": paths, "image_root": images, **extra}


def paper_data(root: str | Path) -> dict:
    """The ``data`` section of a run config for the paper's datasets under ``root``."""
    r = Path(root)

    def p(rel: str) -> str:
        return str(r / rel)

    coco17, coco14 = p("coco/train2017"), p("coco/train2014")
    grit = sorted(str(x) for x in (r / "grit").glob("*.jsonl")) or [p("grit/00000.jsonl")]
    vg_images = p("vg/image_data.json")

    def refcoco(variant: str, refs: str, **extra) -> dict:
        paths = [p(f"{variant}/{refs}"), p(f"{variant}/instances.json")]
        opts = {"source": variant} if variant != "refcoco" else {}
        return _src("refcoco", paths, coco14, options=opts, name=variant, **extra)

    stage2 = [
        _src("coco_captions", [p("coco/annotations/captions_train2017.json")], coco17),
        _src("textcaps", [p("textcaps/TextCaps_0.1_train.json")], p("textvqa/train_images")),
        _src("llava_instruct", [p("llava/llava_instruct_150k.json")], coco17),
        refcoco("refcoco", "refs(unc).p"),
        refcoco("refcoco+", "refs(unc).p"),
        refcoco("refcocog", "refs(umd).p"),
        _src("vg_regions", [p("vg/region_descriptions.json"), vg_images], p("vg/images")),
        _src("vg_qa", [p("vg/question_answers.json"), vg_images], p("vg/images")),
        _src("grit", [grit], p("grit/images")),
        _src("vsr", [p("vsr/train.jsonl")], coco17),
        _src(
            "ai2d",
            [p("ai2d/questions")],
            p("ai2d/images"),
            options={"test_ids_path": p("ai2d/ai2d_test_ids.csv")},
        ),
        _src("visual7w_telling", [p("visual7w/dataset_v7w_telling.json")], p("visual7w/images")),
        _src("aokvqa", [p("aokvqa/aokvqa_v1p0_train.json")], coco17),
        _src(
            "vqav2",
            [
                p("vqav2/v2_OpenEnded_mscoco_train2014_questions.json"),
                p("vqav2/v2_mscoco_train2014_annotations.json"),
            ],
            coco14,
        ),
        _src("gqa", [p("gqa/train_balanced_questions.json")], p("gqa/images")),
        _src("ocrvqa", [p("ocrvqa/dataset.json")], p("ocrvqa/images")),
        _src("docvqa", [p("docvqa/train_v1.0.json")], p("docvqa")),
        _src(
            "infographicvqa",
            [p("infographicvqa/infographicVQA_train_v1.0.json")],
            p("infographicvqa"),
        ),
    ]
    heldout = [
        _src(
            "coco_captions",
            [p("coco/annotations/captions_val2017.json")],
            p("coco/val2017"),
            split="val",
        ),
        _src(
            "vqav2",
            [
                p("vqav2/v2_OpenEnded_mscoco_val2014_questions.json"),
                p("vqav2/v2_mscoco_val2014_annotations.json"),
            ],
            p("coco/val2014"),
            split="val",
        ),
        _src(
            "refcoco",
            [p("refcoco/refs(unc).p"), p("refcoco/instances.json")],
            coco14,
            split="val",
            options={"tasks": ["grounding"]},
        ),
    ]
    stage1 = [
        _src(
            "llava_pretrain",
            [p("LLaVA-CC3M-Pretrain-595K/chat.json")],
            p("LLaVA-CC3M-Pretrain-595K/images"),
        )
    ]
    return {
        "dataset": "files",
        "stage1": {"sources": stage1},
        "stage2": {"sources": stage2},
        "heldout": {"sources": heldout, "pack": False},
    }


def paper_benchmarks(root: str | Path) -> list[dict]:
    """SHAKEUP's evaluation sets under ``root`` (the layout above plus the files below), as
    held-out sources for ``vlab vlm eval``; each source's name is its benchmark.

    COCO ``captions_val2017.json``; NoCaps ``nocaps/nocaps_val_4500_captions.json``
    (``nocaps/images``); VQAv2 val2014; GQA ``gqa/testdev_balanced_questions.json``; Visual7W
    telling and pointing, test split; VSR ``vsr/test.jsonl``; POPE
    ``pope/coco_pope_{random,popular,adversarial}.json`` (``coco/val2014``); RefCOCO / + val,
    testA, testB and RefCOCOg val, test; TextCaps ``textcaps/TextCaps_0.1_val.json``; TextVQA
    ``textvqa/TextVQA_0.5.1_val.json``; AI2D test. Multiple choice is scored without rotation.
    """
    r = Path(root)

    def p(rel: str) -> str:
        return str(r / rel)

    coco14 = p("coco/train2014")
    out = [
        _src(
            "coco_captions",
            [p("coco/annotations/captions_val2017.json")],
            p("coco/val2017"),
            split="val",
            name="coco",
        ),
        _src(
            "coco_captions",
            [p("nocaps/nocaps_val_4500_captions.json")],
            p("nocaps/images"),
            split="val",
            name="nocaps",
        ),
        _src(
            "vqav2",
            [
                p("vqav2/v2_OpenEnded_mscoco_val2014_questions.json"),
                p("vqav2/v2_mscoco_val2014_annotations.json"),
            ],
            p("coco/val2014"),
            split="val",
        ),
        _src("gqa", [p("gqa/testdev_balanced_questions.json")], p("gqa/images"), split="testdev"),
        _src(
            "visual7w_telling",
            [p("visual7w/dataset_v7w_telling.json")],
            p("visual7w/images"),
            split="test",
            rotate_choices=False,
        ),
        _src(
            "visual7w_pointing",
            [p("visual7w/dataset_v7w_pointing.json")],
            p("visual7w/images"),
            split="test",
        ),
        _src("vsr", [p("vsr/test.jsonl")], p("coco/train2017"), split="test"),
    ]
    out += [
        _src("pope", [p(f"pope/coco_pope_{kind}.json")], p("coco/val2014"), name=f"pope_{kind}")
        for kind in ("random", "popular", "adversarial")
    ]
    splits = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB")}
    splits["refcocog"] = ("val", "test")
    refs = {"refcoco": "refs(unc).p", "refcoco+": "refs(unc).p", "refcocog": "refs(umd).p"}
    for variant, names in splits.items():
        for split in names:
            out.append(
                _src(
                    "refcoco",
                    [p(f"{variant}/{refs[variant]}"), p(f"{variant}/instances.json")],
                    coco14,
                    split=split,
                    options={"tasks": ["grounding"]},
                    name=f"{variant}_{split}",
                )
            )
    out += [
        _src(
            "textcaps",
            [p("textcaps/TextCaps_0.1_val.json")],
            p("textvqa/train_images"),
            split="val",
        ),
        _src(
            "textvqa",
            [p("textvqa/TextVQA_0.5.1_val.json")],
            p("textvqa/train_images"),
            split="val",
        ),
        _src(
            "ai2d",
            [p("ai2d/questions")],
            p("ai2d/images"),
            split="test",
            options={"test_ids_path": p("ai2d/ai2d_test_ids.csv")},
            rotate_choices=False,
        ),
    ]
    return out
