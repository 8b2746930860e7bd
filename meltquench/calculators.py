"""Force engines for the melt-quench driver: GPAW (default), VASP, tblite, a fast pair potential.

One entry point, :func:`make_calculator`, turns the ``calculator`` section of the configuration
(a plain dict merged with :data:`CALCULATOR_DEFAULTS`) into an ASE calculator. D3(BJ)
dispersion from the ``dftd3`` package can be added on top of any of them (VASP does it itself
with ``IVDW = 12``). :func:`scf_iterations` reads the SCF iteration count of the last
calculation, :func:`conservative_fallback` gives the settings for a retry after SCF
non-convergence.

The GPAW defaults are tuned for molecular dynamics of the hot PBE+U oxide melt (measurements in
``benchmarks/README.md``): Fermi-Dirac smearing of 0.3 eV (an electronic temperature of
about 3500 K, near the 4000 K of the melt), which both speeds up the SCF and keeps it from
stopping in one of the metastable d-occupation solutions of DFT+U; meltquench's
:class:`~meltquench.gpaw_mixer.MDPulay` mixer (Pulay mixing, step 0.2, 40 densities, whose
history of the last three MD steps is kept: the slow d-occupation mode is learnt once, not at
every step);
GPAW's own convergence criteria (a density residual of 1e-4 per electron: a looser one leaves
forces wrong by 0.1-0.2 eV/Å); and each MD step's SCF started from a quadratically
extrapolated density matrix (:class:`DensityMatrixExtrapolation`) on top of GPAW's own reuse
of the previous wave functions. The driver must keep one calculator for the whole run.

Units are ASE's (eV, Å); GPAW's smearing ``width`` is in eV, VASP's ``ENCUT`` in eV.
"""
import copy
import os
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_numbers, covalent_radii
from numba import njit

from .errors import UserError

