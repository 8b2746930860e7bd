"""The base class of every analysis: read frames, split them over MPI ranks, reduce, conclude.

An analysis subclasses :class:`AnalysisBase` (the pattern of MDAnalysis ``AnalysisBase``) and
fills in four hooks:

``_prepare()``
    once, after the first analysed frame (``self.reference``) has fixed ``self.species`` and
    ``self.regions``: parse options against the species, allocate accumulators;
``_single_frame(frame)``
    add one :class:`~.frames.Frame` to the accumulators. On a shared frame the rank works on
    ``frame.mine(atoms)`` only, its block of the atoms it would otherwise loop over;
``_reduce(comm)``
    sum the accumulators over the MPI ranks (:mod:`meltquench.kernels.parallel`);
``_conclude()``
    turn the sums into ``self.results``.

``run(start, stop, step)`` then works serially, under ``mpirun`` and without mpi4py, and every
rank ends with the full results. How frames go to ranks is the class attribute ``split``, a
strategy object: :class:`FramesThenAtoms` (the default) or :class:`WholeFrames`.
:class:`AnalysisCollection` runs several analyses in one pass over the frames.
"""
import math

import numpy as np

from ..errors import UserError
from ..kernels import parallel
from .frames import Frame, Frames, Species
from .regions import REGIONS, Regions


class Results(dict):
    """A dictionary whose keys are also attributes (``results.g`` is ``results['g']``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class FramesThenAtoms:
    """Whole frames per rank, the rest shared by atoms.

    The first ``n - n % size`` frames go out in contiguous blocks, one block per rank; each of
    the last ``n % size`` frames is analysed by every rank, each taking its block of the atoms
    (:meth:`Frame.mine`). Every rank gets the same amount of work.
    """

    def plan(self, n_frames, rank, size):
        """``[(position, share), ...]``: positions in the selection and None (whole frame) or
        ``(rank, size)`` (shared frame)."""
        own, shared = parallel.frame_plan(n_frames, rank, size)
        return [(pos, None) for pos in own] + [(pos, (rank, size)) for pos in shared]


class WholeFrames:
    """Whole frames only, dealt out in contiguous blocks (ranks may differ by one frame), for
    analyses that cannot split a frame's atoms."""

    def plan(self, n_frames, rank, size):
        start, stop = parallel.block_range(n_frames, rank, size)
        return [(pos, None) for pos in range(start, stop)]


def check_whole(name, value, minimum=None, none_ok=False):
    """``value`` as an int; a UserError unless it is a whole number (>= ``minimum``)."""
    if value is None and none_ok:
        return None
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise UserError(f"{name} must be a whole number{' or None' if none_ok else ''}, "
                        f"got {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_length(name, value, positive=True):
    """``value`` as a float number of Å; a UserError unless it is > 0 (``positive``) or >= 0."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number of Å, got {value!r}") from None
    if positive and not (value > 0 and math.isfinite(value)):
        raise UserError(f"{name} must be a positive number of Å, got {value}")
    if not positive and not value >= 0:
        raise UserError(f"{name} must be zero or more Å, got {value}")
    return value


class AnalysisBase:
    """Frames in, results out; MPI by the ``split`` strategy.

    source: a run folder, a trajectory or structure file, an Atoms, a list of Atoms or a
    :class:`~.frames.Frames` (share one between analyses to read a file once). ``regions``
    from ``'all', 'crystal', 'melt', 'interface'``; ``interface_width`` in Å. ``comm``: an
    mpi4py communicator (default COMM_WORLD, or serial without mpi4py).

    After :meth:`run`: ``results``, ``frames`` (the analysed frame numbers), ``reference``
    (the first analysed frame, an Atoms), ``species`` (:class:`~.frames.Species`, numbered
    from ``reference``), ``regions`` (the regions reported) and ``notes``.
    """

    split = FramesThenAtoms()

    def __init__(self, source, *, regions=REGIONS, interface_width=3.0, comm=None):
        self._owns_source = not isinstance(source, Frames)
        self.source = Frames(source) if self._owns_source else source
        self._regions = Regions(regions, check_length("interface_width", interface_width,
                                                      positive=False))
        self.comm = parallel.get_comm(comm)
        self.results = Results()
        self.frames = []
        self.reference = None
        self.species = None
        self.regions = []
        self.notes = []

    @property
    def rank(self):
        """This process's MPI rank (only rank 0 writes files)."""
        return self.comm.Get_rank()

    def run(self, start=0, stop=None, step=1):
        """Analyse frames ``[start:stop:step]``; returns ``self``."""
        run_analyses([self], start, stop, step)
        return self

    def _prepare(self):
        pass

    def _single_frame(self, frame):
        raise NotImplementedError

    def _reduce(self, comm):
        pass

    def _conclude(self):
        pass


class AnalysisCollection:
    """Several analyses of one source in one pass over its frames (each frame is read once).

    The analyses must share one :class:`~.frames.Frames`, communicator, split and regions.
    """

    def __init__(self, *analyses):
        first = analyses[0]
        for a in analyses[1:]:
            if (a.source is not first.source or a.comm is not first.comm
                    or type(a.split) is not type(first.split) or a._regions != first._regions):
                raise ValueError("the analyses of a collection need one Frames, communicator, "
                                 "split and regions")
        self.analyses = list(analyses)

    def run(self, start=0, stop=None, step=1):
        run_analyses(self.analyses, start, stop, step)
        return self


def run_analyses(analyses, start=0, stop=None, step=1):
    """Run ``analyses`` (sharing source, communicator, split and regions) in one pass."""
    lead = analyses[0]
    check_whole("start", start)
    check_whole("stop", stop, none_ok=True)
    check_whole("stride", step, minimum=1)
    try:
        _run(analyses, lead.source, lead.comm, start, stop, step)
    finally:
        if any(a._owns_source for a in analyses):
            lead.source.close()


def _run(analyses, frames, comm, start, stop, step):
    lead = analyses[0]
    selected = frames.select(start, stop, step)
    first = frames.get(selected[0])
    if len(first) == 0:
        raise UserError("the first analysed frame holds no atoms")
    species = Species(first)
    regions = lead._regions.resolve(first)
    for a in analyses:
        a.frames, a.reference, a.species = selected, first, species
        a.regions, a.notes = regions.used, list(regions.notes)
        a._prepare()
    error = None
    try:
        for pos, share in lead.split.plan(len(selected), comm.Get_rank(), comm.Get_size()):
            k = selected[pos]
            frame = Frame(first if pos == 0 else frames.get(k), k, species, regions, share)
            for a in analyses:
                a._single_frame(frame)
    except UserError as exc:
        error = str(exc)
    error = parallel.first_error(error, comm)
    if error:
        raise UserError(error)
    for a in analyses:
        a._reduce(comm)
        a._conclude()
