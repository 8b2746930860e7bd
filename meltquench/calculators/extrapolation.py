"""Each MD step's GPAW SCF started from a density matrix extrapolated from earlier steps'.

It works on GPAW 26's LCAO internals at the Γ point (``calc.dft.ibzwfs``, the ``converged``
hook, ``move_atoms``) and switches itself off, with a line in GPAW's text output, wherever
those differ from what it expects. It imports nothing from GPAW: it only touches the
calculator it is given.
"""
import numpy as np

from ..errors import UserError


def density_matrix(wfs):
    """The full LCAO density matrix ``C^T f C`` of ``wfs`` (GPAW 26, one k-point and spin) on
    every rank, bands split over ranks or not."""
    band_comm = wfs.C_nM.dist.comm
    if band_comm.size == 1:
        return np.array(wfs.calculate_density_matrix(), copy=True)
    n1, n2 = wfs.C_nM.dist.my_row_range()
    f_n = wfs.weight * wfs.spin_degeneracy * np.asarray(wfs.occ_n)[n1:n2]
    C_nM = wfs.C_nM.data
    rho_MM = np.ascontiguousarray((C_nM.T * f_n) @ C_nM)
    band_comm.sum(rho_MM)
    return rho_MM


def set_start(wfs, rho):
    """Make ``rho`` (symmetric, the full matrix on every rank) the start of ``wfs``'s next
    SCF: its eigenvectors as orbitals and its eigenvalues as occupations. A calculation that
    has no orbitals yet (set up, not run) gets them here."""
    nbands = wfs.nbands
    comm = getattr(wfs, "domain_band_comm", wfs.domain_comm)  # holders of these orbitals
    if comm.rank == 0:
        eig, vec = np.linalg.eigh(0.5 * (rho + rho.T))
        keep = np.sort(np.argsort(-np.abs(eig))[:nbands])
        f_n = np.ascontiguousarray(eig[keep])
        C_nM = np.ascontiguousarray(vec[:, keep].T)
    else:
        f_n = np.empty(nbands)
        C_nM = np.empty((nbands, rho.shape[0]))
    comm.broadcast(f_n, 0)
    comm.broadcast(C_nM, 0)
    if type(wfs.C_nM).__name__ == "MatrixWithNoData":  # no orbitals yet
        wfs.C_nM = wfs.C_nM.create()
    n1, n2 = ((0, nbands) if wfs.C_nM.dist.comm.size == 1
              else wfs.C_nM.dist.my_row_range())
    wfs.C_nM.data[:] = C_nM[n1:n2]
    wfs._occ_n = f_n / (wfs.weight * wfs.spin_degeneracy)
    wfs._P_ani = None


