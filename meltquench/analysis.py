"""Partial RDFs and coordination numbers per region over a trajectory.

:func:`analyse` reads a run folder (its ``trajectory.traj``), a trajectory or structure file,
an :class:`~ase.Atoms` or a list of them, and measures for every species pair a-b (a: centre,
b: neighbour) and every region

* the partial g_ab(r) (ASE/LAMMPS/freud normalisation, see :mod:`meltquench.kernels.rdf`) and
  the running coordination number n_ab(r) (neighbours closer than r per centre, counted);
* the first peak and first minimum of g_ab(r) (Å);
* the coordination numbers of the centres below a cutoff (given, or the first minimum of the
  pair's g_ab(r) over all atoms, so every region of a pair uses the same cutoff), as a
  histogram and a mean.

Regions are those of :mod:`meltquench.structures`: ``crystal`` (tag 1) and ``melt`` (tag 2),
``interface`` (atoms within ``interface_width`` Å, measured perpendicular to the planes, of
either boundary plane given by ``atoms.info['region_axis']`` and ``['region_planes']``) and
``all``. A region restricts the centres; neighbours are always all atoms. Frames without tags
give ``all`` only.

Averages over frames are ratios of sums: g = sum_f H_f / sum_f (N_a,f N_b,f / V_f) / V_shell.
Under MPI the frames (and, for the frames left over, the centre atoms) are shared out over the
ranks and the results reduced, so ``mpirun -np N`` gives the serial answer (histograms
exactly, floating sums to rounding).
"""
import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.io import read
from ase.io.trajectory import Trajectory

from .errors import UserError
from .kernels import parallel
from .kernels.coordination import (coordination_numbers, first_peak_and_minimum,
                                   mean_from_histogram)
from .kernels.rdf import bin_centres, bin_edges, pair_histogram, shell_volumes

REGIONS = ("all", "crystal", "melt", "interface")
CRYSTAL_TAG = 1  # as meltquench.structures.CRYSTAL
MELT_TAG = 2     # as meltquench.structures.MELT
# Every centre atom falls in one group: 2 * (0 untagged, 1 crystal, 2 melt) + (1 if interface).
N_GROUPS = 6
REGION_GROUPS = {"all": [0, 1, 2, 3, 4, 5], "crystal": [2, 3], "melt": [4, 5],
                 "interface": [1, 3, 5]}
TRAJECTORY_NAME = "trajectory.traj"


@dataclass
class PairResult:
    """One species pair (centre-neighbour) in one region. Lengths in Å."""

    pair: str                 # 'V-O': V centres, O neighbours
    region: str
    centres_per_frame: float  # mean number of centre atoms of the region per frame
    first_peak: float         # NaN if none
    first_minimum: float      # NaN if none
    cutoff: float             # used for the coordination numbers; NaN if none
    cutoff_source: str        # 'given', 'auto' (first minimum over all atoms) or 'none'
    mean_cn: float            # NaN without centres or cutoff
    cn_histogram: np.ndarray  # centres (summed over frames) with 0, 1, 2, ... neighbours
    g: np.ndarray             # g_ab(r) at the bin centres
    n_r: np.ndarray           # running coordination number at the upper bin edges
    counts: np.ndarray        # the distance histogram (pairs summed over frames)

    def cn_fractions(self):
        """Fraction of centres with 0, 1, 2, ... neighbours."""
        total = self.cn_histogram.sum()
        return self.cn_histogram / total if total else self.cn_histogram.astype(float)

    def to_dict(self, arrays=True):
        d = {"pair": self.pair, "region": self.region,
             "centres_per_frame": _num(self.centres_per_frame),
             "first_peak": _num(self.first_peak), "first_minimum": _num(self.first_minimum),
             "cutoff": _num(self.cutoff), "cutoff_source": self.cutoff_source,
             "mean_cn": _num(self.mean_cn),
             "cn_histogram": {str(k): int(v) for k, v in enumerate(self.cn_histogram) if v}}
        if arrays:
            d["g"] = [_num(x) for x in self.g]
            d["n_r"] = [_num(x) for x in self.n_r]
            d["counts"] = [int(x) for x in self.counts]
        return d


