"""A fast, deterministic pair potential for tests and quick trials (any elements; eV, Å).

``phi(r) = A exp(-r/rho) + D [(1 - exp(-alpha (r - r0)))^2 - 1]`` per pair of species (Born-Mayer
repulsion plus a Morse bond), times a smooth switch (C2, quintic) from ``cutoff_on`` to
``cutoff``. The numba kernel is :func:`meltquench.kernels.pair.pair_energy_forces`; this module
holds the parameters and the ASE calculator around it.

The V-O parameters were fitted without dispersion, so ``calculator.dispersion: auto`` adds none
to this potential; an explicit ``d3bj`` is allowed (it is not counted twice) but makes another
model than the fitted one (see :data:`meltquench.calculators.FITTED_WITHOUT`).
"""
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import atomic_numbers, covalent_radii

from ..errors import UserError
from ..kernels.pair import image_counts, pair_energy_forces
from .base import Settings, setting

#: Built-in V-O parameters: Born-Mayer repulsion ``A exp(-r/rho)`` between like ions, a Morse
#: bond ``D [(1 - exp(-alpha (r - r0)))^2 - 1]`` between V and O. Fitted so that corundum V2O3
#: (a = 4.952 Å, c = 14.003 Å) is a local minimum of the atom positions at fixed cell (forces
#: below 0.01 eV/Å, all Γ-point force constants positive; V-O bonds 1.97/2.05 Å kept).
V_O_PAIRS = {
    "V-O": {"A": 0.0, "rho": 0.3, "D": 1.0, "alpha": 1.852, "r0": 1.981},
    "V-V": {"A": 1515.0, "rho": 0.3, "D": 0.0, "alpha": 1.0, "r0": 2.0},
    "O-O": {"A": 1347.0, "rho": 0.3, "D": 0.0, "alpha": 1.0, "r0": 2.0},
}

ANIONS = {"N", "O", "F", "S", "Cl", "Se", "Br", "Te", "I"}


@dataclass
class PairSettings(Settings):
    """``calculator.pair``: the parameters of :class:`PairPotential`."""

    section = "calculator.pair"

    cutoff: float = setting(6.0, "cutoff radius (Å)")
    cutoff_on: float = setting(5.0, "where the smooth switch-off starts (Å)")
    pairs: Optional[dict] = setting(
        {}, "{'A-B': {A: eV, rho: Å, D: eV, alpha: 1/Å, r0: Å}} overriding the built-in V-O set "
        "and the generic rule")

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.cutoff_on < self.cutoff:
            raise UserError("calculator.pair: need 0 < cutoff_on < cutoff (Å)")


def generic_pair(a, b):
    """Parameters for a pair without a built-in set.

    Cation-anion: a Morse bond (D 1 eV, alpha 1.852 1/Å) at 0.9 times the sum of the covalent
    radii; every other pair: the Born-Mayer repulsion of O-O (1347 eV, 0.3 Å).
    """
    if (a in ANIONS) != (b in ANIONS):
        r0 = 0.9 * (covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])
        return {"A": 0.0, "rho": 0.3, "D": 1.0, "alpha": 1.852, "r0": float(r0)}
    return {"A": 1347.0, "rho": 0.3, "D": 0.0, "alpha": 1.0, "r0": 2.0}


class PairPotential(Calculator):
    """ASE calculator of the pair potential: energy, forces and stress, consistent and
    energy-conserving in MD.

    Keyword arguments are the fields of :class:`PairSettings`. Periodic images are summed
    exactly (cells of any size and shape, also smaller than the cutoff). Parameters: the V-O set
    :data:`V_O_PAIRS`, :func:`generic_pair` for other pairs, ``pairs`` overrides either (keys
    ``'A-B'``; eV, Å).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    default_parameters = asdict(PairSettings())
    nolabel = True

    def __init__(self, **kwargs):
        Calculator.__init__(self, **kwargs)
        PairSettings.from_dict(dict(self.parameters))

    def pair_parameters(self, symbols):
        """Arrays (A, rho, D, alpha, r0), each (nspecies, nspecies), for sorted ``symbols``."""
        table = {}
        for key, p in {**V_O_PAIRS, **(self.parameters.pairs or {})}.items():
            a, b = key.split("-")
            table[(a, b)] = table[(b, a)] = p
        n = len(symbols)
        arrays = {k: np.zeros((n, n)) for k in ("A", "rho", "D", "alpha", "r0")}
        for i, a in enumerate(symbols):
            for j, b in enumerate(symbols):
                p = {**generic_pair(a, b), **table.get((a, b), {})}
                for k in arrays:
                    arrays[k][i, j] = float(p[k])
        if np.any(arrays["rho"] <= 0) or np.any(arrays["alpha"] <= 0):
            raise UserError("calculator.pair: rho and alpha must be positive")
        return tuple(arrays[k] for k in ("A", "rho", "D", "alpha", "r0"))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms
        symbols = sorted(set(atoms.get_chemical_symbols()))
        kinds = np.array([symbols.index(s) for s in atoms.get_chemical_symbols()], dtype=np.int64)
        rc = float(self.parameters.cutoff)
        ron = float(self.parameters.cutoff_on)
        pbc = np.asarray(atoms.pbc, dtype=bool)
        cell = atoms.cell.array.copy()
        if not pbc.all():
            # Open directions: any cell vector that spans the positions (no images there).
            span = np.ptp(atoms.positions, axis=0).max() + 2 * rc + 1.0 if len(atoms) else 1.0
            complete = atoms.cell.complete().array
            for k in range(3):
                if not pbc[k]:
                    length = np.linalg.norm(complete[k])
                    cell[k] = complete[k] / length * span
        energy, forces, virial = pair_energy_forces(
            np.ascontiguousarray(atoms.positions, dtype=float), cell, np.linalg.inv(cell), kinds,
            *self.pair_parameters(symbols), ron, rc, image_counts(cell, pbc, rc),
            pbc.astype(np.int64))
        self.results["energy"] = self.results["free_energy"] = float(energy)
        self.results["forces"] = forces
        if pbc.all():
            stress = virial / atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a cell periodic in all directions")
