"""ASE ``MolecularDynamics`` classes that run on the numba kernels of ``kernels/integrators``.

Five schemes, each a drop-in for its ASE counterpart (same positional and keyword arguments,
ASE units: timestep and time constants in ASE time units, friction in 1/ASE time units):

- :class:`VelocityVerlet`: NVE velocity Verlet (``ase.md.verlet.VelocityVerlet``);
- :class:`NoseHooverChainNVT`: Nose-Hoover chain, Suzuki-Yoshida factorised
  (``ase.md.nose_hoover_chain.NoseHooverChainNVT``, same scheme and conventions);
- :class:`Bussi`: CSVR stochastic velocity rescaling (``ase.md.bussi.Bussi``, same scheme);
- :class:`Langevin`: BAOAB Langevin (the keywords of ``ase.md.langevin.Langevin``, the scheme
  of ``ase.md.langevinbaoab.LangevinBAOAB`` at constant volume);
- :class:`Berendsen`: Berendsen rescaling, for heating only (``ase.md.nvtberendsen``).

What they add to ASE's classes:

* **The target temperature may change at every step**: :meth:`~_NumbaMD.set_temperature` takes
  effect from the next step on (a melt-quench ramps it every step).
* **FixAtoms**: fixed atoms keep exactly zero momenta and never move; the kinetic temperature
  and the thermostat count only the mobile atoms, ``ndof = 3 * n_mobile`` (minus 3 with
  ``fixcm=True``). Other constraints are refused with a clear error (see *Constraints*).
* **One force evaluation per step**: the forces of the previous step are reused (ASE's classes
  call ``get_forces`` three times per step and rely on the calculator's cache). If the positions
  were changed between steps (compared bit for bit with the ones the forces belong to), the
  forces are fetched again. The comparison is skipped only where no code but ours can have
  run since the last step: inside :meth:`~_NumbaMD.run`, after a step at which no observer was
  called (and ``log`` is not overridden).
* **Seeded and restartable**: stochastic schemes draw from a ``numpy.random.Generator``
  (``seed=`` or ``rng=``); :meth:`~_NumbaMD.get_state` / :meth:`~_NumbaMD.set_state` carry the
  thermostat variables, the cumulative thermostat work and the generator state, so a restart
  continues bit for bit. Under MPI every rank holds all atoms, runs the same integrator and
  draws the same numbers (with ``seed=None`` rank 0 picks the seed and broadcasts it, so every
  rank must construct the object together).
* **A conserved quantity**: :meth:`~_NumbaMD.get_conserved_energy` is the extended energy (NHC)
  or E_pot + E_kin minus the energy the thermostat put in (CSVR, Langevin, Berendsen). With
  ``logfile=`` it is written to the log together with the mobile-atom temperature.

Centre-of-mass motion
    *Some atoms fixed*: the fixed atoms exert forces on the mobile ones that the mobile ones do
    not return, so the total momentum of the mobile atoms is not conserved: it is an ordinary
    degree of freedom that exchanges energy with the rest and is thermostatted like them.
    Nothing is removed; ``ndof = 3 n_mobile``. ``fixcm=True`` is refused (the fixed atoms
    already anchor the system).

    *No atoms fixed*, ``fixcm=False`` (default, as ASE's ``NoseHooverChainNVT`` and ``Bussi``):
    ``ndof = 3 N`` and the total momentum is left alone. Forces of a translation-invariant
    calculator and the uniform rescaling of NHC, CSVR and Berendsen conserve it, so if it
    starts at zero three of the 3 N degrees of freedom never carry energy and the other
    3 N - 3 run hotter than the target by a factor 3N / (3N - 3); Langevin thermalises all 3 N.

    *No atoms fixed*, ``fixcm=True``: the total momentum is set to zero at construction and
    kept there (the net force is removed from the forces each step, and Langevin's random
    kicks are projected so that they carry no net momentum, which samples the 3 N - 3
    remaining directions exactly); ``ndof = 3 N - 3``. An ASE ``FixCom`` constraint on its
    own means the same as ``fixcm=True``.

Constraints
    ``FixAtoms`` (any number of them) and ``FixCom`` (without fixed atoms) are honoured; any
    other ASE constraint raises :class:`DynamicsError`.

The positions and momenta are updated in place in ``atoms.arrays``; masses are read at
construction. :func:`make_dynamics` builds any scheme from plain numbers in fs, as the driver
and the YAML configuration give them.
"""
import math
import secrets

import numpy as np
from ase import units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.constraints import FixAtoms, FixCom
from ase.md.logger import MDLogger
from ase.md.md import MolecularDynamics

from .errors import UserError
from .kernels import integrators as kern
from .kernels import rng as krng
from .kernels.parallel import get_comm

