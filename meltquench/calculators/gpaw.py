"""GPAW, the default force engine: settings, MPI environment, parameters, SCF bookkeeping.

The defaults (:class:`GPAWSettings`) are tuned for molecular dynamics of the hot PBE+U oxide
melt (measurements in ``benchmarks/README.md``): Fermi-Dirac smearing whose width follows the
programme's target temperature, ``max(k_B T_target, width_min)`` (Mermin's finite-temperature
DFT with the electrons at the ions' temperature: about 0.34 eV in the 4000 K melt, which both
speeds up the SCF and keeps it from stopping in one of the metastable d-occupation solutions of
DFT+U, and 0.05 eV from about 580 K down, so the 300 K hold and the final optimisation run
cold; :func:`smearing_width`, :func:`set_smearing_width`); meltquench's
:class:`~meltquench.calculators.mdpulay.MDPulay` mixer (Pulay mixing, step 0.2, 40 densities,
whose history of the last three MD steps is kept: the slow d-occupation mode is learnt once,
not at every step); GPAW's own convergence criteria (a density residual of 1e-4 per electron: a
looser one leaves forces wrong by 0.1-0.2 eV/Å); and each MD step's SCF started from a
quadratically extrapolated density matrix
(:class:`~meltquench.calculators.extrapolation.DensityMatrixExtrapolation`) on top of GPAW's
own reuse of the previous wave functions. The driver must keep one calculator for the whole run.

GPAW itself is imported only when a calculator is made (it is slow to import and sets up MPI).
Under ``mpirun python ...`` or ``mpirun meltquench run`` GPAW needs an MPI backend chosen
before ``gpaw.mpi`` is imported: :func:`setup_gpaw_mpi` runs when this module is imported and
again in :func:`make_gpaw`.

Units are ASE's: eV, Å; the smearing ``width`` is in eV, ``ecut`` in eV.
"""
import copy
import importlib.util
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Union

import numpy as np
from ase import units
from ase.data import atomic_numbers

from ..errors import UserError
from .base import Settings, inner_calculators, setting
from .extrapolation import DensityMatrixExtrapolation, XLBOMDExtrapolation

#: Keys of ``mixer`` accepted with ``backend: md-pulay`` (:class:`~.mdpulay.MDPulay`'s arguments).
MD_PULAY_KEYS = ("beta", "nmaxold", "weight", "keep", "sigma")


def setup_gpaw_mpi():
    """Let GPAW run in parallel when started by ``mpirun python ...`` (not ``gpaw python``).

    GPAW 26 refuses to start under an MPI launcher unless ``GPAW_MPI_BACKEND`` is set; this
    chooses the mpi4py backend (so GPAW and the driver share mpi4py's COMM_WORLD) unless the
    user chose one. It must run before ``gpaw.mpi`` is imported: ``import gpaw`` alone may
    already have happened (ASE imports GPAW's plugin, e.g. with ``ase.io``), so the choice is
    also written into the imported ``gpaw`` module.
    """
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


