"""A GPAW SCF stopped at iteration 8 and resumed, against the uninterrupted one (JSON out).

    mpirun -np 2 python tests/mpi_scf_resume.py OUT.json

The 10-atom V2O3 cell of tests/test_scf_checkpoint.py (PBE, no U, LCAO sz(dzp), h 0.25 Å,
Γ point, rattled, SCF converged tightly) in two layouts of two ranks: spin-polarised with
GPAW's MSR1 (the ML presets' finish: one spin per rank, every rank mixes the whole density)
and spin-paired with meltquench's MD Pulay (the engine's default: the grid split over the
ranks, each mixing its part). For each: the uninterrupted SCF's iterations, energy and
forces; those of the stopped-and-resumed one; the resume's note.
"""
import json
import sys
from pathlib import Path

from mpi4py import MPI  # before gpaw, as the driver does

import numpy as np

from meltquench import calculators
from meltquench.calculators.scf_checkpoint import SCFCheckpoint, gpaw_calculator
from meltquench.errors import Interrupted
from meltquench.structures import v2o3_rhombohedral

STOP_AT = 8
CASES = {"spin-polarised, msr1": (True, "msr1"), "spin-paired, md-pulay": (False, "md-pulay")}


def atoms_with(folder, spinpol, mixer):
    settings = {"name": "gpaw", "dispersion": None, "spinpol": spinpol,
                "gpaw": {"basis": "sz(dzp)", "h": 0.25, "hubbard_u": {},
                         "electronic_temperature": "fixed", "mixer": {"backend": mixer},
                         "occupations": {"name": "fermi-dirac", "width": 0.1},
                         "convergence": {"energy": 1e-7, "density": 1e-6,
                                         "eigenstates": 1e-10}}}
    atoms = v2o3_rhombohedral()
    atoms.positions += np.random.default_rng(3).normal(0.0, 0.1, atoms.positions.shape)
    calculators.prepare_atoms(settings, atoms)
    atoms.calc = calculators.make_calculator(settings, directory=folder)
    return atoms


def result(atoms):
    forces = atoms.get_forces()
    return {"iterations": gpaw_calculator(atoms.calc).get_number_of_iterations(),
            "energy": atoms.get_potential_energy(), "forces": forces.tolist()}


def main(out):
    comm = MPI.COMM_WORLD
    folder = Path(out).parent
    report = {"ranks": comm.size}
    for name, (spinpol, mixer) in CASES.items():
        tag = name.replace(", ", "-")
        uninterrupted = result(atoms_with(folder / f"{tag}-full", spinpol, mixer))
        path = folder / f"{tag}-scf.npz"
        stopped = atoms_with(folder / f"{tag}-stopped", spinpol, mixer)
        SCFCheckpoint(path, every_s=1e9, comm=comm,
                      should_stop=lambda it, s: "stopped" if it == STOP_AT else None
                      ).attach(stopped.calc)
        try:
            stopped.get_forces()
        except Interrupted:
            pass
        again = atoms_with(folder / f"{tag}-resumed", spinpol, mixer)
        note = SCFCheckpoint(path, comm=comm).resume(again.calc, again)
        report[name] = {"uninterrupted": uninterrupted, "resumed": result(again),
                        "note": note, "stop_at": STOP_AT}
    if comm.rank == 0:
        Path(out).write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
