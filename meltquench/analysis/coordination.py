"""Coordination numbers of species pairs per region: how many b atoms lie within a cutoff of
each a atom (the centre), as a histogram over centres and frames, and its mean."""
import math

import numpy as np

from ..errors import UserError
from ..kernels import parallel
from ..kernels.coordination import coordination_numbers, mean_from_histogram
from .base import AnalysisBase
from .regions import N_GROUPS, REGION_GROUPS, REGIONS


def check_cutoffs(cutoffs, pair_names):
    """{pair: Å} -> {pair: float}; a UserError for an unknown pair or a non-positive value."""
    if cutoffs is None:
        return {}
    if not isinstance(cutoffs, dict):
        raise UserError("cutoffs must map pairs to distances in Å, e.g. {'V-O': 2.3}")
    out = {}
    for name, value in cutoffs.items():
        if name not in pair_names:
            raise UserError(f"cutoff given for {name!r}, which is not among the pairs analysed "
                            f"({', '.join(pair_names)})")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UserError(f"cutoff for {name} must be a number of Å, got {value!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"cutoff for {name} must be a positive number of Å, got {value}")
        out[name] = value
    return out


class Coordination(AnalysisBase):
    """Coordination numbers below per-pair cutoffs, per region.

    cutoffs: {'V-O': 2.3, ...} (Å), e.g. :attr:`PartialRDF.cutoffs
    <meltquench.analysis.rdf.PartialRDF.cutoffs>` (the first minima of g); ``pairs``
    ['V-O', ...] (centre-neighbour; default every ordered pair of species). Pairs without a
    cutoff are reported but not counted. Other arguments as :class:`~.base.AnalysisBase`.

    After :meth:`run`, ``pairs`` (names) and ``regions`` index the arrays of ``results``:

    ``histogram`` (P, R, K) int
        centres (summed over frames) with 0, 1, ..., K - 1 neighbours
    ``mean`` (P, R)
        mean coordination number (NaN without centres or cutoff)
    ``n_centres`` (P, R) int
        centres counted, summed over frames (0 for a pair without a cutoff)
    ``cutoffs`` {pair: Å}
        the cutoffs used
    """

    def __init__(self, source, *, cutoffs, pairs=None, regions=REGIONS, interface_width=3.0,
                 comm=None):
        self._cutoffs_asked = cutoffs
        self._pairs_asked = pairs
        self.cutoffs = {}
        super().__init__(source, regions=regions, interface_width=interface_width, comm=comm)

    def _prepare(self):
        self.pair_list = self.species.pairs(self._pairs_asked)
        self.pairs = [name for name, _, _ in self.pair_list]
        self.cutoffs = check_cutoffs(self._cutoffs_asked, self.pairs)
        t = len(self.species)
        self._cut = np.zeros((t, t))
        for name, a, b in self.pair_list:
            self._cut[a, b] = self.cutoffs.get(name, 0.0)
        self._centre_ok = (self._cut > 0).any(axis=1)
        self._hist = np.zeros((N_GROUPS, t, t, 1), np.int64)

    def _single_frame(self, frame):
        if not self._centre_ok.any():
            return
        t = len(self.species)
        centres = frame.mine(np.flatnonzero(self._centre_ok[frame.types]))
        groups, ctypes = frame.groups[centres], frame.types[centres]
        counts = coordination_numbers(frame.positions, frame.cell, frame.pbc, frame.types,
                                      self._cut, centres=centres, n_types=t)
        self._grow(int(counts.max()) + 1 if counts.size else 1)
        for a, b in zip(*np.nonzero(self._cut > 0)):
            sel = ctypes == a
            np.add.at(self._hist, (groups[sel], a, b, counts[sel, b]), 1)

    def _grow(self, length):
        """Make room for coordination numbers up to ``length - 1``."""
        extra = length - self._hist.shape[-1]
        if extra > 0:
            self._hist = np.concatenate(
                [self._hist, np.zeros(self._hist.shape[:-1] + (extra,), np.int64)], axis=-1)

    def _reduce(self, comm):
        self._grow(parallel.allreduce_max(self._hist.shape[-1], comm))
        self._hist = parallel.allreduce_sum(self._hist, comm)

    def _conclude(self):
        shape = (len(self.pair_list), len(self.regions))
        res = self.results
        res.histogram = np.zeros(shape + (self._hist.shape[-1],), np.int64)
        res.mean = np.full(shape, math.nan)
        res.n_centres = np.zeros(shape, np.int64)
        res.cutoffs = dict(self.cutoffs)
        for p, (name, a, b) in enumerate(self.pair_list):
            if name not in self.cutoffs:
                continue
            for q, region in enumerate(self.regions):
                hist = self._hist[REGION_GROUPS[region], a, b].sum(axis=0)
                res.histogram[p, q] = hist
                res.n_centres[p, q] = hist.sum()
                res.mean[p, q] = mean_from_histogram(hist)
