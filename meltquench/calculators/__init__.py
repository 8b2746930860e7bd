"""Force engines: GPAW (default), VASP, tblite, a fast pair potential; D3(BJ) on top of any.

One module per engine, each with its typed settings (whose field defaults are the only
defaults) and the function that builds its ASE calculator:

=================  ==================  ===================================================
module             settings            calculator
=================  ==================  ===================================================
:mod:`.gpaw`       ``GPAWSettings``    :func:`~.gpaw.make_gpaw` (mixer :mod:`.mdpulay`,
                                       :mod:`.extrapolation`)
:mod:`.vasp`       ``VaspSettings``    :func:`~.vasp.make_vasp`
:mod:`.tblite`     ``TBliteSettings``  :func:`~.tblite.make_tblite`
:mod:`.pair`       ``PairSettings``    :class:`~.pair.PairPotential`
:mod:`.d3`         ``D3Settings``      :func:`~.d3.add_d3` (D3(BJ) added to another one)
=================  ==================  ===================================================

:class:`CalculatorSettings` is the ``calculator`` section of the configuration: the engine's
``name``, the ``dispersion`` on top and one settings object per engine.
:func:`make_calculator` turns it (or a plain dict of the same shape, read the same way) into
an ASE calculator. A new engine is a module with its settings class and builder, a field here
and a branch in :func:`make_calculator`.

Importing this package never imports GPAW or tblite; they are imported when a calculator is
made.
"""
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from ..errors import UserError
from .base import Settings, inner_calculators, setting, suggest
from .d3 import D3Settings, add_d3, make_d3
from .extrapolation import DensityMatrixExtrapolation
from .gpaw import (GPAWSettings, gpaw_parameters, is_scf_failure, make_gpaw, parallel_layout,
                   parallel_plan_text, scf_iterations, setup_gpaw_mpi)
from .pair import V_O_PAIRS, PairPotential, PairSettings, generic_pair
from .tblite import TBliteSettings, make_tblite
from .vasp import VaspSettings, make_vasp, vasp_parameters

#: The engines ``calculator.name`` chooses from.
NAMES = ("gpaw", "vasp", "tblite", "pair")

#: The settings class of every engine (and of ``d3``), by field of :class:`CalculatorSettings`.
SECTIONS = {"d3": D3Settings, "gpaw": GPAWSettings, "vasp": VaspSettings,
            "tblite": TBliteSettings, "pair": PairSettings}


@dataclass
class CalculatorSettings(Settings):
    """The ``calculator`` section: which engine, the dispersion on top, each engine's settings.

    The engine sections may be given as dicts of some of their keys (the rest keep their
    defaults); they are read with the engine's :meth:`~.base.Settings.from_dict`.
    """

    name: str = setting("gpaw", "force calculator: gpaw (default), vasp, tblite (GFN1-xTB) or "
                        "pair (fast pair potential for tests)")
    dispersion: Optional[str] = setting("d3bj", "dispersion added on top: d3bj (DFT-D3 with "
                                        "Becke-Johnson damping, dftd3 package) or null")
    d3: D3Settings = setting(D3Settings(), "D3 options")
    gpaw: GPAWSettings = setting(GPAWSettings(), "GPAW settings")
    vasp: VaspSettings = setting(VaspSettings(), "VASP settings (INCAR tags in lower case)")
    tblite: TBliteSettings = setting(TBliteSettings(), "tblite settings")
    pair: PairSettings = setting(PairSettings(), "pair-potential settings")

    def __post_init__(self):
        for key, cls in SECTIONS.items():
            setattr(self, key, cls.from_dict(getattr(self, key)))
        super().__post_init__()
        if self.name not in NAMES:
            raise UserError(f"unknown calculator {self.name!r}: calculator.name must be one of "
                            f"{', '.join(NAMES)}{suggest(self.name, NAMES)}")
        if self.dispersion not in (None, "d3bj"):
            raise UserError(f"calculator.dispersion must be null or 'd3bj', "
                            f"got {self.dispersion!r}")


def make_calculator(settings, *, directory, comm=None):
    """ASE calculator for :class:`CalculatorSettings` or a plain dict of the same shape.

    ``directory`` is the run folder: GPAW writes ``directory/gpaw.txt``, VASP runs in
    ``directory/vasp``. ``comm`` is an mpi4py communicator for GPAW (``None``: all ranks).
    Raises :class:`UserError` for bad settings or an engine that is not installed or set up.
    """
    s = CalculatorSettings.from_dict(settings)
    directory = Path(directory)
    if s.name == "vasp":  # VASP adds D3(BJ) itself (IVDW = 12)
        return make_vasp(s.vasp, directory=directory, dispersion=s.dispersion)
    if s.name == "gpaw":
        calc, xc = make_gpaw(s.gpaw, directory=directory, comm=comm), s.gpaw.xc
    elif s.name == "tblite":
        calc, xc = make_tblite(s.tblite), "PBE"
    else:
        calc, xc = PairPotential(**s.pair.to_dict()), "PBE"
    if s.dispersion == "d3bj":
        return add_d3(calc, s.d3, xc)
    return calc


def describe(settings):
    """One line naming the engine, e.g. ``GPAW LCAO sz(dzp), PBE, U 3.25 eV on V d, D3(BJ)``."""
    s = CalculatorSettings.from_dict(settings)
    text = s.gpaw.describe() if s.name == "gpaw" else s.name
    return text + (", D3(BJ)" if s.dispersion == "d3bj" and s.name != "vasp" else "")


def conservative_fallback(settings):
    """Settings for a retry after SCF non-convergence, or None when there is none (left).

    For GPAW, :meth:`GPAWSettings.fallback`: each call on its own result is more careful, until
    None. Other engines have no fallback.
    """
    s = CalculatorSettings.from_dict(settings)
    gpaw = s.gpaw.fallback() if s.name == "gpaw" else None
    return None if gpaw is None else replace(s, gpaw=gpaw)


__all__ = ["NAMES", "CalculatorSettings", "D3Settings", "DensityMatrixExtrapolation",
           "GPAWSettings", "PairPotential", "PairSettings", "Settings", "TBliteSettings",
           "V_O_PAIRS", "VaspSettings", "add_d3", "conservative_fallback", "describe",
           "generic_pair", "gpaw_parameters", "inner_calculators", "is_scf_failure",
           "make_calculator", "make_d3", "make_gpaw", "make_tblite", "make_vasp",
           "parallel_layout", "parallel_plan_text", "scf_iterations", "setup_gpaw_mpi",
           "vasp_parameters"]
