"""The temperature programme T(t) of a melt-quench run: heat, hold, quench, hold.

Times are in fs (not ASE time units) and temperatures in K. A :class:`Schedule` is a
piecewise-linear function of time with named stages; the driver asks it for the target
temperature at every MD step.

The paper (Osman et al. 2022) does not say how its 18 ps were split; the ``paper`` presets of
:mod:`meltquench.config` use 1 ps heating 300 -> 4000 K, 6 ps melt at 4000 K, 9 ps quench
4000 -> 300 K (about 411 K/ps) and 2 ps at 300 K.
"""
from dataclasses import dataclass

import numpy as np

from .errors import UserError


@dataclass(frozen=True)
class Stage:
    """One linear piece of the programme: from ``T_start_K`` to ``T_end_K`` over ``duration_fs``."""

    name: str
    duration_fs: float
    T_start_K: float
    T_end_K: float


class Schedule:
    """Piecewise-linear temperature programme built from :class:`Stage` s."""

    def __init__(self, stages):
        self.stages = [s for s in stages if s.duration_fs > 0]
        if not self.stages:
            raise UserError("the schedule has no stage with a positive duration")
        self.boundaries_fs = np.concatenate([[0.0], np.cumsum([s.duration_fs for s in self.stages])])

    @property
    def total_fs(self):
        return float(self.boundaries_fs[-1])

    def stage_at(self, time_fs):
        """The :class:`Stage` that ``time_fs`` falls in (the last one past the end)."""
        i = int(np.searchsorted(self.boundaries_fs, time_fs, side="right")) - 1
        return self.stages[min(max(i, 0), len(self.stages) - 1)]

    def stage_of_step(self, time_fs):
        """The stage of the MD step that ends at ``time_fs``: the one it integrates through
        (a step ending on a stage boundary belongs to the stage before it)."""
        return self.stage_at(max(float(time_fs) - 1e-9, 0.0))

    def stage_start_fs(self, name):
        """Start time (fs) of the first stage called ``name``."""
        for stage, start in zip(self.stages, self.boundaries_fs):
            if stage.name == name:
                return float(start)
        raise KeyError(name)

    def temperature(self, time_fs):
        """Target temperature (K) at ``time_fs``; constant before 0 and after the end."""
        t = min(max(float(time_fs), 0.0), self.total_fs)
        i = min(int(np.searchsorted(self.boundaries_fs, t, side="right")) - 1, len(self.stages) - 1)
        stage = self.stages[i]
        frac = (t - self.boundaries_fs[i]) / stage.duration_fs
        return stage.T_start_K + (stage.T_end_K - stage.T_start_K) * min(frac, 1.0)

    def nsteps(self, timestep_fs):
        """Number of MD steps covering the programme with ``timestep_fs`` steps."""
        return int(round(self.total_fs / timestep_fs))

    def describe(self):
        """One line per stage, e.g. ``quench   9.000 ps  4000 -> 300 K  (411.1 K/ps)``."""
        lines = []
        for s in self.stages:
            rate = (s.T_end_K - s.T_start_K) / (s.duration_fs / 1000.0)
            ramp = f"  ({rate:+.1f} K/ps)" if s.T_end_K != s.T_start_K else ""
            lines.append(f"{s.name:<7} {s.duration_fs / 1000.0:8.3f} ps  "
                         f"{s.T_start_K:g} -> {s.T_end_K:g} K{ramp}")
        return "\n".join(lines)


def melt_quench(T_start_K=300.0, T_melt_K=4000.0, T_final_K=300.0, heat_fs=1000.0,
                melt_fs=6000.0, quench_fs=None, quench_rate_K_per_ps=None, final_fs=2000.0,
                anneal_fs=0.0):
    """The standard programme: heat T_start -> T_melt, hold, quench to T_final, hold; then
    (``anneal_fs`` > 0) the ``anneal`` stage, a further hold at T_final that a run may give
    its finish calculator.

    Give the quench either as a duration (``quench_fs``) or as a rate (K/ps, positive).
    """
    for name, value in (("T_start_K", T_start_K), ("T_melt_K", T_melt_K), ("T_final_K", T_final_K)):
        if not value > 0:
            raise UserError(f"schedule.{name} must be > 0 K, got {value}")
    for name, value in (("heat_fs", heat_fs), ("melt_fs", melt_fs), ("final_fs", final_fs),
                        ("anneal_fs", anneal_fs)):
        if value < 0:
            raise UserError(f"schedule.{name} must be >= 0 fs, got {value}")
    if (quench_fs is None) == (quench_rate_K_per_ps is None):
        raise UserError("schedule: give exactly one of quench_fs and quench_rate_K_per_ps")
    if quench_rate_K_per_ps is not None:
        if not quench_rate_K_per_ps > 0:
            raise UserError(f"schedule.quench_rate_K_per_ps must be > 0, got {quench_rate_K_per_ps}")
        quench_fs = abs(T_melt_K - T_final_K) / quench_rate_K_per_ps * 1000.0
    if quench_fs < 0:
        raise UserError(f"schedule.quench_fs must be >= 0 fs, got {quench_fs}")
    return Schedule([Stage("heat", heat_fs, T_start_K, T_melt_K),
                     Stage("melt", melt_fs, T_melt_K, T_melt_K),
                     Stage("quench", quench_fs, T_melt_K, T_final_K),
                     Stage("final", final_fs, T_final_K, T_final_K),
                     Stage("anneal", anneal_fs, T_final_K, T_final_K)])

