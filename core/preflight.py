"""The checks every command runs before its first write: nothing is created or changed on disk
until everything that can be checked from the arguments and the files already there has been.

A command that fails after writing ``config.json`` leaves a run directory behind that refuses
the corrected command as a config mismatch; so each experiment has one ``preflight`` (the
probe's in :mod:`vlab.probes.trainer`, the VLM's in :mod:`vlab.vlm.train`, the
finetune's in :mod:`vlab.vlm.finetune`) built from the pieces here, called by the
function that claims the run, so the CLI and the sweep worker both reach it.

Bounds (each named in its message):

- :data:`MAX_THREADS` torch CPU threads: far above any machine's cores; a larger count (a
  typo) made libgomp abort the process while allocating its thread pool.
- :data:`MAX_DATA_BYTES` memory that a task's data and task-sized tables may take (the probe's
  held-out set, its training permutation, the embedding rows of its pool with their gradients
  and AdamW state): a pool of 10^8 tokens asked for 19 GB at the first step.
- :data:`MAX_IMAGE_SIDE` pixels a side of an image an encoder sees (a VLM's ``image_size``, a
  finetune's ``resolution``, the shapes dataset's ``image_size``): 3.7x the papers' largest
  (560 px), 146 x 146 visual tokens at 14 px patches; one image at 10^5 px would be 120 GB.
- the memory that training a model takes: at least :data:`TRAIN_BYTES_PER_PARAM` per
  parameter (fp32 weights, gradients and AdamW's two moments; bf16 autocast keeps fp32
  weights), against the memory of the device it trains on (a GPU's, or the machine's RAM; under
  FSDP the ranks' together). An override of ``hidden_size`` a thousand times too large builds
  on the meta device in a moment and would otherwise fail only when allocated.
- :data:`MAX_SEQUENCE` tokens of a VLM sequence (``max_length``), :data:`MAX_NEW_TOKENS`
  tokens of one greedy answer (``max_new_tokens``, ``--max-new-tokens``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlab.errors import ConfigError, VlabError

MAX_THREADS = 1024
MAX_DATA_BYTES = 4 * 2**30
MAX_IMAGE_SIDE = 2048
MAX_SEQUENCE = 131_072
MAX_NEW_TOKENS = 16_384
TRAIN_BYTES_PER_PARAM = 16


def check_threads(threads: int | None, field: str = "train.threads") -> None:
    """``threads`` (None: torch's default) is at most :data:`MAX_THREADS`."""
    if threads is not None and threads > MAX_THREADS:
        raise ConfigError(field, f"{threads} threads is above the limit of {MAX_THREADS}")


def check_device(name: str, field: str = "train.device") -> None:
    """``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) names a device this machine
    has: a run asked for on a GPU is refused on a machine without one, not after its
    directory exists."""
    import torch

    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        said = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            field, f"{name!r} is not a device ({said}); use auto, cpu or cuda[:N]"
        ) from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(field, f"{name!r}, but this machine has no CUDA device; use cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(field, f"{name!r}, but this machine has {count} CUDA device(s)")
        return
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(field, f"{name!r}, but MPS is not available here; use cpu")
        return
    raise ConfigError(field, f"{name!r}: vlab runs on auto, cpu, cuda[:N] or mps")


def check_at_most(value: int, limit: int, field: str, unit: str) -> None:
    """``value`` (of ``unit``) is at most ``limit``, named in the message."""
    if value > limit:
        raise ConfigError(field, f"{value:,} {unit} is above the limit of {limit:,}")


def check_memory(nbytes: int, field: str, what: str, limit: int = MAX_DATA_BYTES) -> None:
    """Refuse ``nbytes`` (the memory ``what`` would take) above ``limit``."""
    if nbytes > limit:
        raise ConfigError(
            field, f"{what} would take {_gib(nbytes)}, above the limit of {_gib(limit)}"
        )


def device_memory(name: str) -> tuple[str, int | None]:
    """The device a run named ``name`` (``auto``, ``cpu``, ``cuda[:N]``) trains on and its
    memory in bytes (None where it cannot be told): a CUDA device's total memory, or the
    machine's physical RAM."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}", torch.cuda.get_device_properties(index).total_memory
    if device.type == "cpu":
        try:
            return "this machine's RAM", os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return "this machine's RAM", None
    return str(device), None


def check_model_memory(model: Any, device: str, field: str, *, sharded: bool = False) -> None:
    """Refuse to train ``model`` (built on the meta device) when its parameters alone, at
    :data:`TRAIN_BYTES_PER_PARAM` each, exceed the memory of ``device`` (under FSDP,
    ``sharded``, of the ``WORLD_SIZE`` ranks together). A floor: activations come on top, so
    passing says nothing about fitting; failing says it cannot."""
    params = sum(p.numel() for p in model.parameters())
    where, memory = device_memory(device)
    if memory is None:
        return
    world = os.environ.get("WORLD_SIZE", "1")  # torchrun's; anything else: one rank
    ranks = int(world) if sharded and world.isdigit() and int(world) > 0 else 1
    need = params * TRAIN_BYTES_PER_PARAM
    if need > memory * ranks:
        have = f"{_gib(memory)} of {where}" + (f" x {ranks} ranks" if ranks > 1 else "")
        raise ConfigError(
            field,
            f"training {params:,} parameters takes at least {_gib(need)} (fp32 weights, "
            f"gradients and AdamW's moments), more than the {have}",
        )


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> None:
    """``path`` is a directory vlab can create or write in: not an existing file, nothing but
    directories above it, and the nearest existing one writable. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VlabError(f"{flag} {path}: is a file, not a directory")
    _check_creatable(path, path, flag)


def check_output_file(path: str | os.PathLike, flag: str) -> None:
    """``path`` is a file vlab can write (atomically, beside it): not a directory, its folder
    creatable or writable. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise VlabError(f"{flag} {path}: is a directory, not a file")
    _check_creatable(path, path.parent, flag)


def _check_creatable(shown: Path, folder: Path, flag: str) -> None:
    """``folder`` exists as a writable directory, or can be created: its nearest existing
    ancestor is a writable directory."""
    here = folder
    while not here.exists():
        if here.is_symlink():
            raise VlabError(f"{flag} {shown}: {here} is a broken link")
        if here.parent == here:
            break
        here = here.parent
    if not here.is_dir():
        raise VlabError(f"{flag} {shown}: {here} is a file, not a directory")
    if not os.access(here, os.W_OK | os.X_OK):
        raise VlabError(f"{flag} {shown}: {here} is not writable")


def check_finite(data: Any, field: str) -> None:
    """Every number in ``data`` (nested dicts and lists, e.g. a transformers config's
    overrides) is finite: NaN or inf would build a model that trains to NaN."""
    if isinstance(data, dict):
        for k, v in data.items():
            check_finite(v, f"{field}.{k}")
    elif isinstance(data, (list, tuple)):
        for i, v in enumerate(data):
            check_finite(v, f"{field}[{i}]")
    elif isinstance(data, float) and not math.isfinite(data):
        raise ConfigError(field, f"must be a finite number, got {data!r}")


def on_meta(build: Callable[[], Any], field: str) -> Any:
    """Run ``build`` (a model constructor) on torch's ``meta`` device: shapes without memory,
    so every error of a config (a negative size, heads that do not divide the width) surfaces
    in a moment, as a ConfigError naming ``field``, before anything is written."""
    import torch

    try:
        with torch.device("meta"):
            return build()
    except VlabError:
        raise
    except Exception as e:  # torch's and transformers' own errors, whatever their type
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        said = (lines[-1] if lines else type(e).__name__)[:200]
        raise ConfigError(field, f"the model cannot be built: {said}") from None
