"""Bond-angle distributions: histograms of the angle b-a-c (degrees, 0 to 180) at centre atoms a
between pairs of their bonded neighbours b and c.

Distances in Å, angles in degrees. A neighbour b of centre a is bonded when it is closer than
``cutoffs[type_a, type_b]``; every unordered pair of distinct bonded neighbours of a centre
(periodic images of one atom are distinct neighbours) gives one angle.
"""
import numpy as np
from numba import njit

from .neighbors import centre_arrays, neighbor_list


@njit(cache=True)
def _angle_histogram(i, j, d, vec, types, group_of, cut2, hist, bins_per_degree):
    """Add the angles of the pair list (i, j, d, vec) sorted by centre i to ``hist``."""
    n = i.shape[0]
    nbins = hist.shape[4]
    start = 0
    while start < n:
        c = i[start]
        stop = start
        while stop < n and i[stop] == c:
            stop += 1
        g = group_of[c]
        ta = types[c]
        for p in range(start, stop):
            tb = types[j[p]]
            if d[p] * d[p] >= cut2[ta, tb]:
                continue
            for p2 in range(p + 1, stop):
                tc = types[j[p2]]
                if d[p2] * d[p2] >= cut2[ta, tc]:
                    continue
                cos = (vec[p, 0] * vec[p2, 0] + vec[p, 1] * vec[p2, 1]
                       + vec[p, 2] * vec[p2, 2]) / (d[p] * d[p2])
                cos = min(1.0, max(-1.0, cos))
                k = int(np.degrees(np.arccos(cos)) * bins_per_degree)
                if k >= nbins:
                    k = nbins - 1  # 180 degrees exactly: the last bin
                lo, hi = (tb, tc) if tb <= tc else (tc, tb)
                hist[g, ta, lo, hi, k] += 1
        start = stop


def angle_histogram(positions, cell, pbc, types, cutoffs, nbins=180, centres=None, groups=None,
                    n_groups=1, n_types=None, out=None):
    """Histograms of bond angles b-a-c at ``centres`` (default all atoms).

    positions (N, 3) Å; cell (3, 3) rows Å; pbc three booleans; types (N,) species 0..T-1;
    ``cutoffs`` (T, T) Å: ``cutoffs[a, b]`` bonds centre species a to neighbour species b
    (0 or NaN: no bond). ``groups[m]`` in ``range(n_groups)`` is centre m's group (default 0).
    ``nbins`` equal bins from 0 to 180 degrees (180 itself in the last). Returns (or adds to
    ``out``) int64 (n_groups, T, T, T, nbins): ``[g, a, b, c]`` with b <= c counts each
    unordered pair of bonded neighbours once.
    """
    n_groups = out.shape[0] if out is not None else n_groups
    positions, types, n_types, centres, groups = centre_arrays(positions, types, n_types,
                                                                centres, groups, n_groups)
    cutoffs = np.array(cutoffs, float).reshape(n_types, n_types)
    cutoffs[~(cutoffs > 0)] = 0.0
    if out is None:
        out = np.zeros((int(n_groups), n_types, n_types, n_types, int(nbins)), np.int64)
    rc = cutoffs.max() if cutoffs.size else 0.0
    if rc <= 0 or len(centres) == 0:
        return out
    subset = np.flatnonzero((cutoffs > 0).any(axis=0)[types])
    i, j, d, vec, _ = neighbor_list(positions, cell, pbc, rc, centres=centres, neighbours=subset)
    group_of = np.full(len(positions), -1, np.int64)
    group_of[centres] = groups
    _angle_histogram(i, j, d, vec, types, group_of, np.ascontiguousarray(cutoffs ** 2), out,
                     out.shape[4] / 180.0)
    return out


def angle_bin_centres(nbins=180):
    """Bin mid-points (degrees) of ``nbins`` equal bins from 0 to 180."""
    edges = np.linspace(0.0, 180.0, int(nbins) + 1)
    return 0.5 * (edges[:-1] + edges[1:])
