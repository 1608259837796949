"""The papers' data as configs: every source at the place its official download unpacks to.

``vlab vlm train --preset paper-1.4b --data-root /datasets`` trains on SHAKEUP's mixture
(:func:`paper_data`), ``vlab vlm eval --data-root /datasets`` scores its benchmarks
(:func:`paper_benchmarks`); ``--paper mambavlm`` takes MambaVLM's instead. Any source can be
dropped or re-pointed afterwards with ``--config``/``--set`` (``data.stage2.sources`` is a list:
give the whole list in a config file to change it).

Each dataset is looked for under the root in the folders its archives unpack to; where two
layouts are common the first that exists is used (listed below in that order), and when none
does the first is named in the error. Before any work, every missing annotation file *and*
image folder is listed at once (``vlab vlm eval --skip-missing`` drops the benchmarks that
miss either, naming what each lacks).

Annotation files and folders under the root (image folders in brackets):

* COCO: ``coco/train2014``, ``coco/val2014``, ``coco/train2017``, ``coco/val2017`` (the image
  zips' folders; also ``coco/images/<split>`` or ``<split>`` at the root)
* COCO captions in Karpathy's split, as SHAKEUP's authors train (``train`` + ``restval``),
  hold out (``val``) and test (``test``; gpantaz/vl_mamba @ c788f5f,
  ``datasets/vl_mamba/coco_loader.py`` and ``scripts/evaluate_on_all.sh``):
  ``coco/dataset_coco.json`` (from Karpathy's ``caption_datasets.zip``; also
  ``caption_datasets/`` or the root); its images are named by their 2014 folders
  (``train2014`` / ``val2014`` above)
* Visual Genome: ``vg/region_descriptions.json``, ``vg/question_answers.json``,
  ``vg/image_data.json`` (``vg/VG_100K`` and ``vg/VG_100K_2`` from ``images.zip`` and
  ``images2.zip``; also under ``vg/images/``)
* stage 1, LLaVA CC3M-595K: ``LLaVA-CC3M-Pretrain-595K/chat.json`` (``…/images``)
* TextCaps: ``textcaps/TextCaps_0.1_{train,val}.json`` (``textvqa/train_images``)
* TextVQA: ``textvqa/TextVQA_0.5.1_val.json`` (``textvqa/train_images``, from
  ``train_val_images.zip``)
* LLaVA-Instruct: ``llava/llava_instruct_150k.json`` (COCO ``train2017``)
* RefCOCO, RefCOCO+, RefCOCOg: ``refcoco/refs(unc).p``, ``refcoco+/refs(unc).p``,
  ``refcocog/refs(umd).p``, each with its ``instances.json`` (COCO ``train2014``)
* GRIT: ``grit/*.jsonl`` (``grit/images``)
* VSR: the random split's ``vsr/{train,test}.jsonl`` (also ``vsr/random/`` or
  ``vsr/splits/random/``, as cambridgeltl/visual-spatial-reasoning ships them; SHAKEUP's
  authors read ``cambridgeltl/vsr_random``): images from ``vsr/images`` when there (VSR's own
  image zip, ``vsr_images.zip``), else COCO ``train2017`` and ``val2017`` both (VSR names the
  file only; each image is found in whichever split holds it)
* AI2D (``ai2d-all.zip``): ``ai2d/questions/``, ``ai2d/annotations/``, ``ai2d/images``,
  ``ai2d/abc_images`` (the diagrams with their text boxes lettered, used for the questions that
  name letters; drawn from the annotations where missing) and ``ai2d/ai2d_test_ids.csv``
* Visual7W: ``visual7w/dataset_v7w_{telling,pointing}.json`` (``visual7w/images``); pointing
  is the four-way choice between the candidate boxes, in training and as the benchmark
* A-OKVQA: ``aokvqa/aokvqa_v1p0_train.json`` (COCO ``train2017``)
* VQAv2: ``vqav2/v2_OpenEnded_mscoco_{train,val}2014_questions.json`` and
  ``vqav2/v2_mscoco_{train,val}2014_annotations.json`` (COCO ``train2014`` / ``val2014``)
* GQA: ``gqa/{train,testdev}_balanced_questions.json`` (``gqa/images``)
* OCR-VQA: ``ocrvqa/dataset.json`` (``ocrvqa/images``)
* DocVQA (RRC task 1): ``docvqa/spdocvqa_qas/train_v1.0_withQT.json`` and the flat image
  folder ``docvqa/spdocvqa_images`` (the current release's ``spdocvqa_qas.zip`` and
  ``spdocvqa_images.tar.gz``; also ``docvqa/train_v1.0_withQT.json``, or the 2020 release's
  ``docvqa/train/train_v1.0.json`` with ``docvqa/train/documents``, or
  ``docvqa/train_v1.0.json`` with ``docvqa/documents``); the file's ``documents/`` prefix is
  mapped to whichever image folder is there
* InfographicVQA (RRC task 3):
  ``infographicvqa/infographicsvqa_qas/infographicsVQA_train_v1.0.json``
  (``infographicvqa/infographicsvqa_images``; also the file directly in ``infographicvqa/``,
  or the first release's ``infographicVQA_train_v1.0.json`` with
  ``infographicVQA_train_v1.0_images/``, or the images directly in ``infographicvqa/``)
* NoCaps: ``nocaps/nocaps_val_4500_captions.json`` (``nocaps/validation``; also
  ``nocaps/val`` or ``nocaps/images``)
* POPE: ``pope/coco_pope_{random,popular,adversarial}.json`` (also ``pope/coco/``; COCO
  ``val2014``)

MambaVLM's, besides COCO, Visual Genome, GQA, TextVQA, VQAv2, VSR and POPE above:

* LLaVA-1.5's mixture: ``llava/llava_v1_5_mix665k.json``; its image paths
  (``coco/train2017``, ``gqa/images``, ``ocr_vqa/images``, ``textvqa/train_images``,
  ``vg/VG_100K``, ``vg/VG_100K_2``) are mapped to the folders above (``ocr_vqa/images`` to
  ``ocr_vqa/images`` or else ``ocrvqa/images``; LLaVA stores those covers as ``.jpg``)
* LVIS-Instruct4V: ``lvis_instruct4v/lvis_instruct4v_220k.json`` (also
  ``LVIS-Instruct4V/``; COCO ``train2017`` and ``val2017``)
* LRV-Instruction: ``lrv/filter_cap1.json`` and ``lrv/filter_cap_more1.json`` (``lrv/image``
  from the authors' ``image.tar.gz``; also ``lrv/lrv-vg``), ``lrv/chart_release_update.json``
  (``lrv/chart_image``; also ``lrv/lrv-chart``)
* VizWiz: ``vizwiz/val.json`` (``Annotations.zip`` holds ``train.json``, ``val.json`` and
  ``test.json`` at its top; also ``vizwiz/Annotations/val.json``) with the images of
  ``val.zip`` in ``vizwiz/val`` (also ``vizwiz/val_images``)
* VSR zero-shot split (Cobra's VSR): ``vsr/zeroshot/test.jsonl`` (also
  ``vsr/splits/zeroshot/``), images as VSR's above
* RefCOCO, RefCOCO+, RefCOCOg val: as SHAKEUP's above
* TallyQA: ``tallyqa/test.json`` of ``tallyqa.zip`` (its paths point into Visual Genome's
  ``VG_100K`` / ``VG_100K_2``; only ``train.json`` also names COCO ``train2014`` /
  ``val2014`` images)

SHAKEUP's held-out sets (evaluated during training): COCO captions Karpathy val, VQAv2
val2014 and RefCOCO val grounding; MambaVLM's: VQAv2 val2014 and VizWiz val.
"""

