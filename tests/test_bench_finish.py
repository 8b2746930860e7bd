"""``benchmarks/bench_finish.py``: the finish's single point of a run's final structure at a
ladder of SCF density criteria, with the run's own calculator as the spot check."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from conftest import fresh_gpaw_forces, mpi_env, tiny_pair_run

pytest.importorskip("gpaw")
REPO = Path(__file__).resolve().parent.parent


def test_bench_finish_measures_a_loose_scf_against_a_tight_one_in_one_scf(tmp_path):
    """A loose criterion (1e-2) stops after fewer SCF iterations, with forces visibly off the
    tight one's (1e-6), which are those of a fresh, tightly converged GPAW at the programme's
    last width (0.05 eV, as the engine's finish computes); the run's calculator (the pair
    potential) is compared with the tight forces on the mobile atoms."""
    run_dir = tmp_path / "run"
    tiny_pair_run(run_dir, "--set", "dynamics.relax_steps=0")
    gpaw = {"h": 0.25, "hubbard_u": {}, "occupations": {"name": "fermi-dirac", "width": 0.3}}
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_finish.py"), str(run_dir),
         "--finish", json.dumps({"name": "gpaw", "dispersion": None, "gpaw": gpaw}),
         "--set", "gpaw.convergence={energy: 1.0e-6, eigenstates: 1.0e-10}",
         "--criteria", "1e-2,1e-6", "-o", str(out)],
        capture_output=True, text=True, timeout=900, env=mpi_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "spot check, pair potential (no dispersion: fitted without it) against the last" \
        in proc.stdout
    result = json.loads((out / "result.json").read_text())
    loose, tight = result["criteria"]
    assert (loose["density"], tight["density"]) == (1e-2, 1e-6)
    assert tight["scf_iterations"] > 1  # it went on from the loose density, not stopped
    assert tight["forces_vs_last"]["max"] == 0 and tight["energy_vs_last_eV"] == 0
    assert loose["forces_vs_last"]["max"] > 1e-3
    assert result["spot_check"]["n_atoms"] == result["mobile"] == 5
    forces = np.load(out / "forces.npz")
    # the tight row equals a fresh GPAW converged tightly at 0.05 eV
    fresh = fresh_gpaw_forces(read(run_dir / "final.traj"), {"dispersion": None, "gpaw": gpaw},
                              0.05, tmp_path / "fresh", apply_constraint=False)
    assert np.abs(forces["1e-06"] - fresh).max() < 0.01
    assert np.abs(forces["0.01"] - fresh).max() > 1e-3
