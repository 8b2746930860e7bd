"""The one registry of schemes: names, keys, defaults and the checks of configurations.

Every scheme registers itself with :func:`register` under its ``scheme`` name (the value of
``dynamics.thermostat``) and declares its keys in ``params`` (:class:`Param`). Everything that
builds or checks dynamics from plain numbers goes through here: :func:`make_dynamics` (Python),
:func:`from_config` (the driver) and :func:`validate_config` (the YAML configuration).
"""
import difflib
from collections.abc import Mapping

from .params import SEED, TIMESTEP_FS, DynamicsError

#: Scheme name -> class, in the order the schemes registered.
DYNAMICS = {}

#: Keywords every scheme takes besides its own parameters (ASE's and ``fixcm``).
OPTIONS = ("fixcm", "logfile", "loginterval", "trajectory", "append_trajectory")

#: Largest time step a configuration may ask for (fs).
MAX_TIMESTEP_FS = 5.0


def register(cls):
    """Class decorator: add a scheme to :data:`DYNAMICS` under ``cls.scheme``.

    A key that several schemes take (``taut_fs``) must be the same :class:`Param` object, so
    that it has one rule and one default.
    """
    known = params_by_key()
    for param in cls.params:
        if known.get(param.key, param) is not param:
            raise TypeError(f"{cls.__name__} declares its own {param.key!r}; use the Param "
                            f"the other schemes share")
    DYNAMICS[cls.scheme] = cls
    return cls


def params_by_key():
    """Every scheme parameter by key (the union over the registered schemes)."""
    return {p.key: p for cls in DYNAMICS.values() for p in cls.params}


def _suggest(word, choices):
    close = difflib.get_close_matches(str(word).lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def scheme_class(name):
    """The class registered as ``name`` (any case)."""
    key = str(name).lower()
    if key not in DYNAMICS:
        raise DynamicsError(f"unknown dynamics {name!r}: choose one of {', '.join(DYNAMICS)}"
                            f"{_suggest(key, DYNAMICS)}")
    return DYNAMICS[key]


def _build(cls, atoms, timestep_fs, temperature_K, seed, values, options, prefix):
    """``cls`` from plain values: ``values`` by key (missing ones take their default), errors
    naming ``prefix + key``."""
    dt_fs = TIMESTEP_FS.check(prefix + "timestep_fs", timestep_fs)
    args = {}
    for param in cls.params:
        value = values.get(param.key)
        if value is None:
            value = param.default
        args[param.arg] = param.constructor_value(prefix + param.key, value)
    if cls.stochastic:
        options = dict(options, seed=seed)
    return cls(atoms, TIMESTEP_FS.to_ase(dt_fs), temperature_K, **args, **options)


def make_dynamics(name, atoms, timestep_fs, temperature_K, seed=None, **params):
    """Build scheme ``name`` (a key of :data:`DYNAMICS`, any case) from plain numbers.

    ``timestep_fs`` in fs, ``temperature_K`` in K. Scheme parameters, with their defaults
    (the same as the YAML configuration's, which takes them from here):

    - ``nve``: none (a temperature is only recorded);
    - ``nhc``: ``tdamp_fs`` = 50, ``tchain`` = 3, ``tloop`` = 1, ``sy_order`` = 4
      (Suzuki-Yoshida order: 2, 4 or 6);
    - ``bussi``: ``taut_fs`` = 10;
    - ``langevin``: ``friction_per_fs`` = 0.02 (1/fs, i.e. 20 / ps), ``noise`` = ``'fast'``
      (or ``'numpy'``, see :class:`~meltquench.dynamics.Langevin`);
    - ``berendsen``: ``taut_fs`` = 10.

    These are tight couplings, chosen so that a melt-quench follows its temperature ramp;
    for equilibrium sampling, ASE's advice of about 100 time steps suits better.

    Any scheme also takes ``fixcm`` (default False) and ASE's ``logfile``, ``loginterval``,
    ``trajectory``, ``append_trajectory``. ``seed`` feeds the random numbers of ``bussi`` and
    ``langevin`` (None: rank 0 draws one and broadcasts it); the other schemes ignore it.
    Unknown names, unknown parameters and bad values raise :class:`DynamicsError` (a
    ``ValueError``).
    """
    cls = scheme_class(name)
    keys = [p.key for p in cls.params]
    unknown = sorted(set(params) - set(keys) - set(OPTIONS))
    if unknown:
        raise DynamicsError(f"unknown parameter(s) {', '.join(unknown)} for dynamics "
                            f"{cls.scheme!r}; accepted: {', '.join(keys + list(OPTIONS))}")
    options = {k: v for k, v in params.items() if k in OPTIONS}
    return _build(cls, atoms, timestep_fs, temperature_K, seed, params, options, "")


def _reader(config):
    if isinstance(config, Mapping):
        return config.get
    return lambda key: getattr(config, key, None)


def _configured_scheme(name):
    if name not in DYNAMICS:
        raise DynamicsError(f"dynamics.thermostat must be one of {', '.join(DYNAMICS)}, got "
                            f"{name!r}{_suggest(name, DYNAMICS)}")
    return DYNAMICS[name]


def from_config(config, atoms, temperature_K, **options):
    """The scheme ``config.thermostat`` names, built from a configuration's dynamics section.

    ``config`` is a :class:`meltquench.config.DynamicsConfig` (or a mapping with its keys):
    ``thermostat``, ``timestep_fs`` (fs), ``seed`` and the keys of the scheme's ``params``
    (for instance ``tdamp_fs``, ``tchain``, ``tloop`` for nhc); a key the section does not
    have, or holds as None, takes :func:`make_dynamics`' default. ``temperature_K`` is the
    starting target (K); ``options`` are those of :func:`make_dynamics` (``fixcm``,
    ``logfile``, ...). Bad values raise :class:`DynamicsError` naming ``dynamics.<key>``.
    """
    get = _reader(config)
    cls = _configured_scheme(get("thermostat"))
    values = {p.key: get(p.key) for p in cls.params}
    return _build(cls, atoms, get("timestep_fs"), temperature_K, get("seed"), values, options,
                  "dynamics.")


def validate_config(config):
    """Check a configuration's dynamics section (see :func:`from_config`) without atoms.

    The thermostat must be registered (exact name), ``timestep_fs`` in (0, 5] fs, ``seed``
    valid, and every scheme key the section has must satisfy its rule, whichever scheme it
    belongs to. Raises :class:`DynamicsError` (a :class:`~meltquench.errors.UserError`) with one
    line naming ``dynamics.<key>``.
    """
    get = _reader(config)
    _configured_scheme(get("thermostat"))
    dt_fs = get("timestep_fs")
    try:
        in_range = TIMESTEP_FS.check("dynamics.timestep_fs", dt_fs) <= MAX_TIMESTEP_FS
    except DynamicsError:
        in_range = False
    if not in_range:
        raise DynamicsError(f"dynamics.timestep_fs must be > 0 and <= {MAX_TIMESTEP_FS:g} fs, "
                            f"got {dt_fs}")
    SEED.check("dynamics.seed", get("seed"))
    for key, param in params_by_key().items():
        value = get(key)
        if value is not None:
            param.check(f"dynamics.{key}", value)
