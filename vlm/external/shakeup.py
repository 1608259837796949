"""The SHAKEUP authors' checkpoints (``gpantaz/vl_mamba``), read and mapped onto vlab's VLM.

What their code saves (the Hugging Face Trainer's ``save_pretrained`` of
``VLCLIPGPTNeoXForCausalLM`` or ``VLMambaCLIPLMHeadModel``; safetensors, possibly sharded):

* ``config.json``: the LM's own config (Pythia's GPT-NeoX fields; Mamba's ``d_model``,
  ``n_layer``, ``ssm_cfg``, ``rms_norm`` ...) plus ``vision_encoder_name``, ``select_layer``,
  ``select_feature`` and ``image_size``. No tokenizer: their trainer is given none.
* tensors by module: ``vision_encoder.*`` the frozen tower (timm's EVA-02, or transformers'
  ``CLIPVisionModel``) under its library's own names; ``vision_embed_tokens.{0,2}.*`` the
  connector (Linear - GELU - Linear, hidden width = the LM's); the LM, either GPT-NeoX
  (``gpt_neox.*`` and the untied head ``embed_out.weight``) or mamba_ssm's ``MixerModel``
  (``backbone.embedding.weight``, ``backbone.layers.{i}.{norm,mixer}.*``,
  ``backbone.norm_f.weight``) with ``lm_head.weight`` tied to the embedding, so a file holds
  either name or both.

Their forward, which the mapping reproduces: EVA-02's ``forward_features`` (last block, then
its final norm; ``select_layer`` is ignored for EVA) or CLIP's ``hidden_states[select_layer]``;
the class token dropped (``select_feature="patch"``); the connector; its outputs written into
the sequence slots whose input id is negative. The image segment is ``### p.. && ... p.. ###``
(the last row break replaced by the end marker: 24 x 25 + 1 = 601 tokens at 336 px), image
first, followed directly by the prompt text: their ``PretrainDataset``, which their trainer and
evaluators use, writes no ``##`` before the text. Their Mamba blocks (add, then RMSNorm, then
mixer) compute what transformers' ``MambaBlock`` computes (RMSNorm, mixer, add).

Not mappable, refused in one line: their pixel-based models (no ``vision_encoder.*``: raw
patches into the connector), Mamba with LayerNorm (``rms_norm`` false) or a non-integer
expansion, ``select_feature="cls_patch"``, GPT-NeoX with ``rope_scaling``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlab.errors import VlabError
from vlab.models.vlm.parts import PRESETS as VISION_PRESETS
from vlab.models.vlm.parts import ImageLayout, VisionConfig

FORMAT = "shakeup"
# transformers 4.x (theirs) nests CLIPVisionModel's modules under vision_model, 5.x does not:
# tower names are compared and mapped without it, and given vlab's own nesting when mapped.
CLIP_PREFIX = "vision_model."
TOWER = "vision_encoder."
CONNECTOR = "vision_embed_tokens."
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# The image layout their code writes (SpecialTokens + prepare_image_tokens), nothing before
# the text; task-agnostic order. max_length: their finetuning's model_max_length.
LAYOUT = ImageLayout(start="###", row_break="&&", end="###", last_row_break_is_end=True)
MAX_LENGTH = 1024
# Buffers older transformers wrote next to the weights: recomputed from the config, never
# trained, so skipped (and listed) rather than mapped.
_DERIVED = re.compile(
    r"^(gpt_neox\.(layers\.\d+\.attention\.(bias|masked_bias|rotary_emb\.inv_freq)"
    r"|rotary_emb\.inv_freq)|vision_encoder\.(vision_model\.)?embeddings\.position_ids)$"
)
# GPT-NeoX settings carried over from their config.json when present (shapes come from the
# tensors; heads, rotary fraction and the rest cannot).
_NEOX_FIELDS = (
    "hidden_act",
    "rotary_pct",
    "rotary_emb_base",
    "max_position_embeddings",
    "layer_norm_eps",
    "use_parallel_residual",
    "initializer_range",
    "bos_token_id",
    "eos_token_id",
)


@dataclass
class ShakeupCheckpoint:
    """One of their checkpoint directories, read: ``config`` (their config.json), ``tensors``
    by their names, ``lm`` (vlab arch: ``pythia`` or ``mamba``), ``vision`` (vlab encoder
    kind: ``eva02`` or ``clip``) and the weight files read."""

    path: Path
    config: dict
    tensors: dict[str, torch.Tensor]
    lm: str
    vision: str
    files: list[str] = field(default_factory=list)


def read_checkpoint(src: str | os.PathLike) -> ShakeupCheckpoint:
    """Read and recognise ``src``; a VlabError naming the problem when it is not a checkpoint
    of theirs that vlab can run (checked on tensor names before the tensors are loaded,
    where the files allow)."""
    path = Path(src)
    if not path.is_dir():
        raise VlabError(f"{src}: no such checkpoint directory")
    config = _read_config(path)
    files = _weight_files(path)
    headers = all(f.suffix == ".safetensors" for f in files)
    tensors = {} if headers else _load_all(files)  # torch files: names need a full load
    lm, vision = recognise(path, config, _header_names(files) if headers else set(tensors))
    if headers:
        tensors = _load_all(files)
    return ShakeupCheckpoint(path, config, tensors, lm, vision, [f.name for f in files])


def _read_config(path: Path) -> dict:
    file = path / "config.json"
    if not file.is_file():
        raise VlabError(f"{path} is not a SHAKEUP (vl_mamba) checkpoint: no config.json")
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise VlabError(f"{file} is unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise VlabError(f"{file} is not a JSON object")
    return data


def _weight_files(path: Path) -> list[Path]:
    """The weight files their loader reads, in its order: one safetensors file, a sharded
    index, a torch file."""
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if not index.is_file():
            continue
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise VlabError(f"{index} is not a weight index (no weight_map)") from None
        missing = [s for s in shards if not (path / str(s)).is_file()]
        if missing:
            raise VlabError(f"{path} lacks the weight shard {missing[0]} that {index_name} names")
        return [path / str(s) for s in shards]
    if (path / "pytorch_model.bin").is_file():
        return [path / "pytorch_model.bin"]
    zero = sorted(path.glob("global_step*"))
    hint = (
        f"; {zero[0].name} holds DeepSpeed ZeRO shards: consolidate them first (their "
        "zero_to_fp32.py)"
        if zero
        else ""
    )
    raise VlabError(f"{path} holds no weights ({', '.join(WEIGHT_FILES)}){hint}")


def _header_names(files: list[Path]) -> set[str]:
    """Tensor names read from safetensors headers alone, before any tensor is loaded."""
    from safetensors import safe_open

    names: set[str] = set()
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                names.update(f.keys())
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise VlabError(f"{file} is not a safetensors file ({_first_line(e)})") from None
    return names


def _load_all(files: list[Path]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(_load(file))
    return tensors


def _load(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(file))
        else:
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling, truncation, safetensors' own errors: all one line
        raise VlabError(f"{file} does not load as a weight file ({_first_line(e)})") from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise VlabError(f"{file} holds no state dict of tensors")
    return data


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def recognise(path: Path, config: dict, names: set[str]) -> tuple[str, str]:
    """(vlab LM arch, vlab encoder kind) of their checkpoint with tensors ``names``."""
    if not any(n.startswith(CONNECTOR) for n in names):
        raise VlabError(
            f"{path} is not a SHAKEUP (vl_mamba) checkpoint: no {CONNECTOR}* tensors (their "
            "connector)"
        )
    if "gpt_neox.embed_in.weight" in names:
        lm = "pythia"
    elif any(re.fullmatch(r"backbone\.layers\.\d+\.mixer\.A_log", n) for n in names):
        lm = "mamba"
    else:
        raise VlabError(
            f"{path}: a SHAKEUP connector but no LM vlab knows (neither gpt_neox.* nor "
            "mamba_ssm's backbone.layers.*.mixer.*)"
        )
    if not any(n.startswith(TOWER) for n in names):
        raise VlabError(
            f"{path} is a pixel-based SHAKEUP model (no {TOWER}*: raw patches into the "
            "connector); vlab's patch encoder normalises with mean/std 0.5 and flattens "
            "patches channel-first, so it cannot run it"
        )
    if f"{TOWER}patch_embed.proj.weight" in names:
        vision = "eva02"
    elif f"{TOWER}{CLIP_PREFIX}embeddings.patch_embedding.weight" in names:
        vision = "clip"
    else:
        said = config.get("vision_encoder_name", "not named in config.json")
        raise VlabError(
            f"{path}: its vision tower ({said}) is neither timm's EVA-02 nor a CLIPVisionModel"
        )
    select = config.get("select_feature", "patch")
    if select != "patch":
        raise VlabError(
            f"{path}/config.json: select_feature {select!r} keeps the class token; vlab's "
            "encoders always drop it (only 'patch' maps)"
        )
    return lm, vision


# settings ------------------------------------------------------------------------------------


def _count_layers(names: Any, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for n in names if (m := pattern.match(n))}
    if not found or found != set(range(len(found))):
        raise VlabError(f"the {prefix}* tensors are not numbered 0..N-1 ({sorted(found)[:5]})")
    return len(found)


def lm_settings(ck: ShakeupCheckpoint) -> dict:
    """The ``transformers`` config fields of the LM (GPTNeoXConfig or MambaConfig): shapes
    read off the tensors, the rest from their config.json."""
    return _neox_settings(ck) if ck.lm == "pythia" else _mamba_settings(ck)


def _neox_settings(ck: ShakeupCheckpoint) -> dict:
    cfg, t = ck.config, ck.tensors
    rows, width = t["gpt_neox.embed_in.weight"].shape
    heads = cfg.get("num_attention_heads")
    if not isinstance(heads, int) or heads < 1 or width % heads:
        raise VlabError(
            f"{ck.path}/config.json: num_attention_heads {heads!r} does not divide the hidden "
            f"width {width}"
        )
    if cfg.get("rope_scaling"):
        raise VlabError(f"{ck.path}/config.json: rope_scaling is set; vlab maps plain RoPE only")
    return {
        "vocab_size": int(rows),
        "hidden_size": int(width),
        "num_hidden_layers": _count_layers(t, "gpt_neox.layers."),
        "num_attention_heads": heads,
        "intermediate_size": int(t["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"].shape[0]),
        "attention_bias": "gpt_neox.layers.0.attention.query_key_value.bias" in t,
        "tie_word_embeddings": False,
        **{k: cfg[k] for k in _NEOX_FIELDS if cfg.get(k) is not None},
    }


def _mamba_settings(ck: ShakeupCheckpoint) -> dict:
    cfg, t = ck.config, ck.tensors
    if "backbone.norm_f.bias" in t or cfg.get("rms_norm") is False:
        raise VlabError(
            f"{ck.path}: a Mamba with LayerNorm (rms_norm false); transformers' Mamba, which "
            "vlab runs, has RMSNorm only"
        )
    layer = (cfg.get("ssm_cfg") or {}).get("layer", "Mamba1")
    if layer != "Mamba1":
        raise VlabError(f"{ck.path}/config.json: ssm_cfg.layer {layer!r}; only Mamba1 maps")
    table = t.get("backbone.embedding.weight", t.get("lm_head.weight"))
    if table is None:
        raise VlabError(f"{ck.path}: neither backbone.embedding.weight nor lm_head.weight")
    rows, width = table.shape
    mixer = "backbone.layers.0.mixer."
    inner, state = t[f"{mixer}A_log"].shape
    if inner % width:
        raise VlabError(
            f"{ck.path}: inner width {inner} is not a multiple of d_model {width}; "
            "transformers' Mamba needs an integer expansion"
        )
    return {
        "vocab_size": int(rows),
        "hidden_size": int(width),
        "num_hidden_layers": _count_layers(t, "backbone.layers."),
        "state_size": int(state),
        "expand": int(inner // width),
        "conv_kernel": int(t[f"{mixer}conv1d.weight"].shape[-1]),
        "time_step_rank": int(t[f"{mixer}dt_proj.weight"].shape[1]),
        "use_bias": f"{mixer}in_proj.bias" in t,
        "use_conv_bias": f"{mixer}conv1d.bias" in t,
        "layer_norm_epsilon": float(cfg.get("norm_epsilon", 1e-5)),
        "residual_in_fp32": bool(cfg.get("residual_in_fp32", True)),
        "tie_word_embeddings": True,
    }


def vision_settings(ck: ShakeupCheckpoint) -> dict:
    """The :class:`~vlab.models.vlm.parts.VisionConfig` fields of their tower: the kind, the
    vlab preset whose shapes its tensors have, the resolution its position embeddings were
    made for, and the layer their forward reads."""
    tower = {k[len(TOWER) :]: v for k, v in ck.tensors.items() if k.startswith(TOWER)}
    if ck.vision == "eva02":
        patch = int(tower["patch_embed.proj.weight"].shape[-1])
        side = _grid_side(ck, int(tower["pos_embed"].shape[1]) - 1)
        base = dict(kind="eva02", image_size=side * patch, feature_layer=-1, final_norm=True)
    else:
        embeddings = f"{CLIP_PREFIX}embeddings."
        patch = int(tower[f"{embeddings}patch_embedding.weight"].shape[-1])
        side = _grid_side(ck, int(tower[f"{embeddings}position_embedding.weight"].shape[0]) - 1)
        select = int(ck.config.get("select_layer", -2))
        if select == 0:
            raise VlabError(
                f"{ck.path}/config.json: select_layer 0 reads CLIP's embeddings, not a block"
            )
        layer = select if select < 0 else select - 1  # hidden_states[0] is the embeddings
        base = dict(kind="clip", image_size=side * patch, feature_layer=layer, final_norm=False)
    return {**base, "preset": _matching_preset(ck, base, tower)}


def _grid_side(ck: ShakeupCheckpoint, patches: int) -> int:
    side = math.isqrt(patches)
    if side * side != patches:
        raise VlabError(f"{ck.path}: the tower's {patches} position embeddings are no square grid")
    return side


def _matching_preset(ck: ShakeupCheckpoint, base: dict, tower: dict) -> str:
    """The first vlab preset of the kind whose encoder, built on the meta device at the
    tower's resolution, has exactly the tower's tensor names and shapes."""
    from vlab.models.vlm.vision import build_vision_encoder

    have = {
        k.removeprefix(CLIP_PREFIX): tuple(v.shape)
        for k, v in tower.items()
        if not _DERIVED.match(TOWER + k)
    }
    first_difference = ""
    for name in VISION_PRESETS[base["kind"]]:
        encoder = build_vision_encoder(VisionConfig(**base, preset=name), device="meta")
        state = encoder.model.state_dict()
        want = {k.removeprefix(CLIP_PREFIX): tuple(v.shape) for k, v in state.items()}
        if want == have:
            return name
        if not first_difference:
            first_difference = _difference(name, want, have)
    raise VlabError(
        f"{ck.path}: its {base['kind']} tower fits no vlab {base['kind']} preset "
        f"({first_difference})"
    )


def _difference(preset: str, want: dict, have: dict) -> str:
    for key in sorted(set(want) | set(have)):
        if want.get(key) != have.get(key):
            return f"preset {preset!r}: {key} is {want.get(key)} in vlab, {have.get(key)} here"
    return f"preset {preset!r}: same"


def run_config(ck: ShakeupCheckpoint) -> dict:
    """Their settings as a nested :class:`~vlab.vlm.config.VLMRunConfig` dict: the LM's arch
    (its directory is the writer's to name), their tower, an MLP connector of their hidden
    width, their layout and ordering; training settings keep vlab's defaults (an import
    trained nothing)."""
    hidden, vision_width = ck.tensors[f"{CONNECTOR}0.weight"].shape
    lm_width = ck.tensors[f"{CONNECTOR}2.weight"].shape[0]
    return {
        "model": {
            "lm": {"arch": ck.lm},
            "vision": vision_settings(ck),
            "projector": {
                "kind": "mlp",
                "vision_widths": [int(vision_width)],
                "lm_width": int(lm_width),
                "hidden_width": int(hidden),
            },
            "sequence": {
                "layout": asdict(LAYOUT),
                "ordering": "task_agnostic",
                "max_length": MAX_LENGTH,
            },
        },
    }


# tensors -------------------------------------------------------------------------------------


@dataclass
class Mapping:
    """Their tensors under vlab's VLM names (``state``; a tied table under both of its names,
    one tensor), the derived buffers skipped, and the source tensors no rule maps."""

    state: dict[str, torch.Tensor]
    skipped: list[str]
    unmapped: list[str]
    sources: int


def vlab_names(ck: ShakeupCheckpoint, name: str) -> list[str] | None:
    """vlab's name(s) for their tensor ``name`` (two for Mamba's tied table); None if no
    rule maps it."""
    if name.startswith(TOWER):
        tower = name[len(TOWER) :]
        if ck.vision == "clip":
            tower = _clip_nesting() + tower.removeprefix(CLIP_PREFIX)
        return ["encoders.0.model." + tower]
    if name.startswith(CONNECTOR):
        index, _, param = name[len(CONNECTOR) :].partition(".")
        linear = {"0": "projector.fc1", "2": "projector.fc2"}.get(index)
        return [f"{linear}.{param}"] if linear and param in ("weight", "bias") else None
    if ck.lm == "pythia":
        if name == "embed_out.weight":
            return ["lm.lm_head.weight"]
        return ["lm." + name] if name.startswith("gpt_neox.") else None
    if name in ("backbone.embedding.weight", "lm_head.weight"):
        return ["lm.backbone.embeddings.weight", "lm.lm_head.weight"]
    return ["lm." + name] if name.startswith("backbone.") else None


@functools.cache
def _clip_nesting() -> str:
    """``vision_model.`` when this transformers nests CLIPVisionModel's modules so, else ''."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    with torch.device("meta"):
        model = CLIPVisionModel(CLIPVisionConfig(**VISION_PRESETS["clip"]["tiny"]))
    return CLIP_PREFIX if hasattr(model, CLIP_PREFIX.rstrip(".")) else ""


