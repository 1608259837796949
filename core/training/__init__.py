"""The training loop both experiments plug into (``vlab.training``).

``engine``: :class:`~vlab.training.engine.TrainConfig`, the three-method
:class:`~vlab.training.engine.TrainTask` protocol and :func:`~vlab.training.engine.train`
(resume, evaluate, step, finish); ``distributed``: the torchrun context, DDP and FSDP2,
full-state checkpoints. The probe trainer (``vlab.probes.trainer``) and the VLM's two stages
(``vlab.models.vlm.train``) are both tasks of this one loop.
"""
