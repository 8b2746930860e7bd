"""meltquench.calculators.mdpulay.MDPulay: GPAW's Pulay mixing with a memory across MD steps.

Independent reference: GPAW's own Pulay mixer. With keep=False MDPulay must *be* it (same
iterations, same energies to rounding), serial and with the grid split over two MPI ranks
(which checks the inner products are summed over the domain); with keep=True the SCFs must
end at the same energies (to the convergence criteria) in fewer iterations.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gpaw")

from conftest import MPIRUN, mpi_env, run_mpi  # noqa: E402

SCRIPT = str(Path(__file__).with_name("mpi_gpaw_mixer.py"))


def _serial(out):
    env = mpi_env()
    for key in list(env):
        if key.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_")):
            del env[key]
    subprocess.run([sys.executable, SCRIPT, str(out)], check=True, timeout=900, env=env)
    return json.loads(Path(out).read_text())


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    return _serial(tmp_path_factory.mktemp("mixer") / "serial.json")


def _check_is_gpaw_pulay(result):
    ref = np.array(result["gpaw-pulay"])
    same = np.array(result["md-pulay-nokeep"])
    assert np.array_equal(same[:, 1], ref[:, 1])  # iteration by iteration the same mixer
    assert np.abs(same[:, 0] - ref[:, 0]).max() < 1e-7


def test_without_memory_it_is_gpaws_pulay(serial):
    _check_is_gpaw_pulay(serial)


def test_memory_across_steps_same_energies_fewer_iterations(serial):
    ref = np.array(serial["gpaw-pulay"])
    for name in ("md-pulay-keep", "md-pulay-default"):
        run = np.array(serial[name])
        # GPAW's default criteria (energy 5e-4 eV per valence electron; 66 electrons here)
        assert np.abs(run[:, 0] - ref[:, 0]).max() < 2e-3, name
        # the first SCF has no memory yet; the next three must need fewer iterations
        assert run[1:, 1].sum() < ref[1:, 1].sum(), (name, run[:, 1], ref[:, 1])


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_two_ranks_split_grid_is_still_gpaws_pulay_and_equals_serial(serial, tmp_path):
    out = tmp_path / "mpi.json"
    run_mpi(["python", SCRIPT, str(out)], np=2)
    result = json.loads(out.read_text())
    assert result["gpaw_comm_size"] == 2
    _check_is_gpaw_pulay(result)
    for name in ("md-pulay-keep", "md-pulay-default"):
        assert np.abs(np.array(result[name])[:, 0] - np.array(serial[name])[:, 0]).max() < 2e-3


def test_config_selects_it_and_checks_its_keys():
    from meltquench.calculators import gpaw_parameters
    from meltquench.errors import UserError
    from meltquench.calculators.mdpulay import MDPulay
    kw = gpaw_parameters({"mixer": {"backend": "md-pulay", "beta": 0.3, "nmaxold": 30}})
    assert isinstance(kw["mixer"], MDPulay)
    assert kw["mixer"].mixer_params == {"nmaxold": 30, "beta": 0.3} and kw["mixer"].keep
    assert gpaw_parameters({"mixer": {"backend": "pulay", "beta": 0.1}})["mixer"] == {
        "backend": "pulay", "beta": 0.1}
    with pytest.raises(UserError, match="unknown key.*history.*md-pulay"):
        gpaw_parameters({"mixer": {"backend": "md-pulay", "history": 3}})
