"""SCF iterations and seconds per MD step at 4000 K: GPAW's own defaults against meltquench's.

    python benchmarks/bench_gpaw_scf.py            # 40-atom V2O3 cell, half fixed, 6 MD steps
    python benchmarks/bench_gpaw_scf.py --quick    # 20-atom cell, 4 MD steps
    python benchmarks/bench_gpaw_scf.py --basis dzp --steps 8 --only ours
    python benchmarks/bench_gpaw_scf.py --drift    # NVE drift of the conserved quantity, 3 sets
    python benchmarks/bench_gpaw_scf.py --drift --from-log out.txt   # table of a printed run

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

``--drift``: the drift of the conserved quantity in NVE (issue 13). From the same 4000 K state
(the cell above, crystal half fixed), velocity Verlet (meltquench's, the engine's ``nve``
dynamics, ``--dt`` 2 fs, ``--steps`` 8 by default) with three settings sets, each built as
``meltquench run`` builds its calculator (``make_calculator``: GPAW plus D3(BJ) through ASE's
SumCalculator, the smearing the driver gives a 4000 K step, kept fixed during the run):
"meltquench" (the engine's GPAW settings), "tight SCF" (the same with energy 1e-7 eV and
density 1e-6 per electron and forces converged to 1e-3 eV/Å, maxiter 1000) and "GPAW defaults"
(as above: GPAW's own mixer, Fermi-Dirac 0.1 eV, criteria and maxiter). The conserved quantity
is the engine's, F_free + E_kin (E_kin of the mobile atoms). Printed per set: its drift in meV
per mobile atom per ps (slope of a least-squares line over the run) and its largest excursion
from the start (meV per mobile atom), the same for E + E_kin (the energy extrapolated to zero
smearing instead of the free energy, for contrast), median and max SCF iterations per step
(the first, from-scratch SCF left out), and the RMS and max force error (eV/Å, mobile atoms)
at the last step against the same geometry converged to the tight criteria (the same
calculator continued, so at the set's own smearing: forces on other frames would need a fresh
tight SCF each, and the tight run's own forces are at other positions once the trajectories
part). Column "vs tight": the drift of the set's conserved quantity minus the tight run's,
step by step; all three start from the same state, so while the trajectories stay close this
cancels the integrator's share and leaves the SCF's. ``--from-log`` rebuilds the table from
a run's printed output (its per-step lines), also of a run that was cut short.
"""
import argparse
import json
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from ase import units
from ase.md.bussi import Bussi
from ase.md.velocitydistribution import thermalize_momenta

from meltquench.calculators import (CalculatorSettings, GPAWSettings, PairPotential,
                                    inner_calculators, make_calculator, make_gpaw,
                                    scf_iterations, set_electronic_temperature,
                                    smearing_width_of)
from meltquench.dynamics import make_dynamics
from meltquench.structures import split_regions, v2o3_rhombohedral

T_MELT = 4000.0  # K
TIGHT = {"density": 1e-6, "energy": 1e-7, "eigenstates": 1e-10}
#: The tight-SCF reference's criteria in ``--drift``: TIGHT and forces that change by less than
#: 1e-3 eV/Å between two iterations (GPAW checks them once the others are met).
TIGHT_MD = {**TIGHT, "forces": 1e-3}


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
    ``calc`` may be a sum of calculators (GPAW plus D3): its GPAW is continued.
    """
    from gpaw.new.scf import create_convergence_criteria
    gpaw = next(c for c in inner_calculators(calc) if hasattr(c, "dft"))
    loop = gpaw.dft.scf_loop
    loop.convergence = create_convergence_criteria(TIGHT)
    loop.maxiter = 1000
    gpaw.dft.results.clear()  # make GPAW iterate again at the same positions
    calc.results.clear()  # and a sum of calculators ask it again
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


def drift_settings(ours):
    """The three settings sets of ``--drift``: {key: (label, GPAWSettings)}."""
    return {"ours": ("meltquench", ours),
            "tight": ("tight SCF", replace(ours, convergence=dict(TIGHT_MD), maxiter=1000)),
            "gpaw": ("GPAW defaults", gpaw_defaults(ours))}


def gpaw_defaults(ours):
    """GPAW's own mixer, smearing, criteria and maxiter; the rest as ``ours``."""
    return replace(ours, mixer=None, occupations=None, electronic_temperature="fixed",
                   convergence={}, maxiter=333, extrapolation=0)


