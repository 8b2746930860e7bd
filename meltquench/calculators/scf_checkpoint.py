"""A long GPAW SCF that survives a stop: the SCF in progress, on disk, and where it goes on.

A DFT single point of the paper's 240-atom model (LCAO dzp, spin-polarised PBE+U) takes 62-67
SCF iterations of 169 s each on 2 ranks: three hours in one call, more than a session, a batch
job's wall time or a night may give. :class:`SCFCheckpoint` writes, every ``every_s`` seconds
of an SCF (GPAW's ``scf_step`` hook), what the SCF knows after that iteration:

- the LCAO density matrices of its last diagonalisation, one per spin (M x M doubles for M
  atomic orbitals: 88 MB per spin at 240 atoms in dzp), gathered from the ranks that hold
  them (an SCF on 2 ranks holds one spin per rank), with the positions they belong to;
- its memory (:func:`scf_memory`): the mixer's history of densities and residuals (GPAW's
  MSR1 and Pulay, meltquench's MD Pulay; about ``5 * nmaxold`` grid densities for MSR1)
  and the convergence criteria's past energies and density errors.

It stops the SCF there, everything written first, when ``should_stop`` says so (a stop
signal, the ``--stop-after`` budget). :meth:`SCFCheckpoint.resume` sets up the next
calculation at the same positions, rebuilds the stopped SCF's output density from the density
matrices (as orbitals and occupations), mixes it with the restored history and goes on: the
resumed SCF is the rest of the stopped one, the same iterations and the same result to
rounding (tests: 1e-12 eV serial and on 2 ranks). Where the memory does not fit (other ranks
or layout, a mixer it cannot keep, a file without it) the SCF resumes from the density
matrices with a fresh mixer and says so; that loses what the mixer had learnt (on a cold
spin-polarised PBE+U 30-atom frame, 88 iterations uninterrupted, a resume from iteration 20
took 86 more, benchmarks/README "A finish's SCF stopped and resumed").

GPAW 26's LCAO mode at the Γ point only (:func:`supported`); nothing is written otherwise.
The file is ``numpy.savez`` data (no pickles), read with ``allow_pickle=False``.
"""
import copy
import io
import time
from collections import deque
from pathlib import Path

import numpy as np

from ..errors import Interrupted
from ..rundir import write_atomic
from .base import inner_calculators
from .extrapolation import density_matrix, set_start

FORMAT = "meltquench SCF checkpoint 1"
#: its name in a run or finish folder
FILE_NAME = "scf.npz"
#: positions (Å) farther than this from the checkpoint's are another calculation's
POSITION_TOLERANCE_A = 1e-6


def gpaw_calculator(calc):
    """The GPAW calculator (GPAW 26's ASE interface) in ``calc`` (a sum included), or None."""
    for c in inner_calculators(calc):
        if type(c).__module__.startswith("gpaw") and hasattr(c, "hooks"):
            return c
    return None


def supported(gpaw):
    """True if ``gpaw``'s SCF state is an LCAO density matrix this module can keep: LCAO mode
    and one k-point (real orbitals), parameters as GPAW 26 has them."""
    params = getattr(gpaw, "params", None)
    mode = getattr(getattr(params, "mode", None), "name", None)
    size = getattr(getattr(params, "kpts", None), "size", None)
    return mode == "lcao" and size is not None and int(np.prod(size)) == 1


