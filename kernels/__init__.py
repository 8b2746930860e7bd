"""Numba and MPI kernels: plain functions over arrays.

Installed as ``meltquench.kernels``. Nothing here imports ASE objects or touches files, and
nothing here imports the rest of ``meltquench``.
"""
