"""A GPAW convergence criterion that gives up an SCF whose density error has stopped falling.

GPAW's own criteria only ever say "not yet": an SCF that stagnates runs to ``maxiter``. In hot
PBE+U V2O3 that happens. The paper-perfect model cut to 30 atoms (LCAO dzp, U 3.25 eV,
Fermi-Dirac 0.345 eV, 4000 K) converges at the crystal in 21 iterations, but one 2 fs step
later (atoms moved by at most 0.06 Å) its density error stalls at 10^-3.4 (GPAW's Pulay and
MSR1, meltquench's MD Pulay, with or without memory, beta 0.02-0.2, from scratch too). With U
off, or with a 0.7 eV smearing, the same geometry converges in 20 iterations: the stall comes
from the +U term. One such step sat 166 iterations before it was stopped; at 240 atoms that is
seven hours.

:class:`Stagnation` raises :class:`SCFStagnation` (a ``gpaw.KohnShamConvergenceError``, so the
engine treats it as any SCF failure: one retry with the fallback settings, then a stop with a
checkpoint) once the density error of the last ``iterations`` iterations has not once fallen
below ``1 / factor`` of the best error before them. It never holds back convergence. It is
added by :func:`meltquench.calculators.gpaw.make_gpaw` (``calculator.gpaw.scf_stagnation``).
"""
import math
import warnings

from gpaw import KohnShamConvergenceError
from gpaw.convergence_criteria import Criterion, broadcast_float

# GPAW warns, at each calculator's first SCF, that a custom criterion is not saved in .gpw
# files; meltquench never writes them. Only this criterion's warning is silenced.
warnings.filterwarnings("ignore", message="Custom convergence criterion stagnation encountered")


class SCFStagnation(KohnShamConvergenceError):
    """GPAW's SCF was given up because its density error stopped falling."""


def stagnated(errors, iterations, factor):
    """True if none of the last ``iterations`` of ``errors`` (finite, one per SCF iteration)
    is below ``1 / factor`` times the smallest error before them."""
    if iterations <= 0 or len(errors) <= iterations:
        return False
    return min(errors[-iterations:]) >= min(errors[:-iterations]) / factor


class Stagnation(Criterion):
    """GPAW custom convergence criterion: ``convergence={'custom': [Stagnation(25, 2.0)]}``.

    ``iterations``: how many SCF iterations the density error (electrons per valence electron,
    GPAW's ``density`` measure) may go without falling below ``1 / factor`` of its best value
    before them; then :class:`SCFStagnation` is raised. Always "converged" otherwise.
    """

    name = "stagnation"
    tablename = "stag"
    #: True for an SCF that goes on from a stopped one's memory (its errors restored):
    #: its first iteration does not start the list afresh
    continues = False

    def __init__(self, iterations=25, factor=2.0):
        self.iterations = int(iterations)
        self.factor = float(factor)
        self.description = (f"meltquench: the SCF is given up when its density error has not "
                            f"fallen below 1/{self.factor:g} of its best in "
                            f"{self.iterations} iterations")
        self.errors = []

    def reset(self):
        self.errors = []

    def __call__(self, context):
        if context.niter == 1 and not self.continues:
            self.errors = []
        self.continues = False
        nv = context.wfs.nvalence
        error = context.dens.error
        if nv and error is not None:
            error = broadcast_float(error, context.wfs.world) / nv
            if math.isfinite(error) and error > 0:
                self.errors.append(error)
        if stagnated(self.errors, self.iterations, self.factor):
            best = min(self.errors[:-self.iterations])
            raise SCFStagnation(
                f"SCF stagnated: density error {min(self.errors[-self.iterations:]):.2e} after "
                f"{context.niter} iterations, not below 1/{self.factor:g} of {best:.2e} in the "
                f"last {self.iterations}")
        return True, ""
