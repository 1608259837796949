"""vlab: a lab for mechanistic analysis of vision-language models, Transformers vs Mamba.

The installed namespace maps the repository's top-level folders: ``vlab.probes`` (synthetic
retrieval probes), ``vlab.models`` (kernels, backbones, the VLM), ``vlab.analysis`` (tables,
statistics, reports, looking inside), ``vlab.slurm`` (sweeps). This root package holds what
every stage shares: the error type, atomic file IO, config helpers, the run-directory contract
(``rundir``), locks and process liveness, SLURM queries, the training loop
(``vlab.training``) and the ``vlab`` console script.
"""

__version__ = "0.1.0"
