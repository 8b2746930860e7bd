"""Structure analyses of trajectories: one class per analysis on one base class.

:class:`~.base.AnalysisBase` reads frames (:class:`~.frames.Frames`: a run folder, a trajectory
or structure file, an Atoms or a list of them), splits them over MPI ranks and reduces the
results; an analysis fills in ``_prepare``, ``_single_frame``, ``_reduce`` and ``_conclude``.
:class:`~.rdf.PartialRDF` and :class:`~.coordination.Coordination` are the two analyses so far;
:func:`~.pipeline.analyse` runs both per region and returns an
:class:`~.report.AnalysisResult`, whose ``table()`` and ``write()`` give the reports.

    rdf = PartialRDF("runs/demo", rmax=6.0, pairs=["V-O"]).run(step=2)
    cn = Coordination("runs/demo", cutoffs=rdf.cutoffs, pairs=["V-O"]).run(step=2)
    cn.results.mean   # (pairs, regions)
"""
from .base import (AnalysisBase, AnalysisCollection, FramesThenAtoms, Results, WholeFrames,
                   run_analyses)
from .coordination import Coordination
from .frames import TRAJECTORY_NAME, Frame, Frames, Species
from .pipeline import analyse
from .rdf import PartialRDF
from .regions import REGIONS, Regions
from .report import AnalysisResult, PairResult

__all__ = ["AnalysisBase", "AnalysisCollection", "AnalysisResult", "Coordination", "Frame",
           "Frames", "FramesThenAtoms", "PairResult", "PartialRDF", "REGIONS", "Regions",
           "Results", "Species", "TRAJECTORY_NAME", "WholeFrames", "analyse", "run_analyses"]
