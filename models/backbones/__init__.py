"""Language-model backbones: GPT-NeoX (Pythia) and Mamba through Hugging Face ``transformers``.

One module per family (``neox``, ``mamba``, ``mamba2``, ``hybrid``) holds its presets, its
``transformers`` config and its record (``FAMILY``, a :class:`~.family.Family`: names, colour,
activation sites, block kinds, benchmark flags), which analysis, benchmark and plotting code
read instead of naming arms (:func:`families`, :func:`family`, :func:`family_of_model_type`);
this module builds any of them, adds task tokens, and reads decoding arguments off a model.
torch and transformers are imported only when a model is built, so configs validate (and the
``vlab`` commands that only read them run) without them.

A backbone is chosen by architecture and either a named size preset (tiny CPU shapes, the
papers' Pythia / Mamba shapes; random init) or a local directory holding a ``save_pretrained``
checkpoint (loaded with ``from_pretrained``, never from a hub). New special tokens are added by
resizing the embeddings; the new rows are initialised by a configurable scheme and seed while
the old rows are kept bit for bit.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from vlab.errors import ConfigError
from vlab.models.backbones.family import Family

if TYPE_CHECKING:
    import torch
    from torch import nn

Arch = str  # one of FAMILIES (checked by BackboneConfig)
InitScheme = Literal["normal", "mean", "uniform"]

# One module per family, in the order reports list the arms (the baseline Transformer first):
# adding an arm is its family file and one name here. An arch name picks its family.
FAMILY_MODULES = ("neox", "mamba", "mamba2", "hybrid")
FAMILIES = {
    module.FAMILY.arch: module
    for module in (importlib.import_module(f"{__name__}.{name}") for name in FAMILY_MODULES)
}
PRESETS: dict[str, dict[str, dict]] = {arch: family.PRESETS for arch, family in FAMILIES.items()}


def families() -> tuple[Family, ...]:
    """Every arm's record (:class:`~vlab.models.backbones.family.Family`), in ``FAMILIES``
    order: the baseline Transformer first, as reports list the arms."""
    return tuple(module.FAMILY for module in FAMILIES.values())


def family(arch: str) -> Family:
    """The record of arm ``arch`` (field ``model.arch`` on error)."""
    if arch not in FAMILIES:
        raise ConfigError("model.arch", f"{arch!r} is not one of {', '.join(FAMILIES)}")
    return FAMILIES[arch].FAMILY


def family_of_model_type(model_type: str | None) -> Family | None:
    """The record of the arm that builds ``config.model_type`` ``model_type`` (None if none
    does): how code holding only a model finds its family."""
    return next((f for f in families() if f.model_type == model_type), None)


def flagged(flag: str) -> Family:
    """The one family whose record sets ``flag`` (``baseline``, ``scan_comparison``): the
    benchmark's references, chosen by the records rather than by name."""
    found = [f for f in families() if getattr(f, flag)]
    if len(found) != 1:
        raise ValueError(f"{len(found)} families set {flag!r}; exactly one must")
    return found[0]


@dataclass(frozen=True)
class BackboneConfig:
    """Which LM to build and how to initialise the rows of tokens added for a task.

    ``pretrained`` is a local directory with a ``save_pretrained`` checkpoint; when set it
    replaces ``preset``, and its config.json's ``model_type`` must be the arch's (checked here,
    see :func:`check_checkpoint`). ``init_scheme`` for new embedding rows: ``normal``
    (N(0, init_std), ``init_std`` None = the model's ``initializer_range``), ``mean`` (mean of
    the old rows plus N(0, init_std) noise, as HF's mean resizing does), ``uniform`` (U(-a, a)
    with the std of ``init_std``). ``init_seed`` makes the new rows reproducible independently
    of the model's own initialisation seed. ``overrides`` are set on the preset's
    ``transformers`` config (e.g. ``{"num_hidden_layers": 4}``); they are ignored for
    ``pretrained``.
    ``attn_implementation`` applies to the Transformer arm ("sdpa" by default;
    "flash_attention_2" on GPUs that have it).
    """

    arch: Arch = "pythia"
    preset: str = "tiny"
    pretrained: str | None = None
    init_scheme: InitScheme = "normal"
    init_std: float | None = None
    init_seed: int = 0
    attn_implementation: str = "sdpa"
    overrides: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arch not in PRESETS:
            raise ConfigError("arch", f"{self.arch!r} is not one of {', '.join(PRESETS)}")
        if self.pretrained is None and self.preset not in PRESETS[self.arch]:
            names = ", ".join(PRESETS[self.arch])
            raise ConfigError("preset", f"{self.preset!r} is not a {self.arch} preset ({names})")
        if self.pretrained is not None:
            check_checkpoint(self.pretrained, self.arch)
        if not 0 <= self.init_seed < 2**63:  # a torch.Generator's seed takes 64 bits
            raise ConfigError("init_seed", f"must be in [0, 2**63), got {self.init_seed}")
        check = getattr(FAMILIES[self.arch], "check_settings", None)
        if check is not None and self.pretrained is None:
            check(self.hf_settings(), "overrides")
        if self.init_std is not None and not (0 < self.init_std < float("inf")):
            raise ConfigError("init_std", f"must be a finite number > 0, got {self.init_std}")

    def hf_settings(self) -> dict:
        """The ``transformers`` config as plain data, without importing transformers: the
        preset's shape with its overrides, or the checkpoint's config.json."""
        if self.pretrained is not None:
            return checkpoint_settings(self.pretrained)
        family = FAMILIES[self.arch]
        return {**family.DEFAULTS, **family.PRESETS[self.preset], **self.overrides}


