"""Force engines: GPAW (default), VASP, tblite, a fast pair potential; D3(BJ) where the method
lacks dispersion.

One module per engine, each with its typed settings (whose field defaults are the only
defaults) and the function that builds its ASE calculator:

=================  ==================  ===================================================
module             settings            calculator
=================  ==================  ===================================================
:mod:`.gpaw`       ``GPAWSettings``    :func:`~.gpaw.make_gpaw` (mixer :mod:`.mdpulay`,
                                       :mod:`.extrapolation`)
:mod:`.vasp`       ``VaspSettings``    :func:`~.vasp.make_vasp`
:mod:`.tblite`     ``TBliteSettings``  :func:`~.tblite.make_tblite`
:mod:`.ml`         ``MLSettings``      :class:`~.ml.MLCalculator` (CHGNet, SevenNet: the
                                       ``ml`` extra)
:mod:`.pair`       ``PairSettings``    :class:`~.pair.PairPotential`
:mod:`.d3`         ``D3Settings``      :func:`~.d3.add_d3` (D3(BJ) added to another one)
=================  ==================  ===================================================

:class:`CalculatorSettings` is the ``calculator`` section of the configuration: the engine's
``name``, the ``dispersion`` on top, the spin (``spinpol``, read by GPAW and VASP alike) and one
settings object per engine. :func:`make_calculator` turns it (or a plain dict of the same
shape, read the same way) into an ASE calculator. A new engine is a module with its settings
class and builder, a field here, an entry in one of the dispersion tables below and a branch
in :func:`make_calculator`.

Dispersion is added only where the method lacks it. ``calculator.dispersion: auto`` (the
default) resolves, when the settings are read, from one rule for every engine:

- :data:`LACKS_DISPERSION` (GPAW and VASP: PBE+U has none): ``d3bj``, DFT-D3 with
  Becke-Johnson damping as in the paper (VASP adds it itself, ``IVDW = 12``; GPAW gets ``dftd3``
  on top through ASE's ``SumCalculator``);
- :data:`HAS_DISPERSION` (tblite: GFN1-xTB contains D3, GFN2-xTB D4): none, and an explicit
  ``d3bj`` is refused, since it would count dispersion twice;
- :data:`FITTED_WITHOUT` (the pair potential, fitted to corundum without dispersion): none, and
  an explicit ``d3bj`` is allowed: it is not counted twice, but it changes the fitted model
  (corundum is then no longer its minimum), so the plan says so.

``null`` always means none. The resolved value is what ``meltquench config --show``, the run's
``config.yaml`` and the plan show. A machine-learned potential trained on PBE(+U) data without
D3 (the MPtrj-trained models) belongs in :data:`LACKS_DISPERSION`, one trained on data with
dispersion in :data:`HAS_DISPERSION`.

Importing this package never imports GPAW or tblite; they are imported when a calculator is
made.
"""
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import UserError
from ..structures import layers_along_c
from .base import Settings, check_type, inner_calculators, setting, suggest
from .d3 import D3Settings, add_d3, make_d3
from .extrapolation import DensityMatrixExtrapolation
from .gpaw import (BAND_PARALLEL_FROM_ATOMS, GPAWSettings, choose_parallel, gpaw_has_scalapack,
                   gpaw_parameters, is_scf_failure, make_gpaw, parallel_layout,
                   parallel_plan_text, restore_scf_memory, scf_iterations, scf_memory,
                   set_smearing_width, setup_gpaw_mpi)
from .pair import V_O_PAIRS, PairPotential, PairSettings, generic_pair
from .ml import ML_ENGINES, MLCalculator, MLSettings, import_engine, make_ml
from .tblite import TBliteSettings, import_tblite, make_tblite, own_dispersion
from .vasp import smearing_width as vasp_smearing_width
from .vasp import (VaspSettings, make_vasp, programme_stages, vasp_parameters,
                   write_vasp_programme)

#: The engines ``calculator.name`` chooses from.
NAMES = ("gpaw", "vasp", "tblite", "pair") + ML_ENGINES

