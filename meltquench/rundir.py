"""Run folders: their names, their marker and lock, crash-safe writes and checkpoints.

A run folder carries the marker :data:`MARKER_NAME` (JSON: the run's identity) from its
creation on: only a marked folder may be replaced (``--overwrite``), and then only the files
meltquench writes (:data:`RUN_FILES`) are deleted. A run holds an exclusive OS lock on
:data:`LOCK_NAME` (``fcntl.flock``, released by the kernel when the process ends, however it
ends): a second writer is refused with the holder's PID and host.

Only rank 0 writes; functions that take ``comm`` are collective (every rank calls them and
gets the same answer). ASE's ``read``/``write`` are collective under MPI unless given
``parallel=False``: code that only rank 0 runs must pass it.
"""
import fcntl
import json
import os
import shutil
import socket
import uuid
from datetime import datetime
from pathlib import Path

from ase.io.trajectory import Trajectory

from . import __version__
from .checkpoint import CHECKPOINT_NAME, PICKLE_CHECKPOINT_NAME, encode_checkpoint
from .errors import UserError

MARKER_NAME = ".meltquench-run"
LOCK_NAME = ".meltquench-lock"

#: What meltquench writes in a run folder: the only names ``--overwrite`` deletes. Folders
#: end in "/"; ``*`` as in glob. ``vasp/`` is the folder the VASP calculator runs in.
RUN_FILES = ("config.yaml", "initial.traj", "trajectory.traj", "trajectory.extxyz", "md.log",
             CHECKPOINT_NAME, PICKLE_CHECKPOINT_NAME, "final.traj", "final.extxyz", "preoptimised.traj",
             "relax.log", "gpaw.txt", "scf.npz", "drift.json", "*.tmp", "replicas.yaml",
             "replicas-summary.json", "replicas-summary.csv", "vasp/")
#: What meltquench writes in ``analysis/``.
ANALYSIS_FILES = ("summary.json", "summary.csv", "rdf.json", "rdf_*.png",
                  "coordination_*.png", "checks.json", "checks.png", "melt.json",
                  "melt_msd.png", "melt_order.png", "*.tmp")


def collective(comm, action):
    """Run ``action()`` on rank 0 and broadcast its return value; its UserError, or an
    OSError as one line, is raised on every rank."""
    error = value = None
    if comm.Get_rank() == 0:
        try:
            value = action()
        except UserError as exc:
            error = str(exc)
        except OSError as exc:
            where = f" {exc.filename}:" if exc.filename else ""
            error = f"cannot use the run folder:{where} {exc.strerror or exc}"
    error, value = comm.bcast((error, value), root=0)
    if error:
        raise UserError(error)
    return value


