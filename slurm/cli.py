"""``vlab sweep``: submit a spec, see where each run stands, resume what did not finish."""

from __future__ import annotations

import argparse
import fnmatch
import json
import time

from vlab.config import bounded_float, bounded_int, from_dict, output_dir, parse_key_values
from vlab.errors import VlabError


def slurm_options(args: argparse.Namespace, defaults: dict | None = None):
    """The validated :class:`~vlab.slurm.executors.SlurmOptions` of the SLURM flags."""
    from vlab.slurm.options import SlurmOptions

    data = dict(defaults or {})
    flags = {
        "partition": args.partition,
        "gpus_per_task": args.gpus_per_task,
        "nodes": args.nodes,
        "tasks_per_node": args.tasks_per_node,
        "gpus_per_node": args.gpus_per_node,
        "cpus_per_task": args.cpus_per_task,
        "mem_gb": args.mem_gb,
        "time_min": args.time_min,
        "account": args.account,
        "qos": args.qos,
        "array_parallelism": args.array_parallelism,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.sbatch:
        data["sbatch"] = {**data.get("sbatch", {}), **parse_key_values(args.sbatch, "--sbatch")}
    if args.setup:
        data["setup"] = list(args.setup)
    return from_dict(SlurmOptions, data, prefix="slurm")


def _select(sweep, names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Split runs into (to run, already done, active elsewhere)."""
    from vlab.slurm.status import sweep_status

    rows = {r["name"]: r for r in sweep_status(sweep)}
    done = [n for n in names if rows[n]["state"] == "done"]
    active = [
        n
        for n in names
        if rows[n]["state"] == "running" or (rows[n]["state"] == "pending" and rows[n]["scheduler"])
    ]
    todo = [n for n in names if n not in done and n not in active]
    return todo, done, active


def _dispatch(sweep, names: list[str], args: argparse.Namespace, options: dict | None) -> int:
    from vlab.slurm import executors
    from vlab.slurm.status import format_table, sweep_status

    todo, done, active = _select(sweep, names)
    print(
        f"{sweep.path}: {len(names)} runs: {len(done)} done (skipped), {len(active)} running "
        f"or queued elsewhere (skipped), {len(todo)} to run with the {args.executor} executor"
    )
    if not todo:
        return 0
    record: dict = {"executor": args.executor, "runs": todo}
    if args.executor == "slurm":
        opts = slurm_options(args, options)
        from vlab.config import to_dict

        record["options"] = to_dict(opts)
        result = executors.run_slurm(sweep, todo, opts)
        record.update(result)
        sweep.record_submission(record)
        ids = sorted({j["job_id"].split("_")[0] for j in result["jobs"].values()})
        print(
            f"submitted {len(todo)} runs as SLURM job array {', '.join(ids)}; "
            f"submitit folder {result['folder']}"
        )
        if not args.wait:
            print(f"follow with: vlab sweep status {sweep.path}")
            return 0
        _wait_slurm(sweep, todo, args.wait_timeout)
    else:
        ranks = slurm_options(args, options).ranks if options else 1
        if ranks > 1:
            print(
                f"note: on SLURM each run would train as {ranks} processes; the "
                f"{args.executor} executor trains each in one"
            )
        record["options"] = {"workers": args.workers}
        jobs = {n: {"job_id": None, "log": str(sweep.log_path(n).resolve())} for n in todo}
        sweep.record_submission({**record, "jobs": jobs})
        if args.executor == "local":
            executors.run_local(sweep, todo, workers=args.workers)
        else:
            executors.run_debug(sweep, todo)
    rows = sweep_status(sweep)
    print(format_table(rows))
    # a run another live submission is training is not a failure of this one
    return 0 if all(r["state"] in ("done", "running") for r in rows if r["name"] in names) else 1


def _wait_slurm(sweep, names: list[str], timeout: float) -> None:
    from vlab.slurm.status import sweep_status

    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = [r for r in sweep_status(sweep) if r["name"] in names]
        if all(
            r["state"] in ("done", "failed", "interrupted")
            and not (
                r["scheduler"]
                and r["scheduler"]
                not in (
                    "COMPLETED",
                    "FAILED",
                    "CANCELLED",
                    "TIMEOUT",
                    "OUT_OF_MEMORY",
                    "NODE_FAIL",
                    "PREEMPTED",
                )
            )
            for r in rows
        ):
            return
        time.sleep(2)
    raise VlabError(f"timed out after {timeout:.0f}s waiting for the SLURM jobs of {sweep.path}")


def check_cluster() -> None:
    """Refuse ``--executor slurm`` in one line naming what is missing (no ``sbatch`` on PATH,
    no configuration, no controller answering), before anything is written."""
    from vlab.scheduler import cluster_problem

    problem = cluster_problem()
    if problem:
        problem = " ".join(problem.split())  # one line, whatever the scheduler printed
        raise VlabError(
            f"--executor slurm: {problem}; run where a SLURM cluster answers (a login node), "
            "or use --executor local"
        )


def _spec_runs(args: argparse.Namespace):
    """The spec and its expanded runs (configs fully resolved, as each run's config.json will
    hold them), after ``--set`` and ``--only``: what ``submit`` writes and ``show`` prints."""
    from vlab.config import nest
    from vlab.slurm.spec import expand, load_spec

    spec = load_spec(args.spec)
    if args.set:
        from vlab.config import deep_merge, parse_assignments

        spec.base = deep_merge(nest(spec.base), parse_assignments(args.set))
    if args.set_arch:
        from vlab.config import deep_merge

        per_arch = {a: nest(v) for a, v in (spec.per_arch or {}).items()}
        for arch, settings in parse_arch_assignments(args.set_arch).items():
            per_arch[arch] = deep_merge(per_arch.get(arch, {}), settings)
        spec.per_arch = per_arch
    runs = expand(spec)
    if args.only:
        runs = [r for r in runs if any(fnmatch.fnmatch(r.name, p) for p in args.only)]
        if not runs:
            raise VlabError(f"--only {' '.join(args.only)} matches no run of {spec.name}")
    return spec, runs


def parse_arch_assignments(items: list[str]) -> dict[str, dict]:
    """``["pythia:model.pretrained=/ckpt/p"]`` -> ``{"pythia": {"model": {"pretrained":
    "/ckpt/p"}}}``: the ``--set-arch`` flags as a spec's ``per_arch`` (values read as
    ``--set`` reads them)."""
    from vlab.config import deep_merge, parse_assignments
    from vlab.models.backbones import FAMILIES

    out: dict[str, dict] = {}
    for item in items:
        arch, sep, assignment = item.partition(":")
        if not sep or "=" in arch or "=" not in assignment:
            raise VlabError(
                f"--set-arch expects ARCH:KEY=VALUE (e.g. pythia:model.pretrained=DIR), "
                f"got {item!r}"
            )
        if arch not in FAMILIES:
            raise VlabError(
                f"--set-arch {item}: {arch!r} is not an architecture ({', '.join(FAMILIES)})"
            )
        out[arch] = deep_merge(out.get(arch, {}), parse_assignments([assignment], "--set-arch"))
    return out


RANK_FLAGS = ("nodes", "tasks_per_node", "gpus_per_node")


def check_one_process(args: argparse.Namespace) -> None:
    """Refuse the flags of multi-process runs where each run is one process: the local and
    debug executors (and ``vlab inspect``)."""
    given = [f"--{n.replace('_', '-')}" for n in RANK_FLAGS if getattr(args, n, None)]
    if given:
        raise VlabError(
            f"{given[0]} needs --executor slurm: the {args.executor} executor runs each run "
            "in one process (for several processes by hand: torchrun --nproc_per_node N -m "
            "vlab.cli vlm train ...)"
        )


def check_ranks(kind: str, runs, options) -> None:
    """Every run can be trained by ``options.ranks`` processes together (one line if not)."""
    from vlab.experiment import experiment

    for run in runs:
        try:
            experiment(kind).check_ranks(run.config, options.ranks)
        except VlabError as e:
            raise VlabError(f"run {run.name}: {e}" if options.ranks > 1 else str(e)) from None


def _cmd_submit(args: argparse.Namespace) -> int:
    from vlab.slurm.sweepdir import SweepDir

    spec, runs = _spec_runs(args)
    if args.executor == "slurm":
        # validate before anything is written
        check_ranks(spec.kind, runs, slurm_options(args, spec.slurm))
        check_cluster()
    else:
        check_one_process(args)
    sweep = SweepDir(output_dir(args.out))
    sweep.write(spec.name, spec.kind, runs, source=args.spec)
    return _dispatch(sweep, [r.name for r in runs], args, spec.slurm)


def _cmd_status(args: argparse.Namespace) -> int:
    from vlab.slurm.status import format_table, sweep_status
    from vlab.slurm.sweepdir import SweepDir

    rows = sweep_status(SweepDir(args.sweep_dir))
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from vlab.slurm.status import sweep_status, unfinished
    from vlab.slurm.sweepdir import SweepDir

    sweep = SweepDir(args.sweep_dir)
    names = unfinished(sweep_status(sweep))
    subs = sweep.submissions()
    last = subs[-1] if subs else None
    if args.executor is None:
        args.executor = last.executor if last else "local"
    if args.workers is None:
        args.workers = ((last.options if last else None) or {}).get("workers", 1)
    options = last.options if last and last.executor == "slurm" else None
    if not names:
        print(f"{sweep.path}: nothing to resume (every run is done, running or queued)")
        return 0
    if args.executor == "slurm":
        doc = sweep.read()
        runs = [r for r in doc.runs if r.name in names]
        check_ranks(doc.kind, runs, slurm_options(args, options))
        check_cluster()
    else:
        check_one_process(args)
    return _dispatch(sweep, names, args, options)


def _cmd_prune(args: argparse.Namespace) -> int:
    """Drop from sweep.json the runs the spec no longer makes (by name and config) that never
    started: after a grid changes, so that ``resume``, ``status`` and reports stop counting
    them and the changed spec can be submitted into the same directory."""
    from vlab.slurm.status import sweep_status
    from vlab.slurm.sweepdir import SweepDir, same_run

    sweep = SweepDir(args.sweep_dir)
    doc = sweep.read()
    args.only = None
    spec, runs = _spec_runs(args)
    wanted = {r.name: r for r in runs}
    kind = doc.kind
    stale = [
        r.name for r in doc.runs if r.name not in wanted or not same_run(r, wanted[r.name], kind)
    ]
    rows = {r["name"]: r for r in sweep_status(sweep)}
    started = [
        n
        for n in stale
        if rows[n]["state"] != "pending" or rows[n]["scheduler"] or sweep.run_path(n).exists()
    ]
    drop = [n for n in stale if n not in started]
    verb = "would drop" if args.dry_run else "dropped"
    print(
        f"{sweep.path}: {len(doc.runs)} runs in sweep.json, {len(stale)} not made by "
        f"{args.spec} as they are; {verb} {len(drop)} that never started"
    )
    for name in drop:
        print(f"  {verb}: {name}")
    for name in started:
        why = rows[name]["state"] + (
            f" ({rows[name]['scheduler']})" if rows[name]["scheduler"] else ""
        )
        print(
            f"  kept: {name}: {why}, has {sweep.run_path(name)}"
            if sweep.run_path(name).exists()
            else f"  kept: {name}: {why}"
        )
    if started:
        print(
            "  (a kept run stays in the sweep; to drop it, remove its run folder, then prune again)"
        )
    if drop and not args.dry_run:
        sweep.drop(drop)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from vlab.slurm.spec import builtin_specs, count_runs, load_spec

    for name in builtin_specs():
        try:
            spec = load_spec(name)
        except VlabError as e:  # a spec that needs something first (paper-vlm: its paths)
            print(f"{name:22s}    -           {str(e).removeprefix(f'sweep spec {name}: ')}")
            continue
        print(f"{name:22s} {count_runs(spec):4d} {spec.kind} runs  {spec.description}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    spec, runs = _spec_runs(args)
    if args.json:
        runs = [{"name": r.name, "id": r.id, "config": r.config} for r in runs]
        doc = {"name": spec.name, "description": spec.description, "runs": runs}
        print(json.dumps(doc, indent=2))
        return 0
    for run in runs:
        print(f"{run.name}  {run.id}")
    return 0


def _add_selection_flags(p: argparse.ArgumentParser, verb: str) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override the spec's base config, e.g. --set train.steps=100",
    )
    p.add_argument(
        "--set-arch",
        action="append",
        metavar="ARCH:KEY=VALUE",
        help="override the config of one architecture's runs only (over the spec's base and "
        "per_arch, under each run's own axis values), e.g. each arm's own checkpoint: "
        "--set-arch pythia:model.pretrained=/ckpt/pythia-160m --set-arch "
        "mamba:model.pretrained=/ckpt/mamba-130m (VLM sweeps: model.lm.pretrained and "
        "data.tokenizer); repeat for more",
    )
    p.add_argument(
        "--only", action="append", metavar="GLOB", help=f"{verb} only runs whose name matches"
    )


def _add_executor_flags(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--executor",
        choices=["local", "slurm", "debug"],
        default=default,
        help="where runs execute: local worker processes, a SLURM job array via "
        "submitit, or in this process (debug)",
    )
    p.add_argument(
        "--workers",
        type=bounded_int(1, 256),
        default=None if default is None else 1,
        help="local executor: runs in parallel (default 1)",
    )
    g = add_slurm_flags(p)
    g.add_argument("--wait", action="store_true", help="block until the SLURM jobs end")
    g.add_argument("--wait-timeout", type=bounded_float(0, lo_open=True), default=24 * 3600)


def add_slurm_flags(p: argparse.ArgumentParser):
    """The SLURM resource flags (read back by :func:`slurm_options`); returns their group."""
    g = p.add_argument_group("slurm executor")
    g.add_argument("--partition")
    g.add_argument(
        "--gpus-per-task", type=bounded_int(0, 64), help="GPUs of a one-process run's job"
    )
    g.add_argument(
        "--gpus-per-node",
        type=bounded_int(1, 64),
        help="train each run on this many GPUs of each node, one process per GPU "
        "(torch.distributed: DDP or FSDP as the run's config says)",
    )
    g.add_argument(
        "--tasks-per-node",
        type=bounded_int(1, 1024),
        help="processes per node that train each run together (default: one per GPU; "
        "on CPUs, gloo ranks)",
    )
    g.add_argument(
        "--nodes", type=bounded_int(1, 4096), help="nodes each run trains on (default 1)"
    )
    g.add_argument("--cpus-per-task", type=bounded_int(1, 4096))
    g.add_argument("--mem-gb", type=bounded_float(0, 65536, lo_open=True))
    g.add_argument("--time-min", type=bounded_int(1, 525_600), help="time limit per job in minutes")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument(
        "--array-parallelism",
        type=bounded_int(1, 100_000),
        help="max array tasks running at once",
    )
    g.add_argument(
        "--sbatch",
        action="append",
        metavar="KEY=VALUE",
        help="extra #SBATCH option, e.g. --sbatch constraint=a100",
    )
    g.add_argument(
        "--setup",
        action="append",
        metavar="LINE",
        help="shell line run before each job, e.g. --setup 'module load cuda'",
    )
    return g


def register(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser("sweep", help="grids of runs, locally or on SLURM")
    sub = sweep.add_subparsers(dest="sweep_command", metavar="ACTION", required=True)

    submit = sub.add_parser("submit", help="expand a spec and run what is not finished")
    submit.add_argument("spec", help="built-in spec name (see 'vlab sweep list') or a file")
    submit.add_argument("--out", required=True, help="sweep directory (created or reused)")
    _add_selection_flags(submit, "submit")
    _add_executor_flags(submit, "local")
    submit.set_defaults(func=_cmd_submit)

    status = sub.add_parser("status", help="per-run state: pending, running, done, failed")
    status.add_argument("sweep_dir")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)

    resume = sub.add_parser("resume", help="resubmit only unfinished or failed runs")
    resume.add_argument("sweep_dir")
    _add_executor_flags(resume, None)
    resume.set_defaults(func=_cmd_resume)

    prune = sub.add_parser(
        "prune",
        help="drop never-started runs that the (changed) spec no longer makes",
        description="Compare sweep.json with what SPEC expands to now (with the same --set / "
        "--set-arch as its submission) and drop the runs it no longer makes, by name and "
        "config, that never started. Runs with a run folder, a lock or a queued job are "
        "kept and named. Run folders are never deleted.",
    )
    prune.add_argument("sweep_dir")
    prune.add_argument("--spec", required=True, help="built-in spec name or a file")
    prune.add_argument("--dry-run", action="store_true", help="say what would go, change nothing")
    prune.add_argument("--set", action="append", metavar="KEY=VALUE")
    prune.add_argument("--set-arch", action="append", metavar="ARCH:KEY=VALUE")
    prune.set_defaults(func=_cmd_prune)

    lst = sub.add_parser("list", help="built-in sweep specs")
    lst.set_defaults(func=_cmd_list)

    show = sub.add_parser("show", help="expand a spec and print its runs (nothing runs)")
    show.add_argument("spec", help="built-in spec name (see 'vlab sweep list') or a file")
    _add_selection_flags(show, "show")
    show.add_argument(
        "--json",
        action="store_true",
        help="print every run with its fully resolved config (what its config.json will hold)",
    )
    show.set_defaults(func=_cmd_show)
