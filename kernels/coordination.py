"""Coordination numbers per atom, their histograms, and the first peak / first minimum of g(r).

Distances in Å. The coordination number of centre i for species b is the number of b atoms
(periodic images included, i itself excluded) at distance ``d < cutoff[type_i, b]``.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from .neighbors import build_cell_list, centre_order, visit_pairs


class _Count(NamedTuple):
    """Pair visitor: ``counts[m, b] += 1`` for each neighbour of species b of centre m closer
    than ``sqrt(cut2[a, b])`` Å (a: the centre's species)."""

    types: np.ndarray    # species of every atom
    stypes: np.ndarray   # species of the binned atoms, in cell-list order
    cut2: np.ndarray     # (T, T) squared cutoffs (Å^2); 0: not counted
    counts: np.ndarray   # (len(centres), T) int64, added to

    @staticmethod
    @njit(cache=True)
    def enter(v, m, i):
        return m, v.types[i]

    @staticmethod
    @njit(cache=True)
    def visit(v, context, j, d2, dx, dy, dz, q0, q1, q2):
        m, ta = context
        tb = v.stypes[j]
        if d2 < v.cut2[ta, tb]:
            v.counts[m, tb] += 1


@njit(cache=True)
def _count(cl, centres, order, visitor):
    visit_pairs(cl, centres, order, visitor)


def coordination_numbers(positions, cell, pbc, types, cutoffs, centres=None, n_types=None):
    """Coordination numbers of ``centres`` (default all atoms) by neighbour species.

    positions (N, 3) Å; cell (3, 3) rows Å; pbc three booleans; types (N,) species index
    0..T-1; ``cutoffs`` (T, T) in Å: ``cutoffs[a, b]`` for centres of species a and neighbours
    of species b (0 or NaN: not counted). Returns int64 counts (len(centres), T).
    """
    positions = np.ascontiguousarray(positions, dtype=float).reshape(-1, 3)
    types = np.ascontiguousarray(types, dtype=np.int64)
    if n_types is None:
        n_types = int(types.max()) + 1 if len(types) else 1
    cutoffs = np.array(cutoffs, float).reshape(n_types, n_types)
    cutoffs[~(cutoffs > 0)] = 0.0  # NaN and non-positive: nothing counted
    if centres is None:
        centres = np.arange(len(positions), dtype=np.int64)
    centres = np.ascontiguousarray(centres, dtype=np.int64)
    counts = np.zeros((len(centres), n_types), np.int64)
    rc = cutoffs.max() if cutoffs.size else 0.0
    if rc <= 0 or len(centres) == 0:
        return counts
    cut2 = np.ascontiguousarray(cutoffs ** 2)
    subset = np.flatnonzero((cutoffs > 0).any(axis=0)[types])
    cl = build_cell_list(positions, cell, pbc, rc, subset=subset)
    _count(cl, centres, centre_order(cl, centres), _Count(types, types[cl.index], cut2, counts))
    return counts


def coordination_histogram(counts, minlength=0):
    """How many centres have 0, 1, 2, ... neighbours (int64 array)."""
    return np.bincount(np.asarray(counts, np.int64).ravel(), minlength=minlength).astype(np.int64)


def mean_from_histogram(hist):
    """Mean coordination number from a coordination histogram (NaN if empty)."""
    hist = np.asarray(hist, float)
    total = hist.sum()
    return float(np.dot(np.arange(len(hist)), hist) / total) if total > 0 else float("nan")


def gaussian_smooth(y, sigma_bins):
    """Gaussian smoothing (sigma in bins, truncated at 4 sigma) with mirrored edges."""
    y = np.asarray(y, float)
    if sigma_bins <= 0 or len(y) < 2:
        return y.copy()
    half = int(np.ceil(4 * sigma_bins))
    x = np.arange(-half, half + 1)
    w = np.exp(-0.5 * (x / sigma_bins) ** 2)
    w /= w.sum()
    padded = np.pad(y, half, mode="reflect" if len(y) > half else "edge")
    return np.convolve(padded, w, mode="valid")


def first_peak_and_minimum(r, g, smooth=0.05, prominence=0.1, flat=0.02):
    """Position (Å) of the first peak of g(r) and of the first minimum after it.

    g is first smoothed with a Gaussian of ``smooth`` Å. The first peak is the first local
    maximum whose prominence is at least ``prominence`` times the highest value of the
    smoothed g (so noise does not count as a peak); the first minimum is the lowest point of
    the smoothed g between that peak and the next such peak (or the end of the range), taken in
    the middle of the bottom, the stretch around the lowest point that stays within ``flat``
    times the highest value of it (crystals have g = 0 between shells; noise makes the lowest
    point of a wide valley arbitrary). Returns NaN where a position cannot be found (no
    peak, or g still falling at the end of ``r`` and not yet near zero).
    """
    r = np.asarray(r, float)
    g = np.asarray(g, float)
    nan = float("nan")
    if len(r) < 3 or not np.all(np.isfinite(g)) or not g.max() > 0:
        return nan, nan
    dr = r[1] - r[0]
    gs = gaussian_smooth(g, smooth / dr)
    top = gs.max()
    peaks = [k for k in _local_maxima(gs) if _prominence(gs, k) >= prominence * top]
    if not peaks:
        return nan, nan
    p = peaks[0]
    stop = peaks[1] if len(peaks) > 1 else len(gs) - 1
    segment = gs[p:stop + 1]
    k0 = int(np.argmin(segment))
    level = segment[k0] + flat * top  # a flat (or noisy) bottom: take its middle
    lo = k0
    while lo > 0 and segment[lo - 1] <= level:
        lo -= 1
    hi = k0
    while hi + 1 < len(segment) and segment[hi + 1] <= level:
        hi += 1
    k = p + (lo + hi) // 2
    if len(peaks) == 1 and p + hi >= len(gs) - 1 and segment[k0] > flat * top:
        return float(r[p]), nan  # g still falling at rmax: no minimum inside the range
    return float(r[p]), float(r[k])


def _local_maxima(y):
    """Indices of local maxima (a plateau counts once, at its middle)."""
    out = []
    n = len(y)
    k = 1
    while k < n - 1:
        if y[k] > y[k - 1]:
            e = k
            while e + 1 < n and y[e + 1] == y[k]:
                e += 1
            if e + 1 < n and y[e + 1] < y[k]:
                out.append((k + e) // 2)
            k = e + 1
        else:
            k += 1
    return out


def _prominence(y, k):
    """Height of y[k] above the higher of the lowest points separating it from higher ground."""
    h = y[k]
    left = k
    base_left = h
    while left > 0 and y[left - 1] <= h:
        left -= 1
        base_left = min(base_left, y[left])
    right = k
    base_right = h
    while right < len(y) - 1 and y[right + 1] <= h:
        right += 1
        base_right = min(base_right, y[right])
    return h - max(base_left, base_right)
