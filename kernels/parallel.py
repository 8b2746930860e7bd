"""How work splits over MPI ranks and how results are reduced.

Every function works the same with one rank and without mpi4py installed: ``get_comm()`` then
returns a :class:`SerialComm` with the few methods the kernels use.
"""
import time

import numpy as np


class SerialComm:
    """Stand-in for an mpi4py communicator with one rank."""

    rank = 0
    size = 1

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def bcast(self, obj, root=0):
        return obj

    def allreduce(self, obj, op=None):
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def allgather(self, obj):
        return [obj]

    def Barrier(self):
        pass

    barrier = Barrier

    def Split(self, color=0, key=0):
        return self


def get_comm(comm=None):
    """Return ``comm``, else mpi4py's COMM_WORLD, else a :class:`SerialComm`."""
    if comm is not None:
        return comm
    try:
        from mpi4py import MPI
    except ImportError:  # mpi4py is optional for the kernels
        return SerialComm()
    return MPI.COMM_WORLD


def node_size(comm=None):
    """Collective: how many ranks of ``comm`` share this rank's node (1 without MPI)."""
    comm = get_comm(comm)
    if comm.Get_size() == 1 or not hasattr(comm, "Split_type"):
        return 1
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_size()
    finally:
        node.Free()


def wait_for_root(comm=None, poll_s=0.001):
    """Collective: return once rank 0 has called it; the other ranks wait asleep.

    MPI's blocking calls spin while they wait (OpenMPI polls at 100 % of a core), so ranks
    that only wait for rank 0 (a machine-learned model runs there alone) would take the cores
    rank 0's threads need. Here they poll a non-blocking barrier every ``poll_s`` seconds and
    sleep in between; rank 0 passes straight through once the others have arrived.
    """
    comm = get_comm(comm)
    if comm.Get_size() == 1 or not hasattr(comm, "Ibarrier"):
        return
    request = comm.Ibarrier()
    if comm.Get_rank() == 0:
        request.Wait()
        return
    while not request.Test():
        time.sleep(poll_s)


def is_root(comm=None):
    """True on rank 0 (the only rank that writes files)."""
    return get_comm(comm).Get_rank() == 0


def block_range(n, rank, size):
    """Contiguous block ``[start, stop)`` of ``range(n)`` owned by ``rank`` of ``size``.

    Blocks differ in length by at most one and cover ``range(n)`` in rank order.
    """
    base, extra = divmod(int(n), int(size))
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return start, stop


def allreduce_sum(array, comm=None):
    """Sum a numpy array over ranks; every rank gets the total (a new array).

    Integer arrays sum exactly. Floating arrays are gathered and summed in rank order, so the
    result does not depend on MPI's reduction tree and equals the serial sum of the same parts.
    """
    comm = get_comm(comm)
    array = np.ascontiguousarray(array)
    if comm.Get_size() == 1:
        return array.copy()
    parts = comm.allgather(array)
    total = np.zeros_like(array)
    for part in parts:
        total += part
    return total


def frame_plan(n_frames, rank, size):
    """Which frames a rank analyses alone and which all ranks share.

    The first ``n_frames - n_frames % size`` frames go out in contiguous blocks, one block per
    rank (decomposition over frames); the last ``n_frames % size`` frames are done by every rank
    together, each taking its :func:`block_range` of the centre atoms (decomposition inside a
    frame). Every rank thus gets the same amount of work. Returns ``(own, shared)``: lists of
    frame positions in ``range(n_frames)``.
    """
    n_frames, size = int(n_frames), int(size)
    n_own = n_frames - n_frames % size
    start, stop = block_range(n_own, rank, size)
    return list(range(start, stop)), list(range(n_own, n_frames))


def allreduce_max(value, comm=None):
    """Largest ``value`` (a number) over ranks; every rank gets it."""
    comm = get_comm(comm)
    if comm.Get_size() == 1:
        return value
    return max(comm.allgather(value))


def first_error(message, comm=None):
    """Collective: the first (lowest rank) non-empty error ``message`` of any rank, or None.

    Call it on every rank before a reduction, so that a rank that failed does not leave the
    others waiting; each rank then raises the same error.
    """
    comm = get_comm(comm)
    if comm.Get_size() == 1:
        return message or None
    for m in comm.allgather(message or None):
        if m:
            return m
    return None
