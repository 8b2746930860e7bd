"""A GPAW density mixer for molecular dynamics: Pulay mixing that remembers across steps.

GPAW's Pulay and MSR1 mixers forget everything when the atoms move: each MD step's SCF starts
with an empty history and spends its first iterations relearning how the density responds.
In hot PBE+U V2O3 that response has a slow, soft mode (the d-occupations) that a fresh history
only learns after 10-20 iterations, so every step crawls.

:class:`MDPulay` is Pulay's DIIS written in Anderson's difference form (Anderson, J. ACM 12,
547 (1965); the same iterates as Pulay's, Chem. Phys. Lett. 73, 393 (1980)): it stores
*secant pairs* (the change of the input density between two iterations and the change of
the residual it caused) and, at each iteration, takes the combination of pairs that best
cancels the current residual in GPAW's metric, then a linear step ``beta`` on what is left::

    R_k = n_out - n_in                                     (residual, PAW matrices alike)
    gamma = argmin || Rc_k - sum_j gamma_j dRc_j ||_M        (Rc: with compensation charges)
    n_in <- n_in + beta R_k - sum_j gamma_j (dn_j + beta dR_j)

The pairs are differences *within* one geometry, so they stay meaningful when the atoms
move by a fraction of an ångström: the mixer keeps those of the last ``keep`` geometries (3 by
default: the last three MD steps') and never pairs points of two different geometries. Two
guards keep old pairs from doing harm: while any are in use the least-squares problem is
solved with the pairs scaled to unit length and a small Tikhonov term (``REG``), and if a
residual comes out more than ``GROWTH`` times larger than the one before, the pairs of earlier
geometries are dropped for the rest of that SCF (without these, one step of a 40-atom PBE+U
melt needed 164 iterations). With ``keep=0`` it is exactly GPAW's Pulay mixer
(tests/test_gpaw_mixer.py checks the iterations agree), so the only new idea is the memory.
It changes the path of the SCF, not where it ends: the convergence criteria are GPAW's own.

Use it through the config (``calculator.gpaw.mixer: {backend: md-pulay, ...}``) or directly:
``GPAW(..., mixer=MDPulay(beta=0.2, nmaxold=40))``. MPI: the inner products are summed over
GPAW's grid communicator and the coefficients broadcast from rank 0, as GPAW's Pulay does;
if the atoms change domain (the PAW matrices move between ranks) the history is dropped.
"""
import numpy as np

from .gpaw import setup_gpaw_mpi

setup_gpaw_mpi()  # before gpaw.mpi is imported: mpirun python ... must work

from gpaw.dft import Pulay  # noqa: E402
from gpaw.mixer.base import BaseMixer  # noqa: E402


