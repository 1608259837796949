"""One record per architecture: what the rest of vlab needs to know about an arm, in one place.

Each family module (``neox``, ``mamba``, ``mamba2``, ``hybrid``) ends with ``FAMILY =
Family(...)``: its presets and ``transformers`` hooks, how reports name and colour it, the HF
``model_type`` it builds, where its named activations live (module paths as strings, as
TransformerLens's per-architecture adapters hold them), which kinds of blocks it has and how
each is read, and the flags the benchmark keys on. Analysis, benchmark and plotting code read
these records and name no architecture, so adding an arm is one family file (plus an
internals module for a new kind of SSM mixer) and its registration in
:mod:`vlab.models.backbones`.

torch-free on purpose: configs, ``vlab --help`` and the report import it without torch; a
block's ``internals`` is a dotted module name imported only when an analysis needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Readout = Literal["attention", "hidden_attention"]
READOUTS: tuple[str, ...] = ("attention", "hidden_attention")
# Names every block has; a block's ``sites`` must hold the hooked ones.
BLOCK_NAMES = ("blocks.{i}.mixer_in", "blocks.{i}.mixer_out", "blocks.{i}.resid_post")
GLOBAL_NAMES = ("embed", "final_norm", "logits")


@dataclass(frozen=True)
class Site:
    """Where a named activation lives: the output of ``module`` (a dotted path with ``{i}`` for
    the layer), element ``index`` when that output is a tuple."""

    module: str
    index: int | None = None


@dataclass(frozen=True)
class Block:
    """One kind of block as a family lays it out.

    ``kind``: the mixer it has, ``attention``, ``mamba`` (Mamba-1) or ``mamba2``; two families
    may share a kind with different module paths (GPT-NeoX's attention block and the hybrid's).
    ``sites``: activation name template -> :class:`Site`, in the order a forward pass reaches
    them (nnsight reads a run's activations in execution order). ``readout``: how the
    attention analysis reads where the block looks, ``attention`` (its softmax pattern, site
    ``blocks.{i}.attn.pattern``) or ``hidden_attention`` (its SSM's implicit attention).
    ``internals``: for an SSM block, the dotted name of the module that recomputes its scan
    from the mixer's input (``mixer_internals``, ``scan_states``, ``readout``,
    ``mixer_output``, ``last_row``, ``computed``, ``output_with_state``, and for the causal
    conv's window, the other half of what a position passes on, ``conv_window`` and
    ``output_with_patch``); None otherwise.
    """

    kind: str
    sites: Mapping[str, Site]
    readout: Readout
    internals: str | None = None

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise ValueError(f"block {self.kind!r}: readout {self.readout!r} not in {READOUTS}")
        missing = [n for n in BLOCK_NAMES if n not in self.sites]
        if missing:
            raise ValueError(f"block {self.kind!r} has no site for {missing[0]}")
        if self.readout == "hidden_attention" and self.internals is None:
            raise ValueError(f"block {self.kind!r}: hidden attention needs an internals module")
        if self.readout == "attention" and "blocks.{i}.attn.pattern" not in self.sites:
            raise ValueError(f"block {self.kind!r}: attention readout needs attn.pattern")


@dataclass(frozen=True)
class Family:
    """Everything vlab keys by architecture, for one arm.

    Model: ``arch`` (the config's ``model.arch``), ``model_type`` (``config.model_type`` of
    the models it builds and of checkpoints it loads), ``presets`` (named shapes),
    ``defaults`` (set under every preset), ``hf_config(preset, **overrides)`` (the
    ``transformers`` config), ``model_kwargs(attn_implementation)``, ``prepare()`` (run
    before building), ``check_settings(settings, field)`` (plain-data checks, or None).

    Reports: ``name`` ("Mamba-2"), ``vlm_name`` ("Mamba2-VL"), ``color`` (one hex colour in
    every figure).

    Looking inside: ``blocks`` (every kind of block it has), ``global_sites`` (``embed``,
    ``final_norm``, ``logits``), ``layer_kind(config, layer)`` (the kind of block at a layer;
    None when every layer is ``blocks[0]``).

    Benchmark: ``baseline`` (the arm others' speed ratios are against: exactly one family),
    ``selective_scan`` (its recurrent layers run vlab's Mamba-1 selective scan, so its rows
    name the scan backend), ``scan_comparison`` (the arm whose training is also timed on the
    reference scan, and whose presets give the scan-alone shapes: exactly one family).
    """

    arch: str
    model_type: str
    name: str
    vlm_name: str
    color: str
    presets: Mapping[str, dict]
    defaults: Mapping[str, Any]
    hf_config: Callable[..., Any]
    model_kwargs: Callable[[str], dict]
    prepare: Callable[[], None]
    blocks: tuple[Block, ...]
    global_sites: Mapping[str, Site]
    check_settings: Callable[[dict, str], None] | None = None
    layer_kind: Callable[[Any, int], str] | None = None
    baseline: bool = False
    selective_scan: bool = False
    scan_comparison: bool = False

    def __post_init__(self) -> None:
        kinds = [b.kind for b in self.blocks]
        if not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"family {self.arch!r}: blocks must be distinct kinds, got {kinds}")
        if len(kinds) > 1 and self.layer_kind is None:
            raise ValueError(f"family {self.arch!r} has {kinds}: it needs a layer_kind")
        missing = [n for n in GLOBAL_NAMES if n not in self.global_sites]
        if missing:
            raise ValueError(f"family {self.arch!r} has no site for {missing[0]}")

    @property
    def block_kinds(self) -> tuple[str, ...]:
        """The kinds of block this family's models have."""
        return tuple(b.kind for b in self.blocks)

    def block(self, kind: str) -> Block:
        """The block record of ``kind`` (KeyError when the family has none)."""
        for b in self.blocks:
            if b.kind == kind:
                return b
        raise KeyError(f"a {self.arch} model has no {kind!r} block ({', '.join(self.block_kinds)})")

    def kind_at(self, config: Any, layer: int) -> str:
        """The kind of block at ``layer`` of a model with ``transformers`` config ``config``."""
        if self.layer_kind is None:
            return self.blocks[0].kind
        return self.layer_kind(config, layer)
