"""A few GPAW MD steps on the 10-atom V2O3 cell, half fixed; energies and forces to a JSON file.

    python tests/mpi_gpaw_steps.py OUT.json              # serial
    mpirun -np 2 python tests/mpi_gpaw_steps.py OUT.json  # GPAW on both ranks
    mpirun -np 2 python tests/mpi_gpaw_steps.py OUT.json --split
        # two one-rank replicas, each with its own GPAW on its own communicator, written to
        # OUT.json.<rank>; replica 1 runs without the density-matrix extrapolation.
    mpirun -np 2 python tests/mpi_gpaw_steps.py OUT.json --band
        # GPAW's bands split over both ranks (parallel: {band: 2}): its LCAO eigensolver runs in
        # ScaLAPACK (needs a GPAW built with it)

mpi4py is imported before GPAW on purpose (that is what the driver does).
"""
import json
import sys
import tempfile
from pathlib import Path

from mpi4py import MPI  # before gpaw

import numpy as np
from ase import units
from ase.md.verlet import VelocityVerlet

from meltquench.calculators import make_calculator, parallel_layout, scf_iterations
from meltquench.structures import split_regions, v2o3_rhombohedral

SETTINGS = {
    "name": "gpaw",
    "dispersion": None,
    "gpaw": {"basis": "sz(dzp)", "h": 0.25,  # 16 grid points a side; 12 (h 0.3) is too coarse
             # Without U: V2O3's PBE+U SCF crawls through a slow d-occupation mode, so the tight
             # convergence needed to compare runs to 1e-5 eV would take hundreds of iterations
             # (U is checked separately in test_gpaw.py).
             "hubbard_u": {},
             # Tight, so that serial and parallel runs agree far below the test tolerance.
             "convergence": {"energy": 1e-6, "density": 1e-6, "eigenstates": 1e-10},
             "extrapolation": 1},
}
NSTEPS = 2


def run(comm, directory, extrapolation=1, parallel=None):
    atoms = v2o3_rhombohedral()
    split_regions(atoms)
    mobile = atoms.get_tags() == 2
    # Deterministic initial velocities (no random numbers: every rank agrees by construction).
    pattern = np.array([[1.0, -0.5, 0.3], [-0.2, 0.8, -0.6], [0.4, 0.1, -0.9]])
    velocities = np.zeros((len(atoms), 3))
    velocities[mobile] = np.resize(pattern, (mobile.sum(), 3)) * 0.02  # Å/fs-ish
    atoms.set_velocities(velocities * units.Ang / units.fs)
    settings = {**SETTINGS, "gpaw": {**SETTINGS["gpaw"], "extrapolation": extrapolation,
                                     "parallel": parallel}}
    atoms.calc = make_calculator(settings, directory=directory, comm=comm)
    out = {"energies": [], "forces": [], "iterations": [], "ranks": comm.Get_size(),
           "gpaw_comm_size": None}
    md = VelocityVerlet(atoms, 2 * units.fs)

    def record():
        out["energies"].append(float(atoms.get_potential_energy()))
        out["forces"].append(atoms.get_forces().tolist())
        out["iterations"].append(scf_iterations(atoms.calc))

    md.attach(record, interval=1)
    md.run(NSTEPS)
    calc = atoms.calc
    out["gpaw_comm_size"] = int(calc.comm.size)
    out["layout"] = parallel_layout(calc)
    extrapolation = getattr(calc, "meltquench_extrapolation", None)
    out["extrapolated"] = extrapolation.extrapolated if extrapolation else 0
    out["positions"] = atoms.positions.tolist()
    return out


def main():
    path = sys.argv[1]
    world = MPI.COMM_WORLD
    split = "--split" in sys.argv
    comm = world.Split(color=world.Get_rank(), key=0) if split else world
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / f"run{world.Get_rank() if split else ''}"
        # Every rank needs the same folder name for GPAW's text output (only rank 0 writes).
        directory = Path(comm.bcast(str(directory), root=0))
        out = run(comm, directory, extrapolation=0 if split and world.Get_rank() == 1 else 1,
                  parallel={"band": 2} if "--band" in sys.argv else None)
    if split:
        path = f"{path}.{world.Get_rank()}"
    if comm.Get_rank() == 0:
        Path(path).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
