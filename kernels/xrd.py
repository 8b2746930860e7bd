"""Powder X-ray diffraction and Faber-Ziman partial structure factors of periodic models, by
the Debye scattering equation on long-range partial pair histograms.

Units: distances Å, scattering vector q = 4 pi sin(theta) / lambda in Å^-1, s = q / (4 pi) =
sin(theta) / lambda in Å^-1, angles 2theta in degrees, intensities in electrons^2 per atom
(atomic form factors f in electrons).

Why the Debye equation on histograms, and not the reciprocal-lattice sum
-------------------------------------------------------------------------
A periodic model can be diffracted two ways: (1) the reciprocal-lattice sum, |F(G)|^2 at the
supercell's G vectors, broadened; (2) the Debye equation over atom pairs out to a distance
R_max with every periodic image, multiplied by a window W(r). We use (2), because:

- it is the same object for a crystal, a glass and an A/C interface: the lattice sum of an
  amorphous 240-atom supercell is a sparse forest of lines 2 pi / L apart (L ~ 10-30 Å, i.e.
  several degrees at Cu K-alpha) whose look depends on the broadening chosen, while the
  Debye sum is smooth and its width has a physical meaning (below);
- it splits exactly into per-atom contributions, so regions work as they do for g(r): the
  region's atoms are the centres, their neighbours every atom, and the regions' intensities
  add up to the whole model's;
- the partial histograms H_ab(r) it needs are those of :mod:`.rdf` (the same cell-list
  kernel, taken to R_max with periodic images), and the same histograms give the partial
  structure factors S_ab(q).

Definitions. With ``N_a`` centres of species a, ``N_b`` atoms of species b in the cell volume
``V``, ``H_ab(k)`` the pairs in bin k (r_k its centre, ``V_k`` its shell volume) and
``E_ab(k) = N_a N_b V_k / V`` the pairs a uniform density would give::

    T_ab(q) = sum_k [H_ab(k) - E_ab(k)] W(r_k) sin(q r_k) / (q r_k)
    I(q) / N = sum_a c_a f_a(q)^2 + (1 / N) sum_ab f_a(q) f_b(q) T_ab(q)      (Debye)
    S_ab(q) = 1 + N / (N_a N_b) * T_ab(q)                                   (Faber-Ziman)

(``N`` centres, ``c_a = N_a / N``), so that ``I / N = sum_a c_a f_a^2 + sum_ab c_a c_b f_a f_b
(S_ab - 1)``, the Faber-Ziman total. Subtracting ``E_ab`` (the average-density term) removes the
scattering of the R_max sphere as a whole, which would otherwise swamp the small angles (it
belongs at q < 2 pi / R_max, below any Bragg peak). A model without a cell volume (an open
cluster) has no density to subtract: there ``E = 0`` and, with ``W = 1``, the sum is ASE's
``XrDebye`` (all pairs of the finite object).

The window. A sharp cut at R_max rings (sinc side lobes). The default window, ``'sphere'``,
is the shape function of a sphere of diameter D = R_max, ``W(r) = 1 - 3 r / (2 D) + r^3 /
(2 D^3)``: the fraction of pairs at distance r that stay inside such a sphere. The pattern is
then that of a powder of spherical grains of diameter R_max cut from the periodic model, the
peaks have the Scherrer width (FWHM in 2theta about 1.1 lambda / (D cos theta) radians: 2.0
degrees at 36 degrees for D = 50 Å, Cu K-alpha), the intensity stays positive, and the
density term it leaves is that grain's own small-angle scattering. ``'lorch'`` (``W =
sin(pi r / R) / (pi r / R)``, the usual choice for S(q) of liquids) and ``'none'`` are there
too.

The histogram is linear ("cloud in cell"): a pair at r between grid points r_k = k h and
r_{k+1} adds (r_{k+1} - r) / h to point k and (r - r_k) / h to point k + 1, and the sums run
over the grid points. That is exact for any function linear between grid points, so the error
of sin(q r)/(q r) is of order (q h)^2 / 8 per pair. Counting pairs into bins and taking the bin
centres instead errs to first order for the discrete distances of a crystal, and the error
survives the cancellation of the density term at small q: with h = 0.01 Å it put 10
electrons^2 per atom of false intensity near 2theta = 10 degrees in corundum V2O3, 1 percent of
its (012) peak, which the Lorentz factor then amplifies. The uniform density gets the same
linear weights (:func:`uniform_weights`).
"""
from typing import NamedTuple

import numpy as np
from numba import njit

from .neighbors import build_cell_list, centre_arrays, centre_order, visit_pairs

#: Cu K-alpha1 wavelength (Å), the default of every XRD function here.
CU_KALPHA = 1.5406
WINDOWS = ("sphere", "lorch", "none")


