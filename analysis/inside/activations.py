"""Activations with stable names, for every arm, read and patched through nnsight.

A name means the same thing in every architecture, so an analysis written once runs on all of
them (shapes: B batch, T sequence positions, H hidden size, V vocabulary, D the Mamba mixer's
inner width, N its state size)::

    embed                    (B, T, H)  token embeddings: the residual stream before block 0
    blocks.{i}.resid_pre     (B, T, H)  the residual stream entering block i
    blocks.{i}.mixer_in      (B, T, H)  the normed input of block i's sequence mixer
    blocks.{i}.mixer_out     (B, T, H)  the mixer's output (attention or SSM), before it is
                                        added to the residual stream
    blocks.{i}.resid_post    (B, T, H)  the residual stream leaving block i
    final_norm               (B, T, H)  the residual stream after the final norm
    logits                   (B, T, V)

What else a block has depends on its kind (:func:`block_kind`), so names are listed per layer
(:func:`activation_names` says exactly what each layer has, in execution order). Blocks with
attention (every GPT-NeoX / Pythia block; the hybrid's attention blocks) also have::

    blocks.{i}.attn.pattern  (B, heads, T_query, T_key)  softmax attention weights (read on the
                                        eager attention path, switched on for the trace only)

GPT-NeoX blocks also have::

    blocks.{i}.mlp_in        (B, T, H)  the MLP's normed input (GPT-NeoX: parallel residual)
    blocks.{i}.mlp_out       (B, T, H)

Mamba-1 blocks (every ``mamba`` block; the hybrid's Mamba blocks) also have, computed by vlab
from ``mixer_in`` (nnsight cannot reach them: transformers runs the conv and the scan as
functions, not modules; each is tested against the mixer's own output; see
:mod:`vlab.models.backbones.mamba_internals`)::

    blocks.{i}.ssm.x         (B, D, T)  the scan's input (after the causal conv and SiLU)
    blocks.{i}.ssm.z         (B, D, T)  the gate
    blocks.{i}.ssm.delta     (B, D, T)  the discretisation step (after softplus)
    blocks.{i}.ssm.B         (B, N, T)  input-dependent B
    blocks.{i}.ssm.C         (B, N, T)  input-dependent C
    blocks.{i}.ssm.state     (B, D, N, T)  the recurrent state h_t after each position
    blocks.{i}.ssm.hidden_attention  (B, D, T, T)  the scan as attention over past positions
    blocks.{i}.ssm.conv_window  (B, D, K-1, T)  the causal conv's window after each position:
                                        the pre-conv inputs of positions t-K+2..t (zeros
                                        before 0) that the conv (kernel K) still reads after
                                        t; with ``state`` it is all that positions after t
                                        receive from positions up to t

Mamba-2 blocks (``mamba2``) have the same ``ssm.*`` names, per head (heads x P = D channels,
G groups sharing B and C; :mod:`vlab.models.backbones.mamba2_internals`)::

    blocks.{i}.ssm.x, ssm.z  (B, heads, P, T)
    blocks.{i}.ssm.delta     (B, heads, T)
    blocks.{i}.ssm.B, ssm.C  (B, G, N, T)
    blocks.{i}.ssm.state     (B, heads, P, N, T)
    blocks.{i}.ssm.hidden_attention  (B, heads, T, T)  before the gated norm
    blocks.{i}.ssm.conv_window  (B, conv_dim, K-1, T)  the window of the pre-conv ``xBC``
                                        (conv_dim = heads x P + 2 x G x N channels)

Which arm has which blocks, and where each name lives in its modules, is the arm's family
record (``vlab.models.backbones.<family>.FAMILY``: ``blocks``, ``layer_kind``,
``global_sites``), not this module: ``pythia`` GPT-NeoX attention blocks, ``mamba`` Mamba-1
blocks, ``mamba2`` Mamba-2 blocks, ``hybrid`` Mamba-1 blocks with attention blocks at
``config.attention_layers`` (tiny preset: layer 0 Mamba, layer 1 attention). Asking a layer
for a name of another kind of block is a one-line error naming the layer and what it has.

nnsight (not TransformerLens) because it wraps our own HF models as they are (any module,
exact, no conversion of weights) and is light to install; see the README's "Looking inside".
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from vlab.errors import VlabError
from vlab.models.backbones import families, family_of_model_type
from vlab.models.backbones.family import Block, Family, Site

# Where each name lives is the family's business: every arm's record
# (``vlab.models.backbones.<family>.FAMILY``) holds its blocks' sites and global sites as
# module paths, and, for an SSM block, the module that computes the names below from
# ``blocks.{i}.mixer_in`` (``computed``, ``output_with_state``; see the module docstring).
SSM_NAMES = ("x", "z", "delta", "B", "C", "state", "hidden_attention", "conv_window")
_SSM = tuple(f"blocks.{{i}}.ssm.{n}" for n in SSM_NAMES)

_EMBED = "embed"
_FINAL = ("final_norm", "logits")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_PRE, _POST = "blocks.{i}.resid_pre", "blocks.{i}.resid_post"


def family_of(model: nn.Module) -> Family:
    """The record of the arm ``model`` belongs to, found by its ``config.model_type``."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    found = family_of_model_type(kind)
    if found is None:
        known = ", ".join(f.model_type for f in families())
        raise VlabError(f"no activation names for a {kind!r} model (known: {known})")
    return found


