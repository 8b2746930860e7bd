"""Melt diagnostics: did the mobile region melt, is the quenched region amorphous, did the
fixed crystal stay a crystal?

:class:`MeltDiagnostics` measures per region and per analysed frame

``msd``
    mean-square displacement (Å²) from the first analysed frame;
``frac_V6``, ``frac_O4``
    the fraction of V with exactly 6 O, and of O with exactly 4 V, closer than the V-O
    cutoff (corundum V2O3: every V has 6 O at 1.97/2.05 Å, every O has 4 V: both 1);
``q6bar``
    the order parameter: Lechner and Dellago's averaged bond order q̄6 (J. Chem. Phys. 129,
    114707 (2008)) of the O sublattice, O neighbours closer than :data:`ORDER_CUTOFF_A`,
    averaged over the region's O atoms (:mod:`meltquench.kernels.order`).

Why q̄6 of the O sublattice: corundum is a hexagonal close packing of O with V in two thirds of
the octahedral holes. Every O has 12 O at 2.68-2.95 Å and the next at 4.00 Å, so the cutoff
sits in a wide gap, and the hcp order of those 12 is what a melt loses and an amorphous solid
never regains. Measured: perfect corundum 0.477; Gaussian rattling of 0.1 Å per coordinate
0.456; the mobile half of 120 atoms at 4000 K between fixed walls, superheated but not molten
(CHGNet, 0.5 ps, MSD 0.2 Å²) 0.34-0.40; liquid and glass of the pair potential 0.11-0.16 (a
20-atom model at 3000 K, not molten, dips to 0.15 and recovers: hence the MSD criterion
beside it); an ideal gas at corundum density
0.11-0.15. Steinhardt's own q6 of the same neighbours (0.48 against 0.30-0.35) and the
octahedral q4 of V with its O (0.73 against 0.44-0.48: the liquid keeps distorted VO6) separate
far less.

:func:`frame_clock` maps frames to MD steps, times and stages of the run's temperature
programme; :func:`judge` turns the series into verdicts by the criteria below.
"""
import math

import numpy as np

from ..config import load_config
from ..errors import UserError
from ..kernels import parallel
from ..kernels.coordination import coordination_numbers
from ..kernels.neighbors import complete_cell
from ..kernels.order import bond_order
from ..observers import read_md_log
from ..structures import CRYSTAL, MELT
from .base import AnalysisBase, WholeFrames, check_length
from .frames import TRAJECTORY_NAME
from .regions import N_GROUPS, REGION_GROUPS, REGIONS
from .report import Verdict

#: Cutoff (Å) of the O-O bonds of the order parameter: in the gap between the 12 O of the hcp
#: O sublattice of corundum V2O3 (2.68-2.95 Å) and the next O (4.00 Å).
ORDER_CUTOFF_A = 3.5

#: q̄6 of the O sublattice of perfect corundum V2O3 (with :data:`ORDER_CUTOFF_A`).
Q6BAR_CORUNDUM = 0.4766

#: The mobile region melted if the MSD it gains over the melt stage (Å²: the MSD from the
#: first analysed frame at the stage's last frame minus that at its first) reaches this. By
#: Lindemann's criterion a crystal melts when the RMS vibration amplitude reaches ~0.10-0.15 of
#: the nearest-neighbour distance (V-O, 2.0 Å): 0.2-0.3 Å, an MSD of at most ~0.2 Å² between
#: two snapshots, and a solid's MSD stops growing once its atoms vibrate at the temperature. A
#: superheated crystal held at crystal density between fixed walls was measured at 0.3-0.5 Å²
#: at 4000 K (CHGNet, 120 atoms) without melting. 1.0 Å² (RMS 1 Å, half a V-O bond) within the
#: stage takes atoms diffusing away from their sites: the same model melted at 6000 K and
#: passed 2.7 Å² in 0.5 ps. (The pair potential's 120-atom model at 3000 K disorders, q̄6
#: 0.2, but its MSD stalls at 1.1 Å²: disordered in place, not molten.)
MSD_MELTED_A2 = 1.0

