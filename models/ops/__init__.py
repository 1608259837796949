"""Kernels: the selective scan (Mamba's S6 recurrence) and its C++ source (``csrc/``)."""
