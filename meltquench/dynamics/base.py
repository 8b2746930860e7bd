"""What every scheme shares: the atoms' bookkeeping, the forces, the thermostat's interface and
the state of a checkpoint.

:class:`NumbaMD` is an ASE ``MolecularDynamics``; a scheme subclasses it, builds its
:class:`Thermostat` and overrides :meth:`NumbaMD.step`. ASE's own ``run``, ``irun``,
``attach`` and ``call_observers`` drive it.
"""
import secrets

import numpy as np
from ase import units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.constraints import FixAtoms, FixCom
from ase.md.md import MolecularDynamics

from ..kernels import integrators as kern
from ..kernels.parallel import get_comm
from .logger import ThermostatLogger
from .params import TIMESTEP_FS, DynamicsError, nonnegative
from .params import seed as check_seed

STATE_VERSION = 1


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
    return np.random.default_rng(check_seed("seed", seed)), seed


class Thermostat:
    """The part of a scheme that holds the target temperature (K), the number of degrees of
    freedom it acts on and the energy it has put into the system (eV).

    This base class acts on nothing: it is the NVE scheme's thermostat, which only records a
    target (so that a driver can ramp any scheme). A thermostat knows no atoms: the scheme
    gives it kinetic energies and applies what it returns.
    """

    def __init__(self, temperature_K, ndof):
        self.temperature_K = self.check_temperature(temperature_K)
        self.ndof = int(ndof)
        self.work_eV = 0.0

    def check_temperature(self, temperature_K):
        """The target as a float (K); refuses what this thermostat cannot use."""
        return nonnegative("temperature_K", temperature_K)

    def set_temperature(self, temperature_K):
        """New target (K), used from the next step on."""
        self.temperature_K = self.check_temperature(temperature_K)

    def set_ndof(self, ndof):
        """The number of thermostatted degrees of freedom changed (the constraints did)."""
        self.ndof = int(ndof)

    def get_thermostat_energy(self):
        """This thermostat's term of the conserved quantity (eV): minus the energy it put in."""
        return -self.work_eV

    def get_state(self):
        """The thermostat's own variables, as plain data (see :meth:`NumbaMD.get_state`)."""
        return {}

    def set_state(self, state):
        """Restore :meth:`get_state` output; ``temperature_K``, ``ndof`` and ``work_eV`` are
        already set."""


