"""Point defects in heterophase models: vacancies, antisites, recipes and the composition they give.

Every function takes an :class:`ase.Atoms` and returns a new one (the input is never modified)
together with a list of :class:`DefectRecord`. Atoms keep their region tags (1 = crystal,
2 = melt, see :mod:`meltquench.structures`), ``atoms.info`` (``region_axis``,
``region_planes``) and their constraints: after a vacancy the constraints are re-indexed by
ASE's own ``index_shuffle`` (a FixAtoms loses the deleted atoms and keeps the others).

Choices are drawn from ``numpy.random.default_rng(seed)``: the result is a pure function of
the atoms, the arguments and the seed, so every MPI rank that calls a function with the same
input gets the same defects (nothing is communicated). Sites are picked by random sequential
selection: candidates in a random order, each accepted if it is at least ``min_distance`` (Å,
minimum image) from the defects accepted before; with ``min_distance > 0`` up to
:data:`PLACEMENT_ATTEMPTS` orders are tried before giving up.

Counts: ``count`` is a number of defects; ``fraction`` is rounded to the nearest whole number
(halves up) of ``fraction x N``, where N counts the atoms of the species in the whole region
(before the ``boundary_distance`` filter): the removed species for vacancies, the cation
(``species[0]``) for swaps, the host species (``species[1]``) for substitutions. A positive
fraction that rounds to zero is an error (ask for a count or a larger cell instead).

Species-bound arrays (``numbers``, ``masses``, ``initial_magmoms``, ``initial_charges``) follow
the species in an antisite; everything else is bound to the site: position, tag, constraint
and velocity (momenta are rescaled so each site keeps its velocity).

Every function appends the Cartesian positions (Å) of the sites it made (a vacancy's empty
site, both sites of a swap) to ``atoms.info['defect_positions']`` of the atoms it returns, so
the final optimisation can free the crystal atoms around them
(:func:`meltquench.model.relax_mask`, ``dynamics.relax_region: melt+defects``).

Boundary margin: ``boundary_distance`` (Å) keeps a defect's sites at least that far from both
region boundary planes (:func:`distance_to_boundaries`, measured perpendicular to the planes);
0 (the default of the functions) allows any site. If the margin leaves fewer candidate sites
than defects, the error says so and how thick the region is.
"""
import copy
import difflib
import numbers
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
from ase.data import atomic_masses, atomic_numbers, chemical_symbols
from ase.formula import Formula
from ase.geometry import get_distances
from ase.neighborlist import neighbor_list

from .errors import UserError
from .kernels.neighbors import plane_spacings
from .structures import REGION_CODES, REGION_NAMES

REGIONS = ("crystal", "melt", "all")
MODES = ("swap", "substitute")
KINDS = ("vacancy", "antisite")
#: Å: a swap exchanges a cation with an anion at most this far away. It lies between the first
#: (1.97-2.05 Å) and second (3.40 Å) V-O shells of corundum V2O3 and above the first cation-O
#: shell of most oxides (Al2O3 1.86-1.97 Å, SnO2 2.05 Å, amorphous V2O3 up to ~2.6 Å).
DEFAULT_PAIR_CUTOFF = 3.0
#: random orders tried when placing defects with a minimum distance between them.
PLACEMENT_ATTEMPTS = 50

#: anion precedence (roughly by electronegativity): of two species, the one listed first is
#: the anion X of M_a X_b; if neither is listed, ASE's 'metal' formula order decides.
_ANIONS = ("F", "O", "Cl", "N", "Br", "I", "S", "Se", "C", "Te", "P", "As", "H")

_SPECIES_ARRAYS = ("numbers", "masses", "initial_magmoms", "initial_charges")

_RECIPE_KEYS = {
    "vacancy": ("kind", "species", "region", "count", "fraction", "min_distance",
                "boundary_distance"),
    "antisite": ("kind", "species", "region", "count", "fraction", "mode", "min_distance",
                 "boundary_distance", "pair_cutoff"),
}

#: Å: the boundary margin of the O vacancies of :data:`PAPER_DEFECTIVE_RECIPE` (see there).
PAPER_O_VACANCY_MARGIN = 2.5