class DensityMatrixExtrapolation:
    """Start each MD step's SCF from an extrapolated LCAO density matrix (GPAW 26, Γ point).

    GPAW reuses the previous wave functions when atoms move: the first density of a new step is
    built from the last step's orbitals at the new positions. This goes one step further, as
    SIESTA does for MD: from the converged density matrices ``rho`` (in the basis of atomic
    orbitals, which move with the atoms) of the last ``order + 1`` steps it predicts
    ``rho* = 2 rho_n - rho_(n-1)`` (order 1) or ``3 rho_n - 3 rho_(n-1) + rho_(n-2)``
    (order 2), and hands it to GPAW as orbitals and occupations (its eigenvectors and
    eigenvalues), from which GPAW builds the starting density. It only sets where the SCF
    starts, never what it converges to. While fewer steps are remembered it uses the highest
    order they allow, down to order 0 (``rho* = rho_n``, the same starting density as GPAW's
    own reuse of the last orbitals), so that every step's start is a function of
    :attr:`history` alone: with :meth:`get_state` in a checkpoint, a restarted run starts each
    SCF where the uninterrupted run did. Skipped (GPAW's own restart) when the atoms jump by
    more than ``max_step`` Å between calls, and switched off for good, with a line in
    GPAW's text output, where GPAW's internals differ from what it expects (PW/FD mode,
    k-points). With the bands split over ranks (``parallel: {band: N}``) each rank holds a
    block of the orbitals' rows: the density matrix is summed over the band ranks, and each
    rank takes its rows of the extrapolated orbitals.
    """

    COEFFICIENTS = {0: (1.0,), 1: (2.0, -1.0), 2: (3.0, -3.0, 1.0)}

    def __init__(self, calc, order=1, max_step=0.5):
        if order not in (1, 2):
            raise UserError(f"calculator.gpaw.extrapolation must be 0, 1 or 2, got {order!r}")
        self.calc = calc
        self.order = order
        self.max_step = max_step
        self.history = []  # [(positions, [rho_MM per k-point/spin])], newest last
        self.enabled = True
        self.extrapolated = 0  # how many SCFs started from a density of order 1 or 2
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
            if wfs.C_nM.dist.comm.size > 1:
                wfs.C_nM.dist.my_row_range()  # ValueError unless blocks of whole rows
        return wfs_list

    _density_matrix = staticmethod(density_matrix)

    def local_spins(self):
        """The spins of this rank's orbitals, in the order of the history's matrices (an SCF
        split over spins holds one spin per rank)."""
        return [w.spin for w in self._wave_functions()]

    def store(self):
        """GPAW's 'converged' hook: keep this step's density matrices."""
        if not self.enabled:
            return
        try:
            rhos = [self._density_matrix(w) for w in self._wave_functions()]
        except Exception as exc:
            self._disable(f"{exc.__class__.__name__}: {exc}")
            return
        self.history.append((self.calc.atoms.positions.copy(), rhos))
        del self.history[:-(self.order + 1)]

    def move_atoms(self, atoms):
        if self.enabled and self.history:
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
        order = min(self.order, len(self.history) - 1)
        coefficients = self.COEFFICIENTS[order]
        for u, wfs in enumerate(self._wave_functions()):
            rho = sum(c * rhos[u] for c, (_, rhos) in zip(coefficients, reversed(self.history)))
            self._set_start(wfs, rho)
        self.extrapolated += order > 0  # order 0 is the start GPAW itself would take

    _set_start = staticmethod(set_start)

    def get_state(self):
        """The history as plain data (positions in Å, density matrices, GPAW's Fermi levels
        in Hartree, which its next occupation search starts from): what a checkpoint needs
        for the next SCF to start where the uninterrupted run's did. None when switched off.
        The density matrices are whole on every rank that holds their spin (one spin per rank
        when the SCF is split over spins: :func:`meltquench.calculators.gpaw.scf_memory`
        gathers them); they take ``(order + 1) * spins * M**2 * 8`` bytes for M atomic orbitals."""
        if not self.enabled:
            return None
        fermi = getattr(getattr(self.calc, "dft", None), "ibzwfs", None)
        fermi = None if fermi is None else fermi.fermi_levels
        return {"order": self.order, "extrapolated": self.extrapolated,
                "positions": [p for p, _ in self.history],
                "rho": [rhos for _, rhos in self.history],
                "fermi_levels": None if fermi is None else np.array(fermi, copy=True)}

    def set_state(self, state):
        """Restore :meth:`get_state` output after the first SCF of a restarted run (at the
        checkpoint's positions): the history replaces the one that SCF began. Ignored when
        switched off or when the density matrices do not fit this calculation (another basis
        or spin setting); the last ``order + 1`` steps are kept if the order changed. True
        when restored."""
        if not self.enabled or not state:
            return False
        try:
            rhos = (self.history[-1][1] if self.history
                    else [self._density_matrix(w) for w in self._wave_functions()])
        except Exception:
            return False
        shapes = [r.shape for r in rhos]
        history = [(np.asarray(p, dtype=float), [np.asarray(r, dtype=float) for r in mats])
                   for p, mats in zip(state["positions"], state["rho"])]
        if any([r.shape for r in mats] != shapes for _, mats in history):
            return False
        self.history = history[-(self.order + 1):]
        self.extrapolated = int(state.get("extrapolated", 0))
        fermi = state.get("fermi_levels")
        if fermi is not None:
            self.calc.dft.ibzwfs.fermi_levels = np.array(fermi, dtype=float)
        return True


