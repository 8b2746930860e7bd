"""Fast force fields for the dynamics tests, and tests that they equal ASE's.

ASE 3.29's EMT is pure Python (about 0.1 ms per atom per call), too slow for the issue's
2,000-step, 500-atom drift test inside the time budget. :class:`NumbaEMT` evaluates the same
equations (Jacobsen, Stoltze, Norskov, Surf. Sci. 366, 394 (1996), with ASE's cutoff and
parameter conventions) for one element in a periodic orthorhombic box, and
:func:`test_numba_emt_equals_ase_emt` checks it against ``ase.calculators.emt.EMT``.
:class:`FastLJ` is a shifted Lennard-Jones pair potential (checked against ASE's
``LennardJones(smooth=False)``) behind a minimal duck-typed calculator, cheap enough for the
long canonical-sampling runs.
"""
import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT, beta as EMT_BETA, parameters as EMT_PARAMETERS
from ase.calculators.lj import LennardJones
from ase.data import chemical_symbols
from ase.units import Bohr
from numba import njit


EMT_BETA_NB = EMT_BETA  # a module global numba freezes at compile time


@njit(cache=True)
def _emt_kernel(q, box, rc, rc_list, acut, eta2, kappa, s0, lam, e0, v0, inv12g1, nhv0g2,
                forces):
    """Energy (returned) and forces (written) of one-element EMT, as ase.calculators.emt."""
    n = q.shape[0]
    inv = 1.0 / box
    rcl2 = rc_list * rc_list
    bs0 = EMT_BETA_NB * s0
    # pairs i < j within rc_list; one element, so every pair term is symmetric
    cap = 64 * n
    pi = np.empty(cap, dtype=np.int64)
    pj = np.empty(cap, dtype=np.int64)
    pd = np.empty((cap, 3))
    npair = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = q[j, 0] - q[i, 0]
            dx -= box[0] * np.rint(dx * inv[0])
            dy = q[j, 1] - q[i, 1]
            dy -= box[1] * np.rint(dy * inv[1])
            dz = q[j, 2] - q[i, 2]
            dz -= box[2] * np.rint(dz * inv[2])
            if dx * dx + dy * dy + dz * dz >= rcl2:
                continue
            if npair == cap:
                cap *= 2
                pi2 = np.empty(cap, dtype=np.int64)
                pj2 = np.empty(cap, dtype=np.int64)
                pd2 = np.empty((cap, 3))
                pi2[:npair] = pi
                pj2[:npair] = pj
                pd2[:npair] = pd
                pi, pj, pd = pi2, pj2, pd2
            pi[npair] = i
            pj[npair] = j
            pd[npair, 0] = dx
            pd[npair, 1] = dy
            pd[npair, 2] = dz
            npair += 1
    sigma1 = np.zeros(n)
    energies = np.zeros(n)
    pr = np.empty(npair)
    pw = np.empty(npair)
    ps1 = np.empty(npair)
    pe2 = np.empty(npair)
    for a in range(npair):
        r = math.sqrt(pd[a, 0] ** 2 + pd[a, 1] ** 2 + pd[a, 2] ** 2)
        w = 1.0 / (1.0 + math.exp(acut * (r - rc)))
        s1 = math.exp(-eta2 * (r - bs0)) * w
        e2 = nhv0g2 * math.exp(-kappa * (r / EMT_BETA_NB - s0)) * w
        pr[a] = r
        pw[a] = w
        ps1[a] = s1
        pe2[a] = e2
        sigma1[pi[a]] += s1
        sigma1[pj[a]] += s1
        energies[pi[a]] += e2
        energies[pj[a]] += e2
    deds = np.zeros(n)
    for i in range(n):
        ds = -math.log(sigma1[i] * inv12g1) / (EMT_BETA_NB * eta2)
        x = lam * ds
        ex = math.exp(-x)
        six = 6.0 * v0 * math.exp(-kappa * ds)
        energies[i] += e0 * (1.0 + x) * ex + six - e0
        deds[i] = (-e0 * lam * x * ex - kappa * six) / (-EMT_BETA_NB * eta2 * sigma1[i])
    forces[:] = 0.0
    for a in range(npair):
        i = pi[a]
        j = pj[a]
        dwdroverw = acut * (pw[a] - 1.0)
        c = ((deds[i] + deds[j]) * ps1[a] * (dwdroverw - eta2)
             + 2.0 * pe2[a] * (dwdroverw - kappa / EMT_BETA_NB)) / pr[a]
        for k in range(3):
            forces[i, k] += c * pd[a, k]
            forces[j, k] -= c * pd[a, k]
    return energies.sum()