@dataclass
class GPAWSettings(Settings):
    """``calculator.gpaw``: GPAW's parameters for molecular dynamics (eV, Å)."""

    section = "calculator.gpaw"
    unknown_key_hint = "put any other gpaw keyword under calculator.gpaw.extra"

    mode: str = setting("lcao", "'lcao' (for long MD), 'pw' (plane waves, see ecut) or 'fd'")
    basis: Optional[Union[str, dict]] = setting(
        "sz(dzp)", "LCAO basis set: 'sz(dzp)' (quick) or 'dzp' (the paper presets), or "
        "{element: basis}")
    ecut: float = setting(450.0, "plane-wave cutoff (eV), PW mode")
    xc: Union[str, dict] = setting("PBE", "exchange-correlation functional")
    hubbard_u: Optional[dict] = setting(
        {"V": 3.25}, "{element: U_eff (eV)} on the d shell (Dudarev), as GPAW's "
        "setups={'V': ':d,3.25'}")
    spinpol: Optional[bool] = setting(
        None, "kept so that older configuration files load: use calculator.spinpol, the one "
        "spin key GPAW and VASP both read (null here: follow it; a value must agree with it)")
    kpts: list = setting([1, 1, 1], "Gamma-centred k-point grid")
    h: Optional[float] = setting(None, "grid spacing (Å); null: GPAW's default (0.2 Å in LCAO)")
    mixer: Optional[dict] = setting(
        {"backend": "md-pulay", "beta": 0.2, "nmaxold": 40, "weight": 20.0, "keep": 3},
        "density mixer: backend 'md-pulay' (Pulay mixing remembered across MD steps: beta, "
        "nmaxold, weight, keep, sigma) or GPAW's own ('pulay', 'msr1') with GPAW's keys; "
        "null: GPAW's default")
    occupations: Optional[dict] = setting(
        {"name": "fermi-dirac", "width": 0.3},
        "smearing: name 'fermi-dirac' or 'marzari-vanderbilt', width (eV; used as it is with "
        "electronic_temperature: fixed)")
    electronic_temperature: str = setting(
        "follow", "'follow': the smearing width of each MD step is k_B T_target (Mermin), at "
        "least width_min, so the melt runs hot and the 300 K hold and the final optimisation "
        "cold; 'fixed': occupations.width throughout")
    width_min: float = setting(0.05, "floor of the followed smearing width (eV)")
    convergence: Optional[dict] = setting(
        {"energy": 0.0005, "density": 1e-4, "eigenstates": 4e-8},
        "GPAW's SCF criteria: energy (eV per valence electron), density (electrons per valence "
        "electron), eigenstates (eV^2 per valence electron), forces (eV/Å)")
    maxiter: int = setting(200, "SCF iterations before GPAW gives up")
    scf_stagnation: int = setting(
        25, "give an SCF up (then the fallback settings retry the step) when its density error "
        "has not halved in this many iterations (0: never; see calculators/stagnation.py)")
    extrapolation: Union[int, str] = setting(
        2, "how each MD step's SCF starts (LCAO, Gamma point): 0 GPAW's own start, 1 or 2 the "
        "density matrix extrapolated linearly or quadratically, 'xl' an auxiliary density "
        "matrix propagated time-reversibly as in extended-Lagrangian BOMD (Niklasson 2009)")
    parallel: Optional[Union[str, dict]] = setting(
        "auto", "GPAW's parallel dict, e.g. {band: 2} (the LCAO eigensolver in ScaLAPACK) or "
        "{domain: 4, band: 2}; null: GPAW's own choice (domain decomposition); 'auto': "
        "{band: 2} where it was measured faster (LCAO, Gamma point, an even number of ranks, "
        "at least 150 atoms, GPAW with ScaLAPACK), else GPAW's own choice")
    extra: Optional[dict] = setting({}, "any further GPAW keyword, applied last (overrides "
                                    "everything above)")

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in ("lcao", "pw", "fd"):
            raise UserError(f"calculator.gpaw.mode must be 'lcao', 'pw' or 'fd', "
                            f"got {self.mode!r}")
        if (not isinstance(self.scf_stagnation, int) or isinstance(self.scf_stagnation, bool)
                or self.scf_stagnation < 0):
            raise UserError(f"calculator.gpaw.scf_stagnation must be a whole number >= 0 "
                            f"(0: off), got {self.scf_stagnation!r}")
        if isinstance(self.extrapolation, bool) or self.extrapolation not in (0, 1, 2, "xl"):
            raise UserError(f"calculator.gpaw.extrapolation must be 0, 1, 2 or 'xl', "
                            f"got {self.extrapolation!r}")
        if not (self.parallel is None or self.parallel == "auto"
                or isinstance(self.parallel, dict)):
            raise UserError(f"calculator.gpaw.parallel must be 'auto', null or GPAW's parallel "
                            f"dict such as {{band: 2}}, got {self.parallel!r}")
        if self.mixer and self.mixer.get("backend") == "md-pulay":
            unknown = sorted(set(self.mixer) - {"backend", *MD_PULAY_KEYS})
            if unknown:
                raise UserError(f"calculator.gpaw.mixer: unknown key(s) {', '.join(unknown)} "
                                f"for backend md-pulay (accepted: {', '.join(MD_PULAY_KEYS)})")
        hubbard_setups(self.hubbard_u)
        if self.electronic_temperature not in ("follow", "fixed"):
            raise UserError(f"calculator.gpaw.electronic_temperature must be 'follow' or "
                            f"'fixed', got {self.electronic_temperature!r}")
        if self.electronic_temperature == "follow":
            if not self.occupations or "width" not in self.occupations:
                raise UserError("calculator.gpaw.electronic_temperature: follow needs a "
                                "smearing (calculator.gpaw.occupations with a width)")
            if not float(self.width_min) > 0:
                raise UserError(f"calculator.gpaw.width_min must be > 0 eV, got "
                                f"{self.width_min!r}")

    def smearing_width(self, temperature_K):
        """The smearing width (eV) of an MD step whose target temperature is
        ``temperature_K``: ``max(k_B T, width_min)`` when following, else None (fixed)."""
        if self.electronic_temperature != "follow":
            return None
        return max(float(self.width_min), units.kB * float(temperature_K))

    def describe(self):
        """One line, e.g. ``GPAW LCAO sz(dzp), PBE, U 3.25 eV on V d``."""
        if self.mode == "lcao":
            basis = f"LCAO {self.basis}"
        elif self.mode == "pw":
            basis = f"PW {self.ecut} eV"
        else:
            basis = "FD"
        u = ", ".join(f"U {v} eV on {k} d" for k, v in (self.hubbard_u or {}).items())
        smearing = (f", smearing max(kT, {self.width_min:g} eV)"
                    if self.electronic_temperature == "follow" else "")
        return f"GPAW {basis}, {self.xc}" + (f", {u}" if u else "") + smearing

    def fallback(self):
        """Settings for a retry after SCF non-convergence, or None when there is no further one.

        Each call gives a more careful set than this one: first the density-matrix
        extrapolation off, half the mixer step (not below 0.02), a Pulay history of at least 20
        and twice ``maxiter`` (at most 1000); once the mixer is at its floor, twice the
        smearing width (at most 0.3 eV, about kT at 4000 K; this changes the forces slightly,
        so it comes last); then None.
        """
        mixer = dict(self.mixer or {"backend": "pulay", "beta": 0.05, "weight": 50.0})
        mixer["beta"] = max(0.02, round(float(mixer.get("beta", 0.05)) / 2, 4))
        if mixer.get("backend", "pulay") in ("pulay", "msr1", "md-pulay"):
            mixer["nmaxold"] = max(int(mixer.get("nmaxold", 5)), 20)
        new = replace(self, mixer=mixer, extrapolation=0,
                      maxiter=min(1000, 2 * int(self.maxiter or 333)))
        if ((new.mixer, new.extrapolation) == (self.mixer, self.extrapolation)
                and self.electronic_temperature == "follow"):
            new = replace(new, width_min=min(0.3, 2 * float(self.width_min)))
        elif (new.mixer, new.extrapolation) == (self.mixer, self.extrapolation):
            occupations = dict(self.occupations or {"name": "fermi-dirac", "width": 0.1})
            width = float(occupations.get("width", 0.1))
            occupations["width"] = min(0.3, 2 * width) if width > 0 else 0.05
            new = replace(new, occupations=occupations)
        return None if new == self else new


