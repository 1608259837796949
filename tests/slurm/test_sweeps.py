"""Sweeps: specs expand and validate, local and debug executors, idempotence, locks, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import vlab
from vlab.cli import main
from vlab.errors import VlabError
from vlab.fileio import read_jsonl
from vlab.locks import acquire, lock_holder
from vlab.probes.recipes import LR_GRIDS
from vlab.probes.tasks import num_sequences
from vlab.slurm.executors import worker_threads
from vlab.slurm.spec import SweepSpec, builtin_specs, config_id, count_runs, expand, load_spec
from vlab.slurm.status import sweep_status
from vlab.slurm.sweepdir import SweepDir

TINY_BASE = {
    "task": {"length": 4, "n_heldout": 16},
    "model": {"preset": "tiny"},
    "train": {"steps": 20, "eval_every": 10, "threads": 1},
}


def tiny_spec(tmp_path, axes=None, name="tiny", **extra) -> str:
    path = tmp_path / f"{name}.json"
    spec = {
        "name": name,
        "base": TINY_BASE,
        "axes": axes or {"task.variant": ["suffix", "prefix"]},
        **extra,
    }
    path.write_text(json.dumps(spec))
    return str(path)


def test_grid_expands_to_named_runs_with_config_ids():
    spec = SweepSpec(
        name="g",
        base=TINY_BASE,
        axes={"model.arch": ["pythia", "mamba"], "task.length": [4, 8], "train.lr": [1e-3, 3e-3]},
    )
    runs = expand(spec)
    assert len(runs) == 8
    assert runs[0].name == "pythia-L4-lr0.001" and runs[-1].name == "mamba-L8-lr0.003"
    assert len({r.id for r in runs}) == 8
    assert runs[0].config["train"]["lr"] == 1e-3 and runs[-1].config["model"]["arch"] == "mamba"
    assert runs[0].id == config_id(runs[0].config) == expand(spec)[0].id  # stable


def test_name_keys_name_runs_by_the_chosen_keys_only(tmp_path):
    recipe = {"train.beta2": 0.98, "train.min_lr_ratio": 1.0}
    spec = SweepSpec(
        name="n",
        base=TINY_BASE,
        axes={"task.variant": ["suffix", "prefix"]},
        runs=[{"model.arch": "pythia", **recipe, "train.lr": lr} for lr in (1e-3, 2e-3)],
        name_keys=["model.arch", "task.variant", "train.lr"],
    )
    names = [r.name for r in expand(spec)]
    assert names == [
        "pythia-suffix-lr0.001",
        "pythia-prefix-lr0.001",
        "pythia-suffix-lr0.002",
        "pythia-prefix-lr0.002",
    ]
    spec.name_keys = ["model.arch", "task.variant"]  # too few keys: two runs share a name
    with pytest.raises(VlabError, match="duplicate run name 'pythia-suffix'.*name_keys"):
        expand(spec)
    spec.name_keys = "model.arch"
    with pytest.raises(VlabError, match="name_keys must be a list"):
        expand(spec)
    path = tiny_spec(tmp_path, axes={"train.lr": [1e-3]}, name_keys=["train.lr"])
    assert [r.name for r in expand(load_spec(path))] == ["lr0.001"]


def test_explicit_runs_cross_the_grid():
    spec = SweepSpec(
        name="e",
        base=TINY_BASE,
        axes={"task.variant": ["suffix", "prefix"]},
        runs=[{"model.arch": "pythia"}, {"model": {"arch": "mamba"}}],
    )
    assert [r.name for r in expand(spec)] == [
        "suffix-pythia",
        "prefix-pythia",
        "suffix-mamba",
        "prefix-mamba",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (SweepSpec(name="x", axes={"train.lrr": [1]}), "train.lrr"),
        (SweepSpec(name="x", axes={"task.length": []}), "axis 'task.length' is empty"),
        (SweepSpec(name="x", axes={"task.length": [4, 4]}), "duplicate run name"),
        (SweepSpec(name="x", base={"task": {"lenght": 4}}), "task.lenght"),
        (SweepSpec(name="x", axes={"model.arch": ["pythia", "rwkv"]}), "model.arch"),
    ],
)
def test_malformed_specs_are_rejected_naming_the_problem(spec, message):
    with pytest.raises(VlabError, match=message.replace(".", r"\.")):
        expand(spec)


def test_malformed_spec_submits_nothing(capsys, tmp_path):
    path = tiny_spec(tmp_path, axes={"task.variant": ["suffix", "sideways"]})
    code, _, err = vlab(capsys, "sweep", "submit", path, "--out", str(tmp_path / "sw"))
    assert code == 2 and "task.variant" in err
    assert not (tmp_path / "sw").exists()


def test_listing_counts_what_expansion_makes():
    for name in builtin_specs():
        try:
            spec = load_spec(name)
        except VlabError as e:  # paper-vlm and the finetune specs need their paths set first
            assert "set VLAB_" in str(e), name
            continue
        assert count_runs(spec) == len(expand(spec)), name


def test_builtin_specs_expand(monkeypatch):
    assert len(expand(load_spec("cpu-small"))) == 8
    protocol = expand(load_spec("cpu-protocol"))
    assert len(protocol) == 2 * 2 * 3 * 3 * 3
    cells: dict[tuple, set] = {}
    for run in protocol:
        c = run.config
        key = (c["model"]["arch"], c["task"]["variant"], c["task"]["length"])
        cells.setdefault(key, set()).add((c["train"]["lr"], c["train"]["seed"]))
        assert c["model"]["init_seed"] == c["train"]["seed"]
        length, pool = c["task"]["length"], c["task"]["pool_size"]
        assert pool >= 2 * length
        # no panel is degenerate: a run draws fewer examples than the task has
        assert c["train"]["steps"] * c["train"]["batch_size"] < num_sequences(pool, length)
    lengths = {k[2] for k in cells}
    assert max(lengths) >= 4 * min(lengths) and max(lengths) >= 16
    assert {k[0] for k in cells} == {"pythia", "mamba"} and {k[1] for k in cells} == {
        "suffix",
        "prefix",
    }
    for points in cells.values():  # 3 learning rates x 3 seeds in every cell
        assert len({lr for lr, _ in points}) == 3 and len({s for _, s in points}) == 3
        assert len(points) == 9
    monkeypatch.setenv("VLAB_RANDOM_WEIGHTS", "1")  # the shapes only, asked for explicitly
    paper = expand(load_spec("paper-grounding"))
    assert len(paper) == 108
    arms = expand(load_spec("paper-arms"))
    assert len(arms) == 4 * 108 // 2
    assert {(r.config["model"]["arch"], r.config["model"]["preset"]) for r in arms} == {
        ("pythia", "1.4b"),
        ("mamba", "1.4b"),
        ("mamba2", "1.3b"),
        ("hybrid", "1.4b"),
    }
    assert len(expand(load_spec("pilot-tiny-arms"))) == len(expand(load_spec("pilot-tiny")))
    shapes = expand(load_spec("pilot-tiny-arms-shapes"))  # every shape keeps heads x dim
    assert len(shapes) == 12
    for run in shapes:
        o = run.config["model"]["overrides"]
        assert o["num_heads"] * o["head_dim"] == 2 * 64
    four = expand(load_spec("cpu-arms"))  # the default experiment, the same two arms' runs
    assert len(four) == 2 * len(protocol)
    assert {(r.name, r.id) for r in protocol} < {(r.name, r.id) for r in four}
    for arch in ("mamba2", "hybrid"):
        lrs = {r.config["train"]["lr"] for r in four if r.config["model"]["arch"] == arch}
        assert lrs == set(LR_GRIDS[arch])
    seeds = expand(load_spec("pilot-tiny-arms-seeds"))  # 3 lrs x 3 seeds per new arm
    for arch in ("mamba2", "hybrid"):
        cell = [r.config for r in seeds if r.config["model"]["arch"] == arch]
        assert (
            len({(c["train"]["lr"], c["train"]["seed"], c["model"]["init_seed"]) for c in cell})
            == 9
        )
    assert {r.config["task"]["length"] for r in paper} == {50, 100, 200}
    assert {r.config["model"]["arch"] for r in paper} == {"pythia", "mamba"}


def test_yaml_and_python_specs_load(tmp_path):
    (tmp_path / "s.yaml").write_text("name: y\naxes:\n  task.length: [4, 8]\n")
    assert [r.name for r in expand(load_spec(str(tmp_path / "s.yaml")))] == ["L4", "L8"]
    (tmp_path / "s.py").write_text(
        "from vlab.slurm.spec import SweepSpec\n"
        "def sweep():\n    return SweepSpec(name='p', axes={'model.arch': ['mamba']})\n"
    )
    assert [r.name for r in expand(load_spec(str(tmp_path / "s.py")))] == ["mamba"]
    with pytest.raises(VlabError, match="no sweep spec"):
        load_spec("no-such-spec")


def test_show_json_lists_every_run_with_its_resolved_config(capsys):
    code, stdout, _ = vlab(capsys, "sweep", "show", "cpu-small", "--json")
    assert code == 0
    doc = json.loads(stdout)
    assert set(doc) == {"name", "description", "runs"} and doc["name"] == "cpu-small"
    assert doc["description"] == load_spec("cpu-small").description
    code, plain, _ = vlab(capsys, "sweep", "show", "cpu-small")
    assert [[r["name"], r["id"]] for r in doc["runs"]] == [ln.split() for ln in plain.splitlines()]
    for run in doc["runs"]:
        assert set(run) == {"name", "id", "config"} and config_id(run["config"]) == run["id"]
        assert run["config"]["task"]["pool_size"] is not None  # defaults written out


def test_show_json_configs_are_what_submit_writes_to_config_json(capsys, tmp_path):
    base = {**TINY_BASE, "train": {"steps": 2, "eval_every": 1, "threads": 1}}
    path = tiny_spec(tmp_path, name="two", base=base, description="two quick runs")
    code, stdout, _ = vlab(capsys, "sweep", "show", path, "--json")
    assert code == 0
    shown = json.loads(stdout)
    assert shown["description"] == "two quick runs" and len(shown["runs"]) == 2
    out = tmp_path / "sw"
    assert vlab(capsys, "sweep", "submit", path, "--executor", "debug", "--out", str(out))[0] == 0
    for run in shown["runs"]:
        written = json.loads((out / "runs" / run["name"] / "config.json").read_text())
        assert written == run["config"]
    # --set and --only select as they do for submit
    code, stdout, _ = vlab(capsys, "sweep", "show", path, "--json", "--only", "pre*")
    assert [r["name"] for r in json.loads(stdout)["runs"]] == ["prefix"]
    code, stdout, _ = vlab(capsys, "sweep", "show", path, "--json", "--set", "train.lr=0.01")
    assert {r["config"]["train"]["lr"] for r in json.loads(stdout)["runs"]} == {0.01}


def test_show_json_of_a_bad_spec_is_a_one_line_error(capsys, tmp_path):
    path = tiny_spec(tmp_path, axes={"task.variant": ["suffix", "sideways"]})
    code, stdout, err = vlab(capsys, "sweep", "show", path, "--json")
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and "task.variant" in err


def test_local_sweep_runs_everything_and_resubmitting_reruns_nothing(capsys, tmp_path):
    # the prefix run leaves its thread count to the local executor, which shares the cores out
    runs = [
        {"task.variant": "suffix", "train.threads": 2},
        {"task.variant": "prefix", "train.threads": None},
    ]
    path, out = tiny_spec(tmp_path, axes={"task.length": [4]}, runs=runs), str(tmp_path / "sw")
    code, stdout, _ = vlab(capsys, "sweep", "submit", path, "--out", out, "--workers", "2")
    assert code == 0, stdout
    rows = sweep_status(SweepDir(out))
    assert [r["state"] for r in rows] == ["done", "done"]
    threads = {
        r["name"]: json.loads((Path(out) / "runs" / r["name"] / "status.json").read_text())
        for r in rows
    }
    threads = {n: status["environment"]["threads"] for n, status in threads.items()}
    cores = len(os.sched_getaffinity(0))
    assert worker_threads(1) == cores and worker_threads(2) == max(1, cores // 2)
    assert sorted(threads.values()) == sorted([2, worker_threads(2)]), threads
    metrics = {r["name"]: (tmp_path / "sw" / "runs" / r["name"] / "metrics.jsonl") for r in rows}
    before = {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in metrics.items()}
    code, stdout, _ = vlab(capsys, "sweep", "submit", path, "--out", out)
    assert code == 0 and "2 done (skipped)" in stdout and "0 to run" in stdout
    assert {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in metrics.items()} == before
    code, stdout, _ = vlab(capsys, "sweep", "status", out)
    assert "done: 2" in stdout
    code, stdout, _ = vlab(capsys, "sweep", "resume", out)
    assert "nothing to resume" in stdout


def test_changed_config_under_the_same_run_name_is_refused(capsys, tmp_path):
    out = str(tmp_path / "sw")
    assert (
        vlab(capsys, "sweep", "submit", tiny_spec(tmp_path), "--out", out, "--executor", "debug")[0]
        == 0
    )
    code, _, err = vlab(
        capsys, "sweep", "submit", tiny_spec(tmp_path), "--out", out, "--set", "train.lr=0.01"
    )
    assert code == 2 and "different config" in err


def test_lock_excludes_a_second_holder_and_stale_locks_are_taken_over(tmp_path):
    path = tmp_path / "locks" / "r.lock"
    first = acquire(path)
    assert first is not None and acquire(path) is None
    first.release()
    assert not path.exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "job_id": None}))
    assert lock_holder(path) is None  # its process is gone
    assert acquire(path) is not None


def test_a_run_locked_by_a_live_process_is_skipped(tmp_path):
    from vlab.slurm.worker import run_one

    sweep_dir = tmp_path / "sw"
    sweep = SweepDir(sweep_dir)
    sweep.write("tiny", "probe", expand(load_spec(tiny_spec(tmp_path))), "test")
    holder = acquire(sweep.lock_path("suffix"))
    assert run_one(str(sweep_dir), "suffix")["state"] == "skipped"
    holder.release()
    assert run_one(str(sweep_dir), "suffix")["state"] == "done"


def test_killed_worker_is_resumed_to_the_same_metrics(capsys, tmp_path):
    base = {
        **TINY_BASE,
        "train": {"steps": 300, "eval_every": 20, "threads": 1, "stop_at_threshold": False},
    }
    spec = tmp_path / "k.json"
    spec.write_text(json.dumps({"name": "k", "base": base, "axes": {"train.seed": [0]}}))
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert vlab(capsys, "sweep", "submit", str(spec), "--out", str(full))[0] == 0
    sweep = SweepDir(cut)
    sweep.write("k", "probe", expand(load_spec(str(spec))), str(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlab.slurm.worker", str(cut), "s0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = cut / "runs" / "s0" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and len(read_jsonl(metrics)) < 4:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [r["state"] for r in sweep_status(sweep)] == ["interrupted"]
    code, stdout, _ = vlab(capsys, "sweep", "resume", str(cut))
    assert code == 0 and "1 to run" in stdout
    assert read_jsonl(metrics) == read_jsonl(full / "runs" / "s0" / "metrics.jsonl")


def test_sigterm_stops_a_local_worker_cleanly(tmp_path):
    base = {**TINY_BASE, "train": {"steps": 5000, "eval_every": 1000, "threads": 1}}
    spec = tmp_path / "t.json"
    spec.write_text(json.dumps({"name": "t", "base": base, "axes": {"train.seed": [0]}}))
    sweep = SweepDir(tmp_path / "sw")
    sweep.write("t", "probe", expand(load_spec(str(spec))), str(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlab.slurm.worker", str(sweep.path), "s0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status_path = sweep.run_path("s0") / "status.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (sweep.run_path("s0") / "metrics.jsonl").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 1
    status = json.loads(status_path.read_text())
    assert status["state"] == "interrupted" and 0 < status["step"] < 5000
    assert not sweep.lock_path("s0").exists()  # released on the way out


def test_builtin_cpu_small_spec_completes_locally(capsys, tmp_path):
    out = str(tmp_path / "cpu-small")
    code, stdout, _ = vlab(
        capsys,
        "sweep",
        "submit",
        "cpu-small",
        "--out",
        out,
        "--workers",
        "2",
        "--set",
        "train.steps=20",
        "--set",
        "train.eval_every=10",
    )
    assert code == 0, stdout
    rows = sweep_status(SweepDir(out))
    assert len(rows) == 8 and all(r["state"] == "done" for r in rows)
    assert {r["name"] for r in rows} == {
        f"{a}-{v}-L{n}" for a in ("pythia", "mamba") for v in ("suffix", "prefix") for n in (4, 8)
    }


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "a/b", "..", ".hidden", "x\ny"])
def test_run_names_that_are_not_one_plain_folder_name_are_refused(tmp_path, capsys, name):
    spec = {
        "name": "names",
        "base": {"task": {"length": 4}, "train": {"steps": 4}},
        "runs": [{"name": name}],
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "deep" / "sweep"
    argv = ["sweep", "submit", str(path), "--executor", "debug", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a plain folder name" in err
    assert not out.exists() and not (tmp_path / "escaped").exists()


def test_a_submit_that_finds_its_runs_trained_elsewhere_succeeds(tmp_path, capsys):
    spec = tiny_spec(tmp_path, axes={"task.variant": ["suffix"]})
    out = tmp_path / "sw"
    argv = ["sweep", "submit", spec, "--executor", "debug", "--out", str(out)]
    sweep = SweepDir(out)
    sweep.write("tiny", "probe", expand(load_spec(spec)), spec)
    other = acquire(sweep.lock_path("suffix"))  # another live submission trains it
    try:
        assert main(argv) == 0  # nothing went wrong: the run is in other hands
        assert "running" in capsys.readouterr().out
    finally:
        other.release()
    assert main(argv) == 0
    log = sweep.last_job("suffix")["log"]
    assert Path(log).is_absolute()  # recorded wherever the submit was run from


def test_an_sbatch_value_with_a_line_break_is_refused(tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", "submit", tiny_spec(tmp_path), "--executor", "slurm", "--out", str(out)]
    assert main([*argv, "--sbatch", "constraint=a100\n#SBATCH --exclusive"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "must be one line" in err
    assert not out.exists()


def _sweep_of(tmp_path, runs, base=None) -> SweepDir:
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = tmp_path / "w.json"
    spec.write_text(json.dumps({"name": "w", "base": base or TINY_BASE, "runs": runs}))
    sweep = SweepDir(tmp_path / "sw")
    sweep.write("w", "probe", expand(load_spec(str(spec))), str(spec))
    return sweep


def test_one_local_worker_serves_run_after_run_as_if_each_had_its_own_process(tmp_path):
    from vlab.slurm.executors import run_local

    runs = [{"name": "a", "train.seed": 1, "train.threads": 2}, {"name": "b", "train.seed": 2}]
    sweep = _sweep_of(tmp_path, runs)
    jobs = run_local(sweep, ["a", "b"], workers=1)["jobs"]
    assert {n: j["returncode"] for n, j in jobs.items()} == {"a": 0, "b": 0}
    assert jobs["a"]["pid"] == jobs["b"]["pid"]  # one process trained both
    log_a, log_b = (sweep.log_path(n).read_text() for n in "ab")
    assert "a: done" in log_a and "runs/b" not in log_a and "b: done" in log_b
    # b trained after a in the same process equals b trained alone in a fresh process
    alone = _sweep_of(tmp_path / "alone", runs)
    subprocess.run(
        [sys.executable, "-m", "vlab.slurm.worker", str(alone.path), "b"],
        check=True,
        capture_output=True,
    )
    metrics = "runs/b/metrics.jsonl"
    assert read_jsonl(sweep.path / metrics) == read_jsonl(alone.path / metrics)
    # a's train.threads=2 did not carry over into b
    b_status = json.loads((sweep.run_path("b") / "status.json").read_text())
    a_status = json.loads((sweep.run_path("a") / "status.json").read_text())
    assert a_status["environment"]["threads"] == 2
    assert (
        b_status["environment"]["threads"]
        == json.loads((alone.run_path("b") / "status.json").read_text())["environment"]["threads"]
    )


def test_a_failing_run_or_a_dead_worker_fails_only_its_own_run(tmp_path):
    from vlab.locks import lock_holder
    from vlab.slurm.executors import run_local

    base = {**TINY_BASE, "train": {"steps": 5000, "eval_every": 1000, "threads": 1}}
    sweep = _sweep_of(tmp_path, [{"name": "long"}, {"name": "bad"}, {"name": "ok"}], base)
    # "bad" has a corrupt checkpoint: a one-line error in its log, code 2
    (sweep.run_path("bad") / "checkpoints").mkdir(parents=True)
    (sweep.run_path("bad") / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    (sweep.run_path("bad") / "config.json").write_text(
        json.dumps(sweep.run("bad").config, indent=2)
    )

    def kill_the_worker_of_long():
        deadline = time.time() + 120
        while time.time() < deadline:
            holder = lock_holder(sweep.lock_path("long"))
            if holder and (sweep.run_path("long") / "metrics.jsonl").exists():
                os.kill(holder["pid"], signal.SIGKILL)
                return
            time.sleep(0.05)

    import threading

    killer = threading.Thread(target=kill_the_worker_of_long)
    killer.start()
    jobs = run_local(sweep, ["long", "bad", "ok"], workers=1)["jobs"]
    killer.join()
    assert jobs["long"]["returncode"] == -signal.SIGKILL
    assert jobs["bad"]["returncode"] == 2 and jobs["ok"]["returncode"] == 0
    assert jobs["bad"]["pid"] == jobs["ok"]["pid"] != jobs["long"]["pid"]  # a fresh worker
    assert "last.pt" in sweep.log_path("bad").read_text()
    states = {r["name"]: r["state"] for r in sweep_status(sweep)}
    assert states["ok"] == "done" and states["long"] in ("running", "interrupted")


def test_a_sweep_over_four_arms_runs_locally_and_its_report_compares_every_pair(capsys, tmp_path):
    arms = ["pythia", "mamba", "mamba2", "hybrid"]
    path = tiny_spec(tmp_path, axes={"model.arch": arms, "train.seed": [0]})
    out = tmp_path / "sw"
    code, stdout, _ = vlab(capsys, "sweep", "submit", path, "--out", str(out), "--workers", "2")
    assert code == 0, stdout
    rows = sweep_status(SweepDir(out))
    assert len(rows) == 4 and all(r["state"] == "done" for r in rows)
    sizes = {
        r["name"]: json.loads((out / "runs" / r["name"] / "status.json").read_text())["state_size"]
        for r in rows
    }
    assert sizes["pythia-s0"]["recurrent_state"] == 0 < sizes["pythia-s0"]["kv_cache"]
    assert sizes["mamba2-s0"]["kv_cache"] == 0 < sizes["mamba2-s0"]["recurrent_state"]
    assert min(sizes["hybrid-s0"]["kv_cache"], sizes["hybrid-s0"]["recurrent_state"]) > 0
    assert main(["report", str(out), "--no-html", "-p", "threshold", "0.3"]) == 0
    notebook = (out / "report.ipynb").read_text()
    assert "Log-rank test of every pair of architectures" in notebook
    assert "mamba2 vs pythia" in notebook and "hybrid vs mamba" in notebook


@pytest.mark.parametrize(
    ("axes", "field", "words"),
    [
        ({"model.arch": ["hybrid"], "model.overrides": [{"attention_layers": [7]}]},
         "model.overrides.attention_layers", "index 7 is not a layer"),
        ({"model.arch": ["pythia", "mamba2"], "model.preset": ["1.4b"]},
         "model.preset", "'1.4b' is not a mamba2 preset"),
        ({"model.arch": ["rwkv"]}, "model.arch", "'rwkv' is not one of"),
    ],
    ids=["attention-layer", "preset", "arch"],
)  # fmt: skip
def test_bad_arm_settings_in_a_sweep_are_one_line_before_anything_runs(
    capsys, tmp_path, axes, field, words
):
    path = tiny_spec(tmp_path, axes=axes)
    code, _, err = vlab(capsys, "sweep", "submit", path, "--out", str(tmp_path / "sw"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert field in err and words in err, err
    assert not (tmp_path / "sw").exists()


def test_prune_drops_never_started_runs_of_a_changed_grid_and_keeps_started_ones(capsys, tmp_path):
    out = tmp_path / "sw"
    old = tiny_spec(tmp_path, name="old")  # suffix, prefix
    # a submission that stopped before the suffix run started: both are in sweep.json
    SweepDir(out).write("old", "probe", expand(load_spec(old)), source=old)
    code, stdout, _ = vlab(
        capsys, "sweep", "submit", old, "--out", str(out), "--only", "prefix", "--executor", "debug"
    )
    assert code == 0, stdout
    # the grid changes: suffix now trains longer, so it is another run under the same name
    new = tmp_path / "new.json"
    base = {**TINY_BASE, "train": {**TINY_BASE["train"], "steps": 24}}
    new.write_text(json.dumps({"name": "new", "base": base, "axes": {"task.variant": ["suffix"]}}))
    code, _, err = vlab(
        capsys, "sweep", "submit", str(new), "--out", str(out), "--executor", "debug"
    )
    assert code != 0 and "different config" in err
    before = SweepDir(out).spec_path.read_bytes()
    code, stdout, _ = vlab(capsys, "sweep", "prune", str(out), "--spec", str(new), "--dry-run")
    assert code == 0 and "would drop: suffix" in stdout and "kept: prefix: done" in stdout
    assert SweepDir(out).spec_path.read_bytes() == before
    code, stdout, _ = vlab(capsys, "sweep", "prune", str(out), "--spec", str(new))
    assert code == 0 and "dropped: suffix" in stdout
    assert [r.name for r in SweepDir(out).runs()] == ["prefix"]
    assert (out / "runs" / "prefix" / "status.json").is_file()  # never deleted
    code, stdout, _ = vlab(
        capsys, "sweep", "submit", str(new), "--out", str(out), "--executor", "debug"
    )
    assert code == 0, stdout
    assert {r["name"]: r["state"] for r in sweep_status(SweepDir(out))} == {
        "prefix": "done",
        "suffix": "done",
    }
    assert SweepDir(out).run("suffix").config["train"]["steps"] == 24


def test_the_equal_pilot_gives_every_arm_the_same_grid():
    runs = expand(load_spec("pilot-protocol"))
    by_arm: dict[str, list[dict]] = {}
    for run in runs:
        c = json.loads(json.dumps(run.config))
        by_arm.setdefault(c["model"].pop("arch"), []).append(c)
    assert set(by_arm) == {"pythia", "mamba", "mamba2", "hybrid"}
    key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731
    grids = {arch: sorted(map(key, cells)) for arch, cells in by_arm.items()}
    assert len({tuple(g) for g in grids.values()}) == 1  # identical configs but the arch
    cells = by_arm["pythia"]
    assert len(cells) == 28
    lrs = sorted({c["train"]["lr"] for c in cells})
    assert lrs[0] <= 3e-4 and lrs[-1] >= 1e-2 and {3e-3, 5e-3} <= set(lrs)
    assert max(b / a for a, b in zip(lrs, lrs[1:], strict=False)) <= 2.0  # log-spaced, no gaps
    schedules = {(c["train"]["min_lr_ratio"], c["train"]["beta2"]) for c in cells}
    assert schedules == {(0.0, 0.999), (0.0, 0.98), (1.0, 0.999), (1.0, 0.98)}
    assert {c["task"]["length"] for c in cells} == {16}