def default_run_dir(name, comm):
    """``runs/<name>-<YYYYmmdd-HHMMSS>``, created and marked here so that it is this run's
    alone (an exclusive mkdir: runs started in the same second get ``-2``, ``-3``, ...).
    Collective; the same path on every rank."""
    def make():
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        Path("runs").mkdir(exist_ok=True)
        for n in range(1, 10000):
            path = Path("runs") / (f"{name}-{stamp}" if n == 1 else f"{name}-{stamp}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            write_marker(path)
            return str(path)
        raise UserError(f"no free run folder name for runs/{name}-{stamp}")
    return Path(collective(comm, make))


def write_marker(run_dir):
    """Mark ``run_dir`` as a meltquench run folder (rank 0)."""
    marker = {"run_id": uuid.uuid4().hex, "created": datetime.now().isoformat(timespec="seconds"),
              "host": socket.gethostname(), "pid": os.getpid(), "meltquench": __version__}
    write_atomic(Path(run_dir) / MARKER_NAME, (json.dumps(marker, indent=1) + "\n").encode())


def is_run_dir(run_dir):
    """Whether ``run_dir`` carries the marker of a meltquench run folder."""
    return (Path(run_dir) / MARKER_NAME).is_file()


class RunLock:
    """The exclusive lock of one run folder, held from :meth:`acquire` to :meth:`release`
    (or the end of the process). Rank 0 holds it; on other ranks it holds nothing."""

    def __init__(self, run_dir, comm):
        self.path = Path(run_dir) / LOCK_NAME
        self.comm = comm
        self._fh = None

    def acquire(self):
        """Take the lock (collective); a UserError naming the holder if another process has
        it."""
        collective(self.comm, self._acquire)
        return self

    def _acquire(self):
        if self._fh is not None:
            return  # held already (prepare_run_dir took it)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"run folder {self.path.parent} is in use by {holder}: wait for "
                            "that run to end (or stop it) before writing here") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"PID {os.getpid()} on host {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh

    def release(self):
        """Give the lock up (closing the file releases the flock)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _remove_ours(folder, patterns):
    """Delete the entries of ``folder`` matching ``patterns`` (see :data:`RUN_FILES`)."""
    for pattern in patterns:
        if pattern.endswith("/"):
            path = folder / pattern[:-1]
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            continue
        for path in folder.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()


def clear_run_dir(run_dir):
    """Delete what meltquench wrote in the marked folder ``run_dir`` (rank 0): the names of
    :data:`RUN_FILES`, the analysis outputs and marked replica folders; anything else stays.
    Returns the names left that meltquench did not write."""
    run_dir = Path(run_dir)
    _remove_ours(run_dir, RUN_FILES)
    analysis = run_dir / "analysis"
    if analysis.is_dir() and not analysis.is_symlink():
        _remove_ours(analysis, ANALYSIS_FILES)
        if not any(analysis.iterdir()):
            analysis.rmdir()
    for replica in run_dir.glob("replica-*"):
        if replica.is_dir() and not replica.is_symlink() and is_run_dir(replica):
            clear_run_dir(replica)
            for name in (MARKER_NAME, LOCK_NAME):
                (replica / name).unlink(missing_ok=True)
            if not any(replica.iterdir()):
                replica.rmdir()
    return sorted(p.name for p in run_dir.iterdir() if p.name not in (MARKER_NAME, LOCK_NAME))


def prepare_run_dir(run_dir, overwrite, comm):
    """Create ``run_dir`` for a new run, mark it and lock it; returns the :class:`RunLock`
    (collective; release it when the run ends).

    An existing folder is used as it is if it holds nothing but a marker and a lock file. A
    fuller one needs ``overwrite`` and the marker: then only meltquench's files are deleted,
    once the lock is taken. Anything else is a UserError, before anything is changed.
    """
    run_dir = Path(run_dir)

    def check_and_create():
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"run folder {run_dir} exists and is not a folder")
        if not run_dir.exists():
            run_dir.mkdir(parents=True)
            write_marker(run_dir)
            return False
        ours = is_run_dir(run_dir)
        entries = [p.name for p in run_dir.iterdir() if p.name not in (MARKER_NAME, LOCK_NAME)]
        if not entries:
            if not ours:
                write_marker(run_dir)
            return False
        if not overwrite:
            raise UserError(f"run folder {run_dir} already exists: pass --overwrite to replace "
                            f"it, --restart {run_dir} to continue it, or choose another --output")
        if not ours:
            raise UserError(f"--overwrite refused: {run_dir} was not made by meltquench (it has "
                            f"no {MARKER_NAME} marker), so nothing in it is deleted; choose "
                            "another --output or empty it yourself")
        return True

    replace = collective(comm, check_and_create)
    lock = RunLock(run_dir, comm).acquire()
    try:
        collective(comm, lambda: _check_writable(run_dir))
        if replace:
            left = collective(comm, lambda: clear_run_dir(run_dir))
            if left and comm.Get_rank() == 0:
                print(f"--overwrite: kept {len(left)} entries meltquench did not write in "
                      f"{run_dir}: {', '.join(left[:5])}{' ...' if len(left) > 5 else ''}",
                      flush=True)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_writable(run_dir):
    probe = Path(run_dir) / ".meltquench-write-test.tmp"
    probe.write_bytes(b"")
    probe.unlink()


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




def write_checkpoint(run_dir, state, comm):
    """Write ``state`` (rank 0) to the run folder's checkpoint, data only
    (:mod:`meltquench.checkpoint`); collective."""
    if comm.Get_rank() == 0:
        write_atomic(Path(run_dir) / CHECKPOINT_NAME, encode_checkpoint(state))
    comm.Barrier()
