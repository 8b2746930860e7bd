"""Benchmark: our numba NVT integrators against ASE's, per MD step, in one process.

    python benchmarks/bench_integrators.py           # 100, 1,000, 10,000, 100,000 atoms
    python benchmarks/bench_integrators.py --quick   # 100 and 10,000 atoms, fewer repeats
    python benchmarks/bench_integrators.py --gpaw    # also time one GPAW LCAO MD step (slow)

Workload (issue 3): an fcc copper block of exactly N atoms with Maxwell-Boltzmann momenta and a
near-free force: an ordinary ASE ``Calculator`` that returns zero forces, so every call goes
through ASE's caching machinery as a real calculator would. Each pair of integrators runs
the same number of steps on its own copy; the best of ``--repeats`` runs is kept.

Every call of ``atoms.get_forces`` is timed, and the calculator counts the calls that really
compute (``calculate()``). Columns:

``ASE / ours``
    microseconds per step **excluding the force evaluation**: total step time minus the time of
    the ``get_forces`` calls that computed forces (both integrators compute once per step). What
    is left is the integrator: its arithmetic and its bookkeeping, including ASE's extra
    ``get_forces`` calls answered from the calculator's cache (ASE's MD classes make three
    ``get_forces`` calls per step; ours one).
``ratio``
    ASE / ours (above 1: we are faster).
``arith ASE / ours``
    microseconds per step excluding **every** ``get_forces`` call, cached or not: the pure
    integrator arithmetic and Python overhead.
``total ASE / ours``
    wall time per step, force evaluation included (zero-force calculator).
``mem hot / cold``
    one numba pass that moves positions, momenta and forces once (p += h f; q += h p / m),
    with the arrays in cache (hot) or starting from main memory (cold: caches flushed, as a
    large force call leaves them): the memory-traffic floor of a step. ``x hot`` is ours / hot;
    at 100,000 atoms (9.6 MB of arrays) compare with cold.

Our ``Langevin`` runs as a user gets it by default: its noise from ``meltquench.kernels.rng``
(``noise='fast'``, seeded from the same ``rng``); ASE's from numpy's generator. The line
``noise`` also times one standard-normal number from each source.

The line ``stale-forces check`` times our velocity Verlet with and without the comparison
of the positions with those of the cached forces (one pass over two arrays, made at the start
of every step so that positions changed between steps get fresh forces): its cost at each size.

Numba compile time is measured separately, in fresh subprocesses with an empty numba cache
(cold) and again with the cache they wrote (warm, ``cache=True``). Timings on a shared
machine are noisy: compare the ratios, measured in this one process.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.calculator import Calculator, all_changes  # noqa: E402
from numba import njit  # noqa: E402

from meltquench import dynamics as ours  # noqa: E402
from meltquench.kernels import integrators as kern  # noqa: E402

DT = 2 * units.fs
T = 300.0
SIZES = (100, 1000, 10000, 100000)
QUICK_SIZES = (100, 10000)
# fcc conventional cells (4 atoms) per direction giving exactly N atoms
REPEATS = {100: (5, 5, 1), 1000: (5, 5, 10), 10000: (10, 10, 25), 100000: (25, 25, 40)}


class ZeroForces(Calculator):
    """Near-free forces (zeros) through ASE's Calculator machinery; counts real evaluations."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self):
        super().__init__()
        self.ncalc = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.ncalc += 1
        self.results = {"energy": 0.0, "free_energy": 0.0, "forces": np.zeros((len(atoms), 3))}


def make_atoms(n, seed=1):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(REPEATS[n])
    assert len(atoms) == n
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(atoms.get_masses() * units.kB * T)[:, None]
    atoms.set_momenta(rng.standard_normal((n, 3)) * sigma)
    atoms.calc = ZeroForces()
    return atoms


def ase_integrators():
    from ase.md.bussi import Bussi
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import NoseHooverChainNVT
    from ase.md.nvtberendsen import NVTBerendsen
    from ase.md.verlet import VelocityVerlet
    tau = 100 * units.fs
    return {
        "VelocityVerlet": (lambda a: VelocityVerlet(a, DT),
                           lambda a: ours.VelocityVerlet(a, DT)),
        "NoseHooverChainNVT": (lambda a: NoseHooverChainNVT(a, DT, T, tau),
                               lambda a: ours.NoseHooverChainNVT(a, DT, T, tau)),
        "Bussi": (lambda a: Bussi(a, DT, T, tau, rng=np.random.default_rng(2)),
                  lambda a: ours.Bussi(a, DT, T, tau, rng=np.random.default_rng(2))),
        "Langevin": (lambda a: Langevin(a, DT, temperature_K=T, friction=1 / tau, fixcm=False,
                                        rng=np.random.default_rng(2)),
                     lambda a: ours.Langevin(a, DT, T, 1 / tau, rng=np.random.default_rng(2))),
        "Berendsen": (lambda a: NVTBerendsen(a, DT, temperature_K=T, taut=tau, fixcm=False),
                      lambda a: ours.Berendsen(a, DT, T, tau)),
    }


