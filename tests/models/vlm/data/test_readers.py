"""Each dataset reader on a tiny fixture in the dataset's own on-disk format."""

from pathlib import Path

import pytest

from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.data import readers as R
from vlab.models.vlm.data.records import PACK_KEY, TASKS, Turn

FX = Path(__file__).parents[1] / "fixtures" / "vlm"


def test_coco_captions():
    out = list(R.read_coco_captions(FX / "coco_captions/captions_train2017.json", "coco/train2017"))
    assert len(out) == 3
    s = out[0]
    assert (s.image, s.image_id, s.task, s.source) == (
        "coco/train2017/000000391895.jpg",
        "391895",
        "caption",
        "coco",
    )
    assert s.turns == [Turn("", "A man with a red helmet on a small moped on a dirt road.")]
    assert (s.meta["width"], s.meta["height"], s.meta["split"]) == (640, 360, "train")
    assert [x.image_id for x in out] == ["391895", "391895", "522418"]


def test_textcaps():
    out = list(R.read_textcaps(FX / "textcaps/TextCaps_0.1_train.json", "textvqa/train_images"))
    assert [s.turns[0].response for s in out] == [
        "A white car with the license plate ABC 123 is parked.",
        "A car that says ABC 123.",
    ]
    assert out[0].image == "textvqa/train_images/011e7e629fb9ae7b.jpg"
    assert len(out[0].meta["reference_strs"]) == 2


def test_llava_pretrain_uses_the_caption_instruction_not_llava_prompts():
    out = list(R.read_llava_pretrain(FX / "llava_pretrain/blip_laion_cc_sbu_558k.json", "lcs"))
    assert len(out) == 2
    assert {s.task for s in out} == {"caption"}
    assert out[0].image == "lcs/00453/004539375.jpg"
    assert out[0].turns == [
        Turn("", "select luxury furniture 3 - inch gel memory foam mattress topper")
    ]
    assert out[0].meta["original_prompt"] == "Render a clear and concise summary of the photo."
    assert out[1].meta["original_prompt"] == "Write a terse but informative summary of the picture."


def test_llava_instruct_is_multi_turn_chat_without_image_tags():
    out = list(R.read_llava_instruct(FX / "llava_instruct/llava_instruct_150k.json", "coco"))
    assert [len(s.turns) for s in out] == [2, 1]
    assert out[0].task == "chat" and out[0].source == "llava_instruct"
    assert out[0].turns[0] == Turn(
        "What are the colors of the bus in the image?", "The bus in the image is white and red."
    )
    assert out[1].turns[0].prompt == "Where is the cat positioned in the image?"
    assert all("<image>" not in t.prompt for s in out for t in s.turns)


def test_llava_conversation_must_alternate(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        '[{"id": "1", "image": "a.jpg", "conversations": [{"from": "gpt", "value": "x"},'
        ' {"from": "human", "value": "y"}]}]'
    )
    with pytest.raises(VlabError, match="alternate"):
        list(R.read_llava_instruct(bad, "."))


def test_refcoco_grounding_and_dense_captioning():
    refs, inst = FX / "refcoco/refs(unc).p", FX / "refcoco/instances.json"
    out = list(R.read_refcoco(refs, inst, "coco/train2014"))
    assert len(out) == 4  # train split: one ref, two sentences, two tasks
    assert [s.task for s in out] == ["grounding", "dense_caption"] * 2
    box = "[0.24, 0.47, 0.56, 0.75]"  # bbox [103.93, 299.99, 134.22, 177.42] in 427 x 640
    assert out[0].turns == [Turn("the lady with the blue shirt", box)]
    assert out[1].turns == [Turn(box, "the lady with the blue shirt")]
    assert out[2].turns == [Turn("lady w back to us", box)]
    assert out[0].image == "coco/train2014/COCO_train2014_000000581857.jpg"
    assert {s.meta[PACK_KEY] for s in out} == {"refcoco:0"}
    test_a = list(R.read_refcoco(refs, inst, "x", split="testA", source="refcoco+"))
    assert [s.turns[0] for s in test_a][0] == Turn("man on left", "[0.00, 0.02, 0.09, 0.14]")
    assert {s.source for s in test_a} == {"refcoco+"}
    only = list(R.read_refcoco(refs, inst, "x", tasks=["grounding"]))
    assert [s.task for s in only] == ["grounding", "grounding"]
    with pytest.raises(ConfigError, match="split"):
        list(R.read_refcoco(refs, inst, "x", split="dev"))