#: Documented defaults of the ``calculator`` section. Every key:
#:
#: ``name``
#:     ``'gpaw'`` (default), ``'vasp'``, ``'tblite'`` or ``'pair'``.
#: ``dispersion``
#:     ``None`` or ``'d3bj'``: Grimme's D3 with Becke-Johnson damping (two-body, as VASP's
#:     ``IVDW = 12``), from the ``dftd3`` package, added to the forces of any calculator;
#:     with VASP it becomes ``IVDW = 12`` in the INCAR instead.
#: ``d3``
#:     ``method``: functional whose D3 parameters are used (``None``: the calculator's ``xc``,
#:     PBE for tblite/pair); ``three_body``: add the Axilrod-Teller-Muto term (default False,
#:     as the paper's VASP ``IVDW = 12``).
#: ``gpaw``
#:     ``mode`` ``'lcao'`` (default, for long MD) or ``'pw'``; ``basis`` LCAO basis (``'dzp'``;
#:     ``'sz(dzp)'`` for quick runs); ``ecut`` plane-wave cutoff in eV (PW mode); ``xc``;
#:     ``hubbard_u`` {element: U_eff in eV on the d shell (Dudarev)}, becomes
#:     ``setups={'V': ':d,3.25'}``; ``spinpol``; ``kpts`` (Γ point: ``[1, 1, 1]``); ``h`` grid
#:     spacing in Å (``None``: GPAW's default, 0.2 Å in LCAO); ``mixer`` (GPAW mixer dict; the
#:     key ``backend`` names the method: ``'pulay'`` or ``'msr1'`` (GPAW's), or ``'md-pulay'``
#:     (:class:`~meltquench.gpaw_mixer.MDPulay`: Pulay mixing whose history survives the MD
#:     steps, with ``keep``), ``beta`` step, ``nmaxold`` history length, ``weight`` metric
#:     weight); ``occupations`` (``name``
#:     ``'fermi-dirac'`` or ``'marzari-vanderbilt'``, ``width`` in eV; 0.3 eV is kT at
#:     3500 K, right for the melt; use a new calculator with a smaller width, e.g. GPAW's
#:     0.1 eV, for the final optimisation if the electronic temperature matters there);
#:     ``convergence``
#:     (GPAW convergence criteria: ``forces`` max change of any atom's force between two SCF
#:     iterations in eV/Å, ``energy`` eV per valence electron, ``density`` electrons per
#:     valence electron, ``eigenstates`` eV² per valence electron); ``maxiter`` SCF iterations
#:     before GPAW gives up; ``extrapolation`` order (0 off, 1 linear, 2 quadratic) of the
#:     density-matrix extrapolation that starts each MD step's SCF (LCAO mode, Γ point; see
#:     :class:`DensityMatrixExtrapolation`); ``parallel`` GPAW's ``parallel`` dict or ``None``
#:     (automatic);
#:     ``extra`` any further GPAW keyword, applied last (overrides everything above).
#: ``vasp``
#:     The paper's settings for ASE's ``Vasp`` calculator (INCAR tags in lower case): ``xc``,
#:     ``encut`` (eV), ``kpts`` with ``gamma`` (Γ-centred), ``hubbard_u`` as for GPAW (becomes
#:     LDAU, LDAUTYPE 2, LDAUL 2 on those elements and -1 elsewhere), ``ismear``/``sigma``
#:     (eV), ``ediff`` (eV), ``prec``, ``algo``, ``lreal``, ``lmaxmix``, ``isym`` (0: no
#:     symmetry), ``istart``/``lwave`` (reuse the previous step's WAVECAR), ``lcharg``,
#:     ``ncore``; ``extra``: any further ``Vasp`` keyword, applied last.
#: ``tblite``
#:     ``method`` (``'GFN1-xTB'``), ``electronic_temperature`` (K), ``accuracy``,
#:     ``max_iterations``; ``extra`` any further ``TBLite`` keyword.
#: ``pair``
#:     :class:`PairPotential` parameters: ``cutoff`` (Å), ``cutoff_on`` (Å, where the smooth
#:     switch-off starts), ``pairs`` {``'A-B'``: {``A`` eV, ``rho`` Å, ``D`` eV, ``alpha``
#:     1/Å, ``r0`` Å}} overriding the built-in V-O set and the generic rule.
CALCULATOR_DEFAULTS = {
    "name": "gpaw",
    "dispersion": None,
    "d3": {"method": None, "three_body": False},
    "gpaw": {
        "mode": "lcao",
        "basis": "dzp",
        "ecut": 450.0,
        "xc": "PBE",
        "hubbard_u": {"V": 3.25},
        "spinpol": False,
        "kpts": [1, 1, 1],
        "h": None,
        "mixer": {"backend": "md-pulay", "beta": 0.2, "nmaxold": 40, "weight": 20.0, "keep": 3},
        "occupations": {"name": "fermi-dirac", "width": 0.3},
        "convergence": {"energy": 0.0005, "density": 1e-4, "eigenstates": 4e-8},
        "maxiter": 200,
        "extrapolation": 2,
        "parallel": None,
        "extra": {},
    },
    "vasp": {
        "xc": "PBE",
        "encut": 450.0,
        "kpts": [1, 1, 1],
        "gamma": True,
        "hubbard_u": {"V": 3.25},
        "ismear": 0,
        "sigma": 0.05,
        "ediff": 1e-5,
        "prec": "Normal",
        "algo": "Fast",
        "lreal": "Auto",
        "lmaxmix": 4,
        "isym": 0,
        "istart": 1,
        "lwave": True,
        "lcharg": False,
        "ncore": None,
        "extra": {},
    },
    "tblite": {
        "method": "GFN1-xTB",
        "electronic_temperature": 300.0,
        "accuracy": 1.0,
        "max_iterations": 250,
        "extra": {},
    },
    "pair": {
        "cutoff": 6.0,
        "cutoff_on": 5.0,
        "pairs": {},
    },
}

KNOWN_CALCULATORS = ("gpaw", "vasp", "tblite", "pair")


def merge_settings(defaults, settings):
    """Deep copy of ``defaults`` updated recursively with ``settings`` (dicts merge, rest replaces).

    ``extra`` and ``pairs`` dicts are replaced rather than merged into, as are mixer,
    occupations and convergence dicts, so that a user's choice there is taken whole.
    """
    out = copy.deepcopy(defaults)
    for key, value in (settings or {}).items():
        if (isinstance(value, dict) and isinstance(out.get(key), dict)
                and key not in _REPLACED_WHOLE):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_REPLACED_WHOLE = {"extra", "pairs", "mixer", "occupations", "convergence", "parallel", "hubbard_u"}