#: q̄6 (:data:`ORDER_CUTOFF_A`) below which a region's O sublattice is disordered (melt or
#: amorphous) and at or above which it is crystal-like: between liquid or glass (0.11-0.16) and
#: a superheated crystal at 4000 K (0.34-0.40; at 300 K 0.45-0.47, perfect corundum 0.477).
Q6BAR_CRYSTAL_MIN = 0.30

#: The fixed crystal is intact while at least this fraction of its V keep 6 O and of its O
#: keep 4 V (corundum: 1.0). It leaves room for the odd defect without hiding a melted crystal
#: (liquid: 0.1-0.5).
CN_CRYSTAL_MIN = 0.90

#: The stage of the programme whose frames say whether the mobile region melted, and those
#: of the quenched state (the hold at T_final and the anneal after it).
MELT_STAGE = "melt"
FINAL_STAGES = ("final", "anneal")

#: Used when neither a V-O cutoff is given nor the V-O g(r) has a first minimum (Å).
FALLBACK_CUTOFF_VO_A = 2.6

#: A fractional coordinate this far outside [0, 1) shows that the frames are not wrapped.
_WRAP_TOL = 1e-6

_SUMS = ("atoms", "msd_raw", "msd_unwrapped", "V", "V6", "O", "O4", "q_n", "q_sum")


def _fractional(atoms):
    """Fractional coordinates of the atoms (open axes completed, as the cell lists do)."""
    return atoms.positions @ np.linalg.inv(complete_cell(atoms.cell.array, atoms.pbc))


def _ratio(a, b):
    out = np.full(np.shape(a), math.nan)
    np.divide(a, b, out=out, where=np.asarray(b) > 0)
    return out


