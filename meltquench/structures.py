"""Crystal builders, supercells and the crystal/melt regions of a heterophase model.

Regions travel with the atoms as ASE tags (``atoms.arrays['tags']``), which ASE writes to
``.traj`` and extxyz files alike: :data:`CRYSTAL` (1) marks the fixed half, :data:`MELT` (2)
the mobile half, 0 means "no region". Where the two halves meet is described in
``atoms.info['region_axis']`` (0, 1 or 2: the lattice vector the split runs along) and
``atoms.info['region_planes']`` (the fractional coordinates of the two boundary planes), so
analysis can find the interface band later from any trajectory frame.
"""
from collections import Counter
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.io import read
from ase.io.formats import UnknownFileTypeError, filetype, ioformats
from ase.neighborlist import neighbor_list
from ase.spacegroup import crystal

from .errors import UserError

CRYSTAL = 1
MELT = 2
REGION_NAMES = {CRYSTAL: "crystal", MELT: "melt"}
REGION_CODES = {name: code for code, name in REGION_NAMES.items()}

# Corundum V2O3, room-temperature paramagnetic metal (R-3c, hexagonal setting).
V2O3_A = 4.952  # Å
V2O3_C = 14.003  # Å
V2O3_Z_V = 0.3463
V2O3_X_O = 0.3124


def v2o3_corundum(repeat=(1, 1, 1)):
    """Corundum V2O3 in the hexagonal setting (30 atoms per cell, V12 O18), repeated.

    Every V has 6 O neighbours (1.969 Å x3, 2.052 Å x3) and every O has 4 V.
    """
    atoms = crystal(["V", "O"], basis=[(0, 0, V2O3_Z_V), (V2O3_X_O, 0, 0.25)], spacegroup=167,
                    cellpar=[V2O3_A, V2O3_A, V2O3_C, 90, 90, 120])
    return atoms.repeat(_repeat3(repeat))


def v2o3_rhombohedral(repeat=(1, 1, 1)):
    """Corundum V2O3 in its rhombohedral primitive cell (10 atoms, V4 O6), repeated."""
    hexagonal = v2o3_corundum()
    a, b, c = hexagonal.cell
    # Rhombohedral primitive vectors of an R-centred hexagonal lattice (obverse setting).
    prim = np.array([(2 * a + b + c) / 3, (-a + b + c) / 3, (-a - 2 * b + c) / 3])
    frac = hexagonal.cell.scaled_positions(hexagonal.positions) @ hexagonal.cell.array
    scaled = np.linalg.solve(prim.T, frac.T).T % 1.0
    keep, seen = [], []
    for i, s in enumerate(scaled):
        if not any(np.allclose((s - t + 0.5) % 1.0 - 0.5, 0, atol=1e-6) for t in seen):
            seen.append(s)
            keep.append(i)
    atoms = Atoms(hexagonal.numbers[keep], scaled_positions=np.array(seen), cell=prim, pbc=True)
    return atoms.repeat(_repeat3(repeat))


BUILDERS = {"v2o3": v2o3_corundum, "v2o3-rhombohedral": v2o3_rhombohedral}


def _repeat3(repeat):
    if np.isscalar(repeat):
        repeat = (int(repeat),) * 3
    repeat = tuple(int(r) for r in repeat)
    if len(repeat) != 3 or min(repeat) < 1:
        raise UserError(f"structure.repeat must be three whole numbers >= 1, got {repeat}")
    return repeat


#: What :func:`read_structure` says it expected when a file cannot be read.
EXPECTED_STRUCTURE = "expected a structure file ASE reads (CIF, POSCAR, extxyz, traj)"


def read_structure(path):
    """Read the last image of any structure file ASE can read (CIF, POSCAR, extxyz, traj...).

    A missing, empty or unreadable file is a :class:`UserError` whose one line names the file,
    the reason (ASE's message, or the format ASE tried when its reader gave none) and what was
    expected.
    """
    path = Path(path)
    try:
        empty = path.is_file() and path.stat().st_size == 0
    except OSError:
        empty = False
    if empty:
        raise UserError(f"cannot read structure file {path}: the file is empty; "
                        f"{EXPECTED_STRUCTURE}")
    try:
        atoms = read(str(path))
    except FileNotFoundError:
        raise UserError(f"structure file not found: {path}") from None
    except UnknownFileTypeError:
        raise UserError(f"cannot read structure file {path}: ASE cannot tell its format from "
                        f"the name {path.name!r} or the contents; {EXPECTED_STRUCTURE}") from None
    except Exception as exc:  # ASE raises many types for garbled files, some with no message
        raise UserError(f"cannot read structure file {path}: {_read_failure(path, exc)}; "
                        f"{EXPECTED_STRUCTURE}") from None
    if len(atoms) == 0:
        raise UserError(f"structure file {path} holds no atoms")
    return atoms