# Below this many random numbers per step numpy's own fill is faster than the numba one
# (calling a numba function with a Generator costs a few microseconds).
_NUMBA_RNG_MIN = 2048
STATE_VERSION = 1


class DynamicsError(UserError, ValueError):
    """Bad integrator input: unknown scheme or parameter, out-of-range value, constraint."""


def make_rng(seed=None, rng=None, comm=None):
    """A ``numpy.random.Generator`` that is the same on every MPI rank.

    ``rng`` (a Generator, or an int used as a seed, as ASE's ``LangevinBAOAB``) wins; otherwise
    ``default_rng(seed)``; with neither, rank 0 draws a 128-bit seed and broadcasts it, so every
    rank must call this together. Returns ``(generator, seed)`` (seed None if ``rng`` given).
    """
    if rng is not None:
        if seed is not None:
            raise DynamicsError("give either seed= or rng=, not both")
        if isinstance(rng, np.random.Generator):
            return rng, None
        if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            return np.random.default_rng(int(rng)), int(rng)
        raise DynamicsError(
            f"rng must be a numpy.random.Generator (numpy.random.default_rng(seed)) or an int, "
            f"got {type(rng).__name__}: its state must be saved in checkpoints")
    if seed is None:
        comm = get_comm(comm)
        seed = comm.bcast(secrets.randbits(128) if comm.Get_rank() == 0 else None, root=0)
    try:
        return np.random.default_rng(seed), seed
    except (TypeError, ValueError) as exc:
        raise DynamicsError(f"seed must be a non-negative integer, got {seed!r} ({exc})") from None


def _positive(name, value, allow_zero=False):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DynamicsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise DynamicsError(f"{name} must be a finite number {need}, got {value!r}")
    return value


def _count(name, value):
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and int(value) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DynamicsError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


class ThermostatLogger(MDLogger):
    """ASE's MD log plus the columns an NVT run needs.

    Columns: time (ps), E_tot, E_pot, E_kin (eV, all atoms), T of the mobile atoms (K, over
    ``dyn.ndof``), target T (K) and the conserved quantity (eV).
    """

    def __init__(self, dyn, atoms, logfile, mode="a", comm=None):
        kwargs = {} if comm is None else {"comm": comm}
        super().__init__(dyn, atoms, logfile, header=False, mode=mode, **kwargs)
        self.hdr = "%-9s %12s %12s %12s %9s %9s %14s" % (
            "Time[ps]", "Etot[eV]", "Epot[eV]", "Ekin[eV]", "T[K]", "Ttgt[K]", "Econs[eV]")
        self.fmt = "%-10.4f %12.5f %12.5f %12.5f %9.2f %9.2f %14.6f\n"
        self.logfile.write(self.hdr + "\n")

    def __call__(self):
        dyn = self.dyn
        epot = dyn._potential_energy()
        ekin = dyn.get_kinetic_energy()
        self.logfile.write(self.fmt % (
            dyn.get_time() / (1000 * units.fs), epot + ekin, epot, ekin,
            dyn.get_kinetic_temperature(), dyn.temperature_K, dyn.get_conserved_energy()))
        self.logfile.flush()


