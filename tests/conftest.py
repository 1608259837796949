"""Test-wide settings: offline Hugging Face, quiet warnings, deterministic threads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# a real single-node SLURM cluster (fixture ``slurm_cluster``) for the sweep tests
pytest_plugins = ["tests.slurm.cluster"]
