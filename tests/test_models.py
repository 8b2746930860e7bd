"""Models (issue 12, item 4): which plane a region split cuts, the demo's basal-plane model,
the boundary margin of the paper's O vacancies, and what the final optimisation may move.

References are independent of the code under test: plane normals from cross products of the
cell vectors, Miller indices from the hexagonal cell vectors of ase.spacegroup.crystal,
distances from ase.geometry.get_distances.
"""
import numpy as np
import pytest
from ase.constraints import FixAtoms, FixBondLengths
from ase.geometry import get_distances
from ase.io import read, write
from ase.optimize import FIRE
from ase.spacegroup import crystal

from meltquench.calculators import make_calculator
from meltquench.config import PRESETS, load_config
from meltquench.defects import PAPER_DEFECTIVE_RECIPE, apply_defects, make_vacancies
from meltquench.errors import UserError
from meltquench.model import build_model, relax_mask, relax_region
from meltquench.plan import dry_run
from meltquench.structures import (CRYSTAL, MELT, V2O3_C, split_regions, v2o3_corundum,
                                   v2o3_rhombohedral)


def hexagonal_cell():
    """Corundum V2O3's conventional cell, built here from the paper's numbers."""
    return crystal(["V", "O"], basis=[(0, 0, 0.3463), (0.3124, 0, 0.25)], spacegroup=167,
                   cellpar=[4.952, 4.952, 14.003, 90, 90, 120]).cell.array


def plane_normal(cell, axis):
    others = [k for k in range(3) if k != axis]
    n = np.cross(cell[others[0]], cell[others[1]])
    return n / np.linalg.norm(n)


def reference_plane(atoms, axis, melt_fraction):
    """(hkl in the hexagonal cell, normal-to-split-vector angle, normal-to-c angle, crystal and
    melt thickness), from cross products."""
    cell = atoms.cell.array
    n = plane_normal(cell, axis)
    g = hexagonal_cell() @ n
    g = g / np.abs(g[np.abs(g) > 1e-9]).min()
    hkl = np.round(g).astype(int)
    assert np.allclose(g, hkl, atol=1e-6)
    hkl = hkl if hkl[np.flatnonzero(hkl)[0]] > 0 else -hkl
    angle = np.degrees(np.arccos(abs(n @ cell[axis]) / np.linalg.norm(cell[axis])))
    to_c = np.degrees(np.arccos(abs(n[2])))  # the hexagonal c axis is z in both builders
    period = abs(n @ cell[axis])
    return list(hkl), angle, to_c, ((1 - melt_fraction) * period, melt_fraction * period)


def slab_heights(atoms):
    """Heights along the hexagonal c axis (z), wrapped into the cell's period along z."""
    n = plane_normal(atoms.cell.array, 2)
    assert np.allclose(n, [0, 0, 1])
    period = atoms.cell.array[2] @ n
    return atoms.positions[:, 2] % period, period


# ------------------------------------------------------------------ which plane is cut


def test_demo_model_is_split_at_basal_planes_into_two_slabs():
    atoms = build_model(load_config(preset="demo"))
    assert len(atoms) == 20
    tags = atoms.get_tags()
    for code in (CRYSTAL, MELT):
        s = np.array(atoms.get_chemical_symbols())[tags == code]
        assert (np.sum(s == "V"), np.sum(s == "O")) == (4, 6)
    # The boundary planes are spanned by a and b: their normal is the hexagonal c axis (z),
    # so crystal and melt are two slabs, one above the other along c, c/3 thick each.
    z, period = slab_heights(atoms)
    assert period == pytest.approx(2 * V2O3_C / 3)
    assert np.all(z[tags == CRYSTAL] < period / 2) and np.all(z[tags == MELT] >= period / 2)
    assert atoms.info["region_plane_hkl"] == [0, 0, 1]
    assert atoms.info["region_plane_axes"] == "hexagonal"
    assert atoms.info["region_plane_to_c_deg"] == pytest.approx(0.0, abs=1e-9)
    assert atoms.info["region_thickness_A"] == pytest.approx([V2O3_C / 3] * 2)
    text = dry_run(load_config(preset="demo"), ranks=1)
    assert "(0 0 1) of the hexagonal cell ((0 0 0 1), basal)" in text
    assert "halves 4.668 Å (crystal) and 4.668 Å (melt) thick" in text