class _NumbaMD(MolecularDynamics):
    """Shared machinery: atoms bookkeeping, the force cache, run loop, state, conserved energy.

    Subclasses set ``scheme`` and implement ``_first_half(q, p, f, check)`` (returns
    ``kern.OK`` or ``kern.STALE``) and ``_second_half(p, f)``.
    """

    scheme = None
    stochastic = False

    def __init__(self, atoms, timestep, temperature_K=None, *, fixcm=False, seed=None,
                 rng=None, logfile=None, loginterval=1, **kwargs):
        if not hasattr(atoms, "arrays"):
            raise DynamicsError(f"{type(self).__name__} needs an ase.Atoms object, "
                                f"got {type(atoms).__name__}")
        timestep = _positive("timestep", timestep)
        super().__init__(atoms, timestep, logfile=None, loginterval=loginterval, **kwargs)
        self.fixcm = bool(fixcm)
        self._acc = np.zeros(1)  # energy put in by the thermostat (eV)
        self._forces = None
        self._q_ref = None
        self._untouched = False  # True only inside run() between two of our own steps
        self._setup_atoms()
        self._temperature_K = 0.0
        if temperature_K is not None:
            self._temperature_K = self._check_temperature(temperature_K)
        elif self.scheme != "nve":
            raise DynamicsError(f"{type(self).__name__} needs a target temperature_K")
        if self.stochastic:
            self.rng, self.seed = make_rng(seed, rng)
        else:
            self.rng, self.seed = None, seed
        if logfile:
            self.attach(self.closelater(ThermostatLogger(self, atoms, logfile, comm=self.comm)),
                        loginterval)

    # ------------------------------------------------------------ atoms bookkeeping
    def _setup_atoms(self, adjust_momenta=True):
        """Read masses and constraints; zero the fixed atoms' momenta (and, with fixcm, the
        total momentum unless ``adjust_momenta`` is false, as after a checkpoint restore)."""
        atoms = self.atoms
        n = len(atoms)
        fixed = np.zeros(n, dtype=bool)
        fixcom = False
        for c in atoms.constraints:
            if isinstance(c, FixAtoms):
                fixed[c.get_indices()] = True
            elif isinstance(c, FixCom):
                fixcom = True
            else:
                raise DynamicsError(
                    f"{type(self).__name__} honours only FixAtoms (and FixCom without fixed "
                    f"atoms); remove the {type(c).__name__} constraint or use an ASE integrator")
        if fixcom and fixed.any():
            raise DynamicsError("FixCom together with FixAtoms is not supported: the fixed atoms "
                                "already hold the system in place; remove FixCom")
        if self.fixcm and fixed.any():
            raise DynamicsError("fixcm=True needs a system without fixed atoms: FixAtoms already "
                                "anchors the system (the mobile atoms' centre of mass is then an "
                                "ordinary degree of freedom); use fixcm=False")
        self._fixcm_on = self.fixcm or fixcom
        self._mobile = np.ascontiguousarray(np.flatnonzero(~fixed), dtype=np.int64)
        self._fixed = np.ascontiguousarray(np.flatnonzero(fixed), dtype=np.int64)
        if self._mobile.size == 0:
            raise DynamicsError("every atom is fixed: nothing to integrate")
        self._ndof = 3 * self._mobile.size - (3 if self._fixcm_on else 0)
        if self._ndof < 1:
            raise DynamicsError("fixcm with a single mobile atom leaves no degree of freedom")
        self._m = np.ascontiguousarray(atoms.get_masses(), dtype=np.float64)
        if not np.all(self._m[self._mobile] > 0):
            raise DynamicsError("every mobile atom needs a positive mass")
        invm = np.zeros(n)  # zero for fixed atoms: they never move, carry no energy
        invm[self._mobile] = 1.0 / self._m[self._mobile]
        self._invm = kern.per_coordinate(invm)  # (N, 3): the kernels' flat loops
        self._sqrtm = kern.per_coordinate(np.sqrt(self._m))
        self._natoms = n
        self._cons = atoms.constraints
        self._ncons = len(self._cons)
        q, p = self._arrays()
        kern.zero_rows(p, self._fixed)
        if self._fixcm_on and adjust_momenta:
            kern.remove_com_momentum(p, self._m, self._mobile)
        self._forces = None

    def _arrays(self):
        arrays = self.atoms.arrays
        q = arrays["positions"]
        p = arrays.get("momenta")
        if p is None:
            self.atoms.set_momenta(np.zeros((len(self.atoms), 3)))
            p = arrays["momenta"]
        for name, a in (("positions", q), ("momenta", p)):
            if a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable:
                raise DynamicsError(f"atoms {name} must be a writeable C-contiguous float64 array")
        self._q_seen, self._p_seen = q, p
        return q, p

    # ------------------------------------------------------------ forces
    def _call_forces(self):
        """The one force evaluation of a step (the calculator caches it for everyone else)."""
        f = self.atoms.get_forces(md=True)
        if f.dtype != np.float64 or not f.flags.c_contiguous:
            f = np.ascontiguousarray(f, dtype=np.float64)
        if f.shape != (self._natoms, 3):
            raise RuntimeError(f"calculator returned forces of shape {f.shape}, "
                               f"expected {(self._natoms, 3)}")
        if self._fixcm_on:
            f = f.copy()  # never modify an array the calculator may still hold
            kern.remove_net_force(f, self._m, self._mobile)
        self._forces = f
        return f

    def _refresh_forces(self):
        q = self.atoms.arrays["positions"]
        if self._q_ref is None or self._q_ref.shape != q.shape:
            self._q_ref = np.empty_like(q)
        self._q_ref[...] = q
        return self._call_forces()

    # ------------------------------------------------------------ stepping
    def step(self):
        """One time step; one force evaluation (more only if the positions were changed)."""
        atoms = self.atoms
        arrays = atoms.arrays
        q = arrays["positions"]
        p = arrays.get("momenta")
        if (q is not self._q_seen or p is not self._p_seen or q.shape[0] != self._natoms
                or atoms.constraints is not self._cons or len(self._cons) != self._ncons):
            ndof = self._ndof
            self._setup_atoms()
            q, p = self._arrays()
            if self._ndof != ndof:
                self._retarget()
        # The positions are compared with those of the cached forces, unless run() knows
        # that no code but ours ran since our last step (no observer, log() not overridden).
        check = not self._untouched
        self._untouched = False
        f = self._forces
        if f is None:
            f = self._refresh_forces()
        if self._first_half(q, p, f, check, True) != kern.OK:
            f = self._refresh_forces()
            self._first_half(q, p, f, False, False)
        self._second_half(p, self._call_forces())

    def _call_observers_since_step(self):
        """ASE's call_observers; returns whether any observer (user code) was called."""
        called = False
        for function, interval, args, kwargs in self.observers:
            if (self.nsteps % interval == 0) if interval > 0 else (self.nsteps == abs(interval)):
                function(*args, **kwargs)
                called = True
        return called

    def run(self, steps=50):
        """Run ``steps`` steps (ASE semantics: observers and log after each; a first call at
        step 0 evaluates the forces and calls the observers once). Returns True."""
        self.max_steps = self.nsteps + steps
        if self.nsteps == 0:
            self._refresh_forces()
            self.log()
            self.call_observers()
        plain_log = type(self).log is MolecularDynamics.log
        try:
            while self.nsteps < self.max_steps:
                self.step()
                self.nsteps += 1
                self.log()
                self._untouched = not self._call_observers_since_step() and plain_log
        finally:
            self._untouched = False  # the caller may change the atoms before the next step
        return True

    def irun(self, steps=50):
        """Generator form of :meth:`run` (yields after each step, True at the end)."""
        self.max_steps = self.nsteps + steps
        if self.nsteps == 0:
            self._refresh_forces()
            self.log()
            self.call_observers()
        yield self.nsteps == self.max_steps
        while self.nsteps < self.max_steps:
            self.step()
            self.nsteps += 1
            self.log()
            self.call_observers()
            yield self.nsteps == self.max_steps

    def _refresh_properties(self):
        self._refresh_forces()

    # ------------------------------------------------------------ temperature
    def _check_temperature(self, temperature_K):
        return _positive("temperature_K", temperature_K, allow_zero=True)

    @property
    def temperature_K(self):
        """Target temperature (K)."""
        return self._temperature_K

    def set_temperature(self, temperature_K=None, *, temperature=None):
        """New target temperature (K), used from the next step on.

        ``temperature=`` (eV) is accepted as in ASE's Langevin, for old scripts."""
        if temperature is not None:
            if temperature_K is not None:
                raise DynamicsError("give temperature_K or temperature, not both")
            temperature_K = float(temperature) / units.kB
        self._temperature_K = self._check_temperature(temperature_K)

    def get_temperature(self):
        """Target temperature (K) (as ASE's NVTBerendsen.get_temperature)."""
        return self._temperature_K

    # ------------------------------------------------------------ observables
    @property
    def ndof(self):
        """Thermostatted degrees of freedom: 3 per mobile atom, minus 3 with fixcm."""
        return self._ndof

    @property
    def mobile_indices(self):
        """Indices of the atoms that move (a copy)."""
        return self._mobile.copy()

    def get_kinetic_energy(self):
        """Kinetic energy of the mobile atoms (eV); fixed atoms have none."""
        _, p = self._arrays()
        return float(kern.kinetic_energy(p, self._invm))

    def get_kinetic_temperature(self):
        """Kinetic temperature of the mobile atoms, 2 E_kin / (ndof k_B) (K)."""
        return 2.0 * self.get_kinetic_energy() / (self._ndof * units.kB)

    def get_thermostat_work(self):
        """Energy the thermostat has put into the system since the start (eV)."""
        return float(self._acc[0])

    def _potential_energy(self):
        try:
            return float(self.atoms.get_potential_energy(force_consistent=True))
        except PropertyNotImplementedError:
            return float(self.atoms.get_potential_energy())

    def get_conserved_energy(self):
        """E_pot + E_kin minus the thermostat's cumulative work (eV); NHC adds its chain."""
        return self._potential_energy() + self.get_kinetic_energy() - float(self._acc[0])

    def todict(self):
        d = super().todict()
        d.update(temperature_K=self._temperature_K, fixcm=self.fixcm, ndof=self._ndof)
        return d

    # ------------------------------------------------------------ checkpoints
    def get_state(self):
        """Everything but positions and momenta needed to continue exactly (a plain dict)."""
        state = {"scheme": self.scheme, "version": STATE_VERSION, "nsteps": int(self.nsteps),
                 "timestep": float(self.dt), "temperature_K": float(self._temperature_K),
                 "ndof": int(self._ndof), "fixcm": bool(self._fixcm_on),
                 "work_eV": float(self._acc[0]), "thermostat": self._thermostat_state()}
        if self.rng is not None:
            state["rng"] = self.rng.bit_generator.state
        return state

    def set_state(self, state):
        """Restore :meth:`get_state` output, after the atoms' positions and momenta."""
        if state.get("scheme") != self.scheme:
            raise DynamicsError(f"checkpoint holds a {state.get('scheme')!r} integrator state, "
                                f"this run uses {self.scheme!r}")
        self._setup_atoms(adjust_momenta=False)
        if int(state["ndof"]) != self._ndof or bool(state["fixcm"]) != self._fixcm_on:
            raise DynamicsError(f"checkpoint has {state['ndof']} thermostatted degrees of freedom "
                                f"(fixcm={state['fixcm']}), these atoms {self._ndof} "
                                f"(fixcm={self._fixcm_on}): the fixed atoms differ")
        self.nsteps = int(state["nsteps"])
        self._temperature_K = float(state["temperature_K"])
        self._acc[0] = float(state["work_eV"])
        self._set_thermostat_state(state["thermostat"])
        if self.rng is not None:
            rs = state["rng"]
            if rs["bit_generator"] != type(self.rng.bit_generator).__name__:
                self.rng = np.random.Generator(getattr(np.random, rs["bit_generator"])())
            self.rng.bit_generator.state = rs
        self._forces = None

    def _retarget(self):
        """Hook: the target temperature or the number of degrees of freedom changed."""

    def _thermostat_state(self):
        return {}

    def _set_thermostat_state(self, state):
        pass


