"""CPU speed of the selective-scan backends and of tiny Mamba vs GPT-NeoX training steps.

Why: the C++ scan exists to make Mamba training on CPU affordable; this measures it against
the reference loop and the PyTorch fast path, and measures whole training steps against a
GPT-NeoX of matched size. Run ``python -m vlab.models.scan_speed`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from vlab.models.ops.selective_scan import (
    install_into_transformers,
    scan_backend,
    selective_scan,
    use_scan_backend,
)

SCAN_BATCH = 64
SCAN_DSTATE = 16
SCAN_DIMS = (128, 256)
SCAN_LENGTHS = (50, 100, 200)
TRAIN_BATCH = 64
TRAIN_SEQ_LEN = 202
VOCAB = 200


def _scan_inputs(batch: int, dim: int, dstate: int, length: int) -> list[torch.Tensor]:
    """Leaf tensors shaped like a Mamba layer's scan inputs (u, delta, A, B, C, D, z, bias)."""
    g = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(batch, dim, length, generator=g),
        torch.randn(batch, dim, length, generator=g) - 2.0,
        -torch.rand(dim, dstate, generator=g) * dstate,
        torch.randn(batch, dstate, length, generator=g),
        torch.randn(batch, dstate, length, generator=g),
        torch.randn(dim, generator=g),
        torch.randn(batch, dim, length, generator=g),
        torch.rand(dim, generator=g),
    ]
    return [t.requires_grad_() for t in tensors]


def _scan_step(backend: str, batch: int, dim: int, dstate: int, length: int) -> Callable[[], None]:
    """A closure running one forward + backward of ``selective_scan`` on ``backend``."""
    u, delta, A, B, C, D, z, bias = _scan_inputs(batch, dim, dstate, length)

    def step() -> None:
        with use_scan_backend(backend):
            out = selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True)
        out.sum().backward()

    return step


def _best_times(steps: dict[str, Callable[[], None]], repeats: dict[str, int]):
    """Fastest (wall, CPU) seconds per step over its repeats, after one warm-up each.

    Steps are timed in alternation, so load from other processes on a shared machine hits
    them alike; CPU time (summed over threads) moves much less than wall time under load.
    """
    for name, step in steps.items():
        if repeats[name] > 1:
            step()
    wall = dict.fromkeys(steps, float("inf"))
    cpu = dict.fromkeys(steps, float("inf"))
    for round_ in range(max(repeats.values())):
        for name, step in steps.items():
            if round_ < repeats[name]:
                start, start_cpu = time.perf_counter(), time.process_time()
                step()
                wall[name] = min(wall[name], time.perf_counter() - start)
                cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return wall, cpu


def time_scan(backend: str, batch: int, dim: int, dstate: int, length: int, repeats: int) -> float:
    """Best wall-clock seconds for one forward + backward of ``selective_scan`` on ``backend``."""
    step = _scan_step(backend, batch, dim, dstate, length)
    wall, _ = _best_times({backend: step}, {backend: repeats})
    return wall[backend]


def scan_table(dims: tuple[int, ...], lengths: tuple[int, ...], reference: bool) -> None:
    """Prints fwd+bwd seconds per backend and the speed-ups of the C++ path."""
    backends = (["reference"] if reference else []) + ["torch", "cpp"]
    repeats = {"reference": 1, "torch": 3, "cpp": 7}
    print(
        f"selective scan fwd+bwd, batch {SCAN_BATCH}, dstate {SCAN_DSTATE}, "
        f"{torch.get_num_threads()} threads: best wall seconds, and speed-ups of cpp by wall "
        "and by CPU time"
    )
    print(
        f"{'dim':>5} {'L':>5} "
        + " ".join(f"{b:>10}" for b in backends)
        + "   ref/cpp torch/cpp | CPU: ref/cpp torch/cpp"
    )
    for dim in dims:
        for length in lengths:
            steps = {b: _scan_step(b, SCAN_BATCH, dim, SCAN_DSTATE, length) for b in backends}
            wall, cpu = _best_times(steps, repeats)
            cells = " ".join(f"{wall[b]:10.3f}" for b in backends)
            ratios = []
            for times in (wall, cpu):
                ref = f"{times['reference'] / times['cpp']:8.1f}x" if reference else f"{'-':>9}"
                ratios.append(f"{ref} {times['torch'] / times['cpp']:8.1f}x")
            print(f"{dim:>5} {length:>5} {cells}  {ratios[0]} | {ratios[1]}")


