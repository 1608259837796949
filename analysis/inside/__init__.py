"""Looking inside the models (``vlab.analysis.inside``): what a model computes, read off its
weights and activations, and ``vlab inspect``, which writes it into run directories.

Access: ``activations`` (stable names for every arm, read and patched through nnsight),
``ssm`` (Mamba's recurrent state step by step), ``hidden_attention`` (the selective SSM as a
data-dependent attention matrix over past tokens). Analyses, each a pure function from a model
and probe examples (``examples``) to a tidy table: ``state_probe`` (with ``linear_probe``),
``attention``, ``patching``, ``logit_lens``. Running them on runs: ``runs`` (a run's model at a
checkpoint), ``inspection`` (the units of work and their files), ``cli``. The report side
(``results``, ``figures``) reads the tables without torch; every other module imports torch.
"""