def hubbard_setups(hubbard_u):
    """GPAW ``setups`` for U_eff (eV) on the d shell: ``{'V': 3.25}`` -> ``{'V': ':d,3.25'}``."""
    setups = {}
    for element, u in (hubbard_u or {}).items():
        if element not in atomic_numbers:
            raise UserError(f"calculator hubbard_u: unknown element {element!r}")
        if u:
            setups[element] = f":d,{float(u):g}"
    return setups


def gpaw_parameters(settings):
    """GPAW keyword arguments for :class:`GPAWSettings` (or a dict of some of its fields).

    Everything but ``txt`` and ``communicator``, which :func:`make_gpaw` adds.
    """
    s = GPAWSettings.from_dict(settings)
    mode = {"name": "pw", "ecut": float(s.ecut)} if s.mode == "pw" else s.mode
    kw = {
        "mode": mode,
        "xc": s.xc,
        "kpts": {"size": list(s.kpts), "gamma": True},
        "symmetry": "off",
        "spinpol": bool(s.spinpol),
        "convergence": dict(s.convergence or {}),
        "maxiter": int(s.maxiter),
    }
    if s.mode == "lcao" or s.basis:
        kw["basis"] = s.basis
    if s.h is not None:
        kw["h"] = float(s.h)
    if s.mixer:
        kw["mixer"] = gpaw_mixer(s.mixer)
    if s.occupations:
        kw["occupations"] = dict(s.occupations)
    if isinstance(s.parallel, dict) and s.parallel:
        kw["parallel"] = dict(s.parallel)
    setups = hubbard_setups(s.hubbard_u)
    if setups:
        kw["setups"] = setups
    kw.update(copy.deepcopy(s.extra or {}))
    return kw


