"""``vlab bench``: print and save the Mamba vs Pythia speed measurements of ``bench.py``."""

from __future__ import annotations

import argparse

from vlab.fileio import atomic_write_json


def _run(args: argparse.Namespace) -> int:
    import torch

    from vlab.models.bench import BenchPlan, run_bench
    from vlab.training.engine import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = BenchPlan.quick(args.backends) if args.quick else BenchPlan(backends=args.backends)
    result = run_bench(plan, resolve_device(args.device))
    for arch, by_length in result["vs_pythia_train"].items():
        ratios = ", ".join(f"L={k}: {v:.2f}x" for k, v in by_length.items())
        print(f"{NAMES.get(arch, arch)} / Pythia training tokens/s: {ratios}")
    print(
        f"fast scan vs reference: {result['scan_speedup_vs_reference']:.0f}x (scan alone), "
        f"{result['train_speedup_vs_reference']:.0f}x (Mamba training)"
    )
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


NAMES = {"mamba": "Mamba", "mamba2": "Mamba-2", "hybrid": "Hybrid"}


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="Mamba vs Pythia speed: training, scan, forward scaling (writes JSON)",
        description="Measure side by side in one process: training tokens/s of the tiny "
        "presets at L in {50, 100, 200}, the fast selective scan vs the reference loop, and "
        "forward cost from 256 to 16,384 tokens with fitted growth exponents. Every model is a "
        "backbone preset.",
    )
    bench.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores")
    bench.add_argument("--json", help="write the results to this JSON file")
    bench.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    bench.add_argument("--threads", type=int, help="torch CPU threads")
    bench.add_argument(
        "--backends",
        action="store_true",
        help="also time the scan alone on every backend (reference, torch, cpp or mamba_ssm) at "
        "the tiny and small Mamba presets' shapes, wall and CPU seconds (JSON: scan_backends)",
    )
    bench.set_defaults(func=_run)