def make_calculator(settings, *, directory, comm=None):
    """ASE calculator for the ``calculator`` settings (a dict as :data:`CALCULATOR_DEFAULTS`).

    ``directory`` is the run folder: GPAW writes ``directory/gpaw.txt``, VASP runs in
    ``directory/vasp``. ``comm`` is an mpi4py communicator for GPAW (``None``: all ranks).
    Raises :class:`UserError` for an unknown or uninstalled calculator.
    """
    settings = merge_settings(CALCULATOR_DEFAULTS, settings)
    name = settings["name"]
    directory = Path(directory)
    if name not in KNOWN_CALCULATORS:
        raise UserError(f"unknown calculator {name!r}: "
                        f"choose one of {', '.join(KNOWN_CALCULATORS)}")
    dispersion = settings["dispersion"]
    if dispersion not in (None, "d3bj"):
        raise UserError(f"calculator.dispersion must be null or 'd3bj', got {dispersion!r}")
    if name == "gpaw":
        calc = make_gpaw(settings["gpaw"], directory=directory, comm=comm)
        xc = settings["gpaw"]["xc"]
    elif name == "vasp":
        # VASP adds D3(BJ) itself (IVDW = 12): no dftd3 on top.
        return make_vasp(settings["vasp"], directory=directory, dispersion=dispersion)
    elif name == "tblite":
        calc = make_tblite(settings["tblite"])
        xc = "PBE"
    else:
        calc = PairPotential(**settings["pair"])
        xc = "PBE"
    if dispersion is None:
        return calc
    d3 = make_d3(settings["d3"].get("method") or xc, settings["d3"].get("three_body", False))
    from ase.calculators.mixing import SumCalculator
    return SumCalculator([calc, d3])


def make_d3(method="PBE", three_body=False):
    """D3 with Becke-Johnson damping from the ``dftd3`` package (two-body unless ``three_body``)."""
    try:
        from dftd3.ase import DFTD3
    except ImportError:
        raise UserError("dftd3 is not installed: pip install dftd3 "
                        "(or set calculator.dispersion: null)") from None
    # load_rational_damping(method, atm): the ATM three-body term only when asked.
    return DFTD3(damping="d3bj", params_tweaks={"method": method, "atm": bool(three_body)})


# --------------------------------------------------------------------------------------------
# GPAW


def setup_gpaw_mpi():
    """Let GPAW run in parallel when started by ``mpirun python ...`` (not ``gpaw python``).

    GPAW 26 refuses to start under an MPI launcher unless ``GPAW_MPI_BACKEND`` is set; this
    chooses the mpi4py backend (so GPAW and the driver share mpi4py's COMM_WORLD) unless the
    user chose one. It must run before ``gpaw.mpi`` is imported: ``import gpaw`` alone may
    already have happened (ASE imports GPAW's plugin, e.g. with ``ase.md``), so the choice is
    also written into the imported ``gpaw`` module. Runs when this module is imported and
    again before every GPAW calculator is made.
    """
    import sys
    launched = any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE",
                                            "I_MPI_MPIRUN"))
    if not launched:
        return
    backend = os.environ.setdefault("GPAW_MPI_BACKEND", "mpi4py")
    gpaw = sys.modules.get("gpaw")
    if (gpaw is not None and getattr(gpaw, "GPAW_MPI_BACKEND", "") is None
            and "gpaw._broadcast_imports" not in sys.modules):
        gpaw.GPAW_MPI_BACKEND = backend


setup_gpaw_mpi()


def gpaw_communicator(comm):
    """GPAW communicator for an mpi4py communicator (``None``: GPAW's world)."""
    if comm is None:
        return None
    from gpaw import mpi as gmpi
    world = gmpi.world
    if comm.Get_size() == 1:
        return gmpi.serial_comm
    from gpaw.mpi4pywrapper import MPI4PYWrapper
    if isinstance(world, MPI4PYWrapper):
        return MPI4PYWrapper(comm, parent=world)
    # GPAW's own C MPI (GPAW_MPI_BACKEND=cgpaw): build the same group from world ranks.
    # Collective over world: every rank of world must call make_calculator together.
    from mpi4py import MPI
    ranks = MPI.Group.Translate_ranks(comm.Get_group(), list(range(comm.Get_size())),
                                      MPI.COMM_WORLD.Get_group())
    return world.new_communicator(np.asarray(ranks, dtype=int))