def gpaw_mixer(mixer):
    """GPAW's ``mixer=`` value for the ``mixer`` settings: GPAW's own dict, or for
    ``backend: md-pulay`` meltquench's :class:`~meltquench.calculators.mdpulay.MDPulay`."""
    mixer = dict(mixer)
    if mixer.get("backend") != "md-pulay":
        return mixer
    from .mdpulay import MDPulay  # imports gpaw
    mixer.pop("backend")
    return MDPulay(**mixer)


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


#: ``parallel: auto`` splits the bands over 2 ranks from this many atoms on. Measured MD step on
#: 2 ranks, GPAW's domain decomposition against {band: 2} (benchmarks/README.md): 30 atoms
#: 51.6 against 62.2 s, 60: 109 against 116 s, 120: 462 against 481 s, 240: 1,690-1,952
#: against 1,314 s. The LCAO eigenproblem (N^3), which GPAW otherwise solves on one rank,
#: takes over between 120 and 240 atoms.
BAND_PARALLEL_FROM_ATOMS = 150


def gpaw_has_scalapack():
    """Whether the installed GPAW was built with ScaLAPACK (False if GPAW is missing).

    Read from GPAW's compiled extension ``_gpaw`` without importing GPAW, so that a dry run
    stays free of it: GPAW compiles its BLACS wrappers (``c/blacs.c``) only with ScaLAPACK,
    and they call ``Cblacs_gridinit``."""
    try:
        spec = importlib.util.find_spec("_gpaw")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return False
    with open(spec.origin, "rb") as extension:
        return b"Cblacs_gridinit" in extension.read()


def choose_parallel(settings, natoms, ranks, scalapack=None):
    """GPAW's ``parallel`` dict for ``calculator.gpaw.parallel`` (None: GPAW's own choice).

    A dict or null is used as it is. ``'auto'`` gives ``{band: 2}`` (the LCAO eigensolver in
    ScaLAPACK on 2 ranks, the rest of the ranks split the domain) where that was measured
    faster: LCAO at the Γ point, an even number of ``ranks``, at least
    :data:`BAND_PARALLEL_FROM_ATOMS` atoms (``natoms``; None: unknown, so not) and a GPAW built
    with ScaLAPACK (``scalapack``; None: ask GPAW). Else None. Measured on 2 ranks only: on
    many ranks a layout of your own, timed with ``meltquench run --dry-run --calibrate``, may
    do better."""
    s = GPAWSettings.from_dict(settings)
    if s.parallel != "auto":
        return dict(s.parallel) if s.parallel else None
    if (s.mode != "lcao" or list(s.kpts) != [1, 1, 1] or ranks < 2 or ranks % 2
            or natoms is None or natoms < BAND_PARALLEL_FROM_ATOMS):
        return None
    if scalapack is None:
        scalapack = gpaw_has_scalapack()
    return {"band": 2} if scalapack else None