def test_refcoco_pickle_may_not_carry_code(tmp_path):
    import pickle

    evil = tmp_path / "refs(unc).p"
    evil.write_bytes(pickle.dumps([Path("x")]))
    with pytest.raises(VlabError, match="refusing"):
        list(R.read_refcoco(evil, FX / "refcoco/instances.json", "x"))


def test_visual_genome_regions_and_qa():
    vg = FX / "visual_genome"
    regions = list(R.read_vg_regions(vg / "region_descriptions.json", vg / "image_data.json", "vg"))
    assert len(regions) == 8  # 4 regions x (grounding, dense_caption)
    assert regions[0].image == "vg/VG_100K_2/1.jpg"
    assert regions[0].turns == [Turn("the clock is green in colour", "[0.53, 0.10, 0.63, 0.33]")]
    assert regions[2].turns[0].prompt == "shade is along the street"  # stripped
    assert regions[-1].turns == [Turn("[0.97, 0.83, 1.00, 0.90]", "red car")]  # clamped at 1
    assert regions[-1].image == "vg/VG_100K/10.jpg"
    assert regions[0].meta["box_xywh"] == [421, 57, 82, 139]
    qa = list(R.read_vg_qa(vg / "question_answers.json", vg / "image_data.json", "vg"))
    assert [s.turns[0] for s in qa] == [
        Turn("What color is the clock?", "Green"),
        Turn("Where are the shadows?", "On the sidewalk"),
        Turn("What is parked?", "Car"),
    ]
    assert qa[0].meta["raw_answer"] == "Green."
    assert {(s.task, s.source) for s in qa} == {("vqa", "visual_genome")}


def test_vqav2_keeps_all_ten_answers():
    q = FX / "vqav2/v2_OpenEnded_mscoco_train2014_questions.json"
    a = FX / "vqav2/v2_mscoco_train2014_annotations.json"
    out = list(R.read_vqav2(q, a, "coco/train2014"))
    assert len(out) == 3
    assert out[0].image == "coco/train2014/COCO_train2014_000000458752.jpg"
    assert out[1].turns == [Turn("What position is this man playing?", "pitcher")]
    assert out[1].meta["answers"] == ["pitcher"] * 7 + ["catcher"] * 3
    assert out[0].meta["question_id"] == 458752000
    unanswered = list(R.read_vqav2(q, None, "x"))
    assert [s.turns[0].response for s in unanswered] == ["", "", ""]


def test_gqa():
    out = list(R.read_gqa(FX / "gqa/train_balanced_questions.json", "gqa/images"))
    assert [s.turns[0] for s in out] == [
        Turn("Is the sky dark?", "yes"),
        Turn("What is on the white wall?", "pipe"),
    ]
    assert out[0].image == "gqa/images/2354786.jpg"
    assert out[0].meta["full_answer"] == "Yes, the sky is dark."
    assert out[0].meta["question_id"] == "02930152"


def test_visual7w_telling_options_in_a_fixed_shuffled_order():
    path = FX / "visual7w/dataset_v7w_telling.json"
    out = list(R.read_visual7w_telling(path, "v7w/images"))
    assert len(out) == 2  # the test image is not in train
    s = out[0]
    assert (s.task, s.source, s.image) == (
        "mcvqa",
        "visual7w_telling",
        "v7w/images/v7w_2354786.jpg",
    )
    assert sorted(s.meta["choices"]) == sorted(["Surfing.", "Sleeping.", "Running.", "Eating."])
    assert s.meta["choices"][s.meta["answer_index"]] == "Surfing."
    assert s.turns[0].response == "ABCD"[s.meta["answer_index"]]
    assert s.turns[0].prompt.startswith("What is the dog doing?\nA. ")
    again = list(R.read_visual7w_telling(path, "v7w/images"))
    assert [x.turns for x in again] == [x.turns for x in out]
    assert len(list(R.read_visual7w_telling(path, "v7w/images", split="test"))) == 1