def map_tensors(ck: ShakeupCheckpoint) -> Mapping:
    """Every tensor of theirs under vlab's names, as float32 (the precision vlab's own
    checkpoints hold; autocast picks the compute precision). Mamba's embedding and head,
    when both were saved, must be equal: their model ties them."""
    tied = [n for n in ("backbone.embedding.weight", "lm_head.weight") if n in ck.tensors]
    if ck.lm == "mamba" and len(tied) == 2 and not torch.equal(*(ck.tensors[n] for n in tied)):
        raise VlabError(
            f"{ck.path}: backbone.embedding.weight and lm_head.weight differ, but their Mamba "
            "ties them; this file was not saved from their model"
        )
    state: dict[str, torch.Tensor] = {}
    skipped, unmapped = [], []
    for name, tensor in sorted(ck.tensors.items()):
        if _DERIVED.match(name):
            skipped.append(name)
            continue
        targets = vlab_names(ck, name)
        if targets is None:
            unmapped.append(name)
            continue
        value = tensor.detach().to(torch.float32).contiguous()
        for target in targets:
            state.setdefault(target, value)
    return Mapping(state, skipped, unmapped, len(ck.tensors))


# the import ----------------------------------------------------------------------------------

# What an imported model does differently from their code, recorded in import.json.
NOTES = (
    "images are resized with the vlab encoder's filter (EVA-02: bicubic); their code resized "
    "bilinearly",
    "vlab eval / generate build prompts from vlab's instructions and templates, not their "
    "TASK_TEMPLATES_MAP",
)


