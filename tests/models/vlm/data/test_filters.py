"""The spec's filters on crafted cases, edges included."""

import hashlib
import logging

import numpy as np
import pytest
from PIL import Image

from vlab.errors import VlabError
from vlab.models.vlm.data.filters import (
    dominant_color_fraction,
    filter_grit,
    filter_ocrvqa,
    filter_vg_regions,
    is_genre_question,
    normalize_phrase,
    rarest_phrases,
)
from vlab.models.vlm.data.records import Turn, VLSample


def region(w, h, source="visual_genome"):
    return VLSample(
        "a.jpg", "1", "grounding", source, [Turn("x", "[0.00, 0.00, 0.10, 0.10]")],
        {"box_xywh": [5, 5, w, h]},
    )  # fmt: skip


def test_vg_regions_keep_only_area_below_16384():
    samples = [region(128, 128), region(127, 129), region(1, 16383), region(200, 100)]
    kept = list(filter_vg_regions(samples))
    assert [s.meta["box_xywh"][2:] for s in kept] == [[127, 129], [1, 16383]]
    other = region(500, 500, source="visual7w_pointing")  # only Visual Genome is filtered
    caption = VLSample("a.jpg", "1", "caption", "visual_genome", [Turn("", "c")])
    assert list(filter_vg_regions([other, caption])) == [other, caption]


def grit(key, phrases, width=200, height=200):
    """A GRIT sample whose caption is the phrases joined by ' and ', one chunk per phrase."""
    caption, chunks = "", []
    for p in phrases:
        if caption:
            caption += " and "
        chunks.append([len(caption), len(caption) + len(p), 0.1, 0.1, 0.5, 0.5, 0.9])
        caption += p
    meta = {"width": width, "height": height, "caption": caption, "noun_chunks": chunks}
    return VLSample(f"{key}.jpg", key, "grounded_caption", "grit", [Turn("", caption)], meta)


def test_normalize_phrase_drops_articles_and_case():
    assert normalize_phrase("The  Red Car") == "red car"
    assert normalize_phrase("a cup of the tea") == "cup of tea"
    assert normalize_phrase("An apple") == "apple"
    assert normalize_phrase("the") == ""


def test_grit_size_edge_100px():
    base = [grit(f"z{i}", ["a zebra"]) for i in range(3)]
    edge = grit("e", ["the zebra"], width=100, height=100)
    small = grit("s", ["zebra"], width=99, height=300)
    kept = filter_grit([*base, edge, small])
    assert sorted(s.image_id for s in kept) == ["e", "z0", "z1", "z2"]


def test_grit_rarest_phrase_groups_min_3_max_8():
    zebras = [grit(f"z{i}", ["a zebra", "a dog"]) for i in range(2)]
    zebras.append(grit("z2", ["The Zebra", "the dog"]))  # same phrases after normalising
    dogs = [grit(f"d{i}", ["the dog"]) for i in range(10)]
    cats = [grit(f"c{i}", ["a cat"]) for i in range(2)]  # a group of 2: dropped
    samples = zebras + dogs + cats
    assert rarest_phrases(samples)[:3] == ["zebra"] * 3  # zebra (3 images) is rarer than dog
    kept = filter_grit(samples)
    ids = [s.image_id for s in kept]
    assert {"z0", "z1", "z2"} <= set(ids)
    assert not {"c0", "c1"} & set(ids)
    kept_dogs = [i for i in ids if i.startswith("d")]
    assert len(kept_dogs) == 8
    expected = sorted(
        (f"d{i}" for i in range(10)), key=lambda k: hashlib.sha256(k.encode()).hexdigest()
    )
    assert set(kept_dogs) == set(expected[:8])
    assert [s.image_id for s in filter_grit(samples[::-1])] == ids[::-1]  # order-independent
    assert ids == [s.image_id for s in samples if s.image_id in set(ids)]  # input order kept


