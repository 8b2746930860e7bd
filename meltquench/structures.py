"""Crystal builders, supercells and the crystal/melt regions of a heterophase model.

Regions travel with the atoms as ASE tags (``atoms.arrays['tags']``), which ASE writes to
``.traj`` and extxyz files alike: :data:`CRYSTAL` (1) marks the fixed half, :data:`MELT` (2)
the mobile half, 0 means "no region". Where the two halves meet is described in
``atoms.info['region_axis']`` (0, 1 or 2: the lattice vector the split runs along) and
``atoms.info['region_planes']`` (the fractional coordinates of the two boundary planes), so
analysis can find the interface band later from any trajectory frame.

Which crystal plane the split cut is said in ``atoms.info`` too (:func:`boundary_geometry`):
``region_plane_hkl`` (its Miller indices), ``region_plane_axes`` ('hexagonal': of the
conventional hexagonal cell in ``atoms.info['conventional_cell']``, which the V2O3 builders
set; 'cell': of the cell's own lattice vectors), ``region_plane_angle_deg`` (between the plane
normal and the split lattice vector), ``region_plane_to_c_deg`` (between the plane normal and
the hexagonal c axis; hexagonal axes only) and ``region_thickness_A`` (crystal and melt half,
measured perpendicular to the planes).
"""
from collections import Counter
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.io import read
from ase.io.formats import UnknownFileTypeError, filetype, ioformats
from ase.lattice import identify_lattice
from ase.spacegroup import crystal

