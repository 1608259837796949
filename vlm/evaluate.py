"""``vlab vlm eval``: a trained VLM on benchmark sets, without task-specific finetuning.

Reads a finished (or, with a warning, an unfinished) stage of a ``vlab vlm train`` run, or a
``vlab vlm finetune`` directory at its resolution (:mod:`vlab.vlm.trained`): its
config, the tokenizer it trained with and ``checkpoints/last.pt``. The benchmark
sources are prepared like held-out data (unpacked, captions merged per image with all their
references) into ``OUT/eval/NAME/data``; greedy answers to every example go to
``OUT/eval/NAME/predictions.jsonl`` batch by batch, so a killed evaluation resumes where it
stopped; the scores per benchmark (``source/task``: CIDEr, VQA score, accuracy, IoU@0.5 ...)
are written last, atomically, to ``OUT/eval/NAME/results.json``.

It builds batches, generates and autocasts exactly as training's held-out evaluation does
(``batch``, ``generate``, ``vlab.training.precision``) without importing the training code:
a benchmark score and a held-out score differ only in their data.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vlab.errors import VlabError
from vlab.fileio import append_jsonl, atomic_write_json, write_jsonl
from vlab.models.vlm.batch import batch_of, image_tokens
from vlab.models.vlm.data.prepared import MixtureConfig, PreparedMixture, prepare
from vlab.models.vlm.data.records import VLSample
from vlab.models.vlm.generate import greedy_generate
from vlab.models.vlm.metrics.answers import evaluate_predictions
from vlab.preflight import check_output_dir
from vlab.records import NonNegative, join_name, read_json_lines
from vlab.run_records import checked
from vlab.rundir import RunDir
from vlab.training.precision import autocast_for
from vlab.vlm.config import VLMRunConfig
from vlab.vlm.files import HELDOUT
from vlab.vlm.trained import FINETUNE_RUN, TrainedVLM, load_trained, trained_kind


def select_sources(
    mixture: MixtureConfig, limit: int | None = None, skip_missing: bool = False, log=print
) -> MixtureConfig:
    """The mixture with at most ``limit`` examples per source, and (``skip_missing``) without
    the sources whose annotation files or image folders are not there (each named in the log
    with what it lacks)."""
    sources = []
    for s in mixture.sources:
        if skip_missing and s.missing():
            log(f"skipping {s.label}: {', '.join(s.describe_missing())} missing")
            continue
        sources.append(dataclasses.replace(s, limit=limit) if limit is not None else s)
    if not sources:
        raise VlabError("no benchmark source has its files; nothing to evaluate")
    return dataclasses.replace(mixture, sources=tuple(sources), pack=False)


def evaluate_run(
    out: str | Path,
    mixture: MixtureConfig,
    name: str = "benchmarks",
    *,
    stage: int = 2,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    device: str = "auto",
    precision: str | None = None,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Evaluate ``out/stage{stage}`` (or the finetune directory ``out``, at its resolution) on
    ``mixture`` into ``out/eval/NAME``; returns (and writes) the results.

    ``precision`` ("auto", "fp32", "bf16") defaults to the one the weights trained with, so
    the answers come from the numerics its held-out metrics were measured in.
    """
    out = Path(out)
    where = join_name(out / "eval", name, "--name")  # a plain name: never a path out of the run
    mixture.check_files("sources.")  # everything missing, listed before the model loads
    check_output_dir(where, "--name")
    changes: dict[str, Any] = {}
    if batch_size is not None:
        changes["eval_batch_size"] = batch_size
    if max_new_tokens is not None:
        changes["max_new_tokens"] = max_new_tokens
    if name == HELDOUT and trained_kind(out) == FINETUNE_RUN:
        raise VlabError(
            f"{out}/eval/{name} is the finetune's own held-out evaluation; give another --name"
        )
    trained = load_trained(out, stage, device, changes=changes)
    cfg, model, tok = trained.config, trained.model, trained.tokenizer
    if not trained.files.is_done():
        unfinished = trained.files.path
        log(f"{unfinished} is not finished: evaluating its checkpoint at step {trained.step}")

    data_dir = prepare(
        mixture,
        where / "data",
        length_fn=lambda text: len(tok.encode(text, add_special_tokens=False)),
        max_length=cfg.model.sequence.max_length,
        image_tokens=image_tokens(cfg.model.sequence, model.grid, tok),
        heldout=True,
        log=log,
    )
    data = PreparedMixture(data_dir)
    fields = {"run": str(out), "stage": stage, **trained.about}  # a finetune's source, task ...
    return write_evaluation(
        trained,
        where,
        list(data),
        fields,
        per_source={k: v["sequences"] for k, v in data.stats.items()},
        precision=precision,
        progress=progress,
        desc=name,
    )