def drift_rates(t_fs, energy, n_mobile):
    """(slope in meV per mobile atom per ps of a least-squares line, largest excursion from
    the first value in meV per mobile atom) of ``energy`` (eV) against ``t_fs``."""
    energy = np.asarray(energy, float)
    slope = np.polyfit(np.asarray(t_fs, float), energy, 1)[0]  # eV per fs
    return (float(slope * 1e6 / n_mobile),
            float(np.abs(energy - energy[0]).max() * 1e3 / n_mobile))


def run_nve(label, gpaw, start, steps, dt_fs, directory):
    """NVE (the engine's velocity Verlet) from ``start`` with GPAW ``gpaw`` plus D3, built by
    ``make_calculator`` and at the smearing the driver gives a step at T_MELT."""
    settings = CalculatorSettings.from_dict({"name": "gpaw", "gpaw": gpaw})
    atoms = start.copy()
    atoms.set_momenta(start.get_momenta())
    atoms.calc = calc = make_calculator(settings, directory=directory)
    set_electronic_temperature(calc, settings, T_MELT)
    dyn = make_dynamics("nve", atoms, dt_fs, T_MELT)
    mobile = atoms.get_tags() == 2
    rows, clock, failure = [], [time.perf_counter()], None

    def record():
        now = time.perf_counter()
        rows.append({"t_fs": dyn.nsteps * dt_fs, "E": atoms.get_potential_energy(),
                     "F": dyn.get_free_energy(), "E_kin": atoms.get_kinetic_energy(),
                     "conserved": dyn.get_conserved_energy(), "scf": scf_iterations(calc),
                     "T": mobile_temperature(atoms), "seconds": round(now - clock[0], 1)})
        clock[0] = now
        print(f"  {label} step {dyn.nsteps}: " + " ".join(
            f"{k} {v:.6f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
            flush=True)

    dyn.attach(record, interval=1)
    try:
        dyn.run(steps)
    except Exception as exc:  # an SCF failure ends this set's run; the rows so far count
        failure = f"{type(exc).__name__} at step {dyn.nsteps + 1}"
    result = summarise({"label": label, "width_eV": smearing_width_of(calc),
                        "failure": failure, "rows": rows}, int(mobile.sum()))
    if "drift" not in result:
        return result
    if failure is None:
        forces = atoms.get_forces().copy()
        reference, extra = tight_forces(calc, atoms)
        error = np.linalg.norm(forces - reference, axis=1)[mobile]
        result.update(force_error_rms=float(np.sqrt((error**2).mean())),
                      force_error_max=float(error.max()), tight_extra_iterations=extra)
    return result


def summarise(result, n_mobile):
    """Add the figures of ``result["rows"]`` (one per MD step, step 0 first) to ``result``:
    drifts and excursions (meV per mobile atom), SCF iterations (the first, from-scratch
    SCF apart), seconds per step, temperature range. Returns ``result``."""
    rows = result["rows"]
    if len(rows) < 3:
        return result
    t = [r["t_fs"] for r in rows]
    its = [r["scf"] for r in rows[1:]]
    result["drift"], result["excursion"] = drift_rates(
        t, [r["conserved"] for r in rows], n_mobile)
    result["drift_E"], result["excursion_E"] = drift_rates(
        t, [r["E"] + r["E_kin"] for r in rows], n_mobile)
    result["F_range_meV_per_atom"] = float(np.ptp([r["F"] for r in rows]) * 1e3 / n_mobile)
    result.update(first_scf=rows[0]["scf"], median=float(np.median(its)), max=int(max(its)),
                  seconds_per_step=float(np.median([r["seconds"] for r in rows[1:]])),
                  T_range=[round(min(r["T"] for r in rows)), round(max(r["T"] for r in rows))])
    return result


def results_from_log(text, n_mobile):
    """The ``--drift`` results rebuilt from a run's printed output (its per-step lines and the
    JSON line of every set that finished): a run cut short keeps the steps it printed."""
    results = {}
    for line in text.splitlines():
        step = re.match(r"^  (.+) step (\d+): (.*)$", line)
        if step:
            words = step.group(3).split()
            row = {k: int(v) if k == "scf" else float(v) for k, v in zip(words[::2], words[1::2])}
            results.setdefault(step.group(1), {"label": step.group(1), "rows": []})
            results[step.group(1)]["rows"].append(row)
        elif line.startswith("{"):
            done = json.loads(line)
            results[done["label"]].update({k: v for k, v in done.items()
                                           if k in ("width_eV", "failure", "force_error_rms",
                                                    "force_error_max", "tight_extra_iterations")})
    for r in results.values():
        r.setdefault("width_eV", float("nan"))
        r.setdefault("failure", f"output ends after step {len(r['rows']) - 1}")
        summarise(r, n_mobile)
    return list(results.values())


def drift_table(results, n_atoms, n_mobile, steps, dt_fs):
    """The ``--drift`` table (text)."""
    lines = [f"\nNVE drift, {n_atoms} atoms ({n_mobile} mobile), {steps} steps of {dt_fs:g} fs; "
             "energies in meV per mobile atom (drift: per ps, least-squares slope)",
             f"{'settings':14s} {'width eV':>8s} {'drift':>8s} {'max exc':>8s} {'vs tight':>8s} "
             f"{'E drift':>8s} {'first SCF':>9s} {'median':>6s} {'max':>4s} {'s/step':>7s} "
             f"{'|dF| rms':>8s} {'max eV/Å':>8s} {'T (K)':>11s}"]
    for r in results:
        if "drift" not in r:
            lines.append(f"{r['label']:14s} {r['failure']}")
            continue
        width = f"{r['width_eV']:8.3f}"
        rms, fmax = r.get("force_error_rms"), r.get("force_error_max")
        lines.append(
            f"{r['label']:14s} {width} {r['drift']:+8.2f} {r['excursion']:8.2f} "
            + (f"{r['drift_vs_tight']:+8.2f} " if "drift_vs_tight" in r else f"{'-':>8s} ")
            + f"{r['drift_E']:+8.1f} {r['first_scf']:9d} {r['median']:6.1f} {r['max']:4d} "
            f"{r['seconds_per_step']:7.1f} "
            + (f"{rms:8.4f} {fmax:8.4f}" if rms is not None else f"{'-':>8s} {'-':>8s}")
            + f" {r['T_range'][0]:5d}-{r['T_range'][1]:5d}"
            + (f"  ({r['failure']})" if r["failure"] else ""))
    return "\n".join(lines)


def against_tight(results, n_mobile):
    """Add to each result the drift and largest excursion (meV per mobile atom, per ps) of its
    conserved quantity minus the tight-SCF run's, step by step: all sets start from the same
    state, so while their trajectories stay close this removes what they share (velocity
    Verlet's error) and leaves what the SCF adds. For GPAW's defaults, whose smearing differs,
    it also holds the difference between two Hamiltonians."""
    tight = next((r for r in results if r["label"] == "tight SCF" and "drift" in r), None)
    if tight is None:
        return
    for r in results:
        if r is tight or "drift" not in r:
            continue
        n = min(len(r["rows"]), len(tight["rows"]))
        diff = [a["conserved"] - b["conserved"] for a, b in zip(r["rows"][:n], tight["rows"])]
        r["drift_vs_tight"], r["excursion_vs_tight"] = drift_rates(
            [row["t_fs"] for row in r["rows"][:n]], diff, n_mobile)


def report(gpaw, ours, summaries, results, json_path):
    """The ratio GPAW defaults / meltquench (when both ran), the ``summary:`` lines that
    benchmarks/run_all.py collects, and ``results`` written to ``json_path`` (if given)."""
    if gpaw and ours and ours.get("median"):
        print(f"ratio GPAW defaults / meltquench: SCF iterations "
              f"{gpaw['median'] / ours['median']:.2f}, seconds per step "
              f"{gpaw['seconds_per_step'] / ours['seconds_per_step']:.2f}")
    for line in summaries:
        print("summary: " + line)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(results, fh, indent=1)


def drift_main(args, start, ours):
    """``--drift``: NVE with the three settings sets from ``start``."""
    steps = args.steps or 8
    n_mobile = int((start.get_tags() == 2).sum())
    sets = drift_settings(ours)
    keys = [args.only] if args.only else ["ours", "tight", "gpaw"]
    print(f"{len(start)} atoms ({n_mobile} mobile) at {mobile_temperature(start):.0f} K, NVE, "
          f"{steps} steps of {args.dt:g} fs, basis {args.basis}, h {args.h} Å, D3(BJ)")
    results = []
    for key in keys:
        label, gpaw = sets[key]
        result = run_nve(label, gpaw, start, steps, args.dt, Path(f"bench_gpaw_drift_{key}"))
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}), flush=True)
    drift_report(args, results, len(start), n_mobile)
    return results