class VelocityVerlet(_NumbaMD):
    """NVE velocity Verlet. ``VelocityVerlet(atoms, timestep, **md_kwargs)``.

    ``temperature_K`` (optional) is only recorded, so that a driver can ramp any scheme;
    it does not act. Conserved quantity: E_pot + E_kin.
    """

    scheme = "nve"

    def __init__(self, atoms, timestep, temperature_K=None, *, fixcm=False, seed=None,
                 **kwargs):
        super().__init__(atoms, timestep, temperature_K, fixcm=fixcm, seed=seed, **kwargs)

    def _first_half(self, q, p, f, check, draw):
        return kern.verlet_first_half(q, p, f, self._invm, self._fixed, self._q_ref, check,
                                      self.dt)

    def _second_half(self, p, f):
        kern.verlet_second_half(p, f, self._fixed, self.dt)


class NoseHooverChainNVT(_NumbaMD):
    """Nose-Hoover chain NVT (Martyna, Klein, Tuckerman, J. Chem. Phys. 97, 2635 (1992)).

    ``NoseHooverChainNVT(atoms, timestep, temperature_K, tdamp, tchain=3, tloop=1, *,
    sy_order=4, fixcm=False, **md_kwargs)`` - the same integration scheme and conventions as
    ASE's ``NoseHooverChainNVT`` (Tuckerman et al., J. Phys. A 39, 5629 (2006)): a step is
    chain dt/2, half kick, drift, force, half kick, chain dt/2; each chain half step is
    ``tloop`` x Suzuki-Yoshida sub-steps of order ``sy_order`` (2, 4 = ASE's, or 6).
    Chain masses Q_1 = ndof kT tdamp^2, Q_j = kT tdamp^2 (ASE uses 3 N for ndof: identical
    when no atom is fixed and ``fixcm=False``).

    When the target temperature changes, the masses follow it (Q is proportional to kT), the
    chain velocities p_eta / Q are kept, and the jump in the chain energy is booked so that
    :meth:`get_conserved_energy` (E_pot + E_kin + chain energy) stays continuous.
    """

    scheme = "nhc"

    def __init__(self, atoms, timestep, temperature_K, tdamp, tchain=3, tloop=1, *,
                 sy_order=4, fixcm=False, seed=None, **kwargs):
        self.tdamp = _positive("tdamp", tdamp)
        self.tchain = _count("tchain", tchain)
        self.tloop = _count("tloop", tloop)
        try:
            self._weights = kern.sy_weights(sy_order)
        except ValueError as exc:
            raise DynamicsError(str(exc)) from None
        self.sy_order = int(sy_order)
        super().__init__(atoms, timestep, temperature_K, fixcm=fixcm, seed=seed, **kwargs)
        self._p_eta = np.zeros(self.tchain)
        self._eta = np.zeros(self.tchain)
        self._energy_offset = 0.0
        self._set_masses()

    def _check_temperature(self, temperature_K):
        return _positive("temperature_K", temperature_K)  # Q = 0 at 0 K

    def _set_masses(self):
        self._kT = units.kB * self._temperature_K
        self._nf = float(self._ndof)
        self._Q = np.empty(self.tchain)
        self._Q[0] = self._nf * self._kT * self.tdamp ** 2
        self._Q[1:] = self._kT * self.tdamp ** 2

    def set_temperature(self, temperature_K=None, *, temperature=None):
        old = self._temperature_K
        super().set_temperature(temperature_K, temperature=temperature)
        if self._temperature_K != old:
            self._retarget()

    def _retarget(self):
        # New kT or ndof: new masses, same chain velocities, energy jump booked.
        e_old = kern.nhc_energy(self._p_eta, self._eta, self._Q, self._nf, self._kT)
        q_old = self._Q
        self._set_masses()
        self._p_eta *= self._Q / q_old
        e_new = kern.nhc_energy(self._p_eta, self._eta, self._Q, self._nf, self._kT)
        self._energy_offset += e_old - e_new

    def _first_half(self, q, p, f, check, draw):
        return kern.nhc_first_half(q, p, f, self._invm, self._fixed, self._q_ref, check, self.dt,
                                   self._p_eta, self._eta, self._Q, self._nf, self._kT,
                                   self._weights, self.tloop)

    def _second_half(self, p, f):
        kern.nhc_second_half(p, f, self._invm, self._fixed, self.dt, self._p_eta, self._eta,
                             self._Q, self._nf, self._kT, self._weights, self.tloop)

    def get_thermostat_energy(self):
        """Energy of the chain (eV), including the booked jumps of temperature changes."""
        return float(kern.nhc_energy(self._p_eta, self._eta, self._Q, self._nf, self._kT)
                     + self._energy_offset)

    def get_conserved_energy(self):
        """Extended energy E_pot + E_kin + chain energy (eV)."""
        return (self._potential_energy() + self.get_kinetic_energy()
                + self.get_thermostat_energy())

    def _thermostat_state(self):
        return {"p_eta": self._p_eta.copy(), "eta": self._eta.copy(), "Q": self._Q.copy(),
                "energy_offset": float(self._energy_offset), "tdamp": float(self.tdamp),
                "tloop": int(self.tloop), "sy_order": int(self.sy_order)}

    def _set_thermostat_state(self, state):
        p_eta = np.array(state["p_eta"], dtype=np.float64)
        if p_eta.shape != (self.tchain,):
            raise DynamicsError(f"checkpoint has a chain of {p_eta.size} thermostats, "
                                f"this run {self.tchain}")
        self._set_masses()
        self._p_eta = p_eta
        self._eta = np.array(state["eta"], dtype=np.float64)
        self._Q = np.array(state["Q"], dtype=np.float64)
        self._energy_offset = float(state["energy_offset"])


