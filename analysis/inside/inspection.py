"""``vlab inspect``: run the look-inside analyses on runs' checkpoints into their directories.

Each (run, checkpoint step, analysis) is one unit of work with one result::

    RUN_DIR/inside/step-<step>/<analysis>.csv    the analysis's tidy table (plus a step column)
    RUN_DIR/inside/step-<step>/<analysis>.json   what made it: examples, seconds, versions

The table is written first and the JSON last, both atomically, so a unit counts as done only
when its JSON names the same settings; a killed inspection redoes only the unit it was in.
An analysis may write more files for the report before both (:data:`EXTRAS`:
``image_attention`` writes the images of its first examples into
``step-<step>/image_attention/``), so they too are redone whole with a killed unit.
Every check (what kind of run is it, do the checkpoints exist, were they trained under this
config, are the analyses known and of the run's kind) happens before anything is written.

Analyses belong to a kind of run (its experiment's ``analyses``): probe runs get ``logit_lens``,
``attention``, ``state_probe`` and ``patching`` on held-out probe examples; VLM runs (a stage
of ``vlab vlm train``) get ``image_attention``, ``vlm_logit_lens``, ``vlm_state_probe`` and
``vlm_patching`` on held-out grounding examples of the shapes dataset
(:mod:`vlab.analysis.inside.vlm`, :mod:`vlab.analysis.inside.vlm_analyses`). Image probe
runs (``task.modality = "image"``) get the same four on the LM of their VLM, fed the input
embeddings of their held-out images; ``patching`` corrupts the images themselves (two
patches swapped, another patch queried) and feeds the LM their embeddings, which line up with
the clean ones index for index. Without named analyses every run gets those of its kind;
naming one that a run's kind does not have is an error.
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vlab.analysis.inside.placement import FLOAT32, Placement
from vlab.errors import VlabError
from vlab.experiment import experiment
from vlab.fileio import atomic_write_json, atomic_write_text, read_json

INSIDE = "inside"
# analysis -> (module, function). Each function is (model, examples[, vocab]) -> DataFrame.
ANALYSES: dict[str, tuple[str, str]] = {
    "logit_lens": ("vlab.analysis.inside.logit_lens", "logit_lens_table"),
    "attention": ("vlab.analysis.inside.attention", "attention_table"),
    "state_probe": ("vlab.analysis.inside.state_probe", "state_probe_table"),
    "patching": ("vlab.analysis.inside.patching", "patching_table"),
    "image_attention": ("vlab.analysis.inside.vlm", "image_attention_table"),
    "vlm_state_probe": ("vlab.analysis.inside.vlm_analyses", "vlm_state_probe_table"),
    "vlm_patching": ("vlab.analysis.inside.vlm_analyses", "vlm_patching_table"),
    "vlm_logit_lens": ("vlab.analysis.inside.vlm_analyses", "vlm_logit_lens_table"),
}
# analysis -> (module, function) writing, beside its table, what the report draws with it
# (the VLM's example images): (model, examples, folder), called before the table's marker.
EXTRAS: dict[str, tuple[str, str]] = {
    "image_attention": ("vlab.analysis.inside.vlm", "write_example_images"),
}
# Bump an analysis's version when its table changes meaning: older results are redone.
# patching 2: the conv window sites (conv_window, state_and_window) beside ssm_state
VERSIONS = {"logit_lens": 1, "attention": 1, "state_probe": 1, "patching": 2, "image_attention": 2}
VERSIONS |= {"vlm_state_probe": 1, "vlm_patching": 1, "vlm_logit_lens": 1}
DEFAULT_EXAMPLES = 256


def step_dir(run_path: Path, step: int) -> Path:
    return Path(run_path) / INSIDE / f"step-{step:09d}"


def result_paths(run_path: Path, step: int, analysis: str) -> tuple[Path, Path]:
    base = step_dir(run_path, step)
    return base / f"{analysis}.csv", base / f"{analysis}.json"


def extras_dir(run_path: Path, step: int, analysis: str) -> Path:
    """Where an analysis of :data:`EXTRAS` writes its extra files (``step-<step>/<analysis>/``)."""
    return step_dir(run_path, step) / analysis


def check_analyses(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise VlabError(
            f"--analyses: unknown analysis {unknown[0]!r} (known: {', '.join(ANALYSES)})"
        )
    if not names:
        raise VlabError("--analyses: name at least one analysis")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Unit:
    """One analysis of one run at one checkpoint."""

    run: Path
    step: int
    analysis: str


def _settings(analysis: str, examples: int, dtype: str = FLOAT32) -> dict:
    """What a result must match to count as done. The dtype counts (a bfloat16 result does
    not stand in for a float32 one; results from before ``--dtype`` are float32); the
    device and the memory cap do not (they change the numbers by float rounding only)."""
    version = VERSIONS[analysis]
    return {"analysis": analysis, "version": version, "examples": examples, "dtype": dtype}


def is_done(unit: Unit, examples: int, dtype: str = FLOAT32) -> bool:
    table, meta = result_paths(unit.run, unit.step, unit.analysis)
    if not (table.is_file() and meta.is_file()):
        return False
    try:
        recorded = read_json(meta)
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict):
        return False
    recorded = {"dtype": FLOAT32, **recorded}
    wanted = _settings(unit.analysis, examples, dtype)
    return all(recorded.get(k) == v for k, v in wanted.items())


def analyses_for(kind: str, analyses: Sequence[str] | None, path: Path) -> list[str]:
    """The analyses a run of ``kind`` gets: ``analyses`` (each must be of that kind) or,
    when None, all of its kind."""
    own = experiment(kind).analyses
    if analyses is None:
        return list(own)
    wrong = [a for a in analyses if a not in own]
    if wrong:
        raise VlabError(
            f"{path}: --analyses {wrong[0]} is not for a {kind} run (such a run has: "
            f"{', '.join(own)})"
        )
    return list(analyses)


def plan(
    paths: Sequence[Path],
    analyses: Sequence[str] | None,
    checkpoints: str,
    examples: int,
    log: Callable[[str], None] | None = None,
) -> list[Unit]:
    """Every unit the command asks for, checked before anything is written: runs parse,
    the analyses are of each run's kind (all of its kind when ``analyses`` is None), the
    named checkpoints exist and were trained under their run's config.

    Of several runs (a sweep still training), those without any checkpoint yet are left
    out, each named through ``log``; one run without checkpoints, or none with any, is an
    error."""
    from vlab.analysis.inside.runs import (
        VLM,
        available_steps,
        open_any_run,
        resolve_steps,
    )

    if analyses is not None:
        analyses = check_analyses(analyses)
    if examples < 2:
        raise VlabError(f"--examples must be >= 2, got {examples}")
    units = []
    unstarted = []
    for path in paths:
        run = open_any_run(path)
        names = analyses_for(run.kind, analyses, Path(path))
        if len(paths) > 1 and checkpoints in ("last", "all") and not available_steps(run):
            unstarted.append(str(path))
            continue
        if run.kind == VLM:
            from vlab.analysis.inside.vlm import check_vlm_run

            check_vlm_run(run)
        for step in resolve_steps(run, checkpoints):
            run.files.weights_at(step)  # refused before any work when it will not load
            units += [Unit(Path(path), step, a) for a in names]
    if unstarted and len(unstarted) == len(paths):
        raise VlabError(f"none of the {len(paths)} runs has a checkpoint to inspect yet")
    for path in unstarted:
        if log is not None:
            log(f"{path}: no checkpoints yet; left out")
    return units


def analysis_function(name: str) -> Callable:
    module, function = ANALYSES[name]
    return getattr(importlib.import_module(module), function)


def run_paths(paths: Sequence[str | Path], only: Sequence[str] | None = None) -> list[Path]:
    """The run directories of ``paths``: each a run directory or a sweep / folder of runs.

    ``only``: keep the runs whose name matches one of these globs (``*-s0``): the folder's
    name, or for a stage of a VLM sweep's run that run's name (``pythia-*`` takes
    ``runs/pythia-.../stage1`` and ``stage2``).
    """
    import fnmatch

    from vlab.analysis.load import find_runs

    found: list[Path] = []
    names: dict[Path, set[str]] = {}
    for path in paths:
        for name, run in find_runs(path):
            if run not in found:
                found.append(run)
            names.setdefault(run, {run.name}).add(name.split("/")[0])
    if only:
        kept = [r for r in found if any(fnmatch.fnmatch(n, p) for n in names[r] for p in only)]
        if not kept:
            raise VlabError(
                f"--only {' '.join(only)} matches none of the {len(found)} runs under "
                f"{', '.join(map(str, paths))}"
            )
        found = kept
    return found


def inspect_paths(
    paths: Sequence[str | Path],
    analyses: Sequence[str] | None = None,
    checkpoints: str = "last",
    examples: int = DEFAULT_EXAMPLES,
    *,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    only: Sequence[str] | None = None,
    placement: Placement | None = None,
) -> tuple[int, int, float]:
    """Plan (checking everything first), then do the units not done yet, runs in parallel
    over ``workers`` processes. ``analyses`` None: each run gets the analyses of its kind.
    ``placement``: device, dtype and memory cap (default: ``auto``, float32, no cap).
    Returns (units done now, units skipped, seconds)."""
    start = time.perf_counter()
    placement = placement or Placement()
    placement.check_here()
    units = plan(run_paths(paths, only), analyses, checkpoints, examples, log=log)
    todo = [u for u in units if not is_done(u, examples, placement.dtype)]
    check_placement(todo, examples, placement)
    if workers == 1 or len({u.run for u in todo}) <= 1:
        run_units(todo, examples, progress=progress, placement=placement)
    else:
        _run_parallel(todo, examples, workers, progress, placement)
    return len(todo), len(units) - len(todo), time.perf_counter() - start


def check_placement(units: Sequence[Unit], examples: int, placement: Placement) -> None:
    """What ``placement`` asks of the units, checked from each run's config before anything
    is written: under ``--max-memory-gb`` every analysis fits the cap with one example
    (:func:`vlab.analysis.inside.budget.plan_batch`); a VLM run is inspected in float32
    (its image pipeline feeds float32 pixels)."""
    from vlab.analysis.inside.budget import has_estimate, plan_batch
    from vlab.analysis.inside.runs import VLM, open_any_run, probe_shape

    if placement.dtype != FLOAT32:
        for run in dict.fromkeys(u.run for u in units):
            if open_any_run(run).kind == VLM:
                raise VlabError(
                    f"{run}: --dtype {placement.dtype}: a VLM run is inspected in float32 only"
                )
    if placement.cap_bytes is None:
        return
    shapes: dict[Path, object] = {}
    for unit in units:
        if not has_estimate(unit.analysis):
            continue
        if unit.run not in shapes:
            shapes[unit.run] = probe_shape(open_any_run(unit.run), placement.torch_dtype)
        if shapes[unit.run] is not None:
            dims, length = shapes[unit.run]
            plan_batch(dims, unit.analysis, length, examples, placement.cap_bytes)


def _run_parallel(
    units: Sequence[Unit], examples: int, workers: int, progress: bool, placement: Placement
) -> None:
    """One task per run in a pool of spawned processes (one torch thread each)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    by_run: dict[Path, list[Unit]] = {}
    for unit in units:
        by_run.setdefault(unit.run, []).append(unit)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = [
            pool.submit(run_units, group, examples, False, placement) for group in by_run.values()
        ]
        with tqdm(total=len(units), desc="inspect", unit="analysis", disable=not progress) as bar:
            for future in as_completed(futures):
                bar.update(len(future.result()))


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_units(
    units: Sequence[Unit],
    examples: int,
    progress: bool = True,
    placement: Placement | None = None,
) -> list[Unit]:
    """Do the units not already done (grouped so each checkpoint is loaded once), with the
    model placed by ``placement`` (default: ``auto``, float32, no cap); returns those it
    did."""
    from tqdm.auto import tqdm

    placement = placement or Placement()
    todo = [u for u in units if not is_done(u, examples, placement.dtype)]
    groups: dict[tuple[Path, int], list[Unit]] = {}
    for unit in todo:
        groups.setdefault((unit.run, unit.step), []).append(unit)
    bar = tqdm(total=len(todo), desc="inspect", unit="analysis", disable=not progress)
    for (run_path, step), group in groups.items():
        model, vocab, data = _load(run_path, step, examples, placement)
        for unit in group:
            bar.set_postfix_str(f"{run_path.name} step {step} {unit.analysis}")
            _run_unit(unit, model, vocab, data, examples, placement)
            bar.update()
    bar.close()
    return todo


