"""Sweeps (``vlab.slurm``): a spec expands to named runs, run by a named executor (local worker
processes, SLURM job arrays through submitit, or in-process debug), into one sweep directory.

``spec`` (specs as code, JSON or YAML; built-ins in ``specs/``), ``sweepdir`` (the directory,
its per-run locks and job records), ``executors``, ``worker`` (one run in a job), ``status``
(``vlab sweep status``), ``cli`` (``vlab sweep``), ``localcluster/`` (a real single-node SLURM
for tests).
"""
