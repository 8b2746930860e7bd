"""GPAW's direct minimisation (ETDM-LCAO) against the engine's SCF on the ML finish's physics.

The ML presets' GPAW finish (PBE+U 3.25 eV, LCAO sz(dzp), h 0.25 Å, spin-polarised from a
ferromagnetic start) is a density-mixing SCF (MSR1, Fermi-Dirac 0.05 eV) whose +U d
occupations creep for tens of iterations after the density error reaches 1e-3 (issue 13's
"+U stall", README). GPAW's exponential-transformation direct minimisation in LCAO mode
(``eigensolver='etdm-lcao'``, legacy GPAW; integer occupations, no mixing; Levi, Ivanov and
Jónsson, J. Chem. Theory Comput. 16, 6968 (2020)) minimises the energy over the orbitals
instead of mixing densities, the cure the README names. This runs both on one structure
(D3 left out: the same additive term for both) and reports SCF iterations, time, energy,
magnetic moment and the force difference:

    OMP_NUM_THREADS=1 python benchmarks/bench_gpaw_etdm.py RUN/final.traj -o etdm

Writes ``result.json`` into the output folder; energies in eV, forces in eV/Å.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase.io import read

from meltquench import calculators
from meltquench.calculators.gpaw import gpaw_parameters
from meltquench.config import load_config


def etdm_calculator(settings, txt):
    """Legacy GPAW with ETDM-LCAO for the GPAW ``settings`` (CalculatorSettings): its mode,
    basis, grid, functional and U; integer occupations (fixed-uniform), no density mixing."""
    from gpaw import GPAW
    kw = gpaw_parameters(settings.gpaw)
    for key in ("mixer", "occupations", "convergence", "maxiter", "parallel"):
        kw.pop(key, None)
    kw.update(eigensolver="etdm-lcao", occupations={"name": "fixed-uniform"},
              mixer={"backend": "no-mixing"}, nbands="nao", maxiter=300,
              spinpol=bool(settings.spinpol), legacy_gpaw=True, txt=str(txt))
    return GPAW(**kw)


def single_point(atoms, calc):
    """(E, forces, seconds, SCF iterations, magnetic moment) of ``calc`` on ``atoms``."""
    t0 = time.perf_counter()
    atoms.calc = calc
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces(apply_constraint=False)
    seconds = time.perf_counter() - t0
    try:
        iterations = calc.get_number_of_iterations()
    except (AttributeError, NotImplementedError):
        iterations = calculators.scf_iterations(calc)
    return energy, forces, seconds, iterations, float(calc.get_magnetic_moment())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("structure", help="a structure file (e.g. a run's final.traj)")
    p.add_argument("--preset", default="ml-demo", help="whose finish settings (default ml-demo)")
    p.add_argument("--only", choices=("etdm", "engine"), help="run one of the two")
    p.add_argument("-o", "--out", type=Path, default=Path("etdm"))
    args = p.parse_args(argv)
    settings = load_config(preset=args.preset,
                           overrides=["finish.calculator.dispersion=null"]).finish.calculator
    if settings is None or settings.name != "gpaw":
        raise SystemExit(f"preset {args.preset!r} has no GPAW finish")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {}
    for which in [args.only] if args.only else ["engine", "etdm"]:
        atoms = read(args.structure)
        atoms.constraints = []
        calculators.prepare_atoms(settings, atoms)
        if which == "engine":
            calc = calculators.make_calculator(settings, directory=args.out / which)
            calculators.set_electronic_temperature(calc, settings, 300.0)
        else:
            calc = etdm_calculator(settings, args.out / "etdm.txt")
        energy, forces, seconds, iterations, magmom = single_point(atoms, calc)
        result[which] = {"energy_eV": energy, "seconds": seconds, "iterations": iterations,
                         "magmom": magmom, "forces": forces.tolist()}
        print(f"{which}: E {energy:.4f} eV, {iterations} SCF iterations, {seconds:.0f} s, "
              f"{magmom:.2f} μB", flush=True)
        (args.out / "result.json").write_text(json.dumps(result))
    if len(result) == 2:
        diff = np.abs(np.array(result["etdm"]["forces"]) - np.array(result["engine"]["forces"]))
        print(f"ETDM less engine: E {result['etdm']['energy_eV'] - result['engine']['energy_eV']:+.4f}"
              f" eV; forces MAE {diff.mean():.4f}, max {diff.max():.4f} eV/Å; iterations "
              f"{result['etdm']['iterations']} against {result['engine']['iterations']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