#: The settings class of every engine (and of ``d3``), by field of :class:`CalculatorSettings`.
SECTIONS = {"d3": D3Settings, "gpaw": GPAWSettings, "vasp": VaspSettings,
            "tblite": TBliteSettings, "pair": PairSettings, "ml": MLSettings}

#: The values ``calculator.dispersion`` takes.
DISPERSIONS = ("auto", "d3bj", None)

#: Engines whose energy has no dispersion: ``auto`` is ``d3bj`` (why, by engine).
LACKS_DISPERSION = {
    "gpaw": "PBE(+U) has no dispersion: D3(BJ) from the dftd3 package is added, as the "
            "paper's DFT-D3",
    "vasp": "PBE(+U) has no dispersion: VASP adds D3(BJ) itself (IVDW = 12), as the paper's "
            "DFT-D3",
    **{engine: "trained on MPtrj's PBE(+U) energies and forces, which have no dispersion: "
               "D3(BJ) from the dftd3 package is added, as the paper's DFT-D3"
       for engine in ML_ENGINES},
}
#: Engines whose method contains dispersion: ``auto`` is none, ``d3bj`` is refused.
HAS_DISPERSION = {
    "tblite": "GFN1-xTB and IPEA1-xTB contain D3 dispersion, GFN2-xTB D4",
}
#: Models fitted without dispersion: ``auto`` is none; ``d3bj`` is allowed, and changes the
#: fitted model.
FITTED_WITHOUT = {
    "pair": "the built-in pair potential was fitted to corundum V2O3 without dispersion: D3(BJ) "
            "on top is not counted twice, but it changes the fitted model (corundum is then no "
            "longer its minimum)",
}


def dispersion_rule(name):
    """``(auto value, why)`` for engine ``name``: what ``dispersion: auto`` resolves to."""
    if name in LACKS_DISPERSION:
        return "d3bj", LACKS_DISPERSION[name]
    if name in HAS_DISPERSION:
        return None, HAS_DISPERSION[name]
    if name in FITTED_WITHOUT:
        return None, FITTED_WITHOUT[name]
    raise KeyError(f"calculator {name!r} is in none of LACKS_DISPERSION, HAS_DISPERSION, "
                   "FITTED_WITHOUT (meltquench.calculators): add it to one")


def resolve_dispersion(settings):
    """The dispersion ``settings`` (a :class:`CalculatorSettings`) asks for, ``auto`` resolved:
    ``'d3bj'`` or None. Raises :class:`UserError` for D3(BJ) on a method that contains
    dispersion already."""
    auto, _ = dispersion_rule(settings.name)
    if settings.dispersion == "auto":
        return auto
    if settings.dispersion == "d3bj" and settings.name in HAS_DISPERSION:
        raise UserError(f"{contained_dispersion(settings)}; calculator.dispersion d3bj would "
                        f"count it twice: use auto or null with calculator.name "
                        f"{settings.name}")
    return settings.dispersion


def contained_dispersion(settings):
    """What an engine of :data:`HAS_DISPERSION` contains, as a sentence for ``settings``, e.g.
    ``GFN1-xTB already contains D3 dispersion``."""
    if settings.name == "tblite":
        return (f"{settings.tblite.method} already contains "
                f"{own_dispersion(settings.tblite)} dispersion")
    return HAS_DISPERSION[settings.name]


