"""``vlab bench --inspect`` runs at a tiny size and writes the documented JSON (cost is
measured, never asserted)."""

import json

import pytest

from vlab.bench.inspect_cost import ANALYSES, InspectBenchPlan
from vlab.cli import main
from vlab.errors import ConfigError


def test_bench_inspect_quick_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "inspect.json"
    assert main(["bench", "--inspect", "--quick", "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Mamba inspect seconds vs context length: logit_lens: L^" in printed
    assert "Pythia inspect seconds at V=4,096 vs the preset's: " in printed
    result = json.loads(out.read_text())
    plan = InspectBenchPlan.quick()
    rows = result["inspect"]
    assert {(r["arch"], r["vocab"] > 4000, r["length"], r["analysis"]) for r in rows} == {
        (arch, wide, n, x)
        for arch in plan.archs
        for wide in (False, True)
        for n in plan.lengths
        for x in ANALYSES
    }
    for row in rows:
        assert row["tokens"] == row["length"] + 2 and row["examples"] == plan.examples
        assert row["seconds"] > 0 and row["estimate_mb"] > 0
    assert set(result["inspect_length_exponent"]["mamba"]) == set(ANALYSES)
    assert set(result["inspect_vocab_ratio"]["pythia"]["patching"]) == {"seconds", "peak"}


def test_bench_inspect_refuses_what_it_does_not_take(capsys):
    assert main(["bench", "--inspect", "--batch", "8"]) == 2
    assert "--batch is not for --inspect" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        InspectBenchPlan(preset="huge")