def gpaw_parameters(settings):
    """GPAW keyword arguments for the ``gpaw`` settings (see :data:`CALCULATOR_DEFAULTS`).

    Everything but ``txt`` and ``communicator``, which :func:`make_gpaw` adds.
    """
    s = merge_settings(CALCULATOR_DEFAULTS["gpaw"], settings)
    mode = s["mode"]
    if mode == "pw":
        mode_arg = {"name": "pw", "ecut": float(s["ecut"])}
    elif mode in ("lcao", "fd"):
        mode_arg = mode
    else:
        raise UserError(f"calculator.gpaw.mode must be 'lcao', 'pw' or 'fd', got {mode!r}")
    kw = {
        "mode": mode_arg,
        "xc": s["xc"],
        "kpts": {"size": list(s["kpts"]), "gamma": True},
        "symmetry": "off",
        "spinpol": bool(s["spinpol"]),
        "convergence": dict(s["convergence"] or {}),
        "maxiter": int(s["maxiter"]),
    }
    if mode == "lcao" or s.get("basis"):
        kw["basis"] = s["basis"]
    if s["h"] is not None:
        kw["h"] = float(s["h"])
    if s["mixer"]:
        kw["mixer"] = gpaw_mixer(s["mixer"])
    if s["occupations"]:
        kw["occupations"] = dict(s["occupations"])
    if s["parallel"]:
        kw["parallel"] = dict(s["parallel"])
    setups = hubbard_setups(s["hubbard_u"])
    if setups:
        kw["setups"] = setups
    kw.update(copy.deepcopy(s["extra"] or {}))
    return kw


def gpaw_mixer(mixer):
    """GPAW's ``mixer=`` value for the ``mixer`` settings: GPAW's own dict, or for
    ``backend: md-pulay`` meltquench's :class:`~meltquench.gpaw_mixer.MDPulay`."""
    mixer = dict(mixer)
    if mixer.get("backend") != "md-pulay":
        return mixer
    from .gpaw_mixer import MDPulay
    mixer.pop("backend")
    allowed = ("beta", "nmaxold", "weight", "keep", "sigma")
    unknown = sorted(set(mixer) - set(allowed))
    if unknown:
        raise UserError(f"calculator.gpaw.mixer: unknown key(s) {', '.join(unknown)} for "
                        f"backend md-pulay (accepted: {', '.join(allowed)})")
    return MDPulay(**mixer)


def hubbard_setups(hubbard_u):
    """GPAW ``setups`` for U_eff (eV) on the d shell: ``{'V': 3.25}`` -> ``{'V': ':d,3.25'}``."""
    setups = {}
    for element, u in (hubbard_u or {}).items():
        if element not in atomic_numbers:
            raise UserError(f"calculator hubbard_u: unknown element {element!r}")
        if u:
            setups[element] = f":d,{float(u):g}"
    return setups


def make_gpaw(settings, *, directory, comm=None):
    """GPAW calculator writing its text output to ``directory/gpaw.txt``."""
    setup_gpaw_mpi()
    try:
        import gpaw  # noqa: F401
    except ImportError:
        raise UserError("gpaw is not installed: pip install gpaw gpaw-data "
                        "(needs libxc, BLAS and MPI headers; 'make setup' installs them)") from None
    from gpaw import GPAW
    directory = Path(directory)
    kw = gpaw_parameters(settings)
    kw["txt"] = str(directory / "gpaw.txt")
    if comm is None or _is_root(comm):
        directory.mkdir(parents=True, exist_ok=True)
    communicator = gpaw_communicator(comm)
    if communicator is not None:
        kw["communicator"] = communicator
    calc = GPAW(**kw)
    order = int(merge_settings(CALCULATOR_DEFAULTS["gpaw"], settings)["extrapolation"] or 0)
    if order and kw["mode"] == "lcao" and not getattr(calc, "old", True):
        calc.meltquench_extrapolation = DensityMatrixExtrapolation(calc, order=order)
    return calc


def _is_root(comm):
    return comm.Get_rank() == 0