def q_from_two_theta(two_theta, wavelength=CU_KALPHA):
    """q = 4 pi sin(theta) / lambda (Å^-1) from 2theta (degrees) and lambda (Å)."""
    return 4.0 * np.pi * np.sin(np.radians(np.asarray(two_theta, float)) / 2.0) / wavelength


def two_theta_from_q(q, wavelength=CU_KALPHA):
    """2theta (degrees) from q (Å^-1); NaN where q > 4 pi / lambda."""
    x = np.asarray(q, float) * wavelength / (4.0 * np.pi)
    with np.errstate(invalid="ignore"):
        return np.where(x <= 1.0, 2.0 * np.degrees(np.arcsin(np.minimum(x, 1.0))), np.nan)


def form_factors(coefficients, q):
    """Atomic form factors f(q) (electrons) from Waasmaier-Kirfel coefficients.

    coefficients (T, 11): per species ``a1 b1 a2 b2 a3 b3 a4 b4 a5 b5 c`` (the order of ASE's
    ``ase.utils.xrdebye.waasmaier``), b in Å^2; q (Q,) in Å^-1. ``f = c + sum_i a_i
    exp(-b_i s^2)`` with ``s = q / (4 pi)``. Returns (T, Q).
    """
    coefficients = np.atleast_2d(np.asarray(coefficients, float))
    s2 = (np.asarray(q, float) / (4.0 * np.pi)) ** 2
    a = coefficients[:, 0:10:2]
    b = coefficients[:, 1:10:2]
    return coefficients[:, 10:11] + np.einsum("ti,tiq->tq", a,
                                              np.exp(-b[:, :, None] * s2[None, None, :]))


def window(r, rmax, kind="sphere"):
    """The window W(r) at distances r (Å) for a histogram to ``rmax`` (Å): 'sphere' (the shape
    function of a sphere of diameter rmax), 'lorch' (sin(pi r/rmax) / (pi r/rmax)) or 'none'
    (1). Zero at and beyond rmax."""
    r = np.asarray(r, float)
    x = r / float(rmax)
    if kind == "sphere":
        w = 1.0 - 1.5 * x + 0.5 * x ** 3
    elif kind == "lorch":
        w = np.sinc(x)  # numpy's sinc is sin(pi x) / (pi x)
    elif kind == "none":
        w = np.ones_like(x)
    else:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {kind!r}")
    return np.where(x < 1.0, w, 0.0)


def lorentz_polarisation(two_theta):
    """Lorentz-polarisation factor of a powder diffractometer with an unpolarised beam and no
    monochromator, ``(1 + cos^2 2theta) / (sin^2 theta cos theta)``, at 2theta (degrees)."""
    t = np.radians(np.asarray(two_theta, float))
    return (1.0 + np.cos(t) ** 2) / (np.sin(t / 2.0) ** 2 * np.cos(t / 2.0))


def debye_transform(q, weights, rmax, chunk=512):
    """``sum_k weights[..., k] sin(q r_k) / (q r_k)`` at every q (Å^-1), over the grid points
    r_k of :func:`grid` ``(rmax, weights.shape[-1] - 1)``. Returns (..., Q).

    A matrix product with the (nbins + 1, Q) sinc matrix, built ``chunk`` q values at a time.
    """
    weights = np.asarray(weights, float)
    r = grid(rmax, weights.shape[-1] - 1)
    flat = weights.reshape(-1, weights.shape[-1])
    q = np.asarray(q, float)
    out = np.empty((flat.shape[0], len(q)))
    for start in range(0, len(q), chunk):
        qs = q[start:start + chunk]
        out[:, start:start + len(qs)] = flat @ np.sinc(np.outer(r, qs) / np.pi)
    return out.reshape(weights.shape[:-1] + (len(q),))


def excess_pairs(hist, pair_density, rmax, kind="sphere"):
    """``[H(r_k) - E(r_k)] W(r_k)``: the windowed linear pair histogram (:func:`linear_pair_histogram`)
    less its uniform-density part.

    hist (..., nbins + 1) to ``rmax`` (Å); ``pair_density`` (...) is ``N_a N_b / V`` (Å^-3;
    summed over frames with the histograms; 0 for no density term), so that
    ``E = pair_density * uniform_weights``.
    """
    hist = np.asarray(hist, float)
    nbins = hist.shape[-1] - 1
    expected = np.asarray(pair_density, float)[..., None] * uniform_weights(rmax, nbins)
    return (hist - expected) * window(grid(rmax, nbins), rmax, kind)


def partial_structure_factors(q, hist, pair_density, n_a, n_b, n_total, rmax, kind="sphere"):
    """Faber-Ziman partial structure factors S_ab(q) from linear partial histograms.

    hist (T, T, nbins + 1): pairs of a centres and b neighbours to ``rmax`` (Å); pair_density
    (T, T) ``N_a N_b / V`` (Å^-3); n_a (T,) centres and n_b (T,) atoms of each species, n_total
    all atoms (each summed over the same frames as the histograms): ``S_ab - 1 = n_total /
    (n_a n_b) T_ab``, i.e. with the concentration ``c_b = n_b / n_total`` of the neighbours.
    Returns (T, T, Q); NaN for a species without centres or atoms.
    """
    t = excess_pairs(hist, pair_density, rmax, kind)
    denom = np.outer(np.asarray(n_a, float), np.asarray(n_b, float)) / float(n_total)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(denom > 0, 1.0 / denom, np.nan)
    return 1.0 + scale[:, :, None] * debye_transform(q, t, rmax)


