"""``vlab bench``: the arms' speed (Pythia, Mamba, Mamba-2, hybrid), side by side in one process.

Why: the fast selective scan exists to make Mamba training affordable on CPU (Hugging Face's
own CPU scan is a Python loop over time, ~100x slower than a GPT-NeoX of the same size); this
measures what it buys, against the Transformer arm at matched size. By default every model is
the tiny backbone preset (``vlab.models.backbones``), so the numbers describe the models the
probes train; any other size an arm's family names (``BenchPlan.preset`` and ``presets``: the
papers' sizes, for a GPU) or a local ``save_pretrained`` checkpoint (``BenchPlan.pretrained``:
a trained model, a real Pythia or Mamba) can stand in for an arm, since MambaVLM's decoding
comparison is about LMs of a billion parameters and more.

Three measurements of the backbones alone, each alternating the contenders so that load from
other processes hits them alike (training on CUDA excepted: there the arms take turns, see
``BenchPlan.train_alternate``), keeping the best of several repeats:

* training throughput (forward + backward + AdamW) of every arm's model (by default the tiny
  presets, non-embedding parameter counts matched within 10%), on probe-shaped batches (batch
  64, L context tokens + 2), each arm's tokens/s as a ratio of Pythia's, and of Mamba
  with the reference backend, which inside transformers runs Hugging Face's own scan loop
  (what users would get without the fast scan);
* the selective scan alone, fast path vs the plain reference recurrence;
* forward-only cost over sequence length (256 to 16,384 tokens) with the growth exponent
  fitted on a log-log scale over the points >= 1k tokens (attention's quadratic term shows up
  for Pythia; the SSMs' scans are linear; the hybrid has both), and the peak memory of each
  forward.

A fourth measurement (:mod:`vlab.models.bench_decode`) is MambaVLM's Table 4: cached greedy
decoding of a fixed number of new tokens after a prompt of N visual tokens, every arm inside a
VLM, with prefill seconds, decode tokens/s and decoding-cache bytes per N (the KV cache grows
with N, the SSM states do not), and each arm's tokens/s as a ratio of Pythia's.

With ``backends`` (``vlab bench --backends``) a fifth table times the scan alone on every
backend that runs on the device, at the tiny and small Mamba presets' scan shapes, in wall
and CPU seconds: on a shared machine CPU time moves far less than wall time under load.

Performance is never asserted in tests; this command measures and reports it.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from vlab.errors import ConfigError
from vlab.models.backbones import (
    PRESETS,
    BackboneConfig,
    build_backbone,
    check_backbone,
    check_checkpoint,
    check_weights,
    count_parameters,
    families,
    flagged,
    hf_config,
)
from vlab.models.ops.selective_scan import (
    scan_backend,
    selective_scan,
    use_scan_backend,
)

ARCHS = tuple(PRESETS)  # every arm, in the registry's order
# The arm the others' speed ratios are against (its family record's ``baseline``: Pythia).
BASELINE = flagged("baseline").arch
# Arms whose recurrent layers run vlab's Mamba-1 selective scan (their records'
# ``selective_scan``): their rows name the scan backend.
SCAN_ARCHS = tuple(f.arch for f in families() if f.selective_scan)
# The arm timed on the reference scan too, whose presets give the scan-alone shapes (its
# record's ``scan_comparison``: Mamba).
SCAN_ARCH = flagged("scan_comparison").arch
# Presets of SCAN_ARCH whose scan shapes (d_inner x d_state) the backend table covers.
BACKEND_PRESETS = ("tiny", "small")


MAX_DECODE_TOKENS = 16_384  # a decoding prompt's or answer's tokens: the forward plan's longest


def shared_presets() -> tuple[str, ...]:
    """The preset names every arm has, in the first arm's order: the only values one
    ``BenchPlan.preset`` can give all arms at once (the papers' sizes differ by family, e.g.
    one family's 1.3b where the others have 1.4b)."""
    first, *rest = PRESETS.values()
    return tuple(name for name in first if all(name in other for other in rest))


@dataclass(frozen=True)
class BenchPlan:
    """What to measure. ``quick`` fits in a few minutes on 2 CPU cores; ``backends`` adds the
    per-backend scan table.

    Decoding (``bench_decode``): ``decode_visual_tokens`` are the prompts' image sizes N (the
    full plan's are MambaVLM's 144, 576 and 1458, affordable on CPU too with the tiny presets;
    the quick plan's are CPU-sized), each followed by ``decode_text_tokens`` text tokens, and
    every arm generates exactly ``decode_new_tokens`` tokens after it (256 in the full plan).
    ``decode_threads``: torch's CPU threads while decoding on CPU (None keeps the process's
    setting). One by default: a batch-1 step of the tiny presets is a few dozen ops on
    vectors of 48 to 144 numbers, far too small for a second thread to speed up, and on a
    shared 2-core machine the threads' waits for each other made decoding 5-40x slower (wall
    and CPU time) than one thread. Set it for larger presets, where matrix-vector products
    are worth splitting.

    Which model each arm is (``backbone``): ``preset`` for every arm, unless ``presets`` names
    another for that arm (``{arch: preset}``) or ``pretrained`` a local ``save_pretrained``
    directory (``{arch: directory}``, loaded offline, run in fp32 like the presets). Only the
    training, scan, forward and decoding measurements use them: the probe protocol times the
    probes' own tiny preset at ``protocol_batch``, and the backend table the tiny and small
    scan shapes.

    ``train_alternate``: whether the training measurement alternates the arms step by step
    (all four models, gradients and AdamW states resident at once) or times one arm at a time
    (only one resident). None: alternate except on CUDA. On a shared CPU alternation spreads
    other processes' load over the arms alike; on one GPU nothing else runs, and four
    paper-sized arms' training states (16 bytes a parameter, 81 GiB at 1.4b) do not fit.
    """

    train_lengths: tuple[int, ...] = (50, 100, 200)
    batch: int = 64
    repeats: int = 3
    reference_length: int = 200
    forward_tokens: tuple[int, ...] = (256, 1024, 2048, 4096, 8192, 16384)
    preset: str = "tiny"
    presets: dict[str, str] = field(default_factory=dict)
    pretrained: dict[str, str] = field(default_factory=dict)
    train_alternate: bool | None = None
    backends: bool = False
    decode_visual_tokens: tuple[int, ...] = (144, 576, 1458)
    decode_new_tokens: int = 256
    decode_text_tokens: int = 16
    decode_threads: int | None = 1
    protocol_lengths: tuple[int, ...] = (4, 16, 32)
    protocol_budget: int = 3000
    protocol_batch: int = 64

    def __post_init__(self) -> None:
        check_sources(self.preset, self.presets, self.pretrained)
        for name in ("batch", "repeats", "protocol_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
        if not self.decode_visual_tokens or min(self.decode_visual_tokens) < 0:
            raise ConfigError(
                "decode_visual_tokens",
                f"must be one or more counts >= 0, got {list(self.decode_visual_tokens)}",
            )
        if self.decode_new_tokens < 2:
            raise ConfigError(
                "decode_new_tokens",
                f"must be >= 2 (one token from the prefill, then cached steps), got "
                f"{self.decode_new_tokens}",
            )
        for name in ("decode_visual_tokens", "decode_new_tokens", "decode_text_tokens"):
            value = getattr(self, name)
            if max(value if isinstance(value, tuple) else (value,)) > MAX_DECODE_TOKENS:
                raise ConfigError(
                    name,
                    f"{value} is above the limit of {MAX_DECODE_TOKENS} tokens (the longest "
                    "forward the plan measures)",
                )
        if self.decode_text_tokens < 1:
            raise ConfigError("decode_text_tokens", f"must be >= 1, got {self.decode_text_tokens}")
        if self.decode_threads is not None and self.decode_threads < 1:
            raise ConfigError("decode_threads", f"must be >= 1 or None, got {self.decode_threads}")

    @classmethod
    def quick(cls, backends: bool = False) -> BenchPlan:
        return cls(
            train_lengths=(50, 200),
            repeats=2,
            reference_length=50,
            forward_tokens=(256, 1024, 2048, 4096),
            backends=backends,
            decode_visual_tokens=(16, 64, 256),
            decode_new_tokens=64,
            protocol_lengths=(4,),
        )

    def backbone(self, arch: str) -> BackboneConfig:
        """The backbone ``arch``'s arm is: its checkpoint, its own preset, or ``preset``."""
        if arch in self.pretrained:
            return BackboneConfig(arch=arch, pretrained=self.pretrained[arch])
        return BackboneConfig(arch=arch, preset=self.presets.get(arch, self.preset))


def check_sources(
    preset: str,
    presets: Mapping[str, str],
    pretrained: Mapping[str, str],
    fields: tuple[str, str, str] = ("preset", "presets", "pretrained"),
) -> None:
    """Refuse, before anything is built or timed, an arm whose preset its family lacks, an arm
    name that is none, an arm given both a preset and a checkpoint, and a checkpoint directory
    that is missing, of another family or without weights. ``fields`` name ``preset``,
    ``presets`` and ``pretrained`` in the messages (the CLI's flags: ``--preset`` twice)."""
    preset_field, presets_field, pretrained_field = fields
    for given, name in ((presets, presets_field), (pretrained, pretrained_field)):
        unknown = [arch for arch in given if arch not in PRESETS]
        if unknown:
            raise ConfigError(name, f"{unknown[0]!r} is not an arm ({', '.join(ARCHS)})")
    both = [arch for arch in presets if arch in pretrained]
    if both:
        raise ConfigError(
            pretrained_field,
            f"{both[0]} is given both a preset ({presets[both[0]]}) and a checkpoint "
            f"({pretrained[both[0]]}); give it one",
        )
    for arch in ARCHS:
        if arch in pretrained:
            _check_pretrained(arch, pretrained[arch], pretrained_field)
            continue
        name = presets.get(arch, preset)
        if name in PRESETS[arch]:
            continue
        own = f"{name!r} is not a {arch} preset ({', '.join(PRESETS[arch])})"
        if arch in presets:
            raise ConfigError(presets_field, own)
        per_arm = (
            f"{presets_field} {arch}=SIZE"
            if presets_field == preset_field
            else f"{presets_field}[{arch!r}]"
        )
        raise ConfigError(
            preset_field,
            f"{own}; presets every arm has: {', '.join(shared_presets())}; give {arch} its "
            f"own with {per_arm}",
        )


def _check_pretrained(arch: str, directory: str, field_: str) -> None:
    """``directory`` is a ``save_pretrained`` checkpoint of ``arch``'s family, with weights:
    the backbones' own checks, their messages under ``field_``."""
    try:
        check_checkpoint(directory, arch)
        check_weights(directory, field_)
    except ConfigError as e:
        said = str(e).removeprefix(f"config field '{e.field}': ")
        said = said if directory in said else f"{arch}={directory}: {said}"
        raise ConfigError(field_, said) from None


def trains_alternately(plan: BenchPlan, device: torch.device) -> bool:
    """Whether ``bench_train`` alternates the arms (``BenchPlan.train_alternate``; None:
    everywhere but on CUDA)."""
    if plan.train_alternate is not None:
        return plan.train_alternate
    return device.type != "cuda"


def check_training_memory(
    plan: BenchPlan, device: torch.device, fields: tuple[str, str] = ("preset", "pretrained")
) -> None:
    """Refuse arms whose training cannot fit ``device``'s memory, before minutes of timing:
    every arm's parameters at 16 bytes each (fp32 weights, gradients, AdamW's moments), all of
    them together where the arms alternate, the largest alone where they take turns. A floor
    (activations come on top): passing says nothing about fitting, failing says it cannot.
    Each arm is built on the meta device for its count (no memory), which also surfaces any
    error of a checkpoint's config, named by the arm."""
    from vlab.preflight import TRAIN_BYTES_PER_PARAM, device_memory

    params = {
        arch: sum(p.numel() for p in check_backbone(plan.backbone(arch), arch).parameters())
        for arch in ARCHS
    }
    where, memory = device_memory(str(device))
    if memory is None:
        return
    largest = max(params, key=params.__getitem__)
    together = trains_alternately(plan, device)
    count = sum(params.values()) if together else params[largest]
    need = count * TRAIN_BYTES_PER_PARAM
    if need > memory:
        what = "every arm at once" if together else largest
        raise ConfigError(
            fields[1] if largest in plan.pretrained else fields[0],
            f"training {what} ({count:,} parameters) takes at least {need / 2**30:,.1f} GiB "
            f"(fp32 weights, gradients and AdamW's moments), more than the "
            f"{memory / 2**30:,.1f} GiB of {where}; choose smaller arms",
        )


class Timing(NamedTuple):
    """The fastest repeat of one step: wall seconds, and CPU seconds over all threads."""

    wall: float
    cpu: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_times(
    steps: Mapping[str, Callable[[], None]],
    repeats: int | Mapping[str, int],
    device: torch.device,
) -> dict[str, Timing]:
    """Fastest wall and CPU seconds of each step over its repeats (one count, or one per step).

    Steps are timed in alternation, so load from other processes hits them alike, and the
    device is synchronised after every call so that queued CUDA work is counted. A step
    repeated more than once is first run once untimed (lazy optimizer state, kernel builds,
    allocator caches); a step timed once is a slow reference, whose first-call overhead is
    noise, so it is not run twice.
    """
    counts = dict.fromkeys(steps, repeats) if isinstance(repeats, int) else dict(repeats)
    for name, step in steps.items():
        if counts[name] > 1:
            step()
    _sync(device)
    wall = dict.fromkeys(steps, math.inf)
    cpu = dict.fromkeys(steps, math.inf)
    for round_ in range(max(counts.values(), default=0)):
        for name, step in steps.items():
            if round_ < counts[name]:
                start, start_cpu = time.perf_counter(), time.process_time()
                step()
                _sync(device)
                wall[name] = min(wall[name], time.perf_counter() - start)
                cpu[name] = min(cpu[name], time.process_time() - start_cpu)
    return {name: Timing(wall[name], cpu[name]) for name in steps}


def _model(cfg: BackboneConfig, device: torch.device) -> torch.nn.Module:
    """The arm's model on ``device`` in fp32: a checkpoint saved in half precision is cast up,
    so that every arm runs the same arithmetic as the presets."""
    return build_backbone(cfg, seed=0).to(device=device, dtype=torch.float32)


def describe_arm(cfg: BackboneConfig, model: torch.nn.Module) -> dict:
    """Where an arm's model came from (its preset, or its checkpoint directory) and the shape
    of the model actually built: what the JSON's ``arms`` records for each arm."""
    params = count_parameters(model)
    return {
        "preset": None if cfg.pretrained is not None else cfg.preset,
        "pretrained": cfg.pretrained,
        "hidden_size": model.config.hidden_size,
        "layers": model.config.num_hidden_layers,
        "params": params["non_embedding"],
        "params_total": params["total"],
    }


def _source(arm: Mapping) -> str:
    return f"checkpoint {arm['pretrained']}" if arm["pretrained"] else f"preset {arm['preset']}"


def release(device: torch.device) -> None:
    """Give the memory of models just dropped back (the CUDA allocator's cache too), so that
    the next arm or measurement starts from what it needs alone."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def train_step(
    model: torch.nn.Module, batch: int, seq: int, device: torch.device
) -> Callable[[], None]:
    """A closure running one forward + backward + AdamW step on fixed random ids (batch x seq)."""
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
    """Training tokens/s per arch and length, and ``SCAN_ARCH`` (Mamba) with the reference
    scan; ``arms``: each arm's source and the shape of the model timed. The arms alternate
    step by step, or take turns one arm at a time (:func:`trains_alternately`)."""
    groups = [ARCHS] if trains_alternately(plan, device) else [(arch,) for arch in ARCHS]
    rows, arms, reference = [], {}, {}
    for group in groups:
        models = {arch: _model(plan.backbone(arch), device) for arch in group}
        for arch in group:  # (no loop variable holds a model past ``del models`` below)
            arms[arch] = describe_arm(plan.backbone(arch), models[arch])
            log(
                f"arm    {arch:7s} {_source(arms[arch])}: width {arms[arch]['hidden_size']}, "
                f"{arms[arch]['layers']} layers, {arms[arch]['params']:,} non-embedding "
                "parameters"
            )
        for length in plan.train_lengths:
            seq = length + 2
            best = _train_times(models, plan, seq, device)
            for arch in group:
                tps = plan.batch * seq / best[arch].wall
                rows.append(
                    {
                        "arch": arch,
                        "length": length,
                        "batch": plan.batch,
                        "params": arms[arch]["params"],
                        "params_total": arms[arch]["params_total"],
                        "tokens_per_s": tps,
                        "scan": scan_backend(device.type) if arch in SCAN_ARCHS else None,
                    }
                )
                log(f"train  {arch:7s} L={length:4d} batch {plan.batch}: {tps:10.0f} tokens/s")
        if SCAN_ARCH in models:
            reference = _reference_train(models[SCAN_ARCH], plan, rows, device, log)
        del models
        release(device)
    order = {length: i for i, length in enumerate(plan.train_lengths)}
    rows.sort(key=lambda r: (order[r["length"]], ARCHS.index(r["arch"])))
    return {"train": rows, **reference, "arms": arms}


def _train_times(
    models: Mapping[str, torch.nn.Module], plan: BenchPlan, seq: int, device: torch.device
) -> dict[str, Timing]:
    """Best training step of each model at ``seq`` tokens. The optimizers live in here, so
    their states are freed before the next length builds its own."""
    steps = {arch: train_step(model, plan.batch, seq, device) for arch, model in models.items()}
    return best_times(steps, plan.repeats, device)


def _reference_train(
    model: torch.nn.Module, plan: BenchPlan, rows: list[dict], device: torch.device, log
) -> dict:
    """``SCAN_ARCH``'s training tokens/s on the reference scan at ``plan.reference_length``,
    and how many times faster the fast scan trained it (the rows' tokens/s at that length, or
    timed here when the plan has no such length)."""
    seq = plan.reference_length + 2
    with use_scan_backend("reference"):
        step = {SCAN_ARCH: train_step(model, plan.batch, seq, device)}
        ref = best_times(step, 1, device)[SCAN_ARCH].wall
    del step
    ref_tps = plan.batch * seq / ref
    fast = next(
        (
            r["tokens_per_s"]
            for r in rows
            if r["arch"] == SCAN_ARCH and r["length"] == plan.reference_length
        ),
        None,
    )
    if fast is None:
        step = {SCAN_ARCH: train_step(model, plan.batch, seq, device)}
        fast = plan.batch * seq / best_times(step, plan.repeats, device)[SCAN_ARCH].wall
    log(
        f"train  {SCAN_ARCH:7s} L={plan.reference_length:4d} with the reference scan: "
        f"{ref_tps:10.0f} tokens/s ({fast / ref_tps:.1f}x slower than the fast scan)"
    )
    return {
        # the key keeps its old name (older readers): SCAN_ARCH's reference-scan training
        "mamba_reference_train": {"length": plan.reference_length, "tokens_per_s": ref_tps},
        "train_speedup_vs_reference": fast / ref_tps,
    }


def _scan_shape(cfg: BackboneConfig | str) -> tuple[int, int]:
    """(d_inner, d_state) of a ``SCAN_ARCH`` (Mamba) backbone (or preset name): the dim and
    state size its layers scan over, read from the preset or the checkpoint's config."""
    if isinstance(cfg, str):
        cfg = BackboneConfig(arch=SCAN_ARCH, preset=cfg)
    if cfg.pretrained is not None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(cfg.pretrained, local_files_only=True)
    else:
        config = hf_config(cfg.arch, cfg.preset, **cfg.overrides)
    return config.intermediate_size, config.state_size


def _scan_inputs(
    batch: int, dim: int, dstate: int, length: int, device: torch.device
) -> list[torch.Tensor]:
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
    return [t.to(device).requires_grad_() for t in tensors]


def _scan_step(backend: str, inputs: list[torch.Tensor]) -> Callable[[], None]:
    """A closure running one forward + backward of ``selective_scan`` on ``backend``."""
    u, delta, A, B, C, D, z, bias = inputs

    def step() -> None:
        with use_scan_backend(backend):
            out = selective_scan(u, delta, A, B, C, D, z, bias, delta_softplus=True)
        out.sum().backward()

    return step


def bench_scan(plan: BenchPlan, device: torch.device, log=print) -> dict:
    """Forward + backward of ``SCAN_ARCH``'s arm's scan alone (its preset's or checkpoint's
    shape): fast path vs the reference recurrence."""
    dim, dstate = _scan_shape(plan.backbone(SCAN_ARCH))
    inputs = _scan_inputs(plan.batch, dim, dstate, plan.reference_length, device)
    fast_backend = scan_backend(device.type)
    steps = {"fast": _scan_step(fast_backend, inputs), "reference": _scan_step("reference", inputs)}
    best = best_times(steps, {"fast": plan.repeats, "reference": 1}, device)
    fast, ref = best["fast"].wall, best["reference"].wall
    log(
        f"scan   fwd+bwd batch {plan.batch} dim {dim} L={plan.reference_length}: "
        f"{fast_backend} {fast:.4f}s, reference {ref:.3f}s ({ref / fast:.0f}x)"
    )
    return {
        "scan_speedup_vs_reference": ref / fast,
        "scan_backend": fast_backend,
        "scan": {
            "batch": plan.batch,
            "dim": dim,
            "length": plan.reference_length,
            "fast_seconds": fast,
            "reference_seconds": ref,
        },
    }


def bench_backends(plan: BenchPlan, device: torch.device, log=print) -> dict:
    """Forward + backward seconds (wall and CPU) of the scan alone on every backend that runs
    on ``device``, at each of ``BACKEND_PRESETS``' scan shapes and each training length."""
    fast = scan_backend(device.type)
    backends = ["reference", "torch"] + ([fast] if fast not in ("reference", "torch") else [])
    # the fast paths take milliseconds: extra repeats cost little and steady the minimum
    repeats = {b: 1 if b == "reference" else 3 * plan.repeats for b in backends}
    others = [b for b in backends if b != fast]
    heads = [f"{kind}{b}/{fast}" for kind in ("", "CPU ") for b in others]
    width = max(map(len, heads)) + 1
    log(
        f"scan backends fwd+bwd, batch {plan.batch}, {torch.get_num_threads()} threads: best "
        f"wall seconds, and how many times faster {fast} is by wall | by CPU time"
    )
    log(
        f"{'dim':>5} {'dstate':>6} {'L':>5} "
        + "".join(f"{b:>11}" for b in backends)
        + "".join(f"{h:>{width}}" for h in heads[: len(others)])
        + " |"
        + "".join(f"{h:>{width}}" for h in heads[len(others) :])
    )
    rows = []
    for preset in BACKEND_PRESETS:
        dim, dstate = _scan_shape(preset)
        for length in plan.train_lengths:
            inputs = _scan_inputs(plan.batch, dim, dstate, length, device)
            steps = {b: _scan_step(b, inputs) for b in backends}
            best = best_times(steps, repeats, device)
            for b in backends:
                rows.append(
                    {
                        "backend": b,
                        "preset": preset,
                        "dim": dim,
                        "dstate": dstate,
                        "length": length,
                        "batch": plan.batch,
                        "seconds": best[b].wall,
                        "cpu_seconds": best[b].cpu,
                    }
                )
            ratios = [
                "".join(
                    f"{f'{getattr(best[b], kind) / getattr(best[fast], kind):.1f}x':>{width}}"
                    for b in others
                )
                for kind in ("wall", "cpu")
            ]
            log(
                f"{dim:>5} {dstate:>6} {length:>5} "
                + "".join(f"{best[b].wall:11.4f}" for b in backends)
                + f"{ratios[0]} |{ratios[1]}"
            )
    return {"scan_backends": rows}


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
    """Forward-only seconds and peak memory of one sequence per length, every arm."""
    models = {a: _model(plan.backbone(a), device).eval() for a in ARCHS}
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
            # the memory call above warmed the step up, so even one timed repeat is warm
            seconds = best_times({arch: step}, max(1, plan.repeats - 1), device)[arch].wall
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
