"""The whole engine on GPAW: `meltquench run` on the 10-atom V2O3 cell, serial and mpirun -np 2."""
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read

from conftest import mpi_env, run_mpi
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


def test_gpaw_run_mpirun_np2_equals_serial(serial, tmp_path):
    run_dir, _ = serial
    proc = run_mpi(["python", "-m", "meltquench.cli", *ARGS, "-o", str(tmp_path / "mpi")], np=2,
                   timeout=900)
    assert "MPI: 2 ranks" in proc.stdout
    assert "GPAW parallel layout: kpt 1, domain 2, band 1" in proc.stdout
    a, b = md_log(run_dir), md_log(tmp_path / "mpi")
    assert a.shape == b.shape
    assert np.abs(a[:, 4] - b[:, 4]).max() < 1e-3      # E_pot (eV), within SCF tolerance
    fa = read(run_dir / "final.traj")
    fb = read(tmp_path / "mpi" / "final.traj")
    assert np.abs(fa.positions - fb.positions).max() < 1e-4


def test_the_electrons_follow_the_programme_and_the_final_optimisation_runs_cold(tmp_path):
    """The smearing width is k_B T_target (at least 0.05 eV) step by step, so the melt runs hot
    and the final optimisation cold: its forces are those of a fresh calculator at 0.05 eV,
    not at the melt's width."""
    from ase import units
    from meltquench.calculators import make_calculator
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
    final = read(run_dir / "final.traj")
    forces = {}
    for w in (0.05, width.max()):
        atoms = final.copy()
        atoms.calc = make_calculator(
            {"name": "gpaw", "gpaw": {"h": 0.25, "hubbard_u": {}, "electronic_temperature":
                                      "fixed", "occupations": {"name": "fermi-dirac", "width": w},
                                      "convergence": {"energy": 1e-6, "density": 1e-6,
                                                      "eigenstates": 1e-10}}},
            directory=tmp_path / f"fresh-{w}")
        forces[w] = atoms.get_forces()
    cold = np.abs(final.get_forces() - forces[0.05]).max()
    hot = np.abs(final.get_forces() - forces[width.max()]).max()
    assert cold < 0.01 and hot > 5 * cold, (cold, hot)


def test_gpaw_restart_continues_with_the_same_electronic_temperatures(serial, tmp_path):
    """Stopped after its first step and continued, a GPAW run uses the smearing widths of the
    uninterrupted run at every step (they are a function of the step) and ends where it does,
    to the SCF's precision (a restart starts a new SCF, so not bit for bit)."""
    run_dir, _ = serial
    part = tmp_path / "part"
    cli = [sys.executable, "-m", "meltquench.cli"]
    proc = subprocess.run(cli + ARGS + ["--stop-after", "0.000001", "-o", str(part)],
                          capture_output=True, text=True, timeout=900, env=mpi_env())
    assert proc.returncode == 75, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = subprocess.run(cli + ["run", "--restart", str(part)], capture_output=True, text=True,
                          timeout=900, env=mpi_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def columns(folder):
        log = read_md_log(folder / "md.log")
        return {name: log[name] for name in ("step", "T_target_K", "width_eV", "E_pot_eV")}
    a, b = columns(run_dir), columns(part)
    assert list(a["step"]) == list(b["step"]) == [0, 1, 2, 3]
    assert np.array_equal(a["width_eV"], b["width_eV"]) and len(set(a["width_eV"])) == 3
    np.testing.assert_allclose(b["E_pot_eV"], a["E_pot_eV"], atol=2e-3)
    end_a, end_b = read(run_dir / "trajectory.traj", -1), read(part / "trajectory.traj", -1)
    assert np.abs(end_a.positions - end_b.positions).max() < 1e-3


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
