"""Simulated powder XRD I(2theta) and Faber-Ziman partial structure factors S_ab(q) per region.

The method (the Debye equation on linear partial pair histograms to ``rmax`` with periodic
images, a window, and the uniform-density term subtracted) and why it, not the
reciprocal-lattice sum, is in :mod:`meltquench.kernels.xrd`. A region's atoms are the centres,
their neighbours every atom (as for g(r)), and the intensity is per centre atom, so the
disjoint regions crystal and melt add up to the whole model: ``N_all I_all = N_crystal
I_crystal + N_melt I_melt`` when every atom carries a region tag.

Form factors: Waasmaier & Kirfel, Acta Cryst. A51, 416 (1995), Table 1, taken by import from
ASE's ``ase.utils.xrdebye.waasmaier``. That table holds 12 elements only (C N O P S Cl Ni Cu Pd
Ag Pt Au) and not V, so :data:`EXTRA_WAASMAIER` adds neutral V from the same table of the same
paper (f(0) = 22.997, Z = 23). Lengths in Å, angles in degrees, q in Å^-1, intensities in
electrons^2 per atom.

The Lorentz-polarisation factor is on by default: the patterns it is compared with (the
paper's, Rigaku SmartLab, Cu K-alpha, Bragg-Brentano) are laboratory powder patterns, whose
relative peak heights carry it. It scales intensities, not positions: on corundum V2O3 with
the 150 Å window it moves no peak by more than 0.01 degrees. ``lp=False`` gives the bare
Debye intensity (what S(q) and ASE's XrDebye without its angular factor describe).
"""
import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from ase.utils.xrdebye import waasmaier

from ..errors import UserError
from ..kernels import parallel
from ..kernels.xrd import (CU_KALPHA, WINDOWS, debye_intensity, form_factors,
                           linear_pair_histogram, lorentz_polarisation, partial_structure_factors,
                           q_from_two_theta, two_theta_from_q)
from .base import AnalysisBase, check_length
from .rdf import centre_counts
from .regions import N_GROUPS, REGION_GROUPS, REGIONS
from .report import _output_folder

#: Waasmaier-Kirfel (1995) Table 1 coefficients ``a1 b1 ... a5 b5 c`` (b in Å^2) of elements
#: ASE's table lacks; neutral atoms.
EXTRA_WAASMAIER = {
    "V": [10.473575, 7.081940, 1.547881, 0.026040, 1.986381, 31.909672, 1.865616, 108.022842,
          7.056250, 0.474882, 0.067744],
}

#: Default grain diameter (Å): the window of the Debye sum; see :class:`XRD`.
XRD_RMAX_A = 100.0
#: Default 2theta range (degrees) and step.
TWO_THETA_RANGE = (10.0, 80.0)
TWO_THETA_STEP = 0.02
#: Linear-histogram grid spacing (Å).
GRID_A = 0.01


def form_factor_coefficients(symbols):
    """(T, 11) Waasmaier-Kirfel coefficients of ``symbols``: ASE's table, else
    :data:`EXTRA_WAASMAIER`; a UserError naming the element for any other."""
    rows = []
    for s in symbols:
        if s in waasmaier:
            rows.append(waasmaier[s])
        elif s in EXTRA_WAASMAIER:
            rows.append(EXTRA_WAASMAIER[s])
        else:
            known = sorted(set(waasmaier) | set(EXTRA_WAASMAIER),
                           key=chemical_symbols.index)
            raise UserError(f"no X-ray form factor for {s}: the tables hold {' '.join(known)} "
                            "(ASE's Waasmaier-Kirfel table and meltquench's additions); run "
                            "the XRD on models of these elements or leave it out (--no-xrd)")
    return np.array(rows, float)


def check_two_theta(two_theta):
    """(min, max) 2theta in degrees with 0 < min < max < 180, else a UserError."""
    try:
        lo, hi = (float(x) for x in two_theta)
    except (TypeError, ValueError):
        raise UserError(f"the 2theta range must be two numbers of degrees, got {two_theta!r}") \
            from None
    if not (0.0 < lo < hi < 180.0):
        raise UserError(f"the 2theta range must satisfy 0 < min < max < 180 degrees, got "
                        f"{lo:g} {hi:g}")
    return lo, hi


