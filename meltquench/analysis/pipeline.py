"""Partial RDFs and coordination numbers per region in one call: :func:`analyse`.

It runs :class:`~.rdf.PartialRDF` and :class:`~.coordination.Coordination` on one
:class:`~.frames.Frames`. Pairs without a given cutoff take the first minimum of their g(r)
over all atoms, so every region of a pair uses the same cutoff; the coordination numbers then
need a second pass over the frames. With a cutoff for every pair, one pass does both.
"""
import math

import numpy as np

from ..kernels import parallel
from .base import AnalysisCollection, check_length, check_whole
from .coordination import Coordination
from .frames import Frames
from .rdf import PartialRDF
from .regions import REGIONS, Regions
from .report import AnalysisResult, PairResult


def analyse(source, *, rmax=6.0, nbins=200, start=0, stop=None, stride=1,
            regions=REGIONS, interface_width=3.0, cutoffs=None, pairs=None, comm=None):
    """Partial RDFs and coordination numbers per region, averaged over frames.

    source: a run folder (holding trajectory.traj), a trajectory/structure file, an Atoms or a
    list of Atoms. rmax (Å) and nbins set the histogram; frames ``[start:stop:stride]`` are
    analysed. ``regions`` from 'all', 'crystal', 'melt', 'interface' (the last: within
    ``interface_width`` Å of a boundary plane); those the frames cannot give are left out with
    a note. ``cutoffs`` {'V-O': 2.3, ...} (Å) for the coordination numbers; pairs without one
    use the first minimum of their g(r) over all atoms. ``pairs`` ['V-O', ...] (centre-neighbour;
    default every ordered species pair). ``comm``: mpi4py communicator (default COMM_WORLD, or
    serial without mpi4py). Every rank returns the full :class:`~.report.AnalysisResult`.
    """
    comm = parallel.get_comm(comm)
    rmax = check_length("rmax", rmax)
    interface_width = check_length("interface_width", interface_width, positive=False)
    nbins = check_whole("nbins", nbins, minimum=1)
    check_whole("start", start)
    check_whole("stop", stop, none_ok=True)
    check_whole("stride", stride, minimum=1)
    Regions(regions)
    with Frames(source) as frames:
        options = dict(pairs=pairs, regions=regions, interface_width=interface_width, comm=comm)
        rdf = PartialRDF(frames, rmax=rmax, nbins=nbins, **options)
        given = Coordination(frames, cutoffs=cutoffs, **options)
        AnalysisCollection(rdf, given).run(start, stop, stride)
        auto = {name: rdf.cutoffs[name] for name in rdf.pairs
                if name not in given.cutoffs and name in rdf.cutoffs}
        cn = given
        if auto:
            cn = Coordination(frames, cutoffs={**given.cutoffs, **auto}, **options)
            cn.run(start, stop, stride)
    return _result(frames.label, rdf, cn, given.cutoffs, interface_width)


def _result(label, rdf, cn, given, interface_width):
    """The :class:`~.report.AnalysisResult` of a PartialRDF and a Coordination of its pairs."""
    notes = list(rdf.notes)
    missing = [name for name in rdf.pairs if name not in cn.cutoffs]
    if missing:
        notes.append(f"no first minimum of g(r) below rmax={rdf.rmax:g} Å for "
                     f"{', '.join(missing)}: no coordination numbers there (give a cutoff or a "
                     "larger rmax)")
    cutoffs = {name: cn.cutoffs.get(name, math.nan) for name in rdf.pairs}
    rows = []
    g, res = rdf.results, cn.results
    for p, name in enumerate(rdf.pairs):
        source = "given" if name in given else "auto" if name in cn.cutoffs else "none"
        for q, region in enumerate(rdf.regions):
            hist = res.histogram[p, q]
            last = np.flatnonzero(hist)
            hist = hist[:last[-1] + 1] if len(last) else hist[:0]
            rows.append(PairResult(
                pair=name, region=region, centres_per_frame=int(g.n_centres[p, q]) / len(rdf.frames),
                first_peak=g.first_peak[p, q], first_minimum=g.first_minimum[p, q],
                cutoff=cutoffs[name], cutoff_source=source, mean_cn=res.mean[p, q],
                cn_histogram=hist, g=g.g[p, q], n_r=g.n_r[p, q], counts=g.counts[p, q]))
    return AnalysisResult(source=label, frames=rdf.frames, rmax=rdf.rmax, nbins=rdf.nbins,
                          species=list(rdf.species.symbols), pairs=list(rdf.pairs),
                          regions=list(rdf.regions), interface_width=interface_width,
                          cutoffs=cutoffs, rows=rows, notes=notes, rank=rdf.rank)
