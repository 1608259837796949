"""``--data-root``: the folders the official downloads unpack to, everything missing listed at
once (image folders too), VSR's images from both COCO 2017 splits, COCO captions in Karpathy's
split, both DocVQA / InfographicVQA releases, MambaVLM's layout and benchmarks.

The annotation fixtures are the released formats (see test_readers / test_benchmark_readers);
images are small made-up pictures at the paths the datasets name."""

from pathlib import Path

import pytest
from PIL import Image

from vlab.cli import main
from vlab.config import from_dict
from vlab.errors import ConfigError
from vlab.models.vlm.data.paper_data import paper_benchmarks, paper_data
from vlab.models.vlm.data.prepared import MixtureConfig
from vlab.models.vlm.data.run_data import VLMDataConfig
from vlab.models.vlm.data.sources import SourceConfig, load_source

FX = Path(__file__).parents[1] / "fixtures" / "vlm"


def _place(root: Path, fixture: str, rel: str) -> Path:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes((FX / fixture).read_bytes())
    return root / rel


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (90, 90, 90)).save(path)


def _by_label(specs: list[dict]) -> dict[str, SourceConfig]:
    return {s.label: s for s in (from_dict(SourceConfig, x) for x in specs)}


def test_the_official_archive_folders_are_found(tmp_path):
    root = tmp_path / "d"
    # COCO's zips unpacked at the root; Visual Genome's images.zip / images2.zip in vg/;
    # NoCaps' validation images; Karpathy's caption_datasets.zip in its own folder
    for rel in ("train2017", "val2017", "train2014", "val2014", "vg/VG_100K", "vg/VG_100K_2"):
        (root / rel).mkdir(parents=True)
    (root / "nocaps" / "validation").mkdir(parents=True)
    karpathy = "caption_datasets/dataset_coco.json"
    _place(root, "coco_karpathy/dataset_coco.json", karpathy)
    stage2 = _by_label(paper_data(root)["stage2"]["sources"])
    coco = stage2["coco_karpathy"]  # SHAKEUP's authors train on Karpathy's train + restval
    assert (coco.paths, coco.split) == ((str(root / karpathy),), "train")
    assert coco.options["image_folders"] == {
        "train2014": str(root / "train2014"),
        "val2014": str(root / "val2014"),
    }
    assert stage2["llava_instruct"].image_root == str(root / "train2017")
    assert stage2["vqav2"].image_root == str(root / "train2014")
    assert stage2["vg_regions"].image_root == str(root / "vg")
    assert stage2["vg_qa"].options["image_folders"] == {
        "VG_100K": str(root / "vg/VG_100K"),
        "VG_100K_2": str(root / "vg/VG_100K_2"),
    }
    bench = _by_label(paper_benchmarks(root))
    assert (bench["coco"].reader, bench["coco"].split) == ("coco_karpathy", "test")
    assert bench["coco"].options["image_folders"] == {"val2014": str(root / "val2014")}
    samples, _ = load_source(bench["coco"])
    assert samples[0].image == str(root / "val2014/COCO_val2014_000000391895.jpg")
    assert samples[0].source == "coco"
    heldout = _by_label(paper_data(root)["heldout"]["sources"])
    assert heldout["coco_karpathy"].split == "val"
    assert bench["nocaps"].reader == "nocaps"
    assert bench["nocaps"].image_root == str(root / "nocaps/validation")
    assert bench["visual7w_pointing"].options == {"form": "choice"}
    assert not bench["visual7w_pointing"].rotate_choices
    # the layout that was the only one before: coco/<split> and vg/images/VG_100K
    other = tmp_path / "o"
    for rel in ("coco/train2017", "vg/images/VG_100K"):
        (other / rel).mkdir(parents=True)
    stage2 = _by_label(paper_data(other)["stage2"]["sources"])
    assert stage2["llava_instruct"].image_root == str(other / "coco/train2017")
    assert stage2["vg_regions"].image_root == str(other / "vg/images")
    assert stage2["coco_karpathy"].paths == (str(other / "coco/dataset_coco.json"),)


