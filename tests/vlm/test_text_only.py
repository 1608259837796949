"""Text-only examples (LLaVA-665K's conversations without an image) read, pack, assemble,
batch, train and evaluate like the others, with no image tokens and no vision encoder."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlab.cli import main
from vlab.config import from_dict
from vlab.fileio import read_jsonl
from vlab.models.vlm.batch import assemble_sample, batch_of, pixel_values
from vlab.models.vlm.data import readers as R
from vlab.models.vlm.data.packing import PackingConfig, pack_samples
from vlab.models.vlm.data.prepared import MixtureConfig, PreparedMixture, prepare
from vlab.models.vlm.data.records import Turn, VLSample
from vlab.models.vlm.data.run_data import ShapesData
from vlab.models.vlm.data.sources import SourceConfig, load_source
from vlab.models.vlm.loss import per_sequence_loss
from vlab.models.vlm.model import build_vlm
from vlab.models.vlm.parts import ImageLayout, SequenceConfig
from vlab.models.vlm.sequence import IGNORE, PATCH
from vlab.models.vlm.tokenizer import train_bpe_tokenizer
from vlab.vlm.config import config_from
from vlab.vlm.tokenizer import run_tokenizer

FX = Path(__file__).parents[1] / "models" / "vlm" / "fixtures" / "vlm"
MIX665K = FX / "llava_mix665k" / "llava_v1_5_mix665k.json"
CHAT = [("Name three primary colors.", "Red, yellow and blue."), ("Which is warm?", "Red.")]


@pytest.fixture(scope="module")
def tok():
    corpus = [t for pair in CHAT for t in pair] * 4 + ["What colour is the circle?", "red"]
    t = train_bpe_tokenizer(corpus, vocab_size=300)
    t.add_tokens(["###", "##", "&&"])  # one token per marker, as in the Pythia tokenizer
    return t


def text_sample(turns=CHAT, task="chat", source="sharegpt", image_id="t0") -> VLSample:
    return VLSample(None, image_id, task, source, [Turn(p, r) for p, r in turns])


# reading ----------------------------------------------------------------------------------------


def test_llava_665k_rows_without_an_image_key_are_text_only_samples():
    out = list(R.read_llava_instruct(MIX665K, "/data/llava"))
    assert [s.image_id for s in out] == ["000000033471", "i6IyJda_0", "2354786", "oMgqeYL_0"]
    assert [s.has_image for s in out] == [True, False, True, False]
    assert out[0].image == "/data/llava/coco/train2017/000000033471.jpg"
    assert out[1].image is None and out[1].task == "chat"
    assert out[1].turns == [
        Turn("Name three primary colors.", "Red, yellow and blue."),
        Turn("Which of them is warm?", "Red and yellow are warm colors."),
    ]
    assert out[2].turns[0].prompt == (
        "Is the sky dark?\nAnswer the question using a single word or phrase."
    )


def test_sources_keep_text_only_samples_and_count_them(tmp_path):
    spec = {"reader": "llava_instruct", "paths": [str(MIX665K)], "image_root": str(tmp_path)}
    samples, stats = load_source(from_dict(SourceConfig, {**spec, "name": "llava_665k"}))
    assert (stats.read, stats.kept, stats.no_image, stats.samples) == (4, 4, 2, 4)
    assert [s.has_image for s in samples] == [True, False, True, False]
    assert {s.source for s in samples} == {"llava_665k"}
    # prepared files store "image": null and read back as text-only samples
    mixture = from_dict(MixtureConfig, {"sources": [spec]})
    words = lambda text: len(text.split())  # noqa: E731
    d = prepare(mixture, tmp_path / "d", length_fn=words, max_length=200, image_tokens=50)
    data = PreparedMixture(d)
    assert [data[i].image for i in range(4)][1::2] == [None, None]
    assert json.loads((d / "stats.json").read_text())["llava_instruct"]["no_image"] == 2


# packing and assembly ---------------------------------------------------------------------------


def test_packing_counts_no_image_tokens_for_a_text_only_conversation():
    words = lambda text: len(text.split())  # noqa: E731
    # each turn: 2 + 2 words + 3 overhead = 7; 21 tokens of image would leave room for none
    turns = [(f"q{i} x", f"a{i} y") for i in range(4)]
    cfg = PackingConfig(max_length=20, image_tokens=19, pair_overhead=3)
    text, stats = pack_samples([text_sample(turns)], words, cfg)
    assert [[t.prompt for t in s.turns] for s in text] == [["q0 x", "q1 x"], ["q2 x", "q3 x"]]
    assert stats.dropped_pairs == 0 and all(not s.has_image for s in text)
    with_image, stats = pack_samples([text_sample(turns).replace(image="a.jpg")], words, cfg)
    assert with_image == [] and stats.dropped_pairs == 4  # 19 + 7 > 20: no pair fits


@pytest.mark.parametrize("ordering", ["task_agnostic", "task_aware"])
@pytest.mark.parametrize("layout", [ImageLayout.paper(), ImageLayout.authors()])
def test_text_only_sequence_is_the_tokenized_conversation(tok, ordering, layout):
    seq = SequenceConfig(layout=layout, ordering=ordering)
    got = assemble_sample(text_sample(), (2, 3), tok, seq)  # the grid is ignored: no image
    enc = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    eos = [tok.eos_token_id]
    first = enc("Name three primary colors.\n")
    answer1 = enc("Red, yellow and blue.") + eos
    second = enc("\nWhich is warm?\n")
    answer2 = enc("Red.") + eos
    assert got.input_ids == first + answer1 + second + answer2
    assert got.labels == [IGNORE] * len(first) + answer1 + [IGNORE] * len(second) + answer2
    assert got.patch_index == [-1] * len(got)
    markers = {tok.convert_tokens_to_ids(m) for m in ("###", "##", "&&")}
    assert PATCH not in got.input_ids and not markers & set(got.input_ids)
    # a task's instruction still comes first, as for an image example
    vqa = assemble_sample(text_sample(task="vqa"), (2, 3), tok, seq)
    head = "Answer the question using a single word or phrase Name three primary colors.\n"
    assert vqa.input_ids[: len(enc(head))] == enc(head)


# batches and the model --------------------------------------------------------------------------


def _mixed(cfg, n_image: int = 2):
    data = ShapesData(cfg.data)
    images = data.heldout[:n_image]
    texts = [s.replace(image=None, image_id=f"text-{i}") for i, s in enumerate(data.heldout[2:4])]
    texts.append(text_sample())
    # image, text, image, text, text: text-only rows between and after image rows
    return [images[0], texts[0], images[1], texts[1], texts[2]]


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_mixed_batch_encodes_only_image_rows_and_its_loss_is_the_mean_of_the_rows(tmp_path, arch):
    cfg = config_from("tiny-shapes", arch, {"data": {"n_heldout": 4}})
    tok = run_tokenizer(cfg, tmp_path)
    model = build_vlm(cfg.model, vocab_size=len(tok), seed=3).eval()
    encoded: list[int] = []  # batch size of every call of the vision encoder
    model.encoders[0].register_forward_hook(lambda m, args, out: encoded.append(len(args[0])))
    samples = _mixed(cfg)
    batch = batch_of(samples, model, tok, cfg.model.sequence)
    pixels = batch["pixel_values_0"]
    assert pixels.shape == (5, 3, 64, 64)
    assert [bool(p.any()) for p in pixels] == [True, False, True, False, False]
    assert (batch["patch_index"] >= 0).sum(1).tolist() == [model.num_visual_tokens, 0] * 2 + [0]

    def forward(b):
        return model(
            b["input_ids"],
            b["patch_index"],
            pixel_values(b),
            attention_mask=b["attention_mask"],
            labels=b["labels"],
        )

    with torch.no_grad():
        mixed = forward(batch)
        assert encoded == [2]  # the two image rows, nothing for the three text-only ones
        alone = []
        for s in samples:
            one = batch_of([s], model, tok, cfg.model.sequence)
            assert ("pixel_values_0" in one) == s.has_image
            out = forward(one)
            alone.append(float(out["loss"]))
            assert torch.equal(out["loss"], per_sequence_loss(out["logits"], one["labels"])[0])
    assert encoded == [2, 1, 1]  # one call per image row alone; none for the text-only rows
    assert float(mixed["loss"]) == pytest.approx(np.mean(alone), rel=1e-5)


def test_text_only_batch_runs_no_encoder_and_trains_the_lm(tmp_path):
    cfg = config_from("tiny-shapes", "pythia", {"data": {"n_heldout": 4}})
    tok = run_tokenizer(cfg, tmp_path)
    model = build_vlm(cfg.model, vocab_size=len(tok), seed=3)
    model.set_stage(2)
    calls: list[int] = []
    model.encoders[0].register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    texts = [s for s in _mixed(cfg) if not s.has_image]
    batch = batch_of(texts, model, tok, cfg.model.sequence)
    assert pixel_values(batch) == [] and (batch["patch_index"] == -1).all()
    out = model(
        batch["input_ids"],
        batch["patch_index"],
        [],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
    )
    out["loss"].backward()
    assert calls == []
    assert all(p.grad is None for p in model.projector.parameters())  # not in the graph
    assert model.lm.get_input_embeddings().weight.grad.abs().sum() > 0


def test_generation_answers_mixed_batches_as_each_row_alone(tmp_path):
    from vlab.models.vlm.generate import greedy_generate

    cfg = config_from("tiny-shapes", "mamba", {"data": {"n_heldout": 4}})
    tok = run_tokenizer(cfg, tmp_path)
    model = build_vlm(cfg.model, vocab_size=len(tok), seed=3).eval()
    samples = _mixed(cfg)
    with torch.no_grad():
        together = greedy_generate(model, tok, batch_of(samples, model, tok, cfg.model.sequence), 5)
        alone = [
            greedy_generate(model, tok, batch_of([s], model, tok, cfg.model.sequence), 5)[0]
            for s in samples
        ]
    assert together == alone and any(together)


# a run ------------------------------------------------------------------------------------------


def test_tiny_vlm_trains_and_evaluates_on_a_mixture_with_text_only_rows(tmp_path):
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    spec = {"reader": "llava_instruct", "paths": [str(MIX665K)], "image_root": str(images)}
    for s in load_source(from_dict(SourceConfig, spec))[0]:
        if s.has_image:
            Path(s.image).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(s.image)
    config = {
        "data": {
            "dataset": "files",
            "stage2": {"sources": [spec]},
            "heldout": {"sources": [spec]},
            "n_heldout": 4,
        },
        "stage1": {"steps": 2, "eval_every": 2, "batch_size": 2, "threads": 2},
        "stage2": {"steps": 30, "eval_every": 15, "batch_size": 2, "threads": 2, "lr": 3e-3},
        "max_new_tokens": 8,
    }
    (tmp_path / "c.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    argv = ["vlm", "train", "--arch", "mamba", "--config", str(tmp_path / "c.json")]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    stats = json.loads((out / "data" / "stage2" / "stats.json").read_text())
    assert stats["llava_instruct"]["no_image"] == 2 and stats["llava_instruct"]["sequences"] == 4
    rows = read_jsonl(out / "stage2" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 15, 30]
    assert rows[-1]["eval_loss"] < 0.5 * rows[0]["eval_loss"]
    assert rows[-1]["loss"] < rows[1]["loss"]
    assert set(rows[-1]["sources"]) == {"llava_instruct/chat"}
