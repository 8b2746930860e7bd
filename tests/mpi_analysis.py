"""Run under mpirun by tests/test_analysis.py: analyse a trajectory over COMM_WORLD and write
the full result of rank 0 as JSON, for the test to compare with its serial run.

usage: mpi_analysis.py TRAJECTORY OUT_PREFIX
Writes OUT_PREFIX_all.json (every frame: frames split over ranks, one frame left over split
over centre atoms) and OUT_PREFIX_one.json (one frame: centres split over ranks).
"""
import json
import sys

from mpi4py import MPI

from meltquench.analysis import analyse


def main(path, prefix):
    comm = MPI.COMM_WORLD
    assert comm.Get_size() == 2, "run with mpirun -np 2"
    cases = {"all": dict(pairs=None, cutoffs={"V-O": 2.3}),
             "one": dict(stop=1, pairs=["V-O", "O-V", "O-O"], cutoffs=None)}
    for name, kwargs in cases.items():
        result = analyse(path, rmax=5.0, nbins=100, interface_width=2.5, comm=comm, **kwargs)
        if comm.Get_rank() == 0:
            with open(f"{prefix}_{name}.json", "w") as fh:
                json.dump(result.to_dict(), fh)
        # every rank holds the full result
        assert len(result.rows) == len(result.pairs) * len(result.regions)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
