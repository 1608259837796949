"""Derived tables and figures on small hand-made sweeps whose answers are known."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import math  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tests.analysis.test_load import write_run  # noqa: E402
from vlab.analysis import plots, tables  # noqa: E402
from vlab.analysis.load import load_sweep  # noqa: E402


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """pythia: one run stopped at the threshold at step 20, one that used its whole budget;
    mamba: one done (own threshold 0.95), one still running, one failed; plus a hybrid arm
    (L = 8, binned)."""
    root = tmp_path_factory.mktemp("sweep")
    write_run(root / "p-stop", [0.1, 0.5, 0.95], threshold_step=20, threshold=0.9)
    write_run(root / "p-full", [0.1, 0.2, 0.3, 0.4], threshold=0.9)
    write_run(
        root / "m-done", [0.1, 0.6, 0.92, 0.97], arch="mamba", threshold_step=20, threshold=0.95
    )
    write_run(root / "m-run", [0.1, 0.3], arch="mamba", state="running")
    write_run(root / "m-fail", [0.1], arch="mamba", state="failed", reason="boom")
    ramp = [[min(1.0, 0.25 * (i + 1) * (p < 4) + 0.2 * i) for p in range(8)] for i in range(4)]
    write_run(
        root / "h",
        [sum(r) / 8 for r in ramp],
        arch="hybrid",
        length=8,
        per_position=ramp,
        threshold=0.9,
    )
    return load_sweep(root)


def test_time_to_threshold_events_and_censoring(sweep):
    ttt = tables.time_to_threshold(sweep.runs, sweep.evaluations).set_index("run")
    assert ttt.loc["p-stop", ["time", "event"]].tolist() == [20, True]
    assert ttt.loc["p-full", ["time", "event"]].tolist() == [30, False]  # budget spent
    assert ttt.loc["m-run", ["time", "event"]].tolist() == [10, False]  # censored while running
    assert ttt.loc["m-fail", ["time", "event"]].tolist() == [0, False]
    low = tables.time_to_threshold(sweep.runs, sweep.evaluations, threshold=0.3).set_index("run")
    assert low.loc["p-full", ["time", "event"]].tolist() == [20, True]
    assert low.loc["m-run", ["time", "event"]].tolist() == [10, True]
    assert (low["threshold"] == 0.3).all()


@pytest.mark.parametrize("bad", ["0.9", 2, -0.1, True])
def test_threshold_override_must_be_a_number_in_unit_range(sweep, bad):
    with pytest.raises(ValueError, match="threshold must be a number in"):
        tables.time_to_threshold(sweep.runs, sweep.evaluations, threshold=bad)


def test_survival_and_logrank_tables(sweep):
    ttt = tables.time_to_threshold(sweep.runs, sweep.evaluations)
    surv = tables.survival_summary(ttt).set_index("arch")
    assert surv.loc["pythia", ["runs", "reached", "censored"]].tolist() == [2, 1, 1]
    assert surv.loc["pythia", "median step"] == "20"  # S drops to 1/2 at step 20
    # mamba: censored at 0 (failed) and 10 (running) leave m-done alone at risk at 20: S = 0
    assert surv.loc["mamba", "median step"] == "20"
    lr = tables.logrank_table(ttt).set_index("length")
    assert lr.loc[4, "architectures"] == "mamba vs pythia" and 0 < lr.loc[4, "p"] < 1
    assert lr.loc[8, "note"] == "one architecture only"


def test_mean_curves_carry_stopped_runs_but_not_running_ones(sweep):
    m = tables.mean_curves(sweep.runs, sweep.evaluations)
    p = m[m["arch"] == "pythia"].set_index("fraction")
    # p-stop stopped at 2/3 with 0.95 and counts with it at the end; p-full ends at 0.4
    assert p.loc[1.0, "mean"] == pytest.approx((0.95 + 0.4) / 2) and p.loc[1.0, "n"] == 2
    mb = m[m["arch"] == "mamba"].set_index("fraction")
    assert mb["n_runs"].iloc[0] == 3
    assert mb.loc[0.0, "n"] == 3 and mb.loc[1 / 3, "n"] == 2 and mb.loc[1.0, "n"] == 1
    assert mb.loc[1 / 3, "mean"] == pytest.approx((0.6 + 0.3) / 2)
    t = tables.curve_table(m).set_index("arch")
    assert t.loc["mamba", "at 100%"] == "0.970 (1/3 runs)"
    assert t.loc["pythia", "at 100%"] == "0.675"


def test_mean_heatmap_on_a_shared_grid_counts_runs_per_row(sweep):
    grid = [0, 10, 20, 30, 40]
    steps, acc, counts = tables.mean_heatmap(
        sweep.runs, sweep.per_position, ["m-done", "m-run", "m-fail"], grid
    )
    assert list(steps) == grid and acc.shape == (5, 4)
    assert counts.tolist() == [3, 2, 1, 1, 0]  # nobody evaluated at 40: a NaN row
    assert acc[1, 0] == pytest.approx((0.6 + 0.3) / 2) and math.isnan(acc[4, 0])


def test_first_pass_learning_order_with_position_bins(sweep):
    fp = tables.first_pass(sweep.runs, sweep.per_position, max_bins=4)
    h = fp[fp["run"] == "h"].set_index("bin")
    assert h[["first", "last"]].values.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # positions 0-3 reach 0.9 at eval 3 (0.75 + 0.4 -> 1.0) while 4-7 end at 0.6: censored
    assert h["time"].tolist() == [20, 20, 30, 30]
    assert h["event"].tolist() == [True, True, False, False]
    wide = tables.learning_order_table(tables.learning_order_summary(fp))
    assert list(wide.columns[3:]) == ["0", "1", "2", "3", "0-1", "2-3", "4-5", "6-7"]


def test_final_accuracy_uses_finished_runs_only(sweep):
    fa = tables.final_accuracy(sweep.runs, n_boot=500).set_index("arch")
    assert fa.loc["mamba", "finished runs"] == 1 and fa.loc["mamba", "mean"] == 0.97
    assert math.isnan(fa.loc["mamba", "95% CI low"])  # one finished run: no interval
    assert fa.loc["mamba", "not finished"] == "1 failed, 1 running"
    assert fa.loc["pythia", "mean"] == pytest.approx((0.95 + 0.4) / 2)
    assert fa.loc["pythia", "95% CI low"] == pytest.approx(0.4)


def test_notes_name_failed_runs_and_mixed_thresholds(sweep):
    notes = tables.consistency_notes(sweep.runs)
    assert any(n.startswith("m-fail failed at step 0 (boom)") for n in notes)
    assert any("different thresholds [0.9, 0.95]" in n for n in notes)
    assert not any("different thresholds" in n for n in tables.consistency_notes(sweep.runs, 0.5))


def test_a_panel_whose_runs_saw_repeats_of_a_small_task_is_noted(sweep, tmp_path):
    assert tables.repetition_notes(sweep.runs) == []  # L=4 from a pool of 8: 6,720 examples
    write_run(tmp_path / "short", [0.1, 0.5, 0.9, 1.0], length=2)  # pool 4: 4 * 3 * 2 = 24
    write_run(tmp_path / "short-early", [0.1, 0.5], length=2, state="running")
    notes = tables.repetition_notes(load_sweep(tmp_path).runs)
    assert notes == [
        "L=2 suffix: the task has 24 distinct training examples (pool 4), but runs saw up to "
        "1,920 (each about 80 times): a model can memorise them, so held-out accuracy here "
        "also measures generalisation from repeats"
    ]
    assert notes[0] in tables.consistency_notes(load_sweep(tmp_path).runs)


def test_state_counts_and_overview(sweep):
    counts = tables.state_counts(sweep.runs).set_index("arch")
    assert counts.loc["mamba", ["done", "failed", "running", "total"]].tolist() == [1, 1, 1, 3]
    assert "reason" in tables.overview(sweep.runs).columns


def test_every_figure_builds_and_saves(sweep, tmp_path):
    ttt = tables.time_to_threshold(sweep.runs, sweep.evaluations)
    figs = {
        "curves": plots.learning_curves(sweep.runs, sweep.evaluations),
        "heat": plots.position_heatmaps(sweep.runs, sweep.per_position, 4),
        "times": plots.threshold_times(ttt),
        "km": plots.survival_curves(ttt),
        "order": plots.learning_order(tables.first_pass(sweep.runs, sweep.per_position)),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        paths = plots.save(fig, tmp_path, name)
        assert [p.suffix for p in paths] == [".png", ".pdf"]
        assert all(p.stat().st_size > 1000 for p in paths)
    heat = figs["heat"]
    meshes = [c for ax in heat.axes[:-1] for c in ax.collections]
    assert meshes and all(m.get_clim() == (0, 1) for m in meshes)  # one colour scale
    assert heat.axes[-1].get_ylabel() == "held-out accuracy"  # the colour bar
    titles = [ax.get_title() for ax in heat.axes[:-1]]
    # p-stop counts with its last values after stopping; m-run and m-fail end early
    assert titles == [
        "pythia · suffix (mean of 2 runs)",
        "mamba · suffix (mean of 3 runs, fewer later)",
    ]
    curves = figs["curves"]
    assert {ax.get_xlabel() for ax in curves.axes} == {"fraction of training (step / budget)"}
    assert {ax.get_title() for ax in curves.axes} == {"L = 4 · suffix", "L = 8 · suffix"}


def test_empty_tables_give_a_message_figure_not_an_error(sweep):
    ev = sweep.evaluations.iloc[0:0]
    fig = plots.learning_curves(sweep.runs, ev)
    assert "No evaluations yet" in fig.texts[0].get_text()
    empty = tables.time_to_threshold(sweep.runs, ev)
    assert empty.empty and "No run" in plots.survival_curves(empty).texts[0].get_text()
    assert plots.position_heatmaps(sweep.runs, sweep.per_position.iloc[0:0], 4).texts


def test_arch_colours_are_fixed_for_vlabs_arms_and_distinct_for_others():
    c = plots.arch_colors(["mamba", "hybrid-2", "pythia", "mamba2", "hybrid", "rwkv"])
    assert list(c) == ["pythia", "mamba", "mamba2", "hybrid", "hybrid-2", "rwkv"]  # legend order
    assert c["pythia"] == "#1f77b4" and c["mamba"] == "#ff7f0e"
    assert c == {**c, **plots.arch_colors(["hybrid", "mamba2"])}  # the same in every report
    assert len(set(c.values())) == 6
    assert isinstance(pd.Series(c), pd.Series)


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory):
    """The paper's grid in miniature, pythia only: lr 1e-3 reaches 0.9 at steps 20, 20, 30
    (median 20); lr 2e-3 at 10, 10 and one censored at 30 (median 10, selected); lr 4e-3 never
    (censored). mamba: two learning rates that never reach it, the one with the higher last
    accuracy is selected; plus a pending mamba run (no directory)."""
    root = tmp_path_factory.mktemp("lr_sweep")
    curves = {
        1e-3: [[0.1, 0.5, 0.95], [0.1, 0.5, 0.92], [0.1, 0.5, 0.6, 0.91]],
        2e-3: [[0.1, 0.95], [0.2, 0.93], [0.1, 0.5, 0.6, 0.7]],
        4e-3: [[0.1, 0.2, 0.3, 0.4]] * 3,
    }
    for lr, accs in curves.items():
        for seed, acc in enumerate(accs):
            stop = 10 * (len(acc) - 1) if acc[-1] >= 0.9 else None
            write_run(root / f"p-{lr:g}-{seed}", acc, lr=lr, seed=seed, threshold_step=stop)
    for lr, last in ((1e-3, 0.5), (2e-3, 0.7)):
        for seed in range(2):
            write_run(root / f"m-{lr:g}-{seed}", [0.1, 0.3, last], lr=lr, seed=seed, arch="mamba")
    return load_sweep(root)


def test_time_to_threshold_in_examples_seen(lr_sweep):
    ttt = tables.time_to_threshold(lr_sweep.runs, lr_sweep.evaluations).set_index("run")
    assert ttt.loc["p-0.001-2", ["time", "examples", "event"]].tolist() == [30, 1920, True]
    assert ttt.loc["p-0.004-0", ["examples", "event"]].tolist() == [1920, False]
    assert ttt.loc["p-0.002-0", "lr"] == 2e-3 and ttt.loc["p-0.002-1", "seed"] == 1


def test_lr_selection_by_km_median_with_documented_tie_breaks(lr_sweep):
    ttt = tables.time_to_threshold(lr_sweep.runs, lr_sweep.evaluations)
    sel = tables.lr_selection(ttt, lr_sweep.runs).set_index(["arch", "lr"])
    assert sel.loc[("pythia", 1e-3), "median"] == 20 * 64
    assert sel.loc[("pythia", 2e-3), "median"] == 10 * 64
    assert sel.loc[("pythia", 2e-3), ["runs", "reached", "censored"]].tolist() == [3, 2, 1]
    assert math.isinf(sel.loc[("pythia", 4e-3), "median"])
    chosen = sel[sel["selected"]].index.tolist()
    # mamba: no median anywhere, no run reached: the higher mean last accuracy (0.7) wins
    assert sorted(chosen) == [("mamba", 2e-3), ("pythia", 2e-3)]
    picked = tables.selected_runs(ttt, sel.reset_index())
    assert sorted(picked["run"]) == ["m-0.002-0", "m-0.002-1", *(f"p-0.002-{i}" for i in range(3))]
    shown = tables.selection_table(sel.reset_index())
    assert shown["selected"].tolist().count("✔ selected") == 2
    assert shown.loc[shown["median examples"] == "640", "CI"].iloc[0].startswith("640 – ")


def test_run_table_lists_every_run_with_the_selected_lr_marked(lr_sweep):
    ttt = tables.time_to_threshold(lr_sweep.runs, lr_sweep.evaluations)
    sel = tables.lr_selection(ttt, lr_sweep.runs)
    t = tables.run_table(lr_sweep.runs, ttt, sel).set_index("run")
    assert len(t) == 13
    assert t.loc["p-0.002-0", "examples to threshold"] == "640"
    assert t.loc["p-0.002-2", "examples to threshold"] == "censored at 1,920 (done)"
    assert t.loc["p-0.002-2", "selected lr"] == "✔" and t.loc["p-0.001-0", "selected lr"] == ""
    assert t.loc["m-0.001-0", "last accuracy"] == 0.5


def test_a_collapsed_model_is_not_counted_as_having_learned_a_position(tmp_path):
    """Position 0 at 1.0 while the others are 0 (the model answers 0 for every input): not
    learned there. Run a: a transient stripe (the model then collapses onto position 2);
    run b: position 0 stays the model's default answer while the others are learned."""
    transient = [[1, 0, 0, 0], [0, 0, 1, 0], [0.5, 0.5, 0.5, 0.5], [1, 1, 1, 1]]
    default = [[1, 0, 0, 0], [1, 0.1, 0.1, 0.1], [1, 0.3, 0.4, 0.2], [1, 1, 1, 0.9]]
    for name, pp in (("a", transient), ("b", default)):
        write_run(
            tmp_path / name, [sum(r) / 4 for r in pp], per_position=pp, steps=30, threshold=0.9
        )
    s = load_sweep(tmp_path)
    fp = tables.first_pass(s.runs, s.per_position).set_index(["run", "bin"])
    # a: the stripes at steps 0 (position 0) and 10 (position 2) drop later: learned at 30
    assert fp.loc["a", "time"].tolist() == [30, 30, 30, 30]
    # b: position 0 stays at 1.0, but overall accuracy is 1/4 (chance) at step 0 and 0.325
    # at step 10, below 1/4 + 0.1: learned at 20, where the model answers half right
    assert fp.loc["b", "time"].tolist() == [20, 30, 30, 30]
    assert fp.loc["b", "event"].tolist() == [True, True, True, True]
    # the old rule (first step at the level) would have said step 0 for position 0
    assert tables.first_step_at([0, 10, 20, 30], [1, 1, 1, 1], 0.9) == 0
    # without the collapse guard the default position counts from its collapse
    loose = tables.first_pass(s.runs, s.per_position, collapse_margin=-1).set_index(["run", "bin"])
    assert loose.loc[("b", 0), "time"] == 0 and loose.loc[("a", 0), "time"] == 30