class MDPulayMixer(BaseMixer):
    """The mixer object GPAW builds from :class:`MDPulay` (see the module docstring)."""

    #: Tikhonov regularisation of the (unit-diagonal) Gram matrix while pairs of earlier
    #: geometries are in use (they need not be consistent with the present ones).
    REG = 1e-3
    #: A residual this many times larger than the previous one means the remembered pairs
    #: led astray: those of earlier geometries are then dropped.
    GROWTH = 2.0

    def __init__(self, nmaxold, beta, keep, *args, **kwargs):
        self.nmaxold = int(nmaxold)
        self.beta = float(beta)
        self.keep = int(keep)  # geometries before the present one whose pairs are kept
        self.pairs = []  # {u: dn + beta dR, uD: its PAW part, dRc, geometry}, oldest first
        self.gram = np.zeros((0, 0))  # <dRc_i | M | dRc_j>
        self.geometry = 0
        self.dropped = 0  # how often the growth guard fired (a diagnostic)
        self.point = None  # the current input and, after one mix, its residual
        super().__init__(*args, **kwargs)
        self._owners = self._atom_owners()

    def _initialize_history_(self):
        self.histories = []
        self.point = None

    def _atom_owners(self):
        rank_a = getattr(self.atom_layout.atomdist, "rank_a", None)
        return None if rank_a is None else np.array(rank_a, copy=True)

    def reset(self):
        """Start of an SCF (GPAW calls this): the next density is the first input."""
        self.point = None
        if not self.keep:
            self.pairs, self.gram = [], np.zeros((0, 0))

    def move(self, relpos_ac, atomdist):
        """The atoms moved: new compensation charges; the pairs stay unless the PAW matrices
        changed rank or ``keep`` is off."""
        pairs, gram = self.pairs, self.gram
        super().move(relpos_ac, atomdist)
        owners = self._atom_owners()
        same = (owners is None and self._owners is None) or (
            owners is not None and self._owners is not None
            and np.array_equal(owners, self._owners))
        self.pairs, self.gram = pairs, gram
        self.geometry += 1
        self._keep_only([(self.keep and same) and p["geometry"] >= self.geometry - self.keep
                         for p in self.pairs])
        self._owners = owners
        self.point = None

    def get_state(self):
        """This rank's memory as plain data (its parts of the remembered pairs, the Gram
        matrix, the geometry counter): with :meth:`set_state` on the same rank of a restarted
        run, the next SCF mixes as the uninterrupted run's did. Each pair holds two grid
        arrays and a PAW part, about ``2 * 8 * grid points`` bytes over all ranks."""
        return {"pairs": [dict(p) for p in self.pairs], "gram": self.gram.copy(),
                "geometry": self.geometry, "dropped": self.dropped,
                "owners": None if self._owners is None else self._owners.copy()}

    def state_fits(self, state):
        """Whether :meth:`get_state` output of a run's rank can go into this rank's mixer:
        its atoms are owned by the same ranks and its arrays have the shapes of this
        calculation's (same grid, spins and domain layout)."""
        owners = state.get("owners")
        if (owners is None) != (self._owners is None) or (
                owners is not None and not np.array_equal(owners, self._owners)):
            return False
        return all(np.shape(p[key]) == np.shape(mine[key]) for mine in self.pairs[-1:]
                   for p in state["pairs"] for key in ("u", "uD", "dRc"))

    def set_state(self, state):
        """Restore :meth:`get_state` output of this rank (check :meth:`state_fits` on every
        rank first: the pairs must be the same on all ranks of the grid)."""
        pairs = [{**p, "geometry": int(p["geometry"])} for p in state["pairs"]]
        self.pairs = pairs
        self.gram = np.array(state["gram"], dtype=float).reshape(len(pairs), len(pairs))
        self.geometry = int(state["geometry"])
        self.dropped = int(state["dropped"])
        self.point = None

    def memory_arrays(self):
        """This rank's whole memory, the SCF in progress included (its current input and
        residual), as name -> array: with :meth:`set_memory_arrays` in the same place of a
        resumed SCF (same positions and ranks), it mixes on as the stopped one would have.
        For :mod:`meltquench.calculators.scf_checkpoint`."""
        out = {"gram": self.gram, "geometry": np.array(self.geometry),
               "dropped": np.array(self.dropped), "pairs": np.array(len(self.pairs))}
        if self._owners is not None:
            out["owners"] = self._owners
        for key in ("u", "uD", "dRc", "geometry"):
            if self.pairs:
                out[f"pairs.{key}"] = np.stack([np.asarray(p[key]) for p in self.pairs])
        for key, value in (self.point or {}).items():
            out[f"point.{key}"] = np.asarray(value)
        return out

    def memory_misfit(self, arrays):
        """Why :meth:`memory_arrays` output cannot go into this rank's mixer (the atoms owned
        by other ranks, another grid), or None if it fits."""
        owners = arrays.get("owners")
        if (owners is None) != (self._owners is None) or (
                owners is not None and not np.array_equal(owners, self._owners)):
            return "MD Pulay: the atoms are owned by other ranks"
        shape = self.desc.empty(self.ncomponents).data.shape
        if any(arrays[key].shape[-len(shape):] != shape
               for key in ("point.n", "pairs.u") if key in arrays):
            return "MD Pulay: another grid"
        if "pairs" not in arrays or "gram" not in arrays:
            return "MD Pulay: not its memory"
        return None

    def set_memory_arrays(self, arrays):
        """Restore :meth:`memory_arrays` output of this rank (check :meth:`memory_misfit` on
        every rank first)."""
        count = int(arrays["pairs"])
        pairs = [{key: np.array(arrays[f"pairs.{key}"][i]) for key in ("u", "uD", "dRc")}
                 | {"geometry": int(arrays["pairs.geometry"][i])} for i in range(count)]
        self.pairs = pairs
        self.gram = np.array(arrays["gram"], dtype=float).reshape(count, count)
        self.geometry = int(arrays["geometry"])
        self.dropped = int(arrays["dropped"])
        point = {key[len("point."):]: np.array(value) for key, value in arrays.items()
                 if key.startswith("point.")}
        if "norm" in point:
            point["norm"] = float(point["norm"])
        self.point = point or None

    def _keep_only(self, mask):
        mask = np.asarray(mask, dtype=bool)
        self.pairs = [p for p, k in zip(self.pairs, mask) if k]
        self.gram = self.gram[np.ix_(mask, mask)]

    def _dot(self, a, b):
        return self.desc.comm.sum_scalar(float(np.vdot(a, b))) * self.desc.dv

    def _add_pair(self, u, uD, dRc, MdRc):
        """Store the pair (u = dn + beta dR with its PAW part, dRc) and its Gram row."""
        row = [self._dot(MdRc, p["dRc"]) for p in self.pairs] + [self._dot(MdRc, dRc)]
        k = len(self.pairs)
        gram = np.empty((k + 1, k + 1))
        gram[:k, :k] = self.gram
        gram[k, :] = gram[:, k] = row
        self.pairs.append({"u": u, "uD": uD, "dRc": dRc, "geometry": self.geometry})
        self.gram = gram
        drop = len(self.pairs) - (self.nmaxold - 1)  # nmaxold densities, as GPAW's Pulay
        if drop > 0:
            del self.pairs[:drop]
            self.gram = self.gram[drop:, drop:]

    def _mix(self, nt_sX, D_asii, density):
        n_out = nt_sX.data.copy()
        D_out = np.array(D_asii.data, copy=True)
        if self.point is None:  # first density of this SCF: it is the first input
            self.point = {"n": n_out, "D": D_out}
            return np.inf
        n_in, D_in = self.point["n"], self.point["D"]
        R = n_out - n_in
        RD = D_out - D_in
        residual = nt_sX.new()
        residual.data[:] = R
        Rc = nt_sX.new()
        self.add_compensation_charge(residual, RD, density, out=Rc)
        MRc = self.metric(Rc).data  # GPAW's metrics never change their input
        norm = self._dot(MRc, Rc.data) ** 0.5
        old = [p["geometry"] < self.geometry for p in self.pairs]
        if any(old) and "norm" in self.point and norm > self.GROWTH * self.point["norm"]:
            self._keep_only(np.logical_not(old))
            self.dropped += 1
        if "R" in self.point:  # a secant pair within this geometry
            p = self.point
            dRc = Rc.data - p["Rc"]
            MdRc = self.metric(Rc.new(data=dRc)).data
            self._add_pair((n_in - p["n_prev"]) + self.beta * (R - p["R"]),
                           (D_in - p["D_prev"]) + self.beta * (RD - p["RD"]), dRc, MdRc)
        n_new = n_in + self.beta * R
        D_new = D_in + self.beta * RD
        if self.pairs:
            rhs = np.array([self._dot(MRc, p["dRc"]) for p in self.pairs])
            if any(p["geometry"] < self.geometry for p in self.pairs):
                # pairs of earlier geometries: scale each to unit length, then regularise
                d = np.sqrt(np.maximum(np.diag(self.gram), 1e-300))
                gram = self.gram / np.outer(d, d) + self.REG * np.eye(len(rhs))
                gamma = np.linalg.solve(gram, rhs / d) / d
            else:
                gamma = np.linalg.lstsq(self.gram, rhs, rcond=1e-12)[0]
            self.world.broadcast(gamma, 0)
            for g, p in zip(gamma, self.pairs):
                n_new -= g * p["u"]
                D_new -= g * p["uD"]
        nt_sX.data[:] = n_new
        D_asii.data[:] = D_new
        self.point = {"n": n_new, "D": D_new, "R": R, "RD": RD, "Rc": Rc.data,
                      "n_prev": n_in, "D_prev": D_in, "norm": norm}
        return self.calculate_charge_sloshing(Rc)

    def __str__(self):
        return "\n  ".join(["density mixing:", "meltquench MD Pulay (Anderson form)",
                            f"Linear mixing parameter: {self.beta}",
                            f"Secant pairs kept: {self.nmaxold - 1} "
                            f"(those of the last {self.keep} earlier geometries kept)",
                            str(self.metric), ""])


class MDPulay(Pulay):
    """GPAW ``mixer=`` parameter for :class:`MDPulayMixer`.

    ``MDPulay(beta=0.2, nmaxold=40, weight=20.0, keep=3)``: ``beta`` the linear step,
    ``nmaxold`` the number of densities remembered (``nmaxold - 1`` secant pairs, as in
    GPAW's Pulay), ``weight`` GPAW's Fourier metric weight
    (long-wavelength damping), ``keep`` how many earlier geometries' pairs are kept (0: none,
    GPAW's Pulay; 3, the default: the last three MD steps'; True means 1).
    """

    name = "md-pulay"
    cls = MDPulayMixer

    def __init__(self, beta=0.2, nmaxold=40, weight=20.0, keep=3, sigma=0.015):
        super().__init__(nmaxold=nmaxold, beta=beta, weight=weight, sigma=sigma)
        self.keep = int(keep)

    def todict(self):
        return {**super().todict(), "name": self.name, "keep": self.keep}

    def build(self, **kwargs):
        metric = self._build_metric(**self.metric_params, **kwargs)
        return self.cls(self.mixer_params["nmaxold"], self.mixer_params["beta"], self.keep,
                        metric=metric, **kwargs)