from __future__ import annotations

from pathlib import Path

from vlab.errors import ConfigError

PAPERS = ("shakeup", "mambavlm")


def _src(reader: str, paths: list, images: str, **extra) -> dict:
    return {"reader": reader, "paths": paths, "image_root": images, **extra}


class _Layout:
    """Places under the data root: ``layout("a/b", "c")`` is the first of the candidates that
    exists, else the first (so a missing dataset is named where it is looked for first)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __call__(self, *candidates: str) -> str:
        for rel in candidates:
            if (self.root / rel).exists():
                return str(self.root / rel)
        return str(self.root / candidates[0])

    def coco(self, split: str) -> str:
        """A COCO image folder (``train2014``, ``val2014``, ``train2017``, ``val2017``)."""
        return self(f"coco/{split}", f"coco/images/{split}", split)

    def vg(self) -> str:
        """The folder holding Visual Genome's ``VG_100K`` and ``VG_100K_2``."""
        return str(Path(self("vg/VG_100K", "vg/images/VG_100K")).parent)

    def vg_folders(self) -> dict[str, str]:
        return {part: str(Path(self.vg()) / part) for part in ("VG_100K", "VG_100K_2")}

    def vsr(self, split: str, variant: str = "random", **extra) -> dict:
        """VSR's ``random`` (SHAKEUP) or ``zeroshot`` (Cobra) split: images from its own folder
        when there, else both COCO 2017 splits."""
        if variant == "random":
            candidates = [f"vsr/{split}.jsonl", f"vsr/random/{split}.jsonl"]
        else:
            candidates = [f"vsr/{variant}/{split}.jsonl"]
        path = self(*candidates, f"vsr/splits/{variant}/{split}.jsonl")
        own = self.root / "vsr" / "images"
        if own.is_dir():
            return _src("vsr", [path], str(own), split=split, **extra)
        roots = {"more_image_roots": [self.coco("val2017")]}
        return _src("vsr", [path], self.coco("train2017"), split=split, options=roots, **extra)

    def ai2d(self, split: str, **extra) -> dict:
        return _src(
            "ai2d",
            [self("ai2d/questions")],
            self("ai2d/images"),
            split=split,
            options={
                "test_ids_path": self("ai2d/ai2d_test_ids.csv"),
                "abc_images_dir": self("ai2d/abc_images"),
                "annotations_dir": self("ai2d/annotations"),
            },
            **extra,
        )

    def coco_karpathy(self, split: str, **extra) -> dict:
        """COCO captions in Karpathy's split; its ``filepath`` names the 2014 image folders
        (``val`` and ``test`` are all COCO val2014 images)."""
        folders = {"val2014": self.coco("val2014")}
        if split == "train":
            folders = {"train2014": self.coco("train2014"), **folders}
        path = self(
            "coco/dataset_coco.json", "caption_datasets/dataset_coco.json", "dataset_coco.json"
        )
        return _src(
            "coco_karpathy",
            [path],
            str(self.root),
            split=split,
            options={"image_folders": folders},
            **extra,
        )

    def docvqa(self) -> dict:
        """DocVQA train: the current release (flat ``spdocvqa_images``) or the 2020 one."""
        path = self(
            "docvqa/spdocvqa_qas/train_v1.0_withQT.json",
            "docvqa/train_v1.0_withQT.json",
            "docvqa/train/train_v1.0.json",
            "docvqa/train_v1.0.json",
        )
        documents = self("docvqa/spdocvqa_images", "docvqa/train/documents", "docvqa/documents")
        folders = {"documents": documents}
        return _src("docvqa", [path], self("docvqa"), options={"image_folders": folders})

    def infographicvqa(self) -> dict:
        path = self(
            "infographicvqa/infographicsvqa_qas/infographicsVQA_train_v1.0.json",
            "infographicvqa/infographicsVQA_train_v1.0.json",
            "infographicvqa/infographicVQA_train_v1.0.json",
        )
        images = self(
            "infographicvqa/infographicsvqa_images",
            "infographicvqa/infographicVQA_train_v1.0_images",
            "infographicvqa",
        )
        return _src("infographicvqa", [path], images)

    def vqav2(self, subtype: str, **extra) -> dict:
        """VQAv2's ``train`` or ``val`` 2014 questions, annotations and COCO images."""
        paths = [
            self(f"vqav2/v2_OpenEnded_mscoco_{subtype}2014_questions.json"),
            self(f"vqav2/v2_mscoco_{subtype}2014_annotations.json"),
        ]
        return _src("vqav2", paths, self.coco(f"{subtype}2014"), **extra)

    def vizwiz(self, split: str, **extra) -> dict:
        path = self(f"vizwiz/{split}.json", f"vizwiz/Annotations/{split}.json")
        images = self(f"vizwiz/{split}", f"vizwiz/{split}_images")
        return _src("vizwiz", [path], images, split=split, **extra)

    def pope(self, kind: str) -> dict:
        path = self(f"pope/coco_pope_{kind}.json", f"pope/coco/coco_pope_{kind}.json")
        return _src("pope", [path], self.coco("val2014"), name=f"pope_{kind}")