from .errors import UserError
from .kernels.neighbors import neighbor_list as cell_list_neighbours

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

    Every V has 6 O neighbours (1.969 Å x3, 2.052 Å x3) and every O has 4 V. Lattice vector c
    is perpendicular to a and b: a split along c cuts (0 0 1) basal planes.
    """
    atoms = _hexagonal()
    return atoms.repeat(_repeat3(repeat))


def v2o3_rhombohedral(repeat=(1, 1, 1)):
    """Corundum V2O3 in its rhombohedral primitive cell (10 atoms, V4 O6), repeated.

    Its vectors are (2a+b+c)/3, (-a+b+c)/3 and (-a-2b+c)/3 of the hexagonal cell (obverse
    setting), each 41.5 degrees from the plane normal of the other two: a split along any of
    them cuts oblique planes, e.g. along the third the (0 1 -1) planes, whose normal is 73
    degrees from the hexagonal c axis.
    """
    hexagonal = _hexagonal()
    a, b, c = hexagonal.cell
    prim = np.array([(2 * a + b + c) / 3, (-a + b + c) / 3, (-a - 2 * b + c) / 3])
    return _in_cell(hexagonal, prim).repeat(_repeat3(repeat))


def v2o3_basal(repeat=(1, 1, 1)):
    """Corundum V2O3 in a 10-atom cell (V4 O6) whose split along c cuts basal planes, repeated.

    The cell is spanned by the hexagonal a and b and the rhombohedral lattice vector
    (2a+b+c)/3, a third of the hexagonal cell (the shortest lattice vector out of the basal
    plane is c/3 high: the R lattice has no vector along c shorter than c itself). The third
    vector leans 31.5 degrees from c, but the planes a split along it cuts are spanned by a and
    b: (0 0 1) basal planes, as in the 30-atom hexagonal cell. Each repeat along c adds a
    block c/3 = 4.668 Å high of 10 atoms (V4 O6), so repeat (1, 1, 2) gives two
    halves of 10 atoms (V4 O6) each, 4.668 Å thick, between basal planes that cut corundum where
    the hexagonal cell's plane z = 0 does (between the two V of a face-sharing pair).
    """
    hexagonal = _hexagonal()
    a, b, c = hexagonal.cell
    return _in_cell(hexagonal, np.array([a, b, (2 * a + b + c) / 3])).repeat(_repeat3(repeat))


def _hexagonal():
    """One hexagonal cell of corundum V2O3; ``info['conventional_cell']`` is that cell (next to
    the ``spacegroup`` and ``unit_cell`` entries ASE's ``crystal`` leaves)."""
    atoms = crystal(["V", "O"], basis=[(0, 0, V2O3_Z_V), (V2O3_X_O, 0, 0.25)], spacegroup=167,
                    cellpar=[V2O3_A, V2O3_A, V2O3_C, 90, 90, 120])
    atoms.info["conventional_cell"] = atoms.cell.array.tolist()
    return atoms


def _in_cell(atoms, cell):
    """The atoms of ``atoms`` (a periodic crystal) in the smaller cell ``cell`` (rows, Å):
    positions taken modulo the new cell, images of one site kept once, in ``atoms``'s order."""
    frac = atoms.cell.scaled_positions(atoms.positions) @ atoms.cell.array
    scaled = np.linalg.solve(cell.T, frac.T).T % 1.0
    keep, seen = [], []
    for i, s in enumerate(scaled):
        if not any(np.allclose((s - t + 0.5) % 1.0 - 0.5, 0, atol=1e-6) for t in seen):
            seen.append(s)
            keep.append(i)
    new = Atoms(atoms.numbers[keep], scaled_positions=np.array(seen), cell=cell, pbc=True)
    new.info = {"conventional_cell": atoms.info["conventional_cell"]}
    return new


BUILDERS = {"v2o3": v2o3_corundum, "v2o3-rhombohedral": v2o3_rhombohedral,
            "v2o3-basal": v2o3_basal}


def conventional_hexagonal_cell(cell, eps=2e-4):
    """The hexagonal axes (rows, Å) of a hexagonal or rhombohedral lattice, else None.

    ``cell`` is one cell of the lattice (a primitive one for a rhombohedral lattice: a
    supercell of it is not recognised). A hexagonal lattice gives its own a, b, c (lengths a,
    a, c, angles 90, 90, 120); a rhombohedral one r1, r2, r3 (equal lengths and angles) gives
    the obverse hexagonal setting a = r1 - r2, b = r2 - r3, c = r1 + r2 + r3, three times its
    volume. ASE's :func:`ase.lattice.identify_lattice` recognises the lattice (tolerance
    ``eps``); no symmetry of the atoms is looked at.
    """
    try:
        lat, op = identify_lattice(cell, eps=eps)
    except Exception:  # ASE gives up on some degenerate cells: then nothing is known
        return None
    rows = np.asarray(op, float) @ np.asarray(cell, float)
    if lat.name == "HEX":
        return rows
    if lat.name == "RHL":
        r1, r2, r3 = rows
        return np.array([r1 - r2, r2 - r3, r1 + r2 + r3])
    return None


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


#: The ``atoms.info`` keys a region split writes (:func:`split_regions`).
REGION_INFO_KEYS = ("region_axis", "region_planes", "region_plane_hkl", "region_plane_axes",
                    "region_plane_angle_deg", "region_plane_to_c_deg", "region_thickness_A")


def split_regions(atoms, axis=2, melt_fraction=0.5, origin=0.0, fix_crystal=True):
    """Label the atoms of a periodic cell as crystal (fixed) or melt (mobile), in place.

    The cell is cut along lattice vector ``axis`` by fractional coordinate: an atom with
    ``(s - origin) mod 1 < 1 - melt_fraction`` is crystal, the rest is melt. The two
    boundary planes sit at ``origin`` and ``origin + 1 - melt_fraction``; they are spanned by
    the other two lattice vectors, whatever the angle of ``axis`` to them, and
    :func:`boundary_geometry` says which crystal plane that is (stored in ``atoms.info``, see
    the module's documentation). With ``fix_crystal`` the crystal atoms are held by an ASE
    :class:`FixAtoms` constraint, together with any atoms a FixAtoms already held (e.g. from a
    POSCAR's selective dynamics). Returns ``atoms``.

    ``melt_fraction`` 1 melts the whole cell, an amorphous bulk model: every atom is melt, and
    there is no crystal, no boundary plane and no interface (any region information ``atoms``
    carried is removed).
    """
    if axis not in (0, 1, 2):
        raise UserError(f"regions.axis must be 0, 1 or 2 (a, b or c), got {axis!r}")
    if not 0.0 < melt_fraction <= 1.0:
        raise UserError("regions.melt_fraction must lie above 0 and at most 1 (the whole cell), "
                        f"got {melt_fraction}")
    if melt_fraction == 1.0:
        atoms.set_tags(np.full(len(atoms), MELT))
        for key in REGION_INFO_KEYS:
            atoms.info.pop(key, None)
        return atoms
    s = atoms.get_scaled_positions(wrap=False)[:, axis]
    # Rounding guards atoms that sit exactly on a plane against 1e-16 noise.
    u = np.round((s - origin) % 1.0, 10) % 1.0
    crystal_fraction = 1.0 - melt_fraction
    tags = np.where(u < crystal_fraction, CRYSTAL, MELT)
    atoms.set_tags(tags)
    atoms.info["region_axis"] = int(axis)
    atoms.info["region_planes"] = [float(origin % 1.0), float((origin + crystal_fraction) % 1.0)]
    plane = boundary_geometry(atoms)
    atoms.info["region_plane_hkl"] = plane["hkl"]
    atoms.info["region_plane_axes"] = plane["axes"]
    atoms.info["region_plane_angle_deg"] = plane["angle_deg"]
    if plane["normal_to_c_deg"] is not None:
        atoms.info["region_plane_to_c_deg"] = plane["normal_to_c_deg"]
    atoms.info["region_thickness_A"] = [plane["thickness_A"]["crystal"],
                                        plane["thickness_A"]["melt"]]
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


def expand_melt(atoms, expansion, axis=2):
    """Give the melt region of a split model (:func:`split_regions`) room along the split axis,
    in place: the lattice vector of the axis grows so that the melt layer is ``1 + expansion``
    times as thick, the crystal keeps its Cartesian geometry and the melt atoms are spread
    evenly over the thicker layer (their other fractional coordinates kept). The melt's density
    drops by that factor. A model that is all melt (no boundary planes) grows along lattice
    vector ``axis``, its atoms scaled with the cell. The paper kept the crystal's cell; a melt
    held at the crystal's density between two fixed crystal walls can superheat rather than
    melt (see ``docs/analysis-melt.md``). Tags, constraints and the region information are updated;
    returns ``atoms``.
    """
    if not expansion > 0:
        return atoms
    if "region_planes" not in atoms.info:
        cell = atoms.cell.array.copy()
        cell[axis] *= 1.0 + expansion
        atoms.set_cell(cell, scale_atoms=True)
        atoms.info["region_melt_expansion"] = float(expansion)
        return atoms
    axis = int(atoms.info["region_axis"])
    origin, second = atoms.info["region_planes"]
    crystal_fraction = (second - origin) % 1.0
    melt_fraction = 1.0 - crystal_fraction
    tags = atoms.get_tags().copy()
    scaled = atoms.get_scaled_positions(wrap=False)
    u = np.round((scaled[:, axis] - origin) % 1.0, 10) % 1.0
    stretch = 1.0 + expansion * melt_fraction  # the new length of the lattice vector, relative
    melt = tags == MELT
    u[~melt] /= stretch
    u[melt] = (crystal_fraction + (u[melt] - crystal_fraction) * (1.0 + expansion)) / stretch
    scaled[:, axis] = origin + u
    cell = atoms.cell.array.copy()
    cell[axis] *= stretch
    atoms.set_cell(cell, scale_atoms=False)
    atoms.set_scaled_positions(scaled)
    fixed = fixed_mask(atoms)
    others = [c for c in atoms.constraints if not isinstance(c, FixAtoms)]
    atoms.set_constraint(others)
    split_regions(atoms, axis=axis, melt_fraction=melt_fraction * (1.0 + expansion) / stretch,
                  origin=origin, fix_crystal=False)
    if not np.array_equal(atoms.get_tags(), tags):  # an atom on a plane changed sides
        raise UserError("regions.melt_expansion: the regions could not be kept apart; "
                        "choose another regions.origin")
    if fixed.any():
        atoms.set_constraint(others + [FixAtoms(mask=fixed)])
    atoms.info["region_melt_expansion"] = float(expansion)
    return atoms


def boundary_geometry(atoms):
    """Which plane the region split of ``atoms`` cut, and how thick its halves are.

    Needs ``atoms.info['region_axis']`` and ``['region_planes']`` (:func:`split_regions`).
    Returns a dict:

    - ``hkl``: the Miller indices (smallest whole numbers, first non-zero one positive) of
      the boundary planes, the lattice planes spanned by the two lattice vectors other than
      ``region_axis``; None if they are no rational plane of that cell;
    - ``axes``: what ``hkl`` refers to: 'hexagonal' (the conventional hexagonal cell
      ``atoms.info['conventional_cell']``, rows in Å, which the V2O3 builders set and
      :func:`meltquench.model.build_model` sets for a structure file whose cell is hexagonal or
      rhombohedral) or 'cell' (the cell's own lattice vectors: always (1 0 0), (0 1 0) or
      (0 0 1));
    - ``angle_deg``: the angle between the plane normal and lattice vector ``region_axis``
      (0 when that vector is perpendicular to the planes);
    - ``normal_to_c_deg``: with hexagonal axes, the angle between the plane normal and the
      hexagonal c axis (0 for basal planes), else None;
    - ``spacing_A``: the period of the cell perpendicular to the planes (Å);
    - ``thickness_A``: ``{'crystal': ..., 'melt': ...}``, each half's thickness measured
      perpendicular to the planes (Å); they add up to ``spacing_A``.
    """
    axis = int(atoms.info["region_axis"])
    p0, p1 = (float(p) for p in np.asarray(atoms.info["region_planes"], float).ravel())
    cell = atoms.cell.array
    normal = np.linalg.inv(cell)[:, axis]  # reciprocal vector (no 2 pi): normal to the planes
    spacing = 1.0 / np.linalg.norm(normal)
    cos = abs(normal @ cell[axis]) / (np.linalg.norm(normal) * np.linalg.norm(cell[axis]))
    crystal_fraction = (p1 - p0) % 1.0
    conventional = atoms.info.get("conventional_cell")
    to_c = None
    if conventional is not None:
        conventional = np.asarray(conventional, float).reshape(3, 3)
        axes, hkl = "hexagonal", _miller(conventional @ normal)
        c = conventional[2]
        to_c = _angle(abs(normal @ c) / (np.linalg.norm(normal) * np.linalg.norm(c)))
    else:
        axes, hkl = "cell", [int(k == axis) for k in range(3)]
    return {"hkl": hkl, "axes": axes, "angle_deg": _angle(cos), "normal_to_c_deg": to_c,
            "spacing_A": float(spacing),
            "thickness_A": {"crystal": float(crystal_fraction * spacing),
                            "melt": float((1.0 - crystal_fraction) * spacing)}}


def _angle(cos):
    return float(np.degrees(np.arccos(min(max(cos, -1.0), 1.0))))


def _miller(g, max_denominator=24, tol=1e-4):
    """Smallest whole numbers proportional to ``g`` (first non-zero positive), or None."""
    g = np.asarray(g, float)
    scale = np.abs(g).max()
    if scale == 0:
        return None
    g = g / scale
    g[np.abs(g) < tol] = 0.0
    for m in range(1, max_denominator + 1):
        v = g * m
        if np.all(np.abs(v - np.round(v)) < tol * m):
            hkl = np.round(v).astype(int)
            hkl //= np.gcd.reduce(np.abs(hkl))
            if hkl[np.flatnonzero(hkl)[0]] < 0:
                hkl = -hkl
            return [int(k) for k in hkl]
    return None


def boundary_text(atoms):
    """One line on the boundary planes of a split cell, from :func:`boundary_geometry`, e.g.
    ``boundary planes: (0 0 1) of the hexagonal cell ((0 0 0 1), basal), spanned by cell
    vectors a and b; normal 31.5 deg from the split vector c and 0.0 deg from the hexagonal c
    axis; halves 4.668 Å (crystal) and 4.668 Å (melt) thick, perpendicular to the planes``."""
    g = boundary_geometry(atoms)
    axis = int(atoms.info["region_axis"])
    others = " and ".join("abc"[k] for k in range(3) if k != axis)
    if g["hkl"] is None:
        plane = "no rational plane of the hexagonal cell"
    elif g["axes"] == "hexagonal":
        h, k, l = g["hkl"]
        plane = (f"({h} {k} {l}) of the hexagonal cell (({h} {k} {-(h + k)} {l})"
                 + (", basal)" if (h, k) == (0, 0) else ")"))
    else:
        plane = "({} {} {}) of the cell's own lattice vectors".format(*g["hkl"])
    normal = f"normal {g['angle_deg']:.1f} deg from the split vector {'abc'[axis]}"
    if g["normal_to_c_deg"] is not None:
        normal += f" and {g['normal_to_c_deg']:.1f} deg from the hexagonal c axis"
    t = g["thickness_A"]
    return (f"boundary planes: {plane}, spanned by cell vectors {others}; {normal}; halves "
            f"{t['crystal']:.3f} Å (crystal) and {t['melt']:.3f} Å (melt) thick, perpendicular "
            "to the planes")


def layers_along_c(atoms, mask, tolerance_A=0.5):
    """Layer number (0, 1, ...) of each atom of ``mask`` along the cell's c axis (-1 for the
    others), and the number of layers.

    Heights are measured along the normal of the ab plane (fractional c times the layer
    spacing, the cell's volume over the ab area), periodically: atoms within ``tolerance_A``
    (Å) of their neighbour in height are one layer (corundum V2O3 has buckled honeycomb V
    layers 0.35 Å thick, 2.0 Å apart), and the count starts after the largest gap, so that a
    layer cut by the cell boundary stays one layer.
    """
    mask = np.asarray(mask, dtype=bool)
    layer = np.full(len(atoms), -1)
    if not mask.any():
        return layer, 0
    cell = atoms.cell
    spacing = abs(cell.volume) / np.linalg.norm(np.cross(cell[0], cell[1]))
    index = np.flatnonzero(mask)
    z = atoms.get_scaled_positions(wrap=True)[index, 2] % 1.0
    order = np.argsort(z, kind="stable")
    z = z[order]
    gaps = np.diff(np.append(z, z[0] + 1.0)) * spacing  # gap after each atom, wrapping
    start = (int(np.argmax(gaps)) + 1) % len(z)
    numbers = np.zeros(len(z), dtype=int)
    count = 0
    for k in range(1, len(z)):
        i = (start + k) % len(z)
        if gaps[(i - 1) % len(z)] > tolerance_A:
            count += 1
        numbers[i] = count
    layer[index[order]] = numbers
    return layer, count + 1


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
    """One line per region: ``crystal (fixed): 15 atoms  O 9  V 6``; then, for a split cell,
    the line of :func:`boundary_text` (which plane was cut, how thick the halves are)."""
    fixed = fixed_mask(atoms)
    lines = []
    for name, counts in region_report(atoms).items():
        mask = region_mask(atoms, name)
        if not mask.any():
            lines.append(f"{name}: none (regions.melt_fraction 1: the whole cell melts, an "
                         "amorphous bulk model without boundary planes or interface)")
            continue
        state = "fixed" if mask.any() and fixed[mask].all() else "mobile"
        species = "  ".join(f"{s} {n}" for s, n in counts.items())
        lines.append(f"{name} ({state}): {int(mask.sum())} atoms  {species}")
    if "region_axis" in atoms.info and "region_planes" in atoms.info:
        lines.append(boundary_text(atoms))
    return "\n".join(lines)


def min_distance(atoms, centres=None):
    """Shortest interatomic distance (Å), periodic images included, from the atoms of
    ``centres`` (indices; default all) to every atom; inf with no other atom or image within
    6 Å. The engine's cell list (about 25x ASE's neighbour list at 240 atoms: the runaway guard
    calls it every step)."""
    positions, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
    for cutoff in (1.5, 3.0, 6.0):
        d = cell_list_neighbours(positions, cell, pbc, cutoff, centres=centres)[2]
        if len(d):
            return float(d.min())
    return np.inf