def test_visual7w_pointing_as_grounding_with_candidates():
    path = FX / "visual7w/dataset_v7w_pointing.json"
    out = list(R.read_visual7w_pointing(path, FX / "visual7w/images"))  # 200 x 100 image
    assert len(out) == 2
    assert {(s.task, s.source) for s in out} == {("grounding", "visual7w_pointing")}
    assert out[0].turns == [Turn("Which is the dog's tail?", "[0.05, 0.20, 0.20, 0.30]")]
    assert out[1].turns == [Turn("Which board is the dog on?", "[0.00, 0.60, 1.00, 1.00]")]
    assert out[0].meta["candidates"][0] == out[0].turns[0].response
    assert len(out[0].meta["candidates"]) == 4
    assert (out[0].meta["width"], out[0].meta["height"]) == (200, 100)


def test_visual7w_pointing_sizes_from_image_data(tmp_path):
    data = tmp_path / "image_data.json"
    data.write_text(
        '[{"image_id": 2354786, "width": 400, "height": 200, "url": "a/VG_100K/1.jpg"}]'
    )
    path = FX / "visual7w/dataset_v7w_pointing.json"
    out = list(R.read_visual7w_pointing(path, "missing_dir", image_data_path=data))
    assert out[0].turns[0].response == "[0.03, 0.10, 0.10, 0.15]"


def test_vsr_is_image_text_matching():
    out = list(R.read_vsr(FX / "vsr/train.jsonl", "coco/images"))
    assert [s.turns[0].response for s in out] == ["yes", "no", "yes"]
    assert out[1].turns[0].prompt == "The cat is behind the laptop."
    assert {(s.task, s.source) for s in out} == {("itm", "vsr")}
    assert out[0].image == "coco/images/000000085637.jpg"
    assert out[0].meta["relation"] == "at the edge of"


def test_ai2d_with_and_without_test_ids():
    qdir = FX / "ai2d/questions"
    out = list(R.read_ai2d(qdir, "ai2d/images"))
    assert len(out) == 3
    assert out[0].turns == [
        Turn("What is A in the diagram?\nA. ears\nB. nose\nC. mouth\nD. face", "D")
    ]
    assert out[0].image == "ai2d/images/0.png"
    assert out[0].meta["abc_label"] is True
    ids = FX / "ai2d/ai2d_test_ids.csv"
    train = list(R.read_ai2d(qdir, "i", split="train", test_ids_path=ids))
    test = list(R.read_ai2d(qdir, "i", split="test", test_ids_path=ids))
    assert [s.image_id for s in train] == ["0", "0"]
    assert [s.image_id for s in test] == ["12"]
    assert test[0].turns[0].response == "B"


def test_aokvqa():
    out = list(R.read_aokvqa(FX / "aokvqa/aokvqa_v1p0_train.json", "coco/train2017"))
    assert len(out) == 2
    assert out[0].image == "coco/train2017/000000299207.jpg"
    assert out[0].turns[0].response == "D"
    assert out[0].turns[0].prompt.endswith("\nD. cab")
    assert out[1].turns[0].response == "B"
    assert len(out[0].meta["direct_answers"]) == 10


def test_textcaps_test_rows_without_captions_are_skipped(tmp_path):
    p = tmp_path / "TextCaps_0.1_test.json"
    p.write_text('{"data": [{"image_id": "ab", "image_width": 10, "image_height": 10}]}')
    assert list(R.read_textcaps(p, ".")) == []


