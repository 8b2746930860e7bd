"""Defect builders: counts, regions, reproducibility, lattice kept, other oxides, errors.

References are independent of meltquench.defects: ASE neighbour lists (bonds lost around a
vacancy), ase.geometry.get_distances (minimum distances), plane geometry from the cell vectors
(distance to the region boundaries) and hand-computed stoichiometry.
"""
import copy

import numpy as np
import pytest
from ase.constraints import FixAtoms, FixBondLengths
from ase.geometry import get_distances
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

from meltquench.defects import (PAPER_DEFECTIVE_RECIPE, DefectRecord, apply_defects,
                                composition_report, format_composition, make_antisites,
                                make_vacancies)
from meltquench.errors import UserError
from meltquench.structures import CRYSTAL, MELT, split_regions, v2o3_corundum


def v2o3(repeat=(2, 2, 1)):
    return split_regions(v2o3_corundum(repeat))


def sno2_rutile(repeat=(2, 2, 4)):
    """Rutile SnO2 (P4_2/mnm, a = 4.737 Å, c = 3.186 Å, O at (0.3057, 0.3057, 0)): Sn has 6 O."""
    atoms = crystal(["Sn", "O"], basis=[(0, 0, 0), (0.3057, 0.3057, 0)], spacegroup=136,
                    cellpar=[4.737, 4.737, 3.186, 90, 90, 90])
    return split_regions(atoms.repeat(repeat))


def al2o3_corundum(repeat=(2, 2, 1)):
    """Corundum Al2O3 (R-3c, a = 4.759 Å, c = 12.991 Å): Al has 6 O (1.86, 1.97 Å)."""
    atoms = crystal(["Al", "O"], basis=[(0, 0, 0.3522), (0.3062, 0, 0.25)], spacegroup=167,
                    cellpar=[4.759, 4.759, 12.991, 90, 90, 120])
    return split_regions(atoms.repeat(repeat))


def n_bonds(atoms, a, b, cutoff):
    """Number of a-b pairs (a != b species) closer than cutoff (Å), counted once."""
    i, j = neighbor_list("ij", atoms, cutoff)
    s = np.array(atoms.get_chemical_symbols())
    return int(np.sum((s[i] == a) & (s[j] == b)))


def fixed_indices(atoms):
    out = set()
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            out |= set(int(i) for i in c.get_indices())
    return out


def snapshot(atoms):
    return (atoms.positions.copy(), atoms.numbers.copy(), atoms.get_tags().copy(),
            copy.deepcopy(atoms.info), sorted(fixed_indices(atoms)))


def assert_unchanged(atoms, snap):
    pos, num, tags, info, fixed = snap
    assert np.array_equal(atoms.positions, pos) and np.array_equal(atoms.numbers, num)
    assert np.array_equal(atoms.get_tags(), tags) and sorted(fixed_indices(atoms)) == fixed
    assert atoms.info.keys() == info.keys() and atoms.info["region_planes"] == info["region_planes"]


def plane_distance(atoms, position, axis=2):
    """Distance (Å) from the nearer region plane, from the plane normal (cross product)."""
    cell = atoms.cell.array
    others = [k for k in range(3) if k != axis]
    normal = np.cross(cell[others[0]], cell[others[1]])
    normal /= np.linalg.norm(normal)
    return min(abs(np.dot(position - (p + m) * cell[axis], normal))
               for p in atoms.info["region_planes"] for m in range(-2, 3))


def kept_map(n, records):
    """Original index of each atom left after the vacancies in ``records``."""
    removed = {r.index for r in records if r.kind == "vacancy"}
    return np.array([i for i in range(n) if i not in removed])


