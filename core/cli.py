"""The ``vlab`` console script: one subcommand per package that does the work.

Each package exposes ``register(subparsers)`` in its own ``cli`` module; this file only wires
them together and turns :class:`~vlab.errors.VlabError` into a one-line message (full
traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from vlab.errors import VlabError

# (subcommand, module that registers it). These modules import nothing heavy at the top (torch,
# transformers, pandas come inside the command that needs them), so ``vlab --help`` is fast.
SUBCOMMANDS = [
    ("probe", "vlab.probes.cli"),
    ("vlm", "vlab.vlm.cli"),
    ("sweep", "vlab.slurm.cli"),
    ("report", "vlab.analysis.cli"),
    ("inspect", "vlab.analysis.inside.cli"),
    ("bench", "vlab.bench.cli"),
]


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (which flag, what is wrong, where the help is),
    like every other error of ``vlab``; exit status 2 as argparse's."""

    def error(self, message: str):
        self.exit(2, f"vlab: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: str) -> str:
    """``message`` on one line: a newline or carriage return in it (from a path or a name
    given on the command line) is shown escaped, so every error stays one line."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vlab",
        description="Transformers vs Mamba: retrieval probes, VLM training, sweeps, reports.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _, module in SUBCOMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a refused argument (2, one line): a status, as below
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
    except VlabError as e:
        if args.debug:
            raise
        print(f"vlab: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vlab sweep show X | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # the disk refused a write or a read: which path, and why
        if args.debug or e.strerror is None:
            raise
        where = f"{e.filename}: " if e.filename is not None else ""
        print(f"vlab: error: {one_line(where + e.strerror)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlab: interrupted", file=sys.stderr)
        return 130
    if "torch.distributed" in sys.modules:  # a subcommand ran under torchrun: leave its group
        from vlab.training.distributed import close_distributed

        close_distributed()
    return code


if __name__ == "__main__":  # ``python -m vlab.cli``, which is how torchrun starts vlab
    status = main()
    if os.environ.get("TORCHELASTIC_RUN_ID") and "torch.distributed" in sys.modules:
        from vlab.training.distributed import exit_rank

        exit_rank(status)  # a torchrun rank: no interpreter teardown (see exit_rank)
    sys.exit(status)
