"""Two-stage VLM training on the shared engine, into run directories like the probes'.

Stage 1 trains the projector only (the LM and pretrained encoders frozen); stage 2 unfreezes
the LM and instruction-tunes everything but frozen encoders. Both use the engine of
``vlab.training.engine`` (AdamW, cosine with warmup ratio, gradient accumulation, bf16 autocast
on GPU, a checkpoint at every evaluation, resume), and write ``OUT/stage1`` and ``OUT/stage2``
run directories; stage 2 starts from stage 1's final weights.

Data: the built-in shapes dataset (offline, CPU-sized). Every sample is a pure function of its
index, so the batch of a step is rebuilt exactly on resume. Held-out metrics per task come from
greedy generation: exact match for caption / VQA / POPE / ITM, token F1 for dense captions,
IoU >= 0.5 for grounding: the coarse (summary) vs fine (retrieval) split the papers study.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vlab.config import deep_merge, from_dict, to_dict
from vlab.errors import ConfigError, VlabError
from vlab.models.backbones import count_parameters
from vlab.models.vlm.data.instructions import instruction_for
from vlab.models.vlm.data.records import VLSample, load_image
from vlab.models.vlm.data.run_data import (
    FileData,
    ShapesData,
    VLMDataConfig,
    open_data,
    tokenizer_texts,
)
from vlab.models.vlm.loss import per_sequence_loss
from vlab.models.vlm.metrics.answers import evaluate_predictions
from vlab.models.vlm.model import VLM, VLMConfig, build_vlm
from vlab.models.vlm.sequence import (
    IGNORE,
    Assembled,
    SequenceConfig,
    assemble,
    collate,
    image_segment_length,
)
from vlab.rundir import RunDir
from vlab.training.distributed import all_ranks, claim_run, is_sharded, setup_distributed
from vlab.training.engine import Batch, TrainConfig, TrainResult, resolve_device, train


@dataclass(frozen=True)
class VLMRunConfig:
    """Everything a ``vlab vlm train`` run needs: model, data and both stages' settings."""

    model: VLMConfig = field(default_factory=VLMConfig)
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    stage1: TrainConfig = field(default_factory=TrainConfig)
    stage2: TrainConfig = field(default_factory=TrainConfig)
    eval_batch_size: int = 32
    max_new_tokens: int = 32

    def __post_init__(self) -> None:
        if self.eval_batch_size < 1:
            raise ConfigError("eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")


_TINY_TRAIN = {
    "batch_size": 32,
    "eval_every": 50,
    "stop_at_threshold": False,
    "warmup_ratio": 0.03,
    "weight_decay": 0.0,
}
PRESETS: dict[str, dict] = {
    # Tiny Pythia-VL / Mamba-VL on the built-in shapes dataset: minutes on 2 CPU cores.
    "tiny-shapes": {
        "model": {
            "lm": {"preset": "tiny"},
            "vision": {"kind": "patch", "preset": "tiny", "image_size": 64},
            "sequence": {"max_length": 256},
        },
        "data": {"shapes": {"image_size": 64}, "n_heldout": 120},
        "stage1": {**_TINY_TRAIN, "steps": 100, "lr": 3e-3},
        "stage2": {**_TINY_TRAIN, "steps": 600, "lr": 2e-3},
    },
    # SHAKEUP's recipe: EVA-02-L/14 at 336 px, 2-layer MLP, Pythia-1.4B / Mamba-1.4B. Stage 1:
    # batch 256, lr 1e-3; stage 2: batch 128, lr 2e-5; AdamW, cosine, warmup ratio 0.03.
    # Point model.lm.pretrained, model.vision.pretrained and data.tokenizer at local copies.
    "paper-1.4b": {
        "model": {
            "lm": {"preset": "1.4b"},
            "vision": {"kind": "eva02", "preset": "paper"},
            "sequence": {"max_length": 1024},
        },
        "stage1": {
            "steps": 11_621,
            "batch_size": 256,
            "lr": 1e-3,
            "warmup_ratio": 0.03,
            "weight_decay": 0.0,
            "stop_at_threshold": False,
            "eval_fraction": 0.05,
        },
        "stage2": {
            "steps": 96_875,
            "batch_size": 128,
            "lr": 2e-5,
            "warmup_ratio": 0.03,
            "weight_decay": 0.0,
            "stop_at_threshold": False,
            "eval_fraction": 0.02,
        },
        "eval_batch_size": 16,
    },
}


def preset_config(name: str, arch: str | None = None, overrides: dict | None = None) -> dict:
    """The nested config dict of a preset, with the LM architecture and overrides applied."""
    if name not in PRESETS:
        raise ConfigError("preset", f"{name!r} is not a VLM preset ({', '.join(PRESETS)})")
    data = PRESETS[name]
    if arch is not None:
        data = deep_merge(data, {"model": {"lm": {"arch": arch}}})
    return deep_merge(data, overrides or {})


