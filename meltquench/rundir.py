"""Run folders: their names, creation, checkpoints and crash-safe writes.

Only rank 0 writes; functions that take ``comm`` are collective (every rank calls them and
gets the same answer). ASE's ``read``/``write`` are collective under MPI unless given
``parallel=False``: code that only rank 0 runs must pass it.
"""
import os
import pickle
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.io.trajectory import Trajectory

from .errors import UserError
from .structures import fixed_mask

CHECKPOINT_NAME = "checkpoint.pkl"
CHECKPOINT_VERSION = 1


def default_run_dir(name, comm):
    """``runs/<name>-<YYYYmmdd-HHMMSS>`` (the same on every rank; a suffix if taken)."""
    if comm.Get_rank() == 0:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{name}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path("runs") / f"{name}-{stamp}-{n}"
    else:
        path = None
    return Path(comm.bcast(str(path) if path else None, root=0))


def prepare_run_dir(run_dir, overwrite, comm):
    """Create ``run_dir`` on rank 0; an existing non-empty folder needs ``overwrite``."""
    error = None
    if comm.Get_rank() == 0:
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            error = f"run folder {run_dir} exists and is not a folder"
        elif run_dir.exists() and any(run_dir.iterdir()):
            if overwrite:
                shutil.rmtree(run_dir)
            else:
                error = (f"run folder {run_dir} already exists: pass --overwrite to replace it, "
                         f"--restart {run_dir} to continue it, or choose another --output")
        if error is None:
            run_dir.mkdir(parents=True, exist_ok=True)
    error = comm.bcast(error, root=0)
    if error:
        raise UserError(error)


def write_atomic(path, data: bytes):
    """Write ``data`` to ``path`` through a temporary file and a rename (crash-safe)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_traj(path, atoms):
    """Write one frame to an ASE .traj file from this rank, whatever its world rank is."""
    with Trajectory(path, "w", master=True) as traj:
        traj.write(atoms)


def trim_trajectory(path, n_frames):
    """Keep the first ``n_frames`` frames of the .traj file ``path`` (rank 0)."""
    path = Path(path)
    if not path.exists():
        return
    with Trajectory(path) as traj:
        frames = [traj[i] for i in range(min(n_frames, len(traj)))]
    tmp = path.with_name(path.name + ".tmp")
    with Trajectory(tmp, "w", master=True) as out:
        for frame in frames:
            out.write(frame)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- checkpoints
def checkpoint_state(atoms, dynamics_state, step, phase, **extra):
    """The checkpoint of a run at ``step``: the atoms, the integrator's state and ``extra``."""
    return {"version": CHECKPOINT_VERSION, "step": step, "phase": phase,
            "numbers": atoms.numbers.copy(), "positions": atoms.positions.copy(),
            "momenta": atoms.get_momenta(), "masses": atoms.get_masses(),
            "cell": atoms.cell.array.copy(), "pbc": atoms.pbc.copy(),
            "tags": atoms.get_tags(), "info": dict(atoms.info),
            "fixed": np.flatnonzero(fixed_mask(atoms)), "dynamics": dynamics_state, **extra}


def write_checkpoint(run_dir, state, comm):
    """Write ``state`` (rank 0) to the run folder's checkpoint; collective."""
    if comm.Get_rank() == 0:
        write_atomic(Path(run_dir) / CHECKPOINT_NAME, pickle.dumps(state, protocol=4))
    comm.Barrier()


def read_checkpoint(run_dir):
    """The checkpoint of the run in ``run_dir``."""
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        raise UserError(f"no checkpoint in {run_dir}: it is not a meltquench run folder, or the "
                        "run stopped before its first checkpoint (start it again)")
    with open(path, "rb") as fh:
        state = pickle.load(fh)
    if state.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} was written by another meltquench version")
    return state


def atoms_from_checkpoint(state):
    """The :class:`~ase.Atoms` a checkpoint holds, with its momenta, tags and FixAtoms."""
    atoms = Atoms(numbers=state["numbers"], positions=state["positions"], cell=state["cell"],
                  pbc=state["pbc"], tags=state["tags"], masses=state["masses"],
                  momenta=state["momenta"], info=state["info"])
    if len(state["fixed"]):
        atoms.set_constraint(FixAtoms(indices=state["fixed"]))
    return atoms