class MeltDiagnostics(AnalysisBase):
    """MSD, V6/O4 fractions and q̄6 per region and per frame (module docstring).

    cutoff_VO (Å): V-O bonds for the coordination fractions (O-V: the same distance);
    ``order_cutoff`` (Å): O-O bonds of q̄6. Other arguments as
    :class:`~.base.AnalysisBase`. Frames go to ranks whole (:class:`~.base.WholeFrames`).

    Displacements: the engine's trajectory.traj holds the positions as the dynamics moved
    them (neither ASE's dynamics nor its Trajectory wrap them into the cell), so mobile atoms
    soon stand outside the cell. When any analysed frame has a fractional coordinate outside
    [0, 1) along a periodic axis, the frames are taken as unwrapped and the displacement from
    the first analysed frame is used as written. Otherwise they may have been wrapped (VASP's
    XDATCAR, some converters) and are unwrapped along the chain of minimum-image displacements
    between consecutive analysed frames. This assumes that no atom moves more than half a
    lattice-plane spacing between two analysed frames: analyse every frame (stride 1) of a
    wrapped trajectory. Under MPI each rank starts the chain at the frame before its first;
    the lattice translations crossed on the frames of the ranks before it are summed after the
    pass and its displacements redone where there are any, so the result equals the serial
    one. ``unwrapped`` says whether the chain was used.

    After :meth:`run`, arrays of ``results`` are indexed (region, frame), regions as
    :attr:`regions`, frames as :attr:`frames`: ``msd`` (Å²), ``frac_V6``, ``frac_O4``,
    ``q6bar`` (NaN where the region has no such atoms), ``atoms``, ``V``, ``O`` (counts).
    A region is judged afresh in every frame (the interface band moves with its atoms).
    :meth:`series` gives the same for any set of region groups.
    """

    split = WholeFrames()

    def __init__(self, source, *, cutoff_VO, order_cutoff=ORDER_CUTOFF_A, regions=REGIONS,
                 interface_width=3.0, comm=None):
        self.cutoff_VO = check_length("cutoff_VO", cutoff_VO)
        self.order_cutoff = check_length("order_cutoff", order_cutoff)
        self.unwrapped = None
        super().__init__(source, regions=regions, interface_width=interface_width, comm=comm)

    def _prepare(self):
        symbols = self.species.symbols
        self._v = symbols.index("V") if "V" in symbols else -1
        self._o = symbols.index("O") if "O" in symbols else -1
        t = len(self.species)
        self._cut = np.zeros((t, t))
        if self._v >= 0 and self._o >= 0:
            self._cut[self._v, self._o] = self._cut[self._o, self._v] = self.cutoff_VO
        else:
            self.notes.append("no V and O atoms: no V6/O4 fractions")
        if self._o < 0:
            self.notes.append("no O atoms: no order parameter (q6bar of the O sublattice)")
        n_frames = len(self.frames)
        self._position = {k: p for p, k in enumerate(self.frames)}
        self._mine = [p for p, _ in self.split.plan(n_frames, self.rank, self.comm.Get_size())]
        self._sums = {key: np.zeros((n_frames, N_GROUPS)) for key in _SUMS}
        self._ref_positions = self.reference.positions.copy()
        self._outside = False
        self._start_chain(np.zeros((len(self.reference), 3), np.int64))

    def _start_chain(self, images):
        """Start the minimum-image chain at the frame before this rank's first frame, with
        ``images`` (lattice translations per atom) already crossed before it."""
        first = self._mine[0] if self._mine else 0
        before = self.reference if first == 0 else self.source.get(self.frames[first - 1])
        self._prev_frac = _fractional(before)
        self._images = images

    def _displacements(self, atoms, k):
        """Squared displacements (Å²) from the first analysed frame: as written, and
        unwrapped along the minimum-image chain."""
        if len(atoms) != len(self._ref_positions):
            raise UserError(f"frame {k} holds {len(atoms)} atoms, the first analysed frame "
                            f"{len(self._ref_positions)}: displacements need the same atoms in "
                            "every frame")
        frac = _fractional(atoms)
        jump = np.rint(frac - self._prev_frac)
        jump[:, ~atoms.pbc] = 0.0
        self._images -= jump.astype(np.int64)
        self._prev_frac = frac
        periodic = frac[:, atoms.pbc]
        if periodic.size and (periodic.min() < -_WRAP_TOL or periodic.max() >= 1 + _WRAP_TOL):
            self._outside = True
        raw = atoms.positions - self._ref_positions
        unwrapped = raw + self._images @ atoms.cell.array
        return (raw ** 2).sum(axis=1), (unwrapped ** 2).sum(axis=1)

    def _single_frame(self, frame):
        p = self._position[frame.index]
        s = self._sums
        groups, types = frame.groups, frame.types
        sq_raw, sq_unwrapped = self._displacements(frame.atoms, frame.index)
        s["atoms"][p] = np.bincount(groups, minlength=N_GROUPS)
        s["msd_raw"][p] = np.bincount(groups, sq_raw, minlength=N_GROUPS)
        s["msd_unwrapped"][p] = np.bincount(groups, sq_unwrapped, minlength=N_GROUPS)
        v, o = self._v, self._o
        if v >= 0 and o >= 0:
            centres = np.flatnonzero((types == v) | (types == o))
            counts = coordination_numbers(frame.positions, frame.cell, frame.pbc, types,
                                          self._cut, centres=centres, n_types=len(self.species))
            is_v = types[centres] == v
            for key, sel, n, want in (("V", is_v, o, 6), ("O", ~is_v, v, 4)):
                g = groups[centres[sel]]
                s[key][p] = np.bincount(g, minlength=N_GROUPS)
                s[key + str(want)][p] = np.bincount(g, counts[sel, n] == want, minlength=N_GROUPS)
        if o >= 0:
            oxygens = np.flatnonzero(types == o)
            qbar = bond_order(frame.positions, frame.cell, frame.pbc, oxygens,
                              self.order_cutoff)[0]
            ok = np.isfinite(qbar)
            s["q_n"][p] = np.bincount(groups[oxygens[ok]], minlength=N_GROUPS)
            s["q_sum"][p] = np.bincount(groups[oxygens[ok]], qbar[ok], minlength=N_GROUPS)

    def _reduce(self, comm):
        self._outside = bool(parallel.allreduce_max(int(self._outside), comm))
        if not self._outside and comm.Get_size() > 1:
            self._add_earlier_images(comm)
        self._sums = {key: parallel.allreduce_sum(value, comm)
                      for key, value in self._sums.items()}

    def _add_earlier_images(self, comm):
        """Redo this rank's unwrapped displacements with the lattice translations crossed on
        the frames of the ranks before it (only where there are any)."""
        crossed = comm.allgather(self._images)
        before = sum(crossed[:self.rank], np.zeros_like(self._images))
        if not self._mine or not before.any():
            return
        self._start_chain(before)
        for p in self._mine:
            k = self.frames[p]
            atoms = self.reference if p == 0 else self.source.get(k)
            sq = self._displacements(atoms, k)[1]
            self._sums["msd_unwrapped"][p] = np.bincount(self._regions.groups(atoms, k), sq,
                                                         minlength=N_GROUPS)

    def _conclude(self):
        self.unwrapped = not self._outside
        if not self.unwrapped:
            self.notes.append("positions outside the cell: the frames are not wrapped, "
                              "displacements taken as written")
        per_region = [self.series(REGION_GROUPS[name]) for name in self.regions]
        for key in per_region[0]:
            self.results[key] = np.array([series[key] for series in per_region])
        self.results.unwrapped = self.unwrapped

    def series(self, groups):
        """{'msd', 'frac_V6', 'frac_O4', 'q6bar', 'atoms', 'V', 'O'}: arrays over the frames
        for the atoms in region ``groups`` (see :mod:`.regions`)."""
        s = {key: value[:, groups].sum(axis=1) for key, value in self._sums.items()}
        msd = s["msd_unwrapped" if self.unwrapped else "msd_raw"]
        return {"msd": _ratio(msd, s["atoms"]), "frac_V6": _ratio(s["V6"], s["V"]),
                "frac_O4": _ratio(s["O4"], s["O"]), "q6bar": _ratio(s["q_sum"], s["q_n"]),
                "atoms": s["atoms"].astype(np.int64), "V": s["V"].astype(np.int64),
                "O": s["O"].astype(np.int64)}


