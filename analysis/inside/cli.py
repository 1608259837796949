"""``vlab inspect RUN_DIR|SWEEP_DIR``: look inside trained runs; results go into each run's
``inside/`` folder (see :mod:`vlab.analysis.inside.inspection`).

Imports nothing heavy at module level: the root CLI imports this module on every ``vlab`` call.
"""

from __future__ import annotations

import argparse

from vlab.errors import VlabError

ANALYSIS_NAMES = ("logit_lens", "attention", "state_probe", "patching")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="look inside trained runs: state probes, attention, patching, logit lens",
        description=(
            "Run the look-inside analyses on the checkpoints of one run or of every run of a "
            "sweep, writing tidy tables into RUN_DIR/inside/step-<step>/. Finished analyses "
            "are skipped, so rerunning after a kill resumes; nothing is written outside the "
            "run directories. Render them with `vlab report SWEEP_DIR --template inside`."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="RUN_DIR|SWEEP_DIR")
    p.add_argument(
        "--analyses",
        default=",".join(ANALYSIS_NAMES),
        metavar="A,B",
        help=f"comma-separated, from {', '.join(ANALYSIS_NAMES)} (default: all)",
    )
    p.add_argument(
        "--checkpoints",
        default="last",
        metavar="WHICH",
        help="last (default), all (every kept step and the last) or steps like 0,100,2000",
    )
    p.add_argument(
        "--examples",
        type=int,
        default=256,
        metavar="N",
        help="held-out probe examples per analysis (default 256, at most the held-out set)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="runs inspected in parallel by N local worker processes (default 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from vlab.analysis.inside.inspection import inspect_paths

    if args.workers < 1:
        raise VlabError(f"--workers must be >= 1, got {args.workers}")
    analyses = [a.strip() for a in args.analyses.split(",") if a.strip()]
    done, skipped, seconds = inspect_paths(
        args.paths,
        analyses,
        args.checkpoints,
        args.examples,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(f"inspected: {done} analyses in {seconds:.1f} s ({skipped} already done, skipped)")
    return 0
