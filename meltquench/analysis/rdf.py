"""Partial radial distribution functions g_ab(r) per region, averaged over frames.

For every species pair a-b (a: centre, b: neighbour) and region: the distance histogram, the
partial g_ab(r) (ASE/LAMMPS/freud normalisation, :mod:`meltquench.kernels.rdf`), the running
coordination number n_ab(r), and the first peak and first minimum of g_ab(r) (Å). A region
restricts the centres; neighbours are always all atoms. Averages over frames are ratios of
sums: ``g = sum_f H_f / (sum_f N_a,f N_b,f / V_f) / V_shell``.
"""
import math

import numpy as np

from ..kernels.coordination import first_peak_and_minimum
from ..kernels import parallel
from ..kernels.rdf import (bin_centres, bin_edges, normalise, pair_histogram,
                           running_coordination, shell_volumes)
from .base import AnalysisBase, check_length, check_whole
from .regions import N_GROUPS, REGION_GROUPS, REGIONS


def centre_counts(frame, centres, n_types, volume_needed=True):
    """Centres per region group and species (N_GROUPS, T) int, and the ideal-gas pair density
    ``N_a N_b / V`` (N_GROUPS, T, T) in Å^-3 of one frame's ``centres`` (NaN without a cell
    volume, or 0 if ``volume_needed`` is False: then nothing is expected of a uniform density)."""
    n_c = np.zeros((N_GROUPS, n_types), np.int64)
    np.add.at(n_c, (frame.groups[centres], frame.types[centres]), 1)
    n_b = np.bincount(frame.types, minlength=n_types).astype(float)
    if frame.volume > 1e-10:
        volume = frame.volume
    else:
        volume = math.nan if volume_needed else math.inf
    return n_c, n_c[:, :, None] * n_b[None, None, :] / volume


class PartialRDF(AnalysisBase):
    """Partial g_ab(r) of species pairs per region.

    rmax (Å) and nbins set the histogram; ``pairs`` ['V-O', ...] (centre-neighbour; default
    every ordered pair of species). Other arguments as :class:`~.base.AnalysisBase`.

    After :meth:`run`, ``pairs`` (names) and ``regions`` index the arrays of ``results``:

    ``counts`` (P, R, nbins) int
        distances in each bin, summed over frames
    ``g`` (P, R, nbins)
        g_ab(r) at the bin centres :attr:`r` (NaN without centres or without a cell volume)
    ``n_r`` (P, R, nbins)
        running coordination number at the upper bin edges (neighbours per centre)
    ``n_centres`` (P, R) int
        centres summed over frames
    ``first_peak``, ``first_minimum`` (P, R)
        Å; NaN where there is none
    ``cutoffs`` {pair: Å}
        the first minimum of g over all atoms, whatever the regions: the natural coordination
        cutoff, for the pairs whose g(r) has one below rmax; also :attr:`cutoffs`
    """

    def __init__(self, source, *, rmax=6.0, nbins=200, pairs=None, regions=REGIONS,
                 interface_width=3.0, comm=None):
        self.rmax = check_length("rmax", rmax)
        self.nbins = check_whole("nbins", nbins, minimum=1)
        self._pairs_asked = pairs
        super().__init__(source, regions=regions, interface_width=interface_width, comm=comm)

    @property
    def r(self):
        """Bin centres (Å)."""
        return bin_centres(self.rmax, self.nbins)

    @property
    def edges(self):
        """Bin edges (Å)."""
        return bin_edges(self.rmax, self.nbins)

    @property
    def cutoffs(self):
        """{pair: first minimum of g over all atoms (Å)}, for the pairs that have one."""
        return self.results.cutoffs

    def _prepare(self):
        self.pair_list = self.species.pairs(self._pairs_asked)
        self.pairs = [name for name, _, _ in self.pair_list]
        t = len(self.species)
        self._pair_ok = np.zeros((t, t), bool)
        for _, a, b in self.pair_list:
            self._pair_ok[a, b] = True
        self._centre_ok = self._pair_ok.any(axis=1)
        self._hist = np.zeros((N_GROUPS, t, t, self.nbins), np.int64)
        self._n_centres = np.zeros((N_GROUPS, t), np.int64)
        self._norm = np.zeros((N_GROUPS, t, t))

    def _single_frame(self, frame):
        t = len(self.species)
        centres = frame.mine(np.flatnonzero(self._centre_ok[frame.types]))
        groups = frame.groups[centres]
        pair_histogram(frame.positions, frame.cell, frame.pbc, frame.types, self.rmax,
                       self.nbins, centres=centres, groups=groups, n_groups=N_GROUPS,
                       pairs=self._pair_ok, n_types=t, out=self._hist)
        n_c, norm = centre_counts(frame, centres, t)
        self._n_centres += n_c
        self._norm += norm

    def _reduce(self, comm):
        self._hist = parallel.allreduce_sum(self._hist, comm)
        self._n_centres = parallel.allreduce_sum(self._n_centres, comm)
        self._norm = parallel.allreduce_sum(self._norm, comm)

    def _sums(self, region, a, b):
        """Histogram, centres and normalisation (sum of N_a N_b / V) of a pair in a region."""
        groups = REGION_GROUPS[region]
        return (self._hist[groups, a, b].sum(axis=0), int(self._n_centres[groups, a].sum()),
                float(self._norm[groups, a, b].sum()))

    def _peak_and_minimum(self, counts, g):
        # Without a cell volume g is undefined, but its shape (and so where its peaks and
        # minima lie) is that of the histogram over the shell volumes.
        shape = g if np.all(np.isfinite(g)) else counts / shell_volumes(self.rmax, self.nbins)
        return first_peak_and_minimum(self.r, shape)

    def _conclude(self):
        shape = (len(self.pair_list), len(self.regions))
        res = self.results
        res.counts = np.zeros(shape + (self.nbins,), np.int64)
        res.g = np.zeros(shape + (self.nbins,))
        res.n_r = np.zeros(shape + (self.nbins,))
        res.n_centres = np.zeros(shape, np.int64)
        res.first_peak = np.full(shape, math.nan)
        res.first_minimum = np.full(shape, math.nan)
        res.cutoffs = {}
        for p, (name, a, b) in enumerate(self.pair_list):
            counts, n, z = self._sums("all", a, b)
            minimum = self._peak_and_minimum(counts, normalise(counts, z, 1, 1, self.rmax))[1]
            if math.isfinite(minimum):
                res.cutoffs[name] = minimum
            for q, region in enumerate(self.regions):
                counts, n, z = self._sums(region, a, b)
                g = normalise(counts, z, 1, 1, self.rmax)
                res.counts[p, q], res.g[p, q], res.n_centres[p, q] = counts, g, n
                res.n_r[p, q] = running_coordination(counts, n)
                if n > 0:
                    res.first_peak[p, q], res.first_minimum[p, q] = \
                        self._peak_and_minimum(counts, g)
        if not self.reference.cell.volume > 1e-10:
            self.notes.append("the cell has no volume: g(r) is undefined (NaN); peaks and "
                              "minima come from the distance histogram over the shell volumes, "
                              "n(r) and coordination numbers are counted as usual")
