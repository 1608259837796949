"""``vlab vlm``: train Pythia-VL or Mamba-VL, stage 1 then stage 2, into a run directory."""

from __future__ import annotations

import argparse

from vlab.config import cli_overrides, deep_merge
from vlab.models.distributed import is_main_process


def _overrides(args: argparse.Namespace) -> dict:
    data = cli_overrides(args.config, args.set)
    if args.data_root is not None:
        from vlab.models.vlm_data.paper_data import paper_data

        data = deep_merge({"data": paper_data(args.data_root)}, data)
    if args.steps is not None:
        data = deep_merge(data, {"stage2": {"steps": args.steps}})
    if args.ordering is not None:
        data = deep_merge(data, {"model": {"sequence": {"ordering": args.ordering}}})
    return data


def _train(args: argparse.Namespace) -> int:
    from vlab.models.vlm_train import config_from, train_vlm

    cfg = config_from(args.preset, args.arch, _overrides(args))
    stages = {"1": (1,), "2": (2,), "both": (1, 2)}[args.stage]
    results = train_vlm(cfg, args.out, stages, progress=not args.no_progress)
    for stage, result in results.items():
        if result is not None and is_main_process():
            acc = (result.final_metrics or {}).get("tasks")
            print(f"{args.out}/stage{stage}: {result.state}: {result.reason}; held-out {acc}")
    return 0 if all(r is None or r.state == "done" for r in results.values()) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    from vlab.models.vlm_train import PRESETS

    vlm = subparsers.add_parser("vlm", help="vision-language models: Pythia-VL and Mamba-VL")
    sub = vlm.add_subparsers(dest="vlm_command", metavar="ACTION", required=True)
    train = sub.add_parser(
        "train",
        help="train a VLM (stage 1: projector; stage 2: projector + LM)",
        description="Two-stage VLM training into OUT/stage1 and OUT/stage2 (run directories "
        "like the probes'). Rerunning resumes unfinished stages and skips finished ones.",
    )
    train.add_argument(
        "--preset",
        default="tiny-shapes",
        help=f"run preset ({', '.join(PRESETS)}; default tiny-shapes)",
    )
    train.add_argument("--arch", choices=["pythia", "mamba"], help="LM backbone")
    train.add_argument("--steps", type=int, help="stage 2 optimizer steps")
    train.add_argument("--stage", choices=["1", "2", "both"], default="both")
    train.add_argument(
        "--ordering",
        choices=["task_agnostic", "task_aware"],
        help="image first (task-agnostic) or instruction first (task-aware)",
    )
    train.add_argument(
        "--data-root",
        metavar="DIR",
        help="train on the paper's datasets in their usual layout under DIR "
        "(see vlab.models.vlm_data.paper_data); default: the built-in shapes dataset",
    )
    train.add_argument("--config", help="JSON config file (same nesting as config.json)")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any field, e.g. --set stage1.steps=50",
    )
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--out", required=True, help="run directory (created or resumed)")
    train.set_defaults(func=_train)