@dataclass
class CalculatorSettings(Settings):
    """The ``calculator`` section: which engine, the dispersion on top, the spin, each engine's
    settings.

    The engine sections may be given as dicts of some of their keys (the rest keep their
    defaults); they are read with the engine's :meth:`~.base.Settings.from_dict`. Reading
    resolves ``dispersion: auto`` (see the module's documentation), so the settings always
    hold what is computed.
    """

    name: str = setting("gpaw", "force calculator: gpaw (default), vasp, tblite (GFN1-xTB), "
                        "chgnet or sevennet (machine-learned, MPtrj PBE+U; the ml extra) or "
                        "pair (fast pair potential for tests)")
    dispersion: Optional[str] = setting(
        "auto", "dispersion added to the calculator: auto (D3(BJ) where the method lacks "
        "dispersion: gpaw, vasp; none for tblite, whose GFN1-xTB/GFN2-xTB contain D3/D4, and for "
        "the pair potential, fitted without it), d3bj (DFT-D3 with Becke-Johnson damping: the "
        "dftd3 package, VASP's IVDW 12; refused for tblite) or null. Shown resolved")
    spinpol: bool = setting(
        False, "spin-polarised calculation, for GPAW (spinpol) and VASP (ISPIN 2) alike. False: "
        "the paper does not say, and a setting it does not state is most likely VASP's "
        "default, ISPIN 1; spin polarisation about doubles the cost of every MD step. Set "
        "true (see initial_magmoms) for magnetic states, e.g. band gaps and DOS")
    initial_magmoms: dict = setting(
        {"V": 2.0}, "with spinpol: initial magnetic moments per element (Bohr magnetons; V3+ "
        "is d2), a ferromagnetic start that both GPAW and VASP (MAGMOM) read from the atoms; "
        "elements not named start at 0")
    magnetic_order: str = setting(
        "ferro", "with spinpol: how the initial_magmoms are laid out. 'ferro': every atom of an "
        "element starts with its moment; 'antiferro-c': the sign alternates from one layer "
        "of that element to the next along the cell's c axis (in corundum V2O3 the buckled "
        "V honeycomb layers: the face-sharing V pairs start opposite), no net moment; "
        "needs an even number of layers")
    d3: D3Settings = setting(D3Settings(), "D3 options")
    gpaw: GPAWSettings = setting(GPAWSettings(), "GPAW settings")
    vasp: VaspSettings = setting(VaspSettings(), "VASP settings (INCAR tags in lower case)")
    tblite: TBliteSettings = setting(TBliteSettings(), "tblite settings")
    pair: PairSettings = setting(PairSettings(), "pair-potential settings")
    ml: MLSettings = setting(MLSettings(), "machine-learned potential settings (chgnet, "
                             "sevennet)")

    def __post_init__(self):
        for key, cls in SECTIONS.items():
            setattr(self, key, cls.from_dict(getattr(self, key)))
        super().__post_init__()
        if self.name not in NAMES:
            raise UserError(f"unknown calculator {self.name!r}: calculator.name must be one of "
                            f"{', '.join(NAMES)}{suggest(self.name, NAMES)}")
        if self.dispersion not in DISPERSIONS:
            raise UserError(f"calculator.dispersion must be auto, d3bj or null, "
                            f"got {self.dispersion!r}{suggest(self.dispersion, DISPERSIONS[:2])}")
        self.dispersion = resolve_dispersion(self)
        if self.gpaw.spinpol is not None and self.gpaw.spinpol != self.spinpol:
            raise UserError(f"calculator.gpaw.spinpol is {self.gpaw.spinpol} but "
                            f"calculator.spinpol is {self.spinpol}: the spin is one key for "
                            f"GPAW and VASP now, calculator.spinpol (set it, drop the other)")
        for element, moment in self.initial_magmoms.items():
            check_type(f"calculator.initial_magmoms.{element}", moment, float)
        if self.magnetic_order not in MAGNETIC_ORDERS:
            raise UserError(f"calculator.magnetic_order must be one of "
                            f"{', '.join(MAGNETIC_ORDERS)}, got {self.magnetic_order!r}"
                            f"{suggest(str(self.magnetic_order), MAGNETIC_ORDERS)}")


#: ``calculator.magnetic_order`` values (see :func:`prepare_atoms`).
MAGNETIC_ORDERS = ("ferro", "antiferro-c")