@pytest.mark.parametrize("builder, repeat, axis, melt_fraction", [
    ("v2o3-rhombohedral", [1, 1, 2], 2, 0.5),   # the old demo
    ("v2o3-rhombohedral", [2, 2, 2], 0, 0.25),
    ("v2o3-basal", [1, 1, 2], 2, 0.5),
    ("v2o3-basal", [2, 1, 2], 1, 0.5),
    ("v2o3", [2, 1, 1], 0, 0.5),
    ("v2o3", [1, 1, 2], 2, 0.3),
])
def test_plan_and_info_say_which_plane_was_cut(builder, repeat, axis, melt_fraction):
    cfg = load_config(overrides=[f"structure.builder={builder}", f"structure.repeat={repeat}",
                                 f"regions.axis={axis}", f"regions.melt_fraction={melt_fraction}"])
    atoms = build_model(cfg)
    hkl, angle, to_c, (t_crystal, t_melt) = reference_plane(atoms, axis, melt_fraction)
    assert atoms.info["region_plane_hkl"] == hkl
    assert atoms.info["region_plane_angle_deg"] == pytest.approx(angle, abs=1e-6)
    assert atoms.info["region_plane_to_c_deg"] == pytest.approx(to_c, abs=1e-6)
    assert atoms.info["region_thickness_A"] == pytest.approx([t_crystal, t_melt])
    h, k, l = hkl
    text = dry_run(cfg, ranks=1)
    assert f"({h} {k} {l}) of the hexagonal cell (({h} {k} {-(h + k)} {l})" in text
    assert f"normal {angle:.1f} deg from the split vector {'abc'[axis]}" in text
    assert f"{to_c:.1f} deg from the hexagonal c axis" in text
    assert f"halves {t_crystal:.3f} Å (crystal) and {t_melt:.3f} Å (melt) thick" in text
    if builder == "v2o3-rhombohedral" and axis == 2:  # the numbers for the old demo
        assert hkl == [0, 1, -1] and round(to_c) == 73 and round(t_crystal, 1) == 4.1


