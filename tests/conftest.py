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