def checkpoint_settings(directory: str) -> dict:
    """A checkpoint directory's config.json as plain data (``field`` 'pretrained' on error).

    Each failure is its own one-line message (no such directory, no config.json, not JSON, not
    an object), since each has a different fix.
    """
    import json

    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(
            "pretrained",
            f"{directory!r}: no such directory; give a local save_pretrained() checkpoint "
            "directory (vlab never downloads one)",
        )
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(
            "pretrained",
            f"{directory!r} is not a checkpoint directory (no config.json); save one with "
            "save_pretrained() or download it yourself first",
        )
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        said = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError("pretrained", f"{config} is unreadable ({said})") from None
    if not isinstance(data, dict):
        raise ConfigError("pretrained", f"{config} is not a JSON object")
    return data


def arch_of_checkpoint(directory: str) -> str | None:
    """The arch whose family saved ``directory`` (by its config.json's ``model_type``), or None
    when no vlab arch did or the file does not say: lets ``--pretrained DIR`` alone choose the
    arm, while a wrong or missing ``model_type`` is left to :func:`check_checkpoint` to name."""
    try:
        model_type = checkpoint_settings(directory).get("model_type")
    except ConfigError:
        return None
    return next((a for a, f in FAMILIES.items() if f.MODEL_TYPE == model_type), None)


def check_checkpoint(directory: str, arch: str) -> None:
    """Refuse a checkpoint of another family than ``arch`` (read from its config.json's
    ``model_type``: gpt_neox, mamba, mamba2, vlab_hybrid), before any work starts.

    Checked on plain data, so a sweep refuses it when expanded: otherwise one
    ``model.pretrained`` given to every arm of a sweep would fail only in the jobs of the arms
    it does not fit, once they load it, and in transformers' words rather than the field's.
    """
    model_type = checkpoint_settings(directory).get("model_type")
    expected = FAMILIES[arch].MODEL_TYPE
    if model_type is None:
        raise ConfigError(
            "pretrained",
            f"{directory}/config.json has no model_type; it is not a transformers checkpoint "
            f"of a {arch} ({expected}) model",
        )
    if model_type != expected:
        owner = next((a for a, f in FAMILIES.items() if f.MODEL_TYPE == model_type), None)
        said = f"the {owner} arch's" if owner else "not a vlab arch's"
        raise ConfigError(
            "pretrained",
            f"{directory} holds a {model_type!r} model ({said}), not {expected!r} "
            f"(arch={arch}); give each arch its own checkpoint (in a sweep: the spec's "
            "per_arch or --set-arch ARCH:KEY=DIR)",
        )


def vocab_size(cfg: BackboneConfig) -> int:
    """Rows of the backbone's token table before task tokens are added, read from the preset
    or the checkpoint's config.json: known before anything is built."""
    size = cfg.hf_settings().get("vocab_size")
    if not isinstance(size, int):
        raise ConfigError("pretrained", f"{cfg.pretrained}/config.json has no vocab_size")
    return size


def hf_config(arch: Arch, preset: str, **overrides):
    """The ``transformers`` config object of a preset."""
    return FAMILIES[arch].hf_config(preset, **overrides)


