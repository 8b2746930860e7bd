"""The whole engine on GPAW: `meltquench run` on the 10-atom V2O3 cell, serial and mpirun -np 2."""
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read

from conftest import MPIRUN, fresh_gpaw_forces, mpi_env, run_mpi, tiny_pair_run
from meltquench.observers import read_md_log

ARGS = ["run", "--set", "structure.builder=v2o3-rhombohedral", "--set", "structure.repeat=[1,1,1]",
        "--set", "schedule.heat_ps=0.004", "--set", "schedule.melt_ps=0.002",
        "--set", "schedule.quench_ps=0", "--set", "schedule.final_ps=0",
        "--set", "dynamics.final_relax=null", "--set", "output.progress=log",
        "--set", "analysis.frames=all",
        # No U here: on this tiny cell PBE+U V2O3 has nearly degenerate d-occupation solutions
        # and the SCF can wander for hundreds of iterations (benchmarks/README.md, GPAW part);
        # that U reaches GPAW is tested in test_gpaw.py. h 0.25 Å: the coarsest usable grid.
        # Tight convergence: with GPAW's default criteria the serial and the 2-rank SCF of this
        # cell can settle in different solutions 0.46 eV apart (seen here), so only a tightly
        # converged pair of runs tests the parallel engine rather than the SCF's luck.
        "--set", "calculator.gpaw={h: 0.25, hubbard_u: {}, "
                 "convergence: {energy: 1.0e-6, density: 1.0e-6, eigenstates: 1.0e-10}}"]


COLUMNS = ["step", "time_fs", "T_target_K", "T_kin_K", "E_pot_eV", "E_kin_eV",
           "E_conserved_eV", "s_per_step", "scf_iter"]


def gpaw_has_scalapack():
    from gpaw.utilities import compiled_with_sl
    return compiled_with_sl()


def md_log(run_dir):
    """The numeric md.log columns of COLUMNS, in that order (found by the header's names)."""
    log = read_md_log(run_dir / "md.log")
    return np.column_stack([log[name] for name in COLUMNS])


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gpaw") / "serial"
    proc = subprocess.run([sys.executable, "-m", "meltquench.cli", *ARGS, "-o", str(run_dir)],
                          capture_output=True, text=True, timeout=900, env=mpi_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc.stdout


def test_gpaw_run_serial(serial):
    run_dir, out = serial
    assert "GPAW LCAO sz(dzp), PBE, smearing max(kT, 0.05 eV), D3(BJ)" in out
    log = md_log(run_dir)
    assert log.shape[0] == 4                      # steps 0..3 (6 fs at 2 fs)
    assert (log[1:, 8] > 0).all()                 # SCF iterations logged
    assert (run_dir / "gpaw.txt").stat().st_size > 0
    frames = read(run_dir / "trajectory.traj", ":")
    fixed = frames[0].get_tags() == 1
    assert np.abs(frames[-1].positions[fixed] - frames[0].positions[fixed]).max() < 1e-12
    assert (run_dir / "analysis" / "summary.json").exists()


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gpaw") / "mpi"
    proc = run_mpi(["python", "-m", "meltquench.cli", *ARGS, "-o", str(run_dir)], np=2,
                   timeout=900)
    return run_dir, proc.stdout


def test_gpaw_run_mpirun_np2_equals_serial(serial, parallel):
    run_dir, _ = serial
    mpi_dir, out = parallel
    assert "MPI: 2 ranks" in out
    assert "GPAW parallel layout: kpt 1, domain 2, band 1" in out
    a, b = md_log(run_dir), md_log(mpi_dir)
    assert a.shape == b.shape
    assert np.abs(a[:, 4] - b[:, 4]).max() < 1e-3      # E_pot (eV), within SCF tolerance
    fa = read(run_dir / "final.traj")
    fb = read(mpi_dir / "final.traj")
    assert np.abs(fa.positions - fb.positions).max() < 1e-4


def test_the_electrons_follow_the_programme_and_the_final_optimisation_runs_cold(tmp_path):
    """The smearing width is k_B T_target (at least 0.05 eV) step by step, so the melt runs hot
    and the final optimisation cold: its forces are those of a fresh calculator at 0.05 eV,
    not at the melt's width."""
    from ase import units
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "meltquench.cli", *ARGS,  # later --set wins
                           "--set", "schedule.quench_ps=0.002", "--set", "schedule.final_ps=0.002",
                           "--set", "dynamics.final_relax=FIRE", "--set", "dynamics.relax_steps=2",
                           "--set", "analysis.enabled=false", "-o", str(run_dir)],
                          capture_output=True, text=True, timeout=900, env=mpi_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (run_dir / "md.log").read_text().splitlines()
    names = lines[0][1:].split()
    rows = [line.split() for line in lines[1:]]
    target = np.array([float(r[names.index("T_target_K")]) for r in rows])
    width = np.array([float(r[names.index("width_eV")]) for r in rows])
    np.testing.assert_allclose(width, np.maximum(units.kB * target, 0.05), atol=6e-5)
    assert width.max() > 0.34 and width[0] == width[-1] == 0.05
    cold, hot = distance_to_fresh_forces(
        read(run_dir / "final.traj"), {"gpaw": {"h": 0.25, "hubbard_u": {}}},
        0.05, width.max(), tmp_path)
    assert cold < 0.01 and hot > 5 * cold, (cold, hot)