def test_vacancies_counts_region_and_crystal_lattice_kept():
    atoms = v2o3()
    snap = snapshot(atoms)
    new, records = make_vacancies(atoms, "V", region="crystal", count=3, seed=1)
    assert_unchanged(atoms, snap)
    assert len(new) == 117 and len(records) == 3
    tags = atoms.get_tags()
    for r in records:
        assert isinstance(r, DefectRecord) and r.kind == "vacancy" and r.species == ("V",)
        assert atoms[r.index].symbol == "V" and tags[r.index] == CRYSTAL and r.region == "crystal"
        assert np.allclose(r.position, atoms.positions[r.index])
    s = np.array(new.get_chemical_symbols())
    assert np.sum((s == "V") & (new.get_tags() == CRYSTAL)) == 21
    assert np.sum((s == "V") & (new.get_tags() == MELT)) == 24
    assert np.sum(s == "O") == 72
    # Every other atom sits exactly where it was, with its tag; FixAtoms = crystal tag.
    keep = kept_map(len(atoms), records)
    assert np.array_equal(new.positions, atoms.positions[keep])
    assert np.array_equal(new.numbers, atoms.numbers[keep])
    assert np.array_equal(new.get_tags(), tags[keep])
    assert fixed_indices(new) == set(np.flatnonzero(new.get_tags() == CRYSTAL))
    assert new.info["region_axis"] == 2 and new.info["region_planes"] == [0.0, 0.5]
    # Corundum: each V has 6 O within 2.3 Å, so 3 vacancies cut exactly 18 V-O bonds; all
    # remaining V keep their 6 O.
    assert n_bonds(atoms, "V", "O", 2.3) - n_bonds(new, "V", "O", 2.3) == 18
    i, j = neighbor_list("ij", new, 2.3)
    vo = (s[i] == "V") & (s[j] == "O")
    assert np.all(np.bincount(i[vo], minlength=len(new))[s == "V"] == 6)


def test_fraction_rounds_to_nearest_count_of_region_species():
    atoms = v2o3()
    new, rec = make_vacancies(atoms, "V", region="crystal", fraction=0.08)  # 1.92 of 24 -> 2
    assert len(rec) == 2
    new, rec = make_vacancies(atoms, "O", region="melt", fraction=0.1)  # 3.6 of 36 -> 4
    assert len(rec) == 4 and all(atoms.get_tags()[r.index] == MELT for r in rec)
    new, rec = make_vacancies(atoms, "O", region="all", fraction=0.25)  # 18 of 72
    assert len(rec) == 18 and composition_report(new)["all"]["counts"] == {"V": 48, "O": 54}
    new, rec = make_vacancies(atoms, "O", region="melt", count=0)
    assert rec == [] and len(new) == len(atoms)


def test_same_seed_same_defects_other_seed_other_defects():
    atoms = v2o3()
    a1, r1 = apply_defects(atoms, PAPER_DEFECTIVE_RECIPE, seed=5)
    a2, r2 = apply_defects(atoms, PAPER_DEFECTIVE_RECIPE, seed=5)
    a3, r3 = apply_defects(atoms, PAPER_DEFECTIVE_RECIPE, seed=6)
    assert r1 == r2 and np.array_equal(a1.numbers, a2.numbers)
    assert np.array_equal(a1.positions, a2.positions)
    assert [r.indices for r in r1] != [r.indices for r in r3]
    # Adding an entry at the end leaves the earlier ones as they were.
    extra = list(PAPER_DEFECTIVE_RECIPE) + [{"kind": "vacancy", "species": "O", "count": 1,
                                             "region": "crystal"}]
    a4, r4 = apply_defects(atoms, extra, seed=5)
    assert r4[:len(r1)] == r1 and len(a4) == len(a1) - 1