def test_docvqa_and_infographicvqa_are_found_in_either_release(tmp_path):
    # the current releases: spdocvqa_qas.zip / spdocvqa_images.tar.gz (flat) and
    # infographicsvqa_qas.zip / infographicsvqa_images.tar.gz
    root = tmp_path / "d"
    qas = "docvqa/spdocvqa_qas/train_v1.0_withQT.json"
    _place(root, "docvqa/train_v1.0.json", qas)
    _image(root / "docvqa/spdocvqa_images/xnbl0037_1.png")
    info = "infographicvqa/infographicsvqa_qas/infographicsVQA_train_v1.0.json"
    _place(root, "infographicvqa/infographicVQA_train_v1.0.json", info)
    _image(root / "infographicvqa/infographicsvqa_images/37313.jpeg")
    stage2 = _by_label(paper_data(root)["stage2"]["sources"])
    doc, inf = stage2["docvqa"], stage2["infographicvqa"]
    assert doc.paths == (str(root / qas),) and inf.paths == (str(root / info),)
    assert doc.missing() == [] and inf.missing() == []
    docs, _ = load_source(doc)
    assert docs[0].image == str(root / "docvqa/spdocvqa_images/xnbl0037_1.png")
    infos, _ = load_source(inf)
    assert infos[0].image == str(root / "infographicvqa/infographicsvqa_images/37313.jpeg")
    # the 2020 DocVQA release: train/train_v1.0.json next to train/documents/
    old = tmp_path / "o"
    _place(old, "docvqa/train_v1.0.json", "docvqa/train/train_v1.0.json")
    _image(old / "docvqa/train/documents/xnbl0037_1.png")
    _place(old, "infographicvqa/infographicVQA_train_v1.0.json", "infographicvqa/x.json")
    doc = _by_label(paper_data(old)["stage2"]["sources"])["docvqa"]
    docs, _ = load_source(doc)
    assert docs[0].image == str(old / "docvqa/train/documents/xnbl0037_1.png")


def test_vsr_images_come_from_both_coco_2017_splits(tmp_path):
    root = tmp_path / "d"
    _place(root, "vsr/train.jsonl", "vsr/test.jsonl")
    _image(root / "coco/train2017/000000085637.jpg")
    _image(root / "coco/train2017/000000264255.jpg")
    _image(root / "coco/val2017/000000210415.jpg")
    vsr = _by_label(paper_benchmarks(root))["vsr"]
    assert vsr.missing() == []
    samples, _ = load_source(vsr)
    assert [s.image for s in samples] == [
        str(root / "coco/train2017/000000085637.jpg"),
        str(root / "coco/train2017/000000264255.jpg"),
        str(root / "coco/val2017/000000210415.jpg"),
    ]
    # VSR's own image zip, when unpacked, is used instead
    (root / "vsr" / "images").mkdir()
    vsr = _by_label(paper_benchmarks(root))["vsr"]
    assert vsr.image_root == str(root / "vsr/images") and "more_image_roots" not in vsr.options


def test_eval_lists_every_missing_file_and_image_folder_at_once(tmp_path, capsys):
    root = tmp_path / "d"
    _place(root, "pope/coco_pope_random.json", "pope/coco_pope_random.json")
    code = main(["vlm", "eval", "--run", str(tmp_path / "run"), "--data-root", str(root)])
    err = capsys.readouterr().err
    assert code != 0
    # every benchmark's files and folders, the image folder of the one whose file is there too
    assert f"{root}/coco/val2014/ (images: coco, vqav2, pope_random, pope_popular" in err
    assert f"{root}/coco/dataset_coco.json (coco)" in err
    assert f"{root}/nocaps/validation/ (images: nocaps)" in err
    assert f"{root}/nocaps/nocaps_val_4500_captions.json (nocaps)" in err
    assert f"{root}/ai2d/annotations (ai2d)" in err
    assert "pope/coco_pope_random.json" not in err
    mixture = from_dict(MixtureConfig, {"sources": paper_benchmarks(root), "pack": False})
    with pytest.raises(ConfigError) as e:
        mixture.check_files("sources.")
    missing = [str(p) for s in mixture.sources for p in s.missing()]
    assert all(p in str(e.value) for p in missing)


