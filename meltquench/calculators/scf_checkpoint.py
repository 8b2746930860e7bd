"""A long GPAW SCF that survives a stop: the density matrix of the SCF in progress, on disk.

A DFT single point of the paper's 240-atom model (LCAO dzp, spin-polarised PBE+U) takes 62-67
SCF iterations of 169 s each on 2 ranks: three hours in one call, more than a session, a batch
job's wall time or a night may give. :class:`SCFCheckpoint` writes, every ``every_s`` seconds
of an SCF (GPAW's ``scf_step`` hook), the LCAO density matrices of its last diagonalisation
(one per spin; the whole matrix on every rank, M x M doubles for M atomic orbitals: 88 MB per
spin at 240 atoms in dzp) with the positions they belong to, and stops the SCF there, the
density written first, when ``should_stop`` says so (a stop signal, the ``--stop-after``
budget). :meth:`SCFCheckpoint.resume` starts the next calculation at the same positions from
that density matrix, as its eigenvectors and eigenvalues (the orbitals and occupations GPAW
builds its first density from), in place of GPAW's atomic start.

Measured (cold spin-polarised PBE+U, 30 atoms, sz(dzp), MSR1, 88 iterations uninterrupted):
resumed from iteration 70, the SCF converged in 14 more (84 in all), to 5e-4 eV and 0.017 eV/Å
of the uninterrupted result (its criteria's precision); from iteration 20, in 86 more (the
slow +U mode it had not yet crossed is crossed again). The mixer's memory is not kept: a
resumed SCF mixes afresh. What it converges to is GPAW's, not the checkpoint's: the start only.

GPAW 26's LCAO mode at the Γ point only (:func:`supported`); nothing is written otherwise.
The file is ``numpy.savez`` data (no pickles), read with ``allow_pickle=False``.
"""
import io
import time
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
                self.write(gpaw, ctx.niter)
                clock["last_write"] = now
            if stop:
                raise Interrupted(f"{stop}; the SCF's density after its iteration {ctx.niter} "
                                  f"is in {self.path}")
        gpaw.hooks["scf_step"] = on_step
        return True

    def write(self, gpaw, iteration):
        """The density matrices of ``gpaw``'s last diagonalisation, with its positions, into
        :attr:`path` (collective; rank 0 writes, atomically)."""
        dft = gpaw.dft
        rhos = [density_matrix(wfs) for wfs in dft.ibzwfs]
        if self._rank() == 0:
            data = {f"rho_{u}": rho for u, rho in enumerate(rhos)}
            buffer = io.BytesIO()
            np.savez(buffer, format=np.array(FORMAT), positions=gpaw.atoms.positions,
                     numbers=gpaw.atoms.numbers, iteration=np.array(int(iteration)),
                     fermi_levels=np.asarray(dft.ibzwfs.fermi_levels, float),
                     spins=np.array(len(rhos)), **data)
            write_atomic(self.path, buffer.getvalue())
        self.written += 1
        self.last_iteration = int(iteration)

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
        wfs_list = list(gpaw.dft.ibzwfs)
        rhos = state["rho"]
        sizes = {wfs.C_nM.shape[1] for wfs in wfs_list}
        if len(rhos) != len(wfs_list) or any(rho.shape != (n, n) for rho in rhos for n in sizes):
            return (f"the SCF starts afresh: the density in {self.path} does not fit this "
                    "calculation (another basis or spin setting)")
        for wfs, rho in zip(wfs_list, rhos):
            set_start(wfs, rho)
        gpaw.dft.ibzwfs.fermi_levels = np.array(state["fermi_levels"], float)
        gpaw._dft = gpaw.dft.move_atoms(gpaw.atoms)  # the density and potential of the start
        return (f"the SCF resumes from the density after iteration {state['iteration']} of "
                f"the stopped one ({self.path})")


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
                    "rho": [np.array(data[f"rho_{u}"], float) for u in range(spins)]}
    except (OSError, ValueError, KeyError) as exc:
        return f"cannot read {path} ({type(exc).__name__}: {exc})"
