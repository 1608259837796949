"""A mapped foreign VLM written as a ``vlab vlm train`` run directory, whatever its format.

Why a run directory rather than a loader that readers dispatch to: ``vlab vlm eval``,
``vlab vlm generate``, ``vlab vlm finetune`` and ``vlab inspect`` all open runs through the
VLM experiment's ``open`` (run config -> ``build_vlm`` -> strict load of the checkpoint), so
a directory in that layout opens with no reader changed, and the foreign format is read once,
here, never again. The layout::

    OUT/run.json                 kind "vlm"
    OUT/import.json              where it came from: format, source, tensor counts, skipped
    OUT/lm/                      the LM as transformers' save_pretrained (float32) and the
                                 tokenizer: the run config's model.lm.pretrained (absolute)
    OUT/stage2/config.json       the run config (VLMRunConfig) and "stage": 2
    OUT/stage2/status.json       done, step 0
    OUT/stage2/checkpoints/last.pt   every VLM tensor under vlab's names (float32)

The LM is a ``pretrained`` directory, as in vlab's own paper runs, because only then does
``build_vlm`` keep the checkpoint's vocabulary rows (Pythia pads 50,277 tokens to 50,304,
Mamba to 50,280); a from-scratch LM would be cut to the tokenizer's length and the
checkpoint would no longer fit. The price: the LM's weights are on disk twice, and ``OUT``
must stay where it was written (the config names ``OUT/lm``; re-import after moving it).
There is no stage 1: both of the foreign model's stages are in stage 2's weights.

Everything that can fail is checked before anything is written (the mapping against the
shapes of the model the config builds, on the meta device; the tokenizer against the
vocabulary), and the directory is written under a temporary name and renamed when complete,
so a refused or interrupted import leaves nothing behind.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vlab.config import from_dict, to_dict
from vlab.errors import VlabError
from vlab.experiment import record_kind
from vlab.fileio import atomic_write_json
from vlab.rundir import RunDir
from vlab.vlm.config import VLMRunConfig

IMPORT_FILE = "import.json"
LM_DIR = "lm"
STAGE = 2


def check_out(out: Path) -> None:
    """``out`` must be new (or an empty folder): an import never mixes with other files."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VlabError(f"{out} exists and is not an empty folder; give a new --out directory")


def load_tokenizer(sources: list[Path], rows: int, eos: str = "<|endoftext|>") -> Any:
    """The first of ``sources`` that holds a tokenizer, checked against the LM's ``rows``
    (every id it produces needs an embedding row); ``eos`` becomes its end token when it has
    none, and the end token its pad token when it has none (as the authors' code sets them)."""
    from transformers import AutoTokenizer

    from vlab.models.vlm.tokenizer import TOKENIZER_FILES

    found = [p for p in sources if any((p / f).is_file() for f in TOKENIZER_FILES)]
    if not found:
        where = " or ".join(str(p) for p in sources)
        raise VlabError(
            f"no tokenizer in {where} ({', '.join(TOKENIZER_FILES)}); give --tokenizer DIR"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(found[0]), local_files_only=True)
    except (OSError, ValueError) as e:
        raise VlabError(f"no tokenizer loads from {found[0]}: {str(e).splitlines()[0]}") from None
    if tok.eos_token is None:
        if eos not in tok.get_vocab():
            raise VlabError(f"the tokenizer in {found[0]} has no end token and no {eos!r}")
        tok.eos_token = eos
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if len(tok) > rows:
        raise VlabError(
            f"the tokenizer in {found[0]} has {len(tok)} tokens but the LM only {rows} "
            "embedding rows: not the tokenizer this model was trained with"
        )
    return tok


def hf_config(arch: str, settings: dict) -> Any:
    """The LM's ``transformers`` config: the family's config class with ``settings`` over the
    class's own defaults (not a vlab preset's), float32 (the weights written are, and
    ``from_pretrained`` builds in the dtype the config names)."""
    from transformers import AutoConfig

    from vlab.models.backbones import FAMILIES

    config = AutoConfig.for_model(FAMILIES[arch].MODEL_TYPE, **settings)
    config.dtype = torch.float32
    return config