def distance_to_fresh_forces(final, settings, cold_width, hot_width, folder):
    """Max |F| component difference (eV/Å) between ``final``'s stored forces and those of a
    fresh, tightly converged GPAW of ``settings`` at Fermi-Dirac ``cold_width`` and at
    ``hot_width`` (eV): (cold, hot)."""
    return tuple(np.abs(final.get_forces() - fresh_gpaw_forces(final, settings, width,
                                                                folder / f"fresh-{width}")).max()
                 for width in (cold_width, hot_width))


def test_a_gpaw_finish_computes_cold_at_the_programmes_last_temperature(tmp_path):
    """A finish calculator attached after the programme (the ML presets' GPAW finish) runs at
    the width of the programme's last temperature (300 K: the 0.05 eV floor), not at its
    occupations' width (0.3 eV, for the melt), as the run's own final optimisation does: its
    forces are those of a fresh calculator at 0.05 eV. (It ran at 0.3 eV before session 20.)"""
    gpaw = {"h": 0.25, "hubbard_u": {}, "occupations": {"name": "fermi-dirac", "width": 0.3},
            "convergence": {"energy": 1e-6, "density": 1e-6, "eigenstates": 1e-10}}
    run_dir = tmp_path / "run"
    proc = tiny_pair_run(
        run_dir, "--set", "dynamics.final_relax=FIRE", "--set", "finish.relax_steps=0",
        "--set", f"finish.calculator={{name: gpaw, dispersion: null, gpaw: {gpaw}}}")
    # and the console says at which width the finish computes (gpaw.txt shows the 0.3 eV of
    # its constructor)
    assert ("smearing width 0.050 eV (the programme's last temperature, 300 K)"
            in proc.stdout), proc.stdout[-3000:]
    cold, hot = distance_to_fresh_forces(read(run_dir / "final.traj"),
                                         {"dispersion": None, "gpaw": {"h": 0.25,
                                                                       "hubbard_u": {}}},
                                         0.05, 0.3, tmp_path)
    assert cold < 0.01 and hot > 5 * cold, (cold, hot)


def stopped_and_continued(folder, np=1, extra=()):
    """A run of ARGS stopped after its first step (``--stop-after``), then continued with
    ``--restart``, on ``np`` ranks."""
    cli = ["python", "-m", "meltquench.cli"]
    first = cli + ARGS + list(extra) + ["--stop-after", "0.000001", "-o", str(folder)]
    if np == 1:
        proc = subprocess.run([sys.executable, *first[1:]], capture_output=True, text=True,
                              timeout=900, env=mpi_env())
        assert proc.returncode == 75, proc.stdout[-3000:] + proc.stderr[-3000:]
        proc = subprocess.run([sys.executable, *cli[1:], "run", "--restart", str(folder)],
                              capture_output=True, text=True, timeout=900, env=mpi_env())
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    else:
        proc = run_mpi(first, np=np, timeout=900, check=False)
        assert proc.returncode == 75, proc.stdout[-3000:] + proc.stderr[-3000:]
        proc = run_mpi(cli + ["run", "--restart", str(folder)], np=np, timeout=900)
    assert "continuing from the checkpoint of step 1" in proc.stdout
    assert "not bit for bit" not in proc.stdout
    return folder


