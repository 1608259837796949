"""``vlab bench``: Mamba vs Pythia speed, measured side by side in one process.

Three measurements, each alternating the contenders so that load from other processes hits
them alike, keeping the best of several repeats:

* training throughput (forward + backward + AdamW) of the two tiny presets at matched
  parameter counts, on probe-shaped batches (batch 64, L context tokens + 2), and of Mamba
  with the reference scan (what users would get without the fast scan);
* the selective scan alone, fast path vs Hugging Face's reference loop;
* forward-only cost over sequence length (256 to 16,384 tokens) with the growth exponent
  fitted on a log-log scale over the points >= 1k tokens (attention's quadratic term shows up
  for Pythia; Mamba's scan is linear), and the peak memory of each forward.

Performance is never asserted in tests; this command measures and reports it.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vlab.models.backbones import BackboneConfig, build_backbone, count_parameters, hf_config
from vlab.models.ops.selective_scan import install_into_transformers, scan_backend, use_scan_backend

ARCHS = ("pythia", "mamba")


@dataclass(frozen=True)
class BenchPlan:
    """What to measure. ``quick`` fits in a few minutes on 2 CPU cores."""

    train_lengths: tuple[int, ...] = (50, 100, 200)
    batch: int = 64
    repeats: int = 3
    reference_length: int = 200
    forward_tokens: tuple[int, ...] = (256, 1024, 2048, 4096, 8192, 16384)
    preset: str = "tiny"

    @classmethod
    def quick(cls) -> BenchPlan:
        return cls(
            train_lengths=(50, 200),
            repeats=2,
            reference_length=50,
            forward_tokens=(256, 1024, 2048, 4096),
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(
    steps: dict[str, Callable[[], None]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Fastest wall seconds of each step, timed in alternation after one warm-up each."""
    for step in steps.values():
        step()
    _sync(device)
    best = dict.fromkeys(steps, math.inf)
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _model(arch: str, preset: str, device: torch.device) -> torch.nn.Module:
    return build_backbone(BackboneConfig(arch=arch, preset=preset), seed=0).to(device)


def _train_step(
    model: torch.nn.Module, batch: int, seq: int, device: torch.device
) -> Callable[[], None]:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()

    return step


def bench_train(plan: BenchPlan, device: torch.device, log=print) -> dict:
    """Training tokens/s per arch and length, and Mamba with the reference scan."""
    models = {a: _model(a, plan.preset, device) for a in ARCHS}
    params = {a: count_parameters(m) for a, m in models.items()}
    rows = []
    for length in plan.train_lengths:
        seq = length + 2
        steps = {a: _train_step(m, plan.batch, seq, device) for a, m in models.items()}
        best = _best(steps, plan.repeats, device)
        for arch in ARCHS:
            tps = plan.batch * seq / best[arch]
            rows.append(
                {
                    "arch": arch,
                    "length": length,
                    "batch": plan.batch,
                    "params": params[arch]["non_embedding"],
                    "params_total": params[arch]["total"],
                    "tokens_per_s": tps,
                    "scan": scan_backend(device.type) if arch == "mamba" else None,
                }
            )
            log(f"train  {arch:7s} L={length:4d} batch {plan.batch}: {tps:10.0f} tokens/s")
    seq = plan.reference_length + 2
    with use_scan_backend("reference"):
        ref = _best({"mamba": _train_step(models["mamba"], plan.batch, seq, device)}, 1, device)
    ref_tps = plan.batch * seq / ref["mamba"]
    fast = next(
        (
            r["tokens_per_s"]
            for r in rows
            if r["arch"] == "mamba" and r["length"] == plan.reference_length
        ),
        None,
    )
    if fast is None:
        step = {"mamba": _train_step(models["mamba"], plan.batch, seq, device)}
        fast = plan.batch * seq / _best(step, plan.repeats, device)["mamba"]
    log(
        f"train  mamba   L={plan.reference_length:4d} with the reference scan: "
        f"{ref_tps:10.0f} tokens/s ({fast / ref_tps:.1f}x slower than the fast scan)"
    )
    return {
        "train": rows,
        "mamba_reference_train": {"length": plan.reference_length, "tokens_per_s": ref_tps},
        "train_speedup_vs_reference": fast / ref_tps,
    }


