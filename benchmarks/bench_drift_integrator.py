"""The 2-fs integrator's share of an NVE drift, without an SCF: the engine's velocity Verlet
on ``bench_gpaw_scf.py``'s 20-atom hot cell (same start), with a smooth potential (CHGNet +
D3 by default) at several time steps. Prints the drift (meV per mobile atom per ps, slope of a
least-squares line) and the largest excursion of the conserved quantity, as ``--drift`` does
for GPAW, and C(t) - C(0) every 10 fs.

    OMP_NUM_THREADS=1 python benchmarks/bench_drift_integrator.py            # ~2 min
    python benchmarks/bench_drift_integrator.py --calculator pair --fs 500

Results: benchmarks/README.md, "Which part owns the drift".
"""
import argparse
import time

import numpy as np

from bench_gpaw_scf import drift_rates, hot_cell, mobile_temperature
from meltquench.calculators import CalculatorSettings, make_calculator
from meltquench.dynamics import make_dynamics


def nve_conserved(start, calculator, dt_fs, total_fs, directory):
    """(times fs, conserved quantity eV, mobile temperatures K) of NVE from ``start``."""
    atoms = start.copy()
    atoms.set_momenta(start.get_momenta())
    atoms.calc = make_calculator(CalculatorSettings.from_dict({"name": calculator}),
                                 directory=directory)
    dyn = make_dynamics("nve", atoms, dt_fs, 4000.0)
    t, c, temperature = [], [], []

    def record():
        t.append(dyn.nsteps * dt_fs)
        c.append(dyn.get_conserved_energy())
        temperature.append(mobile_temperature(atoms))

    dyn.attach(record, interval=1)
    dyn.run(int(round(total_fs / dt_fs)))
    return np.array(t), np.array(c), np.array(temperature)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calculator", default="chgnet", help="a smooth potential: chgnet, "
                   "sevennet, pair (default chgnet, with D3 as the engine adds it)")
    p.add_argument("--fs", type=float, default=162.0, help="window (fs)")
    p.add_argument("--dt", type=float, nargs="+", default=[2.0, 1.0, 0.5], help="time steps (fs)")
    p.add_argument("--work", default="/tmp/bench_drift_integrator")
    args = p.parse_args(argv)
    start = hot_cell(2)
    n_mobile = int((start.get_tags() == 2).sum())
    print(f"{len(start)} atoms ({n_mobile} mobile) at 4000 K, NVE, {args.fs:g} fs, "
          f"{args.calculator}")
    for dt in args.dt:
        clock = time.perf_counter()
        t, c, temperature = nve_conserved(start, args.calculator, dt, args.fs, args.work)
        drift, excursion = drift_rates(t, c, n_mobile)
        every = max(1, int(round(10 / dt)))
        print(f"dt {dt:g} fs: drift {drift:+.1f} meV/atom/ps, max excursion {excursion:.1f} "
              f"meV/atom, T {temperature.min():.0f}-{temperature.max():.0f} K, "
              f"{time.perf_counter() - clock:.0f} s")
        print("  C - C(0) every 10 fs (meV/atom): "
              + " ".join(f"{v:.1f}" for v in ((c - c[0]) * 1e3 / n_mobile)[::every]))


if __name__ == "__main__":
    main()