class SCFCheckpoint:
    """Keep the SCF in progress of every GPAW calculator :meth:`attach` is given in ``path``.

    ``every_s``: seconds of SCF between writes (0: every iteration); ``comm``: the mpi4py
    communicator of GPAW's ranks (rank 0 writes); ``should_stop(iteration, iteration_s)``: None
    to go on, or why to stop (the same on every rank; collective), after which the density is
    written and :class:`~meltquench.errors.Interrupted` raised with that text.
    """

    def __init__(self, path, every_s=600.0, comm=None, should_stop=None):
        self.path = Path(path)
        self.every_s = float(every_s)
        self.comm = comm
        self.should_stop = should_stop
        self.written = 0  # checkpoints written
        self.last_iteration = None  # the SCF iteration of the last one

    # ---- collective helpers (work without MPI too)
    def _rank(self):
        return 0 if self.comm is None else self.comm.Get_rank()

    def _bcast(self, value):
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def attach(self, calc):
        """Watch the SCF of the GPAW calculator in ``calc``; False (nothing done) for other
        calculators and modes."""
        gpaw = gpaw_calculator(calc)
        if gpaw is None or not supported(gpaw):
            return False
        clock = {"last_write": None, "previous": None}  # of this SCF
        chained = gpaw.hooks.get("scf_step")

        def on_step(ctx):
            if chained is not None:
                chained(ctx)
            now = time.perf_counter()
            if ctx.niter == 1 or clock["previous"] is None:
                clock.update(last_write=now, previous=now)
            iteration_s = now - clock["previous"]
            clock["previous"] = now
            due = self._bcast(now - clock["last_write"] >= self.every_s)
            stop = None if self.should_stop is None else self.should_stop(ctx.niter, iteration_s)
            if due or stop:
                self.write(gpaw, ctx.niter, ctx)
                clock["last_write"] = now
            if stop:
                raise Interrupted(f"{stop}; the SCF's density after its iteration {ctx.niter} "
                                  f"is in {self.path}")
        gpaw.hooks["scf_step"] = on_step
        return True

    def write(self, gpaw, iteration, ctx=None):
        """The density matrices of ``gpaw``'s last diagonalisation, with its positions, into
        :attr:`path` (collective; rank 0 writes, atomically). With ``ctx`` (the SCF iteration's
        context, as GPAW's ``scf_step`` hook gives it) the SCF's memory goes too: the mixer's
        history and the convergence criteria's, as they will be after this iteration."""
        dft = gpaw.dft
        rhos = self._gather_by_spin({wfs.spin: density_matrix(wfs) for wfs in dft.ibzwfs})
        memory = {} if ctx is None else scf_memory(dft.scf_loop, ctx, self.comm)
        if self._rank() == 0:
            data = {f"rho_{u}": rho for u, rho in sorted(rhos.items())}
            buffer = io.BytesIO()
            np.savez(buffer, format=np.array(FORMAT), positions=gpaw.atoms.positions,
                     numbers=gpaw.atoms.numbers, iteration=np.array(int(iteration)),
                     fermi_levels=np.asarray(dft.ibzwfs.fermi_levels, float),
                     spins=np.array(len(rhos)), **data, **memory)
            write_atomic(self.path, buffer.getvalue())
        self.written += 1
        self.last_iteration = int(iteration)

    def _gather_by_spin(self, mine):
        """spin -> density matrix of every spin on rank 0 (an SCF split over spins holds one
        spin's orbitals per rank; ranks that split a spin's bands or grid hold the same)."""
        if self.comm is None:
            return mine
        pieces = self.comm.gather(mine, root=0)
        return {} if pieces is None else {u: rho for piece in pieces for u, rho in piece.items()}

    def read(self):
        """The checkpoint as a dict (rank 0 reads, every rank gets it), or a str saying why
        there is none to use."""
        state = None
        if self._rank() == 0:
            state = _read(self.path)
        return self._bcast(state)

    def resume(self, calc, atoms):
        """Start ``calc``'s next SCF (GPAW in it, not yet run) at ``atoms`` from the checkpoint
        if it holds these positions; returns a line saying what was done, or None when there
        is no checkpoint. Collective."""
        gpaw = gpaw_calculator(calc)
        if gpaw is None or not supported(gpaw):
            return None
        state = self.read()
        if state is None:
            return None
        if isinstance(state, str):
            return f"the SCF starts afresh: {state}"
        if (state["numbers"].shape != atoms.numbers.shape
                or np.any(state["numbers"] != atoms.numbers)
                or np.abs(state["positions"] - atoms.positions).max() > POSITION_TOLERANCE_A):
            return (f"the SCF starts afresh: {self.path} holds the SCF of other positions "
                    "(an earlier step)")
        gpaw.initialize(atoms)
        wfs_list = list(gpaw.dft.ibzwfs)  # this rank's spins
        rhos = state["rho"]
        sizes = {wfs.C_nM.shape[1] for wfs in wfs_list}
        if len(rhos) != gpaw.dft.ibzwfs.nspins or any(
                rho.shape != (n, n) for rho in rhos for n in sizes):
            return (f"the SCF starts afresh: the density in {self.path} does not fit this "
                    "calculation (another basis or spin setting)")
        for wfs in wfs_list:
            set_start(wfs, rhos[wfs.spin])
        gpaw.dft.ibzwfs.fermi_levels = np.array(state["fermi_levels"], float)
        gpaw._dft = gpaw.dft.move_atoms(gpaw.atoms)  # the density and potential of the start
        how = ("with its mixer's memory" if restore_scf_memory(gpaw.dft, state["memory"], self.comm)
               else "with a fresh mixer (the stopped SCF's memory does not fit these ranks)"
               if state["memory"] else "with a fresh mixer")
        return (f"the SCF resumes from the density after iteration {state['iteration']} of "
                f"the stopped one ({self.path}), {how}")