#: The paper's defective heterophase (Osman et al., Adv. Sci. 2022, Fig. 4b) as a recipe:
#: C-V(2-x)O3 in the crystal half, A-V2O(3-x) with antisites in the melt (amorphous) half.
#: The paper gives no numbers; the fractions below are ours, chosen so that a 120-atom
#: (2x2x1 hexagonal, regions split along c) or 240-atom (2x2x2) V2O3 supercell gets a few
#: isolated defects of each kind:
#:
#: - V vacancies: 8 % of the crystal-half V (2 of 24 at 120 atoms, 4 of 48 at 240), so the
#:   crystal half is V22O36 = V(2-x)O3 with x = 0.17; at least 4 Å apart (beyond the first three
#:   V-V shells, 2.70-3.47 Å: no divacancies) and 1.0 Å inside the crystal half, off the
#:   interface layer (the V 0.18 Å from the boundary plane in the hexagonal cell) that melt
#:   atoms could fill;
#: - O vacancies: 8 % of the melt-half O (3 of 36, 6 of 72), so the amorphous half is
#:   V24O33 = V2O(3-x) with x = 0.25; at least 3 Å apart (beyond the O-O first shell) and
#:   :data:`PAPER_O_VACANCY_MARGIN` = 2.5 Å from the boundary planes. Crystal atoms lie on the
#:   other side of a plane, so such a vacancy is at least 2.5 Å from every crystal atom: beyond
#:   the crystal's V-O bonds (1.97-2.05 Å) and the 2.3 Å V-O coordination cutoff, it takes no O
#:   from a crystal V and is a defect of the amorphous half, not of the interface. Without the
#:   margin the O layers 1.17 Å from the planes (a third of the melt-half O at 240 atoms) were
#:   candidates too, and in one seed 3 of 6 O vacancies landed there;
#: - antisites: V<->O swaps of neighbouring sites for 8 % of the melt-half V (2 pairs of 24,
#:   4 of 48), composition unchanged, at least 3 Å from each other and from the O vacancies;
#:   no boundary margin (with 2.5 Å the swaps of the 120-atom model could be placed in only
#:   1 seed of 40).
#:
#: The whole cell stays V2O3 on average (V46O69 at 120 atoms): the x are per region.
#: The recipe can be applied before the melt or after the quench; swaps made before a 4000 K
#: melt are scrambled by it, so apply the recipe after the quench (then relax) to keep them as
#: defined. Copy the list before changing it.
PAPER_DEFECTIVE_RECIPE = [
    {"kind": "vacancy", "species": "V", "region": "crystal", "fraction": 0.08,
     "min_distance": 4.0, "boundary_distance": 1.0},
    {"kind": "vacancy", "species": "O", "region": "melt", "fraction": 0.08,
     "min_distance": 3.0, "boundary_distance": PAPER_O_VACANCY_MARGIN},
    {"kind": "antisite", "mode": "swap", "species": ["V", "O"], "region": "melt",
     "fraction": 0.08, "min_distance": 3.0},
]


@dataclass(frozen=True)
class DefectRecord:
    """One point defect.

    ``kind`` is 'vacancy' or 'antisite' (``mode`` 'swap' or 'substitute'); ``indices`` are the
    sites in the atoms the caller passed (for :func:`apply_defects`, its input), ``species``
    what sat on them before and ``new_species`` after (``()`` for a vacancy); ``positions``
    the sites' Cartesian positions in Å; ``region`` the region name of the first site
    ('crystal', 'melt' or 'none'); ``step`` the recipe entry that made it.
    """

    kind: str
    species: tuple
    region: str
    indices: tuple
    positions: tuple
    mode: str = None
    new_species: tuple = ()
    step: int = 0

    @property
    def index(self):
        """Index of the first site."""
        return self.indices[0]

    @property
    def position(self):
        """Position of the first site (Å), as an array."""
        return np.array(self.positions[0])

    def as_dict(self):
        """Plain dict of lists, numbers and strings (for JSON/YAML logs)."""
        d = asdict(self)
        for key in ("species", "indices", "new_species"):
            d[key] = list(d[key])
        d["positions"] = [list(p) for p in self.positions]
        return d


# ---------------------------------------------------------------------------------------------
# Public functions