def drift_report(args, results, n_atoms, n_mobile):
    """The ``--drift`` table, ratio and summary lines of ``results`` (and the JSON)."""
    steps = max(len(r["rows"]) for r in results) - 1
    against_tight(results, n_mobile)
    print(drift_table(results, n_atoms, n_mobile, steps, args.dt))
    by_label = {r["label"]: r for r in results}
    summaries = [
        f"{r['label']} NVE, {n_atoms} atoms at 4000 K: drift {r['drift']:+.1f} meV/atom/ps, "
        f"median {r['median']:.0f} SCF iterations per step (goal |drift| <= 10, median <= 6) "
        + ("yes" if abs(r["drift"]) <= 10 and r["median"] <= 6 else "no")
        for r in results if "drift" in r]
    report(by_label.get("GPAW defaults"), by_label.get("meltquench"), summaries, results,
           args.json)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20-atom cell, 4 steps")
    parser.add_argument("--steps", type=int, default=None, help="MD steps after the first")
    parser.add_argument("--basis", default="sz(dzp)")
    parser.add_argument("--h", type=float, default=0.25, help="grid spacing (Å)")
    parser.add_argument("--only", choices=["gpaw", "ours", "tight"], default=None,
                        help="one settings set ('tight': with --drift only)")
    parser.add_argument("--drift", action="store_true",
                        help="NVE drift of the conserved quantity: meltquench, tight SCF and "
                             "GPAW defaults (default 8 steps)")
    parser.add_argument("--dt", type=float, default=2.0, help="--drift: time step (fs)")
    parser.add_argument("--from-log", default=None,
                        help="--drift: the table of a run from its printed output (a file), "
                             "not a new run")
    parser.add_argument("--ours", default="{}",
                        help="JSON overriding meltquench's gpaw settings, e.g. '{\"extrapolation\": 0}'")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    nz = 2 if args.quick else 4
    if args.drift and args.from_log:
        cell = v2o3_rhombohedral((1, 1, nz))
        split_regions(cell)
        n_mobile = int((cell.get_tags() == 2).sum())
        return drift_report(args, results_from_log(Path(args.from_log).read_text(), n_mobile),
                            len(cell), n_mobile)
    start = hot_cell(nz)
    common = {"basis": args.basis, "h": args.h}
    ours = GPAWSettings.from_dict({**common, **json.loads(args.ours)})
    if args.drift:
        return drift_main(args, start, ours)
    if args.only == "tight":
        parser.error("--only tight goes with --drift")
    steps = args.steps or (4 if args.quick else 6)
    sets = [("GPAW defaults", gpaw_defaults(ours)), ("meltquench", ours)]
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
    summaries = [
        f"{r['label']}, {len(start)} atoms at 4000 K: median {r['median']:.0f} SCF iterations "
        f"per step, force error {r['force_error_max']:.3f} eV/Å (goal median <= 15 and <= 0.05 "
        "eV/Å) " + ("yes" if r["median"] <= 15 and r["force_error_max"] <= 0.05 else "no")
        for r in results]
    report(*(results if len(results) == 2 else (None, None)), summaries, results, args.json)


if __name__ == "__main__":
    main()