def test_min_distance_and_boundary_distance():
    atoms = v2o3((2, 2, 2))
    new, rec = make_vacancies(atoms, "O", region="melt", count=6, min_distance=4.5,
                              boundary_distance=2.0, seed=3)
    pos = np.array([r.position for r in rec])
    _, d = get_distances(pos, cell=atoms.cell, pbc=atoms.pbc)
    assert d[np.triu_indices(len(pos), 1)].min() >= 4.5
    assert min(plane_distance(atoms, p) for p in pos) >= 2.0
    assert all(atoms.get_tags()[r.index] == MELT for r in rec)
    # Antisites keep min_distance between different pairs, each pair within pair_cutoff.
    new, rec = make_antisites(atoms, region="crystal", count=4, mode="swap", min_distance=3.5,
                              boundary_distance=1.5, pair_cutoff=2.1, seed=4)
    sites = np.array([p for r in rec for p in r.positions])
    _, d = get_distances(sites, cell=atoms.cell, pbc=atoms.pbc)
    owner = np.repeat(np.arange(len(rec)), 2)
    other = owner[:, None] != owner[None, :]
    assert d[other].min() >= 3.5
    assert np.all(d[~other & (d > 0)] <= 2.1)
    assert min(plane_distance(atoms, p) for p in sites) >= 1.5
    # Too many for the distance: a clear error, not fewer defects.
    with pytest.raises(UserError, match="min_distance"):
        make_vacancies(atoms, "O", region="melt", count=40, min_distance=4.5)
    with pytest.raises(UserError, match="boundary"):
        make_vacancies(atoms, "V", region="crystal", count=48, boundary_distance=1.0)


def test_swap_and_substitute_keep_sites_and_change_species_as_asked():
    atoms = v2o3()
    rng = np.random.default_rng(0)
    atoms.set_velocities(rng.normal(size=(len(atoms), 3)) * 0.01)
    snap = snapshot(atoms)
    v_before = atoms.get_velocities()
    new, rec = make_antisites(atoms, region="melt", count=3, mode="swap", seed=2)
    assert_unchanged(atoms, snap)
    assert len(rec) == 3 and all(r.mode == "swap" for r in rec)
    changed = np.flatnonzero(new.numbers != atoms.numbers)
    assert sorted(changed) == sorted(i for r in rec for i in r.indices)
    assert np.all(atoms.get_tags()[changed] == MELT)
    for r in rec:
        i, j = r.indices
        assert (atoms[i].symbol, atoms[j].symbol) == ("V", "O") == r.species
        assert (new[i].symbol, new[j].symbol) == ("O", "V") == r.new_species
        assert atoms.get_distance(i, j, mic=True) <= 3.0
    assert np.array_equal(new.positions, atoms.positions)
    assert np.allclose(new.get_velocities(), v_before)  # sites keep their velocity
    assert composition_report(new)["melt"]["counts"] == {"V": 24, "O": 36}
    new, rec = make_antisites(atoms, region="melt", count=2, mode="substitute", seed=2)
    assert [r.species + r.new_species for r in rec] == [("O", "V")] * 2
    melt = composition_report(new)["melt"]
    assert melt["counts"] == {"V": 26, "O": 34} and melt["label"] == "V2O(3-x)"
    assert melt["x"] == pytest.approx(3 - 2 * 34 / 26)


def test_paper_recipe_on_120_and_240_atoms():
    for repeat, (nv, no, ns) in (((2, 2, 1), (2, 3, 2)), ((2, 2, 2), (4, 6, 4))):
        atoms = v2o3(repeat)
        new, rec = apply_defects(atoms, PAPER_DEFECTIVE_RECIPE, seed=0)
        kinds = [(r.kind, r.species, r.region) for r in rec]
        assert kinds.count(("vacancy", ("V",), "crystal")) == nv
        assert kinds.count(("vacancy", ("O",), "melt")) == no
        assert kinds.count(("antisite", ("V", "O"), "melt")) == ns
        for r in rec:  # indices refer to the input atoms
            assert tuple(atoms[i].symbol for i in r.indices) == r.species
            assert np.allclose(atoms.positions[list(r.indices)], r.positions)
        n_v, n_o = 12 * repeat[2] * 2, 18 * repeat[2] * 2
        report = composition_report(new)
        assert report["reference"] == "V2O3"
        assert report["crystal"]["counts"] == {"V": n_v - nv, "O": n_o}
        assert report["crystal"]["label"] == "V(2-x)O3"
        assert report["crystal"]["x"] == pytest.approx(2 - 3 * (n_v - nv) / n_o)
        assert report["melt"]["counts"] == {"V": n_v, "O": n_o - no}
        assert report["melt"]["x"] == pytest.approx(3 - 2 * (n_o - no) / n_v)
        assert "crystal: V%dO%d = V(2-x)O3, x = " % (n_v - nv, n_o) in format_composition(report)
        # The crystal half is the original one minus its V vacancies, atom for atom.
        keep = kept_map(len(atoms), rec)
        crystal_new = new.get_tags() == CRYSTAL
        assert np.array_equal(new.positions[crystal_new], atoms.positions[keep][crystal_new])
        assert np.array_equal(new.numbers[crystal_new], atoms.numbers[keep][crystal_new])
        assert fixed_indices(new) == set(np.flatnonzero(crystal_new))
        assert all(plane_distance(atoms, r.position) >= 1.0 for r in rec if r.step == 0)