def _read_failure(path, exc):
    """Why ASE could not read ``path``, on one line: its message, or the format it tried."""
    reason = " ".join(str(exc).split())
    if reason:
        return f"{reason} ({exc.__class__.__name__})"
    try:
        fmt = filetype(str(path), read=False)
        name = ioformats[fmt].description.replace("-file", " file")  # "CIF-file"
    except Exception:  # no format from the name: say only that ASE's reader failed
        return f"ASE's reader failed ({exc.__class__.__name__}) without saying why"
    return f"not a valid {name} (ASE's {fmt} reader failed: {exc.__class__.__name__})"


def split_regions(atoms, axis=2, melt_fraction=0.5, origin=0.0, fix_crystal=True):
    """Label the atoms of a periodic cell as crystal (fixed) or melt (mobile), in place.

    The cell is cut along lattice vector ``axis`` by fractional coordinate: an atom with
    ``(s - origin) mod 1 < 1 - melt_fraction`` is crystal, the rest is melt. The two
    boundary planes sit at ``origin`` and ``origin + 1 - melt_fraction``. With
    ``fix_crystal`` the crystal atoms are held by an ASE :class:`FixAtoms` constraint, together
    with any atoms a FixAtoms already held (e.g. from a POSCAR's selective dynamics). Returns
    ``atoms``.
    """
    if axis not in (0, 1, 2):
        raise UserError(f"regions.axis must be 0, 1 or 2 (a, b or c), got {axis!r}")
    if not 0.0 < melt_fraction < 1.0:
        raise UserError(f"regions.melt_fraction must lie strictly between 0 and 1, got {melt_fraction}")
    s = atoms.get_scaled_positions(wrap=False)[:, axis]
    # Rounding guards atoms that sit exactly on a plane against 1e-16 noise.
    u = np.round((s - origin) % 1.0, 10) % 1.0
    crystal_fraction = 1.0 - melt_fraction
    tags = np.where(u < crystal_fraction, CRYSTAL, MELT)
    atoms.set_tags(tags)
    atoms.info["region_axis"] = int(axis)
    atoms.info["region_planes"] = [float(origin % 1.0), float((origin + crystal_fraction) % 1.0)]
    for code, name in REGION_NAMES.items():
        if not np.any(tags == code):
            raise UserError(f"the {name} region has no atoms: with {len(atoms)} atoms along axis "
                            f"{axis}, choose another regions.melt_fraction or a larger "
                            "structure.repeat")
    if fix_crystal:
        fixed = fixed_mask(atoms) | (tags == CRYSTAL)
        others = [c for c in atoms.constraints if not isinstance(c, FixAtoms)]
        atoms.set_constraint(others + [FixAtoms(mask=fixed)])
    return atoms


def region_mask(atoms, name):
    """Boolean mask of the atoms in region ``name`` ('crystal', 'melt' or 'all')."""
    if name == "all":
        return np.ones(len(atoms), bool)
    return atoms.get_tags() == REGION_CODES[name]


def fixed_mask(atoms):
    """Boolean mask of the atoms held by FixAtoms constraints."""
    mask = np.zeros(len(atoms), bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            mask[c.get_indices()] = True
    return mask


def region_report(atoms):
    """Counts per species per region, e.g. ``{'crystal': {'O': 18, 'V': 12}, ...}``."""
    tags = atoms.get_tags()
    symbols = np.array(atoms.get_chemical_symbols())
    report = {}
    for code, name in REGION_NAMES.items():
        report[name] = dict(sorted(Counter(symbols[tags == code]).items()))
    return report


def format_region_report(atoms):
    """One line per region: ``crystal (fixed): 15 atoms  O 9  V 6``."""
    fixed = fixed_mask(atoms)
    lines = []
    for name, counts in region_report(atoms).items():
        mask = region_mask(atoms, name)
        state = "fixed" if mask.any() and fixed[mask].all() else "mobile"
        species = "  ".join(f"{s} {n}" for s, n in counts.items())
        lines.append(f"{name} ({state}): {int(mask.sum())} atoms  {species}")
    return "\n".join(lines)


def min_distance(atoms):
    """Shortest interatomic distance (Å), periodic images included; inf for a lone atom."""
    for cutoff in (1.5, 3.0, 6.0):
        d = neighbor_list("d", atoms, cutoff)
        if len(d):
            return float(d.min())
    return np.inf