class Bussi(_NumbaMD):
    """CSVR stochastic velocity rescaling (Bussi, Donadio, Parrinello, JCP 126, 014101 (2007)).

    ``Bussi(atoms, timestep, temperature_K, taut, *, seed=None, rng=None, fixcm=False,
    **md_kwargs)``. As ASE's ``Bussi``: each step first rescales the momenta by the exact CSVR
    factor for a time dt (one normal and one chi-square number with ndof - 1 degrees of
    freedom, drawn in that order), then does a velocity-Verlet step. ndof counts the mobile
    atoms, as ASE's ``atoms.get_number_of_degrees_of_freedom()``. Unlike ASE, zero initial
    kinetic energy is allowed (nothing is rescaled until forces create some).
    Conserved: E_pot + E_kin - sum of (alpha^2 - 1) E_kin.
    """

    scheme = "bussi"
    stochastic = True

    def __init__(self, atoms, timestep, temperature_K, taut, *, seed=None, rng=None,
                 fixcm=False, **kwargs):
        self.taut = _positive("taut", taut)
        super().__init__(atoms, timestep, temperature_K, fixcm=fixcm, seed=seed, rng=rng,
                         **kwargs)

    def _first_half(self, q, p, f, check, draw):
        if not draw:  # the random numbers were drawn for the attempt that found stale forces
            r1, chi2 = self._draws
        else:
            rng = self.rng
            r1 = rng.standard_normal()
            chi2 = 2.0 * rng.standard_gamma(0.5 * (self._ndof - 1))
            self._draws = (r1, chi2)
        kin_target = 0.5 * (units.kB * self._temperature_K) * self._ndof
        return kern.csvr_first_half(q, p, f, self._invm, self._fixed, self._q_ref, check, self.dt,
                                    kin_target, float(self._ndof), math.exp(-self.dt / self.taut),
                                    r1, chi2, self._acc)

    def _second_half(self, p, f):
        kern.verlet_second_half(p, f, self._fixed, self.dt)