def write_evaluation(
    trained: TrainedVLM,
    where: Path,
    samples: list[VLSample],
    fields: dict,
    *,
    per_source: dict | None = None,
    shapes: bool = False,
    precision: str | None = None,
    progress: bool = False,
    desc: str = "",
) -> dict:
    """Score ``trained`` on ``samples`` into ``where`` (``RUN/eval/<name>``): the one writer of
    an evaluation's files, whoever asks (``vlab vlm eval``, a VLM run's held-out evaluation, a
    finetune's). Greedy answers go to ``where/predictions.jsonl``, the scores to
    ``where/results.json`` (written last, atomically): ``fields`` (what the caller records of
    the run), ``step``, ``examples``, ``per_source`` (default: examples per source) and the
    scores per benchmark. Returns the results.

    Dataset examples are answered batch by batch (:func:`generate_predictions`, appended as
    they come, so a killed evaluation resumes). ``shapes``: the samples are the built-in
    dataset's scenes, rendered in memory, scored by training's own held-out evaluation
    (:func:`shapes_answers`: the same batches, decoding and metrics, with its loss) and written
    with the target object's box (:func:`prediction_row`) so a report can score grounding by
    where the target lies. ``precision`` defaults to the one the weights trained with.
    """
    autocast = autocast_for(trained.device, precision or trained.precision)
    path = where / "predictions.jsonl"
    if shapes:
        losses, answers = shapes_answers(trained, samples, autocast)
        write_jsonl(path, [prediction_row(i, s, a) for i, s, a in zip(count(), samples, answers)])
        scores = {"eval_loss": float(np.mean(losses)), **evaluate_predictions(samples, answers)}
    else:
        model, tok, cfg = trained.model, trained.tokenizer, trained.config
        answers = generate_predictions(
            model, tok, cfg, samples, path, trained.device, autocast, progress, desc
        )
        scores = evaluate_predictions(samples, answers)
    results = {
        **fields,
        "step": trained.step,
        "examples": len(samples),
        "per_source": per_source or dict(Counter(s.source for s in samples)),
        **scores,
    }
    atomic_write_json(where / "results.json", results)
    return results


def shapes_answers(
    trained: TrainedVLM, samples: list[VLSample], autocast: Any
) -> tuple[list[float], list[str]]:
    """Per-example loss and greedy answer on built-in scenes, by training's own held-out
    evaluation (:meth:`vlab.vlm.train.VLMTask.answer`)."""
    from vlab.vlm.train import VLMTask

    cfg = trained.config
    task = VLMTask(cfg, trained.model, trained.tokenizer, cfg.eval_batch_size, trained.device, None)
    with torch.no_grad(), autocast:
        return task.answer(trained.model, samples)


def prediction_row(index: int, sample: VLSample, answer: str) -> dict:
    """One line of predictions.jsonl: the example's index, source, task, image, prompt, the
    answer and the reference, plus the target object's box normalised to 0-1 where the
    example is about one object (``meta["target"]``)."""
    row = {
        "index": index,
        "source": sample.source,
        "task": sample.task,
        "image_id": sample.image_id,
        "prompt": sample.turns[0].prompt,
        "prediction": answer,
        "reference": sample.turns[0].response,
    }
    target = sample.meta.get("target")
    if target is not None:
        x1, y1, x2, y2 = sample.meta["objects"][target]["box_px"]
        w, h = sample.meta["width"], sample.meta["height"]
        row["target_box"] = [x1 / w, y1 / h, x2 / w, y2 / h]
    return row