class DensityMatrixExtrapolation:
    """Start each MD step's SCF from an extrapolated LCAO density matrix (GPAW 26, Γ point).

    GPAW reuses the previous wave functions when atoms move: the first density of a new step is
    built from the last step's orbitals at the new positions. This goes one step further, as
    SIESTA does for MD: from the converged density matrices ``rho`` (in the basis of atomic
    orbitals, which move with the atoms) of the last ``order + 1`` steps it predicts
    ``rho* = 2 rho_n - rho_(n-1)`` (order 1) or ``3 rho_n - 3 rho_(n-1) + rho_(n-2)``
    (order 2), and hands it to GPAW as orbitals and occupations (its eigenvectors and
    eigenvalues), from which GPAW builds the starting density. It only sets where the SCF
    starts, never what it converges to. Skipped (GPAW's own restart) when the atoms jump by
    more than ``max_step`` Å between calls, and switched off for good, with a line in
    GPAW's text output, where GPAW's internals differ from what it expects (PW/FD mode,
    k-points, band parallelisation).
    """

    COEFFICIENTS = {1: (2.0, -1.0), 2: (3.0, -3.0, 1.0)}

    def __init__(self, calc, order=1, max_step=0.5):
        if order not in self.COEFFICIENTS:
            raise UserError(f"calculator.gpaw.extrapolation must be 0, 1 or 2, got {order!r}")
        self.calc = calc
        self.order = order
        self.max_step = max_step
        self.history = []  # [(positions, [rho_MM per k-point/spin])], newest last
        self.enabled = True
        self.extrapolated = 0  # how many SCFs started from an extrapolated density
        self._move_atoms = calc.move_atoms
        calc.move_atoms = self.move_atoms
        calc.hooks["converged"] = self.store

    def _disable(self, why):
        self.enabled = False
        self.history = []
        try:
            self.calc.log(f"meltquench: density-matrix extrapolation off ({why})")
        except Exception:  # logging must never stop a run
            pass

    def _wave_functions(self):
        dft = self.calc.dft
        if dft.params.mode.name != "lcao":
            raise TypeError("not LCAO mode")
        wfs_list = list(dft.ibzwfs)
        for wfs in wfs_list:
            if wfs.C_nM.dtype != float:
                raise TypeError("complex orbitals (k-points)")
            if wfs.C_nM.dist.comm.size != 1:
                raise TypeError("orbitals distributed over bands")
        return wfs_list

    def store(self):
        """GPAW's 'converged' hook: keep this step's density matrices."""
        if not self.enabled:
            return
        try:
            rhos = [np.array(w.calculate_density_matrix(), copy=True)
                    for w in self._wave_functions()]
        except Exception as exc:
            self._disable(f"{exc.__class__.__name__}: {exc}")
            return
        self.history.append((self.calc.atoms.positions.copy(), rhos))
        del self.history[:-(self.order + 1)]

    def move_atoms(self, atoms):
        if self.enabled and len(self.history) == self.order + 1:
            positions = [p for p, _ in self.history] + [atoms.positions]
            steps = [np.abs(b - a).max() for a, b in zip(positions[:-1], positions[1:])]
            if max(steps) <= self.max_step:
                try:
                    self._extrapolate()
                except Exception as exc:
                    self._disable(f"{exc.__class__.__name__}: {exc}")
            else:
                self.history = []
        return self._move_atoms(atoms)

    def _extrapolate(self):
        coefficients = self.COEFFICIENTS[self.order]
        for u, wfs in enumerate(self._wave_functions()):
            rho = sum(c * rhos[u] for c, (_, rhos) in zip(coefficients, reversed(self.history)))
            nbands = wfs.C_nM.data.shape[0]
            if wfs.domain_comm.rank == 0:
                eig, vec = np.linalg.eigh(0.5 * (rho + rho.T))
                keep = np.sort(np.argsort(-np.abs(eig))[:nbands])
                f_n = np.ascontiguousarray(eig[keep])
                C_nM = np.ascontiguousarray(vec[:, keep].T)
            else:
                f_n = np.empty(nbands)
                C_nM = np.empty_like(wfs.C_nM.data)
            wfs.domain_comm.broadcast(f_n, 0)
            wfs.domain_comm.broadcast(C_nM, 0)
            wfs.C_nM.data[:] = C_nM
            wfs._occ_n = f_n / (wfs.weight * wfs.spin_degeneracy)
            wfs._P_ani = None
        self.extrapolated += 1


# --------------------------------------------------------------------------------------------
# SCF bookkeeping


def inner_calculators(calc):
    """``calc`` and, for ASE's Sum/LinearCombination calculators, the calculators inside."""
    yield calc
    mixer = getattr(calc, "mixer", None)
    for inner in getattr(mixer, "calcs", None) or getattr(calc, "calcs", None) or []:
        yield from inner_calculators(inner)


