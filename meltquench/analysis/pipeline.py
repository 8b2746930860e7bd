"""Partial RDFs and coordination numbers per region in one call: :func:`analyse`; the melt
diagnostics and their verdicts in another: :func:`melt_diagnostics`.

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
from .melt import (CN_CRYSTAL_MIN, FALLBACK_CUTOFF_VO_A, MSD_MELTED_A2, ORDER_CUTOFF_A,
                   Q6BAR_CORUNDUM, Q6BAR_CRYSTAL_MIN, MeltDiagnostics, frame_clock, judge)
from .rdf import PartialRDF
from .regions import REGION_GROUPS, REGIONS, Regions
from .report import AnalysisResult, MeltResult, PairResult


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


def melt_diagnostics(source, *, cutoff_VO=None, order_cutoff=ORDER_CUTOFF_A, regions=REGIONS,
                     interface_width=3.0, comm=None, start=0, stop=None, stride=1):
    """Did the mobile region melt, is the quenched region amorphous, is the crystal intact?

    Per region and frame: MSD (Å², from the first analysed frame), fractions of V with 6 O and
    O with 4 V, and q̄6 of the O sublattice (:mod:`.melt`); then the verdicts. source: a run
    folder (its frames are then timed and staged by its config.yaml and md.log), a trajectory
    or structure file, an Atoms or a list of them; frames ``[start:stop:stride]``.
    ``cutoff_VO`` (Å): the V-O bond cutoff; None: the first minimum of g_VO(r) over all atoms,
    as :func:`analyse` finds it with its default rmax and nbins. ``order_cutoff`` (Å): the O-O
    bonds of q̄6. ``regions``, ``interface_width`` (Å) and ``comm`` as :func:`analyse`. Every
    rank returns the full :class:`~.report.MeltResult`.
    """
    comm = parallel.get_comm(comm)
    interface_width = check_length("interface_width", interface_width, positive=False)
    if cutoff_VO is not None:
        cutoff_VO = check_length("cutoff_VO", cutoff_VO)
    check_length("order_cutoff", order_cutoff)
    check_whole("start", start)
    check_whole("stop", stop, none_ok=True)
    check_whole("stride", stride, minimum=1)
    Regions(regions)
    notes = []
    with Frames(source) as frames:
        options = dict(regions=regions, interface_width=interface_width, comm=comm)
        cutoff_source = "given"
        if cutoff_VO is None:
            cutoff_VO, cutoff_source = _auto_cutoff_VO(frames, start, stop, stride, comm)
            if cutoff_source == "fallback":
                notes.append(f"no first minimum of g_VO(r) below 6 Å: V-O cutoff "
                             f"{cutoff_VO:g} Å (give one)")
        md = MeltDiagnostics(frames, cutoff_VO=cutoff_VO, order_cutoff=order_cutoff, **options)
        md.run(start, stop, stride)
        clock = frame_clock(frames, md.frames)
    return MeltResult(
        source=frames.label, frames=md.frames, steps=clock.steps, times_fs=clock.times_fs,
        stages=clock.stages, regions=list(md.regions),
        series={name: md.series(REGION_GROUPS[name]) for name in md.regions},
        cutoff_VO=cutoff_VO, cutoff_source=cutoff_source,
        order={"name": "q6bar", "centres": "O", "neighbours": "O", "l": 6,
               "cutoff_A": float(order_cutoff), "perfect_crystal": Q6BAR_CORUNDUM,
               "definition": "Lechner-Dellago averaged bond order q6bar of the O sublattice, "
                             "mean over the region's O atoms",
               "citation": "W. Lechner and C. Dellago, J. Chem. Phys. 129, 114707 (2008); "
                           "P. J. Steinhardt, D. R. Nelson and M. Ronchetti, Phys. Rev. B 28, "
                           "784 (1983)"},
        criteria={"msd_melted_A2": MSD_MELTED_A2, "q6bar_crystal_min": Q6BAR_CRYSTAL_MIN,
                  "cn_crystal_min": CN_CRYSTAL_MIN},
        unwrapped=md.unwrapped, interface_width=interface_width, verdicts=judge(md, clock),
        notes=notes + md.notes + clock.notes, rank=md.rank)


def _auto_cutoff_VO(frames, start, stop, stride, comm):
    """(cutoff Å, source): the first minimum of g_VO(r) over all atoms of the frames, with
    :func:`analyse`'s default rmax and nbins ('auto'), else :data:`~.melt.FALLBACK_CUTOFF_VO_A`
    ('fallback'); without V or O atoms, the fallback marked 'none' (nothing is counted)."""
    symbols = set(frames.get(frames.select(start, stop, stride)[0]).get_chemical_symbols())
    if {"V", "O"} <= symbols:
        rdf = PartialRDF(frames, rmax=6.0, nbins=200, pairs=["V-O"], regions="all", comm=comm)
        rdf.run(start, stop, stride)
        if "V-O" in rdf.cutoffs:
            return rdf.cutoffs["V-O"], "auto"
        return FALLBACK_CUTOFF_VO_A, "fallback"
    return FALLBACK_CUTOFF_VO_A, "none"


def vo_cutoff(result):
    """The V-O cutoff (Å) the coordination numbers of ``result`` used (V-O, else O-V: the same
    bond); None without one (the melt diagnostics then find their own)."""
    for pair in ("V-O", "O-V"):
        value = result.cutoffs.get(pair, math.nan)
        if math.isfinite(value):
            return value
    return None
