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

Transformer arms (GPT-NeoX / Pythia) also have::

    blocks.{i}.attn.pattern  (B, heads, T_query, T_key)  softmax attention weights
    blocks.{i}.mlp_in        (B, T, H)  the MLP's normed input (GPT-NeoX: parallel residual)
    blocks.{i}.mlp_out       (B, T, H)

SSM arms (Mamba) also have, computed by vlab from ``mixer_in`` (nnsight cannot reach them:
transformers runs the conv and the scan as functions, not modules; each is tested against the
mixer's own output)::

    blocks.{i}.ssm.x         (B, D, T)  the scan's input (after the causal conv and SiLU)
    blocks.{i}.ssm.z         (B, D, T)  the gate
    blocks.{i}.ssm.delta     (B, D, T)  the discretisation step (after softplus)
    blocks.{i}.ssm.B         (B, N, T)  input-dependent B
    blocks.{i}.ssm.C         (B, N, T)  input-dependent C
    blocks.{i}.ssm.state     (B, D, N, T)  the recurrent state h_t after each position
    blocks.{i}.ssm.hidden_attention  (B, D, T, T)  the scan as attention over past positions

nnsight (not TransformerLens) because it wraps our own HF models as they are (any module,
exact, no conversion of weights) and is light to install; see the README's "Looking inside".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vlab.errors import VlabError


@dataclass(frozen=True)
class Site:
    """Where a named activation lives: the output of ``module`` (a dotted path with ``{i}`` for
    the layer), element ``index`` when that output is a tuple."""

    module: str
    index: int | None = None


# Per ``model_type``: the hooked sites of one block, in the order a forward pass reaches them
# (nnsight requires reading a run's activations in execution order), and the global ones.
_EMBED = "embed"
_FINAL = ("final_norm", "logits")
FAMILY_SITES: dict[str, dict[str, Site]] = {
    "gpt_neox": {
        "embed": Site("gpt_neox.embed_in"),
        "blocks.{i}.mixer_in": Site("gpt_neox.layers.{i}.input_layernorm"),
        "blocks.{i}.mixer_out": Site("gpt_neox.layers.{i}.attention", 0),
        "blocks.{i}.attn.pattern": Site("gpt_neox.layers.{i}.attention", 1),
        "blocks.{i}.mlp_in": Site("gpt_neox.layers.{i}.post_attention_layernorm"),
        "blocks.{i}.mlp_out": Site("gpt_neox.layers.{i}.mlp"),
        "blocks.{i}.resid_post": Site("gpt_neox.layers.{i}", 0),
        "final_norm": Site("gpt_neox.final_layer_norm"),
        "logits": Site("lm_head"),
    },
    "mamba": {
        "embed": Site("backbone.embeddings"),
        "blocks.{i}.mixer_in": Site("backbone.layers.{i}.norm"),
        "blocks.{i}.mixer_out": Site("backbone.layers.{i}.mixer", 0),
        "blocks.{i}.resid_post": Site("backbone.layers.{i}", 0),
        "final_norm": Site("backbone.norm_f"),
        "logits": Site("lm_head"),
    },
}
# Computed by vlab's own code from ``blocks.{i}.mixer_in`` (see module docstring).
SSM_NAMES = ("x", "z", "delta", "B", "C", "state", "hidden_attention")
COMPUTED: dict[str, tuple[str, ...]] = {"mamba": tuple(f"blocks.{{i}}.ssm.{n}" for n in SSM_NAMES)}

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def model_type(model: nn.Module) -> str:
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in FAMILY_SITES:
        known = ", ".join(FAMILY_SITES)
        raise VlabError(f"no activation names for a {kind!r} model (known: {known})")
    return kind


def num_layers(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def activation_names(model: nn.Module) -> list[str]:
    """Every activation name the model has, in the order a forward pass produces them."""
    kind = model_type(model)
    sites = FAMILY_SITES[kind]
    block = [n for n in sites if n.startswith("blocks.")]
    names = [_EMBED]
    for i in range(num_layers(model)):
        names.append(f"blocks.{i}.resid_pre")
        names += [n.format(i=i) for n in block if not n.endswith("resid_post")]
        names += [n.format(i=i) for n in COMPUTED.get(kind, ())]
        names.append(f"blocks.{i}.resid_post")
    return [*names, *_FINAL]


def _template(name: str) -> tuple[str, int | None]:
    """("blocks.{i}.mixer_in", 3) for "blocks.3.mixer_in"; (name, None) for global names."""
    match = _BLOCK.match(name)
    if match is None:
        return name, None
    return f"blocks.{{i}}.{match.group(2)}", int(match.group(1))


def _hooked(model: nn.Module, name: str) -> tuple[str, int | None, Site]:
    """The hooked name that holds ``name`` (aliases and computed names resolved to it)."""
    kind = model_type(model)
    template, layer = _template(name)
    if layer is not None and not 0 <= layer < num_layers(model):
        raise VlabError(f"activation {name!r}: the model has layers 0..{num_layers(model) - 1}")
    if template == "blocks.{i}.resid_pre":  # the input of block i is the output before it
        return _hooked(model, _EMBED if layer == 0 else f"blocks.{layer - 1}.resid_post")
    if template in COMPUTED.get(kind, ()):
        return _hooked(model, f"blocks.{layer}.mixer_in")
    site = FAMILY_SITES[kind].get(template)
    if site is None:
        raise VlabError(
            f"unknown activation {name!r} for a {kind} model; see "
            "vlab.analysis.inside.activations.activation_names(model)"
        )
    hooked = name if layer is None else template.replace("{i}", str(layer))
    return hooked, layer, site


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
    """Replace the SSM state of block ``layer`` after sequence ``position`` by ``state``
    (B, D, N): the mixer's output from ``position`` on reads the replaced state."""

    layer: int
    position: int
    state: torch.Tensor


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


def trace(
    model: nn.Module,
    input_ids: torch.Tensor,
    names: Sequence[str] = (),
    patches: Sequence[Patch] = (),
    state_patches: Sequence[StatePatch] = (),
) -> dict[str, torch.Tensor]:
    """One forward pass of ``input_ids`` (B, T) (or of input embeddings (B, T, H), a float
    tensor, as a VLM feeds its LM; ``embed`` is then that input): the activations ``names``
    (detached, in the
    model's dtype) with ``patches`` applied, plus ``"logits"`` (B, T, V) always.

    Computed SSM names (``blocks.{i}.ssm.*``) come from the captured ``mixer_in``; patches
    apply to hooked or aliased names only (``resid_pre``, ``resid_post``, ``mixer_out``, ...);
    ``state_patches`` replace an SSM arm's recurrent state (see :class:`StatePatch`).
    """
    from nnsight import NNsight

    from vlab.analysis.inside import ssm

    wanted = {n: _hooked(model, n) for n in names}
    patch_at: dict[str, list[Patch]] = {}
    for patch in patches:
        hooked, _, _ = _hooked(model, patch.name)
        if _template(patch.name)[0] in COMPUTED.get(model_type(model), ()):
            raise VlabError(f"{patch.name!r} is computed by vlab, not a hook: it cannot be patched")
        patch_at.setdefault(hooked, []).append(patch)
    state_at: dict[str, StatePatch] = {}
    for patch in state_patches:
        if model_type(model) not in COMPUTED:
            raise VlabError(f"a {model_type(model)} model has no SSM state to patch")
        _hooked(model, f"blocks.{patch.layer}.mixer_in")  # checks the layer
        state_at[f"blocks.{patch.layer}.mixer_out"] = patch
    needed = [h for h, _, _ in wanted.values()] + list(patch_at) + ["logits"]
    for p in state_at.values():
        needed += [f"blocks.{p.layer}.mixer_in", f"blocks.{p.layer}.mixer_out"]
    hooked_names = _order(model, needed)
    captured: dict[str, torch.Tensor] = {}
    input_ids = input_ids.to(_device(model))
    if input_ids.is_floating_point():  # embeddings given: ``embed`` is the input itself
        input_ids = input_ids.clone()
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
                        new = ssm.output_with_state(
                            mixer(model, sp.layer), mixer_in, sp.position, sp.state.to(mixer_in)
                        )
                        value[:] = new.to(value.dtype)
                    captured[hooked] = value.detach().clone().save()
    out = {}
    for name, (hooked, layer, _) in wanted.items():
        template, _ = _template(name)
        if template in COMPUTED.get(model_type(model), ()):
            out[name] = ssm.computed(mixer(model, layer), captured[hooked], name.split(".")[-1])
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
    norm and unembedding: the logit lens."""
    return module(model, "logits")(module(model, "final_norm")(resid))


def mixer(model: nn.Module, layer: int) -> nn.Module:
    """Block ``layer``'s sequence mixer (the attention or SSM module)."""
    path = FAMILY_SITES[model_type(model)]["blocks.{i}.mixer_out"].module
    return _module(model, path.replace("{i}", str(layer)))