def bench_scan(plan: BenchPlan, device: torch.device, log=print) -> dict:
    """Forward + backward of one tiny-Mamba-shaped scan: fast path vs the reference loop."""
    from vlab.models.ops.selective_scan import selective_scan
    from vlab.models.scan_speed import _scan_inputs

    dim = hf_config("mamba", plan.preset).intermediate_size  # the preset's d_inner
    inputs = [
        t.detach().to(device).requires_grad_()
        for t in _scan_inputs(plan.batch, dim, 16, plan.reference_length)
    ]

    def run(backend: str) -> Callable[[], None]:
        def step() -> None:
            u, delta, A, B, C, D, z, bias = inputs
            with use_scan_backend(backend):
                out = selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True)
            out.sum().backward()

        return step

    fast_backend = scan_backend(device.type)
    best = _best({"fast": run(fast_backend)}, plan.repeats, device)
    start = time.perf_counter()
    run("reference")()
    _sync(device)
    ref = time.perf_counter() - start
    log(
        f"scan   fwd+bwd batch {plan.batch} dim {dim} L={plan.reference_length}: "
        f"{fast_backend} {best['fast']:.4f}s, reference {ref:.3f}s ({ref / best['fast']:.0f}x)"
    )
    return {
        "scan_speedup_vs_reference": ref / best["fast"],
        "scan_backend": fast_backend,
        "scan": {
            "batch": plan.batch,
            "dim": dim,
            "length": plan.reference_length,
            "fast_seconds": best["fast"],
            "reference_seconds": ref,
        },
    }


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so the next block's allocations show
    up in the resident set size instead of reusing cached pages."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak extra memory of a block, in MB: the CUDA allocator's peak on GPU; on CPU the
    resident set size sampled every millisecond by a thread, minus its value at the start
    after trimming the heap (torch's CPU allocations are invisible to tracemalloc, and VmHWM
    cannot be reset). Approximate on CPU: blocks shorter than the sampling period may read 0."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        _trim_heap()
        self._base = _rss_mb()
        self._max = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            rss = _rss_mb()
            if rss is not None and self._max is not None:
                self._max = max(self._max, rss)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return
        self._stop.set()
        self._thread.join()
        if self._base is not None and self._max is not None:
            self.peak_mb = self._max - self._base


def fit_exponent(tokens: list[int], seconds: list[float], min_tokens: int = 1024) -> float:
    """Slope of log(seconds) against log(tokens) over the points with >= ``min_tokens``."""
    pts = [(t, s) for t, s in zip(tokens, seconds, strict=True) if t >= min_tokens]
    if len(pts) < 2:
        pts = list(zip(tokens, seconds, strict=True))
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def bench_forward(plan: BenchPlan, device: torch.device, log=print) -> dict:
    """Forward-only seconds and peak memory of one sequence per length, both arms."""
    models = {a: _model(a, plan.preset, device).eval() for a in ARCHS}
    rows = []
    for tokens in plan.forward_tokens:
        ids = torch.randint(0, 200, (1, tokens), generator=torch.Generator().manual_seed(0))
        ids = ids.to(device)
        for arch, model in models.items():

            def step(model=model, ids=ids) -> None:
                with torch.no_grad():
                    model(input_ids=ids, logits_to_keep=1)

            with PeakMemory(device) as mem:  # first call: the allocator has nothing cached
                step()
            peak = mem.peak_mb
            seconds = _best({arch: step}, max(1, plan.repeats - 1), device)[arch]
            rows.append({"arch": arch, "tokens": tokens, "seconds": seconds, "peak_mb": peak})
            log(
                f"forward {arch:7s} {tokens:6d} tokens: {seconds:8.4f}s"
                + (f", peak {peak:.0f} MB" if peak is not None else "")
            )
    exponents = {
        a: fit_exponent(
            [r["tokens"] for r in rows if r["arch"] == a],
            [r["seconds"] for r in rows if r["arch"] == a],
        )
        for a in ARCHS
    }
    log(
        "forward cost ~ tokens^k, k fitted over >= 1k tokens: "
        + ", ".join(f"{a} {k:.2f}" for a, k in exponents.items())
    )
    return {"forward": rows, "forward_exponent": exponents}


def run_bench(plan: BenchPlan, device: torch.device, log=print) -> dict:
    """All measurements, as one JSON-ready dict."""
    install_into_transformers()
    torch.manual_seed(0)
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "plan": plan.__dict__.copy(),
    }
    result.update(bench_train(plan, device, log))
    result.update(bench_scan(plan, device, log))
    result.update(bench_forward(plan, device, log))
    by = {(r["arch"], r["length"]): r["tokens_per_s"] for r in result["train"]}
    result["mamba_vs_pythia_train"] = {
        str(length): by[("mamba", length)] / by[("pythia", length)] for length in plan.train_lengths
    }
    return result