def bragg_reflections(atoms, wavelength=CU_KALPHA, two_theta_max=80.0, tolerance=1e-4):
    """Powder lines of a crystal from its reciprocal lattice: one row per distinct d-spacing.

    For every G = h b1 + k b2 + l b3 (b: ASE's reciprocal cell, 2 pi included) with 2theta below
    ``two_theta_max``, F(G) = sum_j f_j exp(i G.r_j) with the Waasmaier-Kirfel form factors;
    G vectors whose d agree within ``tolerance`` Å form one line. Returns a list of dicts
    ``{'d': Å, 'two_theta': degrees, 'q': Å^-1, 'hkl': one (h, k, l), 'multiplicity': how many
    G with F != 0, 'intensity': sum |F|^2 (electrons^2 per cell, no Lorentz factor)}``, sorted
    by 2theta; lines with every |F|^2 below 1e-6 of the strongest are left out (extinct).
    """
    symbols = list(dict.fromkeys(atoms.get_chemical_symbols()))
    coefficients = form_factor_coefficients(symbols)
    types = np.array([symbols.index(s) for s in atoms.get_chemical_symbols()])
    qmax = float(q_from_two_theta(two_theta_max, wavelength))
    recip = 2.0 * np.pi * atoms.cell.reciprocal()
    n = [int(np.ceil(qmax * np.linalg.norm(atoms.cell[i]) / (2 * np.pi))) + 1 for i in range(3)]
    hkl = np.array(np.meshgrid(*[np.arange(-m, m + 1) for m in n], indexing="ij")).reshape(3, -1).T
    g = hkl @ recip
    q = np.linalg.norm(g, axis=1)
    keep = (q > 1e-9) & (q <= qmax)
    hkl, g, q = hkl[keep], g[keep], q[keep]
    f = form_factors(coefficients, q)[types]                      # (N, G)
    phase = np.exp(1j * atoms.positions @ g.T)                    # (N, G)
    intensity = np.abs((f * phase).sum(axis=0)) ** 2
    strong = intensity > 1e-6 * intensity.max()
    hkl, q, intensity = hkl[strong], q[strong], intensity[strong]
    d = 2.0 * np.pi / q
    order = np.argsort(-d, kind="stable")
    lines = []
    for k in order:
        if lines and abs(lines[-1]["d"] - d[k]) < tolerance:
            lines[-1]["multiplicity"] += 1
            lines[-1]["intensity"] += float(intensity[k])
            continue
        lines.append({"d": float(d[k]), "q": float(q[k]),
                      "two_theta": float(two_theta_from_q(q[k], wavelength)),
                      "hkl": tuple(int(x) for x in hkl[k]), "multiplicity": 1,
                      "intensity": float(intensity[k])})
    return lines


