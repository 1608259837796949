"""The synthetic retrieval probe (``vlab.probes``): a context of patch tokens and a query; the
model names the queried token's position.

``tasks`` (the data, a pure function of the seed), ``config`` (the run config), ``tracking``
(per-position accuracy), ``trainer`` (one run on the shared training loop), ``cli``
(``vlab probe``). ``image_task`` and ``image_model``: the same task with an image for a
context, read by a VLM's encoder and connector (``task.modality = "image"``).
"""
