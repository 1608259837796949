"""Records, box text, instructions and multiple-choice rotation."""

import pytest

from vlab.errors import VlabError
from vlab.models.vlm.data import INSTRUCTIONS, TASKS, instruction_for
from vlab.models.vlm.data.multiple_choice import (
    expand_rotations,
    format_options,
    mc_sample,
    parse_letter,
    rotate_sample,
    rotations,
)
from vlab.models.vlm.data.records import (
    PACK_KEY,
    Turn,
    VLSample,
    box_iou,
    format_box,
    format_norm_box,
    parse_box,
)


def test_format_box_normalises_clamps_and_uses_two_decimals():
    assert format_box(12, 34, 56, 78, 100, 100) == "[0.12, 0.34, 0.56, 0.78]"
    assert format_box(-5, 10, 250, 50, 200, 100) == "[0.00, 0.10, 1.00, 0.50]"
    assert format_box(0, 0, 1, 1, 3, 3) == "[0.00, 0.00, 0.33, 0.33]"
    assert format_norm_box(0.9, 0.8, 0.1, 0.2) == "[0.10, 0.20, 0.90, 0.80]"
    with pytest.raises(VlabError):
        format_box(0, 0, 1, 1, 0, 10)


@pytest.mark.parametrize(
    ("text", "box"),
    [
        ("[0.12, 0.34, 0.56, 0.78]", (0.12, 0.34, 0.56, 0.78)),
        ("The region is [0.1,0.2,0.3,0.4].", (0.1, 0.2, 0.3, 0.4)),
        ("(0.1 0.2 0.3 0.4)", (0.1, 0.2, 0.3, 0.4)),
        ("[0.1, 0.2, 0.3, 0.4", (0.1, 0.2, 0.3, 0.4)),  # generation cut before the bracket
        ("[0.5, 0.6, 0.1, 1.3]", (0.1, 0.6, 0.5, 1.0)),  # ordered and clamped
        ("[1, 2] then [0.2, .3, 0.4, 0.5]", (0.2, 0.3, 0.4, 0.5)),
        ("0, 0, 1, 1", (0.0, 0.0, 1.0, 1.0)),
        ("[0.1, 0.2, 0.3]", None),
        ("no box here", None),
        ("", None),
    ],
)
def test_parse_box_is_robust_to_model_output(text, box):
    got = parse_box(text)
    if box is None:
        assert got is None
    else:
        assert got == pytest.approx(box)


def test_parse_box_reads_back_format_box():
    text = format_box(13, 27, 181, 99, 200, 100)
    assert format_norm_box(*parse_box(text)) == text


def test_box_iou():
    assert box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert box_iou((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == 0.0
    assert box_iou((0, 0, 1, 1), (0, 0, 0.5, 1)) == pytest.approx(0.5)


def test_sample_validates_task_and_turns():
    with pytest.raises(VlabError, match="unknown task"):
        VLSample(None, "1", "summarise", "x", [Turn("a", "b")])
    with pytest.raises(VlabError, match="no turns"):
        VLSample(None, "1", "vqa", "x", [])


def test_instructions_are_the_spec_strings():
    assert set(INSTRUCTIONS) == set(TASKS)
    assert instruction_for("caption") == "Provide a one-sentence caption for the provided image"
    assert instruction_for("dense_caption") == "Provide a short description of the region"
    assert instruction_for("grounded_caption") == (
        "Provide a one-sentence caption for the image and mention each entity."
    )
    assert instruction_for("itm") == "Determine if the image matches the description"
    assert instruction_for("mcvqa") == (
        "Answer with the option's letter from the given choices directly"
    )
    assert instruction_for("grounding") == "Locate the region that is described by"
    assert instruction_for("vqa") == "Answer the question using a single word or phrase"
    assert instruction_for("chat") == ""
    assert instruction_for("pope") == instruction_for("vqa")
    with pytest.raises(VlabError):
        instruction_for("nope")


def test_format_options_and_parse_letter():
    assert format_options("Q?", ["x", "y"]) == "Q?\nA. x\nB. y"
    assert parse_letter("B", 4) == 1
    assert parse_letter("(c) a phone", 4) == 2
    assert parse_letter("E", 4) is None
    assert parse_letter("", 4) is None


def test_rotations_place_the_answer_at_every_letter_keeping_the_others_in_order():
    rots = rotations(["w", "x", "ANS", "y"], 2)
    assert rots == [
        (["ANS", "w", "x", "y"], 0),
        (["w", "ANS", "x", "y"], 1),
        (["w", "x", "ANS", "y"], 2),
        (["w", "x", "y", "ANS"], 3),
    ]
    for choices, k in rots:
        assert [c for c in choices if c != "ANS"] == ["w", "x", "y"]
        assert choices[k] == "ANS"
    with pytest.raises(VlabError):
        rotations(["a"], 1)


def test_rotate_sample_repeats_the_question_with_the_letter_following():
    s = mc_sample("img.jpg", "7", "ai2d", "Which?", ["a", "b", "c"], 1, "q1", {"split": "train"})
    assert s.turns == [Turn("Which?\nA. a\nB. b\nC. c", "B")]
    rot = rotate_sample(s)
    assert [r.turns[0].response for r in rot] == ["A", "B", "C"]
    assert rot[0].turns[0].prompt == "Which?\nA. b\nB. a\nC. c"
    assert rot[2].turns[0].prompt == "Which?\nA. a\nB. c\nC. b"
    assert {r.meta[PACK_KEY] for r in rot} == {"ai2d:q1"}
    assert [r.meta["rotation"] for r in rot] == [0, 1, 2]
    assert s.meta["answer_index"] == 1  # the original is not modified
    other = VLSample(None, "1", "vqa", "x", [Turn("q", "a")])
    assert list(expand_rotations([s, other])) == [*rot, other]
