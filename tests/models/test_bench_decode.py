"""``vlab bench``'s decoding section: exact token counts, a cache that is really used, and cache
bytes equal to each family's formula. Known answers only: speed is never asserted."""

import pytest
import torch

from tests.models.test_state import expected
from vlab.errors import ConfigError
from vlab.models.backbones import hf_config
from vlab.models.bench import ARCHS, BenchPlan
from vlab.models.bench_decode import bench_decode, build_decoder, cached_generation, decode_prompt

CPU = torch.device("cpu")


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_generation_gives_exactly_the_requested_tokens_and_the_uncached_logits(arch):
    vlm = build_decoder(arch, "tiny", CPU)
    prompt = decode_prompt(vlm, visual_tokens=8, text_tokens=3)
    assert prompt.shape == (1, 11, vlm.lm.get_input_embeddings().weight.shape[1])
    got = cached_generation(vlm, prompt, new_tokens=7)
    assert len(got.tokens) == 7 and got.prefill > 0 and got.decode > 0
    # the definition: re-run the whole sequence (prompt, then the tokens fed so far) uncached
    table = vlm.lm.get_input_embeddings()
    fed = torch.tensor([got.tokens[:-1]])
    with torch.no_grad():
        logits = vlm.lm(inputs_embeds=torch.cat([prompt, table(fed)], 1)).logits[0]
    assert logits[prompt.shape[1] - 1 :].argmax(-1).tolist() == got.tokens
    torch.testing.assert_close(got.last_logits, logits[-1], atol=1e-4, rtol=1e-4)


def test_generation_does_not_stop_at_eos():
    vlm = build_decoder("mamba2", "tiny", CPU)
    prompt = decode_prompt(vlm, visual_tokens=4, text_tokens=2)
    first = cached_generation(vlm, prompt, new_tokens=2).tokens[0]
    vlm.lm.config.eos_token_id = first  # the greedy answer's first token is now the EOS
    assert len(cached_generation(vlm, prompt, new_tokens=5).tokens) == 5


def cache_bytes(arch: str, tokens: int) -> int:
    """fp32 bytes of ``tests.models.test_state.expected``: each family's formula."""
    return 4 * sum(expected(arch, tokens).values())


def test_bench_decode_covers_every_arm_and_n_with_each_familys_cache_bytes():
    threads = torch.get_num_threads()
    plan = BenchPlan(
        repeats=1, decode_visual_tokens=(0, 8, 24), decode_new_tokens=4, decode_text_tokens=3
    )
    result = bench_decode(plan, CPU, log=lambda *_: None)
    assert torch.get_num_threads() == threads  # restored after decoding on one thread
    assert result["decode_threads"] == 1
    rows = {(r["arch"], r["visual_tokens"]): r for r in result["decode"]}
    assert set(rows) == {(a, n) for a in ARCHS for n in (0, 8, 24)}
    for (arch, n), row in rows.items():
        assert row["prompt_tokens"] == n + 3
        assert row["generated_tokens"] == row["new_tokens"] == 4
        assert row["cache_bytes_prompt"] == cache_bytes(arch, n + 3)
        # the last token is never fed: the cache ends at prompt + new - 1 positions
        assert row["cache_bytes_end"] == cache_bytes(arch, n + 3 + 3)
        assert row["cache_elements_end"]["total"] * 4 == row["cache_bytes_end"]
        assert row["decode_tokens_per_s"] > 0 and row["tokens_per_s"] > 0
        assert row["total_seconds"] >= row["prefill_seconds"]
    # what the formula means: per visual token, Pythia adds keys and values of every layer,
    # the hybrid of its attention layers only; Mamba and Mamba-2 hold the same state at any N
    growth = {
        a: (rows[(a, 24)]["cache_bytes_end"] - rows[(a, 8)]["cache_bytes_end"]) / 16 for a in ARCHS
    }
    pythia, hybrid = hf_config("pythia", "tiny"), hf_config("hybrid", "tiny")
    assert growth["pythia"] == 4 * 2 * pythia.num_hidden_layers * pythia.hidden_size
    assert growth["hybrid"] == 4 * 2 * len(hybrid.attention_layers) * hybrid.hidden_size
    assert growth["mamba"] == growth["mamba2"] == 0
    for key in ("vs_pythia_decode", "vs_pythia_generate"):
        assert set(result[key]) == {"mamba", "mamba2", "hybrid"}
        assert all(set(by_n) == {"0", "8", "24"} for by_n in result[key].values())


@pytest.mark.parametrize(
    "field, value",
    [("decode_visual_tokens", ()), ("decode_new_tokens", 1), ("decode_text_tokens", 0)],
)
def test_bench_plan_refuses_decoding_it_cannot_time(field, value):
    with pytest.raises(ConfigError, match=field):
        BenchPlan(**{field: value})


def test_bench_decode_decodes_each_arms_own_model(tmp_path):
    from tests.models.test_bench import save_checkpoint

    base = ARCHS[0]
    directory = save_checkpoint(tmp_path / "ckpt", base, dtype=torch.float16, hidden_size=40)
    plan = BenchPlan(
        repeats=1,
        pretrained={base: directory},
        decode_visual_tokens=(2,),
        decode_new_tokens=2,
        decode_text_tokens=1,
    )
    rows = {r["arch"]: r for r in bench_decode(plan, CPU, log=lambda *_: None)["decode"]}
    assert rows[base]["hidden_size"] == 40  # the checkpoint's width, not the tiny preset's
    for arch in ARCHS[1:]:
        assert rows[arch]["hidden_size"] == hf_config(arch, "tiny").hidden_size
    # decoded in fp32 like the presets, though saved in half precision
    vlm = build_decoder(base, "tiny", CPU, pretrained=directory)
    assert vlm.lm.config.hidden_size == 40
    assert {p.dtype for p in vlm.parameters()} == {torch.float32}
