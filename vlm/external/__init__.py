"""VLMs trained by other codebases, imported as vlab VLM run directories.

An import reads another codebase's checkpoint, maps its settings and tensors onto vlab's VLM
and writes a ``vlab vlm train``-style run directory, so every reader of runs (``vlab vlm
eval``, ``vlab vlm generate``, ``vlab inspect``, finetuning) opens it unchanged. Data flows one
way: the foreign format is read here and nowhere else.

* :mod:`.shakeup`: the SHAKEUP authors' Pythia-VL / Mamba-VL checkpoints (``gpantaz/vl_mamba``);
* :mod:`.imported`: writing a mapped model as a run directory, whatever format it came from.
"""