def test_structure_files_are_named_in_their_hexagonal_axes(tmp_path):
    # A POSCAR keeps no atoms.info: the hexagonal axes come from the rhombohedral lattice.
    write(tmp_path / "POSCAR", v2o3_rhombohedral(), format="vasp")
    cfg = load_config(overrides=[f"structure.file={tmp_path / 'POSCAR'}",
                                 "structure.repeat=[1,1,2]"])
    atoms = build_model(cfg)
    assert atoms.info["region_plane_axes"] == "hexagonal"
    assert atoms.info["region_plane_hkl"] == reference_plane(atoms, 2, 0.5)[0] == [0, 1, -1]
    # A cell that is neither hexagonal nor rhombohedral: the cell's own lattice vectors.
    rocksalt = crystal(["V", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225,
                       cellpar=[4.2, 4.2, 4.2, 90, 90, 90])
    write(tmp_path / "vo.cif", rocksalt)
    atoms = build_model(load_config(overrides=[f"structure.file={tmp_path / 'vo.cif'}"]))
    assert atoms.info["region_plane_axes"] == "cell" and atoms.info["region_plane_hkl"] == [0, 0, 1]
    assert "(0 0 1) of the cell's own lattice vectors" in dry_run(
        load_config(overrides=[f"structure.file={tmp_path / 'vo.cif'}"]), ranks=1)


# ------------------------------------------------------------------ boundary margin


def plane_distance(atoms, position, axis=2):
    n = plane_normal(atoms.cell.array, axis)
    cell = atoms.cell.array
    return min(abs((position - (p + m) * cell[axis]) @ n)
               for p in atoms.info["region_planes"] for m in range(-2, 3))


@pytest.mark.parametrize("repeat, n_o", [((2, 2, 1), 3), ((2, 2, 2), 6)])
def test_paper_o_vacancies_keep_their_boundary_margin(repeat, n_o):
    margin = 2.5  # Å: beyond the crystal's V-O bonds and the 2.3 Å coordination cutoff
    for seed in range(6):
        atoms = split_regions(v2o3_corundum(repeat))
        if seed % 2:  # a disordered melt half, as after a quench
            melt = atoms.get_tags() == MELT
            atoms.positions[melt] += np.random.default_rng(seed).normal(0, 0.3, (melt.sum(), 3))
        _, records = apply_defects(atoms, PAPER_DEFECTIVE_RECIPE, seed=seed)
        o_vacancies = [r for r in records if r.kind == "vacancy" and r.species == ("O",)]
        assert len(o_vacancies) == n_o  # 8 % of the melt half's O
        assert min(plane_distance(atoms, r.position) for r in o_vacancies) >= margin
    assert PAPER_DEFECTIVE_RECIPE[1]["species"] == "O"
    assert PAPER_DEFECTIVE_RECIPE[1]["boundary_distance"] == margin  # a key of the recipe


def test_a_margin_that_leaves_too_few_sites_is_a_clear_error():
    atoms = split_regions(v2o3_corundum((2, 2, 1)))  # melt half 7.0 Å thick
    # O layers at 1.17 and 3.50 Å from the planes: 2.5 Å leaves the middle layer's 12 of 36
    with pytest.raises(UserError, match=r"boundary_distance = 2.5 Å leaves 12 of the 36 O atoms "
                                        r"in the melt region as candidates for 13 vacancies"):
        make_vacancies(atoms, "O", region="melt", count=13, boundary_distance=2.5)
    with pytest.raises(UserError, match=r"the melt region is 7.00 Å thick, so no site is 3.6 Å "
                                        r"from both of its boundary planes"):
        make_vacancies(atoms, "O", region="melt", count=1, boundary_distance=3.6)
    with pytest.raises(UserError, match=r"defects\[0\] \(vacancy\): boundary_distance = 3.6 Å"):
        apply_defects(atoms, [{"kind": "vacancy", "species": "O", "region": "melt", "count": 1,
                               "boundary_distance": 3.6}])


# ------------------------------------------------------------------ final optimisation


def test_defect_sites_are_kept_in_atoms_info(tmp_path):
    atoms = split_regions(v2o3_corundum((2, 2, 1)))
    new, records = apply_defects(atoms, PAPER_DEFECTIVE_RECIPE, seed=3)
    sites = [list(p) for r in records for p in r.positions]
    assert len(sites) == 2 + 3 + 2 * 2
    assert np.allclose(new.info["defect_positions"], sites)
    write(tmp_path / "m.extxyz", new)
    assert np.allclose(read(tmp_path / "m.extxyz").info["defect_positions"], sites)


def model_with_crystal_vacancy():
    atoms = split_regions(v2o3_corundum((1, 1, 2)))  # 60 atoms, halves 14 Å thick
    atoms.set_constraint(atoms.constraints + [FixBondLengths([[31, 32]])])
    new, (record,) = make_vacancies(atoms, "V", region="crystal", count=1,
                                    boundary_distance=5.0, seed=2)
    return new, record.position


def test_relax_mask_frees_what_each_mode_says():
    atoms, site = model_with_crystal_vacancy()
    crystal = atoms.get_tags() == CRYSTAL
    _, d = get_distances([site], atoms.positions, cell=atoms.cell, pbc=True)
    near = d[0] < 4.0
    assert 0 < np.sum(near & crystal) < crystal.sum()
    assert np.array_equal(relax_mask(atoms, "melt"), ~crystal)
    assert np.array_equal(relax_mask(atoms, "melt+defects"), ~crystal | near)
    assert np.array_equal(relax_mask(atoms, "melt+defects", radius=2.2),
                          ~crystal | (d[0] < 2.2))
    assert relax_mask(atoms, "all").all()
    with pytest.raises(UserError, match="melt, melt\\+defects, all"):
        relax_mask(atoms, "crystal")
    # No defect sites: melt+defects is melt.
    perfect = split_regions(v2o3_corundum((1, 1, 2)))
    assert np.array_equal(relax_mask(perfect, "melt+defects"), perfect.get_tags() == MELT)
    # The context manager holds the others, keeps other constraints, restores on exit.
    before = [c.todict() for c in atoms.constraints]
    with pytest.raises(RuntimeError):
        with relax_region(atoms, "melt+defects") as note:
            fixed = np.zeros(len(atoms), bool)
            for c in atoms.constraints:
                if isinstance(c, FixAtoms):
                    fixed[c.get_indices()] = True
            assert np.array_equal(fixed, crystal & ~near)
            assert any(isinstance(c, FixBondLengths) for c in atoms.constraints)
            assert f"{np.sum(~crystal | near)} of 59 atoms move" in note
            assert f"{np.sum(crystal & near)} of them in the crystal half within 4 Å" in note
            raise RuntimeError("interrupted")
    assert [c.todict() for c in atoms.constraints] == before


@pytest.mark.parametrize("mode", ["melt", "melt+defects", "all"])
def test_final_optimisation_moves_the_crystal_only_where_asked(tmp_path, mode):
    atoms, site = model_with_crystal_vacancy()
    atoms.set_constraint([c for c in atoms.constraints if isinstance(c, FixAtoms)])
    settings = load_config(overrides=["calculator.name=pair",
                                      "calculator.dispersion=null"]).calculator
    atoms.calc = make_calculator(settings, directory=tmp_path)
    start = atoms.positions.copy()
    with relax_region(atoms, mode):
        FIRE(atoms, logfile=None).run(fmax=0.05, steps=40)
    moved = np.linalg.norm(atoms.positions - start, axis=1) > 1e-3
    crystal = atoms.get_tags() == CRYSTAL
    _, d = get_distances([site], start, cell=atoms.cell, pbc=True)
    near = d[0] < 4.0
    if mode == "melt":
        assert not moved[crystal].any()
    elif mode == "melt+defects":
        assert moved[crystal & near].sum() >= 4 and not moved[crystal & ~near].any()
    else:
        assert moved[crystal & near].sum() >= 4 and moved[crystal & ~near].any()


def test_relax_region_is_a_documented_option_and_the_paper_presets_relax_everything():
    cfg = load_config()
    assert (cfg.dynamics.relax_region, cfg.dynamics.relax_radius) == ("melt", 4.0)
    for name in PRESETS:
        relax = load_config(preset=name).dynamics.relax_region
        expected = ("all" if name.startswith("paper")
                    else "melt+defects" if "defective" in name else "melt")
        assert relax == expected, name
    assert load_config(overrides=["dynamics.relax_region=melt+defects",
                                  "dynamics.relax_radius=3.5"]).dynamics.relax_radius == 3.5
    with pytest.raises(UserError, match="dynamics.relax_region must be one of melt, "
                                        "melt\\+defects, all, got 'crystal'"):
        load_config(overrides=["dynamics.relax_region=crystal"])
    with pytest.raises(UserError, match="dynamics.relax_radius must be > 0"):
        load_config(overrides=["dynamics.relax_radius=0"])


def test_melt_expansion_gives_the_melt_room_and_keeps_the_crystal():
    from meltquench.config import load_config
    from meltquench.model import build_model
    from meltquench.structures import CRYSTAL, MELT, fixed_mask
    base = build_model(load_config(overrides=["structure.builder=v2o3",
                                              "structure.repeat=[1,1,2]"]))
    grown = build_model(load_config(overrides=["structure.builder=v2o3",
                                               "structure.repeat=[1,1,2]",
                                               "regions.melt_expansion=0.2"]))
    t0, t1 = base.info["region_thickness_A"], grown.info["region_thickness_A"]
    assert t1[0] == pytest.approx(t0[0], abs=1e-9)        # the crystal as it was
    assert t1[1] == pytest.approx(1.2 * t0[1], abs=1e-9)  # the melt 20% thicker
    assert np.array_equal(base.get_tags(), grown.get_tags())
    assert np.array_equal(fixed_mask(grown), grown.get_tags() == CRYSTAL)
    crystal = base.get_tags() == CRYSTAL
    # the crystal's own geometry is unchanged: its interatomic vectors are the same
    d0 = base.positions[crystal] - base.positions[crystal][0]
    d1 = grown.positions[crystal] - grown.positions[crystal][0]
    assert np.abs(d0 - d1).max() < 1e-9
    assert grown.get_volume() == pytest.approx(base.get_volume() * 1.1, rel=1e-9)
    assert (grown.get_tags() == MELT).sum() == (base.get_tags() == MELT).sum()
    with pytest.raises(UserError, match="melt_expansion must lie between 0 and 1"):
        load_config(overrides=["regions.melt_expansion=-0.1"])


def test_melt_fraction_one_makes_an_amorphous_bulk_model():
    """regions.melt_fraction 1: every atom is melt, nothing is fixed, no boundary planes (so
    no interface anywhere downstream); melt_expansion then stretches the whole cell along the
    axis, atoms scaled with it."""
    from meltquench.analysis.regions import atom_region_masks
    from meltquench.structures import fixed_mask, format_region_report
    overrides = ["structure.builder=v2o3", "structure.repeat=[1,1,2]",
                 "regions.melt_fraction=1"]
    bulk = build_model(load_config(overrides=overrides))
    assert (bulk.get_tags() == MELT).all() and not fixed_mask(bulk).any()
    assert not any(key.startswith("region_") for key in bulk.info)
    assert list(atom_region_masks(bulk)) == ["melt"]
    report = format_region_report(bulk)
    assert "crystal: none" in report and f"melt (mobile): {len(bulk)} atoms" in report
    assert "boundary planes:" not in report
    grown = build_model(load_config(overrides=[*overrides, "regions.melt_expansion=0.1"]))
    assert grown.cell[2] == pytest.approx(1.1 * bulk.cell[2], abs=1e-9)
    assert np.abs(grown.get_scaled_positions() - bulk.get_scaled_positions()).max() < 1e-9
    assert grown.get_volume() == pytest.approx(1.1 * bulk.get_volume(), rel=1e-9)
    for bad in ("0", "1.5"):
        with pytest.raises(UserError, match="melt_fraction must lie above 0 and at most 1"):
            load_config(overrides=[f"regions.melt_fraction={bad}"])
    # an earlier split is forgotten: the planes of a half-and-half model go
    half = build_model(load_config(overrides=overrides[:2]))
    assert "region_planes" in half.info
    split_regions(half, melt_fraction=1.0)
    assert "region_planes" not in half.info and (half.get_tags() == MELT).all()


@pytest.mark.parametrize("pbc", [True, (True, True, False)])
def test_min_distance_equals_ase_neighbour_list(pbc):
    """The runaway guard's shortest distance (the engine's cell list) against ASE's neighbour
    list, on a skewed, rattled cell, from all atoms and from a subset of centres."""
    from ase.neighborlist import neighbor_list
    from meltquench.structures import min_distance
    atoms = v2o3_corundum().repeat((2, 1, 1))
    atoms.set_cell(atoms.cell.array + [[0, 0, 0], [0.7, 0, 0], [0.3, -0.4, 0]], scale_atoms=True)
    atoms.pbc = pbc
    atoms.rattle(0.3, seed=4)
    i, d = neighbor_list("id", atoms, 6.0)
    assert min_distance(atoms) == pytest.approx(d.min(), abs=1e-12)
    centres = np.arange(0, len(atoms), 3)
    assert min_distance(atoms, centres) == pytest.approx(d[np.isin(i, centres)].min(), abs=1e-12)
    lone = atoms[:1]
    assert min_distance(lone) == pytest.approx(neighbor_list("d", lone, 6.0).min())  # images
    lone.pbc = False
    assert min_distance(lone) == np.inf
