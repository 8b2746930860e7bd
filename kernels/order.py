"""Bond-orientational order parameters: Steinhardt's q_l and Lechner and Dellago's average q̄_l.

For a centre i with the ``N_b(i)`` neighbours j closer than a cutoff (Å), Steinhardt, Nelson
and Ronchetti (Phys. Rev. B 28, 784 (1983)) define ::

    q_lm(i) = 1/N_b(i) sum_j Y_lm(r_ij / |r_ij|)
    q_l(i)  = sqrt(4 pi / (2l + 1) sum_m |q_lm(i)|^2)

and Lechner and Dellago (J. Chem. Phys. 129, 114707 (2008)) average the q_lm over the centre
and its neighbours before taking the invariant, which folds in the second shell and separates
crystal from liquid far better ::

    qbar_lm(i) = 1/(N_b(i) + 1) sum_{k in {i} + neighbours(i)} q_lm(k)
    qbar_l(i)  = sqrt(4 pi / (2l + 1) sum_m |qbar_lm(i)|^2)

The kernels use the real spherical harmonics (orthonormal real combinations of Y_l,m and
Y_l,-m). They are a unitary change of basis within each l, so the sums over m of squares, and
with them q_l and qbar_l, equal those of the complex Y_lm. The neighbours come from
:func:`.neighbors.neighbor_list`, the walk every pair analysis uses.
"""
import math

import numpy as np
from numba import njit

from .neighbors import neighbor_list


def harmonic_norms(l):
    """``sqrt((2l + 1) / (4 pi) (l - m)! / (l + m)!)`` for m = 0..l (normalisation of Y_lm)."""
    return np.array([math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m)
                               / math.factorial(l + m)) for m in range(l + 1)])


@njit(cache=True)
def real_harmonics(l, norms, dx, dy, dz, out):
    """Real spherical harmonics of degree ``l`` at the direction of (dx, dy, dz) into ``out``
    (length 2l + 1: m = -l..l, the cosine terms at l + m, the sine terms at l - m).

    ``norms``: :func:`harmonic_norms`. The associated Legendre functions come from the
    standard upward recurrence in l at fixed m; cos(m phi) and sin(m phi) from the angle
    addition recurrence, so no trigonometric function is called.
    """
    r = math.sqrt(dx * dx + dy * dy + dz * dz)
    ct = dz / r
    st = math.sqrt(max(0.0, 1.0 - ct * ct))
    rho = math.sqrt(dx * dx + dy * dy)
    c1 = dx / rho if rho > 0.0 else 1.0
    s1 = dy / rho if rho > 0.0 else 0.0
    cm = 1.0  # cos(m phi), sin(m phi) for m = 0
    sm = 0.0
    pmm = 1.0  # P_m^m(ct) = (2m - 1)!! st^m (no Condon-Shortley phase: it cancels in q_l)
    for m in range(l + 1):
        if m > 0:
            pmm *= (2 * m - 1) * st
            cm, sm = cm * c1 - sm * s1, sm * c1 + cm * s1
        p = pmm
        if l > m:
            p_prev = pmm
            p = ct * (2 * m + 1) * pmm
            for ll in range(m + 2, l + 1):
                p_next = ((2 * ll - 1) * ct * p - (ll + m - 1) * p_prev) / (ll - m)
                p_prev = p
                p = p_next
        if m == 0:
            out[l] = norms[0] * p
        else:
            f = math.sqrt(2.0) * norms[m] * p
            out[l + m] = f * cm
            out[l - m] = f * sm


@njit(cache=True)
def bond_qlm(l, norms, centre, vectors, n_centres):
    """Steinhardt's q_lm of every centre from its bond vectors.

    ``centre`` (P,): the centre (0..n_centres - 1) of each bond; ``vectors`` (P, 3) Å: centre
    to neighbour. Returns ``qlm`` (n_centres, 2l + 1), real basis, averaged over each centre's
    bonds (zero without bonds), and ``count`` (n_centres,): the bonds of each centre.
    """
    qlm = np.zeros((n_centres, 2 * l + 1))
    count = np.zeros(n_centres, np.int64)
    y = np.empty(2 * l + 1)
    for p in range(centre.shape[0]):
        c = centre[p]
        real_harmonics(l, norms, vectors[p, 0], vectors[p, 1], vectors[p, 2], y)
        for k in range(2 * l + 1):
            qlm[c, k] += y[k]
        count[c] += 1
    for c in range(n_centres):
        if count[c] > 0:
            for k in range(2 * l + 1):
                qlm[c, k] /= count[c]
    return qlm, count


@njit(cache=True)
def neighbour_average(qlm, count, centre, neighbour):
    """Lechner and Dellago's qbar_lm: the q_lm of each centre averaged with those of its
    neighbours (``centre``/``neighbour``: the bonds, both ends numbered among the centres)."""
    out = qlm.copy()
    for p in range(centre.shape[0]):
        c = centre[p]
        n = neighbour[p]
        for k in range(qlm.shape[1]):
            out[c, k] += qlm[n, k]
    for c in range(qlm.shape[0]):
        for k in range(qlm.shape[1]):
            out[c, k] /= count[c] + 1
    return out


@njit(cache=True)
def rotational_invariant(qlm, count):
    """``sqrt(4 pi / (2l + 1) sum_m qlm^2)`` per centre; NaN for a centre without bonds."""
    n, width = qlm.shape
    out = np.empty(n)
    for c in range(n):
        if count[c] == 0:
            out[c] = np.nan
            continue
        s = 0.0
        for k in range(width):
            s += qlm[c, k] * qlm[c, k]
        out[c] = math.sqrt(4.0 * math.pi / width * s)
    return out


def bond_order(positions, cell, pbc, centres, cutoff, l=6):
    """Steinhardt q_l and Lechner-Dellago qbar_l of ``centres`` among themselves.

    positions (N, 3) Å; cell (3, 3) rows Å; pbc three booleans; ``centres``: atom indices,
    which are both the centres and the only neighbours counted (e.g. the O atoms: the O
    sublattice); ``cutoff`` (Å) defines the bonds; ``l`` the degree. Returns ``(qbar, q,
    n_bonds)``, arrays over ``centres``; q and qbar are NaN for a centre without neighbours.
    """
    centres = np.ascontiguousarray(centres, dtype=np.int64)
    n = len(centres)
    if n == 0:
        return np.empty(0), np.empty(0), np.zeros(0, np.int64)
    i, j, _, vectors, _ = neighbor_list(positions, cell, pbc, cutoff, centres=centres,
                                        neighbours=centres)
    local = np.full(len(positions), -1, np.int64)
    local[centres] = np.arange(n)
    ci, cj = local[i], local[j]
    qlm, count = bond_qlm(l, harmonic_norms(l), ci, np.ascontiguousarray(vectors), n)
    qbar = rotational_invariant(neighbour_average(qlm, count, ci, cj), count)
    return qbar, rotational_invariant(qlm, count), count
