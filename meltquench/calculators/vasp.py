"""VASP through ASE's ``Vasp`` calculator, with the reference paper's settings.

The settings are INCAR tags in lower case, as ASE's ``Vasp`` takes them; a tag set to null is
left out of the INCAR (VASP's own default then applies). VASP adds D3(BJ) itself
(``IVDW = 12``), so no dispersion calculator goes on top. Fixed atoms (FixAtoms) are written
as selective dynamics in the POSCAR by ASE. Units: eV (``encut``, ``sigma``, ``ediff``).
"""
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ase.calculators.vasp import Vasp
from ase.config import cfg as ase_config

from ..errors import UserError
from .base import Settings, setting


@dataclass
class VaspSettings(Settings):
    """``calculator.vasp``: INCAR tags for ASE's ``Vasp`` (the paper's method)."""

    section = "calculator.vasp"
    unknown_key_hint = "put any other vasp keyword under calculator.vasp.extra"

    xc: Optional[str] = setting("PBE", "exchange-correlation functional (ASE's xc, sets GGA)")
    encut: Optional[float] = setting(450.0, "plane-wave cutoff ENCUT (eV)")
    kpts: list = setting([1, 1, 1], "k-point grid")
    gamma: bool = setting(True, "Gamma-centred k-point grid")
    hubbard_u: Optional[dict] = setting(
        {"V": 3.25}, "{element: U_eff (eV)} on the d shell: LDAU, LDAUTYPE 2, LDAUL 2 on these "
        "elements and -1 elsewhere")
    ismear: Optional[int] = setting(0, "ISMEAR (0: Gaussian smearing)")
    sigma: Optional[float] = setting(0.05, "SIGMA, the smearing width (eV)")
    ediff: Optional[float] = setting(1e-5, "EDIFF, the SCF energy criterion (eV)")
    prec: Optional[str] = setting("Normal", "PREC")
    algo: Optional[str] = setting("Fast", "ALGO")
    lreal: Optional[Union[str, bool]] = setting("Auto", "LREAL (real-space projection)")
    lmaxmix: Optional[int] = setting(4, "LMAXMIX (4 for d electrons with LDAU)")
    isym: Optional[int] = setting(0, "ISYM (0: no symmetry, as MD needs)")
    istart: Optional[int] = setting(1, "ISTART (1: start from the previous step's WAVECAR)")
    lwave: Optional[bool] = setting(True, "LWAVE (keep the WAVECAR for the next step)")
    lcharg: Optional[bool] = setting(False, "LCHARG")
    ncore: Optional[int] = setting(None, "NCORE (cores per orbital; null: VASP's default)")
    extra: Optional[dict] = setting({}, "any further Vasp keyword, applied last")


def vasp_parameters(settings, *, dispersion=None):
    """Keyword arguments for ASE's ``Vasp`` from :class:`VaspSettings` (or a dict).

    ``dispersion='d3bj'`` adds ``IVDW = 12`` (D3 with Becke-Johnson damping, no three-body term).
    """
    s = VaspSettings.from_dict(settings)
    kw = {k: v for k, v in s.to_dict().items()
          if k not in ("hubbard_u", "extra", "kpts") and v is not None}
    kw["kpts"] = tuple(int(k) for k in s.kpts)
    kw["gamma"] = bool(s.gamma)
    luj = {el: {"L": 2, "U": float(u), "J": 0.0} for el, u in (s.hubbard_u or {}).items() if u}
    if luj:
        kw.update(ldau=True, ldautype=2, ldau_luj=luj)
    if dispersion == "d3bj":
        kw["ivdw"] = 12
    kw.update(copy.deepcopy(s.extra or {}))
    return kw


def make_vasp(settings, *, directory, dispersion=None):
    """ASE ``Vasp`` calculator running in ``directory/vasp``.

    Needs ``ASE_VASP_COMMAND`` (or ``VASP_COMMAND``/``VASP_SCRIPT``) and ``VASP_PP_PATH``, in
    the environment or ASE's configuration file.
    """
    if not any(k in ase_config for k in ("ASE_VASP_COMMAND", "VASP_COMMAND", "VASP_SCRIPT")):
        raise UserError("VASP is not set up: set ASE_VASP_COMMAND (e.g. 'mpirun vasp_std') "
                        "and VASP_PP_PATH (folder holding potpaw_PBE)")
    if "VASP_PP_PATH" not in ase_config:
        raise UserError("VASP_PP_PATH is not set: point it at the folder holding potpaw_PBE")
    parameters = vasp_parameters(settings, dispersion=dispersion)
    vasp_dir = Path(directory) / "vasp"
    vasp_dir.mkdir(parents=True, exist_ok=True)
    return Vasp(directory=str(vasp_dir), **parameters)
