"""Where and in what precision ``vlab inspect`` runs a model: ``--device``, ``--dtype`` and
``--max-memory-gb``, as one :class:`Placement`.

The model is moved once, after loading (checkpoints load on the CPU in float32); every
analysis moves its inputs to the model's device and does its own numerics (softmax, probe
features, means) in float32 whatever the model's dtype, so a bfloat16 inspection differs
from a float32 one only by the model's own rounding. The device is checked on the machine
that runs the analyses before anything is written (``cuda`` on a machine without one,
``cuda:3`` with one GPU: one line); a SLURM task checks its own node's.

Imports torch only inside functions: the CLI builds a Placement on every ``vlab inspect``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlab.errors import VlabError

if TYPE_CHECKING:
    import torch
    from torch import nn

DEVICES = "auto, cpu or cuda[:N]"
DTYPES = ("float32", "bfloat16", "float16")
FLOAT32 = "float32"  # the dtype of results written before --dtype existed


@dataclass(frozen=True)
class Placement:
    """``device`` (``auto``: the first CUDA device when this machine has one, else the CPU),
    ``dtype`` of the model's weights and activations (one of :data:`DTYPES`) and
    ``max_memory_gb``, the cap on an analysis's estimated peak that chooses its batch (None:
    each analysis's default batch; :mod:`vlab.analysis.inside.budget`). Checked on
    construction, except whether this machine has the device (:meth:`check_here`)."""

    device: str = "auto"
    dtype: str = FLOAT32
    max_memory_gb: float | None = None

    def __post_init__(self) -> None:
        import torch

        if self.dtype not in DTYPES:
            raise VlabError(f"--dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.max_memory_gb is not None and not self.max_memory_gb > 0:
            raise VlabError(f"--max-memory-gb must be > 0, got {self.max_memory_gb}")
        if self.device == "auto":
            return
        try:
            kind = torch.device(self.device).type
        except (RuntimeError, ValueError):
            kind = None
        if kind not in ("cpu", "cuda"):
            raise VlabError(f"--device {self.device!r}: use {DEVICES}")

    def check_here(self) -> None:
        """This machine has the device (one line naming ``--device`` otherwise)."""
        from vlab.preflight import check_device

        check_device(self.device, "--device")

    @property
    def torch_device(self) -> torch.device:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    @property
    def cap_bytes(self) -> float | None:
        from vlab.analysis.inside.budget import GIB

        return None if self.max_memory_gb is None else self.max_memory_gb * GIB

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` on the device in the dtype (moved in place; returned for chaining)."""
        return model.to(device=self.torch_device, dtype=self.torch_dtype)