def make_vacancies(atoms, species, *, region="crystal", count=None, fraction=None, seed=0,
                   min_distance=0.0, boundary_distance=0.0, avoid=None):
    """Remove ``count`` (or ``fraction`` of the) atoms of ``species`` from ``region``.

    ``region`` is 'crystal', 'melt' or 'all'; ``min_distance`` (Å) is kept between removed
    sites and from the positions ``avoid`` (Å, earlier defects); ``boundary_distance`` (Å) is
    the smallest distance of a removed site from the region boundary planes. Returns
    ``(new_atoms, records)``, records sorted by index.
    """
    rng = _rng(seed)
    species = _species(atoms, species, present=True, what="vacancy species")
    mask = _region_mask(atoms, region)
    symbols = np.array(atoms.get_chemical_symbols())
    of_species = mask & (symbols == species)
    n_total = int(of_species.sum())
    where = f"{species} atoms in the {_region_text(region)}"
    n = _resolve_count(count, fraction, n_total, where)
    min_distance = _length(min_distance, "min_distance")
    boundary_distance = _length(boundary_distance, "boundary_distance")
    new = _copy(atoms)
    if n == 0:
        return new, []
    if n >= len(atoms):
        raise UserError(f"cannot remove all {len(atoms)} atoms of the cell")
    eligible = of_species & _far_from_boundaries(atoms, boundary_distance)
    _check_margin(atoms, region, n, "vacancies", int(eligible.sum()), n_total, where,
                  boundary_distance)
    chosen = _pick_sites(rng, atoms, np.flatnonzero(eligible), n, min_distance, avoid)
    if len(chosen) < n:
        raise UserError(_shortfall("vacancies", n, len(chosen), where, n_total,
                                   int(eligible.sum()), min_distance, boundary_distance))
    chosen = np.sort(chosen)
    records = [DefectRecord("vacancy", (species,), _site_region(atoms, i), (int(i),),
                            (tuple(float(x) for x in atoms.positions[i]),)) for i in chosen]
    keep = np.ones(len(atoms), bool)
    keep[chosen] = False
    _note_sites(new, records)
    return _delete(new, keep), records


def make_antisites(atoms, *, region="melt", count=None, fraction=None, mode="swap",
                   species=("V", "O"), seed=0, min_distance=0.0, boundary_distance=0.0,
                   pair_cutoff=DEFAULT_PAIR_CUTOFF, avoid=None):
    """Antisite defects in ``region``: ``species = (cation, anion)``.

    ``mode='swap'`` exchanges a cation with an anion of the same region at most
    ``pair_cutoff`` (Å) away (chosen at random among those); the composition is unchanged.
    ``mode='substitute'`` puts ``species[0]`` (which need not be in the cell yet: a dopant)
    on ``species[1]`` sites. ``min_distance`` (Å) is kept between the sites of different
    defects and from ``avoid`` (Å); ``boundary_distance`` (Å) from the region boundary
    planes. Positions are unchanged. Returns ``(new_atoms, records)``.
    """
    rng = _rng(seed)
    mode = _choice(mode, MODES, "antisite mode")
    if isinstance(species, str) or not hasattr(species, "__len__") or len(species) != 2:
        raise UserError(f"antisite species must be a pair [cation, anion] such as ['V', 'O'], "
                        f"got {species!r}")
    if mode == "swap":
        first = _species(atoms, species[0], present=True, what="antisite species[0]")
    else:
        first = _species(atoms, species[0], present=False, what="antisite species[0]")
    second = _species(atoms, species[1], present=True, what="antisite species[1]")
    if first == second:
        raise UserError(f"antisite species must be two different elements, got {first} twice")
    mask = _region_mask(atoms, region)
    symbols = np.array(atoms.get_chemical_symbols())
    counted = first if mode == "swap" else second
    n_total = int((mask & (symbols == counted)).sum())
    where = f"{counted} atoms in the {_region_text(region)}"
    n = _resolve_count(count, fraction, n_total, where)
    min_distance = _length(min_distance, "min_distance")
    boundary_distance = _length(boundary_distance, "boundary_distance")
    pair_cutoff = _length(pair_cutoff, "pair_cutoff", positive=True)
    new = _copy(atoms)
    if n == 0:
        return new, []
    far = _far_from_boundaries(atoms, boundary_distance)
    velocities = atoms.get_velocities() if "momenta" in atoms.arrays else None
    if mode == "substitute":
        eligible = mask & (symbols == second) & far
        _check_margin(atoms, region, n, "substitutions", int(eligible.sum()), n_total, where,
                      boundary_distance)
        chosen = np.sort(_pick_sites(rng, atoms, np.flatnonzero(eligible), n, min_distance,
                                     avoid))
        if len(chosen) < n:
            raise UserError(_shortfall("substitutions", n, len(chosen), where, n_total,
                                       int(eligible.sum()), min_distance, boundary_distance))
        z = atomic_numbers[first]
        for name in _SPECIES_ARRAYS:
            if name in new.arrays:
                new.arrays[name][chosen] = _species_value(atoms, name, first, z)
        records = [DefectRecord("antisite", (second,), _site_region(atoms, i), (int(i),),
                                (tuple(float(x) for x in atoms.positions[i]),),
                                mode="substitute", new_species=(first,)) for i in chosen]
    else:
        cations = np.flatnonzero(mask & (symbols == first) & far)
        anions = mask & (symbols == second) & far
        _check_margin(atoms, region, n, "swaps", len(cations), n_total, where,
                      boundary_distance)
        pairs = _pick_pairs(rng, atoms, cations, anions, n, min_distance, pair_cutoff, avoid)
        if len(pairs) < n:
            raise UserError(
                _shortfall("swaps", n, len(pairs), where, n_total, len(cations), min_distance,
                           boundary_distance)
                + f"; a swap needs a {second} of the same region within pair_cutoff = "
                f"{pair_cutoff:g} Å")
        pairs = sorted(pairs)
        for i, j in pairs:
            for name in _SPECIES_ARRAYS:
                if name in new.arrays:
                    a = new.arrays[name]
                    a[[i, j]] = a[[j, i]]
        records = [DefectRecord("antisite", (first, second), _site_region(atoms, i),
                                (int(i), int(j)),
                                tuple(tuple(float(x) for x in atoms.positions[k]) for k in (i, j)),
                                mode="swap", new_species=(second, first)) for i, j in pairs]
    if velocities is not None:
        new.set_momenta(new.get_masses()[:, None] * velocities, apply_constraint=False)
    _note_sites(new, records)
    return new, records