def scf_iterations(calc):
    """SCF iterations of the last calculation where the calculator tells (GPAW), else None."""
    for c in inner_calculators(calc):
        if getattr(c, "name", None) == "gpaw" or type(c).__module__.startswith("gpaw"):
            try:
                n = c.get_number_of_iterations()
            except Exception:  # no calculation yet
                return None
            return None if n is None else int(n)
    return None


def conservative_fallback(settings):
    """Settings for a retry after SCF non-convergence, or None when there is no fallback.

    ``settings`` is the ``calculator`` section. For GPAW each call returns a more careful
    set than the one given: first the density-matrix extrapolation off, half the mixer step
    (not below 0.02), a Pulay history of at least 20 and twice ``maxiter`` (at most 1000);
    once the mixer is at its floor, twice the smearing width (at most 0.3 eV, about kT at
    4000 K; this changes the forces slightly, so it comes last); then None. Other calculators:
    None.
    """
    settings = merge_settings(CALCULATOR_DEFAULTS, settings)
    if settings["name"] != "gpaw":
        return None
    g = settings["gpaw"]
    new = copy.deepcopy(settings)
    ng = new["gpaw"]
    mixer = dict(g.get("mixer") or {"backend": "pulay", "beta": 0.05, "weight": 50.0})
    mixer["beta"] = max(0.02, round(float(mixer.get("beta", 0.05)) / 2, 4))
    if mixer.get("backend", "pulay") in ("pulay", "msr1", "md-pulay"):
        mixer["nmaxold"] = max(int(mixer.get("nmaxold", 5)), 20)
    ng["mixer"] = mixer
    ng["extrapolation"] = 0
    ng["maxiter"] = min(1000, 2 * int(g.get("maxiter") or 333))
    if (ng["mixer"], ng["extrapolation"]) == (g.get("mixer"), g.get("extrapolation")):
        occ = dict(g.get("occupations") or {"name": "fermi-dirac", "width": 0.1})
        width = float(occ.get("width", 0.1))
        occ["width"] = min(0.3, 2 * width) if width > 0 else 0.05
        ng["occupations"] = occ
    if ng == g:
        return None
    return new


# --------------------------------------------------------------------------------------------
# VASP


def vasp_parameters(settings, *, dispersion=None):
    """Keyword arguments for ASE's ``Vasp`` with the paper's settings (see the defaults)."""
    s = merge_settings(CALCULATOR_DEFAULTS["vasp"], settings)
    kw = {k: v for k, v in s.items() if k not in ("hubbard_u", "extra", "kpts") and v is not None}
    kw["kpts"] = tuple(int(k) for k in s["kpts"])
    kw["gamma"] = bool(s["gamma"])
    luj = {el: {"L": 2, "U": float(u), "J": 0.0} for el, u in (s["hubbard_u"] or {}).items() if u}
    if luj:
        kw.update(ldau=True, ldautype=2, ldau_luj=luj)
    if dispersion == "d3bj":
        kw["ivdw"] = 12
    kw.update(copy.deepcopy(s["extra"] or {}))
    return kw


def make_vasp(settings, *, directory, dispersion=None):
    """ASE ``Vasp`` calculator running in ``directory/vasp``.

    Needs ``ASE_VASP_COMMAND`` (or ``VASP_COMMAND``/``VASP_SCRIPT``) and ``VASP_PP_PATH``, in
    the environment or ASE's configuration file;
    fixed atoms (FixAtoms) are written as selective dynamics in the POSCAR by ASE.
    """
    from ase.calculators.vasp import Vasp
    from ase.config import cfg  # environment variables or ~/.config/ase/config.ini
    if not any(k in cfg for k in ("ASE_VASP_COMMAND", "VASP_COMMAND", "VASP_SCRIPT")):
        raise UserError("VASP is not set up: set ASE_VASP_COMMAND (e.g. 'mpirun vasp_std') "
                        "and VASP_PP_PATH (folder holding potpaw_PBE)")
    if "VASP_PP_PATH" not in cfg:
        raise UserError("VASP_PP_PATH is not set: point it at the folder holding potpaw_PBE")
    vasp_dir = Path(directory) / "vasp"
    vasp_dir.mkdir(parents=True, exist_ok=True)
    return Vasp(directory=str(vasp_dir), **vasp_parameters(settings, dispersion=dispersion))


# --------------------------------------------------------------------------------------------
# tblite


