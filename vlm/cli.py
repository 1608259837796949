"""``vlab vlm``: train Pythia-VL or Mamba-VL (stage 1 then stage 2) into a run directory,
finetune it on one task at a higher resolution, evaluate it on benchmarks, or ask it one
question about one image."""

from __future__ import annotations

import argparse

from vlab.config import cli_overrides, deep_merge, output_dir, positive_int
from vlab.errors import ConfigError

RUN_HELP = "a vlab vlm train output directory, or a vlab vlm finetune directory (its --out)"
STAGE_HELP = "the stage of a vlab vlm train run (default 2); a finetune has one model"


def _overrides(args: argparse.Namespace) -> dict:
    data = cli_overrides(args.config, args.set)
    if args.data_root is not None:
        from vlab.models.vlm.data.paper_data import paper_data

        data = deep_merge({"data": paper_data(args.data_root, args.paper)}, data)
    if args.steps is not None:
        data = deep_merge(data, {"stage2": {"steps": args.steps}})
    if args.ordering is not None:
        data = deep_merge(data, {"model": {"sequence": {"ordering": args.ordering}}})
    if args.benchmarks:  # the data root: --data-root's, else the config's, else VLAB_DATA
        suite: dict = {"suite": args.paper}
        if args.data_root is not None:
            suite["data_root"] = args.data_root
        data = deep_merge(data, {"benchmarks": suite})
    return data


def _train(args: argparse.Namespace) -> int:
    from vlab.training.distributed import is_main_process
    from vlab.vlm.config import config_from
    from vlab.vlm.experiment import eval_dir, train_and_evaluate

    cfg = config_from(args.preset, args.arch, _overrides(args))
    stages = {"1": (1,), "2": (2,), "both": (1, 2)}[args.stage]
    out = output_dir(args.out)
    results, evaluations = train_and_evaluate(cfg, out, stages, progress=not args.no_progress)
    for stage, result in results.items():
        if result is not None and is_main_process():
            acc = (result.final_metrics or {}).get("tasks")
            print(f"{args.out}/stage{stage}: {result.state}: {result.reason}; held-out {acc}")
    for name, scores in (evaluations or {}).items():
        _print_scores(scores)
        print(f"results: {eval_dir(out, name)}/results.json")
    return 0 if all(r is None or r.state == "done" for r in results.values()) else 1


def _print_scores(results: dict) -> None:
    """One line per benchmark (``source/task``: score, metric), its slices indented."""
    width = max((len(k) for k in results.get("sources", {})), default=0)
    for key, value in results.get("sources", {}).items():
        metric = results.get("metrics", {}).get(key.split("/")[1], "")
        print(f"{key:<{width}}  {value:8.4f}  {metric}")
        for slice_key, scores in results.get("slices", {}).get(key, {}).items():
            for part, score in scores.items():
                print(f"  {f'{slice_key}={part}':<{width - 2}}  {score:8.4f}")


def _eval(args: argparse.Namespace) -> int:
    from vlab.config import from_dict
    from vlab.models.vlm.data.prepared import MixtureConfig
    from vlab.vlm.evaluate import evaluate_benchmarks, evaluate_run, select_sources
    from vlab.vlm.files import eval_dir

    if args.data_root is not None and args.config is not None:
        raise ConfigError("benchmarks", "give one of --data-root and --config, not both")
    if args.data_root is not None:
        from vlab.models.vlm.data.paper_data import paper_benchmarks

        spec = {"sources": paper_benchmarks(args.data_root, args.paper), "pack": False}
        mixture = from_dict(MixtureConfig, spec)
    elif args.config is not None:
        mixture = from_dict(MixtureConfig, cli_overrides(args.config, None))
    else:
        mixture = _own_suite(args.run)
    mixture = select_sources(mixture, args.limit, args.skip_missing)
    options = dict(
        stage=int(args.stage),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        progress=not args.no_progress,
    )
    if args.name is not None:  # every benchmark in one folder
        _print_scores(evaluate_run(args.run, mixture, args.name, **options))
        print(f"results: {eval_dir(args.run, args.name)}/results.json")
        return 0
    for name, results in evaluate_benchmarks(args.run, mixture, **options).items():
        _print_scores(results)
        print(f"results: {eval_dir(args.run, name)}/results.json")
    return 0