class Langevin(_NumbaMD):
    """Langevin dynamics with the BAOAB splitting (Leimkuhler and Matthews, JCP 138, 174102).

    ``Langevin(atoms, timestep, temperature_K, friction, fixcm=False, *, seed=None, rng=None,
    noise='fast', **md_kwargs)``; ``friction`` gamma in 1/(ASE time), e.g. ``0.01 / units.fs``.
    A step is B (half kick) A (half drift) O (p = c1 p + sqrt((1 - c1^2) m kT) R,
    c1 = exp(-gamma dt)) A, force, B, with one standard-normal R per mobile coordinate.

    ``noise`` says where R comes from:

    - ``'fast'`` (default): :mod:`meltquench.kernels.rng` (ziggurat on SplitMix64, about three
      times faster than numpy's generator, which is most of a Langevin step for large
      systems). Its 128-bit state is drawn once from ``rng`` (or from ``seed``), so the same
      seed gives the same trajectory on every run and MPI rank, and it goes into
      :meth:`get_state`.
    - ``'numpy'``: ``rng.standard_normal((n_mobile, 3))`` each step, the same numbers and
      sequence as ASE's ``LangevinBAOAB`` at constant volume (for comparing trajectories).

    Note that ASE's ``Langevin`` uses a different splitting, takes its deprecated positional
    ``temperature`` in eV (pass ``temperature_K=`` to either class) and has ``fixcm=True`` by
    default; the keywords are the same. Conserved: E_pot + E_kin minus the kinetic energy the
    O steps added.
    """

    scheme = "langevin"
    stochastic = True

    NOISE = ("fast", "numpy")

    def __init__(self, atoms, timestep, temperature_K, friction, fixcm=False, *, seed=None,
                 rng=None, noise="fast", **kwargs):
        self.fr = _positive("friction", friction, allow_zero=True)
        if noise not in self.NOISE:
            raise DynamicsError(f"noise must be one of {', '.join(self.NOISE)}, got {noise!r}")
        self.noise = noise
        super().__init__(atoms, timestep, temperature_K, fixcm=fixcm, seed=seed, rng=rng,
                         **kwargs)
        self._noise = np.empty((self._mobile.size, 3))
        self._stream = None
        if noise == "fast":  # 128 bits from the (rank-identical) generator seed the stream
            self._stream = self.rng.integers(0, 2 ** 64, size=2, dtype=np.uint64,
                                             endpoint=False)

    def set_friction(self, friction):
        """New friction coefficient (1/ASE time), from the next step on."""
        self.fr = _positive("friction", friction, allow_zero=True)

    def _first_half(self, q, p, f, check, draw):
        c1 = math.exp(-self.fr * self.dt)
        c2 = math.sqrt(-math.expm1(-2.0 * self.fr * self.dt))
        kT = units.kB * self._temperature_K
        nmob = self._mobile.size
        noise = self._noise
        if noise.shape[0] != nmob:
            noise = self._noise = np.empty((nmob, 3))
        if draw:  # once per step, also when the forces turn out to be stale
            if self._stream is not None:
                krng.standard_normal_fill(self._stream, noise)
            elif noise.size >= _NUMBA_RNG_MIN:
                kern.fill_standard_normal(self.rng, noise)
            else:
                self.rng.standard_normal(out=noise)
            if self._fixcm_on:
                kern.project_noise_com(noise, self._m, self._mobile)
        return kern.baoab_first_half(q, p, f, self._invm, self._sqrtm, self._fixed, self._q_ref,
                                     check, self.dt, c1, c2, kT, noise, self._acc)

    def _second_half(self, p, f):
        kern.verlet_second_half(p, f, self._fixed, self.dt)

    def todict(self):
        d = super().todict()
        d.update(friction=self.fr, noise=self.noise)
        return d

    def _thermostat_state(self):
        state = {"noise": self.noise}
        if self._stream is not None:
            state["stream"] = [int(x) for x in self._stream]
        return state

    def _set_thermostat_state(self, state):
        if state.get("noise", "numpy") != self.noise:
            raise DynamicsError(f"checkpoint drew its Langevin noise with noise="
                                f"{state.get('noise', 'numpy')!r}, this run with {self.noise!r}")
        if self._stream is not None:
            self._stream = np.array(state["stream"], dtype=np.uint64)


