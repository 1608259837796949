"""Data parallelism under ``torchrun``: which process am I, what do the others say, and how
the model is spread over them.

``torchrun --nproc_per_node N -m vlab.cli probe run ...`` (or ``vlab vlm train``) starts N
copies of the same command; each reads its rank from the environment. Every rank gets an
equal contiguous slice of every global batch (so the averaged gradients are the global
batch's: every sequence still weighs the same), the ranks agree on stopping through
collectives, and rank 0 alone writes files. Without torchrun everything here is a no-op.
NCCL joins GPUs, gloo CPU processes (which is how the tests run both strategies).

Two strategies, chosen by ``TrainConfig.parallel`` (``train.parallel``, ``stage1.parallel``,
``stage2.parallel``):

* ``"ddp"`` (default): DistributedDataParallel. Every rank holds the whole model, gradients
  and AdamW state; only gradients are all-reduced. Fastest while that fits in one GPU: the
  probes, the 130M-790M backbones, and stage 1 of the VLM (frozen LM, small projector).
* ``"fsdp"``: PyTorch's FSDP2 (``fully_shard``; ZeRO-3: parameters, gradients and optimizer
  state sharded over the ranks, each block's weights all-gathered just for its forward and
  backward). For the 1B+ models, whose fp32 weights, gradients and two AdamW moments (16
  bytes a parameter: 22 GB for 1.4B, 45 GB for 2.8B) do not fit next to the activations:
  MambaVLM trained its 1.4B/2.8B VLMs with FSDP, SHAKEUP used DeepSpeed ZeRO 2/3, which this
  replaces. Each transformer / Mamba block is one sharding unit (:func:`fsdp_units`), the
  rest (embeddings, head, projector, encoders' stems) the root unit; with bf16 the blocks
  compute in bf16 and gradients are reduced in fp32. Launch::

      torchrun --nproc_per_node 8 -m vlab.cli vlm train ... --set stage2.parallel=fsdp

Checkpoints are the same under both strategies and in one process: full (unsharded) model
and optimizer state dicts gathered to rank 0 (:func:`model_state`, :func:`optimizer_state`),
so a run resumes with another number of ranks or in one process (where ``parallel`` is
ignored), and stage 2 loads stage 1's ``ckpt["model"]`` into a plain model. Switching a run
between "ddp" and "fsdp" changes its config, which ``RunDir.claim`` refuses on resume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn

from vlab.errors import ConfigError, VlabError


@dataclass(frozen=True)
class DistContext:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def gpu_index(self) -> int:
        """This rank's GPU among those it sees: its local rank where every rank of the node
        sees all the node's GPUs (torchrun, SLURM's --gpus-per-node), 0 where the scheduler
        gave each task its own (one visible GPU)."""
        visible = torch.cuda.device_count()
        return self.local_rank % visible if visible else 0

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per process (``cuda:LOCAL_RANK``) under torchrun; the request otherwise."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.gpu_index)
        return requested

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (rows divide evenly: validated)."""
        if not self.enabled:
            return tensor
        n = tensor.shape[0] // self.world
        return tensor[self.rank * n : (self.rank + 1) * n]

    def mean(self, value: float) -> float:
        """The mean of a float over ranks (for logging the global training loss)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any rank (stop requests)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_int(self, value: int | None) -> int | None:
        """Rank 0's integer (None allowed) on every rank."""
        if not self.enabled:
            return value
        t = torch.tensor([-1 if value is None else value], dtype=torch.int64)
        dist.broadcast(t, src=0)
        return None if t.item() < 0 else int(t.item())