def debye_intensity(q, hist, pair_density, n_a, coefficients, rmax, kind="sphere"):
    """Powder intensity per centre atom, I(q) / N (electrons^2), by the Debye equation.

    hist (T, T, nbins + 1), pair_density (T, T), rmax and kind as :func:`excess_pairs`; n_a
    (T,) centres of each species; coefficients (T, 11) Waasmaier-Kirfel (:func:`form_factors`).
    The self term ``sum_a N_a f_a^2`` plus ``sum_ab f_a f_b T_ab(q)``, over N = sum n_a.
    NaN without centres.
    """
    n_a = np.asarray(n_a, float)
    f = form_factors(coefficients, q)
    t = debye_transform(q, excess_pairs(hist, pair_density, rmax, kind), rmax)
    total = n_a @ f ** 2 + np.einsum("aq,bq,abq->q", f, f, t)
    n = n_a.sum()
    return total / n if n > 0 else np.full(len(q), np.nan)


def grid(rmax, nbins):
    """The ``nbins + 1`` grid points ``r_k = k rmax / nbins`` (Å) of a linear histogram."""
    return np.linspace(0.0, float(rmax), int(nbins) + 1)


def uniform_weights(rmax, nbins):
    """Linear-histogram weights of a uniform unit density, ``int 4 pi r^2 hat_k(r) dr`` (Å^3)
    for the hat function of every grid point (half hats at 0 and rmax): the pairs per unit of
    ``N_a N_b / V`` an ideal gas puts on each point."""
    r = grid(rmax, nbins)
    h = float(rmax) / int(nbins)
    w = h * (r ** 2 + h * h / 6.0)
    w[0] = h ** 3 / 12.0
    w[-1] = r[-1] ** 2 * h / 2.0 - r[-1] * h * h / 3.0 + h ** 3 / 12.0
    return 4.0 * np.pi * w


class _LinearHistogram(NamedTuple):
    """Pair visitor: spreads every selected (centre, neighbour) species pair over the two grid
    points around its distance, linearly."""

    groups: np.ndarray   # group of each centre, by position in centres
    types: np.ndarray    # species of every atom
    stypes: np.ndarray   # species of the binned atoms, in cell-list order
    hist: np.ndarray     # (n_groups, T, T, nbins + 1) float64, added to
    inv_h: float         # grid points per Å

    @staticmethod
    @njit(cache=True)
    def enter(v, m, i):
        return v.groups[m], v.types[i]

    @staticmethod
    @njit(cache=True)
    def visit(v, context, j, d2, dx, dy, dz, q0, q1, q2):
        g, ta = context
        x = np.sqrt(d2) * v.inv_h
        k = int(x)
        if k + 1 < v.hist.shape[3]:
            t = x - k
            tb = v.stypes[j]
            v.hist[g, ta, tb, k] += 1.0 - t
            v.hist[g, ta, tb, k + 1] += t


@njit(cache=True)
def _linear_histogram(cl, centres, order, visitor):
    visit_pairs(cl, centres, order, visitor)


def linear_pair_histogram(positions, cell, pbc, types, rmax, nbins, centres=None, groups=None,
                          n_groups=1, n_types=None, out=None):
    """Linear ("cloud in cell") partial pair histograms to ``rmax`` (Å), periodic images included.

    positions (N, 3) Å; cell (3, 3) rows Å; pbc three booleans; types (N,) species 0..T-1;
    ``centres`` (default all) with ``groups[m]`` in ``range(n_groups)`` (default 0). Every pair
    of a centre and any other atom (or image) closer than ``rmax`` adds its weight to the grid
    points :func:`grid` ``(rmax, nbins)`` on either side of its distance. Returns (or adds to
    ``out``) float64 (n_groups, T, T, nbins + 1); each pair adds 1 in all.
    """
    n_groups = out.shape[0] if out is not None else n_groups
    positions, types, n_types, centres, groups = centre_arrays(positions, types, n_types,
                                                                centres, groups, n_groups)
    if out is None:
        out = np.zeros((int(n_groups), n_types, n_types, int(nbins) + 1))
    if len(centres) == 0:
        return out
    cl = build_cell_list(positions, cell, pbc, rmax)
    visitor = _LinearHistogram(groups, types, types[cl.index], out, (out.shape[3] - 1) / float(rmax))
    _linear_histogram(cl, centres, centre_order(cl, centres), visitor)
    return out