def assert_same_run(a, b):
    """Two run folders with the same steps, bit for bit (md.log but its wall times, the
    trajectory)."""
    log_a, log_b = read_md_log(a / "md.log"), read_md_log(b / "md.log")
    assert list(log_a["step"]) == list(log_b["step"]) == [0, 1, 2, 3]
    for name in ("T_target_K", "width_eV", "E_pot_eV", "F_free_eV", "E_conserved_eV",
                 "scf_iter"):
        assert np.array_equal(log_a[name], log_b[name]), name
    frames_a, frames_b = read(a / "trajectory.traj", ":"), read(b / "trajectory.traj", ":")
    assert len(frames_a) == len(frames_b)
    for fa, fb in zip(frames_a, frames_b):
        assert np.array_equal(fa.positions, fb.positions)
        assert np.array_equal(fa.get_momenta(), fb.get_momenta())


def two_rank_restart_is_bit_for_bit(tmp_path, extra, layout):
    """A run of ARGS with ``extra`` on 2 ranks in GPAW's ``layout``, whole and stopped then
    continued: the same run bit for bit."""
    whole = tmp_path / "whole"
    proc = run_mpi(["python", "-m", "meltquench.cli", *ARGS, *extra, "-o", str(whole)], np=2,
                   timeout=900)
    assert f"GPAW parallel layout: {layout}" in proc.stdout
    assert_same_run(whole, stopped_and_continued(tmp_path / "part", np=2, extra=extra))


def test_gpaw_restart_continues_bit_for_bit(serial, tmp_path):
    """Stopped after its first step and continued, a GPAW run ends bit for bit where the
    uninterrupted run ends: the checkpoint holds the forces of its step and what GPAW carries
    between steps (the density-matrix extrapolation's history, the md-pulay mixer's pairs,
    the Fermi level), so each later SCF starts and mixes as it did (without them the runs
    part at 1e-5 Å within a few steps). The smearing widths, a function of the step, are
    those of the uninterrupted run."""
    run_dir, _ = serial
    part = stopped_and_continued(tmp_path / "part")
    assert_same_run(run_dir, part)
    assert len(set(read_md_log(part / "md.log")["width_eV"])) == 3


