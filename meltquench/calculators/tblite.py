"""tblite's extended tight binding (GFN1-xTB by default) through ``tblite.ase.TBLite``.

The xTB Hamiltonians contain their own dispersion (:data:`TBLITE_DISPERSION`: D3 in GFN1-xTB
and IPEA1-xTB, D4 in GFN2-xTB), so no D3(BJ) goes on top (``calculator.dispersion: auto`` adds
none, ``d3bj`` is refused). tblite is optional (``pip install tblite``): it is imported only
when a calculator is made.
"""
import copy
from dataclasses import dataclass
from typing import Optional

from ..errors import UserError
from .base import Settings, setting


#: The dispersion each xTB Hamiltonian of tblite contains (Grimme's parametrisations).
TBLITE_DISPERSION = {"GFN1-xTB": "D3", "IPEA1-xTB": "D3", "GFN2-xTB": "D4"}


@dataclass
class TBliteSettings(Settings):
    """``calculator.tblite``: keyword arguments of ``TBLite``."""

    section = "calculator.tblite"
    unknown_key_hint = "put any other tblite keyword under calculator.tblite.extra"

    method: str = setting("GFN1-xTB", "xTB Hamiltonian: GFN1-xTB or GFN2-xTB")
    electronic_temperature: float = setting(300.0, "electronic temperature of the smearing (K)")
    accuracy: float = setting(1.0, "numerical accuracy (smaller is tighter)")
    max_iterations: int = setting(250, "SCF iterations before tblite gives up")
    extra: Optional[dict] = setting({}, "any further TBLite keyword, applied last")


def own_dispersion(settings):
    """The dispersion the xTB method of :class:`TBliteSettings` (or a dict) contains, e.g.
    ``'D3'`` for GFN1-xTB."""
    method = TBliteSettings.from_dict(settings).method
    return TBLITE_DISPERSION.get(method, "its own")


def import_tblite():
    """tblite's ASE calculator class, or :class:`UserError` saying how to install it."""
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise UserError("tblite is not installed: pip install tblite") from None
    return TBLite


def make_tblite(settings):
    """``TBLite`` calculator for :class:`TBliteSettings` (or a dict), with no output."""
    s = TBliteSettings.from_dict(settings)
    TBLite = import_tblite()
    kw = {k: v for k, v in s.to_dict().items() if k != "extra"}
    kw["verbosity"] = 0
    kw.update(copy.deepcopy(s.extra or {}))
    return TBLite(**kw)
