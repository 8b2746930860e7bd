"""GPAW itself on the 10-atom V2O3 cell: MD steps serial, under mpirun -np 2, and as two replicas.

tests/mpi_gpaw_steps.py runs the half-fixed cell for two velocity-Verlet steps with tightly
converged GPAW (LCAO sz(dzp), PBE, Γ point, meltquench's mixer and density-matrix extrapolation).
Parallel runs, and a replica without the extrapolation, must give the serial energies to 1e-4 eV
and forces to 2e-3 eV/Å: the SCF is converged to 1e-6 electrons per electron, so only rounding in
GPAW's parallel sums and the SCF's starting point separate them. A PBE+U single point checks that
U reaches GPAW.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gpaw")

from conftest import MPIRUN, mpi_env, run_mpi  # noqa: E402

SCRIPT = str(Path(__file__).with_name("mpi_gpaw_steps.py"))
E_TOL = 1e-4  # eV
F_TOL = 2e-3  # eV/Å


def serial_run(out, *extra):
    env = mpi_env()
    for key in list(env):  # a plain serial run: no trace of a launcher
        if key.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_")):
            del env[key]
    subprocess.run([sys.executable, SCRIPT, str(out), *extra], check=True, timeout=600, env=env)
    return json.loads(Path(out).read_text())


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    return serial_run(tmp_path_factory.mktemp("serial") / "serial.json")


def check_same(result, reference):
    assert len(result["energies"]) == len(reference["energies"]) == 3
    assert np.allclose(result["energies"], reference["energies"], rtol=0, atol=E_TOL)
    assert np.abs(np.array(result["forces"]) - np.array(reference["forces"])).max() < F_TOL
    assert np.abs(np.array(result["positions"]) - np.array(reference["positions"])).max() < 1e-5


def test_gpaw_serial_md_steps(serial):
    from meltquench.structures import split_regions, v2o3_rhombohedral
    atoms = split_regions(v2o3_rhombohedral())
    forces = np.array(serial["forces"])
    fixed = atoms.get_tags() == 1
    assert serial["gpaw_comm_size"] == 1
    assert all(isinstance(n, int) and n > 0 for n in serial["iterations"])
    assert serial["extrapolated"] == 1  # step 2 started from an extrapolated density
    # FixAtoms: zero force on the crystal half, real forces on the melt half.
    assert np.abs(forces[:, fixed]).max() == 0.0 and np.abs(forces[:, ~fixed]).max() > 0.05
    assert np.abs(np.array(serial["positions"])[fixed] - atoms.positions[fixed]).max() == 0.0
    # Small steps from the crystal: the energy changes by far less than 1 eV.
    assert np.ptp(serial["energies"]) < 1.0


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_gpaw_mpirun_two_ranks_equals_serial(serial, tmp_path):
    out = tmp_path / "mpi.json"
    run_mpi(["python", SCRIPT, str(out)], np=2)
    result = json.loads(out.read_text())
    assert result["ranks"] == 2 and result["gpaw_comm_size"] == 2
    assert result["extrapolated"] == 1
    check_same(result, serial)


def gpaw_has_scalapack():
    from gpaw.utilities import compiled_with_sl
    return compiled_with_sl()


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
@pytest.mark.skipif(not gpaw_has_scalapack(), reason="GPAW built without ScaLAPACK "
                    "(scripts/setup.sh builds it with Debian's libscalapack-openmpi-dev)")
def test_gpaw_band_parallel_scalapack_equals_serial(serial, tmp_path):
    # parallel: {band: 2}: the orbitals' rows, the potential matrix and the LCAO eigenproblem
    # are split over the two ranks (ScaLAPACK), the grid is not. The density-matrix
    # extrapolation sums the density matrix over the band ranks and hands each its rows.
    out = tmp_path / "band.json"
    run_mpi(["python", SCRIPT, str(out), "--band"], np=2)
    result = json.loads(out.read_text())
    assert result["ranks"] == 2 and result["gpaw_comm_size"] == 2
    assert result["layout"] == "kpt 1, domain 1, band 2"
    assert result["extrapolated"] == 1
    check_same(result, serial)


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_gpaw_two_one_rank_replicas_each_equal_serial(serial, tmp_path):
    # Replica 1 runs without the density-matrix extrapolation: it changes where each SCF
    # starts, not where it ends.
    out = tmp_path / "replica.json"
    run_mpi(["python", SCRIPT, str(out), "--split"], np=2)
    for rank in (0, 1):
        result = json.loads(Path(f"{out}.{rank}").read_text())
        assert result["ranks"] == 1 and result["gpaw_comm_size"] == 1
        assert result["extrapolated"] == (1 if rank == 0 else 0)
        check_same(result, serial)


def test_gpaw_hubbard_u_reaches_gpaw(serial, tmp_path):
    from ase.units import Ha
    from meltquench.calculators import make_calculator
    from meltquench.structures import v2o3_rhombohedral
    atoms = v2o3_rhombohedral()
    settings = {"name": "gpaw", "dispersion": None,
                "gpaw": {"basis": "sz(dzp)", "h": 0.25, "convergence": {"density": 1e-3}}}
    atoms.calc = make_calculator(settings, directory=tmp_path)
    energy_u = atoms.get_potential_energy()
    hubbard = [s.hubbard_u for s in atoms.calc.dft.setups if s.symbol == "V"]
    assert hubbard[0].l == [2] and hubbard[0].U[0] * Ha == pytest.approx(3.25)
    assert all(s.hubbard_u is None for s in atoms.calc.dft.setups if s.symbol == "O")
    assert re.search(r"Hubbard: \{U: 3\.25", (tmp_path / "gpaw.txt").read_text())
    # Same cell and grid without U (the serial run's first energy): the Dudarev term changes
    # the energy of V2O3 by far more than the SCF tolerance.
    assert abs(energy_u - serial["energies"][0]) > 0.1


def test_the_extrapolation_memory_of_an_scf_split_over_spins_goes_back_by_spin():
    """Rank r holds spin r's matrices; gathered by spin (two fake ranks' states), each rank
    gets its own spin's back, a checkpoint that lacks a spin gives none, and an old one
    (no ``spins``) is taken as it is."""
    from meltquench.calculators.gpaw import _every_spin, _my_spins

    class TwoRanks:  # comm.gather as rank 0 of two ranks would see it
        def __init__(self, other):
            self.other = other

        def gather(self, mine, root=0):
            return [mine, self.other]
    steps = 3
    state = {"order": 2, "rho": [[np.full((2, 2), 10.0 * h)] for h in range(steps)],
             "aux": [[np.full((2, 2), -1.0 * h)] for h in range(steps)]}
    other = ([1], {"order": 2, "rho": [[np.full((2, 2), 10.0 * h + 1)] for h in range(steps)],
                   "aux": [[np.full((2, 2), -1.0 * h - 0.5)] for h in range(steps)]})
    whole = _every_spin(state, [0], TwoRanks(other))
    assert whole["spins"] == [0, 1]
    assert [[m[0, 0] for m in mats] for mats in whole["rho"]] == [[0, 1], [10, 11], [20, 21]]
    assert [[m[0, 0] for m in mats] for mats in whole["aux"]] == [[0, -0.5], [-1, -1.5],
                                                                  [-2, -2.5]]
    rank1 = _my_spins(whole, [1])
    assert [mats[0][0, 0] for mats in rank1["rho"]] == [1, 11, 21]
    assert [mats[0][0, 0] for mats in rank1["aux"]] == [-0.5, -1.5, -2.5]
    assert _my_spins({**whole, "spins": [0]}, [1]) is None
    old = {"rho": state["rho"]}
    assert _my_spins(old, [1]) is old