@dataclass
class AnalysisResult:
    """Everything :func:`analyse` measured. ``rows`` holds one :class:`PairResult` per pair and
    region (pairs outer, regions inner); ``r`` are the bin centres (Å)."""

    source: str
    frames: list            # analysed frame numbers of the trajectory
    rmax: float
    nbins: int
    species: list
    pairs: list
    regions: list
    interface_width: float
    cutoffs: dict           # pair -> cutoff used (Å; NaN if none)
    rows: list
    notes: list = field(default_factory=list)
    rank: int = 0           # the MPI rank this copy lives on: only rank 0 writes

    @property
    def r(self):
        return bin_centres(self.rmax, self.nbins)

    @property
    def edges(self):
        return bin_edges(self.rmax, self.nbins)

    def get(self, pair, region="all"):
        """The :class:`PairResult` of ``pair`` ('V-O') in ``region``."""
        for row in self.rows:
            if row.pair == pair and row.region == region:
                return row
        raise KeyError(f"no result for pair {pair!r} in region {region!r}")

    def to_dict(self, arrays=True):
        """JSON-able dictionary (NaN as None); ``arrays=False`` leaves out g, n(r), counts."""
        d = {"source": self.source, "frames": [int(f) for f in self.frames],
             "n_frames": len(self.frames), "rmax": self.rmax, "nbins": self.nbins,
             "species": list(self.species), "pairs": list(self.pairs),
             "regions": list(self.regions), "interface_width": self.interface_width,
             "cutoffs": {k: _num(v) for k, v in self.cutoffs.items()}, "notes": list(self.notes),
             "results": [row.to_dict(arrays) for row in self.rows]}
        if arrays:
            d["r"] = [float(x) for x in self.r]
        return d

    def table(self):
        """The human table: pair, region, first peak, first minimum, cutoff, mean CN, CN
        histogram (percent of centres with each coordination number)."""
        head = ["pair", "region", "centres", "peak (Å)", "min (Å)", "cutoff (Å)", "mean CN",
                "CN histogram (% of centres)"]
        lines = []
        for row in self.rows:
            frac = row.cn_fractions()
            hist = " ".join(f"{k}:{100 * f:.1f}" for k, f in enumerate(frac) if f > 0)
            cut = _fmt(row.cutoff) + ("*" if row.cutoff_source == "auto" else "")
            lines.append([row.pair, row.region, f"{row.centres_per_frame:.1f}",
                          _fmt(row.first_peak), _fmt(row.first_minimum), cut,
                          _fmt(row.mean_cn, 2), hist or "-"])
        widths = [max(len(h), *(len(x[c]) for x in lines)) if lines else len(h)
                  for c, h in enumerate(head)]
        out = [f"RDF and coordination: {self.source}, {len(self.frames)} frame(s), "
               f"rmax {self.rmax:g} Å, {self.nbins} bins"]
        fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
        out.append(fmt(head))
        out.append(fmt(["-" * w for w in widths]))
        out.extend(fmt(x) for x in lines)
        if any(row.cutoff_source == "auto" for row in self.rows):
            out.append("* cutoff at the first minimum of g(r) over all atoms")
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def write(self, out_dir):
        """Write summary.json, summary.csv, rdf.json and the PNG plots into ``out_dir``.

        Only rank 0 writes; returns the paths written (empty on other ranks).
        """
        if self.rank != 0:
            return []
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the output folder {out}: {exc.strerror}") from None
        paths = [out / "summary.json", out / "summary.csv", out / "rdf.json"]
        _write_json(paths[0], self.to_dict(arrays=False))
        self._write_csv(paths[1])
        _write_json(paths[2], self._rdf_dict())
        for region in self.regions:
            paths.append(self._plot_rdf(region, out / f"rdf_{region}.png"))
            paths.append(self._plot_cn(region, out / f"coordination_{region}.png"))
        return paths

    def _rdf_dict(self):
        return {"r": [float(x) for x in self.r], "edges": [float(x) for x in self.edges],
                "units": {"r": "Å", "g": "1", "n_r": "neighbours per centre below r"},
                "n_frames": len(self.frames),
                "rdf": {region: {row.pair: {"g": [_num(x) for x in row.g],
                                            "n_r": [_num(x) for x in row.n_r],
                                            "counts": [int(x) for x in row.counts]}
                                 for row in self.rows if row.region == region}
                        for region in self.regions}}

    def _write_csv(self, path):
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["pair", "region", "centres_per_frame", "first_peak_A", "first_minimum_A",
                        "cutoff_A", "cutoff_source", "mean_cn", "cn_histogram"])
            for row in self.rows:
                hist = ";".join(f"{k}:{int(v)}" for k, v in enumerate(row.cn_histogram) if v)
                w.writerow([row.pair, row.region, f"{row.centres_per_frame:.6g}",
                            _csv(row.first_peak), _csv(row.first_minimum), _csv(row.cutoff),
                            row.cutoff_source, _csv(row.mean_cn), hist])

    def _figure(self, n):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        ncol = 2 if n > 1 else 1
        nrow = (n + ncol - 1) // ncol
        fig = Figure(figsize=(5.2 * ncol, 3.4 * nrow), layout="constrained")
        FigureCanvasAgg(fig)
        return fig, [fig.add_subplot(nrow, ncol, k + 1) for k in range(n)]

    def _plot_rdf(self, region, path):
        rows = [row for row in self.rows if row.region == region]
        fig, axes = self._figure(len(rows))
        r = self.r
        edges = self.edges[1:]
        for ax, row in zip(axes, rows):
            ax.set_title(f"{row.pair}, {region} ({row.centres_per_frame:.1f} centres)")
            ax.set_xlabel("r (Å)")
            ax.set_ylabel("g(r)")
            if not np.any(np.isfinite(row.g)) and not np.any(np.isfinite(row.n_r)):
                ax.text(0.5, 0.5, "no centres", ha="center", va="center", transform=ax.transAxes)
                continue
            ax.plot(r, row.g, color="C0", lw=1.4, label="g(r)")
            ax.set_xlim(0, self.rmax)
            twin = ax.twinx()
            twin.plot(edges, row.n_r, color="C3", lw=1.2, ls="--", label="n(r)")
            twin.set_ylabel("running coordination n(r)", color="C3")
            if np.isfinite(row.cutoff):
                ax.axvline(row.cutoff, color="0.5", ls=":", lw=1)
                if np.isfinite(row.mean_cn):
                    twin.annotate(f"CN {row.mean_cn:.2f} at {row.cutoff:.2f} Å",
                                  (row.cutoff, row.mean_cn), xytext=(6, -12),
                                  textcoords="offset points", fontsize=8, color="C3")
        fig.suptitle(f"Partial RDFs, region {region}, {len(self.frames)} frame(s)")
        fig.savefig(path, dpi=110)
        return path

    def _plot_cn(self, region, path):
        rows = [row for row in self.rows if row.region == region]
        fig, axes = self._figure(len(rows))
        for ax, row in zip(axes, rows):
            ax.set_title(f"{row.pair}, {region}")
            ax.set_xlabel(f"coordination number (cutoff {_fmt(row.cutoff)} Å)")
            ax.set_ylabel("fraction of centres")
            frac = row.cn_fractions()
            if frac.sum() == 0:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                continue
            ax.bar(np.arange(len(frac)), frac, color="C0")
            ax.set_xticks(np.arange(len(frac)))
            ax.set_ylim(0, 1)
            ax.text(0.02, 0.95, f"mean {row.mean_cn:.2f}", transform=ax.transAxes, va="top")
        fig.suptitle(f"Coordination numbers, region {region}, {len(self.frames)} frame(s)")
        fig.savefig(path, dpi=110)
        return path


