"""The starting model of a run: crystal (builder or file), supercell, regions and defects.

:func:`build_model` turns the ``structure`` and ``regions`` sections of a configuration into
ASE :class:`~ase.Atoms` with the crystal/melt labels of :mod:`meltquench.structures` and, when
asked, the point defects of :mod:`meltquench.defects`.
"""
from .defects import PAPER_DEFECTIVE_RECIPE, apply_defects, composition_report, format_composition
from .errors import UserError
from .structures import BUILDERS, fixed_mask, min_distance, read_structure, split_regions

#: Closest approach (Å) of two atoms that a model may have; closer means a broken structure.
MIN_DISTANCE_A = 0.5


def build_model(cfg):
    """The starting model of ``cfg``: crystal, supercell, regions, defects made before the melt."""
    st = cfg.structure
    if st.file:
        atoms = read_structure(st.file)
        atoms = atoms.repeat(st.repeat) if tuple(st.repeat) != (1, 1, 1) else atoms
    else:
        atoms = BUILDERS[st.builder](st.repeat)
    if not atoms.pbc[cfg.regions.axis]:
        raise UserError(f"the structure is not periodic along axis {cfg.regions.axis}: "
                        "the crystal/melt split needs a periodic cell")
    split_regions(atoms, axis=cfg.regions.axis, melt_fraction=cfg.regions.melt_fraction,
                  origin=cfg.regions.origin, fix_crystal=cfg.regions.fix_crystal)
    if st.defects and st.defect_stage == "before-melt":
        atoms = apply_defect_recipe(atoms, st.defects, st.seed)
    check_model(atoms)
    return atoms


def apply_defect_recipe(atoms, recipe, seed):
    """``atoms`` with the defects of ``recipe`` (a list, or 'paper' for the paper's model)."""
    if recipe == "paper":
        recipe = PAPER_DEFECTIVE_RECIPE
    atoms, _records = apply_defects(atoms, recipe, seed=seed)
    return atoms


def composition_text(atoms):
    """The composition per region, as :func:`meltquench.defects.format_composition` gives it."""
    return format_composition(composition_report(atoms))


def check_model(atoms):
    """Refuse a model the dynamics cannot run: overlapping atoms, nothing mobile."""
    dmin = min_distance(atoms)
    if dmin < MIN_DISTANCE_A:
        raise UserError(f"atoms closer than {MIN_DISTANCE_A} Å ({dmin:.3f} Å): check the structure "
                        "file, its cell and units")
    if fixed_mask(atoms).all():
        raise UserError("all atoms are fixed: nothing can melt (check regions.melt_fraction and "
                        "any FixAtoms in the structure file)")
