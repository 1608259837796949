"""``vlab bench --inspect``: what ``vlab inspect`` costs, per analysis, arm, length and
vocabulary, measured side by side in one process.

Each analysis (``logit_lens``, ``attention``, ``state_probe``, ``patching``) runs on random
models of the plan's preset (Pythia and Mamba by default; weights do not change the cost) on
the same held-out probe examples, at each context length L (T = L + 2 positions) and each
vocabulary size (the preset's own and a Pythia-sized 50k, the unembedding rows being what a
real LM adds): wall seconds of one run, and its peak memory (the CUDA allocator's on GPU, the
sampled resident set size on CPU: :class:`~vlab.models.bench.PeakMemory`) beside the
estimate :mod:`vlab.analysis.inside.budget` plans batches with. Growth is summarised per
(arch, analysis) as the exponent of seconds in L fitted on a log-log scale
(:func:`~vlab.models.bench.fit_exponent` over every length) and as the ratio of seconds and
peak at the largest vocabulary to the smallest.

Performance is never asserted in tests; this measures and reports it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from vlab.analysis.inside.budget import DEFAULT_BATCH, model_dims, peak_bytes
from vlab.errors import ConfigError
from vlab.models.backbones import PRESETS, BackboneConfig, add_tokens, build_backbone
from vlab.models.bench import PeakMemory, fit_exponent, release
from vlab.probes.examples import heldout_examples
from vlab.probes.tasks import ProbeTaskConfig, ProbeVocab

ANALYSES = ("logit_lens", "attention", "state_probe", "patching")
MB = 2**20


@dataclass(frozen=True)
class InspectBenchPlan:
    """What ``vlab bench --inspect`` measures: ``archs`` at ``preset``, every context length
    of ``lengths`` and vocabulary of ``vocabs`` (None: the preset's own), ``examples``
    held-out examples per analysis, each analysis at its default batch. ``patching`` (T
    patched passes of T positions per site and example: cubic in L) runs only up to
    ``patching_max_length``; its seconds grow linearly with the examples, so a few tell the
    cost of many."""

    preset: str = "small"
    archs: tuple[str, ...] = ("pythia", "mamba")
    lengths: tuple[int, ...] = (8, 16, 32)
    vocabs: tuple[int | None, ...] = (None, 50_000)
    examples: int = 4
    analyses: tuple[str, ...] = ANALYSES
    patching_max_length: int = 16

    def __post_init__(self) -> None:
        for arch in self.archs:
            if arch not in PRESETS:
                raise ConfigError("archs", f"{arch!r} is not an arm ({', '.join(PRESETS)})")
            if self.preset not in PRESETS[arch]:
                known = ", ".join(PRESETS[arch])
                raise ConfigError("--preset", f"{arch} has no preset {self.preset!r} ({known})")
        unknown = [a for a in self.analyses if a not in ANALYSES]
        if unknown:
            raise ConfigError("analyses", f"unknown analysis {unknown[0]!r}")
        if not self.lengths or min(self.lengths) < 2:
            raise ConfigError("lengths", f"context lengths must be >= 2, got {self.lengths}")
        if any(v is not None and v < 2 for v in self.vocabs):
            raise ConfigError("vocabs", f"vocabularies must be >= 2 rows, got {self.vocabs}")
        if self.examples < 4:  # the state probe's held-out split needs four
            raise ConfigError("examples", f"must be >= 4, got {self.examples}")

    @classmethod
    def quick(cls, preset: str | None = None) -> InspectBenchPlan:
        """Seconds on a CPU: the tiny preset, two short lengths, 4 examples."""
        return cls(
            preset=preset or "tiny",
            lengths=(4, 6),
            vocabs=(None, 4096),
            examples=4,
            patching_max_length=6,
        )


def _setup(arch: str, preset: str, length: int, vocab_size: int | None, examples: int):
    """A random model of ``arch`` at ``preset`` (its vocabulary ``vocab_size`` rows when
    given), the probe's tokens added, and ``examples`` held-out examples of length L."""
    overrides = {} if vocab_size is None else {"vocab_size": vocab_size}
    cfg = BackboneConfig(arch=arch, preset=preset, overrides=overrides)
    model = build_backbone(cfg, seed=0)
    base = model.get_input_embeddings().weight.shape[0]
    task = ProbeTaskConfig(length=length, n_train=2 * length, n_heldout=max(examples, length))
    vocab = ProbeVocab.for_task(task, base_vocab_size=base)
    add_tokens(model, len(vocab.new_token_names), cfg)
    return model.eval(), vocab, heldout_examples(task, vocab, examples)


def _call(analysis: str, model, examples, vocab) -> None:
    from vlab.analysis.inside.inspection import analysis_function

    function = analysis_function(analysis)
    with torch.no_grad():
        if analysis == "patching":
            function(model, examples, vocab)
        else:
            function(model, examples)


def bench_inspect(plan: InspectBenchPlan, device: torch.device, log=print) -> dict:
    """Every (arch, L, vocabulary, analysis) of ``plan`` on ``device``: JSON-ready rows and
    the growth summary (module docstring)."""
    rows = []
    warm: set[tuple[str, str]] = set()
    for arch in plan.archs:
        for vocab_size in plan.vocabs:
            for length in plan.lengths:
                model, vocab, examples = _setup(
                    arch, plan.preset, length, vocab_size, plan.examples
                )
                model.to(device)
                dims = model_dims(model)
                tokens = examples.input_ids.shape[1]
                for analysis in plan.analyses:
                    if analysis == "patching" and length > plan.patching_max_length:
                        continue
                    if (arch, analysis) not in warm:  # lazy imports, first allocations
                        _call(analysis, model, examples, vocab)
                        warm.add((arch, analysis))
                    with PeakMemory(device) as memory:
                        start = time.perf_counter()
                        _call(analysis, model, examples, vocab)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        seconds = time.perf_counter() - start
                    batch = DEFAULT_BATCH[analysis]
                    estimate = peak_bytes(dims, analysis, tokens, len(examples), batch)
                    row = {
                        "arch": arch,
                        "preset": plan.preset,
                        "analysis": analysis,
                        "length": length,
                        "tokens": tokens,
                        "vocab": dims.vocab,
                        "base_vocab": vocab.base_vocab_size,
                        "examples": len(examples),
                        "batch": batch,
                        "seconds": seconds,
                        "peak_mb": memory.peak_mb,
                        "estimate_mb": (estimate - dims.weights) / MB,
                    }
                    rows.append(row)
                    peak = "" if memory.peak_mb is None else f", peak {memory.peak_mb:.0f} MB"
                    log(
                        f"inspect {arch} L={length} V={dims.vocab} {analysis}: "
                        f"{seconds:.2f} s{peak} (estimate {row['estimate_mb']:.0f} MB)"
                    )
                del model
                release(device)
    return {"inspect": rows, **_growth(plan, rows)}


def _growth(plan: InspectBenchPlan, rows: list[dict]) -> dict:
    """Per arch and analysis: the exponent of seconds in L (at the smallest vocabulary) and
    the ratios of seconds and peak memory at the largest vocabulary to the smallest (at the
    longest L). Vocabularies are told apart by their size before the probe's tokens
    (``base_vocab``; ``vocab`` counts those too, which grow with L)."""
    exponent: dict[str, dict[str, float]] = {}
    vocab_ratio: dict[str, dict[str, dict[str, float | None]]] = {}
    for arch in plan.archs:
        for analysis in plan.analyses:
            mine = [r for r in rows if r["arch"] == arch and r["analysis"] == analysis]
            vocabs = sorted({r["base_vocab"] for r in mine})
            small = [r for r in mine if r["base_vocab"] == vocabs[0]]
            small.sort(key=lambda r: r["length"])
            if len(small) > 1:
                lengths = [r["length"] for r in small]
                seconds = [r["seconds"] for r in small]
                exponent.setdefault(arch, {})[analysis] = fit_exponent(lengths, seconds, 0)
            if len(vocabs) > 1:
                longest = max(r["length"] for r in mine)
                at = {r["base_vocab"]: r for r in mine if r["length"] == longest}
                low, high = at[vocabs[0]], at[vocabs[-1]]
                peaks = (low["peak_mb"], high["peak_mb"])
                vocab_ratio.setdefault(arch, {})[analysis] = {
                    "seconds": high["seconds"] / low["seconds"],
                    "peak": peaks[1] / peaks[0] if None not in peaks and peaks[0] > 0 else None,
                }
    return {
        "inspect_plan": dataclasses.asdict(plan),
        "inspect_length_exponent": exponent,
        "inspect_vocab_ratio": vocab_ratio,
    }
