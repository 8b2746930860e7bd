"""Scheme parameters: each declared once, with its rule, default and unit.

A :class:`Param` is one key of the YAML ``dynamics`` section and one keyword of
:func:`~meltquench.dynamics.make_dynamics` (plain numbers: times in fs, friction in 1/fs). The
same rule checks it in the configuration (``dynamics.taut_fs``), in ``make_dynamics``
(``taut_fs``) and, in ASE units, in the scheme's constructor (``taut``): the rules do not
depend on the unit, so one function serves all three and names the value as its caller knows
it.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from ase import units

from ..errors import UserError
from ..kernels import integrators as kern


class DynamicsError(UserError, ValueError):
    """Bad integrator input: unknown scheme or parameter, out-of-range value, constraint."""


def _number(label, value):
    if isinstance(value, bool):
        raise DynamicsError(f"{label} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DynamicsError(f"{label} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise DynamicsError(f"{label} must be a finite number, got {value!r}")
    return value


def positive(label, value):
    """A finite float > 0."""
    number = _number(label, value)
    if number <= 0:
        raise DynamicsError(f"{label} must be a finite number > 0, got {value!r}")
    return number


def nonnegative(label, value):
    """A finite float >= 0."""
    number = _number(label, value)
    if number < 0:
        raise DynamicsError(f"{label} must be a finite number >= 0, got {value!r}")
    return number


def whole(label, value):
    """A whole number >= 1 (an int, or a float with no fraction)."""
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and int(value) >= 1
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DynamicsError(f"{label} must be a whole number >= 1, got {value!r}")
    return int(value)


def sy_order(label, value):
    """A Suzuki-Yoshida order: 2, 4 or 6."""
    try:
        kern.sy_weights(value)
    except ValueError as exc:
        raise DynamicsError(f"{label}: {exc}") from None
    return int(value)


def seed(label, value):
    """None (a fresh seed shared by all MPI ranks) or anything ``numpy.random.default_rng``
    takes: a non-negative integer of any size, or a sequence of them."""
    if value is None:
        return None
    try:
        np.random.SeedSequence(value)
    except (TypeError, ValueError):
        raise DynamicsError(f"{label} must be a non-negative integer, got {value!r}") from None
    return value


def one_of(*choices):
    """A rule: the value must be one of ``choices``."""
    def check(label, value):
        if value not in choices:
            raise DynamicsError(f"{label} must be one of {', '.join(map(str, choices))}, "
                                f"got {value!r}")
        return value
    return check


def fs_to_ase(value_fs):
    """fs -> ASE time units."""
    return value_fs * units.fs


def per_fs_to_ase(value_per_fs):
    """1/fs -> 1/(ASE time unit)."""
    return value_per_fs / units.fs


@dataclass(frozen=True)
class Param:
    """One scheme parameter as plain numbers.

    ``key`` is its name in the YAML ``dynamics`` section and in ``make_dynamics``; ``arg`` the
    keyword of the scheme's constructor, which takes ``to_ase(value)``. ``check(label, value)``
    returns the value cleaned (float, int) or raises :class:`DynamicsError` naming ``label``.
    ``default`` is the one default of the key: ``make_dynamics`` and the YAML configuration
    (:class:`meltquench.config.DynamicsConfig`) both take it from here.
    """

    key: str
    arg: str
    check: Callable[[str, Any], Any]
    default: Any = None
    to_ase: Optional[Callable[[Any], Any]] = None
    doc: str = field(default="", compare=False)

    def constructor_value(self, label, value):
        """``value`` checked (errors name ``label``) and converted for the constructor."""
        value = self.check(label, value)
        return value if self.to_ase is None else self.to_ase(value)


TIMESTEP_FS = Param("timestep_fs", "timestep", positive, to_ase=fs_to_ase,
                    doc="MD time step (fs)")
SEED = Param("seed", "seed", seed, doc="seed of the stochastic thermostats' random numbers")
TAUT_FS = Param("taut_fs", "taut", positive, default=10.0, to_ase=fs_to_ase,
                doc="bussi, berendsen: relaxation time (fs)")
