"""Surviving the scheduler and running under mpirun: signals, SIGKILL, MPI, replicas, dry run."""
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ase.io import read

from conftest import mpi_env, run_mpi
from meltquench.errors import UserError
from meltquench.observers import read_md_log

FAST = ["--set", "calculator.name=pair", "--set", "calculator.dispersion=null",
        "--set", "output.progress=log", "--set", "dynamics.final_relax=null"]
LONG = ["--set", "schedule.heat_ps=0.6", "--set", "schedule.melt_ps=1.0",
        "--set", "schedule.quench_ps=1.0", "--set", "schedule.final_ps=0.4",
        "--set", "output.checkpoint_interval=50", "--set", "analysis.enabled=false",
        "--set", "structure.builder=v2o3"]          # 1500 steps, 60 atoms
CLI = [sys.executable, "-m", "meltquench.cli"]


def cli(*args, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=600, env=mpi_env(), **kw)


def logged_steps(run_dir):
    try:
        steps = read_md_log(run_dir / "md.log")["step"]
    except UserError:  # created, its header not written yet
        return []
    return [int(step) for step in steps]


def start_and_wait(run_dir, min_step):
    proc = subprocess.Popen(CLI + ["run", *FAST, *LONG, "-o", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=mpi_env())
    deadline = time.time() + 300
    while time.time() < deadline:
        if (run_dir / "md.log").exists() and len(logged_steps(run_dir)) > min_step:
            return proc
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run did not get going")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    proc = cli("run", *FAST, *LONG, "-o", run_dir)
    assert proc.returncode == 0, proc.stderr
    return read(run_dir / "final.traj"), logged_steps(run_dir)


def test_sigterm_checkpoints_and_restart_finishes_exactly(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = start_and_wait(run_dir, 120)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, (out, err)
    assert "--restart" in err
    steps = logged_steps(run_dir)
    assert steps[-1] < 1500  # stopped early, right after the step it was on
    proc = cli("run", "--restart", run_dir)
    assert proc.returncode == 0, proc.stderr
    final = read(run_dir / "final.traj")
    assert np.abs(final.positions - reference[0].positions).max() < 1e-10
    assert logged_steps(run_dir) == reference[1]


def test_sigkill_loses_only_the_steps_since_the_checkpoint(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = start_and_wait(run_dir, 170)
    proc.kill()
    proc.communicate()
    assert not (run_dir / "final.traj").exists()
    proc = cli("run", "--restart", run_dir)
    assert proc.returncode == 0, proc.stderr
    assert "continuing from the checkpoint of step" in proc.stdout
    final = read(run_dir / "final.traj")
    assert np.abs(final.positions - reference[0].positions).max() < 1e-10
    assert logged_steps(run_dir) == reference[1]


def test_mpirun_np2_gives_the_serial_run_and_rank0_writes(tmp_path):
    args = ["run", *FAST, "--set", "structure.builder=v2o3"]
    serial = cli(*args, "-o", tmp_path / "serial")
    assert serial.returncode == 0, serial.stderr
    run_mpi(["python", "-m", "meltquench.cli", *args, "-o", str(tmp_path / "mpi")], np=2)
    a = read(tmp_path / "serial" / "final.traj")
    b = read(tmp_path / "mpi" / "final.traj")
    assert np.abs(a.positions - b.positions).max() < 1e-10
    assert logged_steps(tmp_path / "mpi") == list(range(21))  # one writer: no duplicate lines
    sa = (tmp_path / "serial" / "analysis" / "summary.json").read_text()
    sb = (tmp_path / "mpi" / "analysis" / "summary.json").read_text()
    assert sa.replace(str(tmp_path / "serial"), "") == sb.replace(str(tmp_path / "mpi"), "")


def test_two_replicas_in_one_mpirun_equal_each_replica_alone(tmp_path):
    from meltquench.config import load_config, replica_config
    from meltquench import driver
    sets = ["calculator.name=pair", "calculator.dispersion=null", "dynamics.final_relax=null",
            "output.progress=none", "replicas.count=2",
            "replicas.vary={schedule.T_melt_K: [3000, 3500]}"]
    args = [a for s in sets for a in ("--set", s)]
    proc = run_mpi(["python", "-m", "meltquench.cli", "run", *args, "-o", str(tmp_path / "rep")],
                   np=2)
    assert "Over 2 replicas" in proc.stdout
    cfg = load_config(preset="demo", overrides=sets)  # what the CLI runs without a config
    for i in range(2):
        alone = driver.run(replica_config(cfg, i), run_dir=tmp_path / f"alone-{i}").atoms
        together = read(tmp_path / "rep" / f"replica-{i}" / "final.traj")
        assert np.abs(alone.positions - together.positions).max() < 1e-10
    a0 = read(tmp_path / "rep" / "replica-0" / "final.traj")
    a1 = read(tmp_path / "rep" / "replica-1" / "final.traj")
    assert np.abs(a0.positions - a1.positions).max() > 1e-3  # different seeds and programmes
    assert (tmp_path / "rep" / "replicas-summary.csv").read_text().startswith("pair,region")


def test_dry_run_of_the_paper_preset_never_touches_the_calculator(tmp_path):
    fake = tmp_path / "fake"
    (fake / "gpaw").mkdir(parents=True)
    (fake / "gpaw" / "__init__.py").write_text("raise RuntimeError('GPAW was imported')\n")
    env = {**mpi_env(), "PYTHONPATH": str(fake)}
    proc = subprocess.run(CLI + ["run", "--preset", "paper-perfect", "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("O144V96", "240 atoms", "crystal (fixed): 120 atoms", "melt (mobile): 120 atoms",
                 "MD steps 9000", "18 ps", "estimated cost", "parallel layout", "U 3.25 eV"):
        assert word in out, word
    assert not (tmp_path / "runs").exists()


def test_a_run_under_mpirun_writes_plain_lines_without_escape_codes(tmp_path):
    """Batch logs are plain text: under mpirun every rank's stdout is a pseudo-terminal, and
    numba's error colouring (colorama) would write an ANSI reset to it at exit."""
    proc = run_mpi(["python", "-m", "meltquench.cli", "run", "--set", "calculator.name=pair",
                    "--set", "dynamics.relax_steps=2", "-o", str(tmp_path / "run")], np=2)
    assert "Done:" in proc.stdout
    assert "\x1b" not in proc.stdout + proc.stderr