def _read(path):
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != FORMAT:
                return f"{path} is not a meltquench SCF checkpoint"
            spins = int(data["spins"])
            return {"positions": np.array(data["positions"], float),
                    "numbers": np.array(data["numbers"], int),
                    "iteration": int(data["iteration"]),
                    "fermi_levels": np.array(data["fermi_levels"], float),
                    "rho": [np.array(data[f"rho_{u}"], float) for u in range(spins)],
                    "memory": {key: np.array(data[key]) for key in data.files
                               if key.startswith(MEMORY_PREFIXES)}}
    except (OSError, ValueError, KeyError) as exc:
        return f"cannot read {path} ({type(exc).__name__}: {exc})"


# ---- the SCF's memory: what a stopped SCF knew beyond its density
#
# GPAW's SCF iteration n ends (after the ``scf_step`` hook) by building the output density
# from the orbitals just found and mixing it with the mixer's history into the next input
# density. A resumed SCF that rebuilds that output density from the density matrix and mixes
# it with the same history continues the same sequence of densities; one that starts its mixer
# afresh loses what the history had learnt (on the +U creep: as many iterations as it had run,
# benchmarks/README "A finish's SCF stopped and resumed"). The mixer's state is its
# ``DensityHistory`` arrays (grid and PAW parts, the slots in use, in order), its grid and atom
# arrays and its numbers (MSR1's step sizes and trust radius); the criteria's are their lists
# of past energies and density errors.

#: the npz entries of the memory: its kind and layout, the mixer's (``mixer@R/`` on rank R
#: where each rank holds a part of the grid or of the atoms), the criteria's
MEMORY_PREFIXES = ("memory.", "mixer/", "mixer@", "criterion/")
# the mixer's parts fixed by the calculation's set-up, not by its history
_MIXER_SETUP = {"metric", "desc", "setups", "world", "atom_layout", "ghat_aLr", "histories",
                "xp", "relpos_ac", "atomdist", "ncomponents"}


class _Unkept(Exception):
    """A part of the SCF's memory this module does not know how to keep."""


def _plain_number(value):
    return isinstance(value, (bool, int, float, np.integer, np.floating))


def _mixer_arrays(mixer):
    """name -> array (the rank's own data, no copies) of ``mixer``'s state; raises
    :class:`_Unkept` for a part it cannot keep."""
    from gpaw.core.arrays import XArray
    from gpaw.core.atom_arrays import AtomArrays
    from gpaw.mixer.base import DensityHistory
    if hasattr(mixer, "memory_arrays"):  # meltquench's own mixers say it themselves
        return mixer.memory_arrays()
    out = {}
    for name, value in sorted(vars(mixer).items()):
        if name in _MIXER_SETUP:
            continue
        if isinstance(value, DensityHistory):
            used = list(value.current_indicies)
            out[f"{name}.used"] = np.array(used, int)
            out[f"{name}.n"] = value._n_hsX.data[used]
            if value._D_hasii is not None:
                out[f"{name}.D"] = value._D_hasii.data[used]
        elif isinstance(value, (XArray, AtomArrays)):
            out[name] = value.data
        elif isinstance(value, np.ndarray):
            out[name] = value
        elif value is None:
            out[f"{name}.none"] = np.array(True)
        elif _plain_number(value):
            out[name] = np.array(value)
        elif (isinstance(value, (list, tuple)) and all(_plain_number(v) for v in value)):
            out[name] = np.array(value, float)
        else:
            raise _Unkept(f"mixer {type(mixer).__name__}.{name} ({type(value).__name__})")
    return out


