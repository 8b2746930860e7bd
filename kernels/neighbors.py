"""Cell lists for periodic triclinic, mixed-periodicity and open cells (lengths in Å), and the
one walk over them that every pair analysis uses.

Atoms are binned by their fractional coordinate along each lattice vector. A sphere of radius
``rc`` spans exactly ``±rc / h_i`` in fractional coordinate ``i``, where ``h_i`` is the spacing of
the lattice planes ``i`` (Å). Visiting the bins within ``reach_i = ceil(rc / (h_i w_i))`` of a
centre's bin (``w_i``: fractional bin width) therefore finds every neighbour in any triclinic
cell. Along a periodic axis the visited bins wrap around through periodic images, as many as the
cutoff needs, so a cutoff larger than half the cell (small DFT cells) still gives every image
once. Along an open axis the bins span the atoms' extent and nothing wraps. The work is O(N).

:func:`visit_pairs` walks the list: for every centre it finds the neighbours closer than the
cutoff and hands each pair to a *pair visitor*, which decides what the pair adds to its arrays
(a distance histogram in :mod:`.rdf`, counts in :mod:`.coordination`, a pair list in
:func:`neighbor_list`). A visitor is a ``typing.NamedTuple`` of arrays and numbers whose class
has two ``@njit(cache=True)`` static methods::

    enter(visitor, m, i) -> context     # once per centre: m its position in centres, i its atom
    visit(visitor, context, j, d2, dx, dy, dz, q0, q1, q2)   # once per pair within the cutoff

``j`` is the neighbour's position in the cell list's sorted order (its atom index is
``index[j]``), ``d2`` the squared distance (Å^2), ``(dx, dy, dz)`` the vector from the centre
to the neighbour's image (Å) and ``(q0, q1, q2)`` the lattice translation of that image of the
wrapped neighbour. The walk is compiled once per visitor class with the visitor inlined (no
call per pair). Call it from an ``@njit(cache=True)`` function in the visitor's own file, as
:mod:`.rdf` and :mod:`.coordination` do: the walk is then compiled into that function, cached
with it, and recompiled whenever that file changes. (A jitted function passed as an argument,
or captured in a closure, would be recompiled in every new process instead: numba's cache key
then holds the function's address.) As for any cached numba function, numba does not see
edits to this file as a reason to recompile cached callers in other files.
"""
from collections import namedtuple
from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import overload

CellList = namedtuple("CellList", [
    "cell",       # (3, 3) lattice vectors as rows (Å); open axes without a vector completed
    "pbc",        # (3,) bool
    "cutoff",     # search radius (Å)
    "wrapped",    # (N, 3) positions of all atoms wrapped into the cell along periodic axes (Å)
    "image",      # (N, 3) int: positions = wrapped + image @ cell
    "bins",       # (N, 3) int: bin coordinates of every atom
    "nbins",      # (3,) int: bins per axis
    "reach",      # (3,) int: bins to visit on each side along each axis
    "index",      # (M,) int: original indices of the binned (neighbour) atoms, sorted by bin
    "sorted_positions",  # (M, 3) wrapped positions of the binned atoms in that order (Å)
    "start",      # (nbins.prod() + 1,) int: index[start[b]:start[b + 1]] are the atoms of bin b
])


def plane_spacings(cell):
    """Distances between neighbouring lattice planes, ``h_i = V / |a_j x a_k|`` (Å)."""
    cell = np.asarray(cell, float)
    volume = abs(np.linalg.det(cell))
    spacings = np.empty(3)
    for i in range(3):
        area = np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3]))
        spacings[i] = volume / area if area > 0 else 0.0
    return spacings