def _num(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _fmt(x, digits=3):
    return f"{x:.{digits}f}" if np.isfinite(x) else "-"


def _csv(x):
    return f"{x:.6g}" if np.isfinite(x) else ""


def _write_json(path, data):
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, allow_nan=False, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- input frames

class _Frames:
    """Random access to the frames of a source, one :class:`~ase.Atoms` at a time."""

    def __init__(self, source):
        self._traj = None
        self._list = None
        self.run_dir = None
        self.path = None
        if isinstance(source, Atoms):
            self._list, self.label = [source], "Atoms"
        elif isinstance(source, (list, tuple)):
            if not source or not all(isinstance(a, Atoms) for a in source):
                raise UserError("source must be a run folder, a trajectory or structure file, "
                                "an Atoms or a non-empty list of Atoms")
            self._list, self.label = list(source), f"{len(source)} Atoms"
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                self.run_dir = path
                path = path / TRAJECTORY_NAME
                if not path.is_file():
                    raise UserError(f"{source} is a folder without {TRAJECTORY_NAME}: give a run "
                                    "folder or a trajectory file")
            elif not path.exists():
                raise UserError(f"trajectory not found: {source}")
            self.path, self.label = path, str(source)
            self._open(path)
        else:
            raise UserError(f"cannot analyse a {type(source).__name__}: give a run folder, a "
                            "trajectory or structure file, an Atoms or a list of Atoms")

    def _open(self, path):
        try:
            if path.suffix == ".traj":
                self._traj = Trajectory(str(path))
                if len(self._traj) == 0:
                    raise UserError(f"{path} holds no frames")
            else:
                self._list = read(str(path), index=":")
        except UserError:
            raise
        except Exception as exc:  # ASE raises many types for unknown or broken files
            raise UserError(f"cannot read {path}: {exc.__class__.__name__}: {exc} (give a .traj, "
                            "extxyz or other file ASE can read)") from None
        if self._list is not None and not self._list:
            raise UserError(f"{path} holds no frames")

    def __len__(self):
        return len(self._traj) if self._traj is not None else len(self._list)

    def get(self, k):
        if self._traj is not None:
            try:
                return self._traj[k]
            except Exception as exc:
                raise UserError(f"cannot read frame {k} of {self.path}: "
                                f"{exc.__class__.__name__}: {exc}") from None
        return self._list[k]

    def close(self):
        if self._traj is not None:
            self._traj.close()


# ---------------------------------------------------------------------------- options

def _parse_pairs(pairs, species):
    """Pair names 'A-B' -> list of (name, a, b) with species indices."""
    index = {s: k for k, s in enumerate(species)}
    if pairs is None:
        return [(f"{a}-{b}", index[a], index[b]) for a in species for b in species]
    if isinstance(pairs, str):
        pairs = [pairs]
    out = []
    for p in pairs:
        for name in str(p).split(","):
            name = name.strip()
            if not name:
                continue
            parts = name.split("-")
            if len(parts) != 2 or not all(parts):
                raise UserError(f"pair {name!r} must look like 'V-O' (centre-neighbour)")
            for s in parts:
                if s not in index:
                    raise UserError(f"pair {name!r}: no {s} atoms in the trajectory (species: "
                                    f"{', '.join(species)})")
            if name not in [o[0] for o in out]:
                out.append((name, index[parts[0]], index[parts[1]]))
    if not out:
        raise UserError("no species pairs to analyse: give pairs like 'V-O'")
    return out


def _parse_cutoffs(cutoffs, pair_names):
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


def _check_numbers(rmax, nbins, start, stop, stride, interface_width):
    try:
        rmax = float(rmax)
        interface_width = float(interface_width)
    except (TypeError, ValueError):
        raise UserError("rmax and interface_width must be numbers of Å") from None
    if not (rmax > 0 and math.isfinite(rmax)):
        raise UserError(f"rmax must be a positive number of Å, got {rmax}")
    if not interface_width >= 0:
        raise UserError(f"interface_width must be zero or more Å, got {interface_width}")
    for name, value in (("nbins", nbins), ("start", start), ("stride", stride)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise UserError(f"{name} must be a whole number, got {value!r}")
    if stop is not None and (not isinstance(stop, (int, np.integer)) or isinstance(stop, bool)):
        raise UserError(f"stop must be a whole number or None, got {stop!r}")
    if nbins < 1:
        raise UserError(f"nbins must be at least 1, got {nbins}")
    if stride < 1:
        raise UserError(f"stride must be at least 1, got {stride}")
    return rmax, int(nbins), interface_width


# ---------------------------------------------------------------------------- per frame

def _interface_mask(atoms, width):
    """Atoms within ``width`` Å (perpendicular, periodic along the axis) of a boundary plane."""
    axis = int(atoms.info["region_axis"])
    planes = np.asarray(atoms.info["region_planes"], float).ravel()
    cell = atoms.cell.array
    normal = np.cross(cell[(axis + 1) % 3], cell[(axis + 2) % 3])
    spacing = abs(np.linalg.det(cell)) / np.linalg.norm(normal)  # Å between planes of this axis
    s = np.linalg.solve(cell.T, atoms.positions.T).T[:, axis]
    mask = np.zeros(len(atoms), bool)
    for p in planes:
        delta = s - p
        if atoms.pbc[axis]:
            delta -= np.round(delta)
        mask |= np.abs(delta) * spacing <= width
    return mask


class _Frame:
    """What the kernels need from one Atoms: positions, cell, pbc, types, groups, volume."""

    def __init__(self, atoms, k, lut, use_tags, use_interface, width):
        numbers = atoms.numbers
        if numbers.max() >= len(lut) or np.any(lut[numbers] < 0):
            raise UserError(f"frame {k} holds species not in the first analysed frame: "
                            "analyse frames with one set of species")
        self.types = lut[numbers]
        self.positions = atoms.positions
        self.cell = atoms.cell.array
        self.pbc = atoms.pbc
        self.volume = abs(float(np.linalg.det(self.cell)))
        groups = np.zeros(len(atoms), np.int64)
        if use_tags:
            tags = atoms.get_tags()
            groups[tags == CRYSTAL_TAG] = 2
            groups[tags == MELT_TAG] = 4
        if use_interface:
            if "region_axis" not in atoms.info or "region_planes" not in atoms.info:
                raise UserError(f"frame {k} lacks atoms.info['region_axis'/'region_planes'] "
                                "that the first frame has")
            groups += _interface_mask(atoms, width)
        self.groups = groups


def _process(frame, centre_ok, pair_ok, n_types, centre_block, rmax, nbins, cut, acc):
    """Add one frame (or one rank's block of its centres) to the accumulators ``acc``."""
    centres = np.flatnonzero(centre_ok[frame.types])
    if centre_block is not None:
        centres = centres[slice(*centre_block(len(centres)))]
    groups = frame.groups[centres]
    ctypes = frame.types[centres]
    pair_histogram(frame.positions, frame.cell, frame.pbc, frame.types, rmax, nbins,
                   centres=centres, groups=groups, n_groups=N_GROUPS, pairs=pair_ok,
                   n_types=n_types, out=acc["hist"])
    n_c = np.zeros((N_GROUPS, n_types), np.int64)
    np.add.at(n_c, (groups, ctypes), 1)
    acc["n_centres"] += n_c
    n_b = np.bincount(frame.types, minlength=n_types).astype(float)
    volume = frame.volume if frame.volume > 1e-10 else math.nan
    acc["norm"] += n_c[:, :, None] * n_b[None, None, :] / volume
    if cut is not None:
        _count(frame, centres, groups, ctypes, cut, n_types, acc)


def _count(frame, centres, groups, ctypes, cut, n_types, acc):
    counts = coordination_numbers(frame.positions, frame.cell, frame.pbc, frame.types, cut,
                                  centres=centres, n_types=n_types)
    need = int(counts.max()) + 1 if counts.size else 1
    hist = acc["cn"]
    if need > hist.shape[-1]:
        acc["cn"] = hist = np.concatenate(
            [hist, np.zeros(hist.shape[:-1] + (need - hist.shape[-1],), np.int64)], axis=-1)
    a_idx, b_idx = np.nonzero(cut > 0)
    for a, b in zip(a_idx, b_idx):
        sel = ctypes == a
        np.add.at(hist, (groups[sel], a, b, counts[sel, b]), 1)


# ---------------------------------------------------------------------------- analyse

def analyse(source, *, rmax=6.0, nbins=200, start=0, stop=None, stride=1,
            regions=("all", "crystal", "melt", "interface"), interface_width=3.0, cutoffs=None,
            pairs=None, comm=None):
    """Partial RDFs and coordination numbers per region, averaged over frames.

    source: a run folder (holding trajectory.traj), a trajectory/structure file, an Atoms or a
    list of Atoms. rmax (Å) and nbins set the histogram; frames ``[start:stop:stride]`` are
    analysed. ``regions`` from 'all', 'crystal', 'melt', 'interface' (the last: within
    ``interface_width`` Å of a boundary plane); those the frames cannot give are left out with
    a note. ``cutoffs`` {'V-O': 2.3, ...} (Å) for the coordination numbers; pairs without one
    use the first minimum of their g(r) over all atoms. ``pairs`` ['V-O', ...] (centre-neighbour;
    default every ordered species pair). ``comm``: mpi4py communicator (default COMM_WORLD, or
    serial without mpi4py). Every rank returns the full :class:`AnalysisResult`.
    """
    comm = parallel.get_comm(comm)
    rank, size = comm.Get_rank(), comm.Get_size()
    rmax, nbins, interface_width = _check_numbers(rmax, nbins, start, stop, stride,
                                                  interface_width)
    if isinstance(regions, str):
        regions = [regions]
    for name in regions:
        if name not in REGIONS:
            raise UserError(f"unknown region {name!r}: choose from {', '.join(REGIONS)}")
    frames = _Frames(source)
    try:
        selected = list(range(len(frames)))[start:stop:stride]
        if not selected:
            raise UserError(f"no frames selected: the trajectory has {len(frames)} frame(s) and "
                            f"start={start}, stop={stop}, stride={stride} pick none")
        return _analyse(frames, selected, comm, rank, size, rmax, nbins, regions,
                        interface_width, cutoffs, pairs)
    finally:
        frames.close()


def _analyse(frames, selected, comm, rank, size, rmax, nbins, regions, width, cutoffs, pairs):
    first = frames.get(selected[0])
    if len(first) == 0:
        raise UserError("the first analysed frame holds no atoms")
    numbers = list(dict.fromkeys(first.numbers.tolist()))  # order of first appearance
    species = [chemical_symbols[z] for z in numbers]
    lut = np.full(max(numbers) + 1, -1, np.int64)
    lut[numbers] = np.arange(len(numbers))
    n_types = len(species)
    pair_list = _parse_pairs(pairs, species)
    pair_names = [p[0] for p in pair_list]
    given = _parse_cutoffs(cutoffs, pair_names)

    notes = []
    tags = first.get_tags()
    use_tags = bool(np.any((tags == CRYSTAL_TAG) | (tags == MELT_TAG)))
    has_planes = "region_axis" in first.info and "region_planes" in first.info
    use_interface = use_tags and has_planes and "interface" in regions
    used_regions, untagged, no_planes = [], [], []
    for name in dict.fromkeys(regions):
        if name in ("crystal", "melt", "interface") and not use_tags:
            untagged.append(name)
        elif name == "interface" and not use_interface:
            no_planes.append(name)
        else:
            used_regions.append(name)
    if untagged:
        notes.append("no crystal/melt tags in the frames: only region 'all' (left out: "
                     f"{', '.join(untagged)})")
    if no_planes:
        notes.append("no atoms.info['region_axis'] and ['region_planes'] in the frames: region "
                     "'interface' left out")
    if not used_regions:
        used_regions = ["all"]

    pair_ok = np.zeros((n_types, n_types), bool)
    for _, a, b in pair_list:
        pair_ok[a, b] = True
    centre_ok = pair_ok.any(axis=1)
    cut_given = np.zeros((n_types, n_types))
    for name, a, b in pair_list:
        cut_given[a, b] = given.get(name, 0.0)
    one_pass = all(name in given for name in pair_names)

    acc = {"hist": np.zeros((N_GROUPS, n_types, n_types, nbins), np.int64),
           "n_centres": np.zeros((N_GROUPS, n_types), np.int64),
           "norm": np.zeros((N_GROUPS, n_types, n_types)),
           "cn": np.zeros((N_GROUPS, n_types, n_types, 1), np.int64)}
    own, shared = parallel.frame_plan(len(selected), rank, size)
    block = lambda n: parallel.block_range(n, rank, size)

    def sweep(cut, first_pass):
        error = None
        try:
            for pos in own + shared:
                k = selected[pos]
                atoms = first if pos == 0 else frames.get(k)
                frame = _Frame(atoms, k, lut, use_tags, use_interface, width)
                centre_block = block if pos in shared else None
                if first_pass:
                    _process(frame, centre_ok, pair_ok, n_types, centre_block, rmax, nbins, cut,
                             acc)
                else:
                    centres = np.flatnonzero(centre_ok[frame.types])
                    if centre_block is not None:
                        centres = centres[slice(*centre_block(len(centres)))]
                    _count(frame, centres, frame.groups[centres], frame.types[centres], cut,
                           n_types, acc)
        except UserError as exc:
            error = str(exc)
        error = parallel.first_error(error, comm)
        if error:
            raise UserError(error)

    sweep(cut_given if one_pass else None, True)
    hist = parallel.allreduce_sum(acc["hist"], comm)
    n_centres = parallel.allreduce_sum(acc["n_centres"], comm)
    norm = parallel.allreduce_sum(acc["norm"], comm)
    shells = shell_volumes(rmax, nbins)
    r = bin_centres(rmax, nbins)

    def region_sums(region, a, b):
        groups = REGION_GROUPS[region]
        h = hist[groups, a, b].sum(axis=0)
        n = int(n_centres[groups, a].sum())
        z = float(norm[groups, a, b].sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            g = h / (z * shells) if z > 0 else np.full(nbins, math.nan)
            n_r = np.cumsum(h) / n if n > 0 else np.full(nbins, math.nan)
        return h, n, g, n_r

    def peak_and_minimum(h, g):
        # Without a cell volume g is undefined, but its shape (and so where its peaks and
        # minima lie) is that of the histogram over the shell volumes.
        shape = g if np.all(np.isfinite(g)) else h / shells
        return first_peak_and_minimum(r, shape)

    if not first.cell.volume > 1e-10:
        notes.append("the cell has no volume: g(r) is undefined (NaN); peaks and minima come "
                     "from the distance histogram over the shell volumes, n(r) and coordination "
                     "numbers are counted as usual")
    cut_used = np.zeros((n_types, n_types))
    sources = {}
    final_cutoffs = {}
    for name, a, b in pair_list:
        if name in given:
            value, src = given[name], "given"
        else:
            h_all, _, g_all, _ = region_sums("all", a, b)
            value = peak_and_minimum(h_all, g_all)[1]
            src = "auto" if math.isfinite(value) else "none"
        cut_used[a, b] = value if math.isfinite(value) else 0.0
        sources[name] = src
        final_cutoffs[name] = value
    missing = [name for name in pair_names if sources[name] == "none"]
    if missing:
        notes.append(f"no first minimum of g(r) below rmax={rmax:g} Å for {', '.join(missing)}: "
                     "no coordination numbers there (give a cutoff or a larger rmax)")
    if not one_pass and np.any(cut_used > 0):
        sweep(cut_used, False)
    kmax = parallel.allreduce_max(acc["cn"].shape[-1], comm)
    cn = acc["cn"]
    if cn.shape[-1] < kmax:
        cn = np.concatenate([cn, np.zeros(cn.shape[:-1] + (kmax - cn.shape[-1],), np.int64)],
                            axis=-1)
    cn = parallel.allreduce_sum(cn, comm)

    rows = []
    n_frames = len(selected)
    for name, a, b in pair_list:
        for region in used_regions:
            h, n, g, n_r = region_sums(region, a, b)
            peak, minimum = peak_and_minimum(h, g) if n > 0 else (math.nan, math.nan)
            cn_hist = cn[REGION_GROUPS[region], a, b].sum(axis=0)
            if cut_used[a, b] <= 0:
                cn_hist = np.zeros(0, np.int64)
            last = np.flatnonzero(cn_hist)
            cn_hist = cn_hist[:last[-1] + 1] if len(last) else cn_hist[:0]
            rows.append(PairResult(
                pair=name, region=region, centres_per_frame=n / n_frames, first_peak=peak,
                first_minimum=minimum, cutoff=final_cutoffs[name], cutoff_source=sources[name],
                mean_cn=mean_from_histogram(cn_hist), cn_histogram=cn_hist, g=g, n_r=n_r,
                counts=h))
    return AnalysisResult(source=frames.label, frames=selected, rmax=rmax, nbins=nbins,
                          species=species, pairs=pair_names, regions=used_regions,
                          interface_width=width, cutoffs=final_cutoffs, rows=rows, notes=notes,
                          rank=rank)


# ---------------------------------------------------------------------------- command line

def add_arguments(parser):
    """Add the ``meltquench analyse`` arguments to an argparse parser."""
    parser.add_argument("source", help="run folder (with trajectory.traj) or trajectory file")
    parser.add_argument("--rmax", type=float, default=6.0, help="largest distance (Å), default 6")
    parser.add_argument("--nbins", type=int, default=200, help="histogram bins, default 200")
    parser.add_argument("--start", type=int, default=0, help="first frame, default 0")
    parser.add_argument("--stop", type=int, default=None, help="stop before this frame")
    parser.add_argument("--stride", type=int, default=1, help="take every n-th frame")
    parser.add_argument("--regions", nargs="+", default=list(REGIONS), metavar="REGION",
                        help="regions among all, crystal, melt, interface (default all four)")
    parser.add_argument("--interface-width", type=float, default=3.0,
                        help="interface band: within this distance (Å) of a boundary plane")
    parser.add_argument("--cutoff", action="append", default=[], metavar="A-B=R",
                        help="coordination cutoff in Å, e.g. V-O=2.3 (repeatable); pairs "
                             "without one use the first minimum of g(r)")
    parser.add_argument("--pairs", nargs="+", default=None, metavar="A-B",
                        help="centre-neighbour pairs, e.g. V-O O-V (default every pair)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default RUN_DIR/analysis or <trajectory>_analysis)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier analysis in the output folder")
    return parser


def parse_cutoff_options(items):
    """['V-O=2.3', ...] -> {'V-O': 2.3}; a malformed item is a UserError."""
    out = {}
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                out[name.strip()] = float(value)
            except ValueError:
                raise UserError(f"--cutoff {part!r} must look like V-O=2.3 (Å)") from None
    return out


def default_out_dir(source):
    """RUN_DIR/analysis for a run folder, else <stem>_analysis beside the trajectory file."""
    path = Path(source)
    if path.is_dir():
        return path / "analysis"
    return path.with_name(path.stem + "_analysis")


def run_from_args(args):
    """Run :func:`analyse` from parsed arguments, write the outputs, print the table (rank 0)."""
    cutoffs = parse_cutoff_options(getattr(args, "cutoff", None)) or None
    out = Path(args.out) if getattr(args, "out", None) else default_out_dir(args.source)
    if (out / "summary.json").exists() and not getattr(args, "overwrite", False):
        raise UserError(f"{out} already holds an analysis: pass --overwrite to replace it or "
                        "--out DIR to write elsewhere")
    result = analyse(args.source, rmax=args.rmax, nbins=args.nbins, start=args.start,
                     stop=args.stop, stride=args.stride,
                     regions=tuple(getattr(args, "regions", None) or REGIONS),
                     interface_width=args.interface_width, cutoffs=cutoffs, pairs=args.pairs)
    result.write(out)
    if result.rank == 0:
        print(result.table())
        print(f"written to {out}")
    return result
