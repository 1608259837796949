"""Where a VLM run keeps its files, in one place for every writer and reader (torch-free).

A ``vlab vlm train`` run directory::

    RUN/run.json            its kind ("vlm")
    RUN/tokenizer/          the BPE a from-scratch LM trained with
    RUN/stage1/, stage2/    the stages' run directories (config.json, status.json, ...)
    RUN/eval/heldout/       the held-out evaluation (status.json, results.json, predictions)
    RUN/eval/<benchmark>/   one benchmark of the run's suite, or of ``vlab vlm eval``: its
                            status.json, results.json, predictions.jsonl and prepared data/
    RUN/eval/<name>/        ``vlab vlm eval --name <name>``: every benchmark in one folder

A finetune's directory is one run directory with the same ``eval/heldout/`` and
``eval/<benchmark>/``.
"""

from __future__ import annotations

import os
from pathlib import Path

HELDOUT = "heldout"  # eval/<HELDOUT>/: the run's own held-out evaluation


def eval_dir(run: str | os.PathLike, name: str = HELDOUT) -> Path:
    """``RUN/eval/<name>``: an evaluation's folder (the held-out one by default)."""
    return Path(run) / "eval" / name


def evaluated(where: str | os.PathLike) -> bool:
    """Whether the evaluation in ``where`` is finished: its status.json says done and its
    results.json is there (a results.json removed by hand means: evaluate again)."""
    from vlab.rundir import RunDir

    return RunDir(where).is_done() and (Path(where) / "results.json").is_file()