def model_type(model: nn.Module) -> str:
    """The model's ``config.model_type``, one vlab has names for."""
    return family_of(model).model_type


def num_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def block_kind(model: nn.Module, layer: int) -> str:
    """What block ``layer`` is: ``attention``, ``mamba`` (Mamba-1) or ``mamba2``, as the
    family's record says (a hybrid's layers differ; other models' are all one kind)."""
    return family_of(model).kind_at(model.config, layer)


def block(model: nn.Module, layer: int) -> Block:
    """The record of block ``layer``: its sites, read-out and internals module, in the
    layout of the model's family."""
    return family_of(model).block(block_kind(model, layer))


def _computed_names(spec: Block) -> tuple[str, ...]:
    """The names vlab computes for a block: the SSM names where it has internals."""
    return _SSM if spec.internals is not None else ()


def block_templates(model: nn.Module, layer: int) -> list[str]:
    """The names of block ``layer`` with ``{i}`` for the layer, in execution order:
    ``resid_pre``, the hooked sites, the computed names, ``resid_post``."""
    spec = block(model, layer)
    hooked = [n for n in spec.sites if n != _POST]
    return [_PRE, *hooked, *_computed_names(spec), _POST]


def activation_names(model: nn.Module) -> list[str]:
    """Every activation name the model has, in the order a forward pass produces them."""
    names = [_EMBED]
    for i in range(num_layers(model)):
        names += [t.replace("{i}", str(i)) for t in block_templates(model, i)]
    return [*names, *_FINAL]


def layers_with(model: nn.Module, suffix: str) -> list[int]:
    """The layers whose block has ``blocks.{i}.<suffix>`` (``ssm.state``, ``attn.pattern``)."""
    template = f"blocks.{{i}}.{suffix}"
    return [i for i in range(num_layers(model)) if template in block_templates(model, i)]


def _template(name: str) -> tuple[str, int | None]:
    """("blocks.{i}.mixer_in", 3) for "blocks.3.mixer_in"; (name, None) for global names."""
    match = _BLOCK.match(name)
    if match is None:
        return name, None
    return f"blocks.{{i}}.{match.group(2)}", int(match.group(1))


def _is_computed(model: nn.Module, name: str) -> bool:
    template, layer = _template(name)
    return layer is not None and template in _computed_names(block(model, layer))


def _missing(model: nn.Module, name: str, layer: int) -> VlabError:
    """The one-line error for a name block ``layer`` lacks: what the layer is and has, and
    which layers have the name (when some do)."""
    template, _ = _template(name)
    suffix = template.removeprefix("blocks.{i}.")
    has = ", ".join(t.removeprefix("blocks.{i}.") for t in block_templates(model, layer))
    where = layers_with(model, suffix)
    elsewhere = f"; {suffix} is at layers {where}" if where else ""
    return VlabError(
        f"unknown activation {name!r}: {_layer_is(model, layer)}, which has {has}{elsewhere}"
    )


