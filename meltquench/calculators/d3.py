"""Grimme's D3 dispersion with Becke-Johnson damping, added on top of another calculator.

Which calculators get it is decided in one place, :mod:`meltquench.calculators`
(``calculator.dispersion: auto``: the DFT engines, which lack dispersion; not tblite, whose
GFN methods contain it, nor the pair potential, fitted without it).

``dftd3``'s ASE calculator gives the D3(BJ) energy, forces and stress; ASE's
``SumCalculator`` adds them to those of the calculator underneath. The damping parameters are
those of a functional (``method``; by default the calculator's own ``xc``, PBE for calculators
without one). Two-body only unless ``three_body`` (the Axilrod-Teller-Muto term), as VASP's
``IVDW = 12`` of the reference paper. Energies in eV.
"""
from dataclasses import dataclass
from typing import Optional

from ase.calculators.mixing import SumCalculator
from dftd3.ase import DFTD3

from .base import Settings, setting


@dataclass
class D3Settings(Settings):
    """``calculator.d3``: options of the D3(BJ) term."""

    section = "calculator.d3"

    method: Optional[str] = setting(None, "functional whose D3(BJ) parameters are used; null: "
                                    "the calculator's xc (PBE for the pair potential)")
    three_body: bool = setting(False, "add the Axilrod-Teller-Muto three-body term")


class D3(DFTD3):
    """The dftd3 package's ASE calculator, declaring the ``free_energy`` it computes.

    Dispersion has no electronic entropy, so its free energy is its energy; dftd3 stores it but
    does not list it among its properties, and ASE's ``SumCalculator`` offers only what every
    term lists. Without it a smeared DFT calculator plus D3 has no free energy, and the MD's
    conserved quantity would fall back to the energy extrapolated to zero smearing, which the
    forces are not the derivative of.
    """

    implemented_properties = [*DFTD3.implemented_properties, "free_energy"]


def make_d3(method="PBE", three_body=False):
    """D3 calculator (:class:`D3`) with Becke-Johnson damping for functional ``method``."""
    # load_rational_damping(method, atm): the ATM three-body term only when asked.
    return D3(damping="d3bj", params_tweaks={"method": method, "atm": bool(three_body)})


def add_d3(calc, settings, xc="PBE"):
    """``calc`` plus D3(BJ) for :class:`D3Settings` (or a dict); ``xc`` the default method."""
    s = D3Settings.from_dict(settings)
    return SumCalculator([calc, make_d3(s.method or xc, s.three_body)])