def time_dynamics(factory, n, steps, repeats, observer=False):
    """Best-of-repeats (total, excluding force evaluations, excluding all get_forces) in us.

    ``observer``: attach an empty observer called every step (as a logger would be)."""
    atoms = make_atoms(n)
    dyn = factory(atoms)
    if observer:
        dyn.attach(lambda: None, interval=1)
    calc = atoms.calc
    spent = {"all": 0.0, "computing": 0.0}
    get_forces = atoms.get_forces

    def timed_get_forces(*args, **kwargs):
        before = calc.ncalc
        t = time.perf_counter()
        f = get_forces(*args, **kwargs)
        dt = time.perf_counter() - t
        spent["all"] += dt
        if calc.ncalc != before:
            spent["computing"] += dt
        return f

    atoms.get_forces = timed_get_forces  # instance attribute: both integrators call this
    dyn.run(2)
    best = None
    for _ in range(repeats):
        spent["all"] = spent["computing"] = 0.0
        ncalc = calc.ncalc
        t = time.perf_counter()
        dyn.run(steps)
        total = time.perf_counter() - t
        assert calc.ncalc - ncalc == steps, "expected one force evaluation per step"
        row = np.array([total, total - spent["computing"], total - spent["all"]]) / steps * 1e6
        best = row if best is None else np.minimum(best, row)
    return best


@njit(cache=True)
def _move_once(q, p, f, invm, h):
    """p += h f; q += h invm p over the 3 N numbers as flat vectors (vectorised, as ours)."""
    a, b, c, w = q.ravel(), p.ravel(), f.ravel(), invm.ravel()
    for k in range(a.size):
        pk = b[k] + h * c[k]
        b[k] = pk
        a[k] += (h * w[k]) * pk


def time_memory_floor(n, repeats):
    """us for one pass over q, p, f, invm: (hot: data in cache, cold: from main memory, caches
    flushed first, as a large force call leaves them)."""
    rng = np.random.default_rng(0)
    q, p, f = rng.random((n, 3)), rng.random((n, 3)), rng.random((n, 3)) * 1e-9
    invm = np.full((n, 3), 1 / 63.5)
    junk = np.zeros(16 * 1024 * 1024)  # 128 MB, four times the last-level cache
    _move_once(q, p, f, invm, 1e-3)
    hot = cold = np.inf
    for _ in range(max(repeats, 5)):
        t = time.perf_counter()
        _move_once(q, p, f, invm, 1e-3)
        hot = min(hot, (time.perf_counter() - t) * 1e6)
        junk += 1.0
        t = time.perf_counter()
        _move_once(q, p, f, invm, 1e-3)
        cold = min(cold, (time.perf_counter() - t) * 1e6)
    return hot, cold


def time_noise(n=300_000, repeats=5):
    """ns per standard-normal number: numpy's Generator, the same from numba, ours."""
    from meltquench.kernels.integrators import fill_standard_normal
    from meltquench.kernels.rng import seed_state, standard_normal_fill
    out, gen, state = np.empty(n), np.random.default_rng(1), seed_state(1)
    sources = {"numpy": lambda: gen.standard_normal(out=out),
               "numpy from numba": lambda: fill_standard_normal(gen, out),
               "meltquench.kernels.rng": lambda: standard_normal_fill(state, out)}
    best = {}
    for name, draw in sources.items():
        draw()
        best[name] = min(_seconds(draw) for _ in range(repeats)) * 1e9 / n
    return best


def time_check_cost(sizes, repeats):
    """Per size: (us per VelocityVerlet step with, without the stale-forces comparison)."""
    compare = kern.positions_equal
    out = {}
    for n in sizes:
        steps = max(5, int(1e5 / n))
        make = ase_integrators()["VelocityVerlet"][1]
        best = [np.inf, np.inf]
        for _ in range(max(repeats, 3)):  # interleaved: the machine's speed drifts
            for i, check in enumerate((True, False)):
                kern.positions_equal = compare if check else (lambda q, q_ref: True)
                try:
                    best[i] = min(best[i], time_dynamics(make, n, steps, 1)[1])
                finally:
                    kern.positions_equal = compare
        out[n] = tuple(best)
    return out


def _seconds(call):
    t = time.perf_counter()
    call()
    return time.perf_counter() - t


COMPILE_SNIPPET = """
import time, warnings
t0 = time.perf_counter()
import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from meltquench.dynamics import make_dynamics
from ase.constraints import FixAtoms
t1 = time.perf_counter()
for name in ("nve", "nhc", "bussi", "langevin", "berendsen"):
    atoms = bulk("Cu", cubic=True).repeat(2)
    atoms.set_constraint(FixAtoms(indices=[0, 1]))
    atoms.set_momenta(np.random.default_rng(0).normal(size=(len(atoms), 3)))
    atoms.calc = EMT()
    dyn = make_dynamics(name, atoms, 2.0, 300.0, seed=1)
    dyn.run(2)
    dyn.get_conserved_energy()
    dyn.get_state()
print(time.perf_counter() - t1)
"""