def _check_paper(paper: str) -> None:
    if paper not in PAPERS:
        raise ConfigError("paper", f"{paper!r} is not one of {', '.join(PAPERS)}")


def paper_data(root: str | Path, paper: str = "shakeup") -> dict:
    """The ``data`` section of a run config for a paper's datasets under ``root``."""
    _check_paper(paper)
    return _mambavlm_data(_Layout(root)) if paper == "mambavlm" else _shakeup_data(_Layout(root))


def paper_benchmarks(root: str | Path, paper: str = "shakeup") -> list[dict]:
    """A paper's evaluation sets under ``root``, as held-out sources for ``vlab vlm eval``;
    each source's name is its benchmark. Multiple choice is scored without rotation.

    SHAKEUP (its authors' ``scripts/evaluate_on_all.sh``, gpantaz/vl_mamba @ c788f5f, runs
    the splits marked *): COCO captions Karpathy test*; NoCaps val* (CIDEr overall and per
    domain); VQAv2 val2014*; GQA testdev*; Visual7W telling and pointing (four-way choice),
    test split*; VSR random test*; POPE random / popular / adversarial*; RefCOCO / + val,
    testA*, testB* and RefCOCOg val, test*; TextCaps val*; TextVQA val; AI2D test* (lettered
    diagrams where the question names letters).

    MambaVLM: its paper is not public; it follows Cobra, whose nine benchmarks (Cobra, AAAI-25,
    arXiv 2403.14520v4, Experiments; scored with Cobra's fork of Prismatic's evaluation suite,
    h-zhao1997/vlm-evaluation @ b0a691f) are taken, plus TallyQA, which issue #18 names
    (Prismatic's suite has it; Cobra does not report it): VQAv2 val2014; GQA testdev; VizWiz
    val (unanswerable questions kept, LLaVA-1.5's "respond with 'Unanswerable'" line after
    each question, as that suite prompts); TextVQA val; VSR zero-shot test (the suite's
    ``cambridgeltl/vsr_zeroshot``); POPE; RefCOCO, RefCOCO+ and RefCOCOg val (grounding, the
    suite's split); TallyQA test, simple and complex apart.
    """
    _check_paper(paper)
    L = _Layout(root)
    if paper == "mambavlm":
        return _mambavlm_benchmarks(L)
    return _shakeup_benchmarks(L)


