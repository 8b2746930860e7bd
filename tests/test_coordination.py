"""Coordination numbers: corundum V2O3 (6 O per V, 4 V per O), ASE's neighbor_list, and the
first peak / first minimum finder on curves whose answer is known."""
import numpy as np
import pytest
from ase.neighborlist import neighbor_list as ase_neighbor_list

from meltquench.kernels.coordination import (coordination_histogram, coordination_numbers,
                                             first_peak_and_minimum, gaussian_smooth,
                                             mean_from_histogram)
from meltquench.kernels.rdf import partial_rdf
from meltquench.structures import v2o3_corundum, v2o3_rhombohedral


def vo_cutoffs(v_o=2.3, v_v=0.0, o_o=0.0):
    return np.array([[v_v, v_o], [v_o, o_o]])


@pytest.mark.parametrize("build, repeat", [(v2o3_corundum, (1, 1, 1)),
                                           (v2o3_corundum, (2, 1, 3)),
                                           (v2o3_rhombohedral, (1, 1, 1)),
                                           (v2o3_rhombohedral, (3, 2, 2))])
def test_corundum_v2o3_is_six_and_four_coordinated(build, repeat):
    atoms = build(repeat)
    # Any origin and any lattice translation: shift the atoms off the cell, rotate everything.
    atoms.positions += np.array([0.37, -1.21, 0.55]) + 2 * atoms.cell[0]
    atoms.rotate(33.0, (1.0, 2.0, 0.5), rotate_cell=True)
    types = np.where(atoms.numbers == 23, 0, 1)
    counts = coordination_numbers(atoms.positions, atoms.cell.array, atoms.pbc, types,
                                  vo_cutoffs(2.3))
    assert np.all(counts[types == 0, 1] == 6)
    assert np.all(counts[types == 1, 0] == 4)
    assert not counts[:, 0][types == 0].any() and not counts[:, 1][types == 1].any()
    r, g = partial_rdf(atoms.positions, atoms.cell.array, atoms.pbc, types, 0, 1, 6.0, 200)
    peak, minimum = first_peak_and_minimum(r, g)
    assert 1.95 <= peak <= 2.06
    assert 2.06 < minimum < 2.9  # between the first V-O shell (<= 2.052 Å) and the next one


@pytest.mark.parametrize("seed", range(3))
def test_counts_match_ase_neighbor_list(seed):
    rng = np.random.default_rng(seed)
    atoms = v2o3_rhombohedral((2, 1, 1))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.1, 0.1, (3, 3))),
                   scale_atoms=True)
    atoms.positions += rng.normal(0, 0.35, atoms.positions.shape)
    atoms.pbc = [True, True, bool(seed % 2)]
    types = np.where(atoms.numbers == 23, 0, 1)
    cut = np.array([[3.1, 2.4], [2.2, 3.6]])  # per (centre, neighbour) species, not symmetric
    centres = np.arange(1, len(atoms), 2)
    counts = coordination_numbers(atoms.positions, atoms.cell.array, atoms.pbc, types, cut,
                                  centres=centres)
    i, j, d = ase_neighbor_list("ijd", atoms, cut.max())
    for row, c in enumerate(centres):
        for b in (0, 1):
            sel = (i == c) & (types[j] == b) & (d < cut[types[c], b])
            assert counts[row, b] == np.count_nonzero(sel)


def test_histogram_and_mean():
    hist = coordination_histogram([4, 6, 6, 5, 6], minlength=8)
    np.testing.assert_array_equal(hist, [0, 0, 0, 0, 1, 1, 3, 0])
    assert mean_from_histogram(hist) == pytest.approx(27 / 5)
    assert np.isnan(mean_from_histogram([0, 0]))


def test_first_minimum_of_two_equal_gaussians_is_halfway():
    r = (np.arange(300) + 0.5) * 0.02
    g = 3 * np.exp(-0.5 * ((r - 2.0) / 0.12) ** 2) + 3 * np.exp(-0.5 * ((r - 3.4) / 0.12) ** 2)
    g += 0.02 * np.random.default_rng(0).standard_normal(len(r))  # noise must not count
    peak, minimum = first_peak_and_minimum(r, g)
    assert peak == pytest.approx(2.0, abs=0.03)
    assert minimum == pytest.approx(2.7, abs=0.05)


def test_flat_bottom_gives_the_middle_and_no_minimum_gives_nan():
    r = (np.arange(200) + 0.5) * 0.03
    g = np.zeros_like(r)
    g[(r > 1.9) & (r < 2.1)] = 5.0   # crystal-like shells with g = 0 in between
    g[(r > 3.9) & (r < 4.1)] = 5.0
    peak, minimum = first_peak_and_minimum(r, g)
    assert peak == pytest.approx(2.0, abs=0.05)
    assert minimum == pytest.approx(3.0, abs=0.1)
    rising = np.exp(-0.5 * ((r - 2.0) / 0.2) ** 2) * 4 + np.clip(r - 3, 0, None)
    falling = 4 * np.exp(-0.5 * ((r - 5.5) / 0.6) ** 2)
    assert np.isfinite(first_peak_and_minimum(r, rising)[1])
    assert np.isnan(first_peak_and_minimum(r, falling)[1])   # peak at the edge, no minimum
    assert np.isnan(first_peak_and_minimum(r, np.zeros_like(r))[0])


def test_gaussian_smooth_keeps_area_and_constants():
    y = np.zeros(101)
    y[50] = 1.0
    s = gaussian_smooth(y, 3.0)
    assert s.sum() == pytest.approx(1.0)
    assert np.argmax(s) == 50
    np.testing.assert_allclose(gaussian_smooth(np.full(40, 2.5), 4.0), 2.5)