def apply_defects(atoms, recipe, seed=0):
    """Apply a recipe (list of dicts, as read from YAML) in order; return ``(new_atoms, records)``.

    Entries: ``{'kind': 'vacancy', 'species': 'V', 'region': 'crystal', 'fraction': 0.08}``,
    ``{'kind': 'antisite', 'mode': 'swap', 'species': ['V', 'O'], 'region': 'melt',
    'count': 1}``; the other keys are the keyword arguments of :func:`make_vacancies` and
    :func:`make_antisites` (``min_distance``, ``boundary_distance`` in Å, ``pair_cutoff`` in Å).
    Entry k draws from its own stream ``SeedSequence(seed).spawn(...)[k]``, so adding an entry
    at the end does not change the earlier ones. ``min_distance`` of an entry is also kept from
    the defects of the earlier entries. Record indices refer to ``atoms`` (the input); each
    record's ``step`` is its entry number.
    """
    steps = _validate_recipe(recipe)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise UserError(f"defects seed must be a whole number >= 0, got {seed!r}")
    streams = np.random.SeedSequence(int(seed)).spawn(len(steps))
    current = _copy(atoms)
    original = np.arange(len(atoms))  # index in the input of each atom of `current`
    records = []
    for k, (kind, kwargs) in enumerate(steps):
        avoid = [p for r in records for p in r.positions]
        func = make_vacancies if kind == "vacancy" else make_antisites
        try:
            current, new_records = func(current, seed=np.random.default_rng(streams[k]),
                                        avoid=avoid, **kwargs)
        except UserError as exc:
            raise UserError(f"defects[{k}] ({kind}): {exc}") from None
        removed = [r.index for r in new_records if r.kind == "vacancy"]
        for r in new_records:
            records.append(DefectRecord(r.kind, r.species, r.region,
                                        tuple(int(original[i]) for i in r.indices), r.positions,
                                        r.mode, r.new_species, k))
        if removed:
            original = np.delete(original, removed)
    return current, records


