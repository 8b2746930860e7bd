"""The machine-learned tier: CHGNet and SevenNet as the engine builds them.

Checked against the packages' own ASE calculators (same numbers), against finite differences
(the forces are the energy's gradient), for energy conservation in NVE through the engine's
own dynamics, for safe checkpoint loading (a pickle that would run code is refused unread),
and under mpirun -np 2 (every rank the serial forces; replicas each with their own model).
"""
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

from meltquench import driver
from meltquench.calculators import CalculatorSettings, MLCalculator, MLSettings, describe
from meltquench.config import load_config
from meltquench.errors import UserError
from meltquench.structures import v2o3_rhombohedral

torch = pytest.importorskip("torch", reason="the ml extra (make test installs it)")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::UserWarning", "ignore::FutureWarning")

ENGINES = ["chgnet", "sevennet"]


@pytest.fixture(scope="module")
def models():
    """One calculator per engine for the module (loading takes seconds)."""
    return {engine: MLCalculator(engine, {"threads": 1}) for engine in ENGINES}


def hot_cell(seed=3):
    atoms = v2o3_rhombohedral()
    atoms.rattle(0.1, seed=seed)
    return atoms


def test_dispersion_is_added_and_the_plan_names_the_model():
    for engine, label in (("chgnet", "CHGNet 0.3.0"), ("sevennet", "SevenNet 7net-0")):
        s = CalculatorSettings.from_dict({"name": engine})
        assert s.dispersion == "d3bj"  # MPtrj (PBE+U) has none: D3(BJ) as for GPAW
        assert describe(s) == f"{label}, D3(BJ)"
    s = CalculatorSettings.from_dict({"name": "chgnet", "ml": {"model": "0.2.0"}})
    assert describe(s).startswith("CHGNet 0.2.0")


def test_chgnet_matches_the_chgnet_package(models):
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    atoms = hot_cell()
    theirs = atoms.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.calc = CHGNetCalculator(CHGNet.load(verbose=False), use_device="cpu")
    atoms.calc = models["chgnet"]
    assert atoms.get_potential_energy() == pytest.approx(theirs.get_potential_energy(),
                                                         abs=1e-5)
    assert np.abs(atoms.get_forces() - theirs.get_forces()).max() < 1e-5
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()


def test_sevennet_matches_the_sevenn_package(models):
    from sevenn.calculator import SevenNetCalculator
    atoms = hot_cell()
    theirs = atoms.copy()
    theirs.calc = SevenNetCalculator("7net-0", device="cpu")  # trusted: the wheel's own file
    atoms.calc = models["sevennet"]
    assert atoms.get_potential_energy() == pytest.approx(theirs.get_potential_energy(),
                                                         abs=1e-5)
    assert np.abs(atoms.get_forces() - theirs.get_forces()).max() < 1e-5


@pytest.mark.parametrize("engine", ENGINES)
def test_forces_are_the_gradient_of_the_energy(models, engine):
    atoms = hot_cell(seed=5)
    atoms.calc = models[engine]
    forces = atoms.get_forces()
    h = 1e-3  # central differences in float32 models: 1e-3 Å balances truncation and noise
    for i, c in ((0, 0), (4, 2), (7, 1)):
        energies = []
        for sign in (1, -1):
            probe = atoms.copy()
            probe.positions[i, c] += sign * h
            probe.calc = models[engine]
            energies.append(probe.get_potential_energy())
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert fd == pytest.approx(forces[i, c], abs=0.02), (i, c, fd, forces[i, c])


