"""The training loop both experiments plug into (``vlab.training``).

``config``: :class:`~vlab.training.config.TrainConfig` (no torch: configs validate without
it); ``engine``: the three-method :class:`~vlab.training.engine.TrainTask` protocol and
:func:`~vlab.training.engine.train` (set up, resume, step, evaluate, finish);
``distributed``: the torchrun context, DDP and FSDP2, full-state checkpoints,
:func:`~vlab.training.distributed.claim_run`; ``precision``: the one bf16 rule. The probe
trainer (``vlab.probes.trainer``) and the VLM's two stages
(``vlab.vlm.train``) are both tasks of this one loop.
"""
