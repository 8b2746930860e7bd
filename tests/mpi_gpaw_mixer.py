"""GPAW's Pulay mixer and meltquench's MDPulay on the same short trajectory (JSON out).

    python tests/mpi_gpaw_mixer.py OUT.json
    mpirun -np 2 python tests/mpi_gpaw_mixer.py OUT.json   # grid split over both ranks

The 10-atom V2O3 cell (PBE, no U, LCAO sz(dzp), h 0.25 Å, Γ point), rattled, then moved
three times by the same small random displacement; the SCF of each geometry is recorded
(energy, iterations) for GPAW's Pulay (beta 0.1, 20 densities), MDPulay with keep=False (must
be the same mixer), MDPulay with keep=True and the default MDPulay.
"""
import json
import sys

from mpi4py import MPI  # before gpaw, as the driver does

import numpy as np
from gpaw import GPAW

from meltquench.calculators.mdpulay import MDPulay
from meltquench.structures import v2o3_rhombohedral

MIXERS = {
    "gpaw-pulay": lambda: {"name": "pulay", "beta": 0.1, "nmaxold": 20, "weight": 20.0},
    "md-pulay-nokeep": lambda: MDPulay(beta=0.1, nmaxold=20, weight=20.0, keep=False),
    "md-pulay-keep": lambda: MDPulay(beta=0.1, nmaxold=20, weight=20.0, keep=True),
    "md-pulay-default": lambda: MDPulay(),
}


def trajectory(mixer, nsteps=4):
    atoms = v2o3_rhombohedral()
    rng = np.random.default_rng(0)  # the same numbers on every rank
    atoms.rattle(0.05, rng=rng)
    step = rng.normal(size=atoms.positions.shape) * 0.02
    atoms.calc = GPAW(mode="lcao", basis="sz(dzp)", h=0.25, xc="PBE", kpts={"gamma": True},
                      symmetry="off", txt=None, mixer=mixer)
    out = []
    for _ in range(nsteps):
        energy = float(atoms.get_potential_energy())
        out.append([energy, int(atoms.calc.get_number_of_iterations())])
        atoms.positions += step
    return out, atoms.calc.dft.comm.size if hasattr(atoms.calc, "dft") else None


if __name__ == "__main__":
    results = {}
    for name, make in MIXERS.items():
        results[name], size = trajectory(make())
        results["gpaw_comm_size"] = size
    if MPI.COMM_WORLD.rank == 0:
        with open(sys.argv[1], "w") as fh:
            json.dump(results, fh)
