"""SCF iterations and seconds per MD step at 4000 K: GPAW's own defaults against meltquench's.

    python benchmarks/bench_gpaw_scf.py            # 40-atom V2O3 cell, half fixed, 6 MD steps
    python benchmarks/bench_gpaw_scf.py --quick    # 20-atom cell, 4 MD steps
    python benchmarks/bench_gpaw_scf.py --basis dzp --steps 8 --only ours

The cell (rhombohedral V2O3 x (1, 1, 4), or x (1, 1, 2) with --quick) is split along c; the
crystal half is fixed. The melt half is first brought to 4000 K with meltquench's fast pair
potential (300 Bussi steps of 2 fs: a disordered, hot configuration for free), then its
velocities are scaled to exactly 4000 K. From that same state each settings set runs NVT MD
(Bussi, 20 fs time constant, same random seed) with GPAW (LCAO, PBE+U 3.25 eV on V d, Γ point,
symmetry off), one calculator reused over the steps as the driver does. Printed per settings
set: SCF iterations of the first (from scratch) calculation, then median and max SCF iterations
and median seconds per MD step, and the largest force error (eV/Å) at the last step against the
same geometry converged tightly (the same calculator continued to a density residual of 1e-6
per electron).

"GPAW defaults" means GPAW 26's own mixer (MSR1, 10 densities, forgotten at every step), occupations (Fermi-Dirac 0.1 eV), convergence
criteria and maxiter; everything else (basis, grid, U, symmetry off) is the same in both runs.
Timings on a shared machine are noisy: compare the two rows of one run.
"""
import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from ase import units
from ase.md.bussi import Bussi
from ase.md.velocitydistribution import thermalize_momenta

from meltquench.calculators import GPAWSettings, PairPotential, make_gpaw, scf_iterations
from meltquench.structures import split_regions, v2o3_rhombohedral

T_MELT = 4000.0  # K
TIGHT = {"density": 1e-6, "energy": 1e-7, "eigenstates": 1e-10}


def hot_cell(nz, seed=7):
    """Half-fixed V2O3 cell whose melt half is at 4000 K (pair-potential pre-equilibration)."""
    atoms = v2o3_rhombohedral((1, 1, nz))
    split_regions(atoms)
    mobile = atoms.get_tags() == 2
    atoms.calc = PairPotential()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, T_MELT, rng=rng)
    p = atoms.get_momenta()
    p[~mobile] = 0.0
    atoms.set_momenta(p)
    Bussi(atoms, 2 * units.fs, temperature_K=T_MELT, taut=20 * units.fs, rng=rng).run(300)
    atoms.set_momenta(atoms.get_momenta() * np.sqrt(T_MELT / mobile_temperature(atoms)))
    atoms.calc = None
    return atoms


def mobile_temperature(atoms):
    """Kinetic temperature (K) of the melt atoms (3 degrees of freedom each)."""
    mobile = atoms.get_tags() == 2
    p, m = atoms.get_momenta()[mobile], atoms.get_masses()[mobile]
    return float((p**2 / m[:, None]).sum() / (3 * mobile.sum() * units.kB))


def tight_forces(calc, atoms):
    """Forces (eV/Å) of the last geometry, the SCF continued to the TIGHT criteria.

    Continues the converged calculation of ``calc`` (GPAW 26's new code: its SCF loop takes
    new criteria), so the reference costs a few dozen iterations, not a fresh start.
    """
    from gpaw.new.scf import create_convergence_criteria
    loop = calc.dft.scf_loop
    loop.convergence = create_convergence_criteria(TIGHT)
    loop.maxiter = 1000
    calc.dft.results.clear()  # make GPAW iterate again at the same positions
    forces = atoms.get_forces()  # FixAtoms applied, as for the MD forces
    return forces, scf_iterations(calc)


