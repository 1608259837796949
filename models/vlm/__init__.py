"""The vision-language model and its experiment (``vlab.models.vlm``), one module per concept.

Parts: ``vision`` (encoders), ``connectors`` (projectors), ``sequence`` (image markers, the two
orderings, response-only labels), ``loss``, ``tokenizer``, ``model`` (:class:`VLM`),
``batch`` (samples to tensors), ``generate`` (greedy decoding). Experiment: ``config`` (the
run config) and ``presets``, ``train`` (two stages, ``vlab vlm train``),
``evaluate`` (benchmarks, ``vlab vlm eval``), ``metrics`` (answers and captions), ``data``
(records, readers, filters, packing, mixtures, the shapes dataset), ``cli``.
Nothing is imported here, so ``vlab`` commands that need no model stay fast.
"""
