"""CSVR (Bussi) stochastic velocity rescaling: the thermostat draws a factor, the scheme
applies it before a velocity-Verlet step."""
import math

from ase import units

from ..kernels import integrators as kern
from .base import NumbaMD, Thermostat
from .params import TAUT_FS
from .registry import register


class BussiThermostat(Thermostat):
    """Canonical sampling through velocity rescaling (Bussi, Donadio and Parrinello,
    J. Chem. Phys. 126, 014101 (2007)).

    ``taut`` in ASE time units; ``rng`` a ``numpy.random.Generator``. :meth:`scale` draws one
    normal and one chi-square number with ndof - 1 degrees of freedom, in that order (ASE's
    order), and returns the exact CSVR factor for a time dt.
    """

    def __init__(self, temperature_K, ndof, taut, rng):
        super().__init__(temperature_K, ndof)
        self.taut = TAUT_FS.check("taut", taut)
        self.rng = rng

    def scale(self, kinetic_energy, dt):
        """The factor for momenta of kinetic energy ``kinetic_energy`` (eV) over ``dt`` (ASE
        time); books the energy it adds. Zero kinetic energy is left alone (factor 1)."""
        r1 = self.rng.standard_normal()
        chi2 = 2.0 * self.rng.standard_gamma(0.5 * (self.ndof - 1))
        kin_target = 0.5 * (units.kB * self.temperature_K) * self.ndof
        alpha = kern.csvr_alpha(kinetic_energy, kin_target, float(self.ndof),
                                math.exp(-dt / self.taut), r1, chi2)
        self.work_eV += (alpha * alpha - 1.0) * kinetic_energy
        return alpha


@register
class Bussi(NumbaMD):
    """CSVR stochastic velocity rescaling, ASE's ``Bussi`` on the numba kernels.

    ``Bussi(atoms, timestep, temperature_K, taut, *, seed=None, rng=None, fixcm=False,
    **md_kwargs)`` (``timestep``, ``taut`` in ASE time units). As ASE's ``Bussi``: each step
    first rescales the momenta by a :class:`BussiThermostat` factor, then does a
    velocity-Verlet step; ndof counts the mobile atoms, as ASE's
    ``atoms.get_number_of_degrees_of_freedom()``. Unlike ASE, zero initial kinetic energy is
    allowed (nothing is rescaled until forces create some).
    Conserved: E_pot + E_kin - sum of (alpha^2 - 1) E_kin.
    """

    scheme = "bussi"
    params = (TAUT_FS,)
    stochastic = True

    def __init__(self, atoms, timestep, temperature_K, taut, *, seed=None, rng=None,
                 fixcm=False, **kwargs):
        super().__init__(atoms, timestep, fixcm=fixcm, **kwargs)
        self.thermostat = BussiThermostat(temperature_K, self.ndof, taut,
                                          self._make_rng(seed, rng))

    taut = property(lambda self: self.thermostat.taut, doc="relaxation time (ASE time)")

    def step(self):
        q, p, f = self._begin_step()
        invm, hdt = self._invm, 0.5 * self.dt
        alpha = self.thermostat.scale(kern.mobile_kinetic_energy(p, invm, self._fixed), self.dt)
        kern.scale_kick_drift(q, p, f, invm, alpha, hdt, self.dt, self._q_ref)
        kern.verlet_second_half(p, self._call_forces(), self._fixed, self.dt)