# --------------------------------------------------------------------------- time and stages
class Clock:
    """MD step, time (fs) and programme stage of each analysed frame.

    ``steps`` and ``times_fs`` hold None where unknown (a plain trajectory file); ``stages``
    holds ``'all'`` then. ``programme``: {'T_melt_K', 'melt_ps', 'T_final_K', ...} from the
    run's configuration, or {}.
    """

    def __init__(self, n, steps=None, times_fs=None, stages=None, programme=None, notes=()):
        self.steps = list(steps) if steps is not None else [None] * n
        self.times_fs = list(times_fs) if times_fs is not None else [None] * n
        self.stages = list(stages) if stages is not None else ["all"] * n
        self.programme = dict(programme or {})
        self.notes = list(notes)

    @property
    def staged(self):
        return any(s != "all" for s in self.stages)


def _run_folder(frames):
    """The run folder of a :class:`~.frames.Frames` (the folder of its trajectory.traj) if it
    holds a config.yaml; else None."""
    path = frames.path
    if (path is not None and path.name == TRAJECTORY_NAME
            and (path.parent / "config.yaml").is_file()):
        return path.parent
    return None


def _md_log_stages(path):
    """{step: stage} of an md.log (columns by its header), or {} without one."""
    try:
        log = read_md_log(path)
    except (OSError, UserError):
        return {}
    if "step" not in log or "stage" not in log:
        return {}
    return {int(step): stage for step, stage in zip(log["step"], log["stage"])}