def composition_report(atoms, reference_ratio=None):
    """Composition per region and overall, with the x of a non-stoichiometric binary compound.

    Returns ``{'reference': 'V2O3', 'reference_source': ..., 'all': entry, 'crystal': entry,
    'melt': entry}`` (a region entry only if some atom carries its tag). An entry holds
    ``n_atoms``, ``counts`` ({species: n}), ``formula`` ('V22O36'), and for a binary
    reference M_a X_b (X the more electronegative, see :data:`_ANIONS`): ``x_cation``
    = a - b nM/nX (M_(a-x) X_b), ``x_anion`` = b - a nX/nM (M_a X_(b-x)), ``deficient`` (the
    species in deficit or None), ``x`` (the positive one, 0 if stoichiometric) and ``label``
    ('V(2-x)O3', 'V2O(3-x)' or 'V2O3'); these are None when the entry has other species or
    lacks one of the two.

    The reference (ideal) composition is, first found: ``reference_ratio`` (a formula such as
    'V2O3' or a mapping {'V': 2, 'O': 3}); ``atoms.info['pristine_formula']``, which the
    functions of this module set to the composition before the first defect; the present
    composition of the whole cell (assumed pristine). It is reduced to whole numbers.
    """
    symbols = np.array(atoms.get_chemical_symbols())
    if reference_ratio is not None:
        ref, source = _parse_reference(reference_ratio), "argument"
    elif "pristine_formula" in atoms.info:
        ref, source = _parse_reference(atoms.info["pristine_formula"]), "atoms.info"
    else:
        if len(atoms) == 0:
            raise UserError("cannot report the composition of an empty cell")
        ref, source = _parse_reference(_formula(symbols)), "current composition"
    report = {"reference": Formula.from_dict(ref).format("metal"), "reference_source": source,
              "all": _composition_entry(symbols, ref)}
    tags = atoms.get_tags()
    for code, name in REGION_NAMES.items():
        if np.any(tags == code):
            report[name] = _composition_entry(symbols[tags == code], ref)
    return report


def format_composition(report):
    """One line per region: ``crystal: V22O36 = V(2-x)O3, x = 0.167``."""
    lines = []
    for name in ("all",) + tuple(REGION_NAMES.values()):
        e = report.get(name)
        if e is None:
            continue
        line = f"{name}: {e['formula'] or '(no atoms)'}"
        if e["label"] is not None:
            line += f" = {e['label']}" + (f", x = {e['x']:.3f}" if e["deficient"] else "")
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _suggest(word, options):
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _choice(value, options, what):
    if value not in options:
        raise UserError(f"unknown {what} {value!r}{_suggest(value, options)}; choose one of "
                        + ", ".join(options))
    return value


def _rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise UserError(f"defect seed must be a whole number >= 0, got {seed!r}")
    return np.random.default_rng(int(seed))


def _species(atoms, name, present, what):
    present_species = sorted(set(atoms.get_chemical_symbols()))
    if not isinstance(name, str) or name not in atomic_numbers or name == "X":
        raise UserError(f"{what} {name!r} is not a chemical element"
                        f"{_suggest(name, present_species or chemical_symbols[1:])}")
    if present and name not in present_species:
        raise UserError(f"{what} {name!r} is not in the cell{_suggest(name, present_species)}; "
                        f"it holds {', '.join(present_species)}")
    return name


def _region_mask(atoms, region):
    _choice(region, REGIONS, "region")
    if region == "all":
        return np.ones(len(atoms), bool)
    mask = atoms.get_tags() == REGION_CODES[region]
    if not mask.any():
        raise UserError(f"no atom is tagged as the {region} region (tag {REGION_CODES[region]}):"
                        " split the cell into regions first (structures.split_regions) or use "
                        "region 'all'")
    return mask


def _region_text(region):
    return "whole cell" if region == "all" else f"{region} region"


def _site_region(atoms, i):
    return REGION_NAMES.get(int(atoms.get_tags()[i]), "none")