def make_gpaw(settings, *, directory, comm=None, natoms=None):
    """GPAW calculator for :class:`GPAWSettings` (or a dict), writing ``directory/gpaw.txt``.

    ``comm`` is an mpi4py communicator (``None``: all ranks of GPAW's world); ``natoms``, the
    number of atoms it will compute, chooses the layout of ``parallel: auto``
    (:func:`choose_parallel`; None: GPAW's own). In LCAO mode with
    ``extrapolation`` on, the calculator carries its
    :class:`~meltquench.calculators.extrapolation.DensityMatrixExtrapolation` as
    ``calc.meltquench_extrapolation``.
    """
    setup_gpaw_mpi()
    try:
        import gpaw  # noqa: F401
    except ImportError:
        raise UserError("gpaw is not installed: pip install gpaw gpaw-data "
                        "(needs libxc, BLAS and MPI headers; 'make setup' installs them)") from None
    from gpaw import GPAW
    settings = GPAWSettings.from_dict(settings)
    directory = Path(directory)
    kw = gpaw_parameters(settings)
    kw["txt"] = str(directory / "gpaw.txt")
    if settings.scf_stagnation:
        from .stagnation import Stagnation  # imports gpaw
        convergence = dict(kw.get("convergence") or {})
        custom = convergence.get("custom", [])
        convergence["custom"] = ([custom] if not isinstance(custom, (list, tuple))
                                 else list(custom)) + [Stagnation(settings.scf_stagnation)]
        kw["convergence"] = convergence
    if comm is None or comm.Get_rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
    communicator = gpaw_communicator(comm)
    if communicator is not None:
        kw["communicator"] = communicator
    if settings.parallel == "auto" and "parallel" not in kw:  # calculator.gpaw.extra wins
        from gpaw.mpi import world
        parallel = choose_parallel(settings, natoms,
                                   comm.Get_size() if comm is not None else world.size)
        if parallel:
            kw["parallel"] = parallel
    calc = GPAW(**kw)
    if settings.extrapolation and kw["mode"] == "lcao" and not getattr(calc, "old", True):
        calc.meltquench_extrapolation = (
            XLBOMDExtrapolation(calc) if settings.extrapolation == "xl"
            else DensityMatrixExtrapolation(calc, order=settings.extrapolation))
    return calc


def set_smearing_width(calc, width_eV):
    """Set the smearing width (eV) of every GPAW calculator in ``calc`` (a sum of calculators
    included) from its next calculation on, keeping its wave functions, density and mixer.

    GPAW's own ``change(occupations=...)`` would rebuild the SCF loop and with it the mixer's
    history, so the width of the live occupation-number calculator is set instead, and the
    parameters are updated for any later rebuild (a new number of atoms). Returns the number
    of GPAW calculators changed.
    """
    changed = 0
    for c in inner_calculators(calc):
        occupations = getattr(getattr(c, "params", None), "occupations", None)
        if not hasattr(occupations, "params"):  # not GPAW 26's ASE interface
            continue
        occupations.params["width"] = float(width_eV)
        dft = getattr(c, "_dft", None)
        if dft is not None:
            smearing = dft.scf_loop.occ_calc.occ
            if not hasattr(smearing, "_width"):
                raise UserError(f"cannot change the smearing width of GPAW's "
                                f"{type(smearing).__name__} during a run: use "
                                "calculator.gpaw.electronic_temperature: fixed")
            smearing._width = float(width_eV)
        changed += 1
    return changed


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


