"""vlab: a lab for mechanistic analysis of vision-language models, Transformers vs Mamba.

The installed namespace maps the repository's top-level folders: ``vlab.probes`` (synthetic
retrieval probes), ``vlab.models`` (backbones, training engine, the VLM), ``vlab.analysis``,
``vlab.slurm``. This root package holds only what every stage shares: the error type, atomic
file helpers, config helpers and the ``vlab`` console script.
"""

__version__ = "0.1.0"
