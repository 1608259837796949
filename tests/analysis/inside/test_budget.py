"""Memory-bounded analyses: the estimate, the batch it plans under a cap, and that a small
cap (many small batches, an example's patched copies split over passes) gives the tables
the default batches give, on tiny models with a Pythia-sized vocabulary (50k rows)."""

from functools import cache

import pandas as pd
import pytest
import torch

from vlab.analysis.inside.attention import attention_table
from vlab.analysis.inside.budget import (
    DEFAULT_BATCH,
    FLOAT,
    example_bytes,
    model_dims,
    peak_bytes,
    plan_batch,
)
from vlab.analysis.inside.logit_lens import logit_lens_table
from vlab.analysis.inside.patching import patching_table
from vlab.analysis.inside.state_probe import features
from vlab.errors import VlabError
from vlab.models.backbones import BackboneConfig, add_tokens, build_backbone
from vlab.probes.examples import heldout_examples
from vlab.probes.tasks import ProbeTaskConfig, ProbeVocab

VOCAB, HIDDEN, N = 50_000, 16, 12
WIDE = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "initializer_range": 0.3}
WIDE |= {"num_hidden_layers": 1}
ARMS = {"pythia": {**WIDE, "num_attention_heads": 2}, "mamba": {**WIDE, "intermediate_size": 32}}


@cache
def _setup(arch: str):
    """A random tiny model with a 50k vocabulary and hidden size 16, and N examples (T = 6)."""
    task = ProbeTaskConfig(length=4, n_train=40, n_heldout=N)
    cfg = BackboneConfig(arch=arch, overrides=ARMS[arch])
    model = build_backbone(cfg, seed=0)
    vocab = ProbeVocab.for_task(task, base_vocab_size=VOCAB)
    add_tokens(model, len(vocab.new_token_names), cfg)
    return model.eval(), vocab, heldout_examples(task, vocab, N)


def _cap_for(arch: str, analysis: str, batch: int) -> tuple[float, int]:
    """The cap at which ``batch`` is the largest batch that fits, and T."""
    model, _, examples = _setup(arch)
    length = examples.input_ids.shape[1]
    return peak_bytes(model_dims(model), analysis, length, N, batch), length


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
@pytest.mark.parametrize("analysis", ["logit_lens", "attention", "state_probe", "patching"])
def test_the_planned_batch_is_the_largest_whose_estimate_fits(arch, analysis):
    model, _, examples = _setup(arch)
    dims = model_dims(model)
    cap, length = _cap_for(arch, analysis, 3)
    batch = plan_batch(dims, analysis, length, N, cap)
    assert batch == 3
    assert peak_bytes(dims, analysis, length, N, batch) <= cap
    assert peak_bytes(dims, analysis, length, N, batch + 1) > cap
    assert plan_batch(dims, analysis, length, N, None) == DEFAULT_BATCH[analysis]
    assert plan_batch(dims, analysis, length, N, 1e15) == DEFAULT_BATCH[analysis]


def test_the_estimate_counts_the_vocabulary_at_the_last_position_only():
    """Going from 256 to 50k rows adds (V' - V) x 4 bytes per kept row (3 in the forward
    pass, 6 more for the lens's logits, float32 copy, softmax and temporaries; patching 6
    per patched sequence), not x T: only the last position is unembedded."""
    model, _, examples = _setup("pythia")
    length = examples.input_ids.shape[1]
    wide = model_dims(model)
    narrow = type(wide)(**{**wide.__dict__, "vocab": 256})
    grow = (wide.vocab - 256) * FLOAT
    lens = [example_bytes(d, "logit_lens", length)[0] for d in (wide, narrow)]
    assert lens[0] - lens[1] == 9 * grow
    patched = [example_bytes(d, "patching", length)[1] for d in (wide, narrow)]
    assert patched[0] - patched[1] == 6 * grow
    assert wide.weights == sum(p.numel() * 4 for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )
    half = model_dims(model, torch.bfloat16)
    assert half.element == 2 and half.weights < wide.weights


def test_a_cap_below_one_example_is_refused_in_one_line():
    model, _, examples = _setup("mamba")
    length = examples.input_ids.shape[1]
    cap, _ = _cap_for("mamba", "patching", 1)
    with pytest.raises(VlabError, match=r"--max-memory-gb .*patching needs about .* GiB") as e:
        plan_batch(model_dims(model), "patching", length, N, cap - 1)
    assert len(str(e.value).splitlines()) == 1


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_small_batches_give_the_tables_of_the_default_batch(arch):
    model, vocab, examples = _setup(arch)
    for analysis, table in (("logit_lens", logit_lens_table), ("attention", attention_table)):
        batch = plan_batch(model_dims(model), analysis, 6, N, _cap_for(arch, analysis, 5)[0])
        assert batch == 5  # three batches of 5, 5 and 2 examples
        pd.testing.assert_frame_equal(
            table(model, examples, batch_size=batch), table(model, examples), atol=1e-6, rtol=1e-5
        )
    small = features(model, examples, batch_size=5)
    for key, value in features(model, examples).items():
        torch.testing.assert_close(torch.from_numpy(small[key]), torch.from_numpy(value))
    # patching under a cap of 4 sequences per pass: one example at a time, its T = 6 copies
    # over two passes (3 examples, one corruption: each pass is a traced forward)
    batch = plan_batch(model_dims(model), "patching", 6, N, _cap_for(arch, "patching", 4)[0])
    assert batch == 4
    few = heldout_examples(ProbeTaskConfig(length=4, n_train=40, n_heldout=N), vocab, 3)
    pd.testing.assert_frame_equal(
        patching_table(model, few, vocab, batch_size=batch, corruptions=("moved",)),
        patching_table(model, few, vocab, corruptions=("moved",)),
        atol=1e-5,
        rtol=1e-4,
    )
