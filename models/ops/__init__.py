"""Kernels: the selective scan (Mamba's S6 recurrence, ``selective_scan``, and its C++ source in
``csrc/``) and Mamba-2's chunked SSD scan and causal conv for CPU (``ssd``)."""
