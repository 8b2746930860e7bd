"""Partial radial distribution functions g_ab(r) and running coordination numbers n_ab(r).

Distances in Å. A histogram counts, for centres of species a, the neighbours of species b at
distance d with ``k dr <= d < (k + 1) dr`` (``dr = rmax / nbins``), all periodic images
included and the centre itself excluded. The ideal-gas normalisation is the one of ASE's
``get_rdf``, LAMMPS ``compute rdf`` and freud::

    g_ab(r_k) = H_ab(k) / (N_a rho_b V_k),   rho_b = N_b / V,   V_k = 4 pi/3 (r_{k+1}^3 - r_k^3)

so g_ab = g_ba and, for a = b, g tends to (N_b - 1) / N_b at large r. The running coordination
number ``n_ab(r_{k+1}) = sum_{k' <= k} H_ab(k') / N_a`` is counted, not integrated.
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from .neighbors import build_cell_list, centre_order, visit_pairs


def bin_edges(rmax, nbins):
    """The ``nbins + 1`` bin edges from 0 to ``rmax`` (Å)."""
    return np.linspace(0.0, float(rmax), int(nbins) + 1)


def bin_centres(rmax, nbins):
    """Bin mid-points (Å)."""
    e = bin_edges(rmax, nbins)
    return 0.5 * (e[:-1] + e[1:])


def shell_volumes(rmax, nbins):
    """Volumes of the spherical shells between bin edges (Å^3)."""
    e = bin_edges(rmax, nbins)
    return 4.0 * np.pi / 3.0 * (e[1:] ** 3 - e[:-1] ** 3)


class _Histogram(NamedTuple):
    """Pair visitor: bins the distance of every selected (centre, neighbour) species pair."""

    groups: np.ndarray   # group of each centre, by position in centres
    types: np.ndarray    # species of every atom
    stypes: np.ndarray   # species of the binned atoms, in cell-list order
    pair_ok: np.ndarray  # (T, T) bool: species pairs to count
    hist: np.ndarray     # (n_groups, T, T, nbins) int64, added to
    inv_dr: float        # bins per Å

    @staticmethod
    @njit(cache=True)
    def enter(v, m, i):
        return v.groups[m], v.types[i]

    @staticmethod
    @njit(cache=True)
    def visit(v, context, j, d2, dx, dy, dz, q0, q1, q2):
        g, ta = context
        tb = v.stypes[j]
        if v.pair_ok[ta, tb]:
            k = int(np.sqrt(d2) * v.inv_dr)
            if k < v.hist.shape[3]:
                v.hist[g, ta, tb, k] += 1


@njit(cache=True)
def _histogram(cl, centres, order, visitor):
    visit_pairs(cl, centres, order, visitor)


def _pair_mask(pairs, n_types):
    if pairs is None:
        return np.ones((n_types, n_types), np.bool_)
    pairs = np.asarray(pairs, np.bool_)
    if pairs.shape != (n_types, n_types):
        raise ValueError(f"pairs must be a ({n_types}, {n_types}) boolean array")
    return np.ascontiguousarray(pairs)


def pair_histogram(positions, cell, pbc, types, rmax, nbins, centres=None, groups=None,
                   n_groups=1, pairs=None, n_types=None, out=None):
    """Centre-neighbour distance histograms by species pair (integer counts).

    positions (N, 3) Å; cell (3, 3) rows Å; pbc three booleans; types (N,) species index
    0..T-1. ``centres``: indices of the centre atoms (default all), each with a group number
    ``groups[m]`` in ``range(n_groups)`` (default 0: e.g. a region). Neighbours are all atoms.
    ``pairs`` (T, T) booleans select the (centre species, neighbour species) pairs counted
    (default all). Returns (or adds to ``out``) an int64 array (n_groups, T, T, nbins).
    """
    positions = np.ascontiguousarray(positions, dtype=float).reshape(-1, 3)
    types = np.ascontiguousarray(types, dtype=np.int64)
    if n_types is None:
        n_types = int(types.max()) + 1 if len(types) else 1
    pair_ok = _pair_mask(pairs, n_types)
    if centres is None:
        centres = np.flatnonzero(pair_ok.any(axis=1)[types])
    centres = np.ascontiguousarray(centres, dtype=np.int64)
    if groups is None:
        groups = np.zeros(len(centres), np.int64)
    groups = np.ascontiguousarray(groups, dtype=np.int64)
    if out is None:
        out = np.zeros((int(n_groups), n_types, n_types, int(nbins)), np.int64)
    if len(centres) and len(groups) and (groups.min() < 0 or groups.max() >= out.shape[0]):
        raise ValueError("group numbers must lie in range(n_groups)")
    # Only atoms of a species some centre wants are binned as neighbours.
    subset = np.flatnonzero(pair_ok.any(axis=0)[types])
    cl = build_cell_list(positions, cell, pbc, rmax, subset=subset)
    visitor = _Histogram(groups, types, types[cl.index], pair_ok, out,
                         out.shape[3] / float(rmax))
    _histogram(cl, centres, centre_order(cl, centres), visitor)
    return out


def normalise(hist, n_centres, n_neighbours, volume, rmax):
    """g(r) from a histogram (last axis bins): ``hist / (n_centres n_neighbours / volume V_k)``.

    ``n_centres * n_neighbours / volume`` may be given as a precomputed (summed over frames)
    number instead: pass ``n_neighbours = volume = 1``. Zero normalisation gives NaN.
    """
    hist = np.asarray(hist, float)
    norm = (np.asarray(n_centres, float) * np.asarray(n_neighbours, float)
            / np.asarray(volume, float))
    shells = shell_volumes(rmax, hist.shape[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm[..., None] > 0, hist / (norm[..., None] * shells), np.nan)


def running_coordination(hist, n_centres):
    """n(r) at the upper edge of each bin: neighbours closer than r per centre (counted)."""
    hist = np.asarray(hist)
    n_centres = np.asarray(n_centres, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_centres[..., None] > 0,
                        np.cumsum(hist, axis=-1) / n_centres[..., None], np.nan)


def partial_rdf(positions, cell, pbc, types, a, b, rmax, nbins, centres=None):
    """One frame's g_ab(r): returns bin centres (Å) and g. Centres: atoms of type a (or the
    given subset of them); the neighbour density is N_b / |det cell|."""
    types = np.asarray(types, np.int64)
    n_types = int(max(types.max(), a, b)) + 1
    pairs = np.zeros((n_types, n_types), bool)
    pairs[a, b] = True
    if centres is None:
        centres = np.flatnonzero(types == a)
    else:
        centres = np.asarray(centres, np.int64)
        centres = centres[types[centres] == a]
    hist = pair_histogram(positions, cell, pbc, types, rmax, nbins, centres=centres, pairs=pairs,
                          n_types=n_types)[0, a, b]
    volume = abs(np.linalg.det(np.asarray(cell, float)))
    g = normalise(hist, len(centres), np.count_nonzero(types == b), volume, rmax)
    return bin_centres(rmax, nbins), g