def _layer_is(model: nn.Module, layer: int) -> str:
    """'layer 1 of this vlab_hybrid model is an attention block': for error messages."""
    kind = block_kind(model, layer)
    article = "an" if kind[0] in "aeiou" else "a"
    return f"layer {layer} of this {model_type(model)} model is {article} {kind} block"


def _hooked(model: nn.Module, name: str) -> tuple[str, int | None, Site]:
    """The hooked name that holds ``name`` (aliases and computed names resolved to it)."""
    kind = model_type(model)
    template, layer = _template(name)
    if layer is None:
        site = family_of(model).global_sites.get(name)
        if site is None:
            raise VlabError(
                f"unknown activation {name!r} for a {kind} model; see "
                "vlab.analysis.inside.activations.activation_names(model)"
            )
        return name, None, site
    if not 0 <= layer < num_layers(model):
        raise VlabError(f"activation {name!r}: the model has layers 0..{num_layers(model) - 1}")
    if template == _PRE:  # the input of block i is the output before it
        return _hooked(model, _EMBED if layer == 0 else f"blocks.{layer - 1}.resid_post")
    if _is_computed(model, name):
        return _hooked(model, f"blocks.{layer}.mixer_in")
    site = block(model, layer).sites.get(template)
    if site is None:
        raise _missing(model, name, layer)
    return template.replace("{i}", str(layer)), layer, site


def _order(model: nn.Module, hooked: Iterable[str]) -> list[str]:
    """Hooked names sorted into execution order."""
    position = {n: k for k, n in enumerate(activation_names(model))}
    return sorted(set(hooked), key=position.__getitem__)


def _module(envoy, path: str):
    for part in path.split("."):
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


@dataclass(frozen=True)
class Patch:
    """Replace activation ``name`` at sequence ``positions`` by ``values``
    (B, len(positions), ...): the rest of the forward pass sees the replacement."""

    name: str
    positions: Sequence[int]
    values: torch.Tensor


@dataclass(frozen=True)
class StatePatch:
    """Replace what block ``layer``'s SSM carries past sequence ``position``: its state by
    ``state`` (B, D, N for a Mamba-1 block, B, heads, P, N for a Mamba-2 block) and/or its
    conv window by ``window`` (B, D, K-1 or B, conv_dim, K-1: ``ssm.conv_window[..., t]``);
    None keeps the run's own. The mixer's output from ``position`` on reads the replaced
    state, from ``position + 1`` on the replaced window; both together replace everything
    later positions receive from positions up to ``position`` through this mixer."""

    layer: int
    position: int
    state: torch.Tensor | None
    window: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.state is None and self.window is None:
            raise VlabError(f"StatePatch of layer {self.layer}: give a state, a window or both")


def _needs_eager(model: nn.Module, hooked: Iterable[str]) -> bool:
    return any(n.endswith("attn.pattern") for n in hooked) and (
        getattr(model.config, "_attn_implementation", "eager") != "eager"
    )


class _Eager:
    """Attention weights exist only on the eager path: switch to it for one trace."""

    def __init__(self, model: nn.Module, needed: bool):
        self.model, self.needed = model, needed
        self.before = getattr(model.config, "_attn_implementation", None)

    def __enter__(self):
        if self.needed:
            self.model.set_attn_implementation("eager")

    def __exit__(self, *exc):
        if self.needed:
            self.model.set_attn_implementation(self.before)


def ssm_module(model: nn.Module, layer: int) -> ModuleType:
    """The vlab module that computes block ``layer``'s ``ssm.*`` names, the block record's
    ``internals`` (:mod:`~vlab.models.backbones.mamba_internals` for Mamba-1,
    :mod:`~vlab.models.backbones.mamba2_internals` for Mamba-2): each has
    ``mixer_internals``, ``scan_states``, ``last_row``, ``computed`` and
    ``output_with_state``."""
    internals = block(model, layer).internals
    if internals is None:
        raise VlabError(
            f"{_layer_is(model, layer)}: it has no SSM state to patch or compute "
            f"(SSM layers: {layers_with(model, 'ssm.state')})"
        )
    return importlib.import_module(internals)


