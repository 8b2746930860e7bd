"""Numba and MPI kernels: plain functions over arrays.

Installed as ``meltquench.kernels``. Nothing here imports ASE objects or touches files, and
nothing here imports the rest of ``meltquench``.
"""

if __name__ != "meltquench.kernels":
    # Imported as a top-level "kernels" (python run from the source tree): numba's on-disk
    # cache, shared with meltquench.kernels through the same source files, would then record
    # types of a module "kernels" that other processes cannot import, and fail there.
    raise ImportError("import the kernels as meltquench.kernels (pip install -e .), not as a "
                      "top-level 'kernels'")
