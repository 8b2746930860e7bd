"""Nose-Hoover chain NVT: the chain is a thermostat object the scheme composes."""
import numpy as np
from ase import units

from ..kernels import integrators as kern
from .base import NumbaMD, Thermostat
from .params import DynamicsError, Param, fs_to_ase, positive, sy_order, whole
from .registry import register

TDAMP_FS = Param("tdamp_fs", "tdamp", positive, default=50.0, to_ase=fs_to_ase,
                 doc="nhc: thermostat time constant (fs)")
TCHAIN = Param("tchain", "tchain", whole, default=3, doc="nhc: chain length")
TLOOP = Param("tloop", "tloop", whole, default=1,
              doc="nhc: number of sub-steps of the chain per time step")
SY_ORDER = Param("sy_order", "sy_order", sy_order, default=4,
                 doc="order of the Suzuki-Yoshida factorisation: 2, 4 or 6")


class NoseHooverChainThermostat(Thermostat):
    """A chain of ``tchain`` Nose-Hoover thermostats on ``ndof`` degrees of freedom.

    Martyna, Klein and Tuckerman, J. Chem. Phys. 97, 2635 (1992), integrated as Tuckerman et
    al., J. Phys. A 39, 5629 (2006): each :meth:`integrate` is ``tloop`` x Suzuki-Yoshida
    sub-steps of order ``sy_order``. ``tdamp`` in ASE time units; chain masses
    Q_1 = ndof kT tdamp^2, Q_j = kT tdamp^2 (eV (ASE time)^2).

    When the target temperature or ``ndof`` changes, the masses follow (Q is proportional to
    kT), the chain velocities p_eta / Q are kept, and the jump in the chain energy is booked
    so that :meth:`get_thermostat_energy` stays continuous.
    """

    def __init__(self, temperature_K, ndof, tdamp, tchain=3, tloop=1, sy_order=4):
        super().__init__(temperature_K, ndof)
        self.tdamp = TDAMP_FS.check("tdamp", tdamp)
        self.tchain = TCHAIN.check("tchain", tchain)
        self.tloop = TLOOP.check("tloop", tloop)
        self.sy_order = SY_ORDER.check("sy_order", sy_order)
        self._weights = kern.sy_weights(self.sy_order)
        self.p_eta = np.zeros(self.tchain)
        self.eta = np.zeros(self.tchain)
        self.energy_offset = 0.0
        self._set_masses()

    def check_temperature(self, temperature_K):
        return positive("temperature_K", temperature_K)  # Q = 0 at 0 K

    def _set_masses(self):
        self._kT = units.kB * self.temperature_K
        self._nf = float(self.ndof)
        self.Q = np.empty(self.tchain)
        self.Q[0] = self._nf * self._kT * self.tdamp ** 2
        self.Q[1:] = self._kT * self.tdamp ** 2

    def _retarget(self):
        e_old = kern.nhc_energy(self.p_eta, self.eta, self.Q, self._nf, self._kT)
        q_old = self.Q
        self._set_masses()
        self.p_eta *= self.Q / q_old
        e_new = kern.nhc_energy(self.p_eta, self.eta, self.Q, self._nf, self._kT)
        self.energy_offset += e_old - e_new

    def set_temperature(self, temperature_K):
        old = self.temperature_K
        super().set_temperature(temperature_K)
        if self.temperature_K != old:
            self._retarget()

    def set_ndof(self, ndof):
        if int(ndof) != self.ndof:
            super().set_ndof(ndof)
            self._retarget()

    def integrate(self, kinetic_energy, delta):
        """Propagate the chain by ``delta`` (ASE time) against momenta whose kinetic energy is
        ``kinetic_energy`` (eV); returns the factor the caller scales those momenta by."""
        return kern.nhc_propagate(2.0 * kinetic_energy, self.p_eta, self.eta, self.Q, self._nf,
                                  self._kT, delta, self._weights, self.tloop)

    def get_thermostat_energy(self):
        """Energy of the chain (eV), including the booked jumps of temperature changes."""
        return float(kern.nhc_energy(self.p_eta, self.eta, self.Q, self._nf, self._kT)
                     + self.energy_offset)

    def get_state(self):
        return {"p_eta": self.p_eta.copy(), "eta": self.eta.copy(), "Q": self.Q.copy(),
                "energy_offset": float(self.energy_offset), "tdamp": float(self.tdamp),
                "tloop": int(self.tloop), "sy_order": int(self.sy_order)}

    def set_state(self, state):
        p_eta = np.array(state["p_eta"], dtype=np.float64)
        if p_eta.shape != (self.tchain,):
            raise DynamicsError(f"checkpoint has a chain of {p_eta.size} thermostats, "
                                f"this run {self.tchain}")
        self._set_masses()
        self.p_eta = p_eta
        self.eta = np.array(state["eta"], dtype=np.float64)
        self.Q = np.array(state["Q"], dtype=np.float64)
        self.energy_offset = float(state["energy_offset"])


@register
class NoseHooverChainNVT(NumbaMD):
    """Nose-Hoover chain NVT, ASE's ``NoseHooverChainNVT`` on the numba kernels.

    ``NoseHooverChainNVT(atoms, timestep, temperature_K, tdamp, tchain=3, tloop=1, *,
    sy_order=4, fixcm=False, **md_kwargs)`` (``timestep``, ``tdamp`` in ASE time units): the
    same scheme and conventions as ASE's class, with the chain a
    :class:`NoseHooverChainThermostat`. A step is chain dt/2, half kick, drift, force, half
    kick, chain dt/2. ``sy_order`` 4 is ASE's; ASE counts 3 N degrees of freedom, this class
    the mobile ones (the same when no atom is fixed and ``fixcm=False``).
    Conserved: E_pot + E_kin + chain energy.
    """

    scheme = "nhc"
    params = (TDAMP_FS, TCHAIN, TLOOP, SY_ORDER)

    def __init__(self, atoms, timestep, temperature_K, tdamp, tchain=3, tloop=1, *,
                 sy_order=4, fixcm=False, seed=None, **kwargs):
        super().__init__(atoms, timestep, fixcm=fixcm, **kwargs)
        self.thermostat = NoseHooverChainThermostat(temperature_K, self.ndof, tdamp, tchain,
                                                    tloop, sy_order)

    tdamp = property(lambda self: self.thermostat.tdamp, doc="time constant (ASE time)")
    tchain = property(lambda self: self.thermostat.tchain, doc="chain length")
    tloop = property(lambda self: self.thermostat.tloop, doc="sub-steps per half step")
    sy_order = property(lambda self: self.thermostat.sy_order, doc="Suzuki-Yoshida order")

    def step(self):
        q, p, f = self._begin_step()
        chain, invm, hdt = self.thermostat, self._invm, 0.5 * self.dt
        scale = chain.integrate(kern.mobile_kinetic_energy(p, invm, self._fixed), hdt)
        kern.scale_kick_drift(q, p, f, invm, scale, hdt, self.dt, self._q_ref)
        kern.kick(p, self._call_forces(), self._fixed, hdt)
        kern.scale_rows(p, chain.integrate(kern.kinetic_energy(p, invm), hdt))