def make_tblite(settings):
    """tblite's xTB (GFN1-xTB by default) through ``tblite.ase.TBLite``."""
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise UserError("tblite is not installed: pip install tblite") from None
    s = merge_settings(CALCULATOR_DEFAULTS["tblite"], settings)
    kw = {k: v for k, v in s.items() if k != "extra"}
    kw["verbosity"] = 0
    kw.update(s["extra"] or {})
    return TBLite(**kw)


# --------------------------------------------------------------------------------------------
# Pair potential

#: Built-in V-O parameters: Born-Mayer repulsion ``A exp(-r/rho)`` between like ions, a Morse
#: bond ``D [(1 - exp(-alpha (r - r0)))^2 - 1]`` between V and O. Fitted so that corundum V2O3
#: (a = 4.952 Å, c = 14.003 Å) is a local minimum of the atom positions at fixed cell (forces
#: below 0.01 eV/Å, all Γ-point force constants positive; V-O bonds 1.97/2.05 Å kept).
V_O_PAIRS = {
    "V-O": {"A": 0.0, "rho": 0.3, "D": 1.0, "alpha": 1.852, "r0": 1.981},
    "V-V": {"A": 1515.0, "rho": 0.3, "D": 0.0, "alpha": 1.0, "r0": 2.0},
    "O-O": {"A": 1347.0, "rho": 0.3, "D": 0.0, "alpha": 1.0, "r0": 2.0},
}

ANIONS = {"N", "O", "F", "S", "Cl", "Se", "Br", "Te", "I"}


def generic_pair(a, b):
    """Parameters for a pair without a built-in set.

    Cation-anion: a Morse bond (D 1 eV, alpha 1.852 1/Å) at 0.9 times the sum of the covalent
    radii; every other pair: the Born-Mayer repulsion of O-O (1347 eV, 0.3 Å).
    """
    if (a in ANIONS) != (b in ANIONS):
        r0 = 0.9 * (covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])
        return {"A": 0.0, "rho": 0.3, "D": 1.0, "alpha": 1.852, "r0": float(r0)}
    return {"A": 1347.0, "rho": 0.3, "D": 0.0, "alpha": 1.0, "r0": 2.0}


