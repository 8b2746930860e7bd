"""Berendsen velocity rescaling, for heating only."""
from ase import units

from ..kernels import integrators as kern
from .base import NumbaMD, Thermostat
from .params import TAUT_FS
from .registry import register


class BerendsenThermostat(Thermostat):
    """Berendsen rescaling (Berendsen et al., J. Chem. Phys. 81, 3684 (1984)).

    :meth:`scale` returns sqrt(1 + dt/taut (T0/T - 1)) clipped to [0.9, 1.1], as ASE's
    ``NVTBerendsen``; ``taut`` in ASE time units.
    """

    min_scale = 0.9
    max_scale = 1.1

    def __init__(self, temperature_K, ndof, taut):
        super().__init__(temperature_K, ndof)
        self.taut = TAUT_FS.check("taut", taut)

    def scale(self, kinetic_energy, dt):
        """The factor for momenta of kinetic energy ``kinetic_energy`` (eV) over ``dt`` (ASE
        time); books the energy it adds."""
        lam = kern.berendsen_lambda(2.0 * kinetic_energy / (self.ndof * units.kB),
                                    self.temperature_K, dt / self.taut, self.min_scale,
                                    self.max_scale)
        self.work_eV += (lam * lam - 1.0) * kinetic_energy
        return lam


@register
class Berendsen(NumbaMD):
    """Berendsen velocity rescaling: for fast heating only, it does NOT sample NVT.

    ``Berendsen(atoms, timestep, temperature_K, taut, fixcm=False, **md_kwargs)``
    (``timestep``, ``taut`` in ASE time units). Before each velocity-Verlet step the momenta
    are scaled by a :class:`BerendsenThermostat` factor. It drives the mean temperature to T0
    but suppresses the kinetic-energy fluctuations of the canonical ensemble: use it to heat
    quickly, then switch to NHC, CSVR or Langevin to sample.
    Conserved: E_pot + E_kin - sum of (lambda^2 - 1) E_kin.
    """

    scheme = "berendsen"
    params = (TAUT_FS,)

    def __init__(self, atoms, timestep, temperature_K, taut, fixcm=False, *, seed=None,
                 **kwargs):
        super().__init__(atoms, timestep, fixcm=fixcm, **kwargs)
        self.thermostat = BerendsenThermostat(temperature_K, self.ndof, taut)

    taut = property(lambda self: self.thermostat.taut, doc="relaxation time (ASE time)")

    def set_taut(self, taut):
        """New relaxation time (ASE time), from the next step on (ASE's NVTBerendsen API)."""
        self.thermostat.taut = TAUT_FS.check("taut", taut)

    def get_taut(self):
        return self.thermostat.taut

    def step(self):
        q, p, f = self._begin_step()
        invm, hdt = self._invm, 0.5 * self.dt
        lam = self.thermostat.scale(kern.mobile_kinetic_energy(p, invm, self._fixed), self.dt)
        kern.scale_kick_drift(q, p, f, invm, lam, hdt, self.dt, self._q_ref)
        kern.verlet_second_half(p, self._call_forces(), self._fixed, self.dt)
