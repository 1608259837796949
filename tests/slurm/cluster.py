"""Pytest plugin: a real single-node SLURM cluster for the test session (not a test file).

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.slurm.cluster"]`` (with an
empty ``tests/__init__.py``, so that both ``pytest`` and ``python -m pytest`` can import it), or
ad hoc with ``python -m pytest -p tests.slurm.cluster``.

The session-scoped fixture ``slurm_cluster`` runs ``slurm/localcluster/start.sh`` into a fresh
private directory (packages are installed on first use), points ``SLURM_CONF`` at that cluster
for the rest of the session, and runs ``slurm/localcluster/stop.sh`` at the end. Under
pytest-xdist each worker that draws a SLURM test starts its own cluster (about 10 s; each on its
own ports): the SLURM tests spread over the workers. Grouped on one worker (one cluster) they
ran one after another and the suite took about as long (session 14).

* Not root, or ``VLAB_NO_SLURM=1``, or the cluster cannot be started: the tests are skipped,
  with the reason printed.
* ``CI=true``: those cases make the fixture fail instead, so CI cannot silently skip SLURM tests.
* ``VLAB_SLURM_KEEP=1`` keeps the private directory (logs, state) after the session.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "slurm" / "localcluster"
START_TIMEOUT_S = 120.0  # packages installed: start.sh takes about 4 s
APT_START_TIMEOUT_S = 900.0  # packages installed by apt first
STOP_TIMEOUT_S = 180.0


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """A running private cluster: its directory, exported environment and partition."""

    dir: Path
    env: dict[str, str]
    partition: str
    cpus: int

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command (sacct, squeue, ...) against this cluster."""
        return subprocess.run(
            list(args),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slurm: submits jobs to a real local SLURM cluster (fixture slurm_cluster)"
    )


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _unavailable(reason: str) -> None:
    """Skip (locally) or fail (CI=true) every test that needs the cluster."""
    if _in_ci():
        pytest.fail(f"CI=true but no SLURM cluster: {reason}", pytrace=False)
    print(f"\nslurm_cluster: skipping SLURM tests: {reason}", file=sys.stderr)
    pytest.skip(f"no SLURM cluster: {reason}")


def _free_port_base(count: int = 4) -> int:
    """First of `count` consecutive TCP ports that are free right now (both 0.0.0.0 and lo)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free range of TCP ports found")


def _parse_env(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            env[key.strip()] = value.strip()
    return env


def _stop(cluster_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / "stop.sh"), str(cluster_dir)],
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_S,
    )


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    if os.environ.get("VLAB_NO_SLURM") == "1":
        _unavailable("VLAB_NO_SLURM=1")
    if os.geteuid() != 0:
        _unavailable("needs root (installs Debian packages and starts munge/mariadb/slurm daemons)")

    # Not under pytest's basetemp: that is mode 0700, and munged/mariadbd run as their own users.
    cluster_dir = Path(tempfile.mkdtemp(prefix="vlab-slurm-", dir="/tmp"))
    env = {**os.environ, "VLAB_SLURM_PORT_BASE": str(_free_port_base())}
    env.pop("SLURM_CONF", None)
    # apt may have to install packages first; otherwise start.sh needs a few seconds.
    installed = all(shutil.which(b) for b in ("munged", "mariadbd", "slurmdbd", "slurmctld"))
    timeout = START_TIMEOUT_S if installed else APT_START_TIMEOUT_S
    out_path, err_path = cluster_dir / "start.out", cluster_dir / "start.err"
    failure = None
    try:
        # Output to files, not pipes: a pipe held open by a daemon would block us until timeout.
        with out_path.open("w") as out, err_path.open("w") as err:
            code = subprocess.run(
                ["bash", str(SCRIPTS / "start.sh"), str(cluster_dir)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=timeout,
            ).returncode
        if code != 0:
            failure = f"exit {code}"
    except subprocess.TimeoutExpired:
        failure = f"timed out after {timeout:.0f}s"
    except BaseException:  # e.g. Ctrl-C: do not leave daemons behind
        _stop(cluster_dir)
        raise
    if failure is not None:
        _stop(cluster_dir)
        _unavailable(
            f"start.sh {failure}:\n{_tail(err_path.read_text())}\n(logs kept in {cluster_dir})"
        )

    cluster_env = _parse_env(out_path.read_text())
    partition = cluster_env.get("VLAB_SLURM_PARTITION", "debug")
    saved = {key: os.environ.get(key) for key in cluster_env}
    os.environ.update(cluster_env)
    try:
        cpus_out = subprocess.run(
            ["sinfo", "-h", "-p", partition, "-o", "%c"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        cpus = int(cpus_out.split()[0].rstrip("+"))
        yield SlurmCluster(dir=cluster_dir, env=cluster_env, partition=partition, cpus=cpus)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stop = _stop(cluster_dir)
        if stop.returncode != 0:
            print(f"\nslurm_cluster: stop.sh failed:\n{stop.stderr}", file=sys.stderr)
        elif os.environ.get("VLAB_SLURM_KEEP") != "1":
            shutil.rmtree(cluster_dir, ignore_errors=True)