def _plain_name(key):
    return key.rsplit(".", 1)[0] if key.endswith((".used", ".n", ".D", ".none")) else key


def _mixer_misfit(mixer, arrays):
    """Why :func:`_mixer_arrays`' output (read back) cannot go into ``mixer``, or None if it
    fits: a mixer of the same kind at the same positions on the same ranks."""
    from gpaw.mixer.base import DensityHistory
    if hasattr(mixer, "memory_misfit"):
        return mixer.memory_misfit(arrays)
    try:
        mine = _mixer_arrays(mixer)
    except _Unkept as exc:
        return str(exc)
    if {_plain_name(k) for k in mine} != {_plain_name(k) for k in arrays}:
        return "another kind of mixer"
    for name in {_plain_name(k) for k in arrays}:
        value = vars(mixer)[name]
        if isinstance(value, DensityHistory):
            stored = [arrays.get(f"{name}.n"), arrays.get(f"{name}.D")]
            held = [value._n_hsX.data,
                    None if value._D_hasii is None else value._D_hasii.data]
            if (f"{name}.used" not in arrays or len(arrays[f"{name}.used"]) > value.nmaxold
                    or any((s is None) != (h is None) or (s is not None and
                                                          s.shape[1:] != h.shape[1:])
                           for s, h in zip(stored, held))):
                return f"mixer history {name}: another grid, atoms or length"
        elif name in mine and np.shape(mine[name]) != np.shape(arrays[name]):
            return f"mixer {name}: another shape"
    return None


def _set_mixer_arrays(mixer, arrays):
    """Put :func:`_mixer_arrays`' output (read back) into ``mixer``; check
    :func:`_mixer_misfit` first."""
    from gpaw.mixer.base import DensityHistory
    if hasattr(mixer, "set_memory_arrays"):
        mixer.set_memory_arrays(arrays)
        return
    for name in {_plain_name(k) for k in arrays}:
        value = vars(mixer)[name]
        if isinstance(value, DensityHistory):
            used = list(range(len(arrays[f"{name}.used"])))
            value._n_hsX.data[used] = arrays[f"{name}.n"]
            if value._D_hasii is not None:
                value._D_hasii.data[used] = arrays[f"{name}.D"]
            value.current_indicies = used
        elif f"{name}.none" in arrays:
            setattr(mixer, name, None)
        elif isinstance(value, np.ndarray):
            value[...] = arrays[name]
        elif hasattr(value, "data"):  # a grid or atom array
            value.data[...] = arrays[name]
        elif isinstance(value, (list, tuple)):
            setattr(mixer, name, type(value)(float(v) for v in arrays[name]))
        else:  # a number (or None before)
            item = arrays[name].item()
            setattr(mixer, name, item if isinstance(item, (bool, int)) else float(item))


def _replicated(mixer):
    """True if every rank holds the whole mixer (no domain or atom decomposition): the SCF is
    then split over spins or bands only, and every rank mixes the same densities."""
    desc = getattr(mixer, "desc", None)
    layout = getattr(mixer, "atom_layout", None)
    return (getattr(getattr(desc, "comm", None), "size", 1) == 1
            and getattr(getattr(getattr(layout, "atomdist", None), "comm", None), "size", 1) == 1)


def _criteria_after(criteria, ctx):
    """name -> list of numbers: the lists of past values (energies, density errors) that
    GPAW's convergence criteria will hold once they have judged ``ctx`` (judged here on
    copies; collective, as GPAW's own check is)."""
    from gpaw import KohnShamConvergenceError
    out = {}
    for name, criterion in criteria.items():
        if getattr(criterion, "calc_last", False):  # the forces criterion: computes forces
            continue
        judged = copy.deepcopy(criterion)
        try:
            judged(ctx)
        except KohnShamConvergenceError:  # the SCF gives up after this iteration anyway
            pass
        for attr, value in vars(judged).items():
            if isinstance(value, (deque, list)) and all(_plain_number(v) for v in value):
                out[f"criterion/{name}/{attr}"] = np.array(list(value), float)
    return out


