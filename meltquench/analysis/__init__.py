"""Structure analyses of trajectories: one class per analysis on one base class.

:class:`~.base.AnalysisBase` reads frames (:class:`~.frames.Frames`: a run folder, a trajectory
or structure file, an Atoms or a list of them), splits them over MPI ranks and reduces the
results; an analysis fills in ``_prepare``, ``_single_frame``, ``_reduce`` and ``_conclude``.
:class:`~.rdf.PartialRDF` and :class:`~.coordination.Coordination` measure structure;
:func:`~.pipeline.analyse` runs both per region and returns an
:class:`~.report.AnalysisResult`, whose ``table()`` and ``write()`` give the reports.
:class:`~.melt.MeltDiagnostics` measures MSD, V6/O4 fractions and the order parameter q̄6 per
region and frame; :func:`~.pipeline.melt_diagnostics` runs it and judges whether the melt
melted, the quench left an amorphous region and the crystal stayed intact
(:class:`~.report.MeltResult`: ``verdicts``, ``verdict_lines()``, ``to_dict()``, ``write()``).
:class:`~.xrd.XRD` simulates the powder XRD I(2theta) and the partial structure factors
S_ab(q) per region; :class:`~.angles.BondAngles` gives bond-angle distributions (O-V-O, V-O-V).

    rdf = PartialRDF("runs/demo", rmax=6.0, pairs=["V-O"]).run(step=2)
    cn = Coordination("runs/demo", cutoffs=rdf.cutoffs, pairs=["V-O"]).run(step=2)
    cn.results.mean   # (pairs, regions)
    melt = melt_diagnostics("runs/demo")
    print("\n".join(melt.verdict_lines()))
"""
from .angles import AnglesResult, BondAngles
from .base import (AnalysisBase, AnalysisCollection, FramesThenAtoms, Results, WholeFrames,
                   run_analyses)
from .coordination import Coordination
from .frames import TRAJECTORY_NAME, Frame, Frames, Species
from .melt import MeltDiagnostics
from .pipeline import analyse, melt_diagnostics, vo_cutoff
from .rdf import PartialRDF
from .regions import REGIONS, Regions
from .report import AnalysisResult, MeltResult, PairResult, Verdict
from .xrd import XRD, XRDResult, bragg_reflections

__all__ = ["AnalysisBase", "AnalysisCollection", "AnalysisResult", "AnglesResult", "BondAngles",
           "Coordination", "Frame",
           "Frames", "FramesThenAtoms", "MeltDiagnostics", "MeltResult", "PairResult",
           "PartialRDF", "REGIONS", "Regions", "Results", "Species", "TRAJECTORY_NAME", "Verdict",
           "WholeFrames", "XRD", "XRDResult", "analyse", "bragg_reflections", "melt_diagnostics",
           "run_analyses", "vo_cutoff"]
