"""Frames to analyse and what the kernels need from each.

:class:`Frames` reads a run folder (its ``trajectory.traj``), a trajectory or structure file,
an :class:`~ase.Atoms` or a list of them, one frame at a time. :class:`Species` numbers the
species of the first analysed frame (0, 1, ... in order of first appearance). :class:`Frame`
is one analysed frame as arrays: positions (Å), cell (Å), periodicity, species numbers, region
groups and the share of its atoms this MPI rank works on.
"""
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.io import read
from ase.io.trajectory import Trajectory

from ..errors import UserError
from ..kernels.parallel import block_range

TRAJECTORY_NAME = "trajectory.traj"


class Frames:
    """Random access to the frames of a source, one :class:`~ase.Atoms` at a time.

    ``label`` names the source in reports; ``run_dir`` is the run folder (or None) and
    ``path`` the file read (or None). A ``.traj`` file is read frame by frame and stays open
    until :meth:`close` (it reopens if read again); other files are read whole.
    """

    def __init__(self, source):
        self._traj = None
        self._list = None
        self.run_dir = None
        self.path = None
        if isinstance(source, Atoms):
            self._list, self.label = [source], "Atoms"
        elif isinstance(source, (list, tuple)):
            if not source or not all(isinstance(a, Atoms) for a in source):
                raise UserError("source must be a run folder, a trajectory or structure file, "
                                "an Atoms or a non-empty list of Atoms")
            self._list, self.label = list(source), f"{len(source)} Atoms"
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                self.run_dir = path
                path = path / TRAJECTORY_NAME
                if not path.is_file():
                    raise UserError(f"{source} is a folder without {TRAJECTORY_NAME}: give a run "
                                    "folder or a trajectory file")
            elif not path.exists():
                raise UserError(f"trajectory not found: {source}")
            self.path, self.label = path, str(source)
            self._open()
        else:
            raise UserError(f"cannot analyse a {type(source).__name__}: give a run folder, a "
                            "trajectory or structure file, an Atoms or a list of Atoms")
        self._length = len(self._traj) if self._traj is not None else len(self._list)

    def _open(self):
        path = self.path
        try:
            if path.suffix == ".traj":
                self._traj = Trajectory(str(path))
                if len(self._traj) == 0:
                    raise UserError(f"{path} holds no frames")
            else:
                self._list = read(str(path), index=":")
        except UserError:
            raise
        except Exception as exc:  # ASE raises many types for unknown or broken files
            raise UserError(f"cannot read {path}: {exc.__class__.__name__}: {exc} (give a .traj, "
                            "extxyz or other file ASE can read)") from None
        if self._list is not None and not self._list:
            raise UserError(f"{path} holds no frames")

    def __len__(self):
        return self._length

    def select(self, start=0, stop=None, step=1):
        """Frame numbers ``range(len(self))[start:stop:step]``, as a list; none is an error."""
        selected = list(range(len(self)))[start:stop:step]
        if not selected:
            raise UserError(f"no frames selected: the trajectory has {len(self)} frame(s) and "
                            f"start={start}, stop={stop}, stride={step} pick none")
        return selected

    def get(self, k):
        """Frame ``k`` as an :class:`~ase.Atoms`."""
        if self._list is not None:
            return self._list[k]
        if self._traj is None:
            self._open()
        try:
            return self._traj[k]
        except Exception as exc:
            raise UserError(f"cannot read frame {k} of {self.path}: "
                            f"{exc.__class__.__name__}: {exc}") from None

    def close(self):
        if self._traj is not None:
            self._traj.close()
            self._traj = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Species:
    """The species of a reference frame, numbered 0, 1, ... in order of first appearance."""

    def __init__(self, atoms):
        numbers = list(dict.fromkeys(atoms.numbers.tolist()))
        self.symbols = [chemical_symbols[z] for z in numbers]
        self._lut = np.full(max(numbers) + 1, -1, np.int64)
        self._lut[numbers] = np.arange(len(numbers))

    def __len__(self):
        return len(self.symbols)

    def types(self, atoms, k):
        """Species numbers of the atoms of frame ``k``."""
        numbers = atoms.numbers
        if numbers.max() >= len(self._lut) or np.any(self._lut[numbers] < 0):
            raise UserError(f"frame {k} holds species not in the first analysed frame: "
                            "analyse frames with one set of species")
        return self._lut[numbers]

    def pairs(self, pairs=None):
        """Pair names 'A-B' (centre-neighbour) -> list of (name, a, b) with species numbers.

        ``pairs``: names ('V-O'), a list of them or comma-separated lists; None: every ordered
        pair of species.
        """
        index = {s: k for k, s in enumerate(self.symbols)}
        if pairs is None:
            return [(f"{a}-{b}", index[a], index[b]) for a in self.symbols for b in self.symbols]
        if isinstance(pairs, str):
            pairs = [pairs]
        out = []
        for p in pairs:
            for name in str(p).split(","):
                name = name.strip()
                if not name:
                    continue
                parts = name.split("-")
                if len(parts) != 2 or not all(parts):
                    raise UserError(f"pair {name!r} must look like 'V-O' (centre-neighbour)")
                for s in parts:
                    if s not in index:
                        raise UserError(f"pair {name!r}: no {s} atoms in the trajectory "
                                        f"(species: {', '.join(self.symbols)})")
                if name not in [o[0] for o in out]:
                    out.append((name, index[parts[0]], index[parts[1]]))
        if not out:
            raise UserError("no species pairs to analyse: give pairs like 'V-O'")
        return out


class Frame:
    """One analysed frame as arrays.

    ``index``: its number in the trajectory; ``atoms``; ``positions`` (N, 3) Å; ``cell``
    (3, 3) rows Å; ``pbc``; ``volume`` |det cell| (Å^3); ``types`` species numbers;
    ``groups`` region group of every atom (:mod:`.regions`). ``share`` is None when this rank
    analyses the whole frame, else ``(rank, size)``: the frame is shared and :meth:`mine`
    gives each rank its block of atoms.
    """

    def __init__(self, atoms, index, species, regions, share=None):
        self.index = index
        self.atoms = atoms
        self.types = species.types(atoms, index)
        self.positions = atoms.positions
        self.cell = atoms.cell.array
        self.pbc = atoms.pbc
        self.volume = abs(float(np.linalg.det(self.cell)))
        self.groups = regions.groups(atoms, index)
        self.share = share

    def mine(self, atoms):
        """The part of ``atoms`` (indices) this rank works on: all of them in a whole frame,
        its contiguous block of them in a shared one."""
        if self.share is None:
            return atoms
        return atoms[slice(*block_range(len(atoms), *self.share))]