# data -----------------------------------------------------------------------------------------


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def run_tokenizer(cfg: VLMRunConfig, out: Path):
    """The LM tokenizer: ``data.tokenizer``, else the pretrained LM's own directory, else (a
    from-scratch LM) a BPE trained on the dataset's own text, saved under ``OUT/tokenizer`` so
    generation and later stages read the same one."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from vlab.models.vlm.tokenizer import train_bpe_tokenizer

    source = cfg.data.tokenizer or cfg.model.lm.pretrained
    if source is not None:
        field = "data.tokenizer" if cfg.data.tokenizer else "model.lm.pretrained"
        # transformers 5 builds an empty tokenizer from a model directory without one
        if not any((Path(source) / f).is_file() for f in TOKENIZER_FILES):
            raise ConfigError(
                field,
                f"{source} holds no tokenizer ({', '.join(TOKENIZER_FILES)}); set data.tokenizer",
            )
        try:
            return AutoTokenizer.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ConfigError(field, f"no tokenizer loads from {source}: {e}") from e
    saved = out / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(saved))
    texts = list(tokenizer_texts(cfg.data, n=600))
    layout = cfg.model.sequence.layout
    texts.extend(m for m in (layout.start, layout.row_break, layout.end, layout.text_sep) if m)
    tok = train_bpe_tokenizer(texts, vocab_size=cfg.model.lm.overrides.get("vocab_size", 384))
    tok.save_pretrained(str(saved))
    return tok


class VLMTask:
    """The VLM as the engine sees it: batches by step, loss, held-out metrics."""

    def __init__(
        self,
        cfg: VLMRunConfig,
        model: VLM,
        tok,
        batch_size: int,
        device: torch.device,
        data: ShapesData | FileData,
    ):
        self.cfg, self.model, self.tok, self.data = cfg, model, tok, data
        self.batch_size = batch_size
        self.device = device
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.heldout = data.heldout

    def _assemble(self, s: VLSample) -> Assembled:
        turns = [(t.prompt, t.response) for t in s.turns]
        return assemble(
            turns,
            instruction_for(s.task) or None,
            self.model.grid,
            self.tok,
            self.cfg.model.sequence,
        )

    def _pixels(self, samples: list[VLSample]) -> list[torch.Tensor]:
        images = [load_image(s) for s in samples]
        return [enc.preprocess(images) for enc in self.model.encoders]

    def batch_of(self, samples: list[VLSample]) -> Batch:
        batch = collate([self._assemble(s) for s in samples], self.pad_id)
        for i, px in enumerate(self._pixels(samples)):
            batch[f"pixel_values_{i}"] = px
        return batch

    def train_batch(self, step: int) -> Batch:
        return self.batch_of(self.data.train(step * self.batch_size, self.batch_size))

    def _forward(self, model: nn.Module, batch: Batch) -> dict:
        pixels = [batch[k] for k in sorted(batch) if k.startswith("pixel_values_")]
        return model(
            batch["input_ids"],
            batch["patch_index"],
            pixels,
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self._forward(model, batch)["loss"]

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        losses, predictions = [], []
        bs = self.cfg.eval_batch_size
        for i in range(0, len(self.heldout), bs):
            samples = self.heldout[i : i + bs]
            batch = {k: v.to(self.device) for k, v in self.batch_of(samples).items()}
            out = self._forward(model, batch)
            losses.extend(per_sequence_loss(out["logits"], batch["labels"]).tolist())
            predictions.extend(self.generate(model, batch))
        scores = evaluate_predictions(self.heldout, predictions)
        return {"eval_loss": float(np.mean(losses)), **scores}

    @torch.no_grad()
    def generate(self, model: nn.Module, batch: Batch) -> list[str]:
        """Greedy answers to the first turn of each sequence in ``batch``.

        Prompts are the assembled sequences cut where the first response starts, left-padded
        to a common length P so every row's next token comes from the last column. One
        prefill pass over (B, P) fills the decoding cache (keys and values, or Mamba's conv
        and SSM states); each further token is one (B, 1) step, so an answer of n tokens
        costs P + n token positions instead of n passes over the growing sequence. Rows that
        have finished keep stepping on padding, which is discarded.
        """
        labels = batch["labels"]
        dev = labels.device
        first = (labels != IGNORE).float().argmax(1)  # first response token per row
        B, P = labels.shape[0], int(first.max())
        ids = torch.full((B, P), self.pad_id, dtype=torch.long, device=dev)
        patch = torch.full((B, P), -1, dtype=torch.long, device=dev)
        mask = torch.zeros((B, P), dtype=torch.long, device=dev)
        for b in range(B):
            n = int(first[b])
            ids[b, P - n :] = batch["input_ids"][b, :n]
            patch[b, P - n :] = batch["patch_index"][b, :n]
            mask[b, P - n :] = 1
        pixels = [batch[k] for k in sorted(batch) if k.startswith("pixel_values_")]
        cache = model.new_cache()
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(ids, patch, pixels, attention_mask=mask, cache=cache, position_ids=positions)
        nxt = logits["logits"][:, -1].argmax(-1)
        no_patch = torch.full((B, 1), -1, dtype=torch.long, device=dev)
        step_pos = positions[:, -1:]
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        out_tokens: list[list[int]] = [[] for _ in range(B)]
        lockstep = is_sharded(model)  # one rank leaving early would hang the others
        for step in range(self.cfg.max_new_tokens):
            done |= nxt == self.tok.eos_token_id
            for b in (~done).nonzero().flatten().tolist():
                out_tokens[b].append(int(nxt[b]))
            finished = all_ranks(bool(done.all())) if lockstep else bool(done.all())
            if finished or step + 1 == self.cfg.max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones_like(no_patch)], 1)
            step_pos = step_pos + 1
            fed = torch.where(done, self.pad_id, nxt).unsqueeze(1)
            logits = model(
                fed, no_patch, pixels, attention_mask=mask, cache=cache, position_ids=step_pos
            )
            nxt = logits["logits"][:, -1].argmax(-1)
        return [self.tok.decode(t, skip_special_tokens=True) for t in out_tokens]


# runs -----------------------------------------------------------------------------------------


def image_tokens(seq: SequenceConfig, grid: tuple[int, int], tok) -> int:
    """Tokens the image takes in a sequence (patches, markers and the text separator): what
    packing reserves before counting text."""
    sep = seq.layout.text_sep
    n_sep = len(tok.encode(sep, add_special_tokens=False)) if sep else 0
    return image_segment_length(seq.layout, *grid, tok) + n_sep


def train_vlm(
    cfg: VLMRunConfig,
    out: str | Path,
    stages: tuple[int, ...] = (1, 2),
    *,
    progress: bool = True,
    log=print,
) -> dict[int, TrainResult | None]:
    """Run the requested stages into ``out/stage{N}``; finished stages are skipped."""
    out = Path(out)
    cfg.data.check_files()
    ctx = setup_distributed(resolve_device(cfg.stage2.device))
    log = log if ctx.is_main else (lambda *_: None)
    if ctx.is_main:  # rank 0 trains or checks the tokenizer; the others then load it
        out.mkdir(parents=True, exist_ok=True)
        tok = run_tokenizer(cfg, out)
    ctx.barrier()
    if not ctx.is_main:
        tok = run_tokenizer(cfg, out)
    full, defaults = to_dict(cfg), to_dict(type(cfg)())
    results: dict[int, TrainResult | None] = {}
    for stage in stages:
        train_cfg = cfg.stage1 if stage == 1 else cfg.stage2
        run, done = claim_run(ctx, out / f"stage{stage}", {**full, "stage": stage}, defaults)
        if done:
            log(f"{run.path}: already done; nothing to do")
            results[stage] = None
            continue
        model = build_vlm(cfg.model, vocab_size=len(tok), seed=train_cfg.seed)
        if stage == 2 and RunDir(out / "stage1").exists():
            prev = RunDir(out / "stage1")
            if not prev.is_done():
                raise VlabError(f"{prev.path} is not finished: run stage 1 first")
            model.load_state_dict(prev.load_checkpoint()["model"])
        elif stage == 2:
            log(f"{out}: no stage 1 run; stage 2 starts from a randomly initialised projector")
        model.set_stage(stage)
        params = count_parameters(model.lm)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(
            f"{run.path}: {cfg.model.lm.arch}-VL stage {stage}: LM {params['total']:,} "
            f"parameters, {trainable:,} trainable, {model.num_visual_tokens} visual tokens"
        )
        run.write_status(
            "running",
            params={**params, "trainable": trainable},
            arch=cfg.model.lm.arch,
            stage=stage,
        )
        device = ctx.device(resolve_device(train_cfg.device))
        data = open_data(
            cfg.data,
            stage,
            out,
            is_main=ctx.is_main,
            barrier=ctx.barrier,
            length_fn=lambda text: len(tok.encode(text, add_special_tokens=False)),
            max_length=cfg.model.sequence.max_length,
            image_tokens=image_tokens(cfg.model.sequence, model.grid, tok),
            log=log,
        )
        task = VLMTask(cfg, model, tok, train_cfg.batch_size, device, data)
        results[stage] = train(model, task, train_cfg, run, progress=progress)
    return results


def config_from(preset: str | None, arch: str | None, overrides: dict) -> VLMRunConfig:
    """A validated run config from a preset name (or none), an arch and nested overrides."""
    if preset:
        data = preset_config(preset, arch, overrides)
    else:
        data = deep_merge({"model": {"lm": {"arch": arch}}} if arch else {}, overrides)
    return from_dict(VLMRunConfig, data)