def scf_memory(scf_loop, ctx, comm=None):
    """The memory of the SCF of ``scf_loop`` at its ``scf_step`` hook of iteration ``ctx``, as
    npz entries for rank 0 to write ({} where the mixer is not one this module can keep; the
    density matrix alone is then the resume). Collective over ``comm`` (mpi4py)."""
    mixer = scf_loop.mixer
    try:
        arrays = _mixer_arrays(mixer)
        ok = True
    except _Unkept:
        arrays, ok = {}, False
    if comm is not None:
        ok = comm.allreduce(ok, op=_mpi_min())
    if not ok:
        return {}
    replicated = _replicated(mixer)
    if comm is None or replicated:  # rank 0's stands for every rank's
        memory = {f"mixer/{k}": v for k, v in arrays.items()}
    else:
        pieces = comm.gather(arrays, root=0) or []
        memory = {f"mixer@{r}/{k}": v for r, piece in enumerate(pieces) for k, v in piece.items()}
    memory["memory.kind"] = np.array(type(mixer).__name__)
    memory["memory.ranks"] = np.array(1 if (replicated or comm is None) else comm.Get_size())
    memory.update(_criteria_after(scf_loop.convergence, ctx))
    return memory


def restore_scf_memory(dft, memory, comm=None):
    """Continue the SCF of ``dft`` (set up at the stopped SCF's positions, its density rebuilt
    from the stopped one's orbitals) with the stopped SCF's memory: the mixer's history mixes
    that density as the stopped SCF would have, the potential follows, and GPAW's next SCF
    goes on from there (its reset and first mix, which would forget the history, are skipped
    once). False, nothing changed, if ``memory`` is empty or does not fit. Collective."""
    mixer = dft.scf_loop.mixer
    ok = bool(memory) and str(memory.get("memory.kind", "")) == type(mixer).__name__
    arrays = {}
    if ok:
        ranks = int(memory["memory.ranks"])
        size = 1 if comm is None else comm.Get_size()
        rank = 0 if comm is None else comm.Get_rank()
        if ranks == 1 and _replicated(mixer):
            prefix = "mixer/"
        elif ranks == size and not _replicated(mixer):
            prefix = f"mixer@{rank}/"
        else:
            prefix, ok = None, False
        if ok:
            arrays = {k[len(prefix):]: v for k, v in memory.items() if k.startswith(prefix)}
    ok = ok and _mixer_misfit(mixer, arrays) is None
    if comm is not None:
        ok = comm.allreduce(ok, op=_mpi_min())
    if not ok:  # on no rank changed
        return False
    _set_mixer_arrays(mixer, arrays)
    density_error = mixer.mix(dft.density)  # the stopped SCF's next input density
    dft.potential, dft.energies, _ = dft.pot_calc.calculate(
        dft.density, dft.ibzwfs, dft.potential.vHt_x)
    _skip_once(mixer, density_error)
    for name, criterion in dft.scf_loop.convergence.items():
        for key, values in memory.items():
            head = f"criterion/{name}/"
            if not key.startswith(head):
                continue
            attr = key[len(head):]
            old = getattr(criterion, attr, None)
            if isinstance(old, deque):
                setattr(criterion, attr, deque(values.tolist(), maxlen=old.maxlen))
            elif isinstance(old, list):
                setattr(criterion, attr, values.tolist())
        if hasattr(criterion, "continues"):  # meltquench's Stagnation: keep its errors
            criterion.continues = True
    return True


def _skip_once(mixer, density_error):
    """GPAW's SCF starts by resetting its mixer and mixing the start density; after a restored
    history those would forget it and mix twice: the next call of each is skipped."""
    def reset():
        del mixer.reset

    def mix(density):
        del mixer.mix
        return density_error
    mixer.reset = reset
    mixer.mix = mix


def _mpi_min():
    from mpi4py import MPI
    return MPI.MIN