def complete_cell(cell, pbc):
    """Replace missing (zero) lattice vectors of open axes by unit vectors normal to the rest.

    Open axes need a direction only: their bins follow the atoms' extent. A periodic axis
    without a lattice vector, or a degenerate cell, is an error (ValueError).
    """
    cell = np.array(cell, float).reshape(3, 3)
    pbc = np.asarray(pbc, bool).reshape(3)
    missing = np.linalg.norm(cell, axis=1) < 1e-12
    if np.any(missing & pbc):
        raise ValueError("a periodic axis has a zero lattice vector")
    for i in np.flatnonzero(missing):
        basis = [cell[k] / np.linalg.norm(cell[k]) for k in range(3) if not missing[k] or k < i]
        best, best_norm = None, -1.0
        for trial in np.eye(3):
            v = trial.copy()
            for u in basis:  # Gram-Schmidt against the vectors present so far
                v -= np.dot(v, u) * u
            n = np.linalg.norm(v)
            if n > best_norm:
                best, best_norm = v, n
        cell[i] = best / best_norm
        missing[i] = False
    if abs(np.linalg.det(cell)) < 1e-12 * max(1.0, np.abs(cell).max()) ** 3:
        raise ValueError("the cell vectors are linearly dependent (zero volume)")
    return cell


@njit(cache=True)
def _wrap_and_bin(frac, pbc, lo, width, nbins, image, bins):
    """Wrap fractional coordinates along periodic axes and find each atom's bin."""
    n = frac.shape[0]
    for a in range(n):
        for k in range(3):
            s = frac[a, k]
            if pbc[k]:
                q = np.floor(s)
                s -= q
                if s >= 1.0:  # -1e-17 wraps to 1.0 in floating point
                    s -= 1.0
                    q += 1.0
                image[a, k] = int(q)
            else:
                image[a, k] = 0
            b = int(np.floor((s - lo[k]) / width[k]))
            if b < 0:
                b = 0
            elif b >= nbins[k]:
                b = nbins[k] - 1
            bins[a, k] = b


@njit(cache=True)
def _sort_into_bins(bins, subset, nbins, wrapped, index, sorted_pos, start):
    """Counting sort of ``subset`` by flat bin (stable: equal bins keep the subset's order)."""
    nb1 = nbins[1]
    nb2 = nbins[2]
    total = start.shape[0] - 1
    counts = np.zeros(total, np.int64)
    for m in range(subset.shape[0]):
        a = subset[m]
        counts[(bins[a, 0] * nb1 + bins[a, 1]) * nb2 + bins[a, 2]] += 1
    start[0] = 0
    for b in range(total):
        start[b + 1] = start[b] + counts[b]
    fill = start[:-1].copy()
    for m in range(subset.shape[0]):
        a = subset[m]
        b = (bins[a, 0] * nb1 + bins[a, 1]) * nb2 + bins[a, 2]
        p = fill[b]
        fill[b] += 1
        index[p] = a
        sorted_pos[p, 0] = wrapped[a, 0]
        sorted_pos[p, 1] = wrapped[a, 1]
        sorted_pos[p, 2] = wrapped[a, 2]


