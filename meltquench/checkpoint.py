"""Checkpoints as data only: a NumPy ``.npz`` of arrays plus one JSON document, no code.

A checkpoint is what a run needs to continue exactly: the atoms (numbers, positions, momenta,
masses, cell, periodicity, tags, fixed atoms and JSON-able ``info``), the integrator's state
(:meth:`~meltquench.dynamics.NumbaMD.get_state`: thermostat variables, random-number state
and the forces at the step), the step, the phase, the resolved configuration and, in the MD,
what the calculator carries between steps (:func:`~meltquench.calculators.scf_memory`: GPAW's
extrapolation history and mixer pairs). Run folders are copied between
machines and shared, so a checkpoint must not be able to carry code: it is read with
``numpy.load(..., allow_pickle=False)`` and ``json.loads`` only. Arrays keep their dtype and
every bit; Python floats go through JSON, whose ``repr`` round trip is exact.

Format (``CHECKPOINT_VERSION`` 2): ``checkpoint.npz`` holds the entry ``__meta__``, a 0-d
unicode array with the JSON document, and one entry per array. In the document an array
appears as ``{"__array__": "<entry>"}``; tuples become lists; numpy scalars become numbers.
Older meltquench versions wrote ``checkpoint.pkl`` (a pickle): it is refused, never read.
"""
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from .errors import UserError
from .structures import fixed_mask

CHECKPOINT_NAME = "checkpoint.npz"
PICKLE_CHECKPOINT_NAME = "checkpoint.pkl"  # written by meltquench before version 2; refused
CHECKPOINT_VERSION = 2
_META = "__meta__"
_ARRAY = "__array__"


class CheckpointError(UserError):
    """A checkpoint that cannot be read: damaged, truncated, old or not a checkpoint."""


def _encode(value, arrays):
    """``value`` with arrays moved to ``arrays`` (name -> array); a TypeError for anything
    that is not plain data."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("object arrays cannot go into a checkpoint")
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {_ARRAY: name}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(v, arrays) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("checkpoint dictionaries need string keys")
        if _ARRAY in value:
            raise TypeError(f"the key {_ARRAY!r} is reserved")
        return {k: _encode(v, arrays) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} cannot go into a checkpoint (plain data only)")


def _decode(value, arrays):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return arrays[value[_ARRAY]]
        return {k: _decode(v, arrays) for k, v in value.items()}
    return value


def encode_checkpoint(state):
    """``state`` (nested dicts, lists, numbers, strings, numpy arrays) as ``.npz`` bytes."""
    arrays = {}
    meta = _encode(state, arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **{_META: np.array(json.dumps(meta, allow_nan=True))}, **arrays)
    return buffer.getvalue()


def decode_checkpoint(data, label="checkpoint"):
    """The state :func:`encode_checkpoint` encoded in ``data`` (bytes); a
    :class:`CheckpointError` naming ``label`` if it is not one."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(str(arrays.pop(_META)[()]))
        state = _decode(meta, arrays)
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile,
            json.JSONDecodeError) as exc:
        raise CheckpointError(f"{label} is damaged or not a meltquench checkpoint "
                              f"({type(exc).__name__}: {exc or 'no detail'}): start the run "
                              "again") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        version = state.get("version") if isinstance(state, dict) else None
        raise CheckpointError(f"{label} has checkpoint version {version!r}; this meltquench "
                              f"reads version {CHECKPOINT_VERSION}")
    return state


def plain_info(info):
    """The entries of ``atoms.info`` a checkpoint can hold (plain data); others, such as the
    ``spacegroup`` object ASE's CIF reader leaves, are dropped."""
    kept = {}
    for key, value in info.items():
        try:
            _encode({str(key): value}, {})
        except TypeError:
            continue
        kept[str(key)] = value
    return kept


def checkpoint_state(atoms, dynamics_state, step, phase, **extra):
    """The checkpoint of a run at ``step``: the atoms, the integrator's state and ``extra``."""
    return {"version": CHECKPOINT_VERSION, "step": int(step), "phase": phase,
            "numbers": atoms.numbers.copy(), "positions": atoms.positions.copy(),
            "momenta": atoms.get_momenta(), "masses": atoms.get_masses(),
            "cell": atoms.cell.array.copy(), "pbc": atoms.pbc.copy(),
            "tags": atoms.get_tags(), "info": plain_info(atoms.info),
            "fixed": np.flatnonzero(fixed_mask(atoms)), "dynamics": dynamics_state, **extra}


def read_checkpoint(run_dir):
    """The checkpoint of the run in ``run_dir`` (a :class:`CheckpointError` if there is none
    or it cannot be read)."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        if (run_dir / PICKLE_CHECKPOINT_NAME).exists():
            raise CheckpointError(
                f"{run_dir / PICKLE_CHECKPOINT_NAME} is a pickle checkpoint of an older "
                "meltquench; it is not read, since unpickling a file can run any code in it: "
                "start the run again")
        raise CheckpointError(f"no checkpoint in {run_dir}: it is not a meltquench run folder, "
                              "or the run stopped before its first checkpoint (start it again)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_checkpoint(data, label=str(path))


def atoms_from_checkpoint(state):
    """The :class:`~ase.Atoms` a checkpoint holds, with its momenta, tags and FixAtoms."""
    atoms = Atoms(numbers=state["numbers"], positions=state["positions"], cell=state["cell"],
                  pbc=state["pbc"], tags=state["tags"], masses=state["masses"],
                  momenta=state["momenta"], info=state["info"])
    if len(state["fixed"]):
        atoms.set_constraint(FixAtoms(indices=state["fixed"]))
    return atoms
