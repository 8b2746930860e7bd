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