def frame_clock(frames, selected):
    """The :class:`Clock` of frames ``selected`` (numbers in the trajectory) of ``frames``.

    From a run folder: frame k is MD step ``k * output.trajectory_interval`` (its
    config.yaml) at ``step * dynamics.timestep_fs``, in the stage md.log gives that step (the
    programme's, :mod:`meltquench.schedule`, where md.log lacks it). This assumes one
    trajectory interval for the whole run. Anything else: stage 'all', no times.
    """
    n = len(selected)
    run_dir = _run_folder(frames)
    if run_dir is None:
        return Clock(n, notes=["no run folder (trajectory.traj beside config.yaml and md.log): "
                               "frames without times or stages, judged over all frames"])
    try:
        cfg = load_config(run_dir / "config.yaml")
    except (UserError, OSError) as exc:
        return Clock(n, notes=[f"cannot read {run_dir / 'config.yaml'} ({exc}): frames without "
                               "times or stages, judged over all frames"])
    interval, dt = cfg.output.trajectory_interval, cfg.dynamics.timestep_fs
    schedule = cfg.build_schedule()
    logged = _md_log_stages(run_dir / "md.log")
    steps = [k * interval for k in selected]
    times = [step * dt for step in steps]
    stages = [logged.get(step) or schedule.stage_of_step(t).name
              for step, t in zip(steps, times)]
    notes = []
    if logged and len(frames) != max(logged) // interval + 1:
        notes.append(f"{len(frames)} frames, but md.log's {max(logged)} steps with "
                     f"output.trajectory_interval {interval} make {max(logged) // interval + 1}: "
                     "frame times may be off (was the interval changed on a restart?)")
    s = cfg.schedule
    programme = {"T_melt_K": s.T_melt_K, "T_final_K": s.T_final_K, "melt_ps": s.melt_ps,
                 "heat_ps": s.heat_ps, "timestep_fs": dt, "trajectory_interval": interval}
    return Clock(n, steps, times, stages, programme, notes)


# --------------------------------------------------------------------------- verdicts
def _span(clock, idx):
    """E.g. 'melt stage, 0.100-0.300 ps (21 frames)' for the frame positions ``idx``."""
    t = [clock.times_fs[i] for i in idx]
    names = list(dict.fromkeys(clock.stages[i] for i in idx))
    where = (f"{' and '.join(names)} stage{'s' if len(names) > 1 else ''}" if clock.staged
             else "all frames" if len(idx) == len(clock.stages) else "the last frames")
    if None not in t:
        where += f", {t[0] / 1000:.3f}-{t[-1] / 1000:.3f} ps"
    return f"{where} ({len(idx)} frame{'s' if len(idx) != 1 else ''})"


def _stat(reduce, values, idx=None):
    """``reduce`` (np.mean, np.min, ...) of the finite ``values[idx]``; NaN if none."""
    v = np.asarray(values, float)
    if idx is not None:
        v = v[idx]
    v = v[np.isfinite(v)]
    return float(reduce(v)) if v.size else math.nan


def _passes(numbers, tests):
    """Check ``[(key, '>=' or '<', limit)]`` on ``numbers``; a NaN value is not measured and
    skipped. Returns (every measured test passed, the keys skipped)."""
    ok, skipped = True, []
    for key, op, limit in tests:
        value = numbers[key]
        if not math.isfinite(value):
            skipped.append(key)
        elif not (value >= limit if op == ">=" else value < limit):
            ok = False
    return ok, skipped


def _criteria(text, skipped):
    return text + (f"; not measured: {', '.join(skipped)}" if skipped else "")


def _advice_not_melted(clock, reference):
    p = clock.programme
    hold = f", now {p['melt_ps']:g} ps" if "melt_ps" in p else ""
    temp = f", now {p['T_melt_K']:g} K" if "T_melt_K" in p else ""
    thick = reference.info.get("region_thickness_A")
    layer = f", now {float(thick[1]):.1f} Å" if thick is not None and len(thick) == 2 else ""
    return ("a quench makes a glass only of a melt; change: "
            f"a longer melt hold (schedule.melt_ps{hold}), a higher temperature "
            f"(schedule.T_melt_K{temp}), a thicker mobile region (regions.melt_fraction or "
            f"structure.repeat along the split axis{layer}), or room to expand along the split "
            "axis (regions.melt_expansion, e.g. 0.1; the melt is held at crystal density between the fixed crystal walls: CHGNet "
            "did not melt a 7 Å layer of 120-atom V2O3 at 4000 K, MSD 0.3-0.5 Å² in 0.6 ps, "
            "but did at 6000 K, 2.7 Å² in 0.5 ps)")