def _length(value, name, positive=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise UserError(f"{name} must be a distance in Å {bound}, got {value!r}")
    return float(value)


def _resolve_count(count, fraction, n_total, where):
    if (count is None) == (fraction is None):
        both = "both" if count is not None else "neither"
        raise UserError(f"give either count or fraction for the {where}, got {both}")
    if count is not None:
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, numbers.Integral) \
                or count < 0:
            raise UserError(f"count must be a whole number >= 0, got {count!r}")
        n = int(count)
    else:
        if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, numbers.Real) \
                or not 0.0 <= fraction <= 1.0:
            raise UserError(f"fraction must be a number between 0 and 1, got {fraction!r}")
        n = int(np.floor(fraction * n_total + 0.5 + 1e-9))
        if fraction > 0 and n == 0:
            raise UserError(f"fraction {fraction:g} of the {n_total} {where} rounds to 0 "
                            "defects: give a count or use a larger supercell")
    if n > 0 and n_total == 0:
        raise UserError(f"no {where}: none left to make defects from")
    if n > n_total:
        raise UserError(f"cannot make {n} defects from {n_total} {where}")
    return n


def _check_margin(atoms, region, n, what, n_eligible, n_total, where, boundary_distance):
    """A clear error when ``boundary_distance`` leaves fewer than ``n`` candidate sites."""
    if boundary_distance <= 0 or n_eligible >= n:
        return
    text = (f"boundary_distance = {boundary_distance:g} Å leaves {n_eligible} of the {n_total} "
            f"{where} as candidates for {n} {what}")
    thickness = _region_thickness(atoms, region)
    if thickness is not None and boundary_distance >= thickness / 2:
        text += (f": the {region} region is {thickness:.2f} Å thick, so no site is "
                 f"{boundary_distance:g} Å from both of its boundary planes")
    raise UserError(text + "; lower boundary_distance or the count, or make the region thicker "
                    "(structure.repeat along the split axis)")


def _region_thickness(atoms, region):
    """Thickness (Å, perpendicular to the boundary planes) of ``region``, or None."""
    if region not in REGION_CODES or "region_planes" not in atoms.info:
        return None
    axis = int(atoms.info["region_axis"])
    p0, p1 = (float(p) for p in np.asarray(atoms.info["region_planes"], float).ravel())
    crystal = (p1 - p0) % 1.0
    share = crystal if region == "crystal" else 1.0 - crystal
    return share * plane_spacings(atoms.cell.array)[axis]


def _shortfall(what, wanted, got, where, n_total, n_eligible, min_distance, boundary_distance):
    text = f"could place only {got} of {wanted} {what} among the {n_total} {where}"
    if boundary_distance > 0:
        text += f" ({n_eligible} of them at least {boundary_distance:g} Å from the boundary)"
    if min_distance > 0:
        text += (f" with min_distance = {min_distance:g} Å between defects: lower count, "
                 "min_distance or boundary_distance")
    return text


def _validate_recipe(recipe):
    if recipe is None:
        return []
    if isinstance(recipe, (str, bytes)) or isinstance(recipe, dict) \
            or not hasattr(recipe, "__iter__"):
        raise UserError("defects must be a list of entries such as {kind: vacancy, species: V, "
                        f"region: crystal, fraction: 0.08}}, got {type(recipe).__name__}")
    steps = []
    for k, entry in enumerate(recipe):
        if not hasattr(entry, "keys"):
            raise UserError(f"defects[{k}] must be a mapping with a 'kind' key, got {entry!r}")
        entry = dict(entry)
        kind = entry.get("kind")
        if kind is None:
            raise UserError(f"defects[{k}] has no 'kind': give one of {', '.join(KINDS)}"
                            f"{_suggest_key(entry, ('kind',))}")
        if kind not in KINDS:
            raise UserError(f"defects[{k}]: unknown kind {kind!r}{_suggest(kind, KINDS)}; "
                            f"choose one of {', '.join(KINDS)}")
        allowed = _RECIPE_KEYS[kind]
        for key in entry:
            if key not in allowed:
                raise UserError(f"defects[{k}] ({kind}): unknown key {key!r}"
                                f"{_suggest(key, allowed)}; known keys: {', '.join(allowed)}")
        if kind == "vacancy" and "species" not in entry:
            raise UserError(f"defects[{k}] (vacancy): give the species to remove, e.g. "
                            "species: O")
        kwargs = {key: value for key, value in entry.items() if key != "kind"}
        if kind == "antisite" and isinstance(kwargs.get("species"), list):
            kwargs["species"] = tuple(kwargs["species"])
        steps.append((kind, kwargs))
    return steps


