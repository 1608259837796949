"""The equal pilot's rule picks each next stage's runs from finished run directories."""

import json

import pytest

from vlab.errors import VlabError
from vlab.probes.pilot import Cell, rank_key, read_cells, seed_runs, shape_runs
from vlab.slurm.spec import expand, load_spec


def write_run(sweep, name, arch, lr, *, step=None, accuracy=0.5, state="done", **extra):
    run = sweep / "runs" / name
    run.mkdir(parents=True)
    config = {
        "model": {"arch": arch, "preset": "tiny", "overrides": extra.get("overrides", {})},
        "task": {"length": 16, "target_mode": extra.get("target", "position")},
        "train": {
            "lr": lr,
            "min_lr_ratio": extra.get("min_lr_ratio", 0.0),
            "beta2": 0.999,
            "seed": extra.get("seed", 0),
            "batch_size": 64,
        },
    }
    (run / "config.json").write_text(json.dumps(config))
    status = {"state": state, "step": 3000, "threshold_step": step, "accuracy": accuracy}
    (run / "status.json").write_text(json.dumps(status))


def cell(lr, reached, examples=None, accuracy=None):
    return Cell("pythia", lr, 0.0, 0.999, "position", (), 0, reached, examples, accuracy)


def test_rank_reached_first_by_examples_then_accuracy_then_smaller_lr():
    cells = [
        cell(1e-3, False, accuracy=0.9),
        cell(3e-3, True, 64_000),
        cell(5e-3, True, 32_000),
        cell(2e-3, False, accuracy=0.9),
        cell(1e-2, False, accuracy=0.95),
    ]
    order = [c.lr for c in sorted(cells, key=rank_key)]
    assert order == [5e-3, 3e-3, 1e-2, 1e-3, 2e-3]


@pytest.fixture
def stage1(tmp_path):
    sweep = tmp_path / "stage1"
    accuracies = {1e-3: 0.4, 2e-3: 0.7, 3e-3: 0.6}
    for arch in ("pythia", "mamba"):
        for lr, acc in accuracies.items():
            write_run(sweep, f"{arch}-{lr}", arch, lr, accuracy=acc)
    write_run(sweep, "mamba-reached", "mamba", 5e-3, step=1000, accuracy=0.96)
    return sweep


def test_stage_2_runs_every_target_and_shape_at_each_arms_two_best_cells(stage1):
    cells = read_cells([stage1])
    assert len(cells) == 7
    runs = shape_runs(cells)
    by_arm = {}
    for r in runs:
        by_arm.setdefault(r["model.arch"], []).append(r)
    assert {a: len(v) for a, v in by_arm.items()} == {"pythia": 6, "mamba": 6}
    assert {r["train.lr"] for r in by_arm["pythia"]} == {2e-3, 3e-3}
    assert {r["train.lr"] for r in by_arm["mamba"]} == {5e-3, 2e-3}  # reached, then accuracy
    mamba = {(r["task.target_mode"], r["model.overrides.state_size"]) for r in by_arm["mamba"]}
    assert mamba == {("position", 32), ("vocab", 16), ("vocab", 32)}  # (position, 16) was run


def test_stage_3_gives_each_arms_three_best_cells_two_more_seeds(stage1):
    runs = seed_runs(read_cells([stage1]))
    pythia = [r for r in runs if r["model.arch"] == "pythia"]
    assert len(pythia) == 6 and len(runs) == 12
    assert {(r["train.lr"], r["train.seed"]) for r in pythia} == {
        (lr, s) for lr in (2e-3, 3e-3, 1e-3) for s in (1, 2)
    }
    assert all(r["model.init_seed"] == r["train.seed"] for r in runs)


def test_an_unfinished_stage_is_refused_by_name(stage1):
    write_run(stage1, "pythia-running", "pythia", 1e-2, state="running")
    with pytest.raises(VlabError, match="pythia-running: running, not done"):
        read_cells([stage1])


def test_the_stage_specs_expand_from_the_sweep_they_are_given(stage1, monkeypatch):
    monkeypatch.delenv("VLAB_PILOT", raising=False)
    with pytest.raises(VlabError, match="set VLAB_PILOT"):
        load_spec("pilot-protocol-shapes")
    monkeypatch.setenv("VLAB_PILOT", str(stage1))
    shapes = expand(load_spec("pilot-protocol-shapes"))
    assert len(shapes) == 12
    pythia = [r.config for r in shapes if r.config["model"]["arch"] == "pythia"]
    assert {c["model"]["overrides"]["num_attention_heads"] for c in pythia} == {2, 4}
    assert {r.config["task"]["length"] for r in shapes} == {16}
    assert len(expand(load_spec("pilot-protocol-seeds"))) == 12