def _melt_verdict(mobile, name, clock, reference):
    n = len(clock.stages)
    idx = [i for i in range(n) if clock.stages[i] == MELT_STAGE] if clock.staged else list(range(n))
    if not idx:
        return Verdict("melt", name, "unknown", False, "no analysed frame in the melt stage",
                       {}, "", "analyse the frames of the melt stage")
    late = idx[len(idx) // 2:]
    msd = mobile["msd"]
    numbers = {"msd_gain_A2": float(msd[idx[-1]] - msd[idx[0]]), "msd_A2": float(msd[idx[-1]])}
    numbers.update({key: _stat(np.mean, mobile[key], late)
                    for key in ("q6bar", "frac_V6", "frac_O4")})
    tests = [("msd_gain_A2", ">=", MSD_MELTED_A2), ("q6bar", "<", Q6BAR_CRYSTAL_MIN)]
    melted, skipped = _passes(numbers, tests)
    criteria = (f"melted if the MSD gained over the stage >= {MSD_MELTED_A2:g} Å² (atoms diffuse "
                f"away from their sites) and q6bar (mean over its second half) < "
                f"{Q6BAR_CRYSTAL_MIN:g} (the O sublattice lost its order)")
    advice = ""
    if not melted:
        diffusing = numbers["msd_gain_A2"] >= MSD_MELTED_A2
        ordered = numbers["q6bar"] >= Q6BAR_CRYSTAL_MIN
        why = ("its atoms stayed near their sites" + (" and its O sublattice stayed ordered"
                                                      if ordered else
                                                      ", though its order fell (disordered in "
                                                      "place, not molten)")
               if not diffusing else "its O sublattice stayed ordered")
        advice = f"{why}; {_advice_not_melted(clock, reference)}"
    return Verdict("melt", name, "melted" if melted else "did not melt", melted,
                   _span(clock, idx), numbers, _criteria(criteria, skipped), advice)


def _final_window(clock):
    """Frame positions of the quenched state: the final hold and anneal (without stages: the
    last quarter of the frames); may be empty for a run that has not reached them."""
    n = len(clock.stages)
    if clock.staged:
        return [i for i in range(n) if clock.stages[i] in FINAL_STAGES]
    return list(range(n))[-max(1, n // 4):]


def _quench_verdict(mobile, name, clock, melted):
    idx = _final_window(clock)
    if not idx:
        return Verdict("quench", name, "unknown", False, "no analysed frame in the final hold",
                       {}, "", "analyse the frames of the final hold")
    numbers = {key: _stat(np.mean, mobile[key], idx) for key in ("q6bar", "frac_V6", "frac_O4")}
    ordered, skipped = _passes(numbers, [("q6bar", ">=", Q6BAR_CRYSTAL_MIN)])
    corundum_cn, _ = _passes(numbers, [("frac_V6", ">=", CN_CRYSTAL_MIN),
                                       ("frac_O4", ">=", CN_CRYSTAL_MIN)])
    if skipped:
        status = "unknown"
    elif not ordered:
        status = "amorphous"
    elif corundum_cn or melted is False:
        status = "crystalline" if melted is False else "recrystallised"
    else:  # ordered O sublattice, but not corundum's coordination: neither verdict holds
        status = "partly ordered"
    advice = {"recrystallised": "quench faster (a shorter schedule.quench_ps or a higher "
                                "schedule.quench_rate_K_per_ps) or melt longer",
              "crystalline": "it never melted: see the melt verdict",
              "partly ordered": "its O sublattice kept some order but its V-O coordination "
                                "is not corundum's: quench faster or melt longer for a glass",
              "unknown": "no order parameter without O atoms"}.get(status, "")
    criteria = (f"amorphous if q6bar (mean) < {Q6BAR_CRYSTAL_MIN:g}; recrystallised if q6bar >= "
                f"{Q6BAR_CRYSTAL_MIN:g} (perfect corundum {Q6BAR_CORUNDUM:g}) and the V6 and O4 "
                f"fractions >= {CN_CRYSTAL_MIN:g}; partly ordered between")
    return Verdict("quench", name, status, status == "amorphous", _span(clock, idx), numbers,
                   criteria, advice)


def _crystal_verdict(diagnostics, clock):
    region, series = "crystal (outside the interface band)", diagnostics.series([2])
    interior = series["V"].min() > 0 and series["O"].min() > 0
    if not interior:
        region, series = "crystal", diagnostics.series(REGION_GROUPS["crystal"])
    n = len(clock.stages)
    idx = _final_window(clock) or list(range(n))[-max(1, n // 4):]
    numbers = {key: _stat(np.mean, series[key], idx) for key in ("q6bar", "frac_V6", "frac_O4")}
    numbers["msd_max_A2"] = _stat(np.max, series["msd"])
    tests = [("q6bar", ">=", Q6BAR_CRYSTAL_MIN), ("msd_max_A2", "<", MSD_MELTED_A2)]
    criteria = (f"intact if at the end (mean) q6bar >= {Q6BAR_CRYSTAL_MIN:g}, and MSD < "
                f"{MSD_MELTED_A2:g} Å² in every frame")
    if interior:
        tests += [("frac_V6", ">=", CN_CRYSTAL_MIN), ("frac_O4", ">=", CN_CRYSTAL_MIN)]
        criteria += f", and at the end the V6 and O4 fractions >= {CN_CRYSTAL_MIN:g}"
    else:
        criteria += ("; V6 and O4 not judged: every crystal V or O lies in the interface band, "
                     "where the mobile atoms are its neighbours (a thicker crystal or a narrower "
                     "interface band gives an interior)")
    intact, skipped = _passes(numbers, tests)
    advice = ("" if intact else "the crystal lost its corundum order: if it is not held fixed "
              "(regions.fix_crystal) it melted too (lower schedule.T_melt_K, or fix it); if it "
              "is, mobile atoms crowd into it (check the V-O cutoff)")
    return Verdict("crystal", region, "intact" if intact else "damaged", intact,
                   _span(clock, idx), numbers, _criteria(criteria, skipped), advice)


def judge(diagnostics, clock):
    """The :class:`~.report.Verdict` s on a finished :class:`MeltDiagnostics` and its frames'
    :class:`Clock`.

    ``melt``: the mobile region (melt; all without region tags) in the melt stage (every
    frame without stages): melted if the MSD it gains over the stage >= :data:`MSD_MELTED_A2`
    and its mean q̄6 over the stage's second half < :data:`Q6BAR_CRYSTAL_MIN`.
    ``quench``: the mobile region in the final hold and anneal (without stages: the last
    quarter of the frames): amorphous if its mean q̄6 < :data:`Q6BAR_CRYSTAL_MIN`;
    recrystallised (or still crystalline, had it not melted) if q̄6 is above it and the mean
    V6 and O4 fractions >= :data:`CN_CRYSTAL_MIN`; "partly ordered" in between (an ordered O
    sublattice around V that is not octahedral: neither a glass nor corundum).
    ``crystal`` (with a crystal region): the crystal region without its interface band:
    intact if in the quenched state (as for ``quench``; the last quarter of the frames where
    there is none) its mean V6 and O4 fractions >= :data:`CN_CRYSTAL_MIN` and mean q̄6 >=
    :data:`Q6BAR_CRYSTAL_MIN`, and its MSD < :data:`MSD_MELTED_A2` in every frame. Where the
    band leaves no crystal V or O (a thin crystal), the whole crystal region without the V6/O4
    test: the mobile atoms are its boundary atoms' neighbours, and an amorphous neighbour
    changes their coordination whatever the crystal does.

    A criterion whose number cannot be measured (no V, no O) is skipped and named.
    """
    d = diagnostics
    tags = d.reference.get_tags()
    name = "melt" if np.any(tags == MELT) else "all"
    mobile = d.series(REGION_GROUPS[name])
    melt = _melt_verdict(mobile, name, clock, d.reference)
    verdicts = [melt, _quench_verdict(mobile, name, clock, None if melt.status == "unknown"
                                      else melt.ok)]
    if np.any(tags == CRYSTAL):
        verdicts.append(_crystal_verdict(d, clock))
    return verdicts