def _scf_memories(calc):
    """``(extrapolation, mixer)`` of each GPAW calculation in ``calc`` that remembers earlier
    MD steps (either may be None)."""
    for c in inner_calculators(calc):
        extrapolation = getattr(c, "meltquench_extrapolation", None)
        mixer = getattr(getattr(getattr(c, "_dft", None), "scf_loop", None), "mixer", None)
        mixer = mixer if hasattr(mixer, "state_fits") else None  # md-pulay's
        if extrapolation is not None or mixer is not None:
            yield extrapolation, mixer


def scf_memory(calc, comm):
    """What GPAW carries from one MD step's SCF to the next, as plain data for a checkpoint:
    the density-matrix extrapolation's history (each spin's matrices whole on the ranks that
    hold that spin; gathered by spin to rank 0) and
    the md-pulay mixer's secant pairs (one part per rank, gathered to rank 0). With it a
    restarted run's next SCF starts and mixes as the uninterrupted run's did, so the run
    continues bit for bit rather than to the SCF's precision. ``{}`` for calculators that
    remember nothing. Collective over ``comm`` (the run's communicator, GPAW's ranks); the
    result is complete on rank 0 only.

    Size: the extrapolation keeps ``(order + 1) * spins`` matrices of ``M**2`` doubles for M
    atomic orbitals (0.26 GB at the paper's 240 atoms in dzp, M = 3,312, order 2; ``xl``
    keeps seven per spin, 0.61 GB), the mixer
    up to ``nmaxold - 1`` pairs of two grid arrays (0.17 GB there on a 44x44x140 grid)."""
    memory = {}
    for extrapolation, mixer in _scf_memories(calc):
        state = extrapolation.get_state() if extrapolation is not None else None
        if state is not None:
            memory["extrapolation"] = _every_spin(state, extrapolation.local_spins(), comm)
        if mixer is not None:
            memory["mixer"] = comm.gather(mixer.get_state(), root=0)
    return memory


#: the extrapolation state's entries that hold matrices per spin: [step][spin]
_PER_SPIN = ("rho", "aux")


def _every_spin(state, spins, comm):
    """This rank's extrapolation ``state`` (matrices of its own ``spins``, in that order) with
    every other rank's: each step's matrices for spin 0, 1, ... and ``spins`` listing them,
    complete on rank 0. Collective."""
    pieces = comm.gather((list(spins), state), root=0)
    if pieces is None:
        return state
    whole = dict(state)
    for key in _PER_SPIN:
        if state.get(key) is None:
            continue
        steps = []
        for h in range(len(state[key])):
            by_spin = {s: piece[key][h][u] for held, piece in pieces for u, s in enumerate(held)}
            steps.append([by_spin[s] for s in sorted(by_spin)])
        whole[key] = steps
    whole["spins"] = sorted({s for held, _ in pieces for s in held})
    return whole


def _my_spins(state, spins):
    """The matrices of this rank's ``spins`` from :func:`_every_spin` output; None if a spin
    is missing. A checkpoint written before the spins were gathered has no ``spins`` and is
    taken as it is (rank 0's matrices, right unless the SCF was split over spins)."""
    every = state.get("spins")
    if every is None:
        return state
    every = [int(s) for s in every]
    if any(s not in every for s in spins):
        return None
    mine = dict(state)
    for key in _PER_SPIN:
        if state.get(key) is not None:
            mine[key] = [[mats[every.index(s)] for s in spins] for mats in state[key]]
    return mine