def _own_suite(run: str):
    """The benchmark suite the run's own config names (``benchmarks``, as ``vlab vlm train
    --benchmarks`` recorded it), for ``vlab vlm eval RUN`` without --data-root or --config."""
    from pathlib import Path

    from vlab.config import from_dict
    from vlab.vlm.config import BenchmarkConfig
    from vlab.vlm.experiment import stored_config

    suite = stored_config(Path(run)).get("benchmarks") or {}
    if not suite.get("suite"):
        raise ConfigError(
            "benchmarks",
            f"{run} was trained without a benchmark suite: give --data-root DIR (the paper's "
            "layout) or --config FILE (a mixture)",
        )
    return from_dict(BenchmarkConfig, suite, prefix="benchmarks").mixture()


def _finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vlab.training.distributed import is_main_process
    from vlab.vlm.finetune import finetune, finetune_config

    train: dict = {}
    if args.lr is not None:
        train["lr"] = args.lr
    if args.steps is not None:
        train["steps"] = args.steps
    if args.batch_size is not None:
        train["batch_size"] = args.batch_size
    flags: dict = {"source": args.run, "task": args.task, "resolution": args.resolution}
    if train:
        flags["train"] = train
    if args.epochs is not None:
        flags["epochs"] = args.epochs
    if args.data_root is not None:
        flags["data_root"] = args.data_root
    cfg = finetune_config(deep_merge(cli_overrides(args.config, args.set), flags))
    out = output_dir(args.out) if args.out else str(Path(cfg.source) / "finetune" / cfg.name)
    results = finetune(cfg, out, progress=not args.no_progress)
    if not is_main_process():  # under torchrun rank 0 evaluates and reports
        return 0
    if results is None:
        print(f"{out}: not finished (see {out}/status.json); run the same command to resume")
        return 1
    for key, value in sorted(results["sources"].items()):
        print(f"{key}  {value:.4f}  {results['metrics'][key.split('/')[1]]}")
    print(f"results: {out}/eval/heldout/results.json")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from vlab.vlm.answer import answer_question

    answer = answer_question(
        args.run,
        args.image,
        args.prompt,
        stage=int(args.stage),
        task=args.task,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
    )
    print(answer)
    return 0


