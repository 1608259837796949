"""The seaborn-drawn figures: what they show, checked on the artists of small hand-made sweeps."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from tests.analysis.test_load import write_run  # noqa: E402
from vlab.analysis import plots, tables  # noqa: E402
from vlab.analysis.load import load_sweep  # noqa: E402

# final held-out accuracy of the finished runs: (arch, variant) -> one value per seed
FINAL = {
    ("pythia", "suffix"): [0.9, 0.95, 1.0],
    ("mamba", "suffix"): [0.5, 0.7],
    ("pythia", "prefix"): [0.8],
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Finished runs with the final accuracies of FINAL, plus a running and a failed mamba run
    and a mamba prefix run still running at step 10 (not finished: no dot)."""
    root = tmp_path_factory.mktemp("sweep")
    for (arch, variant), finals in FINAL.items():
        for seed, final in enumerate(finals):
            accs = [0.1, 0.4, final]
            write_run(
                root / f"{arch}-{variant}-{seed}", accs, arch=arch, variant=variant, seed=seed
            )
    write_run(root / "m-run", [0.1, 0.3], arch="mamba", state="running")
    write_run(root / "m-fail", [0.1], arch="mamba", state="failed", reason="boom")
    ramp = [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]
    write_run(
        root / "m-prefix",
        [0.25, 0.65],
        arch="mamba",
        variant="prefix",
        state="running",
        per_position=ramp,
    )
    return load_sweep(root)


def dots(ax) -> list[float]:
    """y of the points seaborn drew (its swarm collections), sorted."""
    swarms = [c for c in ax.collections if isinstance(c, PathCollection)]
    ys = [y for c in swarms for y in np.asarray(c.get_offsets())[:, 1]]
    return sorted(float(y) for y in ys)


def test_final_accuracy_one_dot_per_finished_run_and_the_tables_interval(sweep):
    fig = plots.final_accuracy(sweep.runs, n_boot=500)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert set(panels) == {"L = 4 · suffix", "L = 4 · prefix"}
    suffix, prefix = panels["L = 4 · suffix"], panels["L = 4 · prefix"]
    assert dots(suffix) == pytest.approx(
        sorted(FINAL["pythia", "suffix"] + FINAL["mamba", "suffix"])
    )
    assert dots(prefix) == pytest.approx(FINAL["pythia", "prefix"])  # m-prefix is not finished
    assert [t.get_text() for t in suffix.get_xticklabels()] == ["pythia", "mamba"]
    # the black marks: the mean and bootstrap interval of tables.final_accuracy, same arguments
    table = tables.final_accuracy(sweep.runs, n_boot=500).set_index(["variant", "arch"])
    means = sorted(line.get_ydata()[0] for line in suffix.lines if line.get_marker() == "D")
    assert means == pytest.approx(sorted(table.loc["suffix", "mean"]))
    spans = sorted(tuple(b.lines[2][0].get_segments()[0][:, 1]) for b in suffix.containers)
    low, high = table.loc["suffix", "95% CI low"], table.loc["suffix", "95% CI high"]
    expected = sorted(zip(low, high, strict=True))
    assert spans == [pytest.approx(e) for e in expected]
    # one finished run: a mean, no interval (nothing to say about spread)
    assert [b.lines[2] for b in prefix.containers] == [()]


def test_final_accuracy_without_finished_runs_says_so(sweep):
    running = sweep.runs[sweep.runs["state"] != "done"]
    fig = plots.final_accuracy(running)
    assert "No finished run yet" in fig.texts[0].get_text()


def test_heatmap_cells_are_the_mean_with_later_steps_on_top_and_gaps_grey(sweep):
    fig = plots.position_heatmaps(sweep.runs, sweep.per_position, 4)
    panels = {ax.get_title(): ax for ax in fig.axes[:-1]}
    ax = panels["mamba · prefix"]
    mesh = ax.collections[0]
    cells = np.ma.filled(mesh.get_array(), np.nan).reshape(-1, 4)  # rows: steps 0, 10, 20
    np.testing.assert_allclose(cells[:2], [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    assert np.isnan(cells[2]).all()  # the run has not got to step 20 yet: grey, not 0
    assert ax.get_facecolor()[:3] == pytest.approx((0xD0 / 255,) * 3)
    bottom, top = ax.get_ylim()
    assert bottom < top  # time runs upwards, first evaluation at the bottom
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "0" and labels[-1] == "20"
    assert fig.axes[-1].get_ylabel() == "held-out accuracy"  # one colour bar for all panels


def test_survival_figures_in_examples_seen_with_medians_and_a_title(sweep):
    ttt = tables.time_to_threshold(sweep.runs, sweep.evaluations, threshold=0.9)
    fig = plots.survival_curves(ttt, time="examples", title="selected")
    ax = {a.get_title().split("   ")[0]: a for a in fig.axes}["L = 4 · suffix"]
    assert fig.get_suptitle() == "selected" and ax.get_xlabel() == "training examples seen"
    assert "log-rank p = " in ax.get_title()
    box = ax.texts[0].get_text()
    # pythia: 0.95 and 1.0 reach 0.9 at step 20 (1,280 examples), 0.9 as well: median 1.28k
    assert "pythia: 3/3, median 1.28k" in box and "mamba: 0/4, median not reached" in box
    times = plots.threshold_times(ttt, time="examples")
    assert {a.get_ylabel() for a in times.axes} == {"training examples seen"}
