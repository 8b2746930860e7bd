"""Shared test helpers.

``run_mpi(args, np=2)`` runs a command under ``mpirun`` (as root and with more ranks than
cores, as on the CI machine) and returns the completed process; it fails the test with the
command's output when the command fails.
"""
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MPIRUN = shutil.which("mpirun")

TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """For pytest-xdist's ``--dist loadgroup`` (``make test`` runs a worker per core, at most
    4): tests that share a module-scoped fixture of ours (a GPAW or mpirun run made once for
    several tests) are one group, run by one worker, so the fixture is made once; every other
    test is handed out on its own. Tests linked through two such fixtures (``serial`` and
    ``parallel``) are one group. Without xdist the marks do nothing."""
    parent = {}

    def root(key):
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared_by = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        keys = []
        for name in getattr(info, "names_closure", ()):
            definitions = info.name2fixturedefs.get(name) or ()
            fixture = definitions[-1] if definitions else None
            if fixture is None or fixture.scope not in ("module", "package", "session"):
                continue
            source = Path(inspect.getfile(fixture.func)).resolve()
            if source.parent == TESTS:
                keys.append(f"{source.stem}.{name}")
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
        if keys:
            shared_by[item] = keys[0]
    for item, key in shared_by.items():
        item.add_marker(pytest.mark.xdist_group(root(key)))


def mpi_env():
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl_vader_single_copy_mechanism="none",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               # ranks waiting in MPI yield the core: under pytest -n 2 another test shares it
               OMPI_MCA_mpi_yield_when_idle="1")
    return env


def run_mpi(args, np=2, timeout=600, cwd=None, check=True):
    """Run ``args`` (a list; a leading "python" means this interpreter) under mpirun -np ``np``."""
    assert MPIRUN, "mpirun not found: run 'make setup' (installs openmpi-bin)"
    args = [sys.executable if a == "python" else a for a in args]
    cmd = [MPIRUN, "-np", str(np), "--oversubscribe"] + list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=mpi_env())
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                    f"{proc.stderr[-4000:]}")
    return proc


@pytest.fixture
def mpirun():
    return run_mpi


def tiny_pair_run(run_dir, *extra):
    """``meltquench run`` of the 10-atom rhombohedral V2O3 cell with the pair potential (no
    D3), 4 fs heat and 2 fs quench, into ``run_dir``, with ``extra`` CLI arguments; a GPAW
    finish or benchmark then computes on its ``final.traj``. Fails the test if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "meltquench.cli", "run", "--set",
         "structure.builder=v2o3-rhombohedral", "--set", "structure.repeat=[1,1,1]",
         "--set", "calculator.name=pair", "--set", "calculator.dispersion=null",
         "--set", "schedule.heat_ps=0.004", "--set", "schedule.melt_ps=0",
         "--set", "schedule.quench_ps=0.002", "--set", "schedule.final_ps=0",
         "--set", "analysis.enabled=false", "--set", "output.progress=log",
         *extra, "-o", str(run_dir)], capture_output=True, text=True, timeout=900, env=mpi_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def fresh_gpaw_forces(atoms, settings, width, folder, apply_constraint=True):
    """Forces (eV/Å; ``apply_constraint`` as ASE's) on a copy of ``atoms`` of a fresh GPAW of
    ``settings`` (``{"gpaw": {...}, ...}``) at Fermi-Dirac ``width`` (eV), kept fixed, with
    the SCF converged tightly; it writes into ``folder``."""
    from meltquench.calculators import make_calculator
    probe = atoms.copy()
    gpaw = {**settings["gpaw"], "electronic_temperature": "fixed",
            "occupations": {"name": "fermi-dirac", "width": width},
            "convergence": {"energy": 1e-6, "density": 1e-6, "eigenstates": 1e-10}}
    probe.calc = make_calculator({"name": "gpaw", **settings, "gpaw": gpaw}, directory=folder)
    return probe.get_forces(apply_constraint=apply_constraint)


@pytest.fixture
def fake_potcars(tmp_path, monkeypatch):
    """Stand-in VASP POTCARs for V, V_sv (the default) and O (VASP's are licensed), with
    VASP_PP_PATH set to them."""
    pp = tmp_path / "pp"
    for element in ("V", "V_sv", "O"):
        (pp / "potpaw_PBE" / element).mkdir(parents=True)
        (pp / "potpaw_PBE" / element / "POTCAR").write_text(f" PAW_PBE {element} 06Sep2000\n")
    monkeypatch.setenv("VASP_PP_PATH", str(pp))
    return pp