def test_nve_through_the_engine_conserves_energy(tmp_path):
    """CHGNet + D3 in NVE at ~1000 K for 50 fs: the conserved quantity drifts by far less than
    the potential energy fluctuates (float32 models are not exactly conservative: a bound, not
    zero)."""
    cfg = load_config(preset="demo", overrides=[
        "calculator.name=chgnet", "calculator.ml.threads=1", "dynamics.thermostat=nve",
        "dynamics.timestep_fs=1.0", "schedule.T_start_K=2000", "schedule.T_melt_K=2000",
        "schedule.T_final_K=2000", "schedule.heat_ps=0.05", "schedule.melt_ps=0",
        "schedule.quench_ps=0", "schedule.final_ps=0", "dynamics.final_relax=null",
        "analysis.enabled=false", "output.progress=none"])
    driver.run(cfg, run_dir=tmp_path / "nve")
    lines = (tmp_path / "nve" / "md.log").read_text().splitlines()
    names = lines[0][1:].split()
    rows = np.array([[float(x) for x in line.split()[:-1]] for line in lines[1:]])
    e_pot = rows[:, names.index("E_pot_eV")]
    e_cons = rows[:, names.index("E_conserved_eV")]
    assert len(e_cons) == 51
    assert np.ptp(e_pot) > 0.5  # the atoms really move: 10 mobile atoms at ~1000 K
    assert np.ptp(e_cons) < 0.02 * np.ptp(e_pot), (np.ptp(e_cons), np.ptp(e_pot))


def test_thread_count_follows_the_key_then_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert MLSettings().thread_count() == 3
    assert MLSettings(threads=2).thread_count() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert MLSettings().thread_count() == 1
    before = torch.get_num_threads()
    try:
        MLCalculator("chgnet", {"threads": 2})
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(UserError, match="threads must be at least 1"):
        MLSettings(threads=0)


def test_under_mpi_the_model_rank_takes_the_node_ranks_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cores = os.cpu_count()
    assert MLSettings().thread_count(node_ranks=2) == min(2, cores)
    assert MLSettings().thread_count(node_ranks=10 * cores) == cores  # never beyond the node
    assert MLSettings(threads=1).thread_count(node_ranks=2) == 1  # a given count is kept
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert MLSettings().thread_count(node_ranks=1) == 2


def test_a_checkpoint_of_ones_own_is_read_as_weights_only(tmp_path, models):
    from chgnet.model import CHGNet
    net = CHGNet.load(verbose=False)
    path = tmp_path / "my-chgnet.pth.tar"
    torch.save({"model": net.as_dict()}, path)
    mine = MLCalculator("chgnet", {"model": str(path), "threads": 1})
    atoms, ref = hot_cell(), hot_cell()
    atoms.calc, ref.calc = mine, models["chgnet"]
    assert np.abs(atoms.get_forces() - ref.get_forces()).max() < 1e-6
    assert "checkpoint" in describe(CalculatorSettings.from_dict(
        {"name": "chgnet", "ml": {"model": str(path)}}))


class _RunsCode:
    """Unpickling this would run a shell command: a checkpoint a user may have received."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path, engine):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _RunsCode(marker), "config": {}}, f)
    torch.save({"model": _RunsCode(marker)}, tmp_path / "evil2.pth")
    for file in (path, tmp_path / "evil2.pth"):
        with pytest.raises(UserError, match="weights-only") as err:
            MLCalculator(engine, {"model": str(file)})
        assert "\n" not in str(err.value)
    assert not marker.exists()


def test_bad_models_give_one_line():
    with pytest.raises(UserError, match="neither a shipped chgnet model") as err:
        MLCalculator("chgnet", {"model": "0.3"})
    assert "did you mean '0.3.0'" in str(err.value)
    with pytest.raises(UserError, match="modal"):
        MLCalculator("sevennet", {"model": "7net-mf-0"})  # multi-fidelity needs a modal
    with pytest.raises(UserError, match="unknown key 'calculator.ml.modle'"):
        CalculatorSettings.from_dict({"name": "chgnet", "ml": {"modle": "x"}})


def test_missing_package_names_the_extra(tmp_path):
    fake = tmp_path / "fake"
    (fake / "chgnet").mkdir(parents=True)
    (fake / "chgnet" / "__init__.py").write_text("raise ImportError('no chgnet here')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "meltquench.cli", "run", "--set", "calculator.name=chgnet",
         "--set", "output.progress=log", "-o", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(fake)})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'meltquench[ml]'" in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()


MPI_SCRIPT = """
import sys, warnings
warnings.filterwarnings("ignore")
import numpy as np
from mpi4py import MPI
from meltquench.calculators import MLCalculator
from meltquench.structures import v2o3_rhombohedral
atoms = v2o3_rhombohedral()
atoms.rattle(0.1, seed=3)
atoms.calc = MLCalculator(sys.argv[1], {"threads": 1})
f = atoms.get_forces()
e = atoms.get_potential_energy()
allf = MPI.COMM_WORLD.gather(f)
alle = MPI.COMM_WORLD.gather(e)
if MPI.COMM_WORLD.rank == 0:
    np.save(sys.argv[2], np.array(allf))
    np.save(sys.argv[3], np.array(alle))
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_mpi_ranks_get_the_serial_forces(tmp_path, mpirun, models, engine):
    script = tmp_path / "ml_mpi.py"
    script.write_text(MPI_SCRIPT)
    mpirun(["python", str(script), engine, str(tmp_path / "f.npy"), str(tmp_path / "e.npy")],
           np=2)
    forces, energies = np.load(tmp_path / "f.npy"), np.load(tmp_path / "e.npy")
    atoms = hot_cell()
    atoms.calc = models[engine]
    for rank in range(2):
        assert np.array_equal(forces[rank], forces[0])  # bit for bit on every rank
        assert np.abs(forces[rank] - atoms.get_forces()).max() < 1e-5
        assert energies[rank] == pytest.approx(atoms.get_potential_energy(), abs=1e-5)