def output_with_state(
    model: nn.Module, layer: int, mixer_in: torch.Tensor, position: int, state: torch.Tensor
) -> torch.Tensor:
    """Block ``layer``'s mixer output (B, T, H) on ``mixer_in`` (B, T, H) with its SSM state
    after ``position`` replaced by ``state`` (see :class:`StatePatch`)."""
    module = ssm_module(model, layer)
    state = state.to(mixer_in.device)
    return module.output_with_state(mixer(model, layer), mixer_in, position, state)


def output_with_patch(
    model: nn.Module,
    layer: int,
    mixer_in: torch.Tensor,
    position: int,
    state: torch.Tensor | None = None,
    window: torch.Tensor | None = None,
) -> torch.Tensor:
    """Block ``layer``'s mixer output (B, T, H) on ``mixer_in`` (B, T, H) with its SSM state
    and/or conv window after ``position`` replaced (see :class:`StatePatch`; None keeps the
    run's own; the state is used in float32 whatever the model's dtype)."""
    state = None if state is None else state.to(mixer_in.device)
    window = None if window is None else window.to(mixer_in.device)
    module = ssm_module(model, layer)
    return module.output_with_patch(mixer(model, layer), mixer_in, position, state, window)


def outputs_with_patches(
    model: nn.Module,
    layer: int,
    mixer_in: torch.Tensor,
    states: torch.Tensor | None = None,
    windows: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`output_with_patch` at every position t, (B, T, T, H): ``[:, t]`` with the state
    after t replaced by ``states[..., t]`` (``ssm.state``) and/or the conv window by
    ``windows[..., t]`` (``ssm.conv_window``), what patching each position needs; the run's
    own scan is computed once for all positions."""
    states = None if states is None else states.to(mixer_in.device)
    windows = None if windows is None else windows.to(mixer_in.device)
    module = ssm_module(model, layer)
    return module.outputs_with_patches(mixer(model, layer), mixer_in, states, windows)


def _state_targets(model: nn.Module, patches: Sequence[StatePatch]) -> dict[str, StatePatch]:
    """The state patches by the ``mixer_out`` they replace, each checked to have a state."""
    out = {}
    for patch in patches:
        _hooked(model, f"blocks.{patch.layer}.mixer_in")  # checks the layer
        if not layers_with(model, "ssm.state"):
            raise VlabError(f"a {model_type(model)} model has no SSM state to patch")
        ssm_module(model, patch.layer)  # checks that this layer has one
        out[f"blocks.{patch.layer}.mixer_out"] = patch
    return out


def trace(
    model: nn.Module,
    input_ids: torch.Tensor,
    names: Sequence[str] = (),
    patches: Sequence[Patch] = (),
    state_patches: Sequence[StatePatch] = (),
    logits_to_keep: int = 0,
) -> dict[str, torch.Tensor]:
    """One forward pass of ``input_ids`` (B, T) (or of input embeddings (B, T, H), a float
    tensor, as a VLM feeds its LM, cast to the model's dtype; ``embed`` is then that input):
    the activations ``names`` (detached, in the model's dtype) with ``patches`` applied, plus
    ``"logits"`` (B, T, V) always, or (B, k, V) of the last k positions with
    ``logits_to_keep=k`` (the unembedding then runs on those rows alone: at a 50k
    vocabulary the full logits of a batch are gigabytes).

    Computed SSM names (``blocks.{i}.ssm.*``) come from the captured ``mixer_in``; patches
    apply to hooked or aliased names only (``resid_pre``, ``resid_post``, ``mixer_out``, ...);
    ``state_patches`` replace an SSM block's recurrent state and/or conv window (see
    :class:`StatePatch`).
    """
    from nnsight import NNsight

    wanted = {n: _hooked(model, n) for n in names}
    patch_at: dict[str, list[Patch]] = {}
    for patch in patches:
        hooked, _, _ = _hooked(model, patch.name)
        if _is_computed(model, patch.name):
            raise VlabError(f"{patch.name!r} is computed by vlab, not a hook: it cannot be patched")
        patch_at.setdefault(hooked, []).append(patch)
    state_at = _state_targets(model, state_patches)
    needed = [h for h, _, _ in wanted.values()] + list(patch_at) + ["logits"]
    for p in state_at.values():
        needed += [f"blocks.{p.layer}.mixer_in", f"blocks.{p.layer}.mixer_out"]
    hooked_names = _order(model, needed)
    captured: dict[str, torch.Tensor] = {}
    input_ids = input_ids.to(_device(model))
    if input_ids.is_floating_point():  # embeddings given: ``embed`` is the input itself
        input_ids = input_ids.to(model.get_input_embeddings().weight.dtype, copy=True)
        for patch in patch_at.get(_EMBED, []):
            input_ids[:, list(patch.positions)] = patch.values.to(input_ids)
        captured[_EMBED] = input_ids.detach().clone()
        hooked_names = [n for n in hooked_names if n != _EMBED]
    # several names can share one module output (the attention module's output and weights)
    by_module: dict[str, list[str]] = {}
    for hooked in hooked_names:
        _, layer, site = _hooked(model, hooked)
        path = site.module.replace("{i}", str(layer)) if layer is not None else site.module
        by_module.setdefault(path, []).append(hooked)
    wrapped = NNsight(model)
    with _Eager(model, _needs_eager(model, hooked_names)), torch.no_grad():
        inputs = (
            {"inputs_embeds": input_ids}
            if input_ids.is_floating_point()
            else {"input_ids": input_ids}
        )
        if logits_to_keep:
            inputs["logits_to_keep"] = logits_to_keep
        with wrapped.trace(**inputs):
            for path, group in by_module.items():
                output = _module(wrapped, path).output
                for hooked in group:
                    _, _, site = _hooked(model, hooked)
                    value = output[site.index] if isinstance(output, tuple) else output
                    for patch in patch_at.get(hooked, []):
                        value[:, list(patch.positions)] = patch.values.to(value)
                    if hooked in state_at:
                        sp = state_at[hooked]
                        mixer_in = captured[f"blocks.{sp.layer}.mixer_in"]
                        new = output_with_patch(
                            model, sp.layer, mixer_in, sp.position, sp.state, sp.window
                        )
                        value[:] = new.to(value.dtype)
                    captured[hooked] = value.detach().clone().save()
    out = {}
    for name, (hooked, layer, _) in wanted.items():
        if _is_computed(model, name):
            compute = ssm_module(model, layer).computed
            out[name] = compute(mixer(model, layer), captured[hooked], name.split(".")[-1])
        else:
            out[name] = captured[hooked]
    out["logits"] = captured["logits"]
    return out


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def module(model: nn.Module, name: str) -> nn.Module:
    """The module whose output is activation ``name`` (e.g. ``final_norm`` for the logit
    lens, ``blocks.0.mixer_out`` for the mixer)."""
    hooked, layer, site = _hooked(model, name)
    path = site.module if layer is None else site.module.replace("{i}", str(layer))
    return _module(model, path)


def unembed(model: nn.Module, resid: torch.Tensor) -> torch.Tensor:
    """Logits (..., V) read off a residual-stream vector (..., H) through the model's final
    norm and unembedding: the logit lens. The normed stream is cast to the unembedding's dtype
    as the models' own forward does (a Mamba's residual stream stays float32 in bfloat16)."""
    head = module(model, "logits")
    normed = module(model, "final_norm")(resid)
    return head(normed.to(next(head.parameters()).dtype))


def mixer(model: nn.Module, layer: int) -> nn.Module:
    """Block ``layer``'s sequence mixer (the attention or SSM module)."""
    path = block(model, layer).sites["blocks.{i}.mixer_out"].module
    return _module(model, path.replace("{i}", str(layer)))
