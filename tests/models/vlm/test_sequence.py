"""VLM sequence assembly: image token counts and positions, orderings, label masks."""

import pytest
import torch

from vlab.errors import ConfigError
from vlab.models.vlm.parts import ImageLayout, SequenceConfig
from vlab.models.vlm.sequence import IGNORE, PATCH, assemble, collate, image_segment_length
from vlab.models.vlm.tokenizer import train_bpe_tokenizer

CORPUS = [
    "What colour is the circle?",
    "red",
    "blue square",
    "Answer the question",
    "Locate the region that is described by",
    "[0.12, 0.34, 0.56, 0.78]",
] * 4


@pytest.fixture(scope="module")
def tok():
    t = train_bpe_tokenizer(CORPUS, vocab_size=300)
    t.add_tokens(["###", "##", "&&"])  # one token per marker, as in the Pythia tokenizer
    return t


def spans(labels):
    """Contiguous runs of unmasked label ids."""
    out, cur = [], []
    for x in labels:
        if x == IGNORE:
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(x)
    return out + ([cur] if cur else [])


@pytest.mark.parametrize(("rows", "cols"), [(24, 24), (3, 5)])
def test_image_token_counts_of_both_layouts(tok, rows, cols):
    # paper: ## + rows x (cols patches + &&) + ##
    assert image_segment_length(ImageLayout.paper(), rows, cols, tok) == rows * (cols + 1) + 2
    # authors' code: ### + rows x (cols + 1 marker, the last one ###) -> 601 at 24 x 24
    n = image_segment_length(ImageLayout.authors(), rows, cols, tok)
    assert n == rows * (cols + 1) + 1
    if rows == 24:
        assert n == 601


def test_patch_slots_and_markers_token_by_token(tok):
    seq = assemble([("What colour is the circle?", "red")], None, (2, 3), tok, SequenceConfig())
    hash2, amp = (tok.convert_tokens_to_ids(t) for t in ("##", "&&"))
    assert seq.input_ids[:10] == [hash2, PATCH, PATCH, PATCH, amp, PATCH, PATCH, PATCH, amp, hash2]
    assert seq.patch_index[:10] == [-1, 0, 1, 2, -1, 3, 4, 5, -1, -1]
    authors = assemble(
        [("q", "red")], None, (2, 3), tok, SequenceConfig(layout=ImageLayout.authors())
    )
    h3 = tok.convert_tokens_to_ids("###")
    assert authors.input_ids[:10] == [h3, PATCH, PATCH, PATCH, amp, PATCH, PATCH, PATCH, h3, hash2]


def test_task_aware_puts_instruction_and_prompt_before_the_image(tok):
    turns = [("What colour is the circle?", "red")]
    agnostic = assemble(turns, "Answer the question", (2, 2), tok, SequenceConfig())
    aware = assemble(
        turns, "Answer the question", (2, 2), tok, SequenceConfig(ordering="task_aware")
    )
    assert len(agnostic) == len(aware)
    first_patch = aware.input_ids.index(PATCH)
    head = tok.decode(aware.input_ids[: first_patch - 1])
    assert head == "Answer the question What colour is the circle?\n"
    assert agnostic.input_ids.index(PATCH) == 1
    assert tok.decode(agnostic.input_ids[agnostic.patch_index.index(3) + 3 :]).startswith(
        "Answer the question What colour"
    )


@pytest.mark.parametrize("ordering", ["task_agnostic", "task_aware"])
@pytest.mark.parametrize("layout", [ImageLayout.paper(), ImageLayout.authors()])
def test_labels_cover_exactly_the_responses(tok, ordering, layout):
    turns = [
        ("What colour is the circle?", "red"),
        ("Locate the region", "[0.12, 0.34, 0.56, 0.78]"),
        ("blue square?", "blue square"),
    ]
    seq = assemble(
        turns, "Answer the question", (3, 3), tok, SequenceConfig(layout=layout, ordering=ordering)
    )
    decoded = [tok.decode(s, skip_special_tokens=True) for s in spans(seq.labels)]
    assert decoded == [r for _, r in turns]
    # each response span is closed by EOS, which is trained too (the model learns to stop)
    assert all(s[-1] == tok.eos_token_id for s in spans(seq.labels))
    # labels equal input ids wherever they are not masked; patches are never labels
    for i, lab in enumerate(seq.labels):
        assert lab == IGNORE or lab == seq.input_ids[i]
        assert not (seq.input_ids[i] == PATCH and lab != IGNORE)


def test_too_long_sequences_are_refused(tok):
    with pytest.raises(ConfigError, match="max_length"):
        assemble([("q", "red")], None, (24, 24), tok, SequenceConfig(max_length=100))


def test_collate_pads_and_keeps_patch_slots(tok):
    a = assemble([("q", "red")], None, (2, 2), tok, SequenceConfig())
    b = assemble(
        [("What colour is the circle?", "blue square")],
        "Answer the question",
        (2, 2),
        tok,
        SequenceConfig(),
    )
    batch = collate([a, b], pad_id=tok.pad_token_id)
    T = max(len(a), len(b))
    assert batch["input_ids"].shape == (2, T)
    assert batch["attention_mask"].sum(1).tolist() == [len(a), len(b)]
    assert (batch["patch_index"] >= 0).sum(1).tolist() == [4, 4]
    assert (batch["input_ids"] >= 0).all()  # placeholders replaced before embedding
    assert torch.equal(batch["labels"][0, len(a) :], torch.full((T - len(a),), IGNORE))