def test_the_extended_lagrangian_start_restarts_bit_for_bit(serial, tmp_path):
    """With ``extrapolation: xl`` each SCF starts from an auxiliary density matrix propagated
    from six earlier steps' (XL-BOMD); the checkpoint carries them, so a run stopped after its
    first step continues bit for bit."""
    xl = ["--set", "calculator.gpaw.extrapolation=xl"]
    whole = tmp_path / "whole"
    proc = subprocess.run([sys.executable, "-m", "meltquench.cli", *ARGS, *xl, "-o", str(whole)],
                          capture_output=True, text=True, timeout=900, env=mpi_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "extrapolation off" not in (whole / "gpaw.txt").read_text()
    part = stopped_and_continued(tmp_path / "part", extra=xl)
    assert_same_run(whole, part)
    # the same physics as the default start (quadratic extrapolation), reached from other
    # starts: equal to the SCF's precision, not bit for bit
    default, ours = read_md_log(serial[0] / "md.log"), read_md_log(whole / "md.log")
    assert np.allclose(default["E_pot_eV"], ours["E_pot_eV"], atol=1e-3)
    assert not np.array_equal(default["E_pot_eV"][1:], ours["E_pot_eV"][1:])


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_gpaw_restart_under_mpirun_np2_continues_bit_for_bit(parallel, tmp_path):
    """The same on 2 ranks (domain decomposition): each rank's part of the mixer's pairs
    goes into the checkpoint and back to its rank."""
    mpi_dir, _ = parallel
    assert_same_run(mpi_dir, stopped_and_continued(tmp_path / "part", np=2))


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_a_spin_polarised_restart_under_mpirun_np2_continues_bit_for_bit(tmp_path):
    """Spin-polarised on 2 ranks GPAW puts one spin on each rank, so each rank's
    extrapolation history holds its own spin's density matrices: the checkpoint gathers
    them by spin and gives each rank its own back (until session 29 it kept rank 0's, and
    rank 1 restarted from spin 0's matrices)."""
    two_rank_restart_is_bit_for_bit(tmp_path, ["--set", "calculator.spinpol=true"],
                                    "kpt 2, domain 1, band 1")


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
@pytest.mark.skipif(not gpaw_has_scalapack(), reason="GPAW built without ScaLAPACK "
                    "(scripts/setup.sh builds it with Debian's libscalapack-openmpi-dev)")
def test_gpaw_band_parallel_restart_continues_bit_for_bit(tmp_path):
    """And with the bands split over 2 ranks (ScaLAPACK): the density matrices are whole on
    every rank, the grid is not split."""
    two_rank_restart_is_bit_for_bit(tmp_path, ["--set", "calculator.gpaw.parallel={band: 2}"],
                                    "kpt 1, domain 1, band 2")


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_a_restart_on_other_ranks_continues_to_the_scfs_precision_and_says_so(serial, tmp_path):
    """Stopped on 1 rank, continued on 2: the mixer's pairs (one part per rank) do not fit
    the new domain layout, so they are left out, with a line; the run still ends where the
    serial run ends, to the SCF's precision."""
    run_dir, _ = serial
    part = tmp_path / "part"
    proc = subprocess.run([sys.executable, "-m", "meltquench.cli", *ARGS, "--stop-after",
                           "0.000001", "-o", str(part)], capture_output=True, text=True,
                          timeout=900, env=mpi_env())
    assert proc.returncode == 75, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = run_mpi(["python", "-m", "meltquench.cli", "run", "--restart", str(part)], np=2,
                   timeout=900)
    assert ("the checkpoint's mixer pairs do not fit this run (other ranks or settings): it "
            "continues to the SCF's precision, not bit for bit") in proc.stdout
    a, b = md_log(run_dir), md_log(part)
    state = [COLUMNS.index(name) for name in COLUMNS if name != "s_per_step"]
    assert np.array_equal(a[:2, state], b[:2, state])    # steps 0 and 1: the serial part's
    assert np.abs(a[:, 4] - b[:, 4]).max() < 1e-3
    end_a, end_b = read(run_dir / "trajectory.traj", -1), read(part / "trajectory.traj", -1)
    assert np.abs(end_a.positions - end_b.positions).max() < 1e-4


def test_forces_are_the_derivative_of_the_free_energy_of_the_engines_stack(tmp_path):
    """GPAW + D3 as the engine builds them (hot smearing, tight SCF): the forces are minus the
    finite-difference derivative of the free energy, which is what the MD's conserved quantity
    uses (D3 reports its free energy, so the sum has one)."""
    from meltquench.calculators import make_calculator
    from meltquench.dynamics import make_dynamics
    from meltquench.structures import v2o3_rhombohedral
    settings = {"name": "gpaw", "dispersion": "auto",
                "gpaw": {"h": 0.25, "hubbard_u": {}, "electronic_temperature": "fixed",
                         "occupations": {"name": "fermi-dirac", "width": 0.3},
                         "convergence": {"energy": 1e-7, "density": 1e-7, "eigenstates": 1e-12}}}
    atoms = v2o3_rhombohedral()
    atoms.rattle(0.03, seed=2)
    atoms.calc = make_calculator(settings, directory=tmp_path)
    assert "free_energy" in atoms.calc.implemented_properties
    force = atoms.get_forces()[3, 0]
    dyn = make_dynamics("nve", atoms, 1.0, 300.0)
    assert dyn.get_free_energy() == atoms.get_potential_energy(force_consistent=True)
    assert abs(dyn.get_free_energy() - atoms.get_potential_energy()) > 1e-3
    h = 0.005  # Å
    free = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[3, 0] += sign * h
        moved.calc = make_calculator(settings, directory=tmp_path / f"fd{sign}")
        free.append(moved.get_potential_energy(force_consistent=True))
    assert abs(force + (free[0] - free[1]) / (2 * h)) < 5e-3
