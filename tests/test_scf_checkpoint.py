"""A GPAW SCF stopped in the middle resumes from its density matrix (calculators/scf_checkpoint).

The 10-atom rhombohedral V2O3 cell, rattled, GPAW LCAO sz(dzp), h 0.25 Å, PBE (no U, as
the demo), spin-polarised so that both spins' matrices are kept, SCF converged tightly: the
resumed SCF must reach the uninterrupted one's energy and forces in fewer iterations than a
fresh start takes; an SCF of other positions is not resumed.
"""
import numpy as np
import pytest

from meltquench import calculators
from meltquench.calculators.scf_checkpoint import SCFCheckpoint, gpaw_calculator
from meltquench.errors import Interrupted
from meltquench.structures import v2o3_rhombohedral

pytestmark = pytest.mark.xdist_group("gpaw")

SETTINGS = {"name": "gpaw", "dispersion": None, "spinpol": True,
            "gpaw": {"basis": "sz(dzp)", "h": 0.25, "hubbard_u": {},
                     "electronic_temperature": "fixed",
                     "occupations": {"name": "fermi-dirac", "width": 0.1},
                     "convergence": {"energy": 1e-7, "density": 1e-6, "eigenstates": 1e-10}}}
STOP_AT = 8


def atoms_with(folder, shift=0.0):
    pytest.importorskip("gpaw")
    atoms = v2o3_rhombohedral()
    atoms.positions += np.random.default_rng(3).normal(0.0, 0.1, atoms.positions.shape)
    atoms.positions[0, 0] += shift
    calculators.prepare_atoms(SETTINGS, atoms)
    atoms.calc = calculators.make_calculator(SETTINGS, directory=folder)
    return atoms


def iterations(atoms):
    return gpaw_calculator(atoms.calc).get_number_of_iterations()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    atoms = atoms_with(tmp_path_factory.mktemp("reference"))
    forces = atoms.get_forces()
    return atoms.get_potential_energy(), forces, iterations(atoms)


def test_a_stopped_scf_resumes_where_it_stopped(tmp_path, reference):
    energy, forces, n_fresh = reference
    assert n_fresh > STOP_AT + 5  # the stop is in the middle
    path = tmp_path / "scf.npz"
    atoms = atoms_with(tmp_path / "stopped")
    keep = SCFCheckpoint(path, every_s=1e9,
                         should_stop=lambda it, s: "stopped for the test" if it == STOP_AT else None)
    assert keep.attach(atoms.calc)
    with pytest.raises(Interrupted, match=f"stopped for the test; the SCF's density after its "
                                          f"iteration {STOP_AT} is in .*scf.npz"):
        atoms.get_forces()
    assert keep.written == 1 and keep.last_iteration == STOP_AT
    with np.load(path, allow_pickle=False) as data:
        assert int(data["spins"]) == 2 and data["rho_0"].shape == data["rho_1"].shape

    again = atoms_with(tmp_path / "resumed")
    note = SCFCheckpoint(path).resume(again.calc, again)
    assert note.startswith(f"the SCF resumes from the density after iteration {STOP_AT}")
    resumed = again.get_forces()
    assert again.get_potential_energy() == pytest.approx(energy, abs=1e-4)
    assert np.abs(resumed - forces).max() < 2e-3
    print(f"fresh SCF {n_fresh} iterations; stopped at {STOP_AT}, resumed in "
          f"{iterations(again)}")
    # it went on from where it was: fewer than a fresh SCF's iterations, which the first
    # STOP_AT iterations and the rest add up to give or take the mixer's lost memory
    n_resumed = iterations(again)
    assert n_resumed < n_fresh - STOP_AT // 2, (n_resumed, n_fresh)


def test_every_iteration_is_kept_and_other_positions_start_afresh(tmp_path, reference):
    path = tmp_path / "scf.npz"
    atoms = atoms_with(tmp_path / "kept")
    keep = SCFCheckpoint(path, every_s=0.0)
    assert keep.attach(atoms.calc)
    atoms.get_forces()
    assert keep.written == iterations(atoms) == keep.last_iteration
    moved = atoms_with(tmp_path / "moved", shift=0.01)
    note = SCFCheckpoint(path).resume(moved.calc, moved)
    assert "starts afresh" in note and "other positions" in note
    assert gpaw_calculator(moved.calc)._dft is None  # untouched: GPAW's own start
    assert SCFCheckpoint(tmp_path / "none.npz").resume(moved.calc, moved) is None
    (tmp_path / "bad.npz").write_bytes(b"not numpy")
    assert "cannot read" in SCFCheckpoint(tmp_path / "bad.npz").resume(moved.calc, moved)


def test_only_gpaw_lcao_at_gamma_is_kept(tmp_path):
    pair = calculators.make_calculator({"name": "pair", "dispersion": None},
                                       directory=tmp_path)
    assert not SCFCheckpoint(tmp_path / "scf.npz").attach(pair)
    atoms = atoms_with(tmp_path / "pw")
    settings = {**SETTINGS, "gpaw": {**SETTINGS["gpaw"], "mode": "pw", "ecut": 200.0}}
    assert not SCFCheckpoint(tmp_path / "scf.npz").attach(
        calculators.make_calculator(settings, directory=tmp_path / "pw"))
    assert SCFCheckpoint(tmp_path / "scf.npz").resume(atoms.calc, atoms) is None


def test_a_run_stopped_in_its_finish_scf_resumes_it_on_restart(tmp_path, monkeypatch, capsys):
    """The run's own GPAW finish (a single point after the pair potential's pre-optimisation),
    stopped in its SCF, resumes that SCF on ``--restart`` (the pre-optimisation, repeated,
    lands on the same positions) and ends where the uninterrupted run does."""
    pytest.importorskip("gpaw")
    from meltquench import driver
    from meltquench.config import load_config
    from ase.io import read
    gpaw = {k: v for k, v in SETTINGS["gpaw"].items() if k != "electronic_temperature"}
    cfg = load_config(overrides=[
        "structure.builder=v2o3-rhombohedral", "structure.repeat=[1,1,1]",
        "calculator.name=pair", "calculator.dispersion=null", "output.progress=none",
        "schedule.heat_ps=0.004", "schedule.melt_ps=0", "schedule.quench_ps=0.002",
        "schedule.final_ps=0", "analysis.enabled=false", "dynamics.final_relax=BFGS",
        "dynamics.relax_steps=3", "finish.relax_steps=0",
        f"finish.calculator={{name: gpaw, dispersion: null, gpaw: {gpaw}}}"])
    full = read(driver.run(cfg, run_dir=tmp_path / "full").run_dir / "final.traj")
    monkeypatch.setattr(driver.MeltQuench, "scf_stop",
                        lambda self, it, s: "stopped for the test" if it == STOP_AT else None)
    with pytest.raises(Interrupted, match=f"iteration {STOP_AT} is in .*scf.npz"):
        driver.run(cfg, run_dir=tmp_path / "part")
    assert (tmp_path / "part" / "scf.npz").exists()
    monkeypatch.undo()
    capsys.readouterr()
    driver.restart(tmp_path / "part")
    assert f"the SCF resumes from the density after iteration {STOP_AT}" in capsys.readouterr().out
    assert not (tmp_path / "part" / "scf.npz").exists()
    part = read(tmp_path / "part" / "final.traj")
    assert np.array_equal(part.positions, full.positions)
    assert part.get_potential_energy() == pytest.approx(full.get_potential_energy(), abs=1e-4)
    assert np.abs(part.get_forces() - full.get_forces()).max() < 2e-3