def make_calculator(settings, *, directory, comm=None, natoms=None):
    """ASE calculator for :class:`CalculatorSettings` or a plain dict of the same shape.

    ``directory`` is the run folder: GPAW writes ``directory/gpaw.txt``, VASP runs in
    ``directory/vasp``. ``comm`` is an mpi4py communicator for GPAW (``None``: all ranks) and
    the machine-learned engines (the model runs on its rank 0). ``natoms``, the number of
    atoms to compute, chooses GPAW's layout where ``calculator.gpaw.parallel`` is 'auto'.
    Raises :class:`UserError` for bad settings or an engine that is not installed or set up.
    """
    s = CalculatorSettings.from_dict(settings)
    directory = Path(directory)
    if s.name == "vasp":  # VASP adds D3(BJ) itself (IVDW = 12)
        return make_vasp(s.vasp, directory=directory, dispersion=s.dispersion,
                         spinpol=s.spinpol)
    if s.name == "gpaw":
        calc = make_gpaw(replace(s.gpaw, spinpol=s.spinpol), directory=directory, comm=comm,
                         natoms=natoms)
        xc = s.gpaw.xc
    elif s.name == "tblite":
        calc, xc = make_tblite(s.tblite), "PBE"
    elif s.name in ML_ENGINES:
        calc, xc = make_ml(s.name, s.ml, comm=comm), "PBE"
    else:
        calc, xc = PairPotential(**s.pair.to_dict()), "PBE"
    if s.dispersion == "d3bj":
        return add_d3(calc, s.d3, xc)
    return calc


def check_available(settings):
    """Raise :class:`UserError` (saying what to install) unless the engine of ``settings`` can
    be imported; a run checks this before it makes its folder."""
    s = CalculatorSettings.from_dict(settings)
    if s.name in ML_ENGINES:
        import_engine(s.name)
    elif s.name == "tblite":
        import_tblite()


def prepare_atoms(settings, atoms):
    """Give ``atoms`` the initial magnetic moments ``settings`` imply; call it before attaching
    the calculator (both GPAW and VASP read the moments from the atoms).

    With ``spinpol`` and no moments on the atoms yet: ``initial_magmoms`` per element, laid out
    by ``magnetic_order`` (a structure file's own moments are kept). Without ``spinpol``: none
    (GPAW would otherwise turn spin polarisation on by itself for atoms that carry moments,
    VASP with ISPIN 1 would not). Returns ``atoms``.
    """
    s = CalculatorSettings.from_dict(settings)
    moments = atoms.get_initial_magnetic_moments()
    if not s.spinpol:
        if np.any(moments):
            atoms.set_initial_magnetic_moments(np.zeros(len(atoms)))
    elif not np.any(moments):
        symbols = np.array(atoms.get_chemical_symbols())
        moments = np.array([float(s.initial_magmoms.get(x, 0.0)) for x in symbols])
        if s.magnetic_order == "antiferro-c":
            for element in sorted(set(symbols[moments != 0])):
                layer, count = layers_along_c(atoms, symbols == element)
                if count % 2:
                    raise UserError(
                        f"calculator.magnetic_order antiferro-c: the {element} atoms form "
                        f"{count} layers along c, an odd number, so the alternating signs "
                        "cannot close over the periodic cell; repeat the cell along c (an "
                        "even repeat) or use magnetic_order ferro")
                sign = np.where(layer % 2 == 0, 1.0, -1.0)
                moments[symbols == element] *= sign[symbols == element]
        atoms.set_initial_magnetic_moments(moments)
    return atoms


def set_electronic_temperature(calc, settings, temperature_K):
    """Set the smearing of ``calc`` for an MD step whose target temperature is
    ``temperature_K`` (K), as ``settings`` ask: with ``electronic_temperature: follow`` the
    width is ``max(k_B T, floor)`` (GPAW: ``width_min``; VASP: ``sigma``), from the next
    calculation on; the results at the current positions stay valid. Returns the width (eV),
    or None when the settings keep it fixed (or the engine has none).
    """
    s = CalculatorSettings.from_dict(settings)
    if s.name == "gpaw":
        width = s.gpaw.smearing_width(temperature_K)
        if width is not None:
            set_smearing_width(calc, width)
        return width
    if s.name == "vasp":
        width = vasp_smearing_width(s.vasp, temperature_K)
        if width is not None:
            for c in inner_calculators(calc):
                if isinstance(getattr(c, "float_params", None), dict):
                    c.float_params["sigma"] = width  # written to INCAR at the next step;
                    # Vasp.set() would also drop the results at the current positions
        return width
    return None


