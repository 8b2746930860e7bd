"""What every calculator module shares: typed settings read from plain dicts, and a calculator walk.

A calculator's settings are a dataclass derived from :class:`Settings`. Its field defaults are
the only defaults there are (the configuration file, ``meltquench config --show`` and Python's
``make_calculator({})`` all read them), and every field carries a documentation string that
``meltquench config --keys`` prints. :meth:`Settings.from_dict` is the one way a plain dict
(YAML, ``--set``, a Python user's dict) becomes settings: unknown keys are errors with a
suggestion, and a given value replaces the default whole (a ``mixer`` dict is the user's mixer,
not merged key by key into the default one). The values are type-checked on construction.
"""
import copy
import dataclasses
import difflib
import typing
from typing import Any, ClassVar, Union

from ..errors import UserError


def setting(default, doc):
    """A settings field with its default (copied for every instance) and documentation."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default),
                                 metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def suggest(word, choices):
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_TYPES = {float: (int, float), int: (int,), str: (str,), bool: (bool,), list: (list, tuple),
          dict: (dict,)}


def check_type(where, value, annotation):
    """Raise :class:`UserError` unless ``value`` fits ``annotation`` (``None`` only if Optional).

    Ints pass for floats, tuples for lists, instances for a class; values are not converted, so
    the YAML written back shows what the user wrote.
    """
    kinds = [annotation]
    optional = False
    if typing.get_origin(annotation) is Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(kinds) < len(typing.get_args(annotation))
    if value is None:
        if optional:
            return
        raise UserError(f"{where} must not be null")
    for kind in kinds:
        if kind is Any:
            return
        if isinstance(value, bool) and kind is not bool:
            continue
        if isinstance(value, _TYPES.get(kind, kind)):
            return
    names = " or ".join(k.__name__ for k in kinds)
    raise UserError(f"{where} must be {names}, got {value!r}")


@dataclasses.dataclass
class Settings:
    """Base of the typed settings of one calculator (or of the whole ``calculator`` section)."""

    #: Where these settings sit in the configuration, for error messages.
    section: ClassVar[str] = "calculator"
    #: What an unknown-key error adds after the suggestion.
    unknown_key_hint: ClassVar[str] = "'meltquench config --keys' lists every key"

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            check_type(f"{self.section}.{f.name}", getattr(self, f.name), hints[f.name])

    @classmethod
    def from_dict(cls, data):
        """Settings from a plain dict of some or all fields (``None``: all defaults).

        An instance of ``cls`` is returned as it is.
        """
        if isinstance(data, cls):
            return data
        check_type(cls.section, data, typing.Optional[dict])
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data or {}:
            if key not in names:
                raise UserError(f"unknown key '{cls.section}.{key}'{suggest(key, names)}; "
                                f"{cls.unknown_key_hint}")
        return cls(**copy.deepcopy(data or {}))

    def to_dict(self):
        """The settings as a plain nested dict (YAML-ready), fields in their declared order."""
        return dataclasses.asdict(self)


def inner_calculators(calc):
    """``calc`` and, for ASE's Sum/LinearCombination calculators, the calculators inside."""
    yield calc
    mixer = getattr(calc, "mixer", None)
    for inner in getattr(mixer, "calcs", None) or getattr(calc, "calcs", None) or []:
        yield from inner_calculators(inner)
