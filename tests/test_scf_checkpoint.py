"""A GPAW SCF stopped in the middle resumes where it was (calculators/scf_checkpoint).

The 10-atom rhombohedral V2O3 cell, rattled, GPAW LCAO sz(dzp), h 0.25 Å, PBE (no U, as
the demo), spin-polarised so that both spins' matrices are kept, SCF converged tightly: the
resumed SCF, its mixer's memory kept, must be the rest of the uninterrupted one (the same
iterations in all, the same result to rounding); from the density alone, it must reach the
same result in fewer iterations than a fresh start takes; an SCF of other positions is not
resumed.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from meltquench import calculators
from meltquench.calculators.scf_checkpoint import (MEMORY_PREFIXES, SCFCheckpoint,
                                                    gpaw_calculator)
from meltquench.errors import Interrupted
from meltquench.structures import v2o3_rhombohedral

pytestmark = pytest.mark.xdist_group("gpaw")

SETTINGS = {"name": "gpaw", "dispersion": None, "spinpol": True,
            "gpaw": {"basis": "sz(dzp)", "h": 0.25, "hubbard_u": {},
                     "electronic_temperature": "fixed",
                     "occupations": {"name": "fermi-dirac", "width": 0.1},
                     "convergence": {"energy": 1e-7, "density": 1e-6, "eigenstates": 1e-10}}}
STOP_AT = 8


def atoms_with(folder, shift=0.0, mixer=None):
    pytest.importorskip("gpaw")
    atoms = v2o3_rhombohedral()
    atoms.positions += np.random.default_rng(3).normal(0.0, 0.1, atoms.positions.shape)
    atoms.positions[0, 0] += shift
    settings = SETTINGS if mixer is None else {
        **SETTINGS, "gpaw": {**SETTINGS["gpaw"], "mixer": {"backend": mixer}}}
    calculators.prepare_atoms(settings, atoms)
    atoms.calc = calculators.make_calculator(settings, directory=folder)
    return atoms


def iterations(atoms):
    return gpaw_calculator(atoms.calc).get_number_of_iterations()


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """mixer -> the uninterrupted SCF's energy, forces and iterations"""
    done = {}

    def reference(mixer):
        if mixer not in done:
            atoms = atoms_with(tmp_path_factory.mktemp("reference"), mixer=mixer)
            forces = atoms.get_forces()
            done[mixer] = atoms.get_potential_energy(), forces, iterations(atoms)
        return done[mixer]
    return reference


@pytest.fixture
def reference(references):
    return references(None)


def stopped_at(folder, path, mixer=None):
    atoms = atoms_with(folder, mixer=mixer)
    keep = SCFCheckpoint(path, every_s=1e9,
                         should_stop=lambda it, s: "stopped for the test" if it == STOP_AT else None)
    assert keep.attach(atoms.calc)
    with pytest.raises(Interrupted, match=f"stopped for the test; the SCF's density after its "
                                          f"iteration {STOP_AT} is in .*scf.npz"):
        atoms.get_forces()
    assert keep.written == 1 and keep.last_iteration == STOP_AT
    return keep


@pytest.mark.parametrize("mixer", [None, "msr1"])
def test_a_stopped_scf_goes_on_exactly_as_the_uninterrupted_one(tmp_path, references, mixer):
    """With the mixer's history and the criteria's kept, the resumed SCF is the rest of the
    uninterrupted one: the same iterations in all and the same result to rounding. The
    engine's MD Pulay (the default) and GPAW's MSR1 (the ML presets' finish)."""
    energy, forces, n_fresh = references(mixer)
    assert n_fresh > STOP_AT + 5  # the stop is in the middle
    path = tmp_path / "scf.npz"
    stopped_at(tmp_path / "stopped", path, mixer)
    with np.load(path, allow_pickle=False) as data:
        assert int(data["spins"]) == 2 and data["rho_0"].shape == data["rho_1"].shape
        assert any(key.startswith("mixer/") for key in data.files)

    again = atoms_with(tmp_path / "resumed", mixer=mixer)
    note = SCFCheckpoint(path).resume(again.calc, again)
    assert note.startswith(f"the SCF resumes from the density after iteration {STOP_AT}")
    assert note.endswith("with its mixer's memory")
    resumed = again.get_forces()
    print(f"{mixer or 'md-pulay'}: fresh SCF {n_fresh} iterations; stopped at {STOP_AT}, "
          f"resumed in {iterations(again)}")
    assert iterations(again) == n_fresh - STOP_AT
    assert again.get_potential_energy() == pytest.approx(energy, abs=1e-8)
    assert np.abs(resumed - forces).max() < 1e-8


def test_a_checkpoint_without_the_mixer_memory_resumes_from_the_density(tmp_path, reference):
    """A file with the density matrix alone (session 28's, or a mixer this module cannot
    keep) still resumes: from that density, the mixer afresh, to the same result within the
    SCF's criteria, in fewer iterations than a fresh SCF's."""
    energy, forces, n_fresh = reference
    path = tmp_path / "scf.npz"
    stopped_at(tmp_path / "stopped", path)
    with np.load(path, allow_pickle=False) as data:
        kept = {key: data[key] for key in data.files if not key.startswith(MEMORY_PREFIXES)}
    np.savez(path, **kept)
    again = atoms_with(tmp_path / "resumed")
    note = SCFCheckpoint(path).resume(again.calc, again)
    assert note.endswith(f"iteration {STOP_AT} of the stopped one ({path}), with a fresh mixer")
    resumed = again.get_forces()
    assert again.get_potential_energy() == pytest.approx(energy, abs=1e-4)
    assert np.abs(resumed - forces).max() < 2e-3
    assert iterations(again) < n_fresh - STOP_AT // 2, (iterations(again), n_fresh)


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
    said = capsys.readouterr().out
    assert f"the SCF resumes from the density after iteration {STOP_AT}" in said
    assert "with its mixer's memory" in said
    assert not (tmp_path / "part" / "scf.npz").exists()
    part = read(tmp_path / "part" / "final.traj")
    assert np.array_equal(part.positions, full.positions)
    assert part.get_potential_energy() == pytest.approx(full.get_potential_energy(), abs=1e-8)
    assert np.abs(part.get_forces() - full.get_forces()).max() < 1e-8


def test_a_stopped_scf_goes_on_exactly_under_mpirun(tmp_path):
    """Under ``mpirun -np 2`` (tests/mpi_scf_resume.py): spin-polarised with MSR1, one spin
    per rank (each rank holds one spin's density matrix: both must reach the file), and
    spin-paired with MD Pulay, the grid split over the ranks (each rank's part of the mixer's
    memory goes back to that rank); each resumed SCF is the rest of the uninterrupted one."""
    pytest.importorskip("gpaw")
    from conftest import run_mpi
    out = tmp_path / "resume.json"
    run_mpi(["python", str(Path(__file__).with_name("mpi_scf_resume.py")), str(out)],
            timeout=900)
    report = json.loads(out.read_text())
    assert report["ranks"] == 2
    for name in ("spin-polarised, msr1", "spin-paired, md-pulay"):
        case = report[name]
        full, resumed = case["uninterrupted"], case["resumed"]
        assert case["note"].endswith("with its mixer's memory"), (name, case["note"])
        assert resumed["iterations"] == full["iterations"] - case["stop_at"], name
        assert resumed["energy"] == pytest.approx(full["energy"], abs=1e-8), name
        assert np.abs(np.subtract(resumed["forces"], full["forces"])).max() < 1e-8, name