def _load(run_path: Path, step: int, examples: int, placement: Placement):
    """The model at ``step`` (opened by the run's experiment, then placed by ``placement``),
    its probe vocabulary (None for a VLM) and its examples (an image probe run: its LM, and
    the embeddings its VLM makes of the held-out images; the VLM that embeds them, for
    ``patching``'s corrupted twins too, stays float32 on the device, so in another dtype
    the LM analysed is a copy)."""
    import copy

    from vlab.analysis.inside.runs import IMAGE_PROBE, VLM, open_any_run

    run = open_any_run(run_path)
    if run.kind == VLM:
        from vlab.analysis.inside.vlm import load_vlm, run_examples

        model, tokenizer = load_vlm(run, step)
        placement.place(model)
        return model, None, run_examples(run, model, tokenizer, examples)
    probe = experiment(run.kind).open(run.path, step)
    if run.kind == IMAGE_PROBE:
        from vlab.probes.examples import image_heldout_examples

        probe.model.to(placement.torch_device)
        lm = probe.model.lm if placement.dtype == FLOAT32 else copy.deepcopy(probe.model.lm)
        return placement.place(lm), probe.vocab, image_heldout_examples(probe, examples)
    from vlab.probes.examples import heldout_examples

    data = heldout_examples(run.config.task, probe.vocab, examples)
    return placement.place(probe.model), probe.vocab, data