def _suggest_key(entry, keys):
    for key in entry:
        s = _suggest(key, keys)
        if s:
            return f"; {key!r}{s}"
    return ""


# ---------------------------------------------------------------------------------------------
# Geometry and placement


def _copy(atoms):
    new = atoms.copy()
    new.info = copy.deepcopy(atoms.info)
    new.info.setdefault("pristine_formula", _formula(atoms.get_chemical_symbols()))
    return new


def _note_sites(atoms, records):
    """Append the sites of ``records`` to ``atoms.info['defect_positions']`` (Å, lists)."""
    known = np.asarray(atoms.info.get("defect_positions", []), float).reshape(-1, 3).tolist()
    atoms.info["defect_positions"] = known + [[float(x) for x in p] for r in records
                                              for p in r.positions]


def _delete(atoms, keep):
    """Atoms with only ``keep`` (mask); constraints re-indexed by ASE's index_shuffle."""
    info = atoms.info
    new = atoms[np.flatnonzero(keep)]
    new.info = info
    return new


def _far_from_boundaries(atoms, boundary_distance):
    """Mask of the atoms at least ``boundary_distance`` (Å) from both region boundary planes."""
    if boundary_distance <= 0:
        return np.ones(len(atoms), bool)
    return distance_to_boundaries(atoms) >= boundary_distance


def distance_to_boundaries(atoms):
    """Distance (Å) of each atom from the nearer region boundary plane.

    The planes sit at the fractional coordinates ``atoms.info['region_planes']`` along lattice
    vector ``atoms.info['region_axis']`` and are spanned by the other two lattice vectors; the
    distance is the fractional offset (minimum image if that axis is periodic) times the
    spacing of those lattice planes (:func:`~meltquench.kernels.neighbors.plane_spacings`).
    """
    axis, planes = atoms.info.get("region_axis"), atoms.info.get("region_planes")
    if axis is None or planes is None:
        raise UserError("boundary_distance needs the region planes (atoms.info['region_planes']"
                        "): split the cell into regions first (structures.split_regions)")
    s = atoms.cell.scaled_positions(atoms.positions)[:, axis]
    spacing = plane_spacings(atoms.cell.array)[axis]
    ds = np.array([s - p for p in planes])
    if atoms.pbc[axis]:
        ds = (ds + 0.5) % 1.0 - 0.5
    return np.abs(ds).min(axis=0) * spacing


def _neighbours(atoms, cutoff):
    """For each atom, the sorted unique indices of the other atoms closer than ``cutoff`` (Å)."""
    i, j = neighbor_list("ij", atoms, cutoff)
    keep = i != j
    i, j = i[keep], j[keep]
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    bounds = np.searchsorted(i, np.arange(len(atoms) + 1))
    return [np.unique(j[bounds[a]:bounds[a + 1]]) for a in range(len(atoms))]


def _blocked_by(atoms, avoid, min_distance):
    """Mask of the atoms closer than ``min_distance`` (Å) to any position in ``avoid``."""
    blocked = np.zeros(len(atoms), bool)
    if avoid is None or len(avoid) == 0 or min_distance <= 0:
        return blocked
    _, d = get_distances(np.asarray(avoid, float).reshape(-1, 3), atoms.positions,
                         cell=atoms.cell, pbc=atoms.pbc)
    return (d < min_distance).any(axis=0)


def _pick_sites(rng, atoms, candidates, n, min_distance, avoid):
    """Random sequential selection of ``n`` sites among ``candidates``; fewer if impossible."""
    start = _blocked_by(atoms, avoid, min_distance)
    close = _neighbours(atoms, min_distance) if min_distance > 0 else None
    attempts = PLACEMENT_ATTEMPTS if close is not None else 1
    best = []
    for _ in range(attempts):
        blocked = start.copy()
        chosen = []
        for i in rng.permutation(candidates):
            if blocked[i]:
                continue
            chosen.append(int(i))
            if len(chosen) == n:
                return np.array(chosen, int)
            blocked[i] = True
            if close is not None:
                blocked[close[i]] = True
        if len(chosen) > len(best):
            best = chosen
    return np.array(best, int)


