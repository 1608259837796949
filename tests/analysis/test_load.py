"""Loading sweeps into tidy tables: partial, failed, corrupt and pending runs all show up."""

import json
import socket
import subprocess

import pandas as pd
import pytest

from vlab.analysis.load import EVAL_COLUMNS, POSITION_COLUMNS, RUN_COLUMNS, load_sweep
from vlab.errors import VlabError
from vlab.fileio import atomic_write_json, read_json


def run_config(arch="pythia", variant="suffix", length=4, steps=30, threshold=0.9, seed=0, lr=2e-3):
    return {
        "task": {"length": length, "variant": variant, "seed": 0, "pool_size": 2 * length},
        "model": {"arch": arch, "preset": "tiny", "init_seed": seed, "init_scheme": "normal"},
        "train": {
            "steps": steps,
            "lr": lr,
            "seed": seed,
            "threshold": threshold,
            "batch_size": 64,
            "eval_every": 10,
        },
    }


def write_run(
    path,
    accs,
    *,
    state="done",
    per_position=None,
    threshold_step=None,
    reason=None,
    steps=30,
    eval_every=10,
    **config,
):
    """A run directory as the trainer writes it: ``accs`` is the accuracy at steps 0,
    eval_every, ...; per-position vectors are ``per_position[i]`` or ``[acc] * length``."""
    cfg = run_config(steps=steps, **config)
    length = cfg["task"]["length"]
    path.mkdir(parents=True)
    atomic_write_json(path / "config.json", cfg)
    lines = []
    for i, acc in enumerate(accs):
        step = i * eval_every
        pp = per_position[i] if per_position is not None else [acc] * length
        lines.append(
            json.dumps(
                {
                    "step": step,
                    "examples_seen": step * 64,
                    "fraction": step / steps,
                    "loss": None if step == 0 else 1.0,
                    "eval_loss": 1.0,
                    "accuracy": acc,
                    "lr": 1e-3,
                    "per_position": pp,
                }
            )
        )
    (path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    status = {
        "state": state,
        "reason": reason,
        "threshold_step": threshold_step,
        "step": (len(accs) - 1) * eval_every,
        "params": {"total": 1234},
    }
    atomic_write_json(path / "status.json", status)
    return path


def write_sweep(root, names_configs):
    atomic_write_json(
        root / "sweep.json",
        {
            "name": "demo",
            "runs": [{"name": n, "id": f"id-{n}", "config": c} for n, c in names_configs],
        },
    )


def test_sweep_json_with_done_running_failed_and_pending_runs(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "a", [0.1, 0.5, 0.95], threshold_step=20, reason="reached")
    write_run(runs / "b", [0.1, 0.3], state="running", arch="mamba")
    write_run(runs / "c", [0.1], state="failed", reason="RuntimeError: boom", arch="mamba")
    # a live run's torn last line is dropped silently
    with open(runs / "b" / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "accur')
    write_sweep(tmp_path, [(n, run_config()) for n in ("a", "b", "c", "d")])

    sweep = load_sweep(tmp_path)
    assert sweep.name == "demo" and sweep.source == "sweep.json" and sweep.warnings == []
    assert list(sweep.runs.columns) == RUN_COLUMNS
    assert list(sweep.evaluations.columns) == EVAL_COLUMNS
    assert list(sweep.per_position.columns) == POSITION_COLUMNS
    r = sweep.runs.set_index("name")
    assert r["state"].to_dict() == {"a": "done", "b": "running", "c": "failed", "d": "pending"}
    assert r.loc["a", "threshold_step"] == 20 and r.loc["a", "final_accuracy"] == 0.95
    assert r.loc["b", "last_step"] == 10 and r.loc["b", "n_evals"] == 2
    assert r.loc["c", "reason"] == "RuntimeError: boom"
    assert r.loc["d", "reason"] == "no run directory yet" and r.loc["d", "n_evals"] == 0
    assert r.loc["d", "arch"] == "pythia"  # config from sweep.json
    assert r.loc["a", "id"] == "id-a" and r.loc["a", "params"] == 1234
    assert pd.isna(r.loc["a", "state_size"])  # written before runs recorded their state size
    assert len(sweep.evaluations) == 3 + 2 + 1
    assert len(sweep.per_position) == 4 * (3 + 2 + 1)


def test_state_size_and_kv_cache_come_from_status(tmp_path):
    run = write_run(tmp_path / "h", [0.1, 0.5], arch="hybrid")
    status = read_json(run / "status.json")
    sizes = {"recurrent_state": 2304, "conv_state": 576, "kv_cache": 1440, "total": 4320}
    atomic_write_json(run / "status.json", {**status, "state_size": sizes})
    r = load_sweep(tmp_path).runs.set_index("name")
    assert (r.loc["h", "state_size"], r.loc["h", "kv_cache"]) == (4320, 1440)


def test_a_running_run_whose_process_died_shows_as_interrupted(tmp_path):
    """status.json says running, but the pid it names on this host is gone (SIGKILL, OOM)."""
    proc = subprocess.Popen(["sleep", "60"])
    here = write_run(tmp_path / "here", [0.1, 0.3], state="running")
    elsewhere = write_run(tmp_path / "elsewhere", [0.1, 0.3], state="running")
    for path, host in ((here, socket.gethostname()), (elsewhere, "node-that-we-cannot-see")):
        status = read_json(path / "status.json")
        atomic_write_json(path / "status.json", {**status, "host": host, "pid": proc.pid})
    try:
        runs = load_sweep(tmp_path).runs.set_index("name")
        assert runs["state"].to_dict() == {"elsewhere": "running", "here": "running"}
    finally:
        proc.kill()
        proc.wait()
    runs = load_sweep(tmp_path).runs.set_index("name")
    assert runs["state"].to_dict() == {"elsewhere": "running", "here": "interrupted"}
    assert f"pid {proc.pid}) is gone" in runs.loc["here", "reason"]


def test_corrupt_middle_line_is_skipped_with_a_warning_naming_the_line(tmp_path):
    path = write_run(tmp_path / "runs" / "a", [0.1, 0.5, 0.9])
    lines = (path / "metrics.jsonl").read_text().splitlines()
    lines.insert(1, "{not json")
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    sweep = load_sweep(tmp_path)
    assert sweep.evaluations["step"].tolist() == [0, 10, 20]
    assert len(sweep.warnings) == 1
    assert "a: metrics.jsonl has a corrupt line" in sweep.warnings[0]
    assert "line 2" in sweep.warnings[0]


def test_per_position_vectors_of_the_wrong_length_are_left_out_with_a_warning(tmp_path):
    write_run(tmp_path / "r", [0.0, 0.5], per_position=[[0, 0, 0, 0], [1, 0, 1]])
    sweep = load_sweep(tmp_path)
    assert sweep.per_position["step"].unique().tolist() == [0]
    assert any("length [3] do not match task.length=4" in w for w in sweep.warnings)


def test_without_sweep_json_every_run_directory_is_found_by_relative_path(tmp_path):
    write_run(tmp_path / "group1" / "x", [0.2])
    write_run(tmp_path / "group2" / "deeper" / "y", [0.3])
    # a Hugging Face checkpoint has a config.json too, but is not a run
    atomic_write_json(tmp_path / "hf_model" / "config.json", {"model_type": "gpt_neox"})
    sweep = load_sweep(tmp_path)
    assert sweep.source == "scan"
    assert sweep.runs["name"].tolist() == ["group1/x", "group2/deeper/y"]
    assert sweep.runs["id"].isna().all()


def test_a_single_run_directory_is_a_sweep_of_one(tmp_path):
    write_run(tmp_path / "solo", [0.2, 0.4])
    sweep = load_sweep(tmp_path / "solo")
    assert sweep.runs["name"].tolist() == ["solo"]


def test_unlisted_run_directories_are_shown_with_a_warning(tmp_path):
    write_run(tmp_path / "runs" / "a", [0.2])
    write_run(tmp_path / "runs" / "stray", [0.2])
    write_sweep(tmp_path, [("a", run_config())])
    sweep = load_sweep(tmp_path)
    assert sweep.runs["name"].tolist() == ["a", "stray"]
    assert sweep.warnings == ["runs/stray is not listed in sweep.json; shown anyway"]


def test_run_without_status_or_with_unreadable_files_is_unknown_not_dropped(tmp_path):
    path = write_run(tmp_path / "runs" / "a", [0.2])
    (path / "status.json").unlink()
    path = write_run(tmp_path / "runs" / "b", [0.2])
    (path / "status.json").write_text("{")
    sweep = load_sweep(tmp_path)
    assert sweep.runs["state"].tolist() == ["unknown", "unknown"]
    assert any("b: status.json is unreadable" in w for w in sweep.warnings)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "is not a sweep: it has no sweep.json and no run directories"),
        (lambda p: (p / "sweep.json").write_text("{oops"), "sweep.json: not valid JSON"),
        (lambda p: atomic_write_json(p / "sweep.json", {"name": "x", "runs": []}), "lists no runs"),
        (lambda p: atomic_write_json(p / "sweep.json", {"name": "x"}), "field 'runs': missing"),
        (lambda p: (p / "sweep.json").mkdir(), "sweep.json: is not a regular file"),
    ],
)
def test_bad_directories_raise_a_clear_vlab_error(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(VlabError, match=message):
        load_sweep(tmp_path)


def test_missing_path_and_file_path_raise_vlab_errors(tmp_path):
    with pytest.raises(VlabError, match="no such directory"):
        load_sweep(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(VlabError, match="is a file"):
        load_sweep(tmp_path / "f.txt")