def time_hf_loop(dim: int, length: int) -> float:
    """Seconds for fwd + bwd of transformers' own CPU scan (what ``install_into_transformers``
    replaces) on the benchmark inputs; very slow, so timed once."""
    import transformers.models.mamba.modeling_mamba as modeling

    install_into_transformers()
    hf_scan = modeling.mamba_selective_scan.vlab_original
    u, delta, A, B, C, D, z, bias = _scan_inputs(SCAN_BATCH, dim, SCAN_DSTATE, length)
    start = time.perf_counter()
    out = hf_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)
    out.sum().backward()
    return time.perf_counter() - start


def tiny_mamba() -> torch.nn.Module:
    """HF Mamba: d_model 64, 2 layers, d_state 16, expand 2 (~77k parameters)."""
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, state_size=16, expand=2
    )
    return MambaForCausalLM(config)


def tiny_neox() -> torch.nn.Module:
    """GPT-NeoX: hidden 48, 2 layers, 2 heads, MLP 192, rotary_pct 0.25 (~75k parameters)."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=192,
        rotary_pct=0.25,
        max_position_embeddings=512,
    )
    return GPTNeoXForCausalLM(config)


def _train_step(model: torch.nn.Module) -> Callable[[], None]:
    """A closure running one forward + backward + AdamW step on fixed random ids."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (TRAIN_BATCH, TRAIN_SEQ_LEN), generator=g)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        optimizer.step()

    return step


def tokens_per_second(
    steps: dict[str, Callable[[], None]], repeats: int
) -> dict[str, tuple[float, float]]:
    """(wall-clock tokens/s, tokens per CPU-second) of each training step.

    Steps are timed in alternation, so load from other processes hits every model alike, and
    the fastest repeat counts. CPU time (summed over this process's threads) is reported too:
    on a shared machine it moves far less than wall time.
    """
    for step in steps.values():
        step()
    wall = dict.fromkeys(steps, float("inf"))
    cpu = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall[name] = min(wall[name], time.perf_counter() - start)
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    tokens = TRAIN_BATCH * TRAIN_SEQ_LEN
    return {name: (tokens / wall[name], tokens / cpu[name]) for name in steps}


def training_table(threads: list[int], repeats: int) -> None:
    """Prints training throughput of Mamba (our scan) and GPT-NeoX per thread count."""
    install_into_transformers()
    torch.manual_seed(0)
    mamba, neox = tiny_mamba(), tiny_neox()
    n_mamba = sum(p.numel() for p in mamba.parameters())
    n_neox = sum(p.numel() for p in neox.parameters())
    print(
        f"training step (fwd+bwd+AdamW), batch {TRAIN_BATCH} x seq {TRAIN_SEQ_LEN}; "
        f"Mamba {n_mamba} params, GPT-NeoX {n_neox} params; best of {repeats}"
    )
    print("         tokens/s (wall): Mamba  GPT-NeoX  ratio | tokens/CPU-s: Mamba  GPT-NeoX  ratio")
    steps = {"mamba": _train_step(mamba), "neox": _train_step(neox)}
    for n in threads:
        torch.set_num_threads(n)
        tps = tokens_per_second(steps, repeats)
        (m_wall, m_cpu), (n_wall, n_cpu) = tps["mamba"], tps["neox"]
        line = (
            f"threads {n} [{scan_backend('cpu')}]: {m_wall:8.0f} {n_wall:8.0f}  "
            f"{m_wall / n_wall:5.2f} | {m_cpu:8.0f} {n_cpu:8.0f}  {m_cpu / n_cpu:5.2f}"
        )
        print(line)


def main(argv: list[str] | None = None) -> int:
    """Runs the scan table and the training comparison; returns a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2, 1],
        help="torch thread counts for the training comparison",
    )
    parser.add_argument(
        "--scan-threads", type=int, default=2, help="torch threads for the scan table"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--quick", action="store_true", help="one scan shape, no reference")
    parser.add_argument(
        "--hf-loop",
        action="store_true",
        help="also time transformers' own CPU scan at dim 128, L 200 (minutes)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.scan_threads)
    dims, lengths = (
        ((SCAN_DIMS[0],), (SCAN_LENGTHS[-1],)) if args.quick else (SCAN_DIMS, SCAN_LENGTHS)
    )
    scan_table(dims, lengths, reference=not args.quick)
    if args.hf_loop:
        dim, length = SCAN_DIMS[0], SCAN_LENGTHS[-1]
        hf = time_hf_loop(dim, length)
        cpp = time_scan("cpp", SCAN_BATCH, dim, SCAN_DSTATE, length, 7)
        print(
            f"transformers' own CPU scan, dim {dim}, L {length}: {hf:.1f} s "
            f"({hf / cpp:.0f}x the C++ path's {cpp:.3f} s)"
        )
    print()
    training_table(args.threads, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