def test_ocrvqa_one_sample_per_question_and_split_codes():
    path = FX / "ocrvqa/dataset.json"
    out = list(R.read_ocrvqa(path, "ocrvqa/images"))
    assert len(out) == 7  # books 1 and 2 are split 1 (train)
    assert out[0].image == "ocrvqa/images/1000001.jpg"
    assert out[5].image == "ocrvqa/images/1000002.png"  # extension of the image URL
    assert out[1].turns == [Turn("What is the title of this book?", "A Walk in the Park")]
    assert out[0].meta["genre"] == "Travel"
    val = list(R.read_ocrvqa(path, "i", split="val"))
    assert [s.turns[0].response for s in val] == ["Ann Poe"]


def test_grit_grounded_caption_mentions_each_entity_with_its_box():
    out = list(R.read_grit(FX / "grit/00000.jsonl", "grit"))
    assert len(out) == 2
    s = out[0]
    assert (s.task, s.source, s.image) == ("grounded_caption", "grit", "grit/00000/000000001.jpg")
    assert s.turns == [
        Turn(
            "",
            "a dog [0.10, 0.20, 0.50, 0.90] playing with a ball [0.40, 0.60, 0.55, 0.75] "
            "on the grass [0.00, 0.50, 1.00, 1.00]",
        )
    ]
    # two boxes for one span follow each other
    assert out[1].turns[0].response == (
        "Two cats [0.00, 0.00, 0.40, 0.50] [0.50, 0.50, 0.90, 1.00] sleeping"
    )
    assert (s.meta["width"], s.meta["height"]) == (512, 384)


def test_grit_overlapping_chunk_is_skipped():
    text = R.grit_grounded_caption(
        "big red car", [[0, 11, 0, 0, 1, 1, 0.9], [4, 11, 0, 0, 0.5, 0.5, 0.9]]
    )
    assert text == "big red car [0.00, 0.00, 1.00, 1.00]"


def test_docvqa_and_infographicvqa():
    doc = list(R.read_docvqa(FX / "docvqa/train_v1.0.json", "docvqa/train"))
    assert len(doc) == 2
    assert doc[0].image == "docvqa/train/documents/xnbl0037_1.png"
    assert doc[1].turns == [
        Turn("what is the contact person name mentioned in letter?", "P. Carter")
    ]
    assert doc[1].meta["answers"] == ["P. Carter", "p. carter"]
    assert doc[0].image_id == doc[1].image_id  # same page: packable together
    info = list(R.read_infographicvqa(FX / "infographicvqa/infographicVQA_train_v1.0.json", "iv"))
    assert info[0].image == "iv/37313.jpeg"
    assert info[0].turns[0].response == "pinterest"
    assert {s.source for s in info} == {"infographicvqa"}


def test_every_reader_yields_known_tasks():
    out = list(R.read_coco_captions(FX / "coco_captions/captions_train2017.json", "."))
    out += list(R.read_vsr(FX / "vsr/train.jsonl", "."))
    assert all(s.task in TASKS for s in out)


def test_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(VlabError, match="does not exist"):
        list(R.read_gqa(tmp_path / "nope.json", "."))
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"images": []}')
    with pytest.raises(VlabError, match="wrong.json.*annotations"):
        list(R.read_coco_captions(wrong, "."))


def test_textvqa_answers_with_the_most_common_of_ten():
    out = list(R.read_textvqa(FX / "textvqa/TextVQA_0.5.1_val.json", "textvqa/train_images"))
    assert [s.turns[0].response for s in out] == ["dakota", "copenhagen"]
    assert out[0].image == "textvqa/train_images/003a8ae2ef43b901.jpg"
    assert (out[0].task, out[0].source, len(out[0].meta["answers"])) == ("vqa", "textvqa", 10)


def test_pope_is_yes_no_object_existence():
    out = list(R.read_pope(FX / "pope/coco_pope_random.json", "coco/val2014"))
    assert [(s.task, s.turns[0].response) for s in out] == [("pope", "yes"), ("pope", "no")]
    assert out[1].turns[0].prompt == "Is there a dining table in the image?"
    assert out[0].image == "coco/val2014/COCO_val2014_000000310196.jpg"
    assert out[0].image_id == "COCO_val2014_000000310196"
