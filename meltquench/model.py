"""The starting model of a run: crystal (builder or file), supercell, regions and defects.

:func:`build_model` turns the ``structure`` and ``regions`` sections of a configuration into
ASE :class:`~ase.Atoms` with the crystal/melt labels of :mod:`meltquench.structures` and, when
asked, the point defects of :mod:`meltquench.defects`. :func:`relax_mask` and
:func:`relax_region` say which atoms the final optimisation moves (``dynamics.relax_region``).
"""
from contextlib import contextmanager

import numpy as np
from ase.constraints import FixAtoms
from ase.geometry import get_distances

from .defects import PAPER_DEFECTIVE_RECIPE, apply_defects, composition_report, format_composition
from .errors import UserError
from .structures import (BUILDERS, CRYSTAL, conventional_hexagonal_cell, expand_melt,
                         fixed_mask, min_distance, read_structure, split_regions)

#: Closest approach (Å) of two atoms that a model may have; closer means a broken structure.
MIN_DISTANCE_A = 0.5

#: What ``dynamics.relax_region`` may be: the atoms the final optimisation moves.
RELAX_REGIONS = ("melt", "melt+defects", "all")
#: Å: with ``relax_region: melt+defects``, crystal atoms closer than this to a defect site move.
#: It takes in the first O shell of a V site (1.97-2.05 Å) and the nearest V shells (2.70-3.47 Å)
#: of corundum V2O3, so the octahedra around a V vacancy and its V neighbours relax.
DEFAULT_RELAX_RADIUS_A = 4.0


def build_model(cfg):
    """The starting model of ``cfg``: crystal, supercell, regions, defects made before the melt."""
    st = cfg.structure
    if st.file:
        atoms = read_structure(st.file)
        note_conventional_cell(atoms)
        atoms = atoms.repeat(st.repeat) if tuple(st.repeat) != (1, 1, 1) else atoms
    else:
        atoms = BUILDERS[st.builder](st.repeat)
    if not atoms.pbc[cfg.regions.axis]:
        raise UserError(f"the structure is not periodic along axis {cfg.regions.axis}: "
                        "the crystal/melt split needs a periodic cell")
    split_regions(atoms, axis=cfg.regions.axis, melt_fraction=cfg.regions.melt_fraction,
                  origin=cfg.regions.origin, fix_crystal=cfg.regions.fix_crystal)
    expand_melt(atoms, cfg.regions.melt_expansion, axis=cfg.regions.axis)
    if st.defects and st.defect_stage == "before-melt":
        atoms = apply_defect_recipe(atoms, st.defects, st.seed)
    check_model(atoms)
    return atoms


def note_conventional_cell(atoms):
    """Give a structure read from a file the hexagonal axes its boundary plane is named in.

    If ``atoms.info`` has no ``conventional_cell`` and the (unrepeated) cell is hexagonal or
    rhombohedral (:func:`meltquench.structures.conventional_hexagonal_cell`), its hexagonal
    axes are stored there; otherwise the plane is named in the cell's own lattice vectors.
    """
    if "conventional_cell" in atoms.info or not atoms.pbc.all() or atoms.cell.rank < 3:
        return atoms
    hexagonal = conventional_hexagonal_cell(atoms.cell)
    if hexagonal is not None:
        atoms.info["conventional_cell"] = hexagonal.tolist()
    return atoms


def apply_defect_recipe(atoms, recipe, seed):
    """``atoms`` with the defects of ``recipe`` (a list, or 'paper' for the paper's model).

    The defect sites are in ``atoms.info['defect_positions']`` (see :mod:`meltquench.defects`).
    """
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


# ---------------------------------------------------------------------------------------------
# The final optimisation


def relax_mask(atoms, region="melt", radius=DEFAULT_RELAX_RADIUS_A):
    """Boolean mask of the atoms the final optimisation moves (``dynamics.relax_region``).

    - 'melt': the atoms the MD moved (those no FixAtoms holds): the crystal half stays as
      built, its defects unrelaxed;
    - 'melt+defects': those, and every atom within ``radius`` (Å, minimum image) of a defect
      site in ``atoms.info['defect_positions']`` (vacancy sites, antisite sites; no defects,
      no extra atoms). Sites of defects made before the melt are where they were made: right
      for the fixed crystal half, stale in the melt half, which moves anyway;
    - 'all': every atom.
    """
    if region not in RELAX_REGIONS:
        raise UserError(f"dynamics.relax_region must be one of {', '.join(RELAX_REGIONS)}, got "
                        f"{region!r}")
    if region == "all":
        return np.ones(len(atoms), bool)
    mobile = ~fixed_mask(atoms)
    if region == "melt":
        return mobile
    if not radius > 0:
        raise UserError(f"dynamics.relax_radius must be a distance > 0 (Å), got {radius!r}")
    sites = np.asarray(atoms.info.get("defect_positions", []), float).reshape(-1, 3)
    if len(sites) == 0 or len(atoms) == 0:
        return mobile
    _, d = get_distances(sites, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    return mobile | (d < radius).any(axis=0)


@contextmanager
def relax_region(atoms, region="melt", radius=DEFAULT_RELAX_RADIUS_A,
                 label="final optimisation"):
    """Hold the atoms :func:`relax_mask` leaves out, for the final optimisation; yields a line
    saying what moves, under ``label`` (which optimisation this is). On exit (also on an
    exception) the constraints are the ones before.

    Other constraints than FixAtoms are kept. With 'all' no FixAtoms is left, not even one a
    structure file brought.
    """
    kept = list(atoms.constraints)
    mobile = relax_mask(atoms, region, radius)
    others = [c for c in kept if not isinstance(c, FixAtoms)]
    atoms.set_constraint(others + ([FixAtoms(mask=~mobile)] if not mobile.all() else []))
    try:
        yield relax_text(atoms, mobile, region, radius, label)
    finally:
        atoms.set_constraint(kept)


def relax_text(atoms, mobile, region, radius, label="final optimisation"):
    """``final optimisation (relax_region melt+defects): 38 of 58 atoms move, 8 of them in the
    crystal half within 4 Å of the 5 defect sites``."""
    n_crystal = int((mobile & (atoms.get_tags() == CRYSTAL)).sum())
    text = f"{label} (relax_region {region}): {int(mobile.sum())} of {len(atoms)} atoms move"
    if region == "melt+defects":
        n_sites = len(np.asarray(atoms.info.get("defect_positions", []), float).reshape(-1, 3))
        text += (f", {n_crystal} of them in the crystal half within {radius:g} Å of the "
                 f"{n_sites} defect sites")
    elif region == "all":
        text += f", the crystal half ({n_crystal}) too"
    return text
