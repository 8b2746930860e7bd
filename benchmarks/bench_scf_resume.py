"""What a GPAW SCF stopped in the middle costs when it resumes from ``scf.npz``
(``finish.scf_checkpoint_s``, meltquench/calculators/scf_checkpoint.py).

The cold spin-polarised PBE+U single point of the ML presets' finish (sz(dzp), h 0.25 Å, MSR1,
Fermi-Dirac 0.05 eV, U(V) 3.25 eV, no D3) on the 30-atom corundum cell rattled by 0.08 Å:
first uninterrupted, then stopped after each iteration of ``--stop-at`` and resumed from what
it left (the density matrix and the mixer's and criteria's memory; with ``--fresh-mixer`` the
density matrix alone, as in session 28). Prints the iterations of each, the file's size and
how far the resumed result is from the uninterrupted one (energy, largest force component).

    OMP_NUM_THREADS=1 python benchmarks/bench_scf_resume.py                 # ~15 min
    OMP_NUM_THREADS=1 python benchmarks/bench_scf_resume.py --stop-at 10 40 70
    OMP_NUM_THREADS=1 python benchmarks/bench_scf_resume.py --fresh-mixer

Results: benchmarks/README.md, "A finish's SCF stopped and resumed".
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from meltquench import calculators
from meltquench.calculators.scf_checkpoint import MEMORY_PREFIXES, SCFCheckpoint, gpaw_calculator
from meltquench.errors import Interrupted
from meltquench.structures import v2o3_corundum

SETTINGS = {"name": "gpaw", "spinpol": True, "dispersion": None,
            "gpaw": {"basis": "sz(dzp)", "h": 0.25, "mixer": {"backend": "msr1"},
                     "scf_stagnation": 0, "electronic_temperature": "fixed",
                     "occupations": {"name": "fermi-dirac", "width": 0.05}}}


def frame(folder, rattle_A):
    atoms = v2o3_corundum()
    atoms.positions += np.random.default_rng(1).normal(0.0, rattle_A, atoms.positions.shape)
    calculators.prepare_atoms(SETTINGS, atoms)
    atoms.calc = calculators.make_calculator(SETTINGS, directory=folder)
    return atoms


def single_point(atoms):
    """(energy eV, forces eV/Å, SCF iterations, seconds)"""
    t0 = time.perf_counter()
    forces = atoms.get_forces()
    return (atoms.get_potential_energy(), forces,
            gpaw_calculator(atoms.calc).get_number_of_iterations(), time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stop-at", type=int, nargs="+", default=[20, 70],
                   help="SCF iterations after which to stop (default 20 70)")
    p.add_argument("--rattle", type=float, default=0.08, help="rattle of the frame (Å)")
    p.add_argument("--fresh-mixer", action="store_true",
                   help="resume from the density matrix alone (drop the mixer's memory)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_scf_resume_"))
    energy, forces, n_full, seconds = single_point(frame(work / "full", args.rattle))
    print(f"uninterrupted: {n_full} iterations, {seconds:.0f} s, E = {energy:.6f} eV")
    for k in args.stop_at:
        path = work / f"scf-{k}.npz"
        atoms = frame(work / f"stopped-{k}", args.rattle)
        SCFCheckpoint(path, every_s=1e9,
                      should_stop=lambda it, s, k=k: "stop" if it == k else None).attach(atoms.calc)
        try:
            atoms.get_forces()
            print(f"stop at {k}: the SCF converged before it")
            continue
        except Interrupted:
            pass
        size_mb = path.stat().st_size / 1e6
        if args.fresh_mixer:
            with np.load(path, allow_pickle=False) as data:
                kept = {key: data[key] for key in data.files
                        if not key.startswith(MEMORY_PREFIXES)}
            np.savez(path, **kept)
        atoms = frame(work / f"resumed-{k}", args.rattle)
        print(SCFCheckpoint(path).resume(atoms.calc, atoms), f"({size_mb:.1f} MB)")
        e, f, n, seconds = single_point(atoms)
        print(f"stopped after {k}, resumed: {n} more iterations ({k + n} in all against "
              f"{n_full}), {seconds:.0f} s; dE {e - energy:+.1e} eV, max |dF| "
              f"{np.abs(f - forces).max():.3f} eV/Å")


if __name__ == "__main__":
    main()
