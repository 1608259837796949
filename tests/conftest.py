"""Test-wide settings: offline Hugging Face, quiet warnings, deterministic threads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# a real single-node SLURM cluster (fixture ``slurm_cluster``) for the sweep tests
pytest_plugins = ["tests.slurm.cluster"]

# Property tests (hypothesis) draw the same examples on every run by default, so CI's verdict
# depends on the code alone; HYPOTHESIS_PROFILE=explore draws new ones (and remembers failures
# in .hypothesis/) when hunting for bugs.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


import pytest  # noqa: E402


@pytest.hookimpl(trylast=True)  # after xdist's worker hook has written its group suffix
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make ``--dist loadgroup`` group again under pytest >= 9.2.

    xdist 3.8 tells the scheduler a test's ``xdist_group`` by appending ``@<group>`` to the
    node id, but writes it to ``item._nodeid``, which pytest 9.2's structured node ids no longer
    read (pytest-dev/pytest-xdist#1386, fix proposed in #1388): the groups were silently
    ignored (the benchmark suite's tests each made their own data root). On a worker under
    loadgroup, a grouped test whose id lacks the suffix gets it in pytest's own id; where xdist
    already added it (older pytest, a fixed xdist) nothing changes.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:  # pytest < 9.2: xdist's own suffix works
        return
    for item in items:
        groups = sorted(
            {
                str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                for mark in item.iter_markers("xdist_group")
            }
        )
        suffix = "@" + "_".join(groups)
        if groups and not item.nodeid.endswith(suffix):
            item._id = coerce_node_id(item.nodeid + suffix)
