"""ASE ``MolecularDynamics`` schemes on the numba kernels of ``kernels/integrators``.

One module per scheme, each a drop-in for its ASE counterpart (same positional and keyword
arguments, ASE units: timestep and time constants in ASE time units, friction in 1/ASE time):

- :class:`VelocityVerlet` (``verlet``): NVE velocity Verlet;
- :class:`NoseHooverChainNVT` (``nose_hoover_chain``): Nose-Hoover chain, the scheme and
  conventions of ``ase.md.nose_hoover_chain``, its chain a :class:`NoseHooverChainThermostat`;
- :class:`Bussi` (``bussi``): CSVR stochastic velocity rescaling, a :class:`BussiThermostat`;
- :class:`Langevin` (``langevin``): BAOAB Langevin (the keywords of ``ase.md.langevin``, the
  scheme of ``ase.md.langevinbaoab`` at constant volume), a :class:`LangevinThermostat`;
- :class:`Berendsen` (``berendsen``): Berendsen rescaling, for heating only, a
  :class:`BerendsenThermostat`.

Each scheme subclasses :class:`NumbaMD` (``base``: atoms, forces, state), composes a
:class:`Thermostat` (target temperature, degrees of freedom, energy account) and overrides
``step()``. ``registry`` maps the names of the YAML ``dynamics.thermostat`` to the classes and
holds every scheme's keys (:class:`Param`): :func:`make_dynamics` builds a scheme from plain
numbers in fs, :func:`from_config` from a configuration's dynamics section,
:func:`validate_config` checks that section. A new scheme is a module with a ``@register``
class that declares its ``scheme`` name and ``params``, imported below.

What they add to ASE's classes:

* **The target temperature may change at every step**: ``set_temperature(temperature_K)``
  takes effect from the next step on (a melt-quench ramps it every step).
* **FixAtoms**: fixed atoms keep exactly zero momenta and never move; the kinetic temperature
  and the thermostat count only the mobile atoms, ``ndof = 3 * n_mobile`` (minus 3 with
  ``fixcm=True``). Other constraints are refused with a clear error (see *Constraints*).
* **One force evaluation per step**: a step reuses the forces of the previous step's force
  call (ASE's classes call ``get_forces`` three times per step and rely on the calculator's
  cache), after checking bit for bit that the positions are still the ones they were
  computed at; if the positions were changed between steps, the forces are fetched again.
* **Seeded and restartable**: stochastic schemes draw from a ``numpy.random.Generator``
  (``seed=`` or ``rng=``); ``get_state()`` / ``set_state()`` carry the thermostat variables,
  the thermostat's work and the generator state as plain data, so a restart continues bit for
  bit. Under MPI every rank holds all atoms, runs the same integrator and draws the same
  numbers (with ``seed=None`` rank 0 picks the seed and broadcasts it, so every rank must
  construct the object together).
* **A conserved quantity**: ``get_conserved_energy()`` is E_pot + E_kin plus the thermostat's
  term: the chain energy (NHC) or minus the energy the thermostat put in (CSVR, Langevin,
  Berendsen). With ``logfile=`` it is written to the log (:class:`ThermostatLogger`) with the
  mobile-atom temperature.

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
construction and whenever the atoms or their constraints change.
"""
from .base import NumbaMD, Thermostat, make_rng
from .logger import ThermostatLogger
from .params import DynamicsError, Param
from .registry import DYNAMICS, from_config, make_dynamics, register, validate_config
from .verlet import VelocityVerlet
from .nose_hoover_chain import NoseHooverChainNVT, NoseHooverChainThermostat
from .bussi import Bussi, BussiThermostat
from .langevin import Langevin, LangevinThermostat
from .berendsen import Berendsen, BerendsenThermostat

__all__ = ["DYNAMICS", "Berendsen", "BerendsenThermostat", "Bussi", "BussiThermostat",
           "DynamicsError", "Langevin", "LangevinThermostat", "NoseHooverChainNVT",
           "NoseHooverChainThermostat", "NumbaMD", "Param", "Thermostat", "ThermostatLogger",
           "VelocityVerlet", "from_config", "make_dynamics", "make_rng", "register",
           "validate_config"]