def _refcoco(L: _Layout, variant: str, split: str = "train", **extra) -> dict:
    refs = "refs(umd).p" if variant == "refcocog" else "refs(unc).p"
    paths = [L(f"{variant}/{refs}"), L(f"{variant}/instances.json")]
    if split == "train":
        opts = {"source": variant} if variant != "refcoco" else {}
        return _src("refcoco", paths, L.coco("train2014"), options=opts, name=variant, **extra)
    return _src(
        "refcoco",
        paths,
        L.coco("train2014"),
        split=split,
        options={"tasks": ["grounding"]},
        name=f"{variant}_{split}",
        **extra,
    )


def _shakeup_data(L: _Layout) -> dict:
    coco17, grit_dir = L.coco("train2017"), L.root / "grit"
    grit = sorted(str(x) for x in grit_dir.glob("*.jsonl")) or [L("grit/00000.jsonl")]
    vg_images = L("vg/image_data.json")
    vg = {"image_folders": L.vg_folders()}
    stage2 = [
        L.coco_karpathy("train"),
        _src("textcaps", [L("textcaps/TextCaps_0.1_train.json")], L("textvqa/train_images")),
        _src("llava_instruct", [L("llava/llava_instruct_150k.json")], coco17),
        _refcoco(L, "refcoco"),
        _refcoco(L, "refcoco+"),
        _refcoco(L, "refcocog"),
        _src("vg_regions", [L("vg/region_descriptions.json"), vg_images], L.vg(), options=vg),
        _src("vg_qa", [L("vg/question_answers.json"), vg_images], L.vg(), options=vg),
        _src("grit", [grit], L("grit/images")),
        L.vsr("train"),
        L.ai2d("train"),
        _src("visual7w_telling", [L("visual7w/dataset_v7w_telling.json")], L("visual7w/images")),
        _src(
            "visual7w_pointing",
            [L("visual7w/dataset_v7w_pointing.json")],
            L("visual7w/images"),
            options={"form": "choice"},
        ),
        _src("aokvqa", [L("aokvqa/aokvqa_v1p0_train.json")], coco17),
        L.vqav2("train"),
        _src("gqa", [L("gqa/train_balanced_questions.json")], L("gqa/images")),
        _src("ocrvqa", [L("ocrvqa/dataset.json")], L("ocrvqa/images")),
        L.docvqa(),
        L.infographicvqa(),
    ]
    heldout = [
        L.coco_karpathy("val"),
        L.vqav2("val", split="val"),
        _src(
            "refcoco",
            [L("refcoco/refs(unc).p"), L("refcoco/instances.json")],
            L.coco("train2014"),
            split="val",
            options={"tasks": ["grounding"]},
        ),
    ]
    stage1 = [
        _src(
            "llava_pretrain",
            [L("LLaVA-CC3M-Pretrain-595K/chat.json")],
            L("LLaVA-CC3M-Pretrain-595K/images"),
        )
    ]
    return {
        "dataset": "files",
        "stage1": {"sources": stage1},
        "stage2": {"sources": stage2},
        "heldout": {"sources": heldout, "pack": False},
    }


