"""``vlab inspect RUN_DIR|SWEEP_DIR``: look inside trained runs; results go into each run's
``inside/`` folder (see :mod:`vlab.analysis.inside.inspection`).

Imports nothing heavy at module level: the root CLI imports this module on every ``vlab`` call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vlab.config import bounded_float, bounded_int
from vlab.errors import VlabError

PROBE_ANALYSES = ("logit_lens", "attention", "state_probe", "patching")
VLM_ANALYSES = ("image_attention", "vlm_state_probe", "vlm_patching", "vlm_logit_lens")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="look inside trained runs: state probes, attention, patching, logit lens",
        description=(
            "Run the look-inside analyses on the checkpoints of one run or of every run of a "
            "sweep, writing tidy tables into RUN_DIR/inside/step-<step>/. Probe runs get the "
            "probe analyses; VLM runs (OUT/stage1, OUT/stage2 of `vlab vlm train` on the "
            "shapes dataset) get image_attention, the weight from the answer of grounding "
            "examples to the image patches, and the probe analyses on those examples "
            "(vlm_state_probe, vlm_patching, vlm_logit_lens). Finished analyses are skipped, "
            "so rerunning after a kill resumes; nothing is written outside the run "
            "directories. Render them with `vlab report SWEEP_DIR --template inside`."
        ),
    )
    p.add_argument("paths", nargs="*", metavar="RUN_DIR|SWEEP_DIR")
    zero = p.add_argument_group(
        "a pretrained LM, zero-shot (instead of RUN_DIR|SWEEP_DIR)",
        "make OUT a zero-shot probe run of a local save_pretrained directory (Pythia, Mamba, "
        "Mamba-2; train.steps = 0: evaluated and kept at step 0, nothing trained) and inspect "
        "it, as a baseline beside trained runs",
    )
    zero.add_argument("--pretrained", metavar="DIR", help="the LM's local directory")
    zero.add_argument("--out", metavar="OUT", help="the zero-shot run directory to make")
    zero.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="the probe run's config, e.g. --set task.length=16 (repeatable)",
    )
    p.add_argument(
        "--analyses",
        metavar="A,B",
        help=f"comma-separated: for probe runs from {', '.join(PROBE_ANALYSES)}; for VLM runs "
        f"{', '.join(VLM_ANALYSES)} (default: every analysis of each run's kind)",
    )
    p.add_argument(
        "--checkpoints",
        default="last",
        metavar="WHICH",
        help="last (default), all (every kept step and the last) or steps like 0,100,2000",
    )
    p.add_argument(
        "--examples",
        type=bounded_int(1, 1_000_000),
        default=256,
        metavar="N",
        help="held-out examples per analysis: probe examples (at most the held-out set) or "
        "a VLM's grounding examples (default 256)",
    )
    p.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default="local",
        help="local: on this machine (default; --workers processes); slurm: one SLURM array "
        "task per run through submitit (logs in inside-submitit/ under the first path)",
    )
    p.add_argument(
        "--workers",
        type=bounded_int(1, 256),
        default=1,
        metavar="N",
        help="local executor: runs inspected in parallel by N worker processes (default 1)",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="GLOB",
        help="inspect only runs whose folder name matches (repeatable), e.g. '*-s0'",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (default: the GPU when there is one, else the CPU; a SLURM task with "
        "--gpus-per-task uses its GPU), cpu or cuda[:N]",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="the model's precision (default float32; the analyses' own numerics are float32 "
        "either way). A result counts as done only in the dtype asked for",
    )
    p.add_argument(
        "--max-memory-gb",
        type=bounded_float(0, None, lo_open=True),
        metavar="G",
        help="cap on each analysis's estimated peak memory: its batch is chosen to fit "
        "(default: no cap, each analysis's default batch); a cap too small for one example "
        "is refused before anything runs",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from vlab.slurm.cli import add_slurm_flags

    g = add_slurm_flags(p)
    g.add_argument("--wait", action="store_true", help="block until the SLURM jobs end")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from vlab.analysis.inside.inspection import inspect_paths
    from vlab.analysis.inside.placement import Placement
    from vlab.slurm.cli import check_one_process

    if args.workers < 1:
        raise VlabError(f"--workers must be >= 1, got {args.workers}")
    args.placement = Placement(args.device, args.dtype, args.max_memory_gb)
    analyses = None
    if args.analyses is not None:
        analyses = [a.strip() for a in args.analyses.split(",") if a.strip()]
    args.paths = _paths(args, analyses)
    if args.executor == "slurm":
        return _submit(args, analyses)
    check_one_process(args)
    done, skipped, seconds = inspect_paths(
        args.paths,
        analyses,
        args.checkpoints,
        args.examples,
        workers=args.workers,
        progress=not args.no_progress,
        log=_note,
        only=args.only,
        placement=args.placement,
    )
    print(f"inspected: {done} analyses in {seconds:.1f} s ({skipped} already done, skipped)")
    return 0


def _paths(args: argparse.Namespace, analyses: list[str] | None) -> list[str]:
    """The runs to inspect: the paths given, or with ``--pretrained`` the zero-shot run it
    makes (after the checks that need no run: its config, the analyses named, the device)."""
    if args.pretrained is None:
        if args.out is not None or args.set:
            raise VlabError("--out and --set make a zero-shot run: give them with --pretrained")
        if not args.paths:
            raise VlabError("give RUN_DIR or SWEEP_DIR paths, or --pretrained DIR --out OUT")
        return args.paths
    if args.paths:
        raise VlabError("give either RUN_DIR|SWEEP_DIR paths or --pretrained DIR, not both")
    if args.out is None:
        raise VlabError("--pretrained: give --out OUT, the zero-shot run directory to make")
    from vlab.analysis.inside.inspection import analyses_for, check_analyses
    from vlab.probes.trainer import run_probe
    from vlab.probes.zero_shot import zero_shot_config

    device = None if args.placement.device == "auto" else args.placement.device
    config = zero_shot_config(args.pretrained, args.set or (), device=device)
    if analyses is not None:
        analyses_for("probe", check_analyses(analyses), Path(args.out))
    if args.executor == "local":
        args.placement.check_here()
    run_probe(config, args.out, progress=not args.no_progress, log=_note)
    return [args.out]


def _submit(args: argparse.Namespace, analyses: list[str] | None) -> int:
    from vlab.analysis.inside.inspection import check_placement, is_done, plan, run_paths
    from vlab.analysis.inside.submit import log_folder, submit_inspection, wait
    from vlab.slurm.cli import check_cluster, slurm_options

    options = slurm_options(args)
    if options.ranks > 1:
        raise VlabError(
            "--nodes, --tasks-per-node and --gpus-per-node are for training: vlab inspect runs "
            "each job in one process (give it a GPU with --gpus-per-task)"
        )
    runs = run_paths(args.paths, args.only)
    units = plan(runs, analyses, args.checkpoints, args.examples, log=_note)  # checks first
    placement = args.placement  # its device is checked on each task's node
    left = [u for u in units if not is_done(u, args.examples, placement.dtype)]
    check_placement(left, args.examples, placement)
    todo = sorted({u.run for u in left}, key=runs.index)
    if not todo:
        print(f"nothing to submit: all {len(units)} analyses are done")
        return 0
    check_cluster()
    folder = log_folder(args.paths)
    jobs = submit_inspection(
        todo, analyses, args.checkpoints, args.examples, options, folder, placement
    )
    print(f"submitted {len(todo)} runs as one SLURM job array ({jobs[0].job_id.split('_')[0]})")
    print(f"logs: {folder}")
    if args.wait:
        results = wait(jobs)
        print(f"inspected: {sum(r['done'] for r in results)} analyses on SLURM")
    return 0


def _note(line: str) -> None:
    print(line, file=sys.stderr)
