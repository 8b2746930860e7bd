"""Cell-list neighbour search against ASE's neighbor_list (an independent implementation)."""
import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list

from meltquench.kernels.neighbors import (build_cell_list, complete_cell, neighbor_list,
                                          plane_spacings)


def random_cell(rng, low=2.0, high=9.0, tilt=2.5):
    """A random triclinic cell (rows), well conditioned."""
    while True:
        cell = np.diag(rng.uniform(low, high, 3)) + rng.uniform(-tilt, tilt, (3, 3))
        if abs(np.linalg.det(cell)) > 0.3 * np.prod(np.linalg.norm(cell, axis=1)):
            return cell


def pair_keys(i, j, S):
    return sorted(zip(i.tolist(), j.tolist(), *(S.T.tolist())))


def assert_same_as_ase(atoms, cutoff, bins_per_cutoff=None):
    i, j, d, D, S = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff,
                                  bins_per_cutoff=bins_per_cutoff)
    ai, aj, ad, aS = ase_neighbor_list("ijdS", atoms, cutoff)
    assert pair_keys(i, j, S) == pair_keys(ai, aj, aS)
    # Distances of the same (i, j, S) agree to rounding.
    ours = dict(zip(zip(i.tolist(), j.tolist(), *(S.T.tolist())), d))
    theirs = dict(zip(zip(ai.tolist(), aj.tolist(), *(aS.T.tolist())), ad))
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-10)
    np.testing.assert_allclose(D, atoms.positions[j] - atoms.positions[i] + S @ atoms.cell.array,
                               atol=1e-10)
    return len(i)


@pytest.mark.parametrize("seed", range(6))
def test_random_triclinic_cells_match_ase(seed):
    """Random triclinic cells, every periodicity mix, atoms outside the cell, cutoffs from a
    fraction of the cell to more than twice its size (many periodic images)."""
    rng = np.random.default_rng(seed)
    total = 0
    for trial in range(8):
        cell = random_cell(rng)
        n = int(rng.integers(1, 30))
        pbc = rng.random(3) < 0.7
        atoms = Atoms(f"H{n}", scaled_positions=rng.uniform(-0.4, 1.4, (n, 3)), cell=cell,
                      pbc=pbc)
        h = plane_spacings(cell).min()
        cutoff = float(rng.uniform(0.3, 2.5) * h)
        for bins_per_cutoff in (None, 1, 2, 3):  # bins as wide as the cutoff, or narrower
            total += assert_same_as_ase(atoms, cutoff, bins_per_cutoff)
    assert total > 0


def test_cutoff_larger_than_half_a_small_cell():
    """A 3 Å triclinic cell and a 6 Å cutoff (the minimum image would be wrong)."""
    rng = np.random.default_rng(7)
    cell = np.array([[3.0, 0.0, 0.0], [-1.5, 2.6, 0.0], [0.4, 0.3, 3.2]])
    atoms = Atoms("V2O3", scaled_positions=rng.random((5, 3)), cell=cell, pbc=True)
    assert 6.0 > plane_spacings(cell).max()  # the cutoff exceeds the whole cell
    n = assert_same_as_ase(atoms, 6.0, bins_per_cutoff=3)
    assert assert_same_as_ase(atoms, 6.0) == n
    # Every atom has the same number of neighbours counted over all images of all atoms:
    # about the number density times the sphere volume.
    expected = 5 / abs(np.linalg.det(cell)) * 4 / 3 * np.pi * 6.0 ** 3 * 5
    assert abs(n - expected) < 0.2 * expected


def test_open_cell_without_vectors_and_slab():
    rng = np.random.default_rng(3)
    molecule = Atoms("H20", positions=rng.uniform(0, 6, (20, 3)))  # cell all zeros, no pbc
    assert assert_same_as_ase(molecule, 2.5) > 0
    assert assert_same_as_ase(molecule, 1.5, bins_per_cutoff=3) > 0
    slab = Atoms("H20", positions=rng.uniform(0, 6, (20, 3)),
                 cell=[[5.0, 0, 0], [1.0, 4.5, 0], [0, 0, 0]], pbc=[True, True, False])
    assert assert_same_as_ase(slab, 3.0) > 0


def test_centre_and_neighbour_subsets():
    rng = np.random.default_rng(5)
    atoms = Atoms("H30", scaled_positions=rng.random((30, 3)), cell=random_cell(rng), pbc=True)
    centres = np.arange(0, 30, 3)
    neighbours = np.arange(1, 30, 2)
    i, j, d, D, S = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.0,
                                  centres=centres, neighbours=neighbours)
    ai, aj, ad, aS = ase_neighbor_list("ijdS", atoms, 4.0)
    keep = np.isin(ai, centres) & np.isin(aj, neighbours)
    assert len(i) > 0
    assert pair_keys(i, j, S) == pair_keys(ai[keep], aj[keep], aS[keep])


def test_cell_list_bins_cover_cutoff():
    """The bins visited on each side span at least the cutoff along every plane normal, and
    wrapped positions plus image shifts give back the input positions."""
    rng = np.random.default_rng(11)
    cell = random_cell(rng, 8, 20)
    pos = rng.random((200, 3)) @ cell
    cl = build_cell_list(pos, cell, [True, True, True], 3.0)
    widths = plane_spacings(cell) / cl.nbins
    assert np.all(cl.reach * widths >= 3.0)
    np.testing.assert_allclose(cl.wrapped + cl.image @ cl.cell, pos, atol=1e-10)
    assert sorted(cl.index.tolist()) == list(range(200))


def test_complete_cell_errors_and_fills_open_axes():
    cell = complete_cell([[4.0, 0, 0], [0, 0, 0], [0, 0, 0]], [True, False, False])
    assert abs(np.linalg.det(cell)) > 0
    np.testing.assert_allclose(cell[0], [4.0, 0, 0])
    with pytest.raises(ValueError):
        complete_cell(np.zeros((3, 3)), [True, False, False])
    with pytest.raises(ValueError):
        complete_cell([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]], [True, True, True])