def _run_unit(
    unit: Unit, model, vocab, data, examples: int, placement: Placement | None = None
) -> None:
    import torch

    from vlab.analysis.inside.budget import has_estimate

    placement = placement or Placement()
    start = time.perf_counter()
    function = analysis_function(unit.analysis)
    parameters = inspect.signature(function).parameters
    options = {}
    if placement.cap_bytes is not None and has_estimate(unit.analysis):
        options["batch_size"] = _batch_size(unit.analysis, model, data, placement)
    with torch.no_grad():
        if "vocab" in parameters:
            table = function(model, data, vocab, **options)
        else:
            table = function(model, data, **options)
    table.insert(0, "step", unit.step)
    csv_path, meta_path = result_paths(unit.run, unit.step, unit.analysis)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    if unit.analysis in EXTRAS:
        module, name = EXTRAS[unit.analysis]
        extra = getattr(importlib.import_module(module), name)
        extra(model, data, extras_dir(unit.run, unit.step, unit.analysis))
    atomic_write_text(csv_path, table.to_csv(index=False))
    atomic_write_json(
        meta_path,
        {
            **_settings(unit.analysis, examples, placement.dtype),
            "device": str(placement.torch_device),
            **options,
            "step": unit.step,
            "examples_used": len(data),
            "rows": len(table),
            "seconds": round(time.perf_counter() - start, 3),
            "torch": torch.__version__,
        },
    )


def _batch_size(analysis: str, model, data, placement: Placement) -> int:
    """The batch that keeps ``analysis`` (a probe analysis) under the cap."""
    from vlab.analysis.inside.budget import model_dims, plan_batch

    length = data.input_ids.shape[1]
    return plan_batch(model_dims(model), analysis, length, len(data), placement.cap_bytes)
