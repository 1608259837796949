"""Looking inside the models (``vlab.analysis.inside``): what a model computes, read off its
weights and activations, and ``vlab inspect``, which writes it into run directories.

Access: ``activations`` (stable names for every arm, read and patched through nnsight, at
the module paths of each arm's family record; an SSM block's state step by step and its
hidden attention come from the internals module the record names, e.g.
``vlab.models.backbones.mamba_internals``). Analyses, each a pure function from a model
and probe examples (``examples``) to a tidy table: ``state_probe`` (with ``linear_probe``),
``attention``, ``patching``, ``logit_lens``; on a VLM run ``vlm`` (attention from the answer
to the image patches). Running them on runs: ``runs`` (a run's model at a checkpoint),
``inspection`` (the units of work and their files), ``submit`` (as a SLURM array), ``cli``.
The report side (``results``, ``figures``, ``image_figures``) reads the tables without torch,
and this package's ``__init__`` imports nothing, so ``vlab report`` never loads torch.
"""