def check_overrides(cfg: BackboneConfig, field: str = "model.overrides") -> None:
    """Refuse ``overrides`` the family's ``transformers`` config does not know or accept.

    transformers configs take any keyword and keep it as an attribute that nothing reads, so a
    typo would train the preset unchanged. Needs transformers (not torch): run it before a
    run directory is created, not when validating configs in bulk (sweeps).
    """
    if not cfg.overrides or cfg.pretrained is not None:
        return
    family = FAMILIES[cfg.arch]
    known = hf_config(cfg.arch, cfg.preset).to_dict()
    unknown = sorted(k for k in set(cfg.overrides) - set(known) if not _translated(cfg, k))
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see the family's HF config class"
        raise ConfigError(
            field, f"{unknown[0]!r} is not a setting of {family.MODEL_TYPE} configs; {hint}"
        )
    try:
        hf_config(cfg.arch, cfg.preset, **cfg.overrides)
    except Exception as e:  # transformers' validators raise TypeError, ValueError, and
        # huggingface_hub's StrictDataclassClassValidationError (an Exception) in 5.x
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        raise ConfigError(field, (lines[-1] if lines else type(e).__name__)[:200]) from None


def check_numbers(cfg: BackboneConfig, field: str = "model.overrides") -> None:
    """Overrides hold finite numbers, and no negative number (nor a zero integer) where the
    preset's setting is a positive one (a size, a count, an epsilon): checked on plain data
    before the model is built (:func:`check_backbone` then builds it on the meta device)."""
    from vlab.preflight import check_finite

    if cfg.pretrained is not None:
        return
    check_finite(cfg.overrides, field)
    family = FAMILIES[cfg.arch]
    preset = {**family.DEFAULTS, **family.PRESETS[cfg.preset]}
    try:
        preset = {**hf_config(cfg.arch, cfg.preset).to_dict(), **preset}
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    for key, value in cfg.overrides.items():
        default = preset.get(key)
        if not _number(value) or not _number(default) or default < 0:
            continue
        if value < 0 or (value == 0 and isinstance(value, int) and default > 0):
            sign = "positive" if default > 0 and isinstance(value, int) else ">= 0"
            raise ConfigError(
                f"{field}.{key}", f"must be {sign} (the preset has {default}), got {value}"
            )


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def check_weights(directory: str, field: str = "pretrained") -> None:
    """A ``save_pretrained`` directory holds weights: one of :data:`WEIGHT_FILES`, and every
    shard a sharded index names."""
    import json

    path = Path(directory)
    found = [name for name in WEIGHT_FILES if (path / name).is_file()]
    if not found:
        raise ConfigError(
            field,
            f"{directory!r} holds a config.json but no weights ({', '.join(WEIGHT_FILES)}); "
            "save the model with save_pretrained()",
        )
    if found[0].endswith(".index.json"):
        try:
            shards = set(json.loads((path / found[0]).read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(field, f"{path / found[0]} is not a weight index") from None
        missing = sorted(s for s in shards if not (path / str(s)).is_file())
        if missing:
            raise ConfigError(field, f"{directory!r} lacks the weight shard {missing[0]}")


def check_backbone(cfg: BackboneConfig, field: str = "model"):
    """Every check of the backbone that needs no weights in memory, before a run directory is
    created: the overrides (known names, finite, sane signs), a pretrained directory's weights,
    and the model built on the meta device (any error of its transformers config surfaces
    here, naming ``field``). Returns the meta model (shapes, no memory)."""
    from vlab.preflight import on_meta

    check_numbers(cfg, f"{field}.overrides")
    check_overrides(cfg, f"{field}.overrides")
    family = FAMILIES[cfg.arch]
    family.prepare()
    kwargs = family.model_kwargs(cfg.attn_implementation)

    def build():
        from transformers import AutoConfig, AutoModelForCausalLM

        if cfg.pretrained is not None:
            config = AutoConfig.from_pretrained(cfg.pretrained, local_files_only=True)
        else:
            config = hf_config(cfg.arch, cfg.preset, **cfg.overrides)
        return AutoModelForCausalLM.from_config(config, **kwargs)

    if cfg.pretrained is not None:
        check_weights(cfg.pretrained, f"{field}.pretrained")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    where = f"{field}.pretrained" if cfg.pretrained is not None else f"{field}.overrides"
    return on_meta(build, where)


def _translated(cfg: BackboneConfig, key: str) -> bool:
    """Whether ``key`` is an older name the config class translates (GPT-NeoX's
    ``rotary_pct`` becomes ``rope_parameters.partial_rotary_factor``): consumed, not kept."""
    try:
        built = hf_config(cfg.arch, cfg.preset, **{key: cfg.overrides[key]}).to_dict()
    except Exception:  # see check_overrides
        return False
    return key not in built


def build_backbone(cfg: BackboneConfig, seed: int = 0) -> nn.Module:
    """A ``*ForCausalLM`` model: the preset with random init (seeded), or a local checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    family = FAMILIES[cfg.arch]
    family.prepare()
    kwargs = family.model_kwargs(cfg.attn_implementation)
    if cfg.pretrained is not None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model = AutoModelForCausalLM.from_pretrained(
            cfg.pretrained, local_files_only=True, **kwargs
        )
        if model.config.model_type != family.MODEL_TYPE:
            raise ConfigError(
                "pretrained",
                f"{cfg.pretrained} holds a {model.config.model_type!r} model, not "
                f"{family.MODEL_TYPE!r} (arch={cfg.arch})",
            )
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(
            hf_config(cfg.arch, cfg.preset, **cfg.overrides), **kwargs
        )


def base_vocab_size(model: nn.Module) -> int:
    """Rows of the input embedding table (may exceed the tokenizer's size through padding)."""
    return model.get_input_embeddings().weight.shape[0]


def _init_rows(
    weight: torch.Tensor, start: int, scheme: InitScheme, std: float, gen: torch.Generator
) -> None:
    import torch

    with torch.no_grad():  # old rows are data here, not parameters
        new = weight[start:]
        noise = torch.randn(new.shape, generator=gen, dtype=torch.float32)
        if scheme == "normal":
            value = noise * std
        elif scheme == "mean":
            value = weight[:start].float().mean(dim=0, keepdim=True) + noise * std
        elif scheme == "uniform":
            a = std * 3**0.5
            value = (torch.rand(new.shape, generator=gen) * 2 - 1) * a
        else:
            raise ConfigError("init_scheme", f"unknown scheme {scheme!r}")
        new.copy_(value.to(weight.dtype))


def add_tokens(model: nn.Module, n_new: int, cfg: BackboneConfig) -> int:
    """Append ``n_new`` rows to the input (and untied output) embeddings; return the old size.

    Old rows are kept exactly; new rows follow ``cfg.init_scheme`` with ``cfg.init_seed``. For
    untied heads (GPT-NeoX's ``embed_out``) the new output rows get the same scheme with the
    next draw of the generator, so the two tables are initialised independently.
    """
    old = base_vocab_size(model)
    if n_new <= 0:
        return old
    import torch

    model.resize_token_embeddings(old + n_new, mean_resizing=False)
    std = (
        cfg.init_std
        if cfg.init_std is not None
        else float(getattr(model.config, "initializer_range", 0.02))
    )
    gen = torch.Generator().manual_seed(cfg.init_seed)
    emb_in = model.get_input_embeddings().weight
    _init_rows(emb_in, old, cfg.init_scheme, std, gen)
    emb_out = model.get_output_embeddings()
    if emb_out is not None and emb_out.weight.data_ptr() != emb_in.data_ptr():
        _init_rows(emb_out.weight, old, cfg.init_scheme, std, gen)
    return old


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total, embedding (input + untied output) and non-embedding parameter counts.

    Non-embedding counts are what the two arms are matched on: the embedding tables scale
    with the vocabulary, which the task sets, not the architecture.
    """
    total = sum(p.numel() for p in model.parameters())
    seen = {model.get_input_embeddings().weight.data_ptr()}
    emb = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() not in seen:
        emb += out.weight.numel()
    return {"total": total, "embedding": emb, "non_embedding": total - emb}


# Names of a causal LM's decoding arguments across the transformers releases vlab allows.
# 5.24 renamed both families' cache argument to ``cache`` (the old names are deprecated, to
# be removed in 5.40); before it, GPT-NeoX took ``past_key_values`` and Mamba ``cache_params``.
# Passing the wrong one is silently swallowed by ``**kwargs``: the model then decodes every
# step without its past, so the name is read off the model's own signature, never assumed.
_CACHE_ARGUMENTS = ("cache", "past_key_values", "cache_params")


def cache_argument(model: nn.Module) -> str:
    """The keyword under which ``model.forward`` takes its decoding cache."""
    import inspect

    params = inspect.signature(model.forward).parameters
    for name in _CACHE_ARGUMENTS:
        if name in params:
            return name
    raise ConfigError(
        "model",
        f"{type(model).__name__}.forward takes none of {', '.join(_CACHE_ARGUMENTS)}: this "
        "transformers version is not supported by vlab's cached decoding",
    )


def is_recurrent(model: nn.Module) -> bool:
    """True for LMs without positions (Mamba): they carry a state, not keys and values, so
    their attention mask covers only the tokens of the current call and they take no
    ``position_ids``."""
    import inspect

    return "position_ids" not in inspect.signature(model.forward).parameters