@pytest.mark.parametrize("builder, cation, anion, per_cation, ratio", [
    (sno2_rutile, "Sn", "O", 6, (1, 2)), (al2o3_corundum, "Al", "O", 6, (2, 3))])
def test_other_oxides(builder, cation, anion, per_cation, ratio):
    atoms = builder()
    symbols = np.array(atoms.get_chemical_symbols())
    tags = atoms.get_tags()
    # Cation vacancies: each cuts exactly its per_cation bonds; the other cations keep theirs.
    new, rec = make_vacancies(atoms, cation, region="crystal", count=2, seed=3)
    assert n_bonds(atoms, cation, anion, 2.3) - n_bonds(new, cation, anion, 2.3) \
        == 2 * per_cation
    s = np.array(new.get_chemical_symbols())
    i, j = neighbor_list("ij", new, 2.3)
    mx = (s[i] == cation) & (s[j] == anion)
    assert np.all(np.bincount(i[mx], minlength=len(new))[s == cation] == per_cation)
    # A full recipe: composition per region against hand-computed counts.
    n_mc = int(np.sum((symbols == cation) & (tags == CRYSTAL)))
    n_xc = int(np.sum((symbols == anion) & (tags == CRYSTAL)))
    n_mm = int(np.sum((symbols == cation) & (tags == MELT)))
    n_xm = int(np.sum((symbols == anion) & (tags == MELT)))
    recipe = [{"kind": "vacancy", "species": cation, "region": "crystal", "count": 2,
               "min_distance": 3.0},
              {"kind": "vacancy", "species": anion, "region": "melt", "fraction": 0.1},
              {"kind": "antisite", "mode": "swap", "species": [cation, anion], "region": "melt",
               "count": 1}]
    new, rec = apply_defects(atoms, recipe, seed=11)
    n_vac = int(np.floor(0.1 * n_xm + 0.5))
    a, b = ratio
    report = composition_report(new)
    m = cation if a == 1 else f"{cation}{a}"
    assert report["reference"] == f"{m}{anion}{b}"
    assert report["crystal"]["counts"] == {cation: n_mc - 2, anion: n_xc}
    assert report["crystal"]["label"] == f"{cation}({a}-x){anion}{b}"
    assert report["crystal"]["x"] == pytest.approx(a - b * (n_mc - 2) / n_xc)
    assert report["melt"]["counts"] == {cation: n_mm, anion: n_xm - n_vac}
    assert report["melt"]["label"] == f"{m}{anion}({b}-x)"
    assert report["melt"]["x"] == pytest.approx(b - a * (n_xm - n_vac) / n_mm)
    assert [r.species for r in rec if r.kind == "antisite"] == [(cation, anion)]
    keep = kept_map(len(atoms), rec)
    crystal_new = new.get_tags() == CRYSTAL
    assert np.array_equal(new.positions[crystal_new], atoms.positions[keep][crystal_new])
    assert fixed_indices(new) == set(np.flatnonzero(crystal_new))