class NumbaEMT(Calculator):
    """ASE's EMT for a single element in a periodic orthorhombic box, evaluated with numba.

    The box must be at least twice the neighbour-list cutoff (about 11.8 Å) in every
    direction (minimum image). An ordinary ASE ``Calculator``, so the dynamics go through
    ASE's caching machinery exactly as with ``EMT``.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        numbers = np.unique(atoms.numbers)
        if len(numbers) != 1:
            raise NotImplementedError("NumbaEMT handles one element")
        p = EMT_PARAMETERS[chemical_symbols[numbers[0]]]
        cell = atoms.cell.array
        if not (atoms.pbc.all() and np.allclose(cell, np.diag(np.diag(cell)))):
            raise NotImplementedError("NumbaEMT needs a periodic orthorhombic cell")
        box = np.diag(cell).copy()
        # ASE's global cutoff: from the largest s0 of the whole parameter table
        maxseq = max(par[1] for par in EMT_PARAMETERS.values()) * Bohr
        r1nn = EMT_BETA * maxseq
        rc = r1nn * 0.5 * (math.sqrt(3.0) + 2.0)
        acut = math.log(1.0 / 1e-4 - 1.0) / (r1nn * 2.0 - rc)
        rc_list = rc + 0.5
        if box.min() < 2 * rc_list:
            raise NotImplementedError(f"box {box} too small for minimum image ({2 * rc_list} Å)")
        s0 = p[1] * Bohr
        eta2 = p[3] / Bohr
        kappa = p[4] / Bohr
        nn = np.array([12.0, 6.0, 24.0])
        r = EMT_BETA * s0 * np.sqrt([1.0, 2.0, 3.0])
        w = 1.0 / (1.0 + np.exp(acut * (r - rc)))
        x = nn * w / 12.0
        gamma1 = x @ np.exp(-eta2 * (r - EMT_BETA * s0))
        gamma2 = x @ np.exp(-kappa / EMT_BETA * (r - EMT_BETA * s0))
        forces = np.empty((len(atoms), 3))
        energy = _emt_kernel(atoms.positions, box, rc, rc_list, acut, eta2, kappa, s0,
                             p[5] / Bohr, p[0], p[2], 1.0 / (12.0 * gamma1),
                             -0.5 * p[2] / gamma2, forces)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


@njit(cache=True)
def _lj_kernel(q, box, eps, sig, rc, forces):
    n = q.shape[0]
    inv = 1.0 / box
    rc2 = rc * rc
    s6 = (sig / rc) ** 6
    e_rc = 4.0 * eps * (s6 * s6 - s6)
    energy = 0.0
    for i in range(n):
        forces[i, 0] = 0.0
        forces[i, 1] = 0.0
        forces[i, 2] = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            dx = q[j, 0] - q[i, 0]
            dx -= box * np.rint(dx * inv)
            dy = q[j, 1] - q[i, 1]
            dy -= box * np.rint(dy * inv)
            dz = q[j, 2] - q[i, 2]
            dz -= box * np.rint(dz * inv)
            r2 = dx * dx + dy * dy + dz * dz
            if r2 >= rc2:
                continue
            c6 = (sig * sig / r2) ** 3
            energy += 4.0 * eps * (c6 * c6 - c6) - e_rc
            g = 24.0 * eps * (2.0 * c6 * c6 - c6) / r2  # -(1/r) dU/dr
            forces[i, 0] -= g * dx
            forces[i, 1] -= g * dy
            forces[i, 2] -= g * dz
            forces[j, 0] += g * dx
            forces[j, 1] += g * dy
            forces[j, 2] += g * dz
    return energy


class FastLJ:
    """Shifted Lennard-Jones in a periodic cubic box: a minimal calculator (no ASE machinery).

    Implements what ``Atoms.get_forces`` and ``Atoms.get_potential_energy`` call, with a cache
    keyed on the positions, so a long run pays microseconds per step, not ASE's bookkeeping.
    """

    def __init__(self, epsilon, sigma, rc, box):
        self.epsilon, self.sigma = float(epsilon), float(sigma)
        self.rc, self.box = float(rc), float(box)
        if self.rc > self.box / 2:
            raise ValueError("rc must be at most half the box")
        self._q = None
        self.ncalls = 0

    def _update(self, atoms):
        q = atoms.arrays["positions"]
        if self._q is None or not np.array_equal(q, self._q):
            self._f = np.empty_like(q)
            self._e = _lj_kernel(q, self.box, self.epsilon, self.sigma, self.rc, self._f)
            self._q = q.copy()
            self.ncalls += 1

    def get_forces(self, atoms):
        self._update(atoms)
        return self._f.copy()

    def get_potential_energy(self, atoms=None, force_consistent=False):
        self._update(atoms)
        return self._e


def lj_fluid(n_side=3, epsilon=0.0104, sigma=3.405, density=0.8, mass=39.948, rc_sigma=2.5):
    """fcc lattice of 4 n_side^3 LJ atoms at reduced density ``density`` (Ar by default)."""
    a = (4.0 / density) ** (1.0 / 3.0) * sigma
    atoms = Atoms("Ar4", scaled_positions=[(0, 0, 0), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
                  cell=[a, a, a], pbc=True).repeat(n_side)
    atoms.set_masses([mass] * len(atoms))
    box = a * n_side
    atoms.calc = FastLJ(epsilon, sigma, min(rc_sigma * sigma, box / 2), box)
    return atoms


def cu_emt(n_side=4, rattle=0.05, seed=1):
    """Cubic fcc Cu, n_side^3 conventional cells, rattled, with :class:`NumbaEMT`."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n_side)
    atoms.rattle(rattle, seed=seed)
    atoms.calc = NumbaEMT()
    return atoms


def test_numba_emt_equals_ase_emt():
    atoms = cu_emt(4, rattle=0.15, seed=3)
    ref = atoms.copy()
    ref.calc = EMT()
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-9)
    assert np.abs(atoms.get_forces() - ref.get_forces()).max() < 1e-9


def test_fast_lj_equals_ase_lennard_jones():
    atoms = lj_fluid(3)
    atoms.rattle(0.2, seed=4)
    calc = atoms.calc
    ref = atoms.copy()
    ref.calc = LennardJones(epsilon=calc.epsilon, sigma=calc.sigma, rc=calc.rc, smooth=False)
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-10)
    assert np.abs(atoms.get_forces() - ref.get_forces()).max() < 1e-10
