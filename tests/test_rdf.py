"""Partial g(r) and distance histograms against ASE (get_rdf, neighbor_list) and analytic counts."""
import numpy as np
import pytest
from ase.geometry.rdf import get_rdf
from ase.neighborlist import neighbor_list as ase_neighbor_list

from meltquench.kernels.neighbors import plane_spacings
from meltquench.kernels.rdf import (bin_centres, bin_edges, normalise, pair_histogram,
                                    partial_rdf, running_coordination, shell_volumes)
from meltquench.structures import v2o3_corundum, v2o3_rhombohedral


def disordered(atoms, seed, noise=0.3, shear=0.08):
    """Shear the cell into a general triclinic one and displace every atom (Å)."""
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    strain = np.eye(3) + rng.uniform(-shear, shear, (3, 3))
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.positions += rng.normal(0.0, noise, atoms.positions.shape)
    return atoms


def v2o3_types(atoms):
    return np.where(atoms.numbers == 23, 0, 1)  # V 0, O 1


@pytest.mark.parametrize("a, b", [("V", "O"), ("O", "V"), ("O", "O"), ("V", "V")])
def test_partial_rdf_matches_ase_get_rdf(a, b):
    atoms = disordered(v2o3_corundum((3, 3, 1)), seed=1)
    assert plane_spacings(atoms.cell.array).min() > 12.0  # ASE needs the cell >= 2 rmax
    types = v2o3_types(atoms)
    code = {"V": 0, "O": 1}
    r, g = partial_rdf(atoms.positions, atoms.cell.array, atoms.pbc, types, code[a], code[b],
                       6.0, 120)
    g_ase, r_ase = get_rdf(atoms, 6.0, 120, elements=(a, b))
    np.testing.assert_allclose(r, r_ase, atol=1e-12)
    np.testing.assert_allclose(g, g_ase, rtol=1e-10, atol=1e-12)
    assert g.max() > 1.0


def histogram_from_ase(atoms, rmax, nbins, centre_mask, neighbour_mask):
    i, j, d = ase_neighbor_list("ijd", atoms, rmax)
    keep = centre_mask[i] & neighbour_mask[j]
    return np.histogram(d[keep], bins=bin_edges(rmax, nbins))[0]


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False), (False, True, True)])
def test_small_cell_histograms_match_ase_neighbor_list(pbc):
    """A 10-atom rhombohedral cell, disordered, with rmax = 6 Å, far beyond half the cell."""
    atoms = disordered(v2o3_rhombohedral(), seed=2, noise=0.2)
    atoms.pbc = pbc
    assert plane_spacings(atoms.cell.array).min() < 6.0
    types = v2o3_types(atoms)
    hist = pair_histogram(atoms.positions, atoms.cell.array, atoms.pbc, types, 6.0, 60)
    assert hist.shape == (1, 2, 2, 60)
    for a in (0, 1):
        for b in (0, 1):
            ref = histogram_from_ase(atoms, 6.0, 60, types == a, types == b)
            assert ref.sum() > 0
            np.testing.assert_array_equal(hist[0, a, b], ref)


def test_groups_subsets_and_pair_selection():
    atoms = disordered(v2o3_corundum((2, 2, 1)), seed=3)
    types = v2o3_types(atoms)
    rng = np.random.default_rng(0)
    centres = np.sort(rng.choice(len(atoms), 40, replace=False))
    groups = rng.integers(0, 3, len(centres))
    pairs = np.array([[False, True], [True, True]])
    hist = pair_histogram(atoms.positions, atoms.cell.array, atoms.pbc, types, 5.0, 50,
                          centres=centres, groups=groups, n_groups=3, pairs=pairs)
    assert not hist[:, 0, 0].any()  # V-V not asked for
    for grp in range(3):
        mask = np.zeros(len(atoms), bool)
        mask[centres[groups == grp]] = True
        for a, b in [(0, 1), (1, 0), (1, 1)]:
            ref = histogram_from_ase(atoms, 5.0, 50, mask & (types == a), types == b)
            np.testing.assert_array_equal(hist[grp, a, b], ref)


def test_simple_cubic_running_coordination_is_exact():
    """Simple cubic lattice (a = 2 Å): 6, 18, 26, 32, 56 neighbours within the first shells."""
    from ase import Atoms
    atoms = Atoms("Po", positions=[[0.3, 0.2, 0.1]], cell=np.eye(3) * 2.0, pbc=True)
    nbins = 450
    hist = pair_histogram(atoms.positions, atoms.cell.array, atoms.pbc, np.zeros(1, int), 4.5,
                          nbins)[0, 0, 0]
    n_r = running_coordination(hist, 1)
    edges = bin_edges(4.5, nbins)[1:]
    for r, expected in [(2.1, 6), (2.9, 18), (3.6, 26), (4.1, 32), (4.45, 32), (4.49, 56)]:
        assert n_r[np.searchsorted(edges, r)] == expected


def test_ideal_gas_normalisation():
    """Uniform random points: g(r) = 1 on average (ASE/freud normalisation with N_b / V)."""
    from ase import Atoms
    rng = np.random.default_rng(4)
    n = 3000
    cell = np.array([[30.0, 0, 0], [5.0, 28.0, 0], [2.0, 3.0, 29.0]])
    atoms = Atoms(f"Ar{n}", scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)
    r, g = partial_rdf(atoms.positions, cell, atoms.pbc, np.zeros(n, int), 0, 0, 6.0, 30)
    assert np.mean(g[10:]) == pytest.approx(1.0 - 1.0 / n, abs=0.01)
    assert np.all(np.abs(g[10:] - 1) < 0.1)


def test_normalise_and_shells():
    shells = shell_volumes(3.0, 3)
    np.testing.assert_allclose(shells.sum(), 4 / 3 * np.pi * 27)
    np.testing.assert_allclose(bin_centres(3.0, 3), [0.5, 1.5, 2.5])
    g = normalise([4, 0, 2], 2, 10, 100.0, 3.0)
    np.testing.assert_allclose(g, np.array([4, 0, 2]) / (2 * 10 / 100.0 * shells))
    assert np.all(np.isnan(normalise([1, 1, 1], 0, 10, 100.0, 3.0)))
    np.testing.assert_allclose(running_coordination([4, 0, 2], 2), [2, 2, 3])