def smearing_width_of(calc):
    """The smearing width (eV) of the first GPAW or VASP calculator in ``calc``, else NaN."""
    for c in inner_calculators(calc):
        occupations = getattr(getattr(c, "params", None), "occupations", None)
        params = getattr(occupations, "params", None)
        if isinstance(params, dict) and "width" in params:
            return float(params["width"])
        sigma = (getattr(c, "float_params", None) or {}).get("sigma")
        if sigma is not None:
            return float(sigma)
    return float("nan")


def fermi_dirac_smearing(settings):
    """True if the calculator of ``settings`` smears its occupations with the Fermi-Dirac
    function: GPAW with ``occupations`` named ``fermi-dirac`` (or GPAW's own default, which is
    Fermi-Dirac), VASP with ``ISMEAR = -1``. Only then is ``E - F = sigma S / 2``, which
    :func:`meltquench.observers.smearing_work` needs."""
    s = CalculatorSettings.from_dict(settings) if settings else None
    if s is None:
        return False
    if s.name == "gpaw":
        return (s.gpaw.occupations or {}).get("name", "fermi-dirac") == "fermi-dirac"
    if s.name == "vasp":
        return s.vasp.ismear == -1
    return False


def describe(settings):
    """One line naming the engine and its dispersion, e.g.
    ``GPAW LCAO sz(dzp), PBE, U 3.25 eV on V d, D3(BJ)``."""
    s = CalculatorSettings.from_dict(settings)
    if s.name == "gpaw":
        text = s.gpaw.describe()
    elif s.name == "vasp":
        text = s.vasp.describe()
    elif s.name == "tblite":
        text = f"tblite {s.tblite.method}"
    elif s.name in ML_ENGINES:
        text = s.ml.describe(s.name)
    else:
        text = "pair potential"
    if s.dispersion == "d3bj":
        text += {"vasp": ", D3(BJ) as IVDW 12",
                 "pair": " + D3(BJ) (not in its fit: a changed model)"}.get(s.name, ", D3(BJ)")
    elif s.name == "tblite":
        text += f" (contains {own_dispersion(s.tblite)} dispersion; none added)"
    elif s.name in HAS_DISPERSION:
        text += f" ({HAS_DISPERSION[s.name]}; none added)"
    elif s.name in FITTED_WITHOUT:
        text += " (no dispersion: fitted without it)"
    if s.spinpol:
        text += ", spin-polarised"
    return text


def conservative_fallback(settings):
    """Settings for a retry after SCF non-convergence, or None when there is none (left).

    For GPAW, :meth:`GPAWSettings.fallback`: each call on its own result is more careful, until
    None. Other engines have no fallback.
    """
    s = CalculatorSettings.from_dict(settings)
    gpaw = s.gpaw.fallback() if s.name == "gpaw" else None
    return None if gpaw is None else replace(s, gpaw=gpaw)


__all__ = ["BAND_PARALLEL_FROM_ATOMS", "MAGNETIC_ORDERS", "choose_parallel", "gpaw_has_scalapack", "DISPERSIONS", "FITTED_WITHOUT", "HAS_DISPERSION", "LACKS_DISPERSION", "NAMES",
           "CalculatorSettings", "D3Settings", "ML_ENGINES", "MLCalculator", "MLSettings", "DensityMatrixExtrapolation", "contained_dispersion",
           "GPAWSettings", "PairPotential", "PairSettings", "Settings", "TBliteSettings",
           "V_O_PAIRS", "VaspSettings", "add_d3", "check_available", "conservative_fallback", "describe",
           "dispersion_rule", "generic_pair", "gpaw_parameters", "inner_calculators",
           "is_scf_failure", "make_calculator", "make_d3", "make_gpaw", "make_ml", "make_tblite",
           "make_vasp", "own_dispersion", "parallel_layout", "parallel_plan_text",
           "prepare_atoms", "programme_stages", "restore_scf_memory", "scf_memory", "resolve_dispersion", "scf_iterations",
           "setup_gpaw_mpi", "vasp_parameters", "write_vasp_programme"]