def _shakeup_benchmarks(L: _Layout) -> list[dict]:
    out = [
        L.coco_karpathy("test", name="coco"),
        _src(
            "nocaps",
            [L("nocaps/nocaps_val_4500_captions.json")],
            L("nocaps/validation", "nocaps/val", "nocaps/images"),
            split="val",
        ),
        L.vqav2("val", split="val"),
        _src("gqa", [L("gqa/testdev_balanced_questions.json")], L("gqa/images"), split="testdev"),
        _src(
            "visual7w_telling",
            [L("visual7w/dataset_v7w_telling.json")],
            L("visual7w/images"),
            split="test",
            rotate_choices=False,
        ),
        _src(
            "visual7w_pointing",
            [L("visual7w/dataset_v7w_pointing.json")],
            L("visual7w/images"),
            split="test",
            options={"form": "choice"},
            rotate_choices=False,
        ),
        L.vsr("test"),
    ]
    out += [L.pope(kind) for kind in ("random", "popular", "adversarial")]
    splits = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB")}
    splits["refcocog"] = ("val", "test")
    out += [_refcoco(L, variant, split) for variant, names in splits.items() for split in names]
    out += [
        _src(
            "textcaps",
            [L("textcaps/TextCaps_0.1_val.json")],
            L("textvqa/train_images"),
            split="val",
        ),
        _src(
            "textvqa",
            [L("textvqa/TextVQA_0.5.1_val.json")],
            L("textvqa/train_images"),
            split="val",
        ),
        L.ai2d("test", rotate_choices=False),
    ]
    return out


def _mambavlm_data(L: _Layout) -> dict:
    """MambaVLM trains in one stage (no separate projector stage; run ``--stage 2``) on
    LLaVA-1.5's 665K mixture, LVIS-Instruct4V and LRV-Instruction (Cobra's data)."""
    vg = L.vg_folders()
    llava_folders = {
        "coco/train2017": L.coco("train2017"),
        "gqa/images": L("gqa/images"),
        "ocr_vqa/images": L("ocr_vqa/images", "ocrvqa/images"),
        "textvqa/train_images": L("textvqa/train_images"),
        "vg/VG_100K": vg["VG_100K"],
        "vg/VG_100K_2": vg["VG_100K_2"],
    }
    lvis_folders = {"coco/train2017": L.coco("train2017"), "coco/val2017": L.coco("val2017")}
    stage2 = [
        _src(
            "llava_instruct",
            [L("llava/llava_v1_5_mix665k.json")],
            str(L.root),
            options={"image_folders": llava_folders},
            name="llava_665k",
        ),
        _src(
            "lvis_instruct4v",
            [
                L(
                    "lvis_instruct4v/lvis_instruct4v_220k.json",
                    "LVIS-Instruct4V/lvis_instruct4v_220k.json",
                )
            ],
            str(L.root),
            options={"image_folders": lvis_folders},
        ),
        _src(
            "lrv_instruct",
            [[L("lrv/filter_cap1.json"), L("lrv/filter_cap_more1.json")]],
            L("lrv/image", "lrv/lrv-vg"),
        ),
        _src(
            "lrv_instruct",
            [[L("lrv/chart_release_update.json")]],
            L("lrv/chart_image", "lrv/lrv-chart"),
            name="lrv_chart",
        ),
    ]
    heldout = [L.vqav2("val", split="val"), L.vizwiz("val")]
    return {
        "dataset": "files",
        "stage1": {"sources": []},
        "stage2": {"sources": stage2},
        "heldout": {"sources": heldout, "pack": False},
    }


def _mambavlm_benchmarks(L: _Layout) -> list[dict]:
    out = [
        L.vqav2("val", split="val"),
        _src("gqa", [L("gqa/testdev_balanced_questions.json")], L("gqa/images"), split="testdev"),
        L.vizwiz("val", options={"unanswerable_hint": True}),
        _src(
            "textvqa",
            [L("textvqa/TextVQA_0.5.1_val.json")],
            L("textvqa/train_images"),
            split="val",
        ),
        L.vsr("test", variant="zeroshot"),
    ]
    out += [L.pope(kind) for kind in ("random", "popular", "adversarial")]
    out += [_refcoco(L, variant, "val") for variant in ("refcoco", "refcoco+", "refcocog")]
    out += [
        _src(
            "tallyqa",
            [L("tallyqa/test.json")],
            L.vg(),
            split="test",
            options={"subset": subset, "image_folders": L.vg_folders()},
            name=f"tallyqa_{subset}",
        )
        for subset in ("simple", "complex")
    ]
    return out
