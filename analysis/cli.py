"""``vlab report SWEEP_DIR``: turn a sweep's run directories into a notebook and HTML report.

Imports nothing heavy at module level: the root CLI imports this module on every ``vlab`` call.
"""

from __future__ import annotations

import argparse

from vlab.errors import VlabError


def register(subparsers) -> None:
    """Add the ``report`` subcommand to the root parser's ``subparsers``."""
    p = subparsers.add_parser(
        "report",
        help="render the figure report (notebook + HTML) of a sweep",
        description=(
            "Execute a report notebook (papermill, on a kernel of this Python) over the run "
            "directories of SWEEP_DIR and write report.ipynb, report.html and figures/ (PNG "
            "and PDF) into it; another template writes TEMPLATE.ipynb, TEMPLATE.html and "
            "figures-TEMPLATE/ instead (e.g. --template inside: the look-inside analyses of "
            "`vlab inspect`). A VLM sweep (sweep.json kind vlm) gets the vlm template: "
            "benchmark tables, task-aware vs task-agnostic gains, training curves, grounding "
            "by target location; a finetune sweep (kind vlm-finetune) the finetune template: "
            "held-out score against resolution per arm (SHAKEUP Figure 3). Works on partial "
            "sweeps while they run."
        ),
    )
    p.add_argument(
        "sweep_dir",
        metavar="SWEEP_DIR",
        help="sweep directory (with sweep.json) or any folder of run directories",
    )
    p.add_argument(
        "--template",
        default=None,
        metavar="NAME",
        help="report template: a name shipped with vlab (probe_report, inside, vlm, finetune) "
        "or a path to an .ipynb (default: vlm for a VLM sweep, finetune for a finetune sweep, "
        "else probe_report)",
    )
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="set a template parameter, e.g. -p threshold 0.9 (value parsed as JSON)",
    )
    p.add_argument("--no-html", action="store_true", help="write the notebook and figures only")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from vlab.analysis.report import parse_value, render_report

    params = {}
    for key, raw in args.parameter:
        if key in params:
            raise VlabError(f"-p {key} is given twice")
        params[key] = parse_value(raw)
    paths = render_report(args.sweep_dir, args.template, params, html=not args.no_html)
    n_figures = len(list(paths.figures.glob("*.png")))
    if paths.html is not None:
        print(f"report:   {paths.html}")
    print(f"notebook: {paths.notebook}")
    print(f"figures:  {paths.figures}/ ({n_figures} PNG, each also as PDF)")
    return 0
