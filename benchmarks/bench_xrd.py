"""Benchmark: powder XRD by the Debye equation, ours against ASE's XrDebye.

    python benchmarks/bench_xrd.py            # 3,000 and 30,000 atoms
    python benchmarks/bench_xrd.py --quick    # 3,000 atoms only

Workload (issue 15): the same result from both tools. A sphere of corundum V2O3 with N atoms
(an open cluster: ASE's Debye sums over the atom pairs of a finite object, without periodic
images), every atom displaced by a Gaussian of 0.1 Å, its pattern at 2theta = 10-80 degrees in
0.02-degree steps (3,501 points), Cu K-alpha, constant form factors f = Z (ASE's table has no
V; and see tests/test_xrd.py for its 'Iwasa' form factors). Ours: the linear pair histogram
(numba) to the cluster's diameter, then one sinc matrix product for every angle. ASE computes
each angle separately in O(N^2): it runs on ``--ase-points`` angles spread over the range and
its time is scaled to all 3,501 (marked ``*``); it agrees with us on those angles. Timings
are noisy on a shared machine: compare the ratios (ASE time / our time, above 1: we are
faster). Single-threaded.
"""
import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402

from meltquench.kernels.xrd import (debye_intensity, linear_pair_histogram,  # noqa: E402
                                    q_from_two_theta)
from meltquench.structures import v2o3_corundum  # noqa: E402

TWO_THETA = np.arange(10.0, 80.0 + 1e-9, 0.02)
GRID_A = 0.01


def cluster(n_atoms, seed=0):
    """The n_atoms atoms of a large corundum V2O3 block nearest its centre, jittered."""
    side = int(np.ceil((n_atoms / 30 * 4) ** (1 / 3))) + 1
    big = v2o3_corundum((side, side, max(1, side // 3 + 1)))
    centre = big.cell.sum(axis=0) / 2
    order = np.argsort(np.linalg.norm(big.positions - centre, axis=1), kind="stable")[:n_atoms]
    rng = np.random.default_rng(seed)
    pos = big.positions[order] - centre + rng.normal(0, 0.1, (n_atoms, 3))
    return Atoms(np.array(big.get_chemical_symbols())[order], positions=pos)


def ours(atoms):
    symbols = list(dict.fromkeys(atoms.get_chemical_symbols()))
    types = np.array([symbols.index(s) for s in atoms.get_chemical_symbols()])
    z = np.array([[0.0] * 10 + [float(Atoms(s).numbers[0])] for s in symbols])
    pos = atoms.positions
    rmax = 1.01 * np.linalg.norm(pos.max(axis=0) - pos.min(axis=0)) + GRID_A
    nbins = int(np.ceil(rmax / GRID_A))
    hist = linear_pair_histogram(pos, np.zeros((3, 3)), [False] * 3, types, rmax, nbins)[0]
    return debye_intensity(q_from_two_theta(TWO_THETA), hist, np.zeros((len(z), len(z))),
                           np.bincount(types), z, rmax, "none") * len(atoms)


def ase(atoms, points):
    from ase.utils.xrdebye import XrDebye
    xrd = XrDebye(atoms, wavelength=1.5406, damping=0.0, method="constant-f")
    return np.array(xrd.calc_pattern(TWO_THETA[points]))


def bench(n_atoms, ase_points):
    atoms = cluster(n_atoms)
    ours(cluster(200))  # compile (numba cache) outside the timing
    t0 = time.perf_counter()
    mine = ours(atoms)
    t_ours = time.perf_counter() - t0
    points = np.linspace(0, len(TWO_THETA) - 1, ase_points).round().astype(int)
    t0 = time.perf_counter()
    theirs = ase(atoms, points)
    t_ase = (time.perf_counter() - t0) * len(TWO_THETA) / len(points)
    diff = np.max(np.abs(mine[points] - theirs) / np.abs(theirs).max())
    return t_ours, t_ase, diff


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 atoms only")
    parser.add_argument("--ase-points", type=int, default=None,
                        help="angles ASE computes (default 40 at 3,000 atoms, 3 at 30,000)")
    args = parser.parse_args()
    sizes = [3000] if args.quick else [3000, 30000]
    print(f"Powder XRD (Debye), {len(TWO_THETA)} angles 2theta 10-80 deg, open V2O3 clusters, "
          "f = Z, one thread")
    print(f"{'atoms':>7}  {'ours (s)':>9}  {'ASE XrDebye (s)':>16}  {'ours faster by':>15}  "
          f"{'max |diff| / max I':>18}")
    for n in sizes:
        points = args.ase_points or (40 if n <= 3000 else 3)
        t_ours, t_ase, diff = bench(n, points)
        print(f"{n:>7}  {t_ours:>9.2f}  {t_ase:>15.1f}*  {t_ase / t_ours:>14.0f}x  {diff:>18.1e}")
    print("* ASE timed on a subset of the angles and scaled to all of them")


if __name__ == "__main__":
    main()
