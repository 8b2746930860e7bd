"""The finish's DFT single point on a run's final structure, at a ladder of SCF criteria.

    mpirun -np 2 python benchmarks/bench_finish.py RUN_DIR --preset ml-demo
    mpirun -np 2 python benchmarks/bench_finish.py RUN_DIR --preset ml-demo --criteria 1e-3,3e-4,1e-4
    python benchmarks/bench_finish.py RUN_DIR --finish '{name: gpaw, gpaw: {h: 0.2}}' -o OUT

What the ML presets' GPAW finish costs on a frame, and what a looser SCF would buy. The finish
calculator is the ``--preset``'s ``finish.calculator`` (else ``--finish``, a YAML mapping; else
the run's own ``finish.calculator``), with ``--set KEY=VALUE`` overrides of its keys
(``gpaw.scf_stagnation=0``); its electrons are at the programme's last temperature, as the
engine's finish has them. The single point of ``RUN_DIR/final.traj`` runs to each density
criterion of ``--criteria`` in turn (electrons / valence electron, GPAW's ``density``), in one
SCF: at each the energy, forces, SCF iterations and seconds are recorded, then the criterion
is tightened and GPAW goes on from its density (its mixer starts its history again). Printed
and written to ``OUT/result.json`` (default ``RUN_DIR/bench-finish``): per criterion the energy
and force components of the mobile atoms against the last (tightest) one (all forces in
``forces.npz``, keyed by criterion), and the run's own
calculator (``calculator`` of ``RUN_DIR/config.yaml``, e.g. CHGNet + D3) against the last, as
the run's spot check computes it (``meltquench.checks.force_errors``).

A single point that does not converge stops the ladder there and says so. Measured results:
``benchmarks/README.md``, "The ML presets' GPAW finish".
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from ase.io import read

from meltquench import calculators
from meltquench.calculators.base import inner_calculators
from meltquench.checks import force_errors, unconstrained_forces
from meltquench.config import deep_merge, load_config, load_yaml, parse_set
from meltquench.structures import fixed_mask


def finish_settings(run_cfg, preset=None, finish=None, overrides=()):
    """The finish calculator's settings as a dict: the preset's, else ``finish`` (YAML text),
    else the run's own; ``overrides`` (``['gpaw.h=0.2', ...]``) merged in."""
    if preset:
        settings = load_config(preset=preset).finish.calculator
    elif finish:
        settings = load_yaml(finish)
    else:
        settings = run_cfg.finish.calculator
    if settings is None:
        raise SystemExit("bench_finish: no finish calculator: give --preset or --finish")
    settings = settings.to_dict() if hasattr(settings, "to_dict") else dict(settings)
    over = parse_set([f"finish.{item}" for item in overrides]).get("finish", {})
    return deep_merge(settings, over)


def gpaw_of(calc):
    """The GPAW calculator inside ``calc`` (a sum with D3 included)."""
    for c in inner_calculators(calc):
        if type(c).__module__.startswith("gpaw"):
            return c
    raise SystemExit("bench_finish: the finish calculator is not GPAW")


def set_density_criterion(gpaw, tol):
    """Make ``tol`` GPAW's density criterion, for the next SCF (before the first: its
    parameters; after: the live loop's), and drop its results so that it iterates on."""
    if gpaw._dft is None:
        gpaw.params.convergence["density"] = tol
    else:
        gpaw.dft.scf_loop.convergence["density"].tol = tol
        gpaw.dft.results.clear()