def build_cell_list(positions, cell, pbc, cutoff, subset=None, bins_per_cutoff=None,
                    max_bins=None):
    """Bin atoms for neighbour searches within ``cutoff`` (Å).

    positions: (N, 3) Cartesian positions (Å); cell: (3, 3) lattice vectors as rows (Å);
    pbc: three booleans. ``subset`` (indices) are the atoms binned as neighbours (default: all);
    every atom gets wrapped positions and bin coordinates so that any atom can be a centre.
    Bins are about ``cutoff / bins_per_cutoff`` wide (default 2 where such bins hold an atom
    on average, else 1); ``max_bins`` (default ``8 N + 64``) caps their number.
    """
    positions = np.ascontiguousarray(positions, dtype=float).reshape(-1, 3)
    pbc = np.array(pbc, bool).reshape(3)
    cutoff = float(cutoff)
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    cell = complete_cell(cell, pbc)
    n = len(positions)
    frac = positions @ np.linalg.inv(cell)
    spacing = plane_spacings(cell)
    lo = np.zeros(3)
    extent = np.ones(3)
    for k in range(3):
        if not pbc[k]:
            if n:
                lo[k] = frac[:, k].min()
                extent[k] = frac[:, k].max() - lo[k]
            else:
                extent[k] = 0.0
    length = extent * spacing  # Å spanned along each axis
    if subset is None:
        subset = np.arange(n, dtype=np.int64)
    else:
        subset = np.ascontiguousarray(subset, dtype=np.int64)
    if bins_per_cutoff is None:
        # Bins half the cutoff wide visit less empty space (5^3 bins of (rc/2)^3 against 3^3
        # of rc^3) but cost more bookkeeping per bin: worth it once they hold an atom or more.
        volume = np.prod(np.maximum(length, cutoff))
        bins_per_cutoff = 2 if len(subset) / volume * (cutoff / 2) ** 3 >= 1.0 else 1
    nbins = np.maximum(1, np.floor(length * bins_per_cutoff / cutoff)).astype(np.int64)
    if max_bins is None:
        max_bins = 8 * n + 64
    while nbins.prod() > max_bins:
        k = int(np.argmax(nbins))
        nbins[k] = max(1, nbins[k] // 2)
    width = np.where(extent > 0, extent / nbins, 1.0)
    # Fractional range of a sphere of radius cutoff is ±cutoff/h along each axis; the small
    # margin guards the exact-integer case against rounding.
    reach = np.ceil(cutoff / (width * spacing) * (1.0 + 1e-10)).astype(np.int64)
    for k in range(3):
        if not pbc[k]:
            reach[k] = min(reach[k], nbins[k] - 1)
    image = np.zeros((n, 3), np.int64)
    bins = np.zeros((n, 3), np.int64)
    _wrap_and_bin(frac, pbc, lo, width, nbins, image, bins)
    wrapped = positions - image @ cell
    index = np.empty(len(subset), np.int64)
    sorted_pos = np.empty((len(subset), 3))
    start = np.empty(int(nbins.prod()) + 1, np.int64)
    _sort_into_bins(bins, subset, nbins, wrapped, index, sorted_pos, start)
    return CellList(cell, pbc, cutoff, wrapped, image, bins, nbins, reach, index, sorted_pos,
                    start)


@njit(cache=True)
def stencil(c0, c1, c2, nbins, reach, pbc, cell, start, seg_lo, seg_hi, seg_shift, seg_q):
    """Runs of sorted neighbours to visit from bin (c0, c1, c2); returns how many.

    Run ``k`` is ``sorted_positions[seg_lo[k]:seg_hi[k]]`` seen through the image shift
    ``seg_shift[k]`` (Å, added to the neighbour positions); ``seg_q[k]`` is the same shift in
    lattice vectors. Runs along the last axis are merged where bins are contiguous in memory.
    """
    nb0 = nbins[0]
    nb1 = nbins[1]
    nb2 = nbins[2]
    r0 = reach[0]
    r1 = reach[1]
    r2 = reach[2]
    count = 0
    for o0 in range(-r0, r0 + 1):
        t0 = c0 + o0
        q0 = 0
        if pbc[0]:
            q0 = t0 // nb0
            t0 -= q0 * nb0
        elif t0 < 0 or t0 >= nb0:
            continue
        for o1 in range(-r1, r1 + 1):
            t1 = c1 + o1
            q1 = 0
            if pbc[1]:
                q1 = t1 // nb1
                t1 -= q1 * nb1
            elif t1 < 0 or t1 >= nb1:
                continue
            row = (t0 * nb1 + t1) * nb2
            lo2 = c2 - r2
            hi2 = c2 + r2
            if pbc[2]:
                qa = lo2 // nb2
                qb = hi2 // nb2
            else:
                if lo2 < 0:
                    lo2 = 0
                if hi2 > nb2 - 1:
                    hi2 = nb2 - 1
                qa = 0
                qb = 0
            for q2 in range(qa, qb + 1):
                a = lo2 - q2 * nb2
                if a < 0:
                    a = 0
                b = hi2 - q2 * nb2
                if b > nb2 - 1:
                    b = nb2 - 1
                first = start[row + a]
                last = start[row + b + 1]
                if last > first:
                    seg_lo[count] = first
                    seg_hi[count] = last
                    for x in range(3):
                        seg_shift[count, x] = q0 * cell[0, x] + q1 * cell[1, x] + q2 * cell[2, x]
                    seg_q[count, 0] = q0
                    seg_q[count, 1] = q1
                    seg_q[count, 2] = q2
                    count += 1
    return count


def centre_order(cl, centres):
    """Positions in ``centres`` sorted by their atoms' bins (stable): visited in this order, a
    centre's neighbours are still in cache from the one before and its stencil is reused."""
    b = cl.bins[centres]
    flat = (b[:, 0] * cl.nbins[1] + b[:, 1]) * cl.nbins[2] + b[:, 2]
    return np.argsort(flat, kind="stable").astype(np.int64)


def _enter(visitor, m, i):
    """Resolved at compile time to ``type(visitor).enter``."""
    raise NotImplementedError("only callable from numba-compiled code")


def _visit(visitor, context, j, d2, dx, dy, dz, q0, q1, q2):
    """Resolved at compile time to ``type(visitor).visit``."""
    raise NotImplementedError("only callable from numba-compiled code")


def _visitor_method(visitor, name):
    cls = getattr(visitor, "instance_class", None)
    if not isinstance(visitor, types.BaseNamedTuple) or not hasattr(cls, name):
        raise TypingError(f"a pair visitor is a NamedTuple whose class has the jitted static "
                          f"methods enter and visit; {visitor} has no {name}")
    return getattr(cls, name)


@overload(_enter)
def _overload_enter(visitor, m, i):
    enter = _visitor_method(visitor, "enter")

    def impl(visitor, m, i):
        return enter(visitor, m, i)
    return impl


@overload(_visit)
def _overload_visit(visitor, context, j, d2, dx, dy, dz, q0, q1, q2):
    visit = _visitor_method(visitor, "visit")

    def impl(visitor, context, j, d2, dx, dy, dz, q0, q1, q2):
        visit(visitor, context, j, d2, dx, dy, dz, q0, q1, q2)
    return impl


@njit
def visit_pairs(cl, centres, order, visitor):
    """Hand every pair closer than ``cl.cutoff`` (Å) to ``visitor`` (see the module docstring).

    ``cl``: a :class:`CellList`; ``centres``: atom indices; ``order``: the positions in
    ``centres`` in the order to visit them (:func:`centre_order`). The neighbours are the atoms
    binned in ``cl``, every periodic image included, the centre itself excluded (its other
    images count). Compiled into, and cached with, each ``cache=True`` caller.
    """
    reach = cl.reach
    ns = (2 * reach[0] + 1) * (2 * reach[1] + 1) * (2 * reach[2] + 1)
    seg_lo = np.empty(ns, np.int64)
    seg_hi = np.empty(ns, np.int64)
    seg_shift = np.empty((ns, 3))
    seg_q = np.empty((ns, 3), np.int64)
    rc2 = cl.cutoff * cl.cutoff
    bins = cl.bins
    wrapped = cl.wrapped
    spos = cl.sorted_positions
    index = cl.index
    nseg = 0
    last = (-1, -1, -1)
    for o in range(order.shape[0]):
        m = order[o]
        i = centres[m]
        cb = (bins[i, 0], bins[i, 1], bins[i, 2])
        if cb != last:
            nseg = stencil(cb[0], cb[1], cb[2], cl.nbins, reach, cl.pbc, cl.cell, cl.start,
                           seg_lo, seg_hi, seg_shift, seg_q)
            last = cb
        context = _enter(visitor, m, i)
        xi = wrapped[i, 0]
        yi = wrapped[i, 1]
        zi = wrapped[i, 2]
        for s in range(nseg):
            ax = xi - seg_shift[s, 0]
            ay = yi - seg_shift[s, 1]
            az = zi - seg_shift[s, 2]
            for j in range(seg_lo[s], seg_hi[s]):
                dx = spos[j, 0] - ax
                dy = spos[j, 1] - ay
                dz = spos[j, 2] - az
                d2 = dx * dx + dy * dy + dz * dz
                if d2 < rc2:
                    if d2 == 0.0 and index[j] == i:
                        continue  # the centre itself
                    _visit(visitor, context, j, d2, dx, dy, dz, seg_q[s, 0], seg_q[s, 1],
                           seg_q[s, 2])


class _PairList(NamedTuple):
    """Pair visitor: counts the pairs (``fill`` False) or writes them out (``fill`` True)."""

    index: np.ndarray      # cell-list order -> atom index
    image: np.ndarray      # (N, 3) int: positions = wrapped + image @ cell
    fill: bool
    n: np.ndarray          # (1,) int: pairs so far
    out_i: np.ndarray      # centre atom
    out_j: np.ndarray      # neighbour atom
    out_d: np.ndarray      # distance (Å)
    out_vec: np.ndarray    # (n, 3) centre -> neighbour image (Å)
    out_shift: np.ndarray  # (n, 3) int: image of the neighbour, in lattice vectors

    @staticmethod
    @njit(cache=True)
    def enter(v, m, i):
        return i

    @staticmethod
    @njit(cache=True)
    def visit(v, i, j, d2, dx, dy, dz, q0, q1, q2):
        p = v.n[0]
        v.n[0] = p + 1
        if v.fill:
            a = v.index[j]
            v.out_i[p] = i
            v.out_j[p] = a
            v.out_d[p] = np.sqrt(d2)
            v.out_vec[p, 0] = dx
            v.out_vec[p, 1] = dy
            v.out_vec[p, 2] = dz
            v.out_shift[p, 0] = q0 - v.image[a, 0] + v.image[i, 0]
            v.out_shift[p, 1] = q1 - v.image[a, 1] + v.image[i, 1]
            v.out_shift[p, 2] = q2 - v.image[a, 2] + v.image[i, 2]


@njit(cache=True)
def _list_pairs(cl, centres, order, visitor):
    visit_pairs(cl, centres, order, visitor)


def neighbor_list(positions, cell, pbc, cutoff, centres=None, neighbours=None,
                  bins_per_cutoff=None):
    """All pairs closer than ``cutoff`` (Å), like ``ase.neighborlist.neighbor_list('ijdDS')``.

    Returns ``i, j, d, D, S``: centre and neighbour indices, distance (Å), distance vector
    ``D = positions[j] - positions[i] + S @ cell`` (Å) and integer image shift ``S``. Pairs run
    from every atom of ``centres`` (default all) to every atom of ``neighbours`` (default all),
    both ways, including an atom's own periodic images but not the atom itself. Sorted by i.
    ``bins_per_cutoff`` as in :func:`build_cell_list`. A thin user of :func:`visit_pairs`, so
    the tests that hold it against ASE's neighbour list check the walk the histograms and
    coordination numbers use.
    """
    positions = np.ascontiguousarray(positions, dtype=float).reshape(-1, 3)
    cl = build_cell_list(positions, cell, pbc, cutoff, subset=neighbours,
                         bins_per_cutoff=bins_per_cutoff)
    if centres is None:
        centres = np.arange(len(positions), dtype=np.int64)
    centres = np.ascontiguousarray(centres, dtype=np.int64)
    order = centre_order(cl, centres)
    n = np.zeros(1, np.int64)
    none = np.empty(0, np.int64)
    _list_pairs(cl, centres, order, _PairList(cl.index, cl.image, False, n, none, none,
                                              np.empty(0), np.empty((0, 3)),
                                              np.empty((0, 3), np.int64)))
    size = int(n[0])
    out = (np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size),
           np.empty((size, 3)), np.empty((size, 3), np.int64))
    n[0] = 0
    _list_pairs(cl, centres, order, _PairList(cl.index, cl.image, True, n, *out))
    i, j, d, D, S = out
    sort = np.argsort(i, kind="stable")
    return i[sort], j[sort], d[sort], D[sort], S[sort]


def centre_arrays(positions, types, n_types=None, centres=None, groups=None, n_groups=1):
    """The arrays a pair kernel takes, checked: ``(positions (N, 3) float, types (N,) int64,
    n_types, centres int64 (default all atoms), groups int64 (default 0))``; a ValueError
    unless every group lies in ``range(n_groups)``."""
    positions = np.ascontiguousarray(positions, dtype=float).reshape(-1, 3)
    types = np.ascontiguousarray(types, dtype=np.int64)
    if n_types is None:
        n_types = int(types.max()) + 1 if len(types) else 1
    if centres is None:
        centres = np.arange(len(positions), dtype=np.int64)
    centres = np.ascontiguousarray(centres, dtype=np.int64)
    groups = (np.zeros(len(centres), np.int64) if groups is None
              else np.ascontiguousarray(groups, dtype=np.int64))
    if len(centres) and len(groups) and (groups.min() < 0 or groups.max() >= int(n_groups)):
        raise ValueError("group numbers must lie in range(n_groups)")
    return positions, types, n_types, centres, groups
