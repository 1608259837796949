"""``vlab probe``: train one synthetic retrieval probe run.

Precedence: dataclass defaults < the arm's tuned recipe (:func:`vlab.probes.recipes.
recipe_defaults`: the tiny preset without a checkpoint; ``--no-recipe`` leaves it out) <
``--config FILE`` (JSON, nested like ``config.json``) < ``--set key=value`` < the named flags.
The merged config is validated before anything is built, so a bad value fails in milliseconds
with the field's name.
"""

from __future__ import annotations

import argparse

from vlab.config import cli_overrides, deep_merge, from_dict, output_dir


def config_from_args(args: argparse.Namespace):
    """The validated :class:`ProbeRunConfig` the flags describe."""
    from vlab.probes.config import ProbeRunConfig
    from vlab.probes.zero_shot import with_checkpoint_arch

    data = cli_overrides(args.config, args.set)
    flags = {
        "model": {
            "arch": args.arch,
            "preset": args.preset,
            "pretrained": args.pretrained,
            "init_seed": args.seed,
        },
        "task": {
            "variant": args.variant,
            "length": args.length,
            "seed": args.data_seed,
            "target_mode": args.target_mode,
            "modality": args.modality,
        },
        "train": {
            "steps": args.steps,
            "lr": args.lr,
            "seed": args.seed,
            "batch_size": args.batch_size,
            "device": args.device,
            "threads": args.threads,
        },
    }
    for section, values in flags.items():
        data = deep_merge(data, {section: {k: v for k, v in values.items() if v is not None}})
    data = with_checkpoint_arch(data)
    if not args.no_recipe:
        data = _under(data, _recipe(data))
    return from_dict(ProbeRunConfig, data)


def _under(data: dict, defaults: dict) -> dict:
    """``data`` with ``defaults`` filled in where it says nothing (its keys keep their order,
    so validation names the same first bad field as without the defaults)."""
    out = dict(data)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = _under(out[key], value)
    return out


def _recipe(data: dict) -> dict:
    """The recipe of the arm, preset and checkpoint ``data`` selects (the config's defaults
    where it does not say)."""
    from vlab.models.backbones import BackboneConfig
    from vlab.probes.recipes import recipe_defaults

    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    arch = model.get("arch", BackboneConfig.arch)
    preset = model.get("preset", BackboneConfig.preset)
    if not isinstance(arch, str) or not isinstance(preset, str):
        return {}  # a wrong type: the config's own check names the field
    return recipe_defaults(arch, preset, model.get("pretrained"))


def _run(args: argparse.Namespace) -> int:
    from vlab.probes.trainer import run_probe
    from vlab.training.distributed import is_main_process

    cfg = config_from_args(args)
    result = run_probe(cfg, output_dir(args.out), progress=not args.no_progress)
    if result is not None and is_main_process():
        print(f"{args.out}: {result.state}: {result.reason}")
        return 0 if result.state == "done" else 1
    return 0


def _pilot(args: argparse.Namespace) -> int:
    from vlab.probes.pilot import choice_table, choices, describe, lr_grid, ranked, read_cells

    cells = read_cells(args.sweeps)
    chosen = choices(cells)
    if not chosen:
        print(f"no cell has 3 seeds yet (stage 3); best one-seed cells of {len(cells)} runs:")
        for arch in sorted({c.arch for c in cells}):
            for c in ranked(cells, arch)[:3]:
                outcome = (
                    f"0.95 at {c.examples:,} examples"
                    if c.reached
                    else f"final accuracy {c.accuracy or 0.0:.2f}"
                )
                print(f"  {arch}: {describe(c)}: {outcome}")
        return 0
    print(choice_table(chosen))
    print()
    for arch, options in chosen.items():
        best = options[0].cell
        grid = ", ".join(f"{lr:g}" for lr in lr_grid(best.lr))
        print(f"{arch}: {describe(best)}; learning-rate grid {grid}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    probe = subparsers.add_parser("probe", help="synthetic retrieval probes")
    sub = probe.add_subparsers(dest="probe_command", metavar="ACTION", required=True)
    run = sub.add_parser(
        "run",
        help="train one probe run into a run directory (resumes an unfinished one)",
        description="Train a Pythia (GPT-NeoX), Mamba, Mamba-2 or hybrid backbone on the "
        "synthetic retrieval probe. Rerunning on an unfinished --out resumes it from its last "
        "checkpoint; on a finished one it does nothing.",
    )
    run.add_argument(
        "--arch",
        help="backbone architecture: pythia, mamba, mamba2 or hybrid (default: the arch of "
        "--pretrained DIR, else pythia)",
    )
    run.add_argument("--variant", help="suffix (query after the context) or prefix (query first)")
    run.add_argument("--length", type=int, help="context length L")
    run.add_argument("--steps", type=int, help="optimizer steps (budget)")
    run.add_argument("--lr", type=float, help="peak learning rate")
    run.add_argument("--seed", type=int, help="model seed: backbone init and new-token rows")
    run.add_argument("--data-seed", type=int, help="data seed: held-out set and training stream")
    run.add_argument("--preset", help="backbone size preset (tiny, small, 1.4b, ...)")
    run.add_argument("--pretrained", help="local save_pretrained directory to start from")
    run.add_argument(
        "--target-mode", help="vocab (original-vocabulary ids) or position (<p_k> tokens)"
    )
    run.add_argument(
        "--modality",
        help="tokens (added patch tokens) or image (an image of patches through a VLM's encoder "
        "and connector; settings under --set image.*)",
    )
    run.add_argument("--batch-size", type=int, help="global batch size")
    run.add_argument("--device", help="auto, cpu or cuda[:N]")
    run.add_argument("--threads", type=int, help="torch CPU threads")
    run.add_argument("--config", help="JSON config file (same nesting as config.json)")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set task.pool_size=64",
    )
    run.add_argument(
        "--no-recipe",
        action="store_true",
        help="train with the config's defaults instead of the arm's tuned recipe (its lr, betas "
        "and schedule from the pilot search, used for the tiny preset without --pretrained)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--out", required=True, help="run directory to create or resume")
    run.set_defaults(func=_run)
    pilot = sub.add_parser(
        "pilot",
        help="read finished pilot sweeps: the recipe rule's table and each arm's recipe",
        description="Apply the equal pilot search's recipe rule (README, 'The equal pilot "
        "search') to finished pilot sweep directories: every cell run at 3 seeds, ranked by "
        "its Kaplan-Meier median of examples to 0.95, and each arm's chosen cell with its "
        "learning-rate grid.",
    )
    pilot.add_argument("sweeps", nargs="+", help="finished pilot sweep directories")
    pilot.set_defaults(func=_pilot)
