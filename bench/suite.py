"""Every ``vlab bench`` measurement in one call, as one JSON-ready dict.

Training speed, the scan backends, the forward pass's scaling and memory
(:mod:`vlab.models.bench`), decoding speed against visual tokens
(:mod:`vlab.models.bench_decode`, which builds on the first's timer) and the probe protocol's
step before and after vlab's CPU shortcuts (:mod:`vlab.bench.protocol`): this module composes
them, so none imports another's caller.
"""

from __future__ import annotations

import torch

from vlab.bench.protocol import bench_protocol
from vlab.models.bench import (
    ARCHS,
    BASELINE,
    SCAN_ARCH,
    BenchPlan,
    bench_backends,
    bench_forward,
    bench_scan,
    bench_train,
)
from vlab.models.bench_decode import bench_decode
from vlab.models.ops.selective_scan import install_into_transformers


def run_bench(plan: BenchPlan, device: torch.device, log=print) -> dict:
    """All measurements, as one JSON-ready dict. ``plan`` records the arms' presets and
    checkpoint directories as asked, ``arms`` each arm's source with the width, depth and
    parameters of the model the training measurement timed (the other sections build the same
    sources), so a JSON says which models its numbers are about."""
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
    result.update(bench_decode(plan, device, log))
    result.update(bench_protocol(plan, device, log))
    if plan.backends:
        result.update(bench_backends(plan, device, log))
    by = {(r["arch"], r["length"]): r["tokens_per_s"] for r in result["train"]}
    # The keys keep the names older readers know; their arms come from the family records
    # (``vs_pythia_*``: ratios against BASELINE; ``mamba_vs_pythia_train``: SCAN_ARCH's).
    result["vs_pythia_train"] = {
        arch: {
            str(length): by[(arch, length)] / by[(BASELINE, length)]
            for length in plan.train_lengths
        }
        for arch in ARCHS
        if arch != BASELINE
    }
    result["mamba_vs_pythia_train"] = result["vs_pythia_train"][SCAN_ARCH]
    return result
