"""The VLM experiment: run configs and presets, two-stage training, finetunes, held-out
evaluation, answering questions, ``vlab vlm``. It imports the model (:mod:`vlab.models.vlm`),
never the reverse."""
