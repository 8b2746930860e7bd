"""Time GPAW's SCF on a run's own model, settings and ranks: the measured basis of a cost estimate.

``meltquench run CONFIG --calibrate`` (a dry run that computes a little) builds the model and
the run's GPAW calculator exactly as the run would, at the smearing of the melt, on the ranks
it was started on, and times, all in wall seconds (the slowest rank's):

- ``setup_s``: from the first call to the end of the first SCF iteration, less one iteration
  (basis functions, grids, the initial density: paid once per run and after a restart);
- ``iteration_s``: the median of the next ``iterations`` SCF iterations;
- ``forces_s``: one force evaluation;
- ``move_s``: moving every atom by a small random step (seeded) and starting the SCF there,
  less one iteration (new overlap and projector matrices: paid every MD step).

An MD step then costs ``move_s + n * iteration_s + forces_s`` with ``n`` SCF iterations per
step: :data:`ITERATIONS_PER_STEP`, the engine's measured median on the 40-atom PBE+U melt at
4000 K (``benchmarks/README.md``, GPAW section). The SCF is stopped after the iterations it
needs for the timing; nothing converges and nothing is written but GPAW's log in a temporary
folder. The D3 term is left out (a few hundredths of a second at 240 atoms).
"""
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from . import calculators
from .errors import UserError
from .kernels.parallel import allreduce_max, get_comm

#: SCF iterations per MD step with the engine's GPAW settings: the median measured on the
#: 40-atom V2O3 cell at 4000 K (11 in the NVE drift benchmark, 12.5 in the NVT one).
ITERATIONS_PER_STEP = 12.5
#: SCF iterations of a calculation from scratch (the first MD step, a single point): the
#: median of the cold spin-polarised PBE+U single points measured on quenched ML frames (the ML
#: presets' finish: 120 atoms 49, 55, 56, 67, 67, 72, 74 and 88; 240 atoms 62; README and
#: ``benchmarks/README.md``); 54-64 on the 30-atom frames of ``benchmarks/bench_ml.py``. A
#: crystal converges sooner (17 at 120 atoms).
COLD_ITERATIONS = 67
#: A force evaluation costs about this many SCF iterations (LCAO dzp, 30-120 atoms: 2.9-3.4,
#: ``benchmarks/bench_gpaw_cost.py``; sz(dzp), 20 atoms: 3.5).
FORCES_ITERATIONS = 3.0
#: RMS displacement (Å) of the move that times ``move_s``: a 2 fs step at 4000 K moves atoms
#: by a few hundredths of an Å.
MOVE_A = 0.02


@dataclass
class SCFTiming:
    """Measured wall seconds of one GPAW calculator on one model (see the module docstring)."""

    atoms: int
    ranks: int
    setup_s: float
    iteration_s: float
    forces_s: float
    move_s: float
    iterations: int  # how many iterations the median is over

    def step_s(self, iterations_per_step=ITERATIONS_PER_STEP):
        """Wall seconds of one MD step with ``iterations_per_step`` SCF iterations."""
        return self.move_s + iterations_per_step * self.iteration_s + self.forces_s

    def single_point_s(self, iterations=COLD_ITERATIONS):
        """Wall seconds of a calculation from scratch: set-up, ``iterations``, forces."""
        return self.setup_s + iterations * self.iteration_s + self.forces_s

    def text(self):
        return (f"{self.atoms} atoms on {self.ranks} rank(s): set-up {self.setup_s:.1f} s, "
                f"SCF iteration {self.iteration_s:.2f} s (median of {self.iterations}), forces "
                f"{self.forces_s:.2f} s, moving the atoms {self.move_s:.2f} s; an MD step of "
                f"{ITERATIONS_PER_STEP:g} SCF iterations ~{self.step_s():.1f} s")


def _gpaw_of(calc):
    for c in calculators.inner_calculators(calc):
        if hasattr(c, "iconverge"):
            return c
    raise UserError("--calibrate needs GPAW's ASE interface of GPAW 24 or later (iconverge)")


def _iterate(gpaw, atoms, count):
    """Wall times at the end of each of the first ``count`` SCF iterations of ``atoms``."""
    stamps = []
    for _ in gpaw.iconverge(atoms):
        stamps.append(time.perf_counter())
        if len(stamps) >= count:
            break
    return stamps


def time_gpaw_scf(settings, atoms, temperature_K, comm=None, iterations=2):
    """:class:`SCFTiming` of the GPAW calculator of ``settings`` (a calculator section) on
    ``atoms`` at the smearing of ``temperature_K`` (K), on the ranks of ``comm``."""
    settings = calculators.CalculatorSettings.from_dict(settings)
    if settings.name != "gpaw":
        raise UserError(f"--calibrate times GPAW's SCF; this calculator is {settings.name}")
    comm = get_comm(comm)
    iterations = max(int(iterations), 1)
    atoms = atoms.copy()
    atoms.constraints = []
    calculators.prepare_atoms(settings, atoms)
    with tempfile.TemporaryDirectory(prefix="meltquench-calibrate-") as folder:
        calc = calculators.make_calculator(settings, directory=folder, comm=comm,
                                           natoms=len(atoms))
        calculators.set_electronic_temperature(calc, settings, temperature_K)
        gpaw = _gpaw_of(calc)
        start = time.perf_counter()
        stamps = _iterate(gpaw, atoms, iterations + 1)
        if len(stamps) < iterations + 1:
            raise UserError("--calibrate: GPAW converged in fewer SCF iterations than it needs "
                            "to time; ask for fewer (--calibrate 1)")
        iteration = statistics.median(np.diff(stamps))
        setup = stamps[0] - start - iteration
        t = time.perf_counter()
        gpaw._calculate_forces()
        forces = time.perf_counter() - t
        moved = atoms.copy()
        rng = np.random.default_rng(0)
        moved.positions += rng.normal(0.0, MOVE_A / np.sqrt(3), moved.positions.shape)
        t = time.perf_counter()
        _iterate(gpaw, moved, 1)
        move = time.perf_counter() - t - iteration
        del gpaw, calc
    worst = [allreduce_max(float(x), comm) for x in (setup, iteration, forces, move)]
    return SCFTiming(len(atoms), comm.Get_size(), max(worst[0], 0.0), worst[1], worst[2],
                     max(worst[3], 0.0), iterations)
