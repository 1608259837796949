"""Readers added for both papers' remaining benchmarks and MambaVLM's training sets, each on a
tiny hand-made fixture in the official release's own format (tests/models/vlm/fixtures/vlm):

* ``vizwiz/Annotations/val.json``: VizWiz VQA's ``Annotations.zip`` (a list of ``{image,
  question, answers: [{answer, answer_confidence}] x 10, answer_type, answerable}``);
* ``tallyqa/test.json`` and ``train.json``: ``tallyqa.zip`` (``{answer, data_source, image,
  image_id, issimple, question, question_id}``; the test file's images under ``VG_100K*/``,
  the train file's also under ``train2014/`` / ``val2014/``);
* ``coco_karpathy/dataset_coco.json``: Karpathy's COCO split (``caption_datasets.zip``:
  ``{images: [{filepath, filename, cocoid, split, sentids, sentences: [{raw, tokens,
  sentid}]}]}``);
* ``lrv/filter_cap1.json`` and ``lrv/chart_release_update.json``: LRV-Instruction's files
  (``{image_id, question, answer, task?}``);
* ``lvis_instruct4v/lvis_instruct4v_220k.json``: LVIS-Instruct4V (LLaVA conversations,
  ``coco/train2017/...`` and ``coco/val2017/...`` images);
* ``nocaps/nocaps_val_4500_captions.json``: NoCaps val (COCO captions with ``domain``);
* ``ai2d/annotations/0.png.json``: AI2D's ``annotations/`` (text boxes with
  ``rectangle`` and ``replacementText``);
* ``visual7w/dataset_v7w_pointing.json``: Visual7W's pointing file (boxes by id).
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlab.config import from_dict
from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.data import readers as R
from vlab.models.vlm.data.multiple_choice import rotate_sample
from vlab.models.vlm.data.readers.qa import VIZWIZ_HINT
from vlab.models.vlm.data.records import PACK_KEY, Turn
from vlab.models.vlm.data.sources import READERS, SourceConfig, load_source

FX = Path(__file__).parents[1] / "fixtures" / "vlm"


def test_every_new_reader_is_registered_for_source_configs():
    for name in ("vizwiz", "tallyqa", "lrv_instruct", "lvis_instruct4v", "nocaps", "coco_karpathy"):
        assert name in READERS
    cfg = from_dict(SourceConfig, {"reader": "tallyqa", "paths": ["t.json"], "image_root": "."})
    assert cfg.reader == "tallyqa"


def test_vizwiz_keeps_unanswerable_questions_and_ten_answers():
    out = list(R.read_vizwiz(FX / "vizwiz/Annotations/val.json", "vizwiz/val"))
    assert [s.turns[0].response for s in out] == ["unanswerable", "night time", "no"]
    s = out[0]
    assert (s.task, s.source, s.image) == ("vqa", "vizwiz", "vizwiz/val/VizWiz_val_00000000.jpg")
    assert s.meta["answerable"] is False and s.meta["answer_type"] == "unanswerable"
    assert len(s.meta["answers"]) == 10 and s.meta["answers"].count("unsuitable image") == 4
    assert out[1].meta["answerable"] is True and out[1].image_id == "VizWiz_val_00000001"
    assert out[2].turns[0].prompt == "Is this coffee decaf?"
    hinted = list(R.read_vizwiz(FX / "vizwiz/Annotations/val.json", ".", unanswerable_hint=True))
    assert (
        hinted[1].turns[0].prompt == f"Can you tell me what this medicine is please?\n{VIZWIZ_HINT}"
    )


def test_vizwiz_test_file_has_questions_only(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps([{"image": "VizWiz_test_00000000.jpg", "question": "What?"}]))
    (s,) = R.read_vizwiz(path, "vizwiz/test", split="test")
    assert s.turns == [Turn("What?", "")] and s.meta["answerable"] is None


def test_tallyqa_places_coco_and_visual_genome_images_and_splits_simple_from_complex(tmp_path):
    out = list(R.read_tallyqa(FX / "tallyqa/test.json", "tally"))
    assert [s.turns[0].response for s in out] == ["4", "2", "0", "1"]
    assert out[0].image == "tally/VG_100K_2/2410408.jpg"  # one folder holding the folders
    assert [s.meta["subset"] for s in out] == ["complex", "simple", "simple", "complex"]
    assert out[0].meta["data_source"] == "imported_genome" and out[0].image_id == "92410408"
    simple = list(R.read_tallyqa(FX / "tallyqa/test.json", ".", subset="simple"))
    assert [s.meta["question_id"] for s in simple] == [30095775, 30095776]
    with pytest.raises(ConfigError, match="subset"):
        list(R.read_tallyqa(FX / "tallyqa/test.json", ".", subset="hard"))
    # the official folders where they are: image_folders place each prefix
    folders = {
        "VG_100K": str(tmp_path / "vg/VG_100K"),
        "VG_100K_2": str(tmp_path / "vg/VG_100K_2"),
        "train2014": str(tmp_path / "coco/train2014"),
        "val2014": str(tmp_path / "coco/val2014"),
    }
    spec = {
        "reader": "tallyqa",
        "paths": [str(FX / "tallyqa/test.json")],
        "image_root": str(tmp_path / "vg"),
        "options": {"subset": "complex", "image_folders": folders},
        "name": "tallyqa_complex",
    }
    samples, _ = load_source(from_dict(SourceConfig, spec))
    assert [s.image for s in samples] == [
        str(tmp_path / "vg/VG_100K_2/2410408.jpg"),
        str(tmp_path / "vg/VG_100K/10.jpg"),
    ]
    assert {s.source for s in samples} == {"tallyqa_complex"}
    # the train file also names COCO 2014 images
    train = {**spec, "paths": [str(FX / "tallyqa/train.json")], "split": "train"}
    everything, _ = load_source(
        from_dict(SourceConfig, {**train, "options": {"image_folders": folders}})
    )
    assert [s.image for s in everything] == [
        str(tmp_path / "coco/train2014/COCO_train2014_000000393225.jpg"),
        str(tmp_path / "coco/val2014/COCO_val2014_000000000042.jpg"),
        str(tmp_path / "vg/VG_100K/2356347.jpg"),
    ]
    assert everything[0].image_id == "393225" and everything[0].meta["subset"] == "complex"


def test_coco_karpathy_split_reads_train_with_restval_and_names_the_2014_folders(tmp_path):
    path = FX / "coco_karpathy/dataset_coco.json"
    train = list(R.read_coco_karpathy(path, "coco"))
    assert [s.image for s in train] == [
        "coco/val2014/COCO_val2014_000000522418.jpg",  # restval: Karpathy's train takes it
        "coco/train2014/COCO_train2014_000000057870.jpg",
    ]
    assert [s.meta["karpathy_split"] for s in train] == ["restval", "train"]
    test = list(R.read_coco_karpathy(path, "coco", split="test"))
    assert [(s.task, s.source, s.image_id) for s in test] == [("caption", "coco", "391895")] * 2
    assert test[0].turns == [Turn("", "A man with a red helmet on a small moped on a dirt road.")]
    assert [s.meta["caption_id"] for s in test] == [770337, 771687]
    assert len(list(R.read_coco_karpathy(path, "coco", split="val"))) == 1
    with pytest.raises(ConfigError, match="split"):
        list(R.read_coco_karpathy(path, "coco", split="restval"))
    # the 2014 folders wherever they are
    spec = {
        "reader": "coco_karpathy",
        "paths": [str(path)],
        "image_root": str(tmp_path),
        "split": "test",
        "options": {"image_folders": {"val2014": str(tmp_path / "images/val2014")}},
    }
    samples, _ = load_source(from_dict(SourceConfig, spec))
    assert samples[0].image == str(tmp_path / "images/val2014/COCO_val2014_000000391895.jpg")


def test_visual_genome_readers_take_every_release_s_image_and_region_keys(tmp_path):
    # VG releases name an entry's image "id" or "image_id" and a region's id "region_id" or
    # "id" (huggingface/datasets' visual_genome.py normalises the same keys)
    images = tmp_path / "image_data.json"
    images.write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg",
                    "width": 800,
                    "height": 600,
                    "coco_id": None,
                    "flickr_id": None,
                }
            ]
        )
    )
    regions = tmp_path / "region_descriptions.json"
    region = {"id": 7, "image": 1, "phrase": "a clock", "x": 8, "y": 6, "width": 80, "height": 60}
    regions.write_text(json.dumps([{"image_id": 1, "regions": [region]}]))
    (s,) = R.read_vg_regions(regions, images, "vg", tasks=["grounding"])
    assert (s.image, s.image_id, s.meta["region_id"]) == ("vg/VG_100K_2/1.jpg", "1", 7)
    assert s.turns == [Turn("a clock", "[0.01, 0.01, 0.11, 0.11]")]
    qas = tmp_path / "question_answers.json"
    qa = {"qa_id": 3, "image_id": 1, "question": "What time is it?", "answer": "Noon."}
    qas.write_text(json.dumps([{"image_id": 1, "qas": [qa]}]))
    (q,) = R.read_vg_qa(qas, images, "vg")
    assert (q.image_id, q.turns[0].response) == ("1", "Noon")


def test_lrv_instruct_rows_are_single_turn_chat():
    out = list(R.read_lrv_instruct(FX / "lrv/filter_cap1.json", "lrv/image"))
    assert [(s.task, s.source) for s in out] == [("chat", "lrv_instruct")] * 2
    assert out[0].image == "lrv/image/2392588.jpg" and out[0].image_id == "2392588"
    assert out[0].turns == [
        Turn(
            "Can you see a blue teapot on the television screen?",
            "There is no blue teapot on the television screen in the image.",
        )
    ]
    assert out[0].meta["task"] == "negative" and out[1].meta["task"] is None
    both = [FX / "lrv/filter_cap1.json", FX / "lrv/chart_release_update.json"]
    charts = list(R.read_lrv_instruct(both, "x"))
    assert charts[-1].image == "x/statistic_id1000.png"  # chart ids are file names


def test_lvis_instruct4v_is_llava_chat_on_both_coco_2017_splits(tmp_path):
    out = list(R.read_lvis_instruct4v(FX / "lvis_instruct4v/lvis_instruct4v_220k.json", "d"))
    assert [len(s.turns) for s in out] == [2, 1]
    assert {(s.task, s.source) for s in out} == {("chat", "lvis_instruct4v")}
    assert out[0].image == "d/coco/train2017/000000033471.jpg"
    assert out[1].turns[0] == Turn(
        "Describe the room.", "A living room with a television, a fireplace and two chairs."
    )
    # COCO elsewhere: the dataset's "coco/val2017" prefix goes to that folder
    spec = {
        "reader": "lvis_instruct4v",
        "paths": [str(FX / "lvis_instruct4v/lvis_instruct4v_220k.json")],
        "image_root": str(tmp_path),
        "options": {
            "image_folders": {
                "coco/train2017": str(tmp_path / "train2017"),
                "coco/val2017": str(tmp_path / "val2017"),
            }
        },
    }
    samples, _ = load_source(from_dict(SourceConfig, spec))
    assert [s.image for s in samples] == [
        str(tmp_path / "train2017/000000033471.jpg"),
        str(tmp_path / "val2017/000000000139.jpg"),
    ]


def test_nocaps_captions_carry_their_domain():
    out = list(R.read_nocaps(FX / "nocaps/nocaps_val_4500_captions.json", "nocaps/validation"))
    assert len(out) == 6
    assert {(s.task, s.source) for s in out} == {("caption", "nocaps")}
    assert [s.meta["domain"] for s in out[::2]] == ["in-domain", "near-domain", "out-domain"]
    assert out[0].image == "nocaps/validation/0013ea2087020901.jpg"
    assert out[0].turns == [Turn("", "A baby is standing in front of a house.")]
    assert out[0].meta["open_images_id"] == "0013ea2087020901"


def test_nocaps_rejects_an_unknown_domain(tmp_path):
    path = tmp_path / "n.json"
    path.write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "domain": "x"}], "annotations": []})
    )
    with pytest.raises(VlabError, match="domain 'x'"):
        list(R.read_nocaps(path, "."))


# Visual7W pointing as the papers' four-way choice ------------------------------------------


def test_visual7w_pointing_choice_lists_the_four_candidate_boxes_as_lettered_options():
    path = FX / "visual7w/dataset_v7w_pointing.json"
    out = list(R.read_visual7w_pointing(path, FX / "visual7w/images", form="choice"))
    assert len(out) == 2  # 200 x 100 image, train split
    s = out[0]
    assert (s.task, s.source) == ("mcvqa", "visual7w_pointing")
    lines = s.turns[0].prompt.split("\n")
    assert lines[0] == "Which is the dog's tail?"
    boxes = {
        "[0.05, 0.20, 0.20, 0.30]",  # tail, the answer (10, 20, 30 x 10 px)
        "[0.25, 0.05, 0.30, 0.15]",  # ear
        "[0.00, 0.60, 1.00, 1.00]",  # board
        "[0.75, 0.00, 1.00, 0.30]",  # wave, clamped at the right edge
    }
    assert [line[:3] for line in lines[1:]] == ["A. ", "B. ", "C. ", "D. "]
    assert {line[3:] for line in lines[1:]} == boxes == set(s.meta["choices"])
    letter = s.turns[0].response
    assert s.meta["choices"]["ABCD".index(letter)] == "[0.05, 0.20, 0.20, 0.30]"
    assert s.meta["box_xywh"] == [10, 20, 30, 10]
    assert s.meta[PACK_KEY] == "visual7w_pointing:1001"
    # the order is fixed by qa_id (the same on every run), and the training rotations put the
    # answer under every letter
    again = list(R.read_visual7w_pointing(path, FX / "visual7w/images", form="choice"))
    assert again[0].turns == s.turns
    assert sorted(r.turns[0].response for r in rotate_sample(s)) == ["A", "B", "C", "D"]
    with pytest.raises(ConfigError, match="form"):
        list(R.read_visual7w_pointing(path, ".", form="boxes"))


# AI2D: the letters drawn at the annotated text boxes ---------------------------------------

BACKGROUND = (40, 120, 200)


@pytest.fixture
def ai2d(tmp_path):
    """AI2D's folders: the released question and annotation files, a plain 100 x 60 diagram."""
    images = tmp_path / "ai2d" / "images"
    images.mkdir(parents=True)
    Image.new("RGB", (100, 60), BACKGROUND).save(images / "0.png")
    Image.new("RGB", (100, 60), BACKGROUND).save(images / "12.png")
    return tmp_path / "ai2d"