def _pick_pairs(rng, atoms, cations, anion_mask, n, min_distance, pair_cutoff, avoid):
    """``n`` (cation, anion) pairs closer than ``pair_cutoff`` (Å), sites of different pairs at
    least ``min_distance`` (Å) apart; fewer if impossible."""
    start = _blocked_by(atoms, avoid, min_distance)
    partners = _neighbours(atoms, pair_cutoff)
    close = _neighbours(atoms, min_distance) if min_distance > 0 else None
    attempts = PLACEMENT_ATTEMPTS if close is not None else 1
    best = []
    for _ in range(attempts):
        blocked = start.copy()
        pairs = []
        for c in rng.permutation(cations):
            if blocked[c]:
                continue
            options = [a for a in partners[c] if anion_mask[a] and not blocked[a]]
            if not options:
                continue
            a = options[rng.integers(len(options))]
            pairs.append((int(c), int(a)))
            if len(pairs) == n:
                return pairs
            for site in (c, a):
                blocked[site] = True
                if close is not None:
                    blocked[close[site]] = True
        if len(pairs) > len(best):
            best = pairs
    return best


def _species_value(atoms, name, symbol, z):
    """Value of species-bound array ``name`` for a new atom of ``symbol``: the one all atoms of
    that species share, else the default (atomic mass in amu; 0 for moments and charges)."""
    array = atoms.arrays[name]
    if name == "numbers":
        return z
    same = array[np.array(atoms.get_chemical_symbols()) == symbol]
    if len(same) and np.all(same == same[0]):
        return same[0]
    if name == "masses":
        return atomic_masses[z]
    return np.zeros_like(array[0])


# ---------------------------------------------------------------------------------------------
# Composition


def _formula(symbols):
    return Formula.from_dict(dict(Counter(str(s) for s in symbols))).format("metal")


def _parse_reference(reference):
    if isinstance(reference, str):
        try:
            counts = Formula(reference).count()
        except Exception:
            counts = None
        if not counts or any(s not in atomic_numbers for s in counts):
            raise UserError(f"reference_ratio {reference!r} is not a chemical formula such as "
                            "'V2O3'")
    elif hasattr(reference, "items"):
        counts = dict(reference)
        for s, n in counts.items():
            if s not in atomic_numbers or isinstance(n, bool) \
                    or not isinstance(n, numbers.Integral) or n <= 0:
                raise UserError(f"reference_ratio {reference!r} must map elements to whole "
                                "numbers > 0, e.g. {'V': 2, 'O': 3}")
    else:
        raise UserError(f"reference_ratio must be a formula such as 'V2O3' or a mapping, got "
                        f"{reference!r}")
    reduced, _ = Formula.from_dict({s: int(n) for s, n in counts.items()}).reduce()
    ordered = Formula(Formula.from_dict(reduced.count()).format("metal")).count()
    if len(ordered) == 2:
        (m, a), (x, b) = ordered.items()
        rank = {s: k for k, s in enumerate(_ANIONS)}
        if rank.get(m, len(rank)) < rank.get(x, len(rank)):
            ordered = {x: b, m: a}
    return ordered


def _composition_entry(symbols, ref):
    counts = Counter(str(s) for s in symbols)
    formula = Formula.from_dict(dict(counts)).format("metal") if counts else ""
    ordered = Formula(formula).count() if formula else {}
    entry = {"n_atoms": int(len(symbols)), "counts": {s: int(n) for s, n in ordered.items()},
             "formula": formula, "x_cation": None, "x_anion": None, "deficient": None,
             "x": None, "label": None}
    if len(ref) != 2 or set(counts) != set(ref):
        return entry
    (m, a), (x, b) = ref.items()
    nm, nx = counts[m], counts[x]
    x_cation = a - b * nm / nx
    x_anion = b - a * nx / nm
    ideal = f"{_part(m, a)}{_part(x, b)}"
    if abs(x_cation) < 1e-12:
        deficient, value, label = None, 0.0, ideal
    elif x_cation > 0:
        deficient, value, label = m, x_cation, f"{m}({a}-x){_part(x, b)}"
    else:
        deficient, value, label = x, x_anion, f"{_part(m, a)}{x}({b}-x)"
    entry.update(x_cation=float(x_cation), x_anion=float(x_anion), deficient=deficient,
                 x=float(value), label=label)
    return entry


def _part(symbol, n):
    return symbol if n == 1 else f"{symbol}{n}"