class Berendsen(_NumbaMD):
    """Berendsen velocity rescaling: for fast heating only, it does NOT sample NVT.

    ``Berendsen(atoms, timestep, temperature_K, taut, fixcm=False, **md_kwargs)``. Before each
    velocity-Verlet step the momenta are scaled by sqrt(1 + dt/taut (T0/T - 1)), clipped to
    [0.9, 1.1] as in ASE's ``NVTBerendsen``. It drives the mean temperature to T0 but
    suppresses the kinetic-energy fluctuations of the canonical ensemble (Berendsen et al.,
    JCP 81, 3684 (1984)): use it to heat quickly, then switch to NHC, CSVR or Langevin to
    sample. Conserved: E_pot + E_kin - sum of (lambda^2 - 1) E_kin.
    """

    scheme = "berendsen"
    min_scale = 0.9
    max_scale = 1.1

    def __init__(self, atoms, timestep, temperature_K, taut, fixcm=False, *, seed=None,
                 **kwargs):
        self.taut = _positive("taut", taut)
        super().__init__(atoms, timestep, temperature_K, fixcm=fixcm, seed=seed, **kwargs)

    def set_taut(self, taut):
        self.taut = _positive("taut", taut)

    def get_taut(self):
        return self.taut

    def _first_half(self, q, p, f, check, draw):
        return kern.berendsen_first_half(q, p, f, self._invm, self._fixed, self._q_ref, check,
                                         self.dt, self._temperature_K, float(self._ndof), units.kB,
                                         self.dt / self.taut, self.min_scale, self.max_scale,
                                         self._acc)

    def _second_half(self, p, f):
        kern.verlet_second_half(p, f, self._fixed, self.dt)