def restore_scf_memory(calc, memory, comm):
    """Put :func:`scf_memory` output back into ``calc``, after the restarted run's first
    force call (at the checkpoint's positions): it replaces what that SCF remembered. Parts
    that do not fit (another number of ranks or layout, a changed setting) are left out, and
    the run then continues to the SCF's precision instead. Collective over ``comm``. Returns
    the names of the parts in ``memory`` that were left out."""
    left_out = []
    memory = memory or {}
    for extrapolation, mixer in _scf_memories(calc):
        state = memory.get("extrapolation")
        if state and extrapolation is not None:
            state = _my_spins(state, extrapolation.local_spins())
        if memory.get("extrapolation") and (
                extrapolation is None or state is None or not extrapolation.set_state(state)):
            left_out.append("extrapolation history")
        parts = memory.get("mixer")
        if parts:
            part = parts[comm.Get_rank()] if len(parts) == comm.Get_size() else None
            fits = mixer is not None and part is not None and mixer.state_fits(part)
            if comm.allreduce(int(fits)) == comm.Get_size():
                mixer.set_state(part)
            else:
                left_out.append("mixer pairs")
        return left_out
    return [name for name, key in (("extrapolation history", "extrapolation"),
                                   ("mixer pairs", "mixer")) if memory.get(key)]


def is_scf_failure(exc):
    """True if ``exc`` is GPAW's SCF non-convergence (``gpaw.KohnShamConvergenceError``)."""
    try:
        from gpaw import KohnShamConvergenceError
    except ImportError:
        return False
    return isinstance(exc, KohnShamConvergenceError)


def parallel_layout(calc):
    """'kpt 1, domain 2, band 1' as GPAW set it up (after its first calculation), else None."""
    for c in inner_calculators(calc):
        wfs = getattr(getattr(c, "_dft", None), "ibzwfs", None)  # GPAW 26's ASE interface
        if wfs is not None:
            return (f"kpt {wfs.kpt_comm.size}, domain {wfs.domain_comm.size}, "
                    f"band {wfs.band_comm.size}")
    return None


def parallel_plan_text(settings, ranks, natoms):
    """What GPAW will do on ``ranks`` ranks for ``natoms`` atoms with :class:`GPAWSettings`
    ``settings`` (its ``parallel`` key).

    GPAW's own choice (``parallel: null``, or ``auto`` where :func:`choose_parallel` keeps
    it): with the Γ point only there are no k-points to share, so GPAW decomposes the
    real-space domain over all ranks (bands are not split unless asked). GPAW 26's LCAO
    eigensolver then runs on one rank while the others wait (at 240 atoms about a quarter of
    an SCF iteration on one rank: ``benchmarks/README.md``). ``{band: N}`` splits the
    orbitals, the potential matrix and the eigenproblem (ScaLAPACK; GPAW must be built with
    it, as ``scripts/setup.sh`` does where Debian's ScaLAPACK is installed). GPAW 26's new
    code ignores the old ``sl_auto``/``sl_default`` keys.
    """
    s = GPAWSettings.from_dict(settings)
    if ranks == 1:
        return "serial (one rank)"
    chosen = choose_parallel(s, natoms, ranks)
    if chosen and s.parallel == "auto":
        return (f"auto: band 2 (the LCAO eigensolver in ScaLAPACK), the domain split over the "
                f"rest; chosen from {BAND_PARALLEL_FROM_ATOMS} atoms on an even number of "
                "ranks (240 atoms on 2 ranks: a step 1.83x faster than on one, against 1.33x "
                "with GPAW's own layout)")
    if not chosen:
        why = ""
        if s.parallel == "auto":
            why = (f" (parallel: auto keeps it: it splits the bands only from "
                   f"{BAND_PARALLEL_FROM_ATOMS} atoms, on an even number of ranks, in LCAO at "
                   "the Γ point, with a GPAW built with ScaLAPACK)")
        return (f"GPAW's own: domain decomposition over {ranks} ranks, kpt 1 (Γ point), band 1 "
                f"(the LCAO eigensolver on one rank){why}")
    return "as configured: " + ", ".join(f"{k}={v}" for k, v in chosen.items())