class XLBOMDExtrapolation(DensityMatrixExtrapolation):
    """Start each MD step's SCF from an auxiliary density matrix propagated as in
    extended-Lagrangian Born-Oppenheimer MD with dissipation (Niklasson, Steneteg, Odell,
    Bock, Challacombe, Tymczak, Holmström, Zheng and Weber, J. Chem. Phys. 130, 214109 (2009),
    Table I, K = 5):

        P(n+1) = 2 P(n) - P(n-1) + kappa (D(n) - P(n)) + alpha sum_k c_k P(n-k),

    with ``D(n)`` the converged density matrix of step n and ``P(n)`` the auxiliary matrix its
    SCF started from. The Verlet part is time-reversible, so the small errors of each SCF's
    start do not add up to a systematic drift of the conserved quantity as the polynomial
    extrapolation's can; the dissipation term (``alpha``, ``c_k``) damps the numerical noise
    that would otherwise grow, at the cost of a tiny breach of reversibility (order dt^(2K-1)).
    Each SCF still converges to the criteria: this sets its start, never its end point, and
    with a converged ``D(n)`` the kernel is the identity (no instability from an unconverged
    metal's response, which broke Kolafa's ASPC, benchmarks/README.md).

    The auxiliary matrices are kept in the atomic-orbital basis, which moves with the atoms (as
    the polynomial extrapolation's are). They start as ``K + 1`` copies of the first converged
    density matrix and are reset to the newest one after a jump of the atoms (``max_step``).
    :meth:`get_state` carries them, so a restarted run starts each SCF where the uninterrupted
    run did.
    """

    K = 5
    KAPPA = 1.82
    ALPHA = 0.018
    C = (-6.0, 14.0, -8.0, -3.0, 4.0, -1.0)  # c_0 (step n) ... c_5 (step n-5); they sum to 0

    def __init__(self, calc, max_step=0.5):
        super().__init__(calc, order=1, max_step=max_step)
        self.order = 0  # the history keeps the newest converged step only (jump detection)
        self.aux = []  # [[P per k-point/spin]] for steps n-K .. n+1, newest (the next start) last

    def store(self):
        """GPAW's 'converged' hook: keep D(n) and propagate the auxiliary matrices to n+1."""
        if not self.enabled:
            return
        restarted = not self.history  # first SCF, or after a jump (move_atoms empties it)
        super().store()
        if not self.enabled or not self.history:
            return
        converged = self.history[-1][1]
        if restarted or len(self.aux) < self.K + 1:
            self.aux = [[r.copy() for r in converged] for _ in range(self.K + 1)]
            return
        # self.aux[-1] is P(n) (this step's start), self.aux[-1 - k] is P(n - k)
        nxt = []
        for u, d in enumerate(converged):
            p = self.aux[-1][u]
            new = 2.0 * p - self.aux[-2][u] + self.KAPPA * (d - p)
            new += self.ALPHA * sum(c * self.aux[-1 - k][u] for k, c in enumerate(self.C))
            nxt.append(new)
        self.aux = self.aux[1:] + [nxt]

    def _extrapolate(self):
        if not self.aux:  # restored without auxiliary matrices: GPAW's own start, this once
            return
        for u, wfs in enumerate(self._wave_functions()):
            self._set_start(wfs, self.aux[-1][u])
        self.extrapolated += 1

    def get_state(self):
        state = super().get_state()
        if state is not None:
            state.update(scheme="xl", aux=[list(p) for p in self.aux])
        return state

    def set_state(self, state):
        if not super().set_state(state):
            return False
        aux = state.get("aux")
        shapes = [r.shape for r in self.history[-1][1]] if self.history else None
        if not aux or shapes is None or any(
                [np.shape(r) for r in mats] != shapes for mats in aux):
            self.aux = []  # rebuilt from the next converged step
            return True
        self.aux = [[np.asarray(r, dtype=float) for r in mats] for mats in aux]
        return True