def test_learned_from_stays_above_rule():
    steps = [0, 10, 20, 30]
    assert tables.learned_from(steps, [1, 0.2, 0.96, 0.97], [1] * 4, 0.95, 0.0) == 20
    assert tables.learned_from(steps, [1, 1, 1, 0.5], [1] * 4, 0.95, 0.0) is None
    assert tables.learned_from(steps, [1, 1, 1, float("nan")], [1] * 4, 0.95, 0.0) is None
    assert tables.learned_from(steps, [1, 1, 1, 1], [0.1, 0.2, 0.6, 0.9], 0.95, 0.5) == 20


def test_learning_order_runs_are_the_selected_ones_unless_all_are_asked_for(tmp_path):
    write_run(tmp_path / "fast", [0.1, 0.95], threshold_step=10, lr=1e-3)
    write_run(tmp_path / "slow", [0.1, 0.2, 0.3, 0.4], lr=2e-3)
    runs = load_sweep(tmp_path).runs
    ttt = tables.time_to_threshold(runs, load_sweep(tmp_path).evaluations)
    selected = tables.selected_runs(ttt, tables.lr_selection(ttt, runs))
    assert tables.order_runs(runs, selected)["name"].tolist() == ["fast"]
    assert tables.order_runs(runs, selected, "all") is runs
    with pytest.raises(ValueError, match="learning_order_runs must be 'selected' or 'all'"):
        tables.order_runs(runs, selected, "best")