class XRD(AnalysisBase):
    """Powder XRD I(2theta) and partial structure factors S_ab(q), per region.

    ``wavelength`` (Å, default Cu K-alpha1 1.5406); ``two_theta`` (min, max) degrees and
    ``step``; ``rmax`` (Å): the pair distances summed, which is also the diameter of the
    spherical grains the pattern is of (``window='sphere'``; 'lorch' or 'none' as
    :func:`~meltquench.kernels.xrd.window`): peaks are about 1.1 lambda / (rmax cos theta)
    radians wide (1.0 degree at 2theta = 36 degrees for 100 Å). The work per frame grows as
    rmax^3. ``lp``: multiply by the Lorentz-polarisation factor (default True, see the module).
    ``qmax`` (Å^-1) and ``dq`` set the q grid of S_ab(q). Other arguments as
    :class:`~.base.AnalysisBase`.

    After :meth:`run`, ``regions`` index the arrays of ``results``:

    ``two_theta`` (Q,) degrees, ``q`` (Q,) Å^-1
        the pattern's grid
    ``intensity`` (R, Q)
        electrons^2 per atom of the region (LP factor applied if ``lp``); NaN without atoms
    ``sq_q`` (S,) Å^-1, ``sq`` (P, R, S), ``pairs`` [names]
        Faber-Ziman S_ab(q) of every ordered species pair a-b (centres a in the region,
        neighbours b anywhere; concentrations c_b of the whole model), so that
        ``I / N_R = sum_a c_a f_a^2 + sum_ab c_a c_b f_a f_b (S_ab - 1)`` without the LP
        factor, c_a the region's
    ``n_centres`` (R, T) int
        atoms of each species in each region, summed over frames
    """

    def __init__(self, source, *, wavelength=CU_KALPHA, two_theta=TWO_THETA_RANGE,
                 step=TWO_THETA_STEP, rmax=XRD_RMAX_A, window="sphere", lp=True, qmax=12.0,
                 dq=0.02, grid=GRID_A, regions=REGIONS, interface_width=3.0, comm=None):
        self.wavelength = check_length("wavelength", wavelength)
        self.two_theta_range = check_two_theta(two_theta)
        self.step = check_length("2theta step", step)
        self.rmax = check_length("XRD rmax", rmax)
        if window not in WINDOWS:
            raise UserError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        self.window = window
        self.lp = bool(lp)
        self.qmax = check_length("qmax (Å^-1)", qmax)
        self.dq = check_length("dq (Å^-1)", dq)
        self.nbins = max(1, int(round(self.rmax / check_length("grid", grid))))
        super().__init__(source, regions=regions, interface_width=interface_width, comm=comm)

    def _prepare(self):
        t = len(self.species)
        self.coefficients = form_factor_coefficients(self.species.symbols)
        self.pairs = [f"{a}-{b}" for a in self.species.symbols for b in self.species.symbols]
        self._hist = np.zeros((N_GROUPS, t, t, self.nbins + 1))
        self._n_centres = np.zeros((N_GROUPS, t), np.int64)
        self._n_atoms = np.zeros(t, np.int64)
        self._norm = np.zeros((N_GROUPS, t, t))

    def _single_frame(self, frame):
        t = len(self.species)
        centres = frame.mine(np.arange(len(frame.types)))
        linear_pair_histogram(frame.positions, frame.cell, frame.pbc, frame.types, self.rmax,
                              self.nbins, centres=centres, groups=frame.groups[centres],
                              n_groups=N_GROUPS, n_types=t, out=self._hist)
        n_c, norm = centre_counts(frame, centres, t, volume_needed=False)
        self._n_centres += n_c
        self._norm += norm
        if frame.share is None or frame.share[0] == 0:  # each frame's atoms counted once
            self._n_atoms += np.bincount(frame.types, minlength=t)

    def _reduce(self, comm):
        self._hist = parallel.allreduce_sum(self._hist, comm)
        self._n_centres = parallel.allreduce_sum(self._n_centres, comm)
        self._n_atoms = parallel.allreduce_sum(self._n_atoms, comm)
        self._norm = parallel.allreduce_sum(self._norm, comm)

    def _conclude(self):
        lo, hi = self.two_theta_range
        res = self.results
        res.two_theta = np.arange(lo, hi + 0.5 * self.step, self.step)
        res.two_theta = res.two_theta[res.two_theta <= hi + 1e-9]
        res.q = q_from_two_theta(res.two_theta, self.wavelength)
        res.sq_q = np.arange(self.dq, self.qmax + 0.5 * self.dq, self.dq)
        t = len(self.species)
        res.pairs = list(self.pairs)
        res.intensity = np.full((len(self.regions), len(res.q)), math.nan)
        res.sq = np.full((t * t, len(self.regions), len(res.sq_q)), math.nan)
        res.n_centres = np.zeros((len(self.regions), t), np.int64)
        lp = lorentz_polarisation(res.two_theta) if self.lp else 1.0
        for r, region in enumerate(self.regions):
            groups = REGION_GROUPS[region]
            hist = self._hist[groups].sum(axis=0)
            n_a = self._n_centres[groups].sum(axis=0)
            norm = self._norm[groups].sum(axis=0)
            res.n_centres[r] = n_a
            if n_a.sum() == 0:
                continue
            res.intensity[r] = lp * debye_intensity(res.q, hist, norm, n_a, self.coefficients,
                                                    self.rmax, self.window)
            sq = partial_structure_factors(res.sq_q, hist, norm, n_a, self._n_atoms,
                                           self._n_atoms.sum(), self.rmax, self.window)
            res.sq[:, r] = sq.reshape(t * t, -1)
        if not self.reference.cell.volume > 1e-10:
            self.notes.append("the model has no cell volume: XRD and S(q) without the "
                              "average-density term (an open cluster)")

    def result(self, label):
        """The :class:`XRDResult` of this analysis (after :meth:`run`)."""
        res = self.results
        return XRDResult(source=label, frames=list(self.frames), wavelength=self.wavelength,
                         rmax=self.rmax, window=self.window, lp=self.lp,
                         regions=list(self.regions), species=list(self.species.symbols),
                         two_theta=res.two_theta, q=res.q, intensity=res.intensity,
                         sq_q=res.sq_q, pairs=list(res.pairs), sq=res.sq,
                         n_centres=res.n_centres, notes=list(self.notes), rank=self.rank)