@pytest.mark.parametrize("recipe, match", [
    ([{"kind": "vacancy", "species": "O", "region": "melt", "fracton": 0.1}], "'fraction'"),
    ([{"kind": "vacancies", "species": "O", "count": 1}], "'vacancy'"),
    ([{"kind": "vacancy", "species": "O", "region": "cristal", "count": 1}], "'crystal'"),
    ([{"kind": "vacancy", "species": "O", "count": 1, "fraction": 0.1}], "both"),
    ([{"kind": "vacancy", "species": "O", "region": "melt"}], "neither"),
    ([{"kind": "vacancy", "species": "O", "region": "melt", "count": 37}], "36"),
    ([{"kind": "vacancy", "species": "V", "region": "crystal", "fraction": 0.01}], "rounds to 0"),
    ([{"kind": "vacancy", "species": "Ti", "count": 1}], "not in the cell"),
    ([{"kind": "vacancy", "species": "V", "region": "melt", "count": 24},
      {"kind": "antisite", "region": "melt", "count": 1}], "none left"),
    ([{"kind": "antisite", "region": "melt", "count": 1, "mode": "swop"}], "'swap'"),
    ([{"kind": "antisite", "region": "melt", "count": 1, "pair_cutof": 2.5}], "'pair_cutoff'"),
    ([{"kind": "vacancy", "species": "O", "count": 1.5}], "whole number"),
    ({"kind": "vacancy"}, "list"),
])
def test_recipe_errors_are_one_clear_line(recipe, match):
    with pytest.raises(UserError, match=match) as info:
        apply_defects(v2o3(), recipe)
    assert "\n" not in str(info.value) and str(info.value).startswith("defect")


def test_other_constraints_are_reindexed_and_regions_required():
    atoms = v2o3()
    melt_o = np.flatnonzero((atoms.get_tags() == MELT) & (atoms.numbers == 8))
    atoms.set_constraint(atoms.constraints + [FixBondLengths([melt_o[:2].tolist()])])
    new, rec = make_vacancies(atoms, "V", region="crystal", count=2, seed=0)
    bond = [c for c in new.constraints if isinstance(c, FixBondLengths)][0]
    keep = kept_map(len(atoms), rec)
    assert keep[bond.pairs[0]].tolist() == melt_o[:2].tolist()
    bare = v2o3_corundum((1, 1, 1))
    with pytest.raises(UserError, match="split"):
        make_vacancies(bare, "V", region="crystal", count=1)
    new, rec = make_vacancies(bare, "V", region="all", count=1)
    report = composition_report(new)
    assert set(report) == {"reference", "reference_source", "all"}
    assert report["all"]["formula"] == "V11O18" and report["all"]["label"] == "V(2-x)O3"
    assert composition_report(bare, reference_ratio={"V": 2, "O": 3})["all"]["x"] == 0.0


def test_same_defects_on_every_mpi_rank(mpirun):
    code = ("from mpi4py import MPI\n"
            "from meltquench.structures import v2o3_corundum, split_regions\n"
            "from meltquench.defects import apply_defects, PAPER_DEFECTIVE_RECIPE\n"
            "atoms = split_regions(v2o3_corundum((2, 2, 1)))\n"
            "new, rec = apply_defects(atoms, PAPER_DEFECTIVE_RECIPE, seed=7)\n"
            "mine = ([r.indices for r in rec], new.numbers.tolist(), new.positions.tolist())\n"
            "every = MPI.COMM_WORLD.allgather(mine)\n"
            "assert all(x == every[0] for x in every), 'ranks differ'\n"
            "if MPI.COMM_WORLD.rank == 0: print('INDICES', [r.indices for r in rec])\n")
    out = mpirun(["python", "-c", code], np=2).stdout
    _, serial = apply_defects(v2o3(), PAPER_DEFECTIVE_RECIPE, seed=7)
    assert f"INDICES {[r.indices for r in serial]}" in out
