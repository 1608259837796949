"""The suite's ``--dist loadgroup`` really groups: every test marked with one ``xdist_group``
runs on one worker (the benchmark suite's tests share one data root and METEOR jar). Guards the
shim in tests/conftest.py for pytest 9.2, whose structured node ids dropped xdist 3.8's group
suffix silently."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_one_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n"
    )
    (tmp_path / "test_grouped.py").write_text(
        textwrap.dedent(
            """
            import pytest

            pytestmark = pytest.mark.xdist_group("together")

            @pytest.mark.parametrize("i", range(4))
            def test_worker(i):
                pass
            """
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-v",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # verbose xdist lines read "[gw1] [ 25%] PASSED test_grouped.py::test_worker[0]@together"
    ran = [line.split()[0] for line in done.stdout.splitlines() if " PASSED " in line]
    assert len(ran) == 4 and len(set(ran)) == 1, done.stdout