def _import(args: argparse.Namespace) -> int:
    from vlab.vlm.external.shakeup import import_shakeup

    out = import_shakeup(args.source, output_dir(args.out), tokenizer=args.tokenizer)
    print(f"{out}: imported {args.source} ({args.format}) as a vlab VLM run (stage 2)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from vlab.models.backbones import PRESETS as BACKBONES
    from vlab.models.vlm.data.paper_data import PAPERS  # no imports beyond vlab.errors
    from vlab.models.vlm.data.records import TASKS  # PIL, never torch
    from vlab.vlm.presets import PRESETS

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
    train.add_argument("--arch", choices=list(BACKBONES), help="LM backbone")
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
        "(see vlab.models.vlm.data.paper_data); default: the built-in shapes dataset",
    )
    train.add_argument(
        "--paper",
        choices=list(PAPERS),
        default="shakeup",
        help="whose data --data-root means: SHAKEUP's mixture (default) or MambaVLM's "
        "(LLaVA-665K, LVIS-Instruct4V, LRV-Instruction; one stage: use --stage 2)",
    )
    train.add_argument(
        "--benchmarks",
        action="store_true",
        help="after the held-out evaluation, score stage 2 on every benchmark of the --paper's "
        "suite under --data-root (else benchmarks.data_root, else $VLAB_DATA), a phase each, "
        "into OUT/eval/<benchmark>/ (--set benchmarks.names=[...] picks some)",
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

    ev = sub.add_parser(
        "eval",
        help="evaluate a trained VLM on benchmark sets (predictions and scores per benchmark)",
        description="Greedy answers of RUN/stage{N}'s checkpoint (or of a vlab vlm finetune "
        "directory's, at its resolution) on the benchmarks, each benchmark a phase of its own "
        "in RUN/eval/<benchmark>/{status.json,predictions.jsonl,results.json} (the layout of "
        "a run's own suite). A killed evaluation resumes at the benchmark it was on; finished "
        "benchmarks are read back, never scored again. Caption benchmarks get SPICE where its "
        "CoreNLP jars are installed (see the README), else the reason in their results.",
    )
    ev.add_argument("--run", required=True, help=RUN_HELP)
    ev.add_argument("--stage", choices=["1", "2"], default="2", help=STAGE_HELP)
    ev.add_argument(
        "--data-root",
        metavar="DIR",
        help="the paper's benchmarks under DIR (see vlab.models.vlm.data.paper_data); "
        "without it or --config, the suite the run was trained with (benchmarks.*)",
    )
    ev.add_argument(
        "--paper",
        choices=list(PAPERS),
        default="shakeup",
        help="whose benchmarks --data-root means: SHAKEUP's (default) or MambaVLM's "
        "(VQAv2, GQA, VizWiz, TextVQA, VSR, POPE, RefCOCO/+/g, TallyQA)",
    )
    ev.add_argument("--config", help='JSON file of a mixture: {"sources": [{"reader": ..., ...}]}')
    ev.add_argument(
        "--name",
        help="put every benchmark in the one folder RUN/eval/NAME (one results.json) instead "
        "of a folder per benchmark",
    )
    ev.add_argument("--limit", type=positive_int, help="at most N (>= 1) examples per benchmark")
    ev.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out (and name) the benchmarks whose annotation files or image folders are "
        "missing; without it, everything missing is listed and nothing runs",
    )
    ev.add_argument("--batch-size", type=positive_int, help="default: the run's")
    ev.add_argument("--max-new-tokens", type=int, help="default: the run's")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=_eval)

    ft = sub.add_parser(
        "finetune",
        help="finetune a stage-2 VLM on one task at a higher resolution, then score that task",
        description="Starts from RUN/stage2, changes the encoders' resolution (position "
        "embeddings interpolated, more visual tokens, max_length grown to match), trains on "
        "one task (AdamW, cosine, warmup 0.03, batch 64) and scores the task's held-out set "
        "at that resolution. OUT is a run directory: rerunning resumes it, a finished one is "
        "left alone.",
    )
    ft.add_argument("--run", required=True, help="a vlab vlm train output directory")
    ft.add_argument(
        "--task",
        required=True,
        help="shapes runs: a shapes task (vqa, grounding, caption, dense_caption, itm, pope); "
        "dataset files: a source label of the run's stage-2 data (vqav2, refcocog)",
    )
    ft.add_argument("--resolution", type=int, required=True, help="image side in pixels")
    ft.add_argument("--lr", type=float, help="peak learning rate (default 5e-5)")
    budget = ft.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=float, help="epochs of the task (dataset files only)")
    budget.add_argument("--steps", type=int, help="optimizer steps (default 1000)")
    ft.add_argument("--batch-size", type=int, help="global batch (default 64)")
    ft.add_argument(
        "--data-root",
        metavar="DIR",
        help="the paper's datasets under DIR: train on the task's training set and score its "
        "validation set (tasks vqav2, refcocog)",
    )
    ft.add_argument("--config", help="JSON file of finetune settings (as its config.json)")
    ft.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="e.g. --set train.grad_accum=4"
    )
    ft.add_argument("--no-progress", action="store_true")
    ft.add_argument("--out", help="run directory (default RUN/finetune/TASK-rRES-lrLR)")
    ft.set_defaults(func=_finetune)

    gen = sub.add_parser(
        "generate",
        help="answer one question about one image with a trained VLM",
        description="Prints RUN/stage{N}'s (or a vlab vlm finetune directory's) greedy answer "
        "to PROMPT about the image FILE. The image is preprocessed (at a finetune's resolution) "
        "and the prompt placed (the run's ordering, the task's instruction) exactly as in a "
        "one-turn training example, cut where the response starts.",
    )
    gen.add_argument("--run", required=True, help=RUN_HELP)
    gen.add_argument("--image", required=True, metavar="FILE", help="the image file")
    gen.add_argument("--prompt", required=True, metavar="TEXT", help="the question")
    gen.add_argument("--stage", choices=["1", "2"], default="2", help=STAGE_HELP)
    gen.add_argument(
        "--task",
        default="chat",
        choices=list(TASKS),
        metavar="TASK",
        help="the task whose instruction goes before the prompt, as in training: "
        f"{', '.join(TASKS)} (default chat: no instruction, the prompt alone)",
    )
    gen.add_argument("--max-new-tokens", type=int, help="default: the run's max_new_tokens")
    gen.add_argument("--device", default="auto")
    gen.set_defaults(func=_generate)

    imp = sub.add_parser(
        "import",
        help="import another codebase's VLM checkpoint as a vlab VLM run directory",
        description="Maps a foreign checkpoint (--format shakeup: the SHAKEUP authors' "
        "Pythia-VL / Mamba-VL, gpantaz/vl_mamba) onto vlab's VLM and writes OUT as a vlab vlm "
        "train run (OUT/stage2, the LM and tokenizer in OUT/lm), which vlab vlm eval, "
        "generate and vlab inspect open like any run. Nothing is written unless every tensor "
        "maps.",
    )
    imp.add_argument("source", metavar="SRC", help="the checkpoint directory")
    imp.add_argument("--format", choices=["shakeup"], default="shakeup")
    imp.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="a local tokenizer directory (shakeup: EleutherAI/gpt-neox-20b's); default SRC",
    )
    imp.add_argument("--out", required=True, help="the new run directory")
    imp.set_defaults(func=_import)
