"""``vlab vlm generate``: one question about one image file answered by a trained stage, with the
prompt built token for token as a training example's, and one-line errors for bad input."""

import shutil

import pytest
import torch

from vlab.cli import main
from vlab.models.vlm.batch import batch_of
from vlab.models.vlm.data.records import Turn, VLSample
from vlab.models.vlm.data.shapes import shapes_sample, task_of
from vlab.models.vlm.generate import first_turn_prompts, greedy_generate, greedy_tokens
from vlab.models.vlm.model import build_vlm
from vlab.models.vlm.tokenizer import pad_token_id
from vlab.vlm.answer import question_batch, read_image
from vlab.vlm.config import config_from
from vlab.vlm.tokenizer import run_tokenizer
from vlab.vlm.trained import load_trained


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny task-aware Pythia-VL run, both stages, a few steps each (seconds on a CPU)."""
    out = tmp_path_factory.mktemp("gen") / "run"
    argv = ["vlm", "train", "--arch", "pythia", "--ordering", "task_aware", "--no-progress"]
    for key, value in [
        ("stage1.steps", 2),
        ("stage1.eval_every", 2),
        ("stage2.steps", 3),
        ("stage2.eval_every", 3),
        ("stage1.batch_size", 4),
        ("stage2.batch_size", 4),
        ("stage1.threads", 2),
        ("stage2.threads", 2),
        ("data.n_heldout", 2),
        ("max_new_tokens", 6),
    ]:
        argv += ["--set", f"{key}={value}"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def vqa_sample(cfg, tmp_path):
    """The first held-out shapes VQA example, its image saved as PNG (lossless: the file
    reads back to the same pixels)."""
    index = next(i for i in range(100) if task_of(cfg.data.shapes, i) == "vqa")
    sample = shapes_sample(cfg.data.shapes, "held_out", index)
    path = tmp_path / "scene.png"
    sample.image.save(path)
    return sample, path


@pytest.mark.parametrize("stage", [1, 2])
def test_generate_prints_what_greedy_generate_gives_for_the_training_example(
    run, tmp_path, capsys, stage
):
    """Stage 1 leaves the LM at its random initialisation, so its answers are long and vary
    with every input token and pixel; stage 2's few steps mostly learned to stop at once."""
    trained = load_trained(run, stage, "cpu")
    cfg, model, tok = trained.config, trained.model, trained.tokenizer
    assert cfg.model.sequence.ordering == "task_aware" and trained.step == {1: 2, 2: 3}[stage]
    sample, path = vqa_sample(cfg, tmp_path)
    prompt = sample.turns[0].prompt
    # the normal way: the example as a data reader stores it (image path, its true answer)
    example = VLSample(str(path), sample.image_id, "vqa", "shapes", sample.turns[:1])
    batch = batch_of([example], model, tok, cfg.model.sequence)
    with torch.no_grad():
        want = greedy_generate(model, tok, batch, cfg.max_new_tokens)[0]
        tokens = greedy_tokens(
            model,
            batch,
            pad_id=pad_token_id(tok),
            eos_id=tok.eos_token_id,
            max_new_tokens=cfg.max_new_tokens,
        )[0]
    assert want == tok.decode(tokens, skip_special_tokens=True)
    assert stage == 2 or len(tokens) == cfg.max_new_tokens  # stage 1: not vacuous
    argv = ["vlm", "generate", "--run", str(run), "--image", str(path), "--prompt", prompt]
    argv += ["--task", "vqa", "--stage", str(stage)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert capsys.readouterr().out == want + "\n"
    # --max-new-tokens cuts the same greedy answer
    assert main([*argv, "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out == tok.decode(tokens[:2], skip_special_tokens=True) + "\n"
    if stage == 1:  # the default task (chat) has no instruction: another prompt, another answer
        assert main([*argv[:-4], "--stage", "1"]) == 0
        assert capsys.readouterr().out not in ("", want + "\n")


@pytest.mark.parametrize("ordering", ["task_agnostic", "task_aware"])
@pytest.mark.parametrize("task", ["vqa", "chat"])
def test_question_prompt_is_the_training_prompt_token_for_token(tmp_path, ordering, task):
    cfg = config_from("tiny-shapes", "mamba", {"model": {"sequence": {"ordering": ordering}}})
    tok = run_tokenizer(cfg, tmp_path)
    model = build_vlm(cfg.model, vocab_size=len(tok), seed=1)
    sample, path = vqa_sample(cfg, tmp_path)
    prompt = sample.turns[0].prompt
    example = VLSample(str(path), "x", task, "shapes", [sample.turns[0], Turn("more?", "no")])
    trained = first_turn_prompts(batch_of([example], model, tok, cfg.model.sequence), 0)
    question = question_batch(read_image(path), prompt, task, model, tok, cfg.model.sequence)
    asked = first_turn_prompts(question, 0)
    assert torch.equal(asked.input_ids, trained.input_ids)
    assert torch.equal(asked.patch_index, trained.patch_index)
    # the question's only label is the end of its (empty) response, right after the prompt
    n = asked.input_ids.shape[1]
    assert question["labels"][0, n:].tolist() == [tok.eos_token_id]
    pixels = batch_of([example], model, tok, cfg.model.sequence)["pixel_values_0"]
    assert torch.equal(question["pixel_values_0"], pixels)
    # the run's ordering: the patches come first (task-agnostic) or after the prompt
    first_patch = int((asked.patch_index[0] >= 0).nonzero()[0])
    head = tok.decode(asked.input_ids[0, :first_patch].tolist())
    assert (prompt in head) == (ordering == "task_aware")


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlab: error: ")
    return lines[0]


def test_bad_input_gives_one_line_errors(run, tmp_path, capsys):
    image = tmp_path / "red.png"
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 20, 20)).save(image)
    ask = ["vlm", "generate", "--image", str(image), "--prompt", "What colour?"]
    assert "run directory" in _error(capsys, [*ask, "--run", str(tmp_path / "nope")])
    assert "nope does not exist" in _error(capsys, [*ask, "--run", str(tmp_path / "nope")])
    # a run with stage 2 only: no stage 1 to ask
    only2 = tmp_path / "only2"
    shutil.copytree(run / "stage2", only2 / "stage2")
    shutil.copytree(run / "tokenizer", only2 / "tokenizer")
    assert "stage 1 was not trained" in _error(capsys, [*ask, "--run", str(only2), "--stage", "1"])
    (only2 / "stage2" / "checkpoints" / "last.pt").unlink()
    assert "has no checkpoint" in _error(capsys, [*ask, "--run", str(only2)])
    # the image: missing, not an image, a directory
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    base = ["vlm", "generate", "--run", str(run), "--prompt", "What colour?", "--image"]
    assert "does not exist" in _error(capsys, [*base, str(tmp_path / "none.png")])
    assert "cannot read image file" in _error(capsys, [*base, str(bad)])
    assert "is not a file" in _error(capsys, [*base, str(tmp_path)])
    # the prompt
    empty = ["vlm", "generate", "--run", str(run), "--image", str(image), "--prompt"]
    assert "'prompt': is empty" in _error(capsys, [*empty, "  "])
    assert "max_new_tokens" in _error(capsys, [*empty, "hi", "--max-new-tokens", "0"])
    assert "'device'" in _error(capsys, [*empty, "hi", "--device", "sideways"])
    assert "max_length 256" in _error(capsys, [*empty, "blue " * 300])
    # a task whose instruction asks the question takes an empty prompt, as in training
    assert main([*empty, "", "--task", "caption", "--device", "cpu"]) == 0