def is_main_process() -> bool:
    """Rank 0, or not under torchrun: the process that reports and writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def setup_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes (idempotent); a single-process context
    when ``WORLD_SIZE`` is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        # On GPUs, NCCL carries the tensors of training; the small control values (loss means,
        # stop flags, step numbers) are CPU tensors, which NCCL cannot take: gloo carries them.
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.gpu_index)
        dist.init_process_group(backend=backend)
    return ctx


# What a collective raises when another rank's process is gone (gloo's TCP pairs, NCCL's
# watchdog): the words of the rank that failed are elsewhere.
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
              "NCCL communicator was aborted", "ProcessGroupNCCL's watchdog")  # fmt: skip


def lost_a_rank(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another rank died, not this rank's
    own failure (only under several processes)."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    text = str(error)
    return any(words in text for words in _PEER_GONE)


def join_process_group() -> DistContext:
    """Join the group the environment describes before any run's device is known: a SLURM
    multi-task job's ranks agree on their run's lock first (:mod:`vlab.slurm.ranks`). With a
    GPU the group carries both CUDA (NCCL) and CPU (gloo) tensors, as the run's own
    :func:`setup_distributed` would make it; that call then finds the group joined."""
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return setup_distributed(device)


def claim_run(
    ctx: DistContext,
    path: str | os.PathLike,
    config: dict,
    defaults: dict,
    kind: str | None = None,
):
    """Open the run directory ``path`` for training on every rank: rank 0 checks it against
    ``config`` and creates it, recording the run's ``kind`` (:meth:`~vlab.rundir.RunDir.claim`),
    the others wait for that, then see it read-only. Returns ``(run, done)``: done means there
    is nothing to train."""
    from vlab.rundir import ReadOnlyRunDir, RunDir

    if ctx.is_main:
        run = RunDir(path)
        done = run.claim(config, defaults, kind)
    ctx.barrier()
    if not ctx.is_main:
        run = ReadOnlyRunDir(path)
        run._defaults = defaults  # so every rank judges a resumed checkpoint alike
        done = run.is_done()
    return run, done


def is_sharded(model: nn.Module) -> bool:
    """True for a model FSDP has sharded (DTensor parameters): every rank must then run it in
    lockstep, since each forward all-gathers."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def all_ranks(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on every rank (a sharded loop ends together)."""
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def close_distributed() -> None:
    """Leave the process group at the end of a run that finished on every rank.

    Without it gloo's worker threads can outlive the interpreter, and a rank whose training
    finished aborts at exit ("terminate called without an active exception", SIGABRT), which
    torchrun reports as a failed job. Called only after success: destroying the group while
    another rank is still inside a collective would hang it. A no-op outside ``torchrun``.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_rank(code: int) -> NoReturn:
    """End a ``torchrun`` rank's process with ``code`` once its work is done and
    :func:`close_distributed` has run: stdout and stderr flushed, then ``os._exit``, skipping
    the interpreter's teardown. Even after ``destroy_process_group`` a gloo thread can still be
    joinable when the interpreter destroys it, and the rank aborts ("terminate called without an
    active exception", SIGABRT) after finishing its work, which torchrun reports as a failed job
    (seen about once in five 2-rank CI runs). Every file vlab writes is closed and fsynced by
    then, so nothing is lost by skipping the teardown."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say
            pass
    os._exit(code)


# FSDP ---------------------------------------------------------------------------------------

# Where Hugging Face keeps the decoder blocks of the two backbones (GPT-NeoX, Mamba).
HF_BLOCK_LISTS = ("gpt_neox.layers", "backbone.layers")


def find_blocks(module: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a network: the HF backbones' decoder layers, otherwise the items
    of every outermost ``nn.ModuleList`` whose items hold parameters (a ViT's layers, timm's
    ``blocks``). Blocks are what FSDP shards one at a time: big enough to amortise the
    all-gather, small enough that only one is unsharded at a time."""
    for path in HF_BLOCK_LISTS:
        try:
            layers = module.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return list(layers)
    blocks: list[nn.Module] = []
    for child in module.children():
        items = list(child) if isinstance(child, nn.ModuleList) else []
        if items and all(any(True for _ in m.parameters()) for m in items):
            blocks.extend(items)
        else:
            blocks.extend(find_blocks(child))
    return blocks


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The submodules to shard one by one before the root: ``model.fsdp_units()`` where the
    model says (the VLM), the discovered blocks otherwise (a plain HF backbone: the probes).

    A parameter shared between modules (tied input and output embeddings) must belong to one
    unit, or FSDP would shard it twice; a unit that holds one side of a tie is refused here
    rather than failing obscurely in the first backward.
    """
    units = model.fsdp_units() if hasattr(model, "fsdp_units") else find_blocks(model)
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    owners: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    for unit in units:
        prefix = names[id(unit)] + "."
        for p in unit.parameters():
            outside = [n for n in owners[id(p)] if not n.startswith(prefix)]
            if outside:
                raise ConfigError(
                    "parallel",
                    f"FSDP unit {prefix[:-1]!r} shares a parameter with {outside[0]!r}; "
                    "tied parameters must stay in one unit (change the model's fsdp_units)",
                )
    return units


def shard_model(model: nn.Module, device: torch.device, bf16: bool) -> None:
    """Shard ``model`` in place with FSDP2 over all ranks: each unit, then the root.

    ``model`` stays the same object (its class becomes an ``FSDP...`` subclass and its
    parameters DTensors), so the optimizer must be built afterwards. Frozen parameters may
    share a unit with trainable ones (FSDP2 reduces only the gradients that exist), so the VLM
    stages need no special grouping. With ``bf16`` the unsharded weights are bf16 for
    compute, the sharded fp32 weights stay the optimizer's master copy, and gradients are
    reduce-scattered in fp32 (exact averaging across ranks).
    """
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError as e:  # FSDP2's public home since torch 2.6
        raise ConfigError("parallel", f"fsdp needs torch >= 2.6 (FSDP2): {e}") from e
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    for unit in fsdp_units(model):
        fully_shard(unit, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def _full_options(**kwargs: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def model_state(model: nn.Module, sharded: bool) -> dict[str, torch.Tensor]:
    """The model's full state dict, the same keys as ``model.state_dict()`` of the plain
    model. Sharded: a collective that every rank must call; rank 0 gets the tensors on the
    CPU (gathered one at a time, never the whole model on one GPU), the others ``{}``."""
    if not sharded:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options(cpu_offload=True))


def load_model_state(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    sharded: bool,
    source: str | os.PathLike | None = None,
) -> None:
    """Load a full state dict (from one process or from :func:`model_state`); sharded, every
    rank passes the full dict and keeps its own shard of each tensor.

    Weights that do not fit ``model`` (another architecture's, another size's: missing or
    unexpected names, tensors of other shapes) are a :class:`~vlab.errors.VlabError` naming
    ``source`` (the checkpoint) and the first few names, not torch's many-line traceback;
    it is a :class:`~vlab.records.DamagedFile` when ``source`` is given.
    """
    problem = _misfit(model, state)
    if problem is None:
        try:
            if not sharded:
                model.load_state_dict(state)
                return
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            set_model_state_dict(model, state, options=_full_options())
            return
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            problem = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
    what_to_do = "load it into the model it was trained as (its config), or put back its own"
    if source is None:
        raise VlabError(f"the weights do not fit the model: {problem}; {what_to_do}")
    from vlab.records import DamagedFile

    raise DamagedFile(source, "model", f"the weights do not fit the model: {problem}", what_to_do)


def _misfit(model: nn.Module, state: Any) -> str | None:
    """What keeps ``state`` from loading into ``model`` strictly, briefly; None if it fits.
    Compared by name and global shape (a sharded model's DTensors report the full shape)."""
    if not isinstance(state, dict):
        return f"expected a dict of tensors, got a {type(state).__name__}"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    not_tensors = [k for k in state if k in own and not isinstance(state[k], torch.Tensor)]
    reshaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in own
        if k in state and k not in not_tensors and state[k].shape != own[k].shape
    ]
    parts = [
        f"{what} {_first(names)}"
        for what, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("not tensors", not_tensors),
            ("other shapes", reshaped),
        )
        if names
    ]
    return "; ".join(parts) or None


def _first(names: list[str], shown: int = 3) -> str:
    """``a, b, c and 12 more``: a message stays one short line for thousands of names."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(str(n)[:80] for n in names[:shown]) + more


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> dict:
    """The optimizer's full state dict in ``optimizer.state_dict()``'s own format (parameters
    numbered in param-group order), so a checkpoint does not depend on how it was trained.

    Sharded, this is a collective (rank 0 gets the tensors on the CPU, the others ``{}``):
    torch's ``get_optimizer_state_dict`` gathers the shards but keys parameters by name; they
    are renumbered here. An optimizer without state yet (the checkpoint of the step-0
    evaluation) is saved as is: ``get_optimizer_state_dict`` would create its state by taking a
    zero step, which advances Adam's step count and breaks equality with one process.
    """
    if not sharded or not optimizer.state:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))
    if not by_name:
        return {}
    ids: dict[str, int] = {}
    groups = []
    for group in by_name["param_groups"]:
        numbered = [ids.setdefault(name, len(ids)) for name in group["params"]]
        groups.append({**group, "params": numbered})
    return {"state": {ids[n]: s for n, s in by_name["state"].items()}, "param_groups": groups}


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, sharded: bool
) -> None:
    """Load an ``optimizer.state_dict()``-format dict (from :func:`optimizer_state` or one
    process). Sharded, parameter numbers become names (the optimizer's param-group order,
    which :func:`~vlab.training.engine.make_optimizer` makes the same in every process) and
    ``set_optimizer_state_dict`` keeps each rank's shard of every moment.

    Not strict: a trainable parameter that never received a gradient (an unused pooler head)
    has no Adam state in any format, which is not an error.
    """
    if not sharded or not state["state"]:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    names = {id(p): n for n, p in model.named_parameters()}
    saved, current = state["param_groups"], optimizer.param_groups
    sizes = ([len(g["params"]) for g in saved], [len(g["params"]) for g in current])
    if sizes[0] != sizes[1]:
        raise ValueError(
            f"checkpoint optimizer has param groups of sizes {sizes[0]}, not {sizes[1]}"
        )
    by_id = {}
    groups = []
    for old, new in zip(saved, current, strict=True):
        fqns = [names[id(p)] for p in new["params"]]
        by_id.update(zip(old["params"], fqns, strict=True))
        groups.append({**old, "params": fqns})
    by_name = {"state": {by_id[i]: s for i, s in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, by_name, options=_full_options(strict=False))