def test_ai2d_questions_naming_letters_see_them_drawn_in_the_text_boxes(ai2d):
    out = list(
        R.read_ai2d(
            FX / "ai2d/questions",
            ai2d / "images",
            abc_images_dir=ai2d / "abc_images",
            annotations_dir=FX / "ai2d/annotations",
        )
    )
    lettered, plain = out[0], out[1]  # "What is A in the diagram?" has abcLabel true
    assert lettered.image == str(ai2d / "abc_images" / "0.png")
    assert (lettered.image_id, lettered.meta["letters"]) == ("0_abc", True)
    assert plain.image == str(ai2d / "images" / "0.png") and plain.image_id == "0"
    assert plain.meta["letters"] is False
    drawn = np.asarray(Image.open(lettered.image).convert("RGB")).astype(int)
    original = np.asarray(Image.open(ai2d / "images" / "0.png")).astype(int)
    changed = (drawn != original).any(axis=2)
    for x1, y1, x2, y2 in ((10, 8, 40, 24), (60, 30, 90, 46)):  # boxes T0 (A) and T1 (B)
        box = drawn[y1 : y2 + 1, x1 : x2 + 1]
        assert changed[y1 : y2 + 1, x1 : x2 + 1].all()  # filled white, letter on top
        assert (box.sum(axis=2) < 200).any()  # dark pixels: the letter
        assert (box == 255).all(axis=2).any()  # the white fill around it
        changed[y1 : y2 + 1, x1 : x2 + 1] = False
    assert not changed.any()  # nothing outside the text boxes
    # drawn once: a second read reuses the file
    stamp = os.stat(lettered.image).st_mtime_ns
    again = list(
        R.read_ai2d(FX / "ai2d/questions", ai2d / "images", abc_images_dir=ai2d / "abc_images")
    )
    assert again[0].image == lettered.image and os.stat(lettered.image).st_mtime_ns == stamp


def test_ai2d_uses_the_released_abc_images_and_needs_annotations_to_draw(ai2d):
    abc = ai2d / "abc_images"
    abc.mkdir()
    Image.new("RGB", (100, 60), (1, 2, 3)).save(abc / "0.png")  # as ai2d-all.zip ships it
    out = list(R.read_ai2d(FX / "ai2d/questions", ai2d / "images", abc_images_dir=abc))
    assert out[0].image == str(abc / "0.png")
    assert Image.open(out[0].image).getpixel((0, 0)) == (1, 2, 3)  # not redrawn
    (abc / "0.png").unlink()
    with pytest.raises(VlabError, match="annotations_dir"):
        list(R.read_ai2d(FX / "ai2d/questions", ai2d / "images", abc_images_dir=abc))


def test_draw_text_labels_fills_each_box_and_leaves_the_rest():
    im = Image.new("RGB", (50, 50), BACKGROUND)
    out = R.draw_text_labels(im, [((5, 5, 25, 20), "C")])
    assert out.getpixel((0, 0)) == BACKGROUND and out.getpixel((40, 40)) == BACKGROUND
    assert out.getpixel((6, 6)) == (255, 255, 255)
    assert im.getpixel((6, 6)) == BACKGROUND  # the input is not changed