class NumbaMD(MolecularDynamics):
    """Base of the schemes: one force evaluation per step, fixed atoms, restartable state.

    Subclasses set :attr:`scheme` (their registry name) and :attr:`params` (their keys, see
    :mod:`~meltquench.dynamics.registry`), build ``self.thermostat`` in ``__init__`` after
    calling this one (it needs :attr:`ndof`), and implement :meth:`step` from
    :meth:`_begin_step` (arrays and forces at the current positions), the kernels of
    ``kernels.integrators`` and :meth:`_call_forces` (the step's force call).

    ``timestep`` in ASE time units; ``fixcm`` and the constraints are described in the package
    docstring; ``logfile`` attaches a :class:`ThermostatLogger` every ``loginterval`` steps; any
    other keyword (``trajectory``, ``append_trajectory``, ...) goes to ASE's
    ``MolecularDynamics``.
    """

    scheme = None
    params = ()
    stochastic = False

    def __init__(self, atoms, timestep, *, fixcm=False, logfile=None, loginterval=1, **kwargs):
        if not hasattr(atoms, "arrays"):
            raise DynamicsError(f"{type(self).__name__} needs an ase.Atoms object, "
                                f"got {type(atoms).__name__}")
        timestep = TIMESTEP_FS.check("timestep", timestep)
        super().__init__(atoms, timestep, logfile=None, loginterval=loginterval, **kwargs)
        self.fixcm = bool(fixcm)
        self.seed = None
        self.thermostat = None
        self._forces = None
        self._q_ref = None
        self._setup_atoms()
        if logfile:
            self.attach(self.closelater(ThermostatLogger(self, atoms, logfile, comm=self.comm)),
                        loginterval)

    def _make_rng(self, seed, rng):
        """The generator of a stochastic scheme (see :func:`make_rng`); records the seed."""
        generator, self.seed = make_rng(seed, rng)
        return generator

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
        """The one force evaluation of a step, at the positions the kernel wrote to
        ``_q_ref`` (the calculator caches it for everyone else)."""
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

    def _update_forces(self):
        """Forces at the current positions, which become ``_q_ref``."""
        q = self.atoms.arrays["positions"]
        if self._q_ref is None or self._q_ref.shape != q.shape:
            self._q_ref = np.empty_like(q)
        self._q_ref[...] = q
        return self._call_forces()

    def _begin_step(self):
        """``(q, p, f)`` for the step: the atoms' arrays, after taking in any change of the
        atoms or their constraints, and forces at ``q``.

        The forces are those of the previous step's force call if ``q`` is bit for bit where
        that call was made; otherwise (the positions were changed between steps, or
        :meth:`set_state` ran) they are evaluated again. The comparison is one pass over two
        arrays, a few percent of a step at any size (``benchmarks/README.md``).
        """
        atoms = self.atoms
        arrays = atoms.arrays
        q = arrays["positions"]
        p = arrays.get("momenta")
        if (q is not self._q_seen or p is not self._p_seen or q.shape[0] != self._natoms
                or atoms.constraints is not self._cons or len(self._cons) != self._ncons):
            self._setup_atoms()
            q, p = self._arrays()
            self.thermostat.set_ndof(self._ndof)
        f = self._forces
        if f is None or not kern.positions_equal(q, self._q_ref):
            f = self._update_forces()
        return q, p, f

    def forget_forces(self):
        """Drop the forces kept from the previous step: the next step asks the calculator
        again (call it after giving the atoms another calculator)."""
        self._forces = None

    def _refresh_properties(self):
        """Results at the current positions for the observers of ASE's ``irun``, which calls
        this at step 0 and after every step (after one of our steps there is nothing to do)."""
        if self._forces is None or self.nsteps == 0:
            self._update_forces()

    def step(self):
        """One time step with one force evaluation (two if the positions were changed since
        the previous step). ASE semantics: does not count steps or call observers."""
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    # ------------------------------------------------------------ temperature
    @property
    def temperature_K(self):
        """Target temperature (K)."""
        return self.thermostat.temperature_K

    def set_temperature(self, temperature_K):
        """New target temperature (K), used from the next step on."""
        self.thermostat.set_temperature(temperature_K)

    def get_temperature(self):
        """Target temperature (K) (as ASE's NVTBerendsen.get_temperature)."""
        return self.thermostat.temperature_K

    # ------------------------------------------------------------ observables
    @property
    def ndof(self):
        """Thermostatted degrees of freedom: 3 per mobile atom, minus 3 with fixcm."""
        return self._ndof

    @property
    def mobile_indices(self):
        """Indices of the atoms that move (a copy)."""
        return self._mobile.copy()

    @property
    def rng(self):
        """The ``numpy.random.Generator`` of a stochastic scheme (None otherwise)."""
        return getattr(self.thermostat, "rng", None)

    def get_kinetic_energy(self):
        """Kinetic energy of the mobile atoms (eV); fixed atoms have none."""
        _, p = self._arrays()
        return float(kern.kinetic_energy(p, self._invm))

    def get_kinetic_temperature(self):
        """Kinetic temperature of the mobile atoms, 2 E_kin / (ndof k_B) (K)."""
        return 2.0 * self.get_kinetic_energy() / (self._ndof * units.kB)

    def get_thermostat_work(self):
        """Energy the thermostat has put into the system since the start (eV)."""
        return float(self.thermostat.work_eV)

    def get_thermostat_energy(self):
        """The thermostat's term of the conserved quantity (eV): the chain energy of NHC,
        minus the thermostat's work for the others."""
        return float(self.thermostat.get_thermostat_energy())

    def get_free_energy(self):
        """The potential energy the forces are the derivative of (eV): the free energy of a
        smeared DFT calculation (the energy of a calculator without one)."""
        try:
            return float(self.atoms.get_potential_energy(force_consistent=True))
        except PropertyNotImplementedError:
            return float(self.atoms.get_potential_energy())

    def get_conserved_energy(self):
        """F_free + E_kin + the thermostat's term (eV): constant up to integration error
        (and, with a smearing that follows the temperature, up to the width's changes)."""
        return (self.get_free_energy() + self.get_kinetic_energy()
                + self.thermostat.get_thermostat_energy())

    def todict(self):
        d = super().todict()
        d.update(temperature_K=self.temperature_K, fixcm=self.fixcm, ndof=self._ndof)
        return d

    # ------------------------------------------------------------ checkpoints
    def get_state(self):
        """Everything but positions and momenta needed to continue exactly: plain data only
        (numbers, strings, lists, numpy arrays and dicts of these). It includes the forces
        (eV/Å) at the current positions where they are known: the next step starts from
        exactly these, not from a new force call (whose SCF, for DFT, would start elsewhere
        and so end elsewhere within its tolerance)."""
        th = self.thermostat
        state = {"scheme": self.scheme, "version": STATE_VERSION, "nsteps": int(self.nsteps),
                 "timestep": float(self.dt), "temperature_K": float(th.temperature_K),
                 "ndof": int(self._ndof), "fixcm": bool(self._fixcm_on),
                 "work_eV": float(th.work_eV), "thermostat": th.get_state()}
        if self.rng is not None:
            state["rng"] = self.rng.bit_generator.state
        q = self.atoms.arrays["positions"]
        if (self._forces is not None and self._q_ref is not None
                and kern.positions_equal(q, self._q_ref)):
            state["forces"] = np.array(self._forces, copy=True)
        return state

    def set_state(self, state):
        """Restore :meth:`get_state` output, after the atoms' positions and momenta."""
        if state.get("scheme") != self.scheme:
            raise DynamicsError(f"checkpoint holds a {state.get('scheme')!r} integrator state, "
                                f"this run uses {self.scheme!r}")
        if state.get("version") != STATE_VERSION:
            raise DynamicsError(f"checkpoint holds an integrator state of version "
                                f"{state.get('version')!r}; this meltquench reads version "
                                f"{STATE_VERSION}")
        self._setup_atoms(adjust_momenta=False)
        if int(state["ndof"]) != self._ndof or bool(state["fixcm"]) != self._fixcm_on:
            raise DynamicsError(f"checkpoint has {state['ndof']} thermostatted degrees of freedom "
                                f"(fixcm={state['fixcm']}), these atoms {self._ndof} "
                                f"(fixcm={self._fixcm_on}): the fixed atoms differ")
        self.nsteps = int(state["nsteps"])
        th = self.thermostat
        th.temperature_K = float(state["temperature_K"])
        th.ndof = self._ndof
        th.work_eV = float(state["work_eV"])
        th.set_state(state["thermostat"])
        if self.rng is not None:
            rs = state["rng"]
            if rs["bit_generator"] != type(self.rng.bit_generator).__name__:
                th.rng = np.random.Generator(getattr(np.random, rs["bit_generator"])())
            th.rng.bit_generator.state = rs
        self._forces = None
        forces = state.get("forces")  # absent in checkpoints of meltquench before 2026-12-04
        if forces is not None and np.shape(forces) == (self._natoms, 3):
            self._forces = np.array(forces, dtype=np.float64)
            self._q_ref = np.array(self.atoms.arrays["positions"], copy=True)
