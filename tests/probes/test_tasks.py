"""The retrieval task: layouts token by token, balance, disjointness, determinism."""

from collections import Counter

import numpy as np
import pytest

from vlab.errors import ConfigError
from vlab.probes.tasks import ProbeData, ProbeTaskConfig, ProbeVocab, layout

BASE = 100  # a backbone vocabulary of 100 tokens: new tokens start at id 100


def vocab_for(task, base=BASE):
    return ProbeVocab.for_task(task, base_vocab_size=base)


def test_token_ids_are_appended_after_the_backbone_vocabulary():
    task = ProbeTaskConfig(length=4, pool_size=6, target_mode="position")
    v = vocab_for(task)
    assert [v.patch_id(k) for k in range(6)] == list(range(100, 106))
    assert (v.out_id, v.ans_id) == (106, 107)
    assert [v.target_id(p) for p in range(4)] == [108, 109, 110, 111]
    assert v.new_token_names == [f"<s{k}>" for k in range(6)] + ["<out>", "<ans>"] + [
        "<p0>",
        "<p1>",
        "<p2>",
        "<p3>",
    ]
    assert v.vocab_size == 112


def test_vocab_targets_are_offset_plus_position():
    v = vocab_for(ProbeTaskConfig(length=4, target_offset=10))
    assert [v.target_id(p) for p in range(4)] == [10, 11, 12, 13]
    assert len(v.new_token_names) == 8 + 2  # no <p_k> tokens in vocab mode


def test_suffix_layout_token_by_token():
    task = ProbeTaskConfig(length=4, pool_size=6)
    v = vocab_for(task)
    ids = layout(np.array([5, 0, 3, 2]), query_pos=2, variant="suffix", vocab=v)
    # <s5> <s0> <s3> <s2> <out> <s3>
    assert ids.tolist() == [105, 100, 103, 102, 106, 103]


def test_prefix_layout_token_by_token():
    task = ProbeTaskConfig(length=4, pool_size=6, variant="prefix")
    v = vocab_for(task)
    ids = layout(np.array([5, 0, 3, 2]), query_pos=1, variant="prefix", vocab=v)
    # <out> <s0> <s5> <s0> <s3> <s2> <ans>
    assert ids.tolist() == [106, 100, 105, 100, 103, 102, 107]


@pytest.mark.parametrize("variant", ["suffix", "prefix"])
def test_examples_are_consistent_with_their_target(variant):
    task = ProbeTaskConfig(length=8, variant=variant, n_train=800, target_mode="position")
    data = ProbeData(task, vocab_for(task))
    batch = data.train_batch(step=3, batch_size=32)
    assert batch.input_ids.shape == (32, task.seq_len)
    for ids, target, p in zip(batch.input_ids, batch.targets, batch.positions, strict=True):
        context = ids[:8] if variant == "suffix" else ids[2:10]
        query = ids[-1] if variant == "suffix" else ids[1]
        assert len(set(context.tolist())) == 8  # distinct patch tokens
        assert context[p] == query  # the query names the token at the target position
        assert target == data.vocab.target_id(p)
        assert ids[8 if variant == "suffix" else 0] == data.vocab.out_id


def test_heldout_and_epoch_are_balanced():
    task = ProbeTaskConfig(length=5, n_train=500, n_heldout=100)
    data = ProbeData(task, vocab_for(task))
    assert Counter(data.heldout.positions.tolist()) == {p: 20 for p in range(5)}
    epoch = np.concatenate([data.train_batch(s, 50).positions for s in range(10)])
    assert Counter(epoch.tolist()) == {p: 100 for p in range(5)}


def test_an_epoch_visits_every_training_example_once():
    task = ProbeTaskConfig(length=4, n_train=96)
    data = ProbeData(task, vocab_for(task))
    idx = np.concatenate([data.train_indices(s, 32) for s in range(3)])
    assert sorted(idx.tolist()) == list(range(96))
    # the next epoch is a different order of the same set
    nxt = np.concatenate([data.train_indices(s, 32) for s in range(3, 6)])
    assert sorted(nxt.tolist()) == list(range(96)) and nxt.tolist() != idx.tolist()


def test_heldout_is_disjoint_from_training_even_when_collisions_are_likely():
    # L=3 from a pool of 4: only 4*3*2*3 = 72 distinct sequences, so a naive generator
    # would repeat held-out sequences in training all the time.
    task = ProbeTaskConfig(length=3, pool_size=4, n_heldout=15, n_train=3000)
    data = ProbeData(task, vocab_for(task))
    held = {tuple(x) for x in data.heldout.input_ids.tolist()}
    assert len(held) == 15  # no duplicates inside the held-out set either
    train = np.concatenate([data.train_batch(s, 100).input_ids for s in range(30)])
    assert not held & {tuple(x) for x in train.tolist()}


def test_generation_is_deterministic_and_seeded():
    task = ProbeTaskConfig(length=6, n_train=600)
    a, b = ProbeData(task, vocab_for(task)), ProbeData(task, vocab_for(task))
    assert np.array_equal(a.heldout.input_ids, b.heldout.input_ids)
    # any step can be rebuilt on its own (what resume relies on)
    assert np.array_equal(a.train_batch(7, 16).input_ids, b.train_batch(7, 16).input_ids)
    other = ProbeData(ProbeTaskConfig(length=6, n_train=600, seed=1), vocab_for(task))
    assert not np.array_equal(a.heldout.input_ids, other.heldout.input_ids)


def test_streaming_a_million_examples_holds_no_example_in_memory():
    task = ProbeTaskConfig(length=50)
    assert task.train_size == 1_000_000
    data = ProbeData(task, vocab_for(task))
    late = data.train_batch(step=15_000, batch_size=64)  # deep into the first epoch
    assert late.input_ids.shape == (64, 52)
    assert len(data._heldout_keys) == task.heldout_size  # only held-out keys are stored


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"length": 0}, "length"),
        ({"length": 8, "pool_size": 4}, "pool_size"),
        ({"length": 8, "n_train": 100}, "n_train"),
        ({"length": 8, "n_heldout": 12}, "n_heldout"),
        ({"length": 2, "pool_size": 2, "n_heldout": 4}, "n_heldout"),
        ({"target_offset": -1}, "target_offset"),
    ],
)
def test_invalid_task_configs_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as e:
        ProbeTaskConfig(**kwargs)
    assert e.value.field == field


def test_vocab_targets_must_fit_the_backbone_vocabulary():
    with pytest.raises(ConfigError, match="target_offset"):
        ProbeVocab.for_task(ProbeTaskConfig(length=8, target_offset=95), base_vocab_size=100)


def test_num_sequences_counts_every_distinct_example():
    import itertools

    from vlab.probes.tasks import num_sequences

    pool, length = 5, 3
    brute = {(ctx, q) for ctx in itertools.permutations(range(pool), length) for q in ctx}
    assert num_sequences(pool, length) == len(brute) == 180
