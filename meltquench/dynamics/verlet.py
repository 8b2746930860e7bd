"""NVE velocity Verlet."""
from ..kernels import integrators as kern
from .base import NumbaMD, Thermostat
from .registry import register


@register
class VelocityVerlet(NumbaMD):
    """NVE velocity Verlet. ``VelocityVerlet(atoms, timestep, temperature_K=None, *,
    fixcm=False, **md_kwargs)``, ``timestep`` in ASE time units.

    ``temperature_K`` (K, optional) is only recorded, so that a driver can ramp any scheme;
    it does not act. Conserved quantity: E_pot + E_kin.
    """

    scheme = "nve"

    def __init__(self, atoms, timestep, temperature_K=None, *, fixcm=False, seed=None,
                 **kwargs):
        super().__init__(atoms, timestep, fixcm=fixcm, **kwargs)
        self.thermostat = Thermostat(0.0 if temperature_K is None else temperature_K, self.ndof)

    def step(self):
        q, p, f = self._begin_step()
        kern.verlet_first_half(q, p, f, self._invm, self._fixed, self._q_ref, self.dt)
        kern.verlet_second_half(p, self._call_forces(), self._fixed, self.dt)