NVTBerendsen = Berendsen

DYNAMICS = {"nve": VelocityVerlet, "nhc": NoseHooverChainNVT, "bussi": Bussi,
            "langevin": Langevin, "berendsen": Berendsen}

#: Parameters of :func:`make_dynamics` per scheme (plain numbers, times in fs) and their
#: defaults; None means "100 x timestep_fs".
SCHEME_PARAMS = {
    "nve": {},
    "nhc": {"tdamp_fs": None, "tchain": 3, "tloop": 1, "sy_order": 4},
    "bussi": {"taut_fs": None},
    "langevin": {"friction_per_fs": 0.01, "noise": "fast"},
    "berendsen": {"taut_fs": None},
}
_COMMON_PARAMS = ("fixcm", "logfile", "loginterval", "trajectory", "append_trajectory")


def make_dynamics(name, atoms, timestep_fs, temperature_K, seed=None, **params):
    """Build integrator ``name`` (a key of :data:`DYNAMICS`) from plain numbers.

    ``timestep_fs`` in fs, ``temperature_K`` in K. Scheme parameters, with their defaults:

    - ``nve``: none (a temperature is only recorded);
    - ``nhc``: ``tdamp_fs`` = 100 x timestep_fs, ``tchain`` = 3, ``tloop`` = 1,
      ``sy_order`` = 4 (Suzuki-Yoshida order: 2, 4 or 6);
    - ``bussi``: ``taut_fs`` = 100 x timestep_fs;
    - ``langevin``: ``friction_per_fs`` = 0.01 (1/fs, i.e. 10 / ps), ``noise`` = ``'fast'``
      (or ``'numpy'``, see :class:`Langevin`);
    - ``berendsen``: ``taut_fs`` = 100 x timestep_fs.

    Any scheme also takes ``fixcm`` (default False) and ASE's ``logfile``, ``loginterval``,
    ``trajectory``, ``append_trajectory``. ``seed`` feeds the random numbers of ``bussi`` and
    ``langevin`` (None: rank 0 draws one and broadcasts it); the other schemes ignore it.
    Unknown names, unknown parameters and bad values raise :class:`DynamicsError` (a
    ``ValueError``).
    """
    key = str(name).lower()
    if key not in DYNAMICS:
        raise DynamicsError(f"unknown dynamics {name!r}: choose one of {', '.join(DYNAMICS)}")
    allowed = SCHEME_PARAMS[key]
    unknown = sorted(set(params) - set(allowed) - set(_COMMON_PARAMS))
    if unknown:
        accepted = ", ".join(list(allowed) + list(_COMMON_PARAMS))
        raise DynamicsError(f"unknown parameter(s) {', '.join(unknown)} for dynamics {key!r}; "
                            f"accepted: {accepted}")
    dt_fs = _positive("timestep_fs", timestep_fs)
    values = {k: (100.0 * dt_fs if v is None else v) for k, v in allowed.items()}
    values.update({k: v for k, v in params.items() if k in allowed})
    common = {k: v for k, v in params.items() if k in _COMMON_PARAMS}
    dt = dt_fs * units.fs
    if key == "nve":
        return VelocityVerlet(atoms, dt, temperature_K, seed=seed, **common)
    if key == "nhc":
        return NoseHooverChainNVT(atoms, dt, temperature_K,
                                  _positive("tdamp_fs", values["tdamp_fs"]) * units.fs,
                                  values["tchain"], values["tloop"], sy_order=values["sy_order"],
                                  seed=seed, **common)
    if key == "bussi":
        return Bussi(atoms, dt, temperature_K, _positive("taut_fs", values["taut_fs"]) * units.fs,
                     seed=seed, **common)
    if key == "langevin":
        friction = _positive("friction_per_fs", values["friction_per_fs"], allow_zero=True)
        return Langevin(atoms, dt, temperature_K, friction / units.fs, seed=seed,
                        noise=values["noise"], **common)
    return Berendsen(atoms, dt, temperature_K,
                     _positive("taut_fs", values["taut_fs"]) * units.fs, seed=seed, **common)
