"""Run under mpirun by tests/test_xrd.py: the XRD and the bond angles of a trajectory over
COMM_WORLD; rank 0 writes them as JSON for the test to compare with its serial run.

usage: mpi_xrd.py TRAJECTORY OUT.json
"""
import json
import sys

from mpi4py import MPI

from meltquench.analysis import XRD, BondAngles


def main(path, out):
    comm = MPI.COMM_WORLD
    assert comm.Get_size() == 2, "run with mpirun -np 2"
    xrd = XRD(path, rmax=20.0, interface_width=2.5, comm=comm).run().results
    angles = BondAngles(path, cutoffs={"V-O": 2.3}, interface_width=2.5, comm=comm).run().results
    if comm.Get_rank() == 0:
        with open(out, "w") as fh:
            json.dump({"intensity": xrd.intensity.tolist(), "sq": xrd.sq.tolist(),
                       "n_centres": xrd.n_centres.tolist(),
                       "angles": angles.histogram.tolist()}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
