"""Packing: grouping by image and task, per-dataset caps, the length limit, rotations apart."""

import logging

import pytest

from vlab.errors import ConfigError
from vlab.models.vlm.data.multiple_choice import expand_rotations, mc_sample
from vlab.models.vlm.data.packing import DEFAULT_CAPS, PackingConfig, pack_samples
from vlab.models.vlm.data.records import PACK_KEY, Turn, VLSample


def words(text: str) -> int:
    return len(text.split())


def qa(image_id, i, source="vqav2", task="vqa", prompt=None, response="a"):
    prompt = prompt or f"question {i} here"
    return VLSample(f"{image_id}.jpg", image_id, task, source, [Turn(prompt, response)], {"i": i})


def sizes(seqs):
    return [len(s.turns) for s in seqs]


def test_default_caps_are_the_spec_limits():
    assert DEFAULT_CAPS == {
        "vqav2": 20,
        "visual7w_telling": 10,
        "visual7w_pointing": 5,
        "visual_genome": 10,
    }
    assert PackingConfig().max_length == 1024


@pytest.mark.parametrize(
    ("source", "task", "cap"),
    [
        ("vqav2", "vqa", 20),
        ("visual7w_pointing", "grounding", 5),
        ("visual_genome", "dense_caption", 10),
        ("visual_genome", "grounding", 10),
    ],
)
def test_caps_per_dataset(source, task, cap):
    samples = [qa("1", i, source, task, response="r") for i in range(2 * cap + 3)]
    seqs, stats = pack_samples(samples, words, PackingConfig(max_length=100_000, image_tokens=1))
    assert sizes(seqs) == [cap, cap, 3]
    assert [m["i"] for s in seqs for m in s.meta["pairs"]] == list(range(2 * cap + 3))
    assert {(s.task, s.source, s.image_id) for s in seqs} == {(task, source, "1")}
    assert (stats.samples, stats.sequences, stats.pairs, stats.dropped_pairs) == (
        2 * cap + 3,
        3,
        2 * cap + 3,
        0,
    )


def test_uncapped_source_is_limited_by_length_only():
    samples = [qa("1", i, source="gqa") for i in range(50)]
    seqs, _ = pack_samples(samples, words, PackingConfig(max_length=100_000, image_tokens=1))
    assert sizes(seqs) == [50]


def test_length_limit_counts_image_instruction_and_pairs():
    # base = 20 image tokens + 9 instruction words = 29; a pair = 3 + 1 + 3 overhead = 7
    cfg = PackingConfig(max_length=50, image_tokens=20, pair_overhead=3, caps={})
    samples = [qa("1", i, source="gqa") for i in range(7)]
    seqs, stats = pack_samples(samples, words, cfg)
    assert sizes(seqs) == [3, 3, 1]  # 29 + 3 * 7 = 50 fits exactly; a fourth overflows
    assert stats.dropped_pairs == 0
    seqs, _ = pack_samples(samples, words, PackingConfig(max_length=49, image_tokens=20, caps={}))
    assert sizes(seqs) == [2, 2, 2, 1]


def test_a_pair_too_long_alone_is_dropped_with_a_counted_warning(caplog):
    cfg = PackingConfig(max_length=50, image_tokens=20, caps={})
    long_q = " ".join(["w"] * 20)  # 20 + 1 + 3 = 24 > 50 - 29
    samples = [qa("1", 0, "gqa"), qa("1", 1, "gqa", prompt=long_q), qa("1", 2, "gqa")]
    samples.append(qa("2", 3, "gqa", prompt=long_q))
    with caplog.at_level(logging.WARNING):
        seqs, stats = pack_samples(samples, words, cfg)
    assert stats.dropped_pairs == 2
    assert "dropped 2 pairs" in caplog.text
    assert [[m["i"] for m in s.meta["pairs"]] for s in seqs] == [[0, 2]]


def test_smaller_limit_for_the_large_models():
    samples = [qa("1", i, source="gqa", response=" ".join(["x"] * 40)) for i in range(10)]
    big, _ = pack_samples(samples, words, PackingConfig(max_length=1024))
    small, _ = pack_samples(samples, words, PackingConfig(max_length=800))
    # pair = 3 + 40 + 3 = 46; room 1024 - 610 = 414 -> 9 pairs; 800 - 610 = 190 -> 4 pairs
    assert sizes(big) == [9, 1]
    assert sizes(small) == [4, 4, 2]


def test_only_same_image_and_task_are_packed_and_order_is_kept():
    samples = [
        qa("1", 0),
        qa("2", 1),
        qa("1", 2, task="grounding"),
        qa("1", 3),
        qa("2", 4),
        qa("1", 5, source="gqa"),
    ]
    seqs, _ = pack_samples(samples, words)
    got = [(s.image_id, s.task, s.source, [m["i"] for m in s.meta["pairs"]]) for s in seqs]
    assert got == [
        ("1", "vqa", "vqav2", [0, 3]),
        ("2", "vqa", "vqav2", [1, 4]),
        ("1", "grounding", "vqav2", [2]),
        ("1", "vqa", "gqa", [5]),
    ]
    again, _ = pack_samples(list(samples), words)
    assert [s.turns for s in again] == [s.turns for s in seqs]


@pytest.mark.parametrize("task", ["caption", "itm", "grounded_caption", "pope"])
def test_unpacked_tasks_stay_single(task):
    samples = [qa("1", i, source="coco", task=task) for i in range(3)]
    seqs, _ = pack_samples(samples, words)
    assert sizes(seqs) == [1, 1, 1]
    assert [s.meta for s in seqs] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_long_chat_is_split_into_parts():
    turns = [Turn(f"q{i} " + "w " * 10, "answer " * 10) for i in range(6)]
    chat = VLSample("c.jpg", "c", "chat", "llava_instruct", turns, {"split": "train"})
    cfg = PackingConfig(max_length=100, image_tokens=20, caps={})  # a turn: 11 + 10 + 3 = 24
    seqs, stats = pack_samples([chat], words, cfg)
    assert sizes(seqs) == [3, 3]
    assert [s.meta["part"] for s in seqs] == [0, 1]
    assert [t for s in seqs for t in s.turns] == turns
    assert stats.dropped_pairs == 0


def test_rotations_of_a_question_never_share_a_sequence():
    questions = [
        mc_sample("v.jpg", "9", "visual7w_telling", f"Q{k}?", ["a", "b", "c", "d"], 0, f"q{k}")
        for k in range(12)
    ]
    rotated = list(expand_rotations(questions))
    assert len(rotated) == 48
    seqs, _ = pack_samples(rotated, words, PackingConfig(max_length=100_000))
    assert sizes(seqs) == [10, 2] * 4  # 4 rounds of 12 questions, cap 10
    for s in seqs:
        keys = [m[PACK_KEY] for m in s.meta["pairs"]]
        assert len(keys) == len(set(keys))
    answers = [[m["answer_index"] for m in s.meta["pairs"]] for s in seqs]
    assert answers[0] == [0] * 10 and answers[2] == [1] * 10  # round r: rotation r


def test_config_is_validated():
    with pytest.raises(ConfigError, match="image_tokens"):
        PackingConfig(max_length=600, image_tokens=601)
    with pytest.raises(ConfigError, match="caps.vqav2"):
        PackingConfig(caps={"vqav2": 0})