WAIT_SCRIPT = """
import sys, time
import numpy as np
import torch
from mpi4py import MPI
from meltquench.calculators import MLCalculator
from meltquench.kernels.parallel import wait_for_root
comm = MPI.COMM_WORLD
MLCalculator("chgnet", {})  # threads: null
threads = torch.get_num_threads() if comm.rank == 0 else 0
comm.Barrier()
cpu, wall = time.process_time(), time.time()
if comm.rank == 0:
    time.sleep(1.5)  # rank 0 runs the model; the others wait for it
wait_for_root(comm)
out = comm.gather((threads, time.process_time() - cpu, time.time() - wall))
if comm.rank == 0:
    np.save(sys.argv[1], np.array(out))
"""


def test_under_mpi_the_other_ranks_wait_asleep_and_rank_0_takes_their_cores(tmp_path, mpirun):
    script = tmp_path / "wait.py"
    script.write_text(WAIT_SCRIPT)
    mpirun(["python", str(script), str(tmp_path / "out.npy")], np=2)  # OMP_NUM_THREADS=1
    (threads, _, _), (_, cpu_waiting, wall_waiting) = np.load(tmp_path / "out.npy")
    assert threads == min(2, os.cpu_count())
    assert wall_waiting > 1.4  # rank 1 did wait for rank 0 ...
    assert cpu_waiting < 0.5  # ... without spinning (MPI's blocking barrier: about 1.5 s)


def test_replicas_under_mpi_each_load_their_model_and_equal_serial_runs(tmp_path, mpirun):
    sets = ["calculator.name=chgnet", "calculator.ml.threads=1", "replicas.count=2",
            "schedule.heat_ps=0.004", "schedule.melt_ps=0.004", "schedule.quench_ps=0.004",
            "schedule.final_ps=0.004", "dynamics.final_relax=null", "output.progress=log"]
    args = [a for s in sets for a in ("--set", s)]
    mpirun(["python", "-m", "meltquench.cli", "run", *args, "-o", str(tmp_path / "mpi")], np=2)
    subprocess.run([sys.executable, "-m", "meltquench.cli", "run", *args, "-o",
                    tmp_path / "serial"], check=True, capture_output=True, timeout=600)
    from ase.io import read
    for i in range(2):
        a = read(tmp_path / "mpi" / f"replica-{i}" / "trajectory.traj", ":")
        b = read(tmp_path / "serial" / f"replica-{i}" / "trajectory.traj", ":")
        assert len(a) == len(b) == 9
        assert max(np.abs(x.positions - y.positions).max() for x, y in zip(a, b)) < 1e-8
    # different seeds: the two replicas are different runs
    a0 = read(tmp_path / "mpi" / "replica-0" / "trajectory.traj", -1)
    a1 = read(tmp_path / "mpi" / "replica-1" / "trajectory.traj", -1)
    assert np.abs(a0.positions - a1.positions).max() > 1e-3
