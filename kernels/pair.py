"""Energy, forces and virial of a smoothly cut-off pair potential (lengths in Å, energies in eV).

The potential between atoms of kinds ``a`` and ``b`` at distance ``r`` is

    phi(r) = A exp(-r / rho) + D [(1 - exp(-alpha (r - r0)))^2 - 1]

(Born-Mayer repulsion plus a Morse bond), multiplied by a C2 quintic switch that goes from 1
at ``r_on`` to 0 at ``r_c``. The kernel sums over explicit periodic images, as many along each
periodic axis as the cutoff needs (:func:`image_counts`), so it is exact for cells of any shape,
also smaller than the cutoff, where a cell list that visits each neighbour bin once is not.
Its loop order, and so its summation order, is pinned: the same positions give bitwise the same
forces, and the same seeds bitwise the same trajectories (tests/test_pinned_trajectories.py).
"""
import numpy as np
from numba import njit

from .neighbors import plane_spacings


def image_counts(cell, pbc, cutoff):
    """Periodic images to visit on each side along each axis: ``ceil(rc / h_i + 1/2)``.

    ``h_i`` is the spacing of the lattice planes ``i`` (Å); open axes (``pbc`` False) get 0.
    The extra half covers the minimum-image shift of a pair, at most half a cell.
    """
    spacings = plane_spacings(cell)
    counts = np.zeros(3, dtype=np.int64)
    for k in range(3):
        if pbc[k]:
            counts[k] = int(np.ceil(cutoff / spacings[k] + 0.5))
    return counts


@njit(cache=True)
def pair_energy_forces(pos, cell, inv_cell, kinds, A, rho, D, alpha, r0, r_on, r_c, nimg, pbc):
    """Energy (eV), forces (eV/Å) and virial sum_pairs d (x) dE/dd (eV) of the pair potential.

    ``pos`` (N, 3) positions (Å); ``cell`` (3, 3) lattice vectors as rows (Å) and its inverse;
    ``kinds`` (N,) species index of every atom into the (nkinds, nkinds) parameter tables
    ``A`` (eV), ``rho`` (Å), ``D`` (eV), ``alpha`` (1/Å), ``r0`` (Å); ``r_on`` and ``r_c`` the
    switch's start and the cutoff (Å); ``nimg`` (3,) images per side (:func:`image_counts`);
    ``pbc`` (3,) 1 for periodic axes, 0 for open ones.
    """
    n = pos.shape[0]
    forces = np.zeros((n, 3))
    virial = np.zeros((3, 3))
    energy = 0.0
    frac = pos @ inv_cell
    rc2 = r_c * r_c
    width = r_c - r_on
    s0 = np.empty(3)
    for i in range(n):
        for j in range(i, n):
            ki = kinds[i]
            kj = kinds[j]
            a_ = A[ki, kj]
            rh = rho[ki, kj]
            d_ = D[ki, kj]
            al = alpha[ki, kj]
            b0 = r0[ki, kj]
            for k in range(3):
                ds = frac[j, k] - frac[i, k]
                s0[k] = ds - np.floor(ds + 0.5) if pbc[k] else ds
            w = 0.5 if i == j else 1.0
            for n1 in range(-nimg[0], nimg[0] + 1):
                for n2 in range(-nimg[1], nimg[1] + 1):
                    for n3 in range(-nimg[2], nimg[2] + 1):
                        if i == j and n1 == 0 and n2 == 0 and n3 == 0:
                            continue
                        f0 = s0[0] + n1
                        f1 = s0[1] + n2
                        f2 = s0[2] + n3
                        dx = f0 * cell[0, 0] + f1 * cell[1, 0] + f2 * cell[2, 0]
                        dy = f0 * cell[0, 1] + f1 * cell[1, 1] + f2 * cell[2, 1]
                        dz = f0 * cell[0, 2] + f1 * cell[1, 2] + f2 * cell[2, 2]
                        r2 = dx * dx + dy * dy + dz * dz
                        if r2 >= rc2:
                            continue
                        r = np.sqrt(r2)
                        rep = a_ * np.exp(-r / rh)
                        ex = np.exp(-al * (r - b0))
                        phi = rep + d_ * (ex * ex - 2.0 * ex)
                        dphi = -rep / rh + 2.0 * d_ * al * (ex - ex * ex)
                        if r > r_on:
                            x = (r - r_on) / width
                            sw = 1.0 - x * x * x * (10.0 - 15.0 * x + 6.0 * x * x)
                            dsw = -30.0 * x * x * (1.0 - x) * (1.0 - x) / width
                            dphi = dphi * sw + phi * dsw
                            phi = phi * sw
                        energy += w * phi
                        g = w * dphi / r
                        fx = g * dx
                        fy = g * dy
                        fz = g * dz
                        forces[i, 0] += fx
                        forces[i, 1] += fy
                        forces[i, 2] += fz
                        forces[j, 0] -= fx
                        forces[j, 1] -= fy
                        forces[j, 2] -= fz
                        virial[0, 0] += dx * fx
                        virial[0, 1] += dx * fy
                        virial[0, 2] += dx * fz
                        virial[1, 0] += dy * fx
                        virial[1, 1] += dy * fy
                        virial[1, 2] += dy * fz
                        virial[2, 0] += dz * fx
                        virial[2, 1] += dz * fy
                        virial[2, 2] += dz * fz
    return energy, forces, virial