def time_compile():
    """(cold, warm) seconds to build and step every scheme in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = []
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET], env=env,
                                  capture_output=True, text=True, check=True)
            out.append(float(proc.stdout.split()[-1]))
    return out


def time_gpaw_step(txt=None):
    """Seconds of one GPAW LCAO (dzp, PBE, Gamma) MD step on the 10-atom rhombohedral V2O3
    cell (the smallest model: any larger one costs more, our integrator the same)."""
    from gpaw import GPAW
    from meltquench.structures import v2o3_rhombohedral
    atoms = v2o3_rhombohedral()
    atoms.calc = GPAW(mode="lcao", basis="dzp", xc="PBE", kpts={"gamma": True},
                      symmetry="off", txt=txt)
    rng = np.random.default_rng(0)
    atoms.set_momenta(rng.standard_normal((len(atoms), 3))
                      * np.sqrt(atoms.get_masses() * units.kB * T)[:, None])
    dyn = ours.Bussi(atoms, DT, T, 100 * units.fs, seed=1)
    dyn.run(1)  # first SCF from scratch
    t = time.perf_counter()
    dyn.run(2)
    return (time.perf_counter() - t) / 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 10,000 atoms, 2 repeats")
    parser.add_argument("--sizes", type=int, nargs="+", choices=SIZES, help="atom counts")
    parser.add_argument("--repeats", type=int, default=None, help="runs per case (best kept)")
    parser.add_argument("--gpaw", action="store_true", help="also time a GPAW LCAO step")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile timing")
    parser.add_argument("--observer", action="store_true",
                        help="attach an empty per-step observer to both integrators")
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    repeats = args.repeats or (2 if args.quick else 5)
    warnings.simplefilter("ignore")  # ASE's FutureWarnings about temperature units etc.

    print(f"# integrator per MD step, us: ASE {__import__('ase').__version__} vs meltquench "
          f"(numba), zero-force ASE Calculator, 2 fs, {T:.0f} K; best of {repeats}")
    header = (f"{'atoms':>7} {'scheme':<19} {'ASE':>10} {'ours':>9} {'ratio':>7} | "
              f"{'arith ASE':>10} {'ours':>8} {'ratio':>6} | {'total ASE':>10} {'ours':>9} | "
              f"{'mem hot':>8} {'cold':>7} {'x hot':>6}")
    print(header)
    print("-" * len(header))
    rows = []
    for n in sizes:
        steps = max(5, int(1e5 / n))
        hot, cold = time_memory_floor(n, repeats)
        for scheme, (make_ase, make_ours) in ase_integrators().items():
            a = time_dynamics(make_ase, n, steps, repeats, args.observer)
            o = time_dynamics(make_ours, n, steps, repeats, args.observer)
            rows.append((n, scheme, a, o, hot, cold))
            print(f"{n:>7} {scheme:<19} {a[1]:>10.1f} {o[1]:>9.1f} {a[1] / o[1]:>7.1f} | "
                  f"{a[2]:>10.1f} {o[2]:>8.1f} {a[2] / o[2]:>6.1f} | {a[0]:>10.1f} {o[0]:>9.1f} | "
                  f"{hot:>8.1f} {cold:>7.1f} {o[1] / hot:>6.1f}", flush=True)
    check = time_check_cost(sizes, repeats)
    print("\n# stale-forces check (VelocityVerlet, us per step with / without it): " + ", ".join(
        f"{n} atoms {w:.1f} / {wo:.1f} ({100 * (w - wo) / w:.0f}%)"
        for n, (w, wo) in check.items()))
    noise = time_noise(repeats=repeats)
    print("\n# noise: ns per standard-normal number: " + ", ".join(
        f"{name} {ns:.2f}" for name, ns in noise.items())
        + f" (numpy / ours {noise['numpy'] / noise['meltquench.kernels.rng']:.1f}x)")
    if not args.no_compile:
        cold, warm = time_compile()
        print(f"\n# numba: building and stepping all five schemes in a fresh interpreter takes "
              f"{cold:.1f} s with an empty cache (compilation) and {warm:.2f} s from the cache "
              f"(cache=True)")
    if args.gpaw:
        step = time_gpaw_step()
        mine = time_dynamics(lambda a: ours.Bussi(a, DT, T, 100 * units.fs, seed=1), 100, 2000,
                             repeats)[1]
        print(f"\n# GPAW LCAO dzp MD step, 10-atom V2O3: {step:.2f} s; our Bussi integrator at "
              f"100 atoms: {mine:.1f} us = {mine * 1e-6 / step:.1e} of that step")
    return rows


if __name__ == "__main__":
    main()
