"""``vlab bench``: print and save the speed measurements of :mod:`vlab.bench.suite`."""

from __future__ import annotations

import argparse
import dataclasses

from vlab.config import bounded_int
from vlab.fileio import atomic_write_json
from vlab.models.backbones import families, flagged
from vlab.preflight import MAX_THREADS


def _run(args: argparse.Namespace) -> int:
    import torch

    from vlab.bench.suite import run_bench
    from vlab.models.bench import BenchPlan
    from vlab.preflight import check_device, check_output_file
    from vlab.training.engine import resolve_device

    plan = BenchPlan.quick(args.backends) if args.quick else BenchPlan(backends=args.backends)
    decode = {
        "decode_visual_tokens": args.decode_visual_tokens,
        "decode_new_tokens": args.decode_new_tokens,
    }
    plan = dataclasses.replace(plan, **{k: v for k, v in decode.items() if v is not None})
    check_device(args.device, "--device")  # every check before minutes of measuring
    if args.json:
        check_output_file(args.json, "--json")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = run_bench(plan, resolve_device(args.device))
    base = flagged("baseline").name
    # the JSON keys name the baseline as they always have (older readers read them)
    for arch, by_length in result["vs_pythia_train"].items():
        ratios = ", ".join(f"L={k}: {v:.2f}x" for k, v in by_length.items())
        print(f"{NAMES.get(arch, arch)} / {base} training tokens/s: {ratios}")
    for arch, by_n in result["vs_pythia_decode"].items():
        ratios = ", ".join(f"N={k}: {v:.2f}x" for k, v in by_n.items())
        print(
            f"{NAMES.get(arch, arch)} / {base} decoding tokens/s "
            f"({plan.decode_new_tokens} new tokens after N visual tokens): {ratios}"
        )
    for arch, by_length in result["protocol_speedup"].items():
        ratios = ", ".join(f"L={k}: {v:.2f}x" for k, v in by_length.items())
        print(f"{NAMES.get(arch, arch)} probe protocol step, now vs before: {ratios}")
    print(
        f"fast scan vs reference: {result['scan_speedup_vs_reference']:.0f}x (scan alone), "
        f"{result['train_speedup_vs_reference']:.0f}x ({flagged('scan_comparison').name} "
        "training)"
    )
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


NAMES = {f.arch: f.name for f in families()}  # the family records' display names


def _counts(text: str) -> tuple[int, ...]:
    """``"144,576,1458"`` -> (144, 576, 1458), for ``--decode-visual-tokens``."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated token counts such as 144,576,1458, got {text!r}"
        ) from None
    if min(counts) < 0:
        raise argparse.ArgumentTypeError(f"token counts must be >= 0, got {text!r}")
    return counts


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="Mamba vs Pythia speed: training, scan, forward scaling, decoding (writes JSON)",
        description="Measure side by side in one process: training tokens/s of the tiny "
        "presets at L in {50, 100, 200}, the fast selective scan vs the reference loop, "
        "forward cost from 256 to 16,384 tokens with fitted growth exponents, and cached "
        "greedy decoding of 256 new tokens after 144, 576 and 1458 visual tokens (prefill "
        "seconds, decode tokens/s, cache bytes). Every model is a backbone preset.",
    )
    bench.add_argument("--quick", action="store_true", help="a few minutes on 2 CPU cores")
    bench.add_argument("--json", help="write the results to this JSON file")
    bench.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    bench.add_argument(
        "--threads",
        type=bounded_int(1, MAX_THREADS),
        help=f"torch CPU threads (1 to {MAX_THREADS})",
    )
    bench.add_argument(
        "--backends",
        action="store_true",
        help="also time the scan alone on every backend (reference, torch, cpp or mamba_ssm) at "
        "the tiny and small Mamba presets' shapes, wall and CPU seconds (JSON: scan_backends)",
    )
    bench.add_argument(
        "--decode-visual-tokens",
        type=_counts,
        metavar="N,N,...",
        help="visual tokens in the decoding prompts (default 144,576,1458; --quick: 16,64,256)",
    )
    bench.add_argument(
        "--decode-new-tokens",
        type=int,
        metavar="N",
        help="tokens each arm generates after the prompt (default 256; --quick: 64)",
    )
    bench.set_defaults(func=_run)