def target_shapes(cfg: VLMRunConfig, lm_config: Any) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of the VLM ``cfg`` builds (its LM from ``lm_config``),
    built on the meta device: no memory, no weights read."""
    from transformers import AutoModelForCausalLM

    from vlab.models.backbones import FAMILIES
    from vlab.models.vlm.connectors import build_projector
    from vlab.models.vlm.model import VLM
    from vlab.models.vlm.vision import build_vision_encoder

    family = FAMILIES[cfg.model.lm.arch]
    family.prepare()
    encoder = build_vision_encoder(cfg.model.vision, device="meta")
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(
            lm_config, **family.model_kwargs(cfg.model.lm.attn_implementation)
        )
        projector = build_projector(cfg.model.projector)
    model = VLM([encoder], projector, lm)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_complete(
    state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], unmapped: list[str]
) -> None:
    """Refuse, in one line, a mapping that leaves a source tensor unmapped, a vlab tensor
    unset, sets one vlab does not have, or sets one of another shape."""
    if unmapped:
        raise VlabError(
            f"{len(unmapped)} source tensor(s) map to nothing in vlab's VLM, e.g. {unmapped[0]}"
        )
    unset = sorted(set(shapes) - set(state))
    if unset:
        raise VlabError(f"{len(unset)} vlab tensor(s) left unset, e.g. {unset[0]}")
    extra = sorted(set(state) - set(shapes))
    if extra:
        raise VlabError(f"{len(extra)} mapped tensor(s) vlab's VLM lacks, e.g. {extra[0]}")
    for name, shape in shapes.items():
        if tuple(state[name].shape) != shape:
            raise VlabError(
                f"{name} is {tuple(state[name].shape)} in the source, {shape} in vlab's VLM"
            )


def write_run(
    out: str | os.PathLike,
    config: dict,
    lm_settings: dict,
    state: dict[str, torch.Tensor],
    tokenizer: Any,
    about: dict,
    unmapped: list[str] | None = None,
) -> Path:
    """Check, then write the run directory ``out`` (layout in the module docstring) for the
    VLM of ``config`` (a nested VLMRunConfig dict whose ``model.lm.pretrained`` is replaced
    by ``OUT/lm``) with the LM of ``lm_settings`` and the weights ``state`` (vlab names);
    ``unmapped``: source tensors no rule mapped (any is a refusal). ``about`` goes to
    import.json and the checkpoint. Returns ``out``."""
    out = Path(out).absolute()
    check_out(out)
    arch = config["model"]["lm"]["arch"]
    lm_config = hf_config(arch, lm_settings)
    probe = copy.deepcopy(config)
    probe["model"]["lm"] = {"arch": arch}  # the LM directory does not exist yet
    cfg = from_dict(VLMRunConfig, probe)
    check_complete(state, target_shapes(cfg, lm_config), unmapped or [])
    stored = {**to_dict(cfg), "stage": STAGE}
    stored["model"]["lm"]["pretrained"] = str(out / LM_DIR)
    tmp = out.parent / f".{out.name}.import-{os.getpid()}.tmp"
    try:
        _write(tmp, arch, lm_config, state, tokenizer, stored, about)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write(
    tmp: Path,
    arch: str,
    lm_config: Any,
    state: dict[str, torch.Tensor],
    tokenizer: Any,
    stored: dict,
    about: dict,
) -> None:
    from safetensors.torch import save_file

    tmp.mkdir(parents=True)
    record_kind(tmp, "vlm")
    lm_dir = tmp / LM_DIR
    lm_dir.mkdir()
    lm_config.save_pretrained(str(lm_dir))
    lm_state = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
    if getattr(lm_config, "tie_word_embeddings", False):
        lm_state.pop("lm_head.weight", None)  # tied: the table is saved once
    save_file(lm_state, str(lm_dir / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(lm_dir))
    here = copy.deepcopy({k: v for k, v in stored.items() if k != "stage"})
    here["model"]["lm"]["pretrained"] = str(lm_dir)
    from_dict(VLMRunConfig, here)  # the LM directory is one vlab reads (model_type, files)
    run = RunDir(tmp / f"stage{STAGE}")
    run.path.mkdir()
    run.write_config(stored)
    run.save_checkpoint(
        {
            "model": state,
            "optimizer": {},
            "scheduler": {},
            "rng": {},
            "step": 0,
            "loss_sum": 0.0,
            "loss_count": 0,
            "threshold_step": None,
            "last_eval_step": 0,
            "config": stored,
            "extra": {"imported": about},
        }
    )
    run.write_status(
        "done", reason=f"imported from {about['source']} ({about['format']})", step=0, arch=arch
    )
    atomic_write_json(tmp / IMPORT_FILE, about)