def run(label, settings, start, steps, directory):
    """MD steps with GPAW made by meltquench (text output in ``directory/gpaw.txt``)."""
    atoms = start.copy()
    atoms.set_momenta(start.get_momenta())
    atoms.calc = calc = make_gpaw(settings, directory=directory)
    iterations, seconds = [], []
    clock = [time.perf_counter()]

    def record():
        now = time.perf_counter()
        iterations.append(scf_iterations(calc))
        seconds.append(now - clock[0])
        clock[0] = now

    # Bussi (CSVR) at 4000 K with a short time constant: DFT forces on the pair-potential melt
    # are larger than the pair forces, and the thermostat keeps the melt near 4000 K as the
    # driver does. Same seed for every settings set.
    md = Bussi(atoms, 2 * units.fs, temperature_K=T_MELT, taut=20 * units.fs,
               rng=np.random.default_rng(11))
    md.attach(record, interval=1)
    md.run(steps)
    forces = atoms.get_forces().copy()
    reference, tight_iterations = tight_forces(calc, atoms)
    error = np.linalg.norm(forces - reference, axis=1)
    its, secs = iterations[1:], seconds[1:]
    return {"label": label, "first_scf": iterations[0], "first_seconds": round(seconds[0], 1),
            "iterations": its, "median": float(np.median(its)), "max": int(max(its)),
            "seconds_per_step": round(float(np.median(secs)), 2),
            "force_error_max": round(float(error.max()), 4),
            "tight_extra_iterations": tight_iterations,
            "extrapolated_steps": getattr(getattr(calc, "meltquench_extrapolation", None),
                                          "extrapolated", 0),
            "T_end": round(mobile_temperature(atoms))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20-atom cell, 4 steps")
    parser.add_argument("--steps", type=int, default=None, help="MD steps after the first")
    parser.add_argument("--basis", default="sz(dzp)")
    parser.add_argument("--h", type=float, default=0.25, help="grid spacing (Å)")
    parser.add_argument("--only", choices=["gpaw", "ours"], default=None)
    parser.add_argument("--ours", default="{}",
                        help="JSON overriding meltquench's gpaw settings, e.g. '{\"extrapolation\": 0}'")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    nz = 2 if args.quick else 4
    steps = args.steps or (4 if args.quick else 6)
    start = hot_cell(nz)
    common = {"basis": args.basis, "h": args.h}
    ours = GPAWSettings.from_dict({**common, **json.loads(args.ours)})
    gpaw_defaults = replace(ours, mixer=None, occupations=None, convergence={}, maxiter=333,
                            extrapolation=0)
    sets = [("GPAW defaults", gpaw_defaults), ("meltquench", ours)]
    if args.only:
        sets = [sets[0]] if args.only == "gpaw" else [sets[1]]
    print(f"{len(start)} atoms ({int((start.get_tags() == 2).sum())} mobile) at "
          f"{mobile_temperature(start):.0f} K, {steps} MD steps of 2 fs, basis {args.basis}, "
          f"h {args.h} Å")
    results = []
    for label, settings in sets:
        directory = Path(f"bench_gpaw_{label.split()[0].lower()}")
        result = run(label, settings, start, steps, directory)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(f"\n{'settings':16s} {'first SCF':>9s} {'median':>7s} {'max':>5s} {'s/step':>8s} "
          f"{'|dF| max eV/Å':>14s}")
    for r in results:
        print(f"{r['label']:16s} {r['first_scf']:9d} {r['median']:7.1f} {r['max']:5d} "
              f"{r['seconds_per_step']:8.2f} {r['force_error_max']:14.4f}")
    if len(results) == 2:
        a, b = results
        print(f"ratio GPAW defaults / meltquench: SCF iterations {a['median'] / b['median']:.2f}, "
              f"seconds per step {a['seconds_per_step'] / b['seconds_per_step']:.2f}")
    for r in results:  # the lines benchmarks/run_all.py collects
        ok = r["median"] <= 15 and r["force_error_max"] <= 0.05
        print(f"summary: {r['label']}, {len(start)} atoms at 4000 K: median {r['median']:.0f} SCF "
              f"iterations per step, force error {r['force_error_max']:.3f} eV/Å (goal median "
              f"<= 15 and <= 0.05 eV/Å) {'yes' if ok else 'no'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
