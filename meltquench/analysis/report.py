"""Results of :func:`~meltquench.analysis.analyse` and their reports: the table printed, and
summary.json, summary.csv, rdf.json, rdf_<region>.png and coordination_<region>.png.

Lengths in Å. JSON writes NaN as null; files are written to a temporary name and renamed.
"""
import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..kernels.rdf import bin_centres, bin_edges


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


# --------------------------------------------------------------------------- melt diagnostics
def _output_folder(path):
    """``path`` as a Path, the folder made if need be (a UserError if it cannot be)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out}: {exc.strerror}") from None
    return out


#: How :meth:`Verdict.line` shows the numbers of a verdict: key -> (label, format).
_VERDICT_NUMBERS = {
    "msd_gain_A2": ("MSD gained in the stage", "{:.2f} Å²"),
    "msd_A2": ("MSD from the first frame", "{:.2f} Å²"),
    "msd_max_A2": ("MSD max", "{:.2f} Å²"), "q6bar": ("q6bar", "{:.3f}"),
    "frac_V6": ("V6", "{:.2f}"), "frac_O4": ("O4", "{:.2f}")}


@dataclass
class Verdict:
    """One conclusion of the melt diagnostics (:func:`~.melt.judge` says how each is drawn).

    ``name``: 'melt' (did the mobile region melt), 'quench' (what the quench left) or
    'crystal' (did the fixed crystal stay one); ``status``: 'melted' / 'did not melt',
    'amorphous' / 'recrystallised' / 'partly ordered' / 'crystalline', 'intact' / 'damaged',
    or 'unknown';
    ``ok``: whether that is what a melt-quench wants; ``frames``: which frames were judged;
    ``numbers``: the measured values (Å² for MSD); ``criteria`` and ``advice`` in words.
    """

    name: str
    region: str
    status: str
    ok: bool
    frames: str
    numbers: dict
    criteria: str
    advice: str = ""

    def line(self):
        """The console line(s): a failed verdict in capitals, with what to change."""
        values = ", ".join(f"{label} {fmt.format(self.numbers[key])}"
                           for key, (label, fmt) in _VERDICT_NUMBERS.items()
                           if key in self.numbers and np.isfinite(self.numbers[key]))
        status = self.status if self.ok else self.status.upper()
        text = f"{self.name + ':':<9}{status} (region {self.region}; {self.frames})"
        text += f": {values}" if values else ""
        if self.criteria:
            text += f"\n{'':9}criteria: {self.criteria}"
        if self.advice:
            text += f"\n{'':9}{'what to change' if not self.ok else 'note'}: {self.advice}"
        return text

    def to_dict(self):
        return {"name": self.name, "region": self.region, "status": self.status,
                "ok": bool(self.ok), "frames": self.frames,
                "numbers": {k: _num(v) for k, v in self.numbers.items()},
                "criteria": self.criteria, "advice": self.advice}


@dataclass
class MeltResult:
    """What :func:`~meltquench.analysis.melt_diagnostics` measured and concluded.

    Per analysed frame: ``frames`` (numbers in the trajectory), ``steps``, ``times_fs``
    (None where unknown) and ``stages``; ``series[region]`` holds arrays over the frames:
    ``msd`` (Å²), ``frac_V6``, ``frac_O4``, ``q6bar``, ``atoms``, ``V``, ``O``. ``verdicts``:
    :class:`Verdict` s; ``criteria``: the thresholds they used; ``order``: what the order
    parameter is.
    """

    source: str
    frames: list
    steps: list
    times_fs: list
    stages: list
    regions: list
    series: dict
    cutoff_VO: float
    cutoff_source: str        # 'given', 'auto' (first minimum of g_VO over all atoms), 'fallback'
    order: dict
    criteria: dict
    unwrapped: bool
    interface_width: float
    verdicts: list
    notes: list = field(default_factory=list)
    rank: int = 0

    def verdict(self, name):
        """The :class:`Verdict` called ``name`` ('melt', 'quench', 'crystal'), or None."""
        return next((v for v in self.verdicts if v.name == name), None)

    def verdict_lines(self):
        """The verdicts as console lines (a list of strings), notes last."""
        lines = [f"Melt diagnostics: {self.source}, {len(self.frames)} frame(s), V-O cutoff "
                 f"{self.cutoff_VO:.3f} Å ({self.cutoff_source})"]
        lines += [line for v in self.verdicts for line in v.line().splitlines()]
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def to_dict(self):
        """JSON-able dictionary (NaN as None): the series per region and the verdicts."""
        return {"source": self.source, "n_frames": len(self.frames),
                "frames": [int(f) for f in self.frames],
                "step": [None if s is None else int(s) for s in self.steps],
                "time_fs": [None if t is None else _num(t) for t in self.times_fs],
                "stage": list(self.stages), "regions": list(self.regions),
                "interface_width": self.interface_width,
                "cutoff_VO": {"value": self.cutoff_VO, "source": self.cutoff_source},
                "order_parameter": dict(self.order), "unwrapped": bool(self.unwrapped),
                "units": {"time_fs": "fs", "msd_A2": "Å²", "frac_V6": "fraction of V",
                          "frac_O4": "fraction of O", "q6bar": "1"},
                "series": {region: {"msd_A2": [_num(x) for x in s["msd"]],
                                    "frac_V6": [_num(x) for x in s["frac_V6"]],
                                    "frac_O4": [_num(x) for x in s["frac_O4"]],
                                    "q6bar": [_num(x) for x in s["q6bar"]],
                                    "atoms": [int(x) for x in s["atoms"]],
                                    "V": [int(x) for x in s["V"]], "O": [int(x) for x in s["O"]]}
                           for region, s in self.series.items()},
                "criteria": dict(self.criteria),
                "verdicts": [v.to_dict() for v in self.verdicts], "notes": list(self.notes)}

    def write(self, out_dir):
        """Write melt.json, melt_msd.png and melt_order.png into ``out_dir`` (rank 0 only);
        returns the paths written (empty on other ranks)."""
        if self.rank != 0:
            return []
        out = _output_folder(out_dir)
        paths = [out / "melt.json", out / "melt_msd.png", out / "melt_order.png"]
        _write_json(paths[0], self.to_dict())
        self._plot(paths[1], [("msd", "MSD (Å²)", self.criteria.get("msd_melted_A2"))],
                   "Mean-square displacement from the first analysed frame")
        self._plot(paths[2], [("frac_V6", "V with 6 O", self.criteria.get("cn_crystal_min")),
                              ("frac_O4", "O with 4 V", self.criteria.get("cn_crystal_min")),
                              ("q6bar", "q6bar (O sublattice)",
                               self.criteria.get("q6bar_crystal_min"))],
                   f"Coordination (V-O < {self.cutoff_VO:.2f} Å) and order")
        return paths

    def _x(self):
        """(x values, label): time in ps where every frame has one, else frame numbers."""
        if self.times_fs and None not in self.times_fs:
            return np.array(self.times_fs, float) / 1000.0, "time (ps)"
        return np.array(self.frames, float), "frame"

    def _plot(self, path, panels, title):
        """One panel per (series key, label, threshold line) against time, one line per
        region, the stages marked."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        fig = Figure(figsize=(7.0, 2.6 * len(panels) + 0.6), layout="constrained")
        FigureCanvasAgg(fig)
        x, xlabel = self._x()
        for k, (key, label, limit) in enumerate(panels):
            ax = fig.add_subplot(len(panels), 1, k + 1)
            for c, region in enumerate(self.regions):
                ax.plot(x, self.series[region][key], color=f"C{c}", lw=1.3,
                        marker="o" if len(x) < 30 else None, ms=3, label=region)
            if limit is not None:
                ax.axhline(limit, color="0.4", ls="--", lw=1)
            if key == "q6bar" and "perfect_crystal" in self.order:
                ax.axhline(self.order["perfect_crystal"], color="0.6", ls=":", lw=1)
            self._mark_stages(ax, x)
            ax.set_ylabel(label)
            ax.set_xlabel(xlabel)
            ax.legend(fontsize=8, loc="best")
        fig.suptitle(f"{title}: {self.source}")
        fig.savefig(path, dpi=110)
        return path

    def _mark_stages(self, ax, x):
        starts = [i for i, s in enumerate(self.stages)
                  if s != "all" and (i == 0 or s != self.stages[i - 1])]
        for i in starts:
            ax.axvline(x[i], color="0.8", lw=0.8)
            ax.text(x[i], 1.0, f" {self.stages[i]}", transform=ax.get_xaxis_transform(),
                    fontsize=7, va="top", color="0.4")