@dataclass
class XRDResult:
    """What :class:`XRD` measured, and its files: xrd.csv, xrd.png, sq.csv, sq.png."""

    source: str
    frames: list
    wavelength: float
    rmax: float
    window: str
    lp: bool
    regions: list
    species: list
    two_theta: np.ndarray
    q: np.ndarray
    intensity: np.ndarray   # (R, Q)
    sq_q: np.ndarray
    pairs: list
    sq: np.ndarray          # (P, R, S)
    n_centres: np.ndarray   # (R, T)
    notes: list = field(default_factory=list)
    rank: int = 0

    def peaks(self, region="all", prominence=0.02):
        """2theta (degrees) of the pattern's local maxima in ``region`` whose prominence is at
        least ``prominence`` times its highest point (scipy.signal.find_peaks)."""
        from scipy.signal import find_peaks
        y = self.intensity[self.regions.index(region)]
        if not np.all(np.isfinite(y)):
            return []
        index, _ = find_peaks(y, prominence=prominence * y.max())
        return [float(self.two_theta[k]) for k in index]

    def lines(self):
        """Console lines: the strongest peaks per region."""
        out = [f"XRD: {self.source}, {len(self.frames)} frame(s), lambda {self.wavelength:g} Å, "
               f"grain {self.rmax:g} Å ({self.window} window), "
               f"{'with' if self.lp else 'without'} LP factor"]
        for r, region in enumerate(self.regions):
            y = self.intensity[r]
            if not np.all(np.isfinite(y)):
                out.append(f"  {region}: no atoms")
                continue
            peaks = sorted(self.peaks(region), key=lambda x: -y[np.searchsorted(self.two_theta, x)])
            shown = ", ".join(f"{p:.2f}" for p in sorted(peaks[:6]))
            out.append(f"  {region}: strongest peaks at 2theta = {shown or '-'} degrees")
        out.extend(f"note: {n}" for n in self.notes)
        return out

    def write(self, out_dir):
        """Write xrd.csv, sq.csv, xrd.png and sq.png into ``out_dir`` (rank 0 only); the
        paths."""
        if self.rank != 0:
            return []
        out = _output_folder(out_dir)
        paths = [out / "xrd.csv", out / "sq.csv", out / "xrd.png", out / "sq.png"]
        write_csv(paths[0], ["two_theta_deg", "q_inv_A"] + [f"I_{r}" for r in self.regions],
                  [self.two_theta, self.q, *self.intensity])
        names = [f"S_{p}_{r}" for p in self.pairs for r in self.regions]
        write_csv(paths[1], ["q_inv_A"] + names,
                  [self.sq_q, *self.sq.reshape(-1, len(self.sq_q))])
        self._plot(paths[2])
        self._plot_sq(paths[3])
        return paths

    def _plot_sq(self, path):
        """One panel per unordered pair (S_ab = S_ba): S_ab(q) of every region with atoms."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        shown = []
        for p, pair in enumerate(self.pairs):
            if "-".join(reversed(pair.split("-"))) not in [name for _, name in shown]:
                shown.append((p, pair))
        fig = Figure(figsize=(4.0 * len(shown), 3.4), layout="constrained")
        FigureCanvasAgg(fig)
        for panel, (p, pair) in enumerate(shown):
            ax = fig.add_subplot(1, len(shown), panel + 1)
            for r, region in enumerate(self.regions):
                if np.all(np.isfinite(self.sq[p, r])):
                    ax.plot(self.sq_q, self.sq[p, r], lw=1.1, color=f"C{r}", label=region)
            ax.axhline(0.0, color="0.6", lw=0.6)
            ax.set_xlabel("q (1/Å)")
            ax.set_ylabel(f"S_{pair}(q)")
            ax.set_xlim(self.sq_q[0], self.sq_q[-1])
            ax.set_title(pair, fontsize=9)
            ax.legend(fontsize=7)
        fig.suptitle(f"Partial structure factors: {self.source}", fontsize=9)
        fig.savefig(path, dpi=110)

    def _plot(self, path):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        fig = Figure(figsize=(7.5, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for r, region in enumerate(self.regions):
            if np.all(np.isfinite(self.intensity[r])):
                ax.plot(self.two_theta, self.intensity[r], lw=1.2, color=f"C{r}", label=region)
        ax.set_xlabel(f"2θ (degrees, λ = {self.wavelength:g} Å)")
        ax.set_ylabel("intensity per atom (e²" + (", × LP)" if self.lp else ")"))
        ax.set_xlim(self.two_theta[0], self.two_theta[-1])
        ax.legend(fontsize=8)
        ax.set_title(f"Simulated powder XRD: {self.source} ({len(self.frames)} frame(s), "
                     f"grains of {self.rmax:g} Å)", fontsize=9)
        fig.savefig(path, dpi=110)


def write_csv(path, header, columns):
    """One CSV with ``header`` and the equal-length ``columns`` (NaN as empty), written to a
    temporary name and renamed."""
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in zip(*columns):
            w.writerow([f"{x:.8g}" if np.isfinite(x) else "" for x in row])
    os.replace(tmp, path)