class PairPotential(Calculator):
    """Fast, deterministic pair potential for tests and quick trials (any elements).

    ``phi(r) = A exp(-r/rho) + D [(1 - exp(-alpha (r - r0)))^2 - 1]`` per pair of species,
    times a smooth switch (C2, quintic) from ``cutoff_on`` to ``cutoff`` (Å); energy, forces
    and stress are consistent and conserve energy in MD. Periodic images are summed exactly
    (cells of any size and shape, also smaller than the cutoff). Parameters: the V-O set
    :data:`V_O_PAIRS`, :func:`generic_pair` for other pairs, ``pairs`` overrides either
    (keys ``'A-B'``; eV, Å).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    default_parameters = {"cutoff": 6.0, "cutoff_on": 5.0, "pairs": {}}
    nolabel = True

    def __init__(self, **kwargs):
        Calculator.__init__(self, **kwargs)
        if not 0 < self.parameters.cutoff_on < self.parameters.cutoff:
            raise UserError("calculator.pair: need 0 < cutoff_on < cutoff (Å)")

    def pair_parameters(self, symbols):
        """Arrays (A, rho, D, alpha, r0), each (nspecies, nspecies), for sorted ``symbols``."""
        table = {}
        for key, p in {**V_O_PAIRS, **(self.parameters.pairs or {})}.items():
            a, b = key.split("-")
            table[(a, b)] = table[(b, a)] = p
        n = len(symbols)
        arrays = {k: np.zeros((n, n)) for k in ("A", "rho", "D", "alpha", "r0")}
        for i, a in enumerate(symbols):
            for j, b in enumerate(symbols):
                p = {**generic_pair(a, b), **table.get((a, b), {})}
                for k in arrays:
                    arrays[k][i, j] = float(p[k])
        if np.any(arrays["rho"] <= 0) or np.any(arrays["alpha"] <= 0):
            raise UserError("calculator.pair: rho and alpha must be positive")
        return tuple(arrays[k] for k in ("A", "rho", "D", "alpha", "r0"))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms
        symbols = sorted(set(atoms.get_chemical_symbols()))
        kinds = np.array([symbols.index(s) for s in atoms.get_chemical_symbols()], dtype=np.int64)
        rc = float(self.parameters.cutoff)
        ron = float(self.parameters.cutoff_on)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        cell = atoms.cell.array.copy()
        if not pbc.all():
            # Open directions: any cell vector that spans the positions (no images there).
            span = np.ptp(atoms.positions, axis=0).max() + 2 * rc + 1.0 if len(atoms) else 1.0
            complete = atoms.cell.complete().array
            for k in range(3):
                if not pbc[k]:
                    length = np.linalg.norm(complete[k])
                    cell[k] = complete[k] / length * span
        nimg = np.zeros(3, dtype=np.int64)
        volume = abs(np.linalg.det(cell))
        for k in range(3):
            if pbc[k]:
                height = volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
                nimg[k] = int(np.ceil(rc / height + 0.5))
        energy, forces, virial = _pair_kernel(
            np.ascontiguousarray(atoms.positions, dtype=float), cell, np.linalg.inv(cell), kinds,
            *self.pair_parameters(symbols), ron, rc, nimg, pbc.astype(np.int64))
        self.results["energy"] = self.results["free_energy"] = float(energy)
        self.results["forces"] = forces
        if pbc.all():
            stress = virial / atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError
            raise PropertyNotImplementedError("stress needs a cell periodic in all directions")


@njit(cache=True)
def _pair_kernel(pos, cell, inv_cell, kinds, A, rho, D, alpha, r0, r_on, r_c, nimg, pbc):
    """Energy (eV), forces (eV/Å) and virial sum_pairs d (x) dE/dd (eV) of the pair potential."""
    n = pos.shape[0]
    forces = np.zeros((n, 3))
    virial = np.zeros((3, 3))
    energy = 0.0
    frac = pos @ inv_cell
    rc2 = r_c * r_c
    width = r_c - r_on
    s0 = np.empty(3)
    for i in range(n):
        for j in range(i, n):
            ki = kinds[i]
            kj = kinds[j]
            a_ = A[ki, kj]
            rh = rho[ki, kj]
            d_ = D[ki, kj]
            al = alpha[ki, kj]
            b0 = r0[ki, kj]
            for k in range(3):
                ds = frac[j, k] - frac[i, k]
                s0[k] = ds - np.floor(ds + 0.5) if pbc[k] else ds
            w = 0.5 if i == j else 1.0
            for n1 in range(-nimg[0], nimg[0] + 1):
                for n2 in range(-nimg[1], nimg[1] + 1):
                    for n3 in range(-nimg[2], nimg[2] + 1):
                        if i == j and n1 == 0 and n2 == 0 and n3 == 0:
                            continue
                        f0 = s0[0] + n1
                        f1 = s0[1] + n2
                        f2 = s0[2] + n3
                        dx = f0 * cell[0, 0] + f1 * cell[1, 0] + f2 * cell[2, 0]
                        dy = f0 * cell[0, 1] + f1 * cell[1, 1] + f2 * cell[2, 1]
                        dz = f0 * cell[0, 2] + f1 * cell[1, 2] + f2 * cell[2, 2]
                        r2 = dx * dx + dy * dy + dz * dz
                        if r2 >= rc2:
                            continue
                        r = np.sqrt(r2)
                        rep = a_ * np.exp(-r / rh)
                        ex = np.exp(-al * (r - b0))
                        phi = rep + d_ * (ex * ex - 2.0 * ex)
                        dphi = -rep / rh + 2.0 * d_ * al * (ex - ex * ex)
                        if r > r_on:
                            x = (r - r_on) / width
                            sw = 1.0 - x * x * x * (10.0 - 15.0 * x + 6.0 * x * x)
                            dsw = -30.0 * x * x * (1.0 - x) * (1.0 - x) / width
                            dphi = dphi * sw + phi * dsw
                            phi = phi * sw
                        energy += w * phi
                        g = w * dphi / r
                        fx = g * dx
                        fy = g * dy
                        fz = g * dz
                        forces[i, 0] += fx
                        forces[i, 1] += fy
                        forces[i, 2] += fz
                        forces[j, 0] -= fx
                        forces[j, 1] -= fy
                        forces[j, 2] -= fz
                        virial[0, 0] += dx * fx
                        virial[0, 1] += dx * fy
                        virial[0, 2] += dx * fz
                        virial[1, 0] += dy * fx
                        virial[1, 1] += dy * fy
                        virial[1, 2] += dy * fz
                        virial[2, 0] += dz * fx
                        virial[2, 1] += dz * fy
                        virial[2, 2] += dz * fz
    return energy, forces, virial

