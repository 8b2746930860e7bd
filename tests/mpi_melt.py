"""Run under mpirun by tests/test_melt.py: the melt diagnostics of two trajectories over
COMM_WORLD, rank 0's full result written as JSON for the test to compare with its serial run.

usage: mpi_melt.py RAW_TRAJECTORY WRAPPED_TRAJECTORY OUT_PREFIX
Writes OUT_PREFIX_raw.json and OUT_PREFIX_wrapped.json (frames split over the ranks; the
wrapped frames need the lattice translations crossed on the first rank's frames).
"""
import json
import sys

from mpi4py import MPI

from meltquench.analysis import melt_diagnostics


def main(raw, wrapped, prefix):
    comm = MPI.COMM_WORLD
    assert comm.Get_size() == 2, "run with mpirun -np 2"
    for name, path in (("raw", raw), ("wrapped", wrapped)):
        result = melt_diagnostics(path, cutoff_VO=2.5, comm=comm)
        if comm.Get_rank() == 0:
            with open(f"{prefix}_{name}.json", "w") as fh:
                json.dump(result.to_dict(), fh)
        # every rank holds the full result
        assert len(result.series["all"]["msd"]) == len(result.frames) == 5


if __name__ == "__main__":
    main(*sys.argv[1:4])
