"""``vlab bench`` decoding speed: generation tokens/s against the visual tokens in the prompt.

MambaVLM's Table 4 question: how fast does each LM arm generate an answer once an image of N
visual tokens (144 for a 12 x 12 grid, 576 for CLIP-L/14 at 336 px, 1458 for MambaVLM's two
27 x 27 maps) sits in its prompt? An attention LM's cached step reads keys and values of all
N + t earlier tokens and its cache grows with N; a Mamba layer's step reads a fixed-size state.

What is timed, per arm (the arm's model of the plan, ``BenchPlan.backbone``: the tiny presets by
default, matched in non-embedding parameters; any preset of its family, e.g. the papers'
sizes on a GPU; or a local checkpoint) and per N, with batch 1 in fp32 (no autocast; a
checkpoint saved in half precision is cast up), on CPU with ``plan.decode_threads`` torch
threads (one by default, see ``BenchPlan``):

* **prefill**: a fresh decoding cache (``VLM.new_cache``), one cached forward over the prompt
  (N visual tokens, then ``decode_text_tokens`` text tokens: image first, as in vlab's default
  ``task_agnostic`` ordering; a real layout's few image markers count as text here), and the
  first token read off its last logits;
* **decode**: ``new_tokens - 1`` one-token cached steps, each feeding the previous greedy
  token back, so the answer is exactly ``new_tokens`` tokens, counted as ``greedy_tokens``
  and transformers' ``generate`` count ``max_new_tokens``. There is no EOS check: a
  random-init model would stop at an arbitrary step, and two trained arms at different ones,
  so every arm generates every token;
* **total**: prefill + decode of the same run.

Every step is exactly the call :func:`vlab.models.vlm.generate.greedy_tokens` makes:
``VLM.forward`` with a one-token id, no patch slot, the grown attention mask, the next position
and the cache, followed by an argmax and a host read of the token (which also synchronises a
GPU every step, as the real loop does). The prefill is the one place that leaves
``VLM.forward``: its ``embed`` would run the vision encoder and connector inside the timed call,
a cost identical for every arm that would dilute the LM ratios (and at the papers' N it is an
EVA-02-L or SigLIP + DINOv2 tower, larger than a small LM's prefill); and a VLM's N is fixed
by its encoder grid (squares, or twice a square through MambaVLM's two-map connector, which
runs Mamba blocks of its own), whereas here any N is a plan entry. So the visual tokens come
from the VLM's real MLP connector applied once, untimed, to N random patch features, and the
LM reads ``[visual tokens; text embeddings]`` as ``inputs_embeds`` with the keyword arguments
``VLM.forward`` would pass it (mask; positions for attention arms; the cache under the model's
own cache keyword). None of these models' costs depend on the values they read.

Repeats alternate the arms (``bench.best_times``: one untimed warm-up run each, then
``repeats`` rounds) and keep the best prefill, the best decode and the best total separately
(so best prefill + best decode may be less than the best total).

Cache size: elements held per sequence after the prompt and at the end of decoding
(``prompt + new_tokens - 1`` positions: the last token is never fed), counted by
:func:`vlab.models.backbones.state.state_size` on transformers' own cache, times the element
size (4 bytes in fp32). Pythia's keys and values grow linearly with N, Mamba's and Mamba-2's
conv and SSM states do not, the hybrid's grow through its attention layers only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from vlab.models.backbones import (
    BackboneConfig,
    cache_argument,
    count_parameters,
    is_recurrent,
)
from vlab.models.backbones.state import state_size
from vlab.models.bench import ARCHS, BASELINE, best_times
from vlab.models.vlm.model import VLM, build_vlm
from vlab.models.vlm.parts import VLMConfig

if TYPE_CHECKING:
    from vlab.models.bench import BenchPlan


class Generation(NamedTuple):
    """One timed generation: wall seconds of the prefill (new cache, prompt forward, first
    token) and of the decode steps, the greedy token ids generated (``new_tokens`` of them),
    and the logits (V,) the last token was read off, which a full uncached forward over the
    prompt and ``tokens[:-1]`` must reproduce (a cache the model silently ignored would decode
    fast and wrong)."""

    prefill: float
    decode: float
    tokens: list[int]
    last_logits: torch.Tensor


def build_decoder(
    arch: str, preset: str, device: torch.device, pretrained: str | None = None
) -> VLM:
    """A VLM (the class ``vlab vlm`` trains and decodes with) whose LM is ``arch``'s ``preset``
    (or the checkpoint in the local directory ``pretrained``), with the tiny patch encoder and
    an MLP connector, seeded, in fp32 and eval mode on ``device``."""
    cfg = VLMConfig(lm=BackboneConfig(arch=arch, preset=preset, pretrained=pretrained))
    return build_vlm(cfg, seed=0).to(device=device, dtype=torch.float32).eval()


@torch.no_grad()
def decode_prompt(vlm: VLM, visual_tokens: int, text_tokens: int, seed: int = 0) -> torch.Tensor:
    """Prompt embeddings (1, visual_tokens + text_tokens, D_lm): the VLM's connector applied to
    ``visual_tokens`` random patch features (1, N, D_vision), then the LM's embeddings of
    ``text_tokens`` random token ids; on the VLM's device and in its LM's dtype."""
    device = next(vlm.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(1, visual_tokens, vlm.encoders[0].width, generator=gen)
    table = vlm.lm.get_input_embeddings()
    ids = torch.randint(0, table.weight.shape[0], (1, text_tokens), generator=gen)
    text = table(ids.to(device))
    visual = vlm.projector(features.to(device)).to(text.dtype)
    return torch.cat([visual, text], dim=1)


@torch.no_grad()
def cached_generation(vlm: VLM, prompt: torch.Tensor, new_tokens: int) -> Generation:
    """Greedy-decode exactly ``new_tokens`` tokens after ``prompt`` (1, P, D_lm), timed.

    The prefill gives the LM the prompt as ``inputs_embeds`` with what ``VLM.forward`` would
    add (attention mask (1, P); position ids 0..P-1 for attention arms only; the cache under
    the LM's cache keyword); each further token is one ``VLM.forward`` step as
    ``greedy_tokens`` makes it (see the module docstring).
    """
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    lm, device, length = vlm.lm, prompt.device, prompt.shape[1]
    start = time.perf_counter()
    cache = vlm.new_cache()
    mask = torch.ones((1, length), dtype=torch.long, device=device)
    positions = torch.arange(length, device=device).unsqueeze(0)
    kwargs = {"attention_mask": mask, cache_argument(lm): cache, "use_cache": True}
    if not is_recurrent(lm):
        kwargs["position_ids"] = positions
    logits = lm(inputs_embeds=prompt, **kwargs).logits
    nxt = logits[:, -1].argmax(-1)
    tokens = [int(nxt)]
    prefilled = time.perf_counter()
    no_patch = torch.full((1, 1), -1, dtype=torch.long, device=device)
    step_pos = positions[:, -1:]
    for _ in range(new_tokens - 1):
        mask = torch.cat([mask, torch.ones_like(no_patch)], 1)
        step_pos = step_pos + 1
        logits = vlm(
            nxt.unsqueeze(1), no_patch, [], attention_mask=mask, cache=cache, position_ids=step_pos
        )["logits"]
        nxt = logits[:, -1].argmax(-1)
        tokens.append(int(nxt))
    return Generation(prefilled - start, time.perf_counter() - prefilled, tokens, logits[0, -1])


def cache_bytes(lm: torch.nn.Module, tokens: int) -> tuple[int, dict[str, int]]:
    """Bytes of the decoding cache of one sequence after ``tokens`` positions, and its element
    counts by kind (``state_size``'s keys), at the size of the LM's parameter elements."""
    sizes = state_size(lm, tokens)
    return sizes["total"] * next(lm.parameters()).element_size(), sizes


def _recording(
    vlm: VLM, prompt: torch.Tensor, new_tokens: int, runs: list[Generation]
) -> Callable[[], None]:
    """A ``best_times`` step: one generation, appended to ``runs``."""

    def step() -> None:
        runs.append(cached_generation(vlm, prompt, new_tokens))

    return step


def bench_decode(plan: BenchPlan, device: torch.device, log=print) -> dict:
    """Prefill seconds, decode tokens/s and cache bytes of every arm at each N of
    ``plan.decode_visual_tokens``, and each arm's decode and whole-generation tokens/s as a
    ratio of Pythia's at the same N (``vs_pythia_decode``, ``vs_pythia_generate``). On CPU,
    torch runs ``plan.decode_threads`` threads meanwhile (recorded as ``decode_threads``)."""
    threads = torch.get_num_threads()
    decode_threads = threads
    if device.type == "cpu" and plan.decode_threads is not None:
        decode_threads = plan.decode_threads
    torch.set_num_threads(decode_threads)
    try:
        result = _bench_decode(plan, device, log)
    finally:
        torch.set_num_threads(threads)
    return {**result, "decode_threads": decode_threads}


def _bench_decode(plan: BenchPlan, device: torch.device, log) -> dict:
    n_new, n_text = plan.decode_new_tokens, plan.decode_text_tokens
    lms = {a: plan.backbone(a) for a in ARCHS}
    vlms = {a: build_decoder(a, c.preset, device, c.pretrained) for a, c in lms.items()}
    params = {a: count_parameters(v.lm)["non_embedding"] for a, v in vlms.items()}
    rows = []
    for n in plan.decode_visual_tokens:
        prompts = {a: decode_prompt(v, n, n_text) for a, v in vlms.items()}
        runs: dict[str, list[Generation]] = {a: [] for a in ARCHS}
        steps = {a: _recording(vlms[a], prompts[a], n_new, runs[a]) for a in ARCHS}
        best_times(steps, plan.repeats, device)
        for arch in ARCHS:
            timed = runs[arch][1:] if plan.repeats > 1 else runs[arch]  # [0]: the warm-up
            prefill = min(r.prefill for r in timed)
            decode = min(r.decode for r in timed)
            total = min(r.prefill + r.decode for r in timed)
            length = n + n_text
            prompt_bytes, _ = cache_bytes(vlms[arch].lm, length)
            end_bytes, end_sizes = cache_bytes(vlms[arch].lm, length + n_new - 1)
            row = {
                "arch": arch,
                "visual_tokens": n,
                "text_tokens": n_text,
                "prompt_tokens": length,
                "new_tokens": n_new,
                "generated_tokens": min(len(r.tokens) for r in runs[arch]),
                "params": params[arch],
                "hidden_size": vlms[arch].lm.config.hidden_size,
                "prefill_seconds": prefill,
                "decode_seconds": decode,
                "decode_tokens_per_s": (n_new - 1) / decode,
                "total_seconds": total,
                "tokens_per_s": n_new / total,
                "cache_bytes_prompt": prompt_bytes,
                "cache_bytes_end": end_bytes,
                "cache_elements_end": end_sizes,
            }
            rows.append(row)
            log(
                f"decode {arch:7s} N={n:5d}: prefill {prefill * 1e3:8.1f} ms, decode "
                f"{row['decode_tokens_per_s']:7.0f} tokens/s, {n_new} tokens in "
                f"{total:6.3f}s, cache {prompt_bytes / 2**10:.0f} -> {end_bytes / 2**10:.0f} KiB"
            )
    by = {(r["arch"], r["visual_tokens"]): r for r in rows}

    def ratios(key: str) -> dict[str, dict[str, float]]:
        return {
            arch: {
                str(n): by[(arch, n)][key] / by[(BASELINE, n)][key]
                for n in plan.decode_visual_tokens
            }
            for arch in ARCHS
            if arch != BASELINE
        }

    return {
        "decode": rows,
        "vs_pythia_decode": ratios("decode_tokens_per_s"),
        "vs_pythia_generate": ratios("tokens_per_s"),
    }