def import_shakeup(
    src: str | os.PathLike, out: str | os.PathLike, tokenizer: str | os.PathLike | None = None
) -> Path:
    """Import their checkpoint ``src`` as the vlab VLM run directory ``out``
    (:mod:`vlab.vlm.external.imported`). The tokenizer comes from ``tokenizer``, else from
    ``src`` (their trainer saves none: give a local copy of EleutherAI/gpt-neox-20b's, the
    one their code loads). Every refusal is one line, before anything is written."""
    from vlab.vlm.external.imported import check_out, load_tokenizer, write_run

    out = Path(out).absolute()
    check_out(out)
    ck = read_checkpoint(src)
    settings = lm_settings(ck)
    config = run_config(ck)
    mapping = map_tensors(ck)
    sources = [Path(tokenizer)] if tokenizer is not None else [ck.path]
    tok = load_tokenizer(sources, settings["vocab_size"])
    about = {
        "format": FORMAT,
        "source": str(ck.path.absolute()),
        "files": ck.files,
        "architectures": ck.config.get("architectures"),
        "vision_encoder_name": ck.config.get("vision_encoder_name"),
        "lm": ck.lm,
        "vision": ck.vision,
        "tensors": {
            "source": mapping.sources,
            "skipped": len(mapping.skipped),
            "vlab": len(mapping.state),
        },
        "skipped": mapping.skipped,
        "tokenizer": str(sources[0].absolute()),
        "notes": list(NOTES),
    }
    return write_run(out, config, settings, mapping.state, tok, about, mapping.unmapped)
