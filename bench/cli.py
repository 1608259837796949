"""``vlab bench``: print and save the speed measurements of :mod:`vlab.bench.suite`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vlab.config import bounded_int
from vlab.errors import ConfigError, VlabError
from vlab.fileio import atomic_write_json
from vlab.models.backbones import PRESETS, families, flagged
from vlab.preflight import MAX_THREADS

MAX_BATCH = 4096  # --batch: far above what a bench needs; a typo would allocate for minutes


def _run(args: argparse.Namespace) -> int:
    import torch

    from vlab.bench.suite import run_bench
    from vlab.models.bench import BenchPlan, check_sources, check_training_memory
    from vlab.preflight import check_device, check_output_file
    from vlab.training.engine import resolve_device

    if args.inspect:
        return _run_inspect(args)
    # every check before minutes of measuring: the arms' sources first (flags, then files)
    preset, presets = _per_arm(args.preset or [], "--preset")
    _, pretrained = _per_arm(args.pretrained or [], "--pretrained")
    pretrained = {arch: str(Path(d).expanduser().absolute()) for arch, d in pretrained.items()}
    check_sources(
        preset or BenchPlan.preset, presets, pretrained, ("--preset", "--preset", "--pretrained")
    )
    plan = BenchPlan.quick(args.backends) if args.quick else BenchPlan(backends=args.backends)
    given = {
        "decode_visual_tokens": args.decode_visual_tokens,
        "decode_new_tokens": args.decode_new_tokens,
        "batch": args.batch,
        "preset": preset,
    }
    plan = dataclasses.replace(
        plan,
        presets=presets,
        pretrained=pretrained,
        **{k: v for k, v in given.items() if v is not None},
    )
    check_device(args.device, "--device")
    if args.json:
        check_output_file(args.json, "--json")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    check_training_memory(plan, device, ("--preset", "--pretrained"))
    try:
        result = run_bench(plan, device)
    except torch.OutOfMemoryError as e:
        said = str(e).strip().splitlines()[0] if str(e).strip() else "out of memory"
        raise VlabError(
            f"{device} ran out of memory while measuring ({said[:160]}); try a smaller "
            "--batch, --preset or --decode-visual-tokens"
        ) from None
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


def _run_inspect(args: argparse.Namespace) -> int:
    """``vlab bench --inspect``: the cost of ``vlab inspect``'s analyses
    (:mod:`vlab.bench.inspect_cost`), printed and written as JSON."""
    import torch

    from vlab.bench.inspect_cost import InspectBenchPlan, bench_inspect
    from vlab.preflight import check_device, check_output_file
    from vlab.training.engine import resolve_device

    preset, presets = _per_arm(args.preset or [], "--preset")
    given = [
        flag
        for flag, value in (
            ("--preset ARCH=SIZE", presets),
            ("--pretrained", args.pretrained),
            ("--backends", args.backends),
            ("--batch", args.batch),
            ("--decode-visual-tokens", args.decode_visual_tokens),
            ("--decode-new-tokens", args.decode_new_tokens),
        )
        if value
    ]
    if given:
        raise VlabError(f"{given[0]} is not for --inspect (it takes --preset SIZE, --quick)")
    plan = InspectBenchPlan.quick(preset) if args.quick else InspectBenchPlan(preset or "small")
    check_device(args.device, "--device")
    if args.json:
        check_output_file(args.json, "--json")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **bench_inspect(plan, device),
    }
    for arch, by_analysis in result["inspect_length_exponent"].items():
        growth = ", ".join(f"{a}: L^{e:.2f}" for a, e in by_analysis.items())
        print(f"{NAMES.get(arch, arch)} inspect seconds vs context length: {growth}")
    for arch, by_analysis in result["inspect_vocab_ratio"].items():
        vocab = max(r["base_vocab"] for r in result["inspect"])
        growth = ", ".join(f"{a}: {r['seconds']:.2f}x" for a, r in by_analysis.items())
        print(f"{NAMES.get(arch, arch)} inspect seconds at V={vocab:,} vs the preset's: {growth}")
    if args.json:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _per_arm(items: list[tuple[str | None, str]], flag: str) -> tuple[str | None, dict[str, str]]:
    """The repeated ``flag`` values (``_arm_value``'s pairs) as (the value for every arm or
    None, {arch: value}); an arm (or every arm) given two different values is refused, since
    which one was meant cannot be told."""
    every: str | None = None
    per_arm: dict[str, str] = {}
    for arch, value in items:
        before = every if arch is None else per_arm.get(arch)
        if before is not None and before != value:
            whom = "every arm" if arch is None else arch
            raise ConfigError(flag, f"{whom} is given both {before} and {value}; give one")
        if arch is None:
            every = value
        else:
            per_arm[arch] = value
    return every, per_arm


def _arm_value(what: str, bare: bool):
    """An argparse ``type=`` for ``ARCH=VALUE`` (``what`` names VALUE in messages; with
    ``bare``, a plain ``VALUE`` is every arm's): (arch or None, value)."""

    def parse(text: str) -> tuple[str | None, str]:
        arch, sep, value = text.partition("=")
        if not sep:
            if bare and text:
                return None, text
            raise argparse.ArgumentTypeError(
                f"expected ARCH={what} with ARCH one of {', '.join(PRESETS)}, got {text!r}"
            )
        if arch not in PRESETS:
            raise argparse.ArgumentTypeError(
                f"{arch!r} in {text!r} is not an arm ({', '.join(PRESETS)})"
            )
        if not value:
            raise argparse.ArgumentTypeError(f"{text!r} gives {arch} no value")
        return arch, value

    return parse


def _shared() -> list[str]:
    """Preset names every arm has (``vlab.models.bench.shared_presets``, without torch)."""
    first, *rest = PRESETS.values()
    return [name for name in first if all(name in other for other in rest)]


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
    shared = ", ".join(_shared())
    sizes = "; ".join(f"{arch}: {', '.join(presets)}" for arch, presets in PRESETS.items())
    bench = subparsers.add_parser(
        "bench",
        help="Mamba vs Pythia speed: training, scan, forward scaling, decoding (writes JSON)",
        description="Measure side by side in one process: training tokens/s of every arm at "
        "L in {50, 100, 200}, the fast selective scan vs the reference loop, forward cost "
        "from 256 to 16,384 tokens with fitted growth exponents, cached greedy decoding of "
        "256 new tokens after 144, 576 and 1458 visual tokens (prefill seconds, decode "
        "tokens/s, cache bytes), and the probe protocol's step before and after vlab's CPU "
        "shortcuts. Every arm is the tiny backbone preset unless --preset or --pretrained "
        "says otherwise (the papers' sizes, for a GPU); the probe protocol always times the "
        "tiny preset at batch 64, since it times the protocol, which trains that preset.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a few minutes on 2 CPU cores at the tiny presets"
    )
    bench.add_argument(
        "--inspect",
        action="store_true",
        help="measure `vlab inspect` instead: seconds, peak memory and its estimate of each "
        "analysis for Pythia and Mamba at --preset SIZE (default small; --quick: tiny, "
        "seconds) over context lengths and vocabularies (the preset's and 50k), with growth "
        "exponents in L and vocabulary ratios (JSON: inspect, inspect_length_exponent, "
        "inspect_vocab_ratio)",
    )
    bench.add_argument(
        "--preset",
        action="append",
        type=_arm_value("SIZE", bare=True),
        metavar="[ARCH=]SIZE",
        help=f"the backbone preset of every arm (default tiny; every arm has {shared}), or "
        "with ARCH=SIZE of one arm; repeatable: e.g. a paper size for every arm plus ARCH=SIZE "
        "for an arm whose family names its size otherwise. Used for training, scan, forward "
        f"and decoding, not the probe protocol. Presets: {sizes}",
    )
    bench.add_argument(
        "--pretrained",
        action="append",
        type=_arm_value("DIR", bare=False),
        metavar="ARCH=DIR",
        help="time ARCH's arm as the local save_pretrained checkpoint in DIR (loaded offline, "
        "never downloaded; run in fp32) instead of a preset; repeatable, one per arm",
    )
    bench.add_argument(
        "--batch",
        type=bounded_int(1, MAX_BATCH),
        metavar="N",
        help="batch of the training and scan timings (default 64, the probes'); lower it for "
        "the papers' sizes on a GPU. The probe protocol keeps 64",
    )
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
