"""``vlab vlm eval``: a trained VLM on benchmark sets, without task-specific finetuning.

Reads a finished (or, with a warning, an unfinished) stage of a ``vlab vlm train`` run, or a
``vlab vlm finetune`` directory at its resolution (:mod:`vlab.vlm.trained`): its
config, the tokenizer it trained with and ``checkpoints/last.pt``. Each benchmark (a source of
the mixture: a paper's suite, or a ``--config`` file's) is a phase of its own in
``OUT/eval/<benchmark>/`` (:func:`evaluate_benchmarks`), the layout a run's own benchmark
suite is written in: its sources prepared like held-out data (unpacked, captions merged per
image with all their references) into ``data/``; greedy answers to every example appended to
``predictions.jsonl`` batch by batch, so a killed evaluation resumes where it stopped; the
scores (``source/task``: CIDEr, VQA score, accuracy, IoU@0.5 ...) written last, atomically, to
``results.json``, and ``status.json`` done. A finished benchmark is never scored again.
``--name NAME`` puts every benchmark in the one folder ``OUT/eval/NAME`` instead
(:func:`evaluate_run`, as a run's held-out evaluation is written).

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

from vlab.config import to_dict
from vlab.errors import VlabError
from vlab.fileio import append_jsonl, atomic_write_json, read_json_object, write_jsonl
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
from vlab.vlm.files import HELDOUT, evaluated
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
    spice: bool | None = None,
) -> dict[str, Any]:
    """Evaluate ``out/stage{stage}`` (or the finetune directory ``out``, at its resolution) on
    ``mixture`` into the one folder ``out/eval/NAME``; returns (and writes) the results.

    What ``vlab vlm eval --name`` and a run's held-out evaluation write; a benchmark suite
    goes a folder per benchmark instead (:func:`evaluate_benchmarks`). ``precision`` ("auto",
    "fp32", "bf16") defaults to the one the weights trained with, so the answers come from the
    numerics its held-out metrics were measured in. ``spice`` as
    :func:`~vlab.models.vlm.metrics.answers.evaluate_predictions` takes it.
    """
    out = Path(out)
    where = join_name(out / "eval", name, "--name")  # a plain name: never a path out of the run
    mixture.check_files("sources.")  # everything missing, listed before the model loads
    check_output_dir(where, "--name")
    if name == HELDOUT and trained_kind(out) == FINETUNE_RUN:
        raise VlabError(
            f"{out}/eval/{name} is the finetune's own held-out evaluation; give another --name"
        )
    trained = open_for_evaluation(out, stage, device, batch_size, max_new_tokens, log)
    fields = {"run": str(out), "stage": stage, **trained.about}  # a finetune's source, task ...
    return score_mixture(
        trained,
        mixture,
        where,
        fields,
        precision=precision,
        progress=progress,
        desc=name,
        log=log,
        spice=spice,
    )


def benchmark_dirs(out: str | Path, mixture: MixtureConfig) -> dict[str, Path]:
    """``RUN/eval/<benchmark>`` of every source of ``mixture`` (a source is a benchmark, named
    by its label), each checked as a folder vlab can write; a label that is no plain name, or
    is ``heldout`` (the run's own held-out evaluation), is refused in one line."""
    dirs = {}
    for source in mixture.sources:
        if source.label == HELDOUT:
            raise VlabError(
                f"a benchmark cannot be called {HELDOUT!r}: {out}/eval/{HELDOUT} is the run's "
                "own held-out evaluation; give the source another name"
            )
        where = join_name(Path(out) / "eval", source.label, "benchmark name")
        check_output_dir(where, "benchmark folder")
        dirs[source.label] = where
    return dirs


def evaluate_benchmarks(
    out: str | Path,
    mixture: MixtureConfig,
    *,
    stage: int = 2,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    device: str = "auto",
    precision: str | None = None,
    threads: int = 0,
    progress: bool = True,
    log: Callable[[str], Any] = print,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, dict]:
    """Evaluate ``out/stage{stage}`` (or the finetune ``out``) on each source of ``mixture``
    as a benchmark of its own, in ``out/eval/<benchmark>/``; returns {benchmark: results} of
    those finished, in order (all of them unless ``should_stop`` said stop between two).

    Why a folder each: every benchmark is a phase of its own (status.json running, then done
    or failed; results.json written atomically, last), so a killed evaluation resumes at the
    benchmark it was on (its answers so far kept, :func:`generate_predictions`) and a finished
    benchmark is read back, never scored again (delete its folder to score it again). Each
    folder holds what ``vlab vlm eval --name`` writes for one source, its results naming the
    ``benchmark``; caption benchmarks get SPICE when its jars are there (else the reason, under
    ``captions.unavailable``). Everything missing from the benchmarks' files is listed before
    the model loads; the model loads once, and not at all when every benchmark is done. Only
    stage 2 is scored this way (the run's suite); ``vlab vlm eval --name`` takes stage 1.
    ``threads`` (0: unchanged) sets torch's CPU threads while scoring.
    """
    out = Path(out)
    if stage != 2:  # RUN/eval/<benchmark> is the run's suite, which scores stage 2
        raise VlabError(
            f"{out}/eval/<benchmark>/ holds stage 2's scores (the run's benchmark suite); give "
            f"--name NAME to evaluate stage {stage} into {out}/eval/NAME"
        )
    wheres = benchmark_dirs(out, mixture)
    mixture.check_files("sources.")
    trained_kind(out)  # a folder that is no trained VLM: one line naming it, before any work
    ones = {
        s.label: dataclasses.replace(mixture, sources=(s,), pack=False) for s in mixture.sources
    }
    for label, one in ones.items():
        _check_same_benchmark(wheres[label], one)
    results: dict[str, dict] = {}
    trained = None
    for source in mixture.sources:
        label, where = source.label, wheres[source.label]
        if evaluated(where):
            results[label] = read_json_object(
                where / "results.json", f"delete {where} to evaluate {label} again"
            )
            continue
        if should_stop is not None and should_stop():
            break
        if trained is None:
            trained = open_for_evaluation(out, stage, device, batch_size, max_new_tokens, log)
        fields = {"run": str(out), "stage": stage, "benchmark": label, **trained.about}
        with recorded_evaluation(where, trained.step, threads) as files:
            results[label] = score_mixture(
                trained,
                ones[label],
                where,
                fields,
                precision=precision,
                progress=progress,
                desc=label,
                log=log,
                spice=None,
            )
        record_evaluated(files, results[label])
    return results


def _check_same_benchmark(where: Path, one: MixtureConfig) -> None:
    """A benchmark folder already holding data prepared from another source config (another
    ``--limit``, data root or split) is refused in one line naming it, before any work: its
    results would otherwise be read back, or resumed, as if they were this benchmark's."""
    manifest = where / "data" / "manifest.json"
    if not manifest.is_file():
        return
    fix = f"delete {where} to evaluate it again"
    stored = read_json_object(manifest, fix).get("mixture")
    if stored != to_dict(one):
        raise VlabError(
            f"{where} holds {one.sources[0].label} evaluated on other data (its "
            f"data/manifest.json differs: another --limit, data root or split?); {fix}, or "
            "give --name to evaluate into another folder"
        )


def open_for_evaluation(
    out: Path,
    stage: int,
    device: str,
    batch_size: int | None,
    max_new_tokens: int | None,
    log: Callable[[str], Any],
) -> TrainedVLM:
    """The trained VLM at ``out`` (a train run's ``stage``, or a finetune) with the run's
    generation settings changed where given; an unfinished stage is evaluated at its last
    checkpoint, with a warning."""
    changes: dict[str, Any] = {}
    if batch_size is not None:
        changes["eval_batch_size"] = batch_size
    if max_new_tokens is not None:
        changes["max_new_tokens"] = max_new_tokens
    trained = load_trained(out, stage, device, changes=changes)
    if not trained.files.is_done():
        unfinished = trained.files.path
        log(f"{unfinished} is not finished: evaluating its checkpoint at step {trained.step}")
    return trained


def score_mixture(
    trained: TrainedVLM,
    mixture: MixtureConfig,
    where: Path,
    fields: dict,
    *,
    precision: str | None = None,
    progress: bool = True,
    desc: str = "",
    log: Callable[[str], Any] = print,
    spice: bool | None = None,
) -> dict[str, Any]:
    """Prepare ``mixture`` as held-out data (unpacked, captions merged per image) into
    ``where/data`` with the model's tokenizer, length limit and image tokens, then score
    ``trained`` on every example into ``where`` (:func:`write_evaluation`)."""
    tok, cfg, model = trained.tokenizer, trained.config, trained.model
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
    return write_evaluation(
        trained,
        where,
        list(data),
        fields,
        per_source={k: v["sequences"] for k, v in data.stats.items()},
        precision=precision,
        progress=progress,
        desc=desc,
        spice=spice,
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
    spice: bool | None = False,
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
    ``spice``: False (held-out evaluations) leaves SPICE out, None (benchmarks) computes it
    where it can run and records why not otherwise.
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
        scores = evaluate_predictions(samples, answers, spice=spice)
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
