"""``vlab bench``: speed measured side by side in one process, written as JSON.

The models' own measurements (:mod:`vlab.models.bench`: training tokens/s, the scan, forward
scaling and memory; :mod:`vlab.models.bench_decode`: decoding against visual tokens) and the
probe protocol's training step (:mod:`vlab.bench.protocol`), composed by
:mod:`vlab.bench.suite`; and, with ``--inspect`` instead, what ``vlab inspect``'s analyses
cost (:mod:`vlab.bench.inspect_cost`). A room of its own because it measures more than one
layer: it sits above the probes.
"""