def test_holm_adjustment_on_known_values():
    assert tables.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert tables.holm([0.5, 0.6]) == [1.0, 1.0]
    adjusted = tables.holm([0.02, math.nan])
    assert adjusted[0] == 0.02 and math.isnan(adjusted[1])


def test_every_pair_of_architectures_is_tested(tmp_path):
    """Three arms: three pairs per panel; each pair's p is the two-arm log-rank test's."""
    for arch, reached in (("pythia", [30, 30]), ("mamba", [10, 20]), ("hybrid", [10, 10])):
        for seed, step in enumerate(reached):
            accs = [0.1] * (step // 10) + [0.95]
            write_run(tmp_path / f"{arch}-{seed}", accs, arch=arch, seed=seed, threshold_step=step)
    s = load_sweep(tmp_path)
    ttt = tables.time_to_threshold(s.runs, s.evaluations)
    pairs = tables.pairwise_logrank_table(ttt)
    assert pairs["pair"].tolist() == ["hybrid vs mamba", "hybrid vs pythia", "mamba vs pythia"]
    for row in pairs.itertuples():
        a, b = row.pair.split(" vs ")
        alone = tables.logrank_table(ttt[ttt["arch"].isin([a, b])])
        assert row.p == pytest.approx(alone["p"].iloc[0])
    assert pairs["p (Holm)"].tolist() == pytest.approx(tables.holm(pairs["p"].tolist()))
    assert (pairs["p (Holm)"] >= pairs["p"]).all()