def test_grit_frequencies_count_only_images_that_pass_the_size_filter():
    xs = [grit(f"x{i}", ["a horse", "a lion"]) for i in range(3)]
    hs = [grit(f"h{i}", ["a horse"]) for i in range(2)]
    small_lions = [grit(f"s{i}", ["a lion"], width=50) for i in range(5)]
    # sized: horse in 5 images, lion in 3 -> x's rarest is lion; the horse group (h0, h1) is
    # too small. Counting the small images would make lion (8) commoner than horse (5).
    kept = filter_grit(xs + hs + small_lions)
    assert sorted(s.image_id for s in kept) == ["x0", "x1", "x2"]


def test_grit_ties_go_to_the_alphabetically_first_phrase():
    ts = [grit(f"t{i}", ["a banana", "an apple"]) for i in range(3)]
    assert rarest_phrases(ts) == ["apple"] * 3
    assert len(filter_grit(ts)) == 3
    assert filter_grit([grit("n", ["the"])] * 3) == []  # no phrase left after the articles


@pytest.mark.parametrize(
    ("question", "genre"),
    [
        ("What is the genre of this book?", True),
        ("What type of book is this?", True),
        ("Is this book related to Travel?", True),
        ("Is this book related to Cookbooks, Food & Wine?", True),
        ("Is this a comedy book?", True),
        ("Is this an exam preparation book?", True),
        ("Is this a sci-fi book?", True),
        ("Who wrote this book?", False),
        ("Who is the author of this book?", False),
        ("What is the title of this book?", False),
        ("What is the edition of this book?", False),
        ("What is the year printed on this book?", False),
    ],
)
def test_genre_questions(question, genre):
    assert is_genre_question(question) is genre


def two_colour_image(path, size, n_first):
    """An image of ``size`` whose first ``n_first`` pixels (row-major) are one colour."""
    w, h = size
    a = np.zeros((h * w, 3), np.uint8)
    a[:n_first] = (250, 250, 250)
    a[n_first:] = (10, 20, 30)
    Image.fromarray(a.reshape(h, w, 3)).save(path)
    return str(path)


def noisy_image(path, size):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


def ocr(image, question="Who wrote this book?"):
    return VLSample(image, image, "vqa", "ocrvqa", [Turn(question, "x")])


def test_near_blank_edge_85_percent(tmp_path):
    n = 400 * 350
    exact = two_colour_image(tmp_path / "exact.png", (400, 350), int(0.85 * n))
    over = two_colour_image(tmp_path / "over.png", (400, 350), int(0.85 * n) + 1)
    assert dominant_color_fraction(Image.open(exact)) == 0.85
    kept = list(filter_ocrvqa([ocr(exact), ocr(over)]))
    assert [s.image for s in kept] == [exact]


def test_ocrvqa_size_edge_350px_and_genre_questions(tmp_path):
    ok = noisy_image(tmp_path / "ok.png", (350, 500))
    narrow = noisy_image(tmp_path / "narrow.png", (349, 500))
    short = noisy_image(tmp_path / "short.png", (500, 349))
    samples = [
        ocr(ok),
        ocr(ok, "What is the genre of this book?"),
        ocr(ok, "Is this book related to Travel?"),
        ocr(narrow),
        ocr(short),
        ocr(ok, "What is the title of this book?"),
    ]
    kept = list(filter_ocrvqa(samples))
    assert [s.turns[0].prompt for s in kept] == [
        "Who wrote this book?",
        "What is the title of this book?",
    ]


def test_ocrvqa_missing_images(tmp_path, caplog):
    ok = noisy_image(tmp_path / "ok.png", (400, 400))
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(VlabError, match="missing.jpg"):
        list(filter_ocrvqa([ocr(missing)]))
    with caplog.at_level(logging.WARNING):
        kept = list(filter_ocrvqa([ocr(missing), ocr(ok), ocr(missing)], on_missing="drop"))
    assert [s.image for s in kept] == [ok]
    assert "dropped 2 samples" in caplog.text