def test_mambavlm_layout_maps_llava_665k_folders_and_reads_its_sources(tmp_path):
    root = tmp_path / "d"
    cfg = from_dict(VLMDataConfig, paper_data(root, "mambavlm"))
    assert [s.label for s in cfg.stage2.sources] == [
        "llava_665k",
        "lvis_instruct4v",
        "lrv_instruct",
        "lrv_chart",
    ]
    assert not cfg.stage1.sources  # one stage
    _place(root, "llava_mix665k/llava_v1_5_mix665k.json", "llava/llava_v1_5_mix665k.json")
    _place(
        root,
        "lvis_instruct4v/lvis_instruct4v_220k.json",
        "lvis_instruct4v/lvis_instruct4v_220k.json",
    )
    _place(root, "lrv/filter_cap1.json", "lrv/filter_cap1.json")
    _place(root, "lrv/filter_cap1.json", "lrv/filter_cap_more1.json")
    _place(root, "lrv/chart_release_update.json", "lrv/chart_release_update.json")
    (root / "ocrvqa" / "images").mkdir(parents=True)  # OCR-VQA where SHAKEUP's layout has it
    cfg = from_dict(VLMDataConfig, paper_data(root, "mambavlm"))
    llava = cfg.stage2.sources[0]
    assert llava.options["image_folders"]["ocr_vqa/images"] == str(root / "ocrvqa/images")
    for source in cfg.stage2.sources:
        for folder in source.image_dirs():
            folder.mkdir(parents=True, exist_ok=True)
    assert all(s.missing() == [] for s in cfg.stage2.sources)
    samples, _ = load_source(llava)
    assert samples[0].image == str(root / "coco/train2017/000000033471.jpg")
    lvis, _ = load_source(cfg.stage2.sources[1])
    assert lvis[1].image == str(root / "coco/val2017/000000000139.jpg")
    lrv, _ = load_source(cfg.stage2.sources[2])
    assert len(lrv) == 4 and lrv[0].image == str(root / "lrv/image/2392588.jpg")
    chart, _ = load_source(cfg.stage2.sources[3])
    assert chart[0].image == str(root / "lrv/chart_image/statistic_id1000.png")
    assert chart[0].source == "lrv_chart"


def test_mambavlm_benchmarks_are_cobras_nine_and_tallyqa(tmp_path):
    root = tmp_path / "d"
    bench = _by_label(paper_benchmarks(root, "mambavlm"))
    assert list(bench) == [
        "vqav2",
        "gqa",
        "vizwiz",
        "textvqa",
        "vsr",
        "pope_random",
        "pope_popular",
        "pope_adversarial",
        "refcoco_val",
        "refcoco+_val",
        "refcocog_val",
        "tallyqa_simple",
        "tallyqa_complex",
    ]
    # VizWiz: Annotations.zip holds val.json at its top, val.zip the folder val/
    assert bench["vizwiz"].paths == (str(root / "vizwiz/val.json"),)
    assert bench["vizwiz"].image_root == str(root / "vizwiz/val")
    assert bench["vizwiz"].options == {"unanswerable_hint": True}
    _place(root, "vizwiz/Annotations/val.json", "vizwiz/Annotations/val.json")  # in a folder
    assert _by_label(paper_benchmarks(root, "mambavlm"))["vizwiz"].paths == (
        str(root / "vizwiz/Annotations/val.json"),
    )
    # VSR: the zero-shot split's test (Cobra's), not SHAKEUP's random one
    assert bench["vsr"].paths == (str(root / "vsr/zeroshot/test.jsonl"),)
    assert _by_label(paper_benchmarks(root))["vsr"].paths == (str(root / "vsr/test.jsonl"),)
    refcocog = bench["refcocog_val"]
    assert (refcocog.split, refcocog.options) == ("val", {"tasks": ["grounding"]})
    assert refcocog.paths[0] == str(root / "refcocog/refs(umd).p")
    tally = bench["tallyqa_complex"]
    assert tally.options["subset"] == "complex"
    # the test file's images are all Visual Genome's: no COCO folder is asked for
    assert set(tally.options["image_folders"]) == {"VG_100K", "VG_100K_2"}
    with pytest.raises(ConfigError, match="paper"):
        paper_benchmarks(root, "cobra")
