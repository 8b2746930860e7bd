"""Regions of a heterophase model: which atoms an analysis reports on.

The regions are those of :mod:`meltquench.structures`: ``crystal`` (tag 1), ``melt`` (tag 2),
``interface`` (atoms within ``interface_width`` Å, measured perpendicular to the planes, of
either boundary plane given by ``atoms.info['region_axis']`` and ``['region_planes']``) and
``all``. Every atom falls in one of six groups, ``2 * (0 untagged, 1 crystal, 2 melt) + (1 if
in the interface band)``, so one pass over the frames fills every region at once: a region is
a set of groups (:data:`REGION_GROUPS`).
"""
import numpy as np

from ..errors import UserError
from ..kernels.neighbors import plane_spacings
from ..structures import CRYSTAL, MELT

REGIONS = ("all", "crystal", "melt", "interface")
N_GROUPS = 6
REGION_GROUPS = {"all": [0, 1, 2, 3, 4, 5], "crystal": [2, 3], "melt": [4, 5],
                 "interface": [1, 3, 5]}


def interface_mask(atoms, width):
    """Atoms within ``width`` Å (perpendicular, periodic along the axis) of a boundary plane."""
    axis = int(atoms.info["region_axis"])
    planes = np.asarray(atoms.info["region_planes"], float).ravel()
    cell = atoms.cell.array
    spacing = plane_spacings(cell)[axis]
    s = np.linalg.solve(cell.T, atoms.positions.T).T[:, axis]
    mask = np.zeros(len(atoms), bool)
    for p in planes:
        delta = s - p
        if atoms.pbc[axis]:
            delta -= np.round(delta)
        mask |= np.abs(delta) * spacing <= width
    return mask


def atom_region_masks(atoms, width=3.0):
    """{region: boolean mask of its atoms} for the regions ``atoms`` can give: ``crystal`` and
    ``melt`` from the tags, ``interface`` (within ``width`` Å of a boundary plane) where the
    planes are in ``atoms.info``; a region without atoms is left out (an amorphous bulk model
    has only ``melt``); empty for a structure without crystal/melt tags."""
    tags = atoms.get_tags()
    masks = {}
    if not np.any((tags == CRYSTAL) | (tags == MELT)):
        return masks
    masks["crystal"], masks["melt"] = tags == CRYSTAL, tags == MELT
    if "region_axis" in atoms.info and "region_planes" in atoms.info:
        masks["interface"] = interface_mask(atoms, width)
    return {name: mask for name, mask in masks.items() if mask.any()}


class Regions:
    """The regions asked for, and (after :meth:`resolve`) those the frames can give.

    names: from :data:`REGIONS` (a string or a sequence); interface_width in Å. After
    ``resolve(first_frame)``: ``used`` (the regions reported, in the order asked), ``notes``
    (why any were left out).
    """

    def __init__(self, names=REGIONS, interface_width=3.0):
        if isinstance(names, str):
            names = [names]
        for name in names:
            if name not in REGIONS:
                raise UserError(f"unknown region {name!r}: choose from {', '.join(REGIONS)}")
        self.names = list(dict.fromkeys(names))
        self.width = interface_width
        self.used = None
        self.notes = []
        self._tags = False
        self._interface = False

    def resolve(self, atoms):
        """Decide from the first analysed frame which regions it can give."""
        tags = atoms.get_tags()
        self._tags = bool(np.any((tags == CRYSTAL) | (tags == MELT)))
        bulk = self._tags and not np.any(tags == CRYSTAL)  # all melt: an amorphous bulk model
        has_planes = "region_axis" in atoms.info and "region_planes" in atoms.info
        self._interface = self._tags and has_planes and "interface" in self.names
        used, untagged, no_planes, no_crystal = [], [], [], []
        for name in self.names:
            if name in ("crystal", "melt", "interface") and not self._tags:
                untagged.append(name)
            elif name in ("crystal", "interface") and bulk:
                no_crystal.append(name)
            elif name == "interface" and not self._interface:
                no_planes.append(name)
            else:
                used.append(name)
        self.notes = []
        if untagged:
            self.notes.append("no crystal/melt tags in the frames: only region 'all' (left "
                              f"out: {', '.join(untagged)})")
        if no_crystal:
            self.notes.append("every atom is melt (regions.melt_fraction 1, an amorphous bulk "
                              f"model): no {' and no '.join(no_crystal)} region")
        if no_planes:
            self.notes.append("no atoms.info['region_axis'] and ['region_planes'] in the "
                              "frames: region 'interface' left out")
        self.used = used or ["all"]
        return self

    def groups(self, atoms, k):
        """Group (0 to 5) of every atom of frame ``k``."""
        groups = np.zeros(len(atoms), np.int64)
        if self._tags:
            tags = atoms.get_tags()
            groups[tags == CRYSTAL] = 2
            groups[tags == MELT] = 4
        if self._interface:
            if "region_axis" not in atoms.info or "region_planes" not in atoms.info:
                raise UserError(f"frame {k} lacks atoms.info['region_axis'/'region_planes'] "
                                "that the first frame has")
            groups += interface_mask(atoms, self.width)
        return groups

    def __eq__(self, other):
        return (isinstance(other, Regions) and self.names == other.names
                and self.width == other.width)