def test_a_run_whose_config_is_not_a_probe_config_is_named(stage1):
    (stage1 / "runs" / "pythia-0.001" / "config.json").write_text('{"model": {"arch": "gpt9"}}')
    with pytest.raises(VlabError, match="pythia-0.001/config.json: not a probe run's config"):
        read_cells([stage1])


def test_km_median_is_the_middle_reaching_count_and_inf_below_half():
    from vlab.probes.pilot import km_median

    assert km_median([300, None, 100]) == 300  # S falls to 1/3 at the second reaching run
    assert km_median([300, 200, 100]) == 200
    assert km_median([None, None, 100]) == float("inf")
    assert km_median([100, None, None, 400]) == 400  # n = 4: S = 0.5 at the second
    assert km_median([]) == float("inf")


def test_km_median_agrees_with_the_reports_kaplan_meier():
    import numpy as np

    from vlab.analysis.length_trend import km_median_point
    from vlab.probes.pilot import km_median

    budget = 10_000
    for examples in ([300, None, 100], [None, 50, 50], [7, 3, None, None, 5], [None, None, 1]):
        times = np.array([budget if e is None else e for e in examples], dtype=float)
        events = np.array([e is not None for e in examples])
        assert km_median(examples) == km_median_point(times, events)


def test_the_recipe_rule_ranks_stage_3_cells_by_median_then_reaching_then_accuracy(tmp_path):
    from vlab.probes.pilot import choice_table, choices

    sweep = tmp_path / "stage3"
    outcomes = {  # lr: per seed (threshold step or None, final accuracy)
        1e-3: [(100, 0.96), (None, 0.90), (300, 0.96)],  # median 300 steps
        2e-3: [(200, 0.96), (250, 0.96), (None, 0.5)],  # median 250: best
        3e-3: [(50, 0.96), (None, 0.8), (None, 0.8)],  # 1 of 3: no median
        5e-3: [(None, 0.9), (None, 0.9), (None, 0.9)],  # none, higher accuracy than 1e-2
        1e-2: [(None, 0.7), (None, 0.7), (None, 0.7)],
    }
    for lr, runs in outcomes.items():
        for seed, (step, acc) in enumerate(runs):
            write_run(sweep, f"m-{lr}-{seed}", "mamba", lr, step=step, accuracy=acc, seed=seed)
    write_run(sweep, "one-seed", "mamba", 3e-4, step=10, accuracy=0.99)  # not a stage-3 cell
    chosen = choices(read_cells([sweep]))
    assert [c.cell.lr for c in chosen["mamba"]] == [2e-3, 1e-3, 3e-3, 5e-3, 1e-2]
    best = chosen["mamba"][0]
    assert (best.reached, best.median, best.seeds) == (2, 250 * 64, 3)
    table = choice_table(chosen)
    assert "| mamba | lr 0.002, cosine, beta2 0.999, position, state_size 16 | 2/3 | 250 |" in table
    assert table.count("| yes |") == 1


def test_the_grid_is_the_chosen_rate_and_its_neighbours_on_stage_1s_grid():
    from vlab.errors import ConfigError
    from vlab.probes.pilot import LRS, lr_grid

    assert lr_grid(2e-3) == (1e-3, 2e-3, 3e-3)
    assert lr_grid(3e-4) == (3e-4, 5e-4, 1e-3)
    assert lr_grid(1e-2) == (3e-3, 5e-3, 1e-2)
    assert lr_grid(LRS[1]) == LRS[:3]
    with pytest.raises(ConfigError, match="train.lr"):
        lr_grid(4e-3)


def test_vlab_probe_pilot_prints_the_rules_reading_of_the_shipped_stage_1(capsys):
    from pathlib import Path

    from vlab.cli import main

    stage1 = Path(__file__).resolve().parents[2] / "results" / "pilot-protocol"
    assert main(["probe", "pilot", str(stage1)]) == 0
    out = capsys.readouterr().out
    assert "no cell has 3 seeds yet" in out
    # stage 1's one cell that reached 0.95 ranks first for its arm
    assert "hybrid: lr 0.001, constant, beta2 0.98, position, state_size 16: 0.95 at" in out