def generate_predictions(
    model: torch.nn.Module,
    tok: Any,
    cfg: VLMRunConfig,
    samples: list[VLSample],
    pred_path: Path,
    device: torch.device,
    autocast: Any,
    progress: bool = True,
    desc: str = "",
) -> list[str]:
    """Greedy answers of ``model`` to the first turn of every sample, in sample order.

    Each batch of ``cfg.eval_batch_size`` answers is appended to ``pred_path`` (JSON lines:
    index, source, task, image_id, prompt, prediction, reference) as soon as it is generated,
    and the lines already there are kept, so a killed evaluation resumes at its next batch.
    Batches are built with ``cfg.model.sequence`` (the layout the model was trained on).
    """
    done = _predictions_so_far(pred_path)
    if [r["index"] for r in done] != list(range(len(done))):
        raise VlabError(f"{pred_path} is not a prefix of this evaluation; remove it to start over")
    bs = cfg.eval_batch_size
    bar = tqdm(total=len(samples), initial=len(done), disable=not progress, desc=desc)
    with torch.no_grad(), autocast:
        for start in range(len(done), len(samples), bs):
            chunk = samples[start : start + bs]
            batch = batch_of(chunk, model, tok, cfg.model.sequence)
            batch = {k: v.to(device) for k, v in batch.items()}
            preds = greedy_generate(model, tok, batch, cfg.max_new_tokens)
            for i, (s, pred) in enumerate(zip(chunk, preds, strict=True)):
                append_jsonl(pred_path, prediction_row(start + i, s, pred))
            bar.update(len(chunk))
    bar.close()
    return [r["prediction"] for r in _predictions_so_far(pred_path)]


PREDICTIONS_FIX = "remove it to evaluate from the first example again"


@dataclasses.dataclass(frozen=True)
class PredictionLine:
    """A line of ``predictions.jsonl`` as a resumed evaluation reads it back: the example's
    ``index`` and its ``prediction``; the rest (source, task, prompt, reference) kept."""

    index: NonNegative
    prediction: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _predictions_so_far(pred_path: Path) -> list[dict]:
    """The answers a killed evaluation wrote, each line checked as a :class:`PredictionLine`
    (a torn last line dropped; any other damage a one-line error naming the line, never a
    KeyError or a UnicodeDecodeError); [] when there is no file."""
    return [
        checked(PredictionLine, value, pred_path, PREDICTIONS_FIX, field=f"line {number}")
        for number, value in read_json_lines(pred_path, PREDICTIONS_FIX)
    ]


@contextlib.contextmanager
def recorded_evaluation(where: Path, step: int | None, threads: int = 0) -> Iterator[RunDir]:
    """Keeps ``where/status.json`` of an evaluation that runs inside the block: ``running`` on
    entry, ``interrupted`` (Ctrl-C) or ``failed`` with the error on the way out of an
    exception, so ``vlab sweep status`` tells an evaluation that failed from one never
    started. ``threads`` (0: unchanged) sets torch's CPU threads for the block only.
    :func:`record_evaluated` writes ``done`` once the results are on disk."""
    files = RunDir(where)
    files.write_status("running", step=step, benchmarks=[])
    saved = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        yield files
    except BaseException as e:
        by_user = isinstance(e, KeyboardInterrupt)
        reason = "interrupted by the user" if by_user else f"{type(e).__name__}: {e}"
        files.write_status("interrupted" if by_user else "failed", reason)
        raise
    finally:
        torch.set_num_threads(saved)


def record_evaluated(files: RunDir, results: dict) -> None:
    """The ``done`` status of a finished evaluation: its step, accuracy and benchmarks."""
    benchmarks = sorted(results["sources"])
    files.write_status(
        "done",
        f"evaluated {len(benchmarks)} benchmarks on {results['examples']} examples",
        step=results["step"],
        accuracy=results["accuracy"],
        benchmarks=benchmarks,
    )
