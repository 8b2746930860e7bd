"""BAOAB Langevin: the thermostat owns the friction, the noise and the energy account; the
scheme fuses its O step into one pass over the atoms."""
import math

import numpy as np
from ase import units

from ..kernels import integrators as kern
from ..kernels import rng as krng
from .base import NumbaMD, Thermostat
from .params import DynamicsError, Param, nonnegative, one_of, per_fs_to_ase
from .registry import register

NOISES = ("fast", "numpy")
FRICTION_PER_FS = Param("friction_per_fs", "friction", nonnegative, default=0.02,
                        to_ase=per_fs_to_ase, doc="langevin: friction (1/fs)")
NOISE = Param("noise", "noise", one_of(*NOISES), default="fast",
              doc="source of the normal numbers: 'fast' (meltquench.kernels.rng) or 'numpy' "
                  "(the numbers of ASE's LangevinBAOAB)")


class LangevinThermostat(Thermostat):
    """The O step of BAOAB: p <- c1 p + c2 sqrt(m kT) R, c1 = exp(-gamma dt),
    c2 = sqrt(1 - c1^2), with one standard-normal R per mobile coordinate.

    ``friction`` gamma in 1/(ASE time); ``rng`` a ``numpy.random.Generator``. ``noise`` says
    where R comes from:

    - ``'fast'``: :mod:`meltquench.kernels.rng` (a ziggurat on SplitMix64, several times
      faster than numpy's generator). Its 128-bit state is drawn once from ``rng``, so the
      same seed gives the same numbers on every run and MPI rank, and it is in the state.
    - ``'numpy'``: ``rng.standard_normal`` (from numba above :attr:`numba_rng_min` numbers,
      the same numbers faster), as ASE's ``LangevinBAOAB``.
    """

    #: From this many numbers on, numpy's generator is called from numba (the same numbers;
    #: below it the call of a numba function with a Generator costs more than it saves).
    numba_rng_min = 2048

    def __init__(self, temperature_K, ndof, friction, rng, noise="fast"):
        super().__init__(temperature_K, ndof)
        self.friction = FRICTION_PER_FS.check("friction", friction)
        self.noise = NOISE.check("noise", noise)
        self.rng = rng
        self.stream = None
        if self.noise == "fast":
            self.stream = rng.integers(0, 2 ** 64, size=2, dtype=np.uint64, endpoint=False)

    def coefficients(self, dt):
        """``(c1, c2)`` of the O step for a time ``dt`` (ASE time)."""
        c1 = math.exp(-self.friction * dt)
        c2 = math.sqrt(-math.expm1(-2.0 * self.friction * dt))
        return c1, c2

    def draw(self, out):
        """Fill ``out`` with standard-normal numbers."""
        if self.stream is not None:
            krng.standard_normal_fill(self.stream, out)
        elif out.size >= self.numba_rng_min:
            kern.fill_standard_normal(self.rng, out)
        else:
            self.rng.standard_normal(out=out)

    def get_state(self):
        state = {"noise": self.noise}
        if self.stream is not None:
            state["stream"] = [int(x) for x in self.stream]
        return state

    def set_state(self, state):
        if state.get("noise", "numpy") != self.noise:
            raise DynamicsError(f"checkpoint drew its Langevin noise with noise="
                                f"{state.get('noise', 'numpy')!r}, this run with {self.noise!r}")
        if self.stream is not None:
            self.stream = np.array(state["stream"], dtype=np.uint64)


@register
class Langevin(NumbaMD):
    """Langevin dynamics with the BAOAB splitting (Leimkuhler and Matthews, JCP 138, 174102).

    ``Langevin(atoms, timestep, temperature_K, friction, fixcm=False, *, seed=None, rng=None,
    noise='fast', **md_kwargs)``; ``timestep`` in ASE time, ``friction`` gamma in
    1/(ASE time), e.g. ``0.01 / units.fs``. A step is B (half kick) A (half drift) O (a
    :class:`LangevinThermostat` step) A, force, B; the BAOA part is one pass over the atoms.
    ``noise='numpy'`` draws the same numbers in the same order as ASE's ``LangevinBAOAB`` at
    constant volume (for comparing trajectories).

    ASE's ``Langevin`` uses a different splitting, takes its deprecated positional
    ``temperature`` in eV (pass ``temperature_K=`` to either class) and has ``fixcm=True`` by
    default; the keywords are the same. Conserved: E_pot + E_kin minus the kinetic energy the
    O steps added.
    """

    scheme = "langevin"
    params = (FRICTION_PER_FS, NOISE)
    stochastic = True

    def __init__(self, atoms, timestep, temperature_K, friction, fixcm=False, *, seed=None,
                 rng=None, noise="fast", **kwargs):
        super().__init__(atoms, timestep, fixcm=fixcm, **kwargs)
        self.thermostat = LangevinThermostat(temperature_K, self.ndof, friction,
                                             self._make_rng(seed, rng), noise)
        self._noise = np.empty((self._mobile.size, 3))

    fr = property(lambda self: self.thermostat.friction, doc="friction (1/ASE time)")
    noise = property(lambda self: self.thermostat.noise, doc="source of the normal numbers")

    def step(self):
        q, p, f = self._begin_step()
        th = self.thermostat
        c1, c2 = th.coefficients(self.dt)
        noise = self._noise
        if noise.shape[0] != self._mobile.size:
            noise = self._noise = np.empty((self._mobile.size, 3))
        th.draw(noise)
        if self._fixcm_on:
            kern.project_noise_com(noise, self._m, self._mobile)
        th.work_eV += kern.baoab_first_half(q, p, f, self._invm, self._sqrtm, self._fixed,
                                            self._q_ref, self.dt, c1, c2,
                                            units.kB * th.temperature_K, noise)
        kern.verlet_second_half(p, self._call_forces(), self._fixed, self.dt)

    def todict(self):
        d = super().todict()
        d.update(friction=self.fr, noise=self.noise)
        return d
