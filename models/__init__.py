"""What is trained (``vlab.models``), layered as mamba_ssm is: kernels below blocks below models.

``ops``: the selective scan (reference / torch / C++ / mamba-ssm) and its hook under
transformers' Mamba; ``backbones``: the language models by family (GPT-NeoX/Pythia, Mamba),
their presets, building and token resizing; ``vlm``: the vision-language model and its
two-stage experiment; ``bench``: speed benchmarks (``vlab bench``).
"""
