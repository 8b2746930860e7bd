"""Bond-angle distributions per region: O-V-O at V centres, V-O-V at O centres, or any
triplet b-a-c (a the centre), with bonds below the coordination cutoffs.

The cutoffs are those of :class:`~.coordination.Coordination` ({pair: Å}); a bond a-b without
its own cutoff takes that of b-a (the same bond seen from the other end), so the V-O cutoff
:func:`~.pipeline.analyse` found (the first minimum of g_VO) serves O-V-O and V-O-V alike.
Angles in degrees (0 to 180), histograms summed over frames; a region restricts the centres.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError
from ..kernels import parallel
from ..kernels.angles import angle_bin_centres, angle_histogram
from .base import AnalysisBase, check_whole
from .coordination import check_cutoffs
from .regions import N_GROUPS, REGION_GROUPS, REGIONS
from .report import _output_folder
from .xrd import write_csv


def default_triplets(species, cutoffs):
    """b-a-b for every bonded pair a-b of different species that has a cutoff (either way):
    for V2O3 with a V-O cutoff, ['O-V-O', 'V-O-V']."""
    out = []
    for a in species:
        for b in species:
            if a != b and (f"{a}-{b}" in cutoffs or f"{b}-{a}" in cutoffs):
                out.append(f"{b}-{a}-{b}")
    return out


class BondAngles(AnalysisBase):
    """Bond-angle histograms of triplets ['O-V-O', ...] (middle species: the centre), per region.

    ``cutoffs`` {'V-O': 2.3, ...} (Å); ``triplets`` default :func:`default_triplets`; ``nbins``
    equal bins over 0-180 degrees. Other arguments as :class:`~.base.AnalysisBase`.

    After :meth:`run`, ``triplets`` and ``regions`` index the arrays of ``results``:

    ``angle`` (nbins,) degrees
        bin centres
    ``histogram`` (K, R, nbins) int
        angles in each bin, summed over frames
    ``density`` (K, R, nbins)
        the histogram as a probability density (per degree; NaN without angles)
    ``mean`` (K, R)
        mean angle (degrees, from the bin centres)
    ``n_centres`` (K, R) int
        centres of the triplet's species in the region, summed over frames
    ``cutoffs`` {triplet: (Å, Å)}
        the bond cutoffs of its two arms
    """

    def __init__(self, source, *, cutoffs, triplets=None, nbins=180, regions=REGIONS,
                 interface_width=3.0, comm=None):
        self._cutoffs_asked = cutoffs
        self._triplets_asked = triplets
        self.nbins = check_whole("angle bins", nbins, minimum=1)
        super().__init__(source, regions=regions, interface_width=interface_width, comm=comm)

    def _parse(self):
        symbols = self.species.symbols
        pairs = [f"{a}-{b}" for a in symbols for b in symbols]
        cutoffs = check_cutoffs(self._cutoffs_asked, pairs)
        asked = self._triplets_asked
        if asked is None:
            asked = default_triplets(symbols, cutoffs)
        elif isinstance(asked, str):
            asked = [asked]
        index = {s: k for k, s in enumerate(symbols)}
        out = []
        for item in asked:
            for name in str(item).split(","):
                name = name.strip()
                parts = name.split("-")
                if len(parts) != 3 or not all(parts):
                    raise UserError(f"bond-angle triplet {name!r} must look like 'O-V-O' "
                                    "(neighbour-centre-neighbour)")
                for s in parts:
                    if s not in index:
                        raise UserError(f"triplet {name!r}: no {s} atoms in the trajectory "
                                        f"(species: {', '.join(symbols)})")
                b, a, c = parts
                arms = []
                for n in (b, c):
                    cut = cutoffs.get(f"{a}-{n}", cutoffs.get(f"{n}-{a}"))
                    if cut is None:
                        raise UserError(f"triplet {name!r} needs a cutoff for the {a}-{n} bond "
                                        f"(give one, e.g. --cutoff {a}-{n}=2.3)")
                    arms.append(cut)
                if name not in [t[0] for t in out]:
                    out.append((name, index[a], index[b], index[c], tuple(arms)))
        return out

    def _prepare(self):
        self.triplet_list = self._parse()
        self.triplets = [t[0] for t in self.triplet_list]
        t = len(self.species)
        self._cut = np.zeros((t, t))
        for _, a, b, c, (cb, cc) in self.triplet_list:
            for n, cut in ((b, cb), (c, cc)):
                if self._cut[a, n] and self._cut[a, n] != cut:
                    raise UserError(f"two cutoffs for the bond {self.species.symbols[a]}-"
                                    f"{self.species.symbols[n]}: give one")
                self._cut[a, n] = cut
        self._centre_ok = (self._cut > 0).any(axis=1)
        self._hist = np.zeros((N_GROUPS, t, t, t, self.nbins), np.int64)
        self._n_centres = np.zeros((N_GROUPS, t), np.int64)

    def _single_frame(self, frame):
        if not self._centre_ok.any():
            return
        t = len(self.species)
        centres = frame.mine(np.flatnonzero(self._centre_ok[frame.types]))
        groups = frame.groups[centres]
        angle_histogram(frame.positions, frame.cell, frame.pbc, frame.types, self._cut,
                        self.nbins, centres=centres, groups=groups, n_groups=N_GROUPS,
                        n_types=t, out=self._hist)
        np.add.at(self._n_centres, (groups, frame.types[centres]), 1)

    def _reduce(self, comm):
        self._hist = parallel.allreduce_sum(self._hist, comm)
        self._n_centres = parallel.allreduce_sum(self._n_centres, comm)

    def _conclude(self):
        shape = (len(self.triplet_list), len(self.regions))
        res = self.results
        res.angle = angle_bin_centres(self.nbins)
        res.histogram = np.zeros(shape + (self.nbins,), np.int64)
        res.density = np.full(shape + (self.nbins,), math.nan)
        res.mean = np.full(shape, math.nan)
        res.n_centres = np.zeros(shape, np.int64)
        res.cutoffs = {}
        width = 180.0 / self.nbins
        for k, (name, a, b, c, arms) in enumerate(self.triplet_list):
            res.cutoffs[name] = arms
            lo, hi = min(b, c), max(b, c)
            for r, region in enumerate(self.regions):
                groups = REGION_GROUPS[region]
                h = self._hist[groups, a, lo, hi].sum(axis=0)
                res.histogram[k, r] = h
                res.n_centres[k, r] = self._n_centres[groups, a].sum()
                if h.sum():
                    res.density[k, r] = h / (h.sum() * width)
                    res.mean[k, r] = float(np.dot(res.angle, h) / h.sum())

    def result(self, label):
        """The :class:`AnglesResult` of this analysis (after :meth:`run`)."""
        res = self.results
        return AnglesResult(source=label, frames=list(self.frames), triplets=list(self.triplets),
                            regions=list(self.regions), cutoffs=dict(res.cutoffs),
                            angle=res.angle, histogram=res.histogram, density=res.density,
                            mean=res.mean, n_centres=res.n_centres, notes=list(self.notes),
                            rank=self.rank)


@dataclass
class AnglesResult:
    """What :class:`BondAngles` measured, and its files: angles.csv, angles.png."""

    source: str
    frames: list
    triplets: list
    regions: list
    cutoffs: dict          # triplet -> (Å, Å)
    angle: np.ndarray      # bin centres, degrees
    histogram: np.ndarray  # (K, R, nbins)
    density: np.ndarray    # (K, R, nbins), per degree
    mean: np.ndarray       # (K, R), degrees
    n_centres: np.ndarray  # (K, R)
    notes: list = field(default_factory=list)
    rank: int = 0

    def lines(self):
        """Console lines: angles per centre and mean angle, per triplet and region."""
        out = [f"Bond angles: {self.source}, {len(self.frames)} frame(s)"]
        for k, name in enumerate(self.triplets):
            cut = " and ".join(f"{c:.3f}" for c in dict.fromkeys(self.cutoffs[name]))
            cells = []
            for r, region in enumerate(self.regions):
                n = self.n_centres[k, r]
                per = self.histogram[k, r].sum() / n if n else math.nan
                mean = self.mean[k, r]
                cells.append(f"{region} {per:.2f}/centre, mean {mean:.1f}°"
                             if np.isfinite(mean) else f"{region} -")
            out.append(f"  {name} (bonds < {cut} Å): " + "; ".join(cells))
        return out

    def write(self, out_dir):
        """Write angles.csv and angles.png into ``out_dir`` (rank 0 only); the paths."""
        if self.rank != 0:
            return []
        out = _output_folder(out_dir)
        paths = [out / "angles.csv", out / "angles.png"]
        names = [f"{t}_{r}" for t in self.triplets for r in self.regions]
        write_csv(paths[0], ["angle_deg"] + [f"count_{n}" for n in names]
                  + [f"density_{n}" for n in names],
                  [self.angle, *self.histogram.reshape(-1, len(self.angle)).astype(float),
                   *self.density.reshape(-1, len(self.angle))])
        self._plot(paths[1])
        return paths

    def _plot(self, path):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        n = max(1, len(self.triplets))
        fig = Figure(figsize=(5.2 * n, 3.6), layout="constrained")
        FigureCanvasAgg(fig)
        for k, name in enumerate(self.triplets):
            ax = fig.add_subplot(1, n, k + 1)
            for r, region in enumerate(self.regions):
                if np.any(np.isfinite(self.density[k, r])):
                    ax.plot(self.angle, self.density[k, r], lw=1.2, color=f"C{r}", label=region)
            ax.set_xlim(0, 180)
            ax.set_xticks(range(0, 181, 30))
            ax.set_xlabel(f"{name} angle (degrees)")
            ax.set_ylabel("probability density (1/degree)")
            ax.legend(fontsize=8)
        fig.suptitle(f"Bond angles: {self.source}, {len(self.frames)} frame(s)", fontsize=9)
        fig.savefig(path, dpi=110)