def ladder(atoms, settings, temperature_K, criteria, out):
    """Energy, forces and SCF cost of ``atoms`` at each density criterion in turn. Returns
    (rows, forces per criterion)."""
    calculators.prepare_atoms(settings, atoms)
    atoms.calc = calculators.make_calculator(settings, directory=out, natoms=len(atoms))
    calculators.set_electronic_temperature(atoms.calc, settings, temperature_K)
    gpaw = gpaw_of(atoms.calc)
    rows, forces = [], []
    for tol in criteria:
        set_density_criterion(gpaw, tol)
        for c in [atoms.calc, *inner_calculators(atoms.calc)]:
            getattr(c, "results", {}).clear()
        start = time.perf_counter()
        try:
            f = atoms.get_forces(apply_constraint=False)
        except Exception as exc:  # the SCF's own errors: report where the ladder stopped
            if not calculators.is_scf_failure(exc):
                raise
            rows.append({"density": tol, "failed": type(exc).__name__})
            break
        rows.append({"density": tol, "energy_eV": float(atoms.get_potential_energy()),
                     "scf_iterations": int(gpaw.dft.scf_loop.niter),
                     "seconds": time.perf_counter() - start,
                     "magmom": float(gpaw.get_magnetic_moment()) if settings.get("spinpol")
                     else 0.0})
        forces.append(np.array(f))
    return rows, forces


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--preset", help="take the finish calculator of this preset")
    p.add_argument("--finish", help="the finish calculator as a YAML mapping")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the finish calculator (gpaw.scf_stagnation=0)")
    p.add_argument("--criteria", default="1e-4",
                   help="density criteria in turn, comma-separated (default 1e-4)")
    p.add_argument("--no-spot-check", action="store_true",
                   help="leave out the run's own calculator")
    p.add_argument("-o", "--out", type=Path)
    args = p.parse_args(argv)
    from mpi4py import MPI
    root = MPI.COMM_WORLD.Get_rank() == 0

    run_cfg = load_config(args.run_dir / "config.yaml")
    settings = finish_settings(run_cfg, args.preset, args.finish, args.set)
    criteria = [float(c) for c in args.criteria.split(",")]
    out = args.out or args.run_dir / "bench-finish"
    atoms = read(args.run_dir / "final.traj", parallel=False)
    mobile = ~fixed_mask(atoms)
    schedule = load_config(preset=args.preset).schedule if args.preset else run_cfg.schedule
    rows, forces = ladder(atoms.copy(), settings, schedule.T_final_K, criteria, out)
    if forces:
        last = forces[-1][mobile]
        for row, f in zip(rows, forces):
            row["forces_vs_last"] = force_errors(f[mobile], last)
            row["energy_vs_last_eV"] = row["energy_eV"] - rows[len(forces) - 1]["energy_eV"]
    result = {"run_dir": str(args.run_dir), "finish": calculators.describe(settings),
              "atoms": len(atoms), "mobile": int(mobile.sum()), "criteria": rows}
    if forces and not args.no_spot_check:
        own = calculators.make_calculator(run_cfg.calculator, directory=out / "own",
                                          natoms=len(atoms))
        result["spot_check"] = {"calculator": calculators.describe(run_cfg.calculator),
                                **force_errors(unconstrained_forces(atoms, own)[mobile],
                                               forces[-1][mobile])}
    if root:
        print(f"{result['finish']} on {args.run_dir / 'final.traj'} ({len(atoms)} atoms, "
              f"{result['mobile']} mobile); forces: mobile components against the last row")
        print(f"{'density':>9} {'SCF it.':>8} {'s':>8} {'E - E_last eV':>14} "
              f"{'MAE':>7} {'RMSE':>7} {'max':>7}")
        for row in rows:
            if "failed" in row:
                print(f"{row['density']:9.0e}  SCF failed: {row['failed']}")
                continue
            e = row["forces_vs_last"]
            print(f"{row['density']:9.0e} {row['scf_iterations']:8d} {row['seconds']:8.1f} "
                  f"{row['energy_vs_last_eV']:14.4f} {e['mae']:7.3f} {e['rmse']:7.3f} "
                  f"{e['max']:7.3f}")
        if "spot_check" in result:
            s = result["spot_check"]
            print(f"spot check, {s['calculator']} against the last row: MAE {s['mae']:.3f}, "
                  f"RMSE {s['rmse']:.3f}, max {s['max']:.3f} eV/Å")
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result, indent=1))
        np.savez(out / "forces.npz", **{f"{row['density']:g}": f
                                        for row, f in zip(rows, forces)})
    return 0 if forces and "failed" not in rows[-1] else 1


if __name__ == "__main__":
    sys.exit(main())
