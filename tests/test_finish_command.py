"""``meltquench finish RUN_DIR``: the finish calculator's part on a run that is over.

Pair potentials as in test_finish.py (the run's: cutoff 6 Å; the finish's: 5 Å), so every
structure shows which one computed it; one GPAW test under mpirun.
"""
import json

import numpy as np
import pytest
import yaml
from ase.io import read

from conftest import fresh_gpaw_forces, run_mpi, tiny_pair_run
from meltquench import driver
from meltquench.calculators import PairPotential
from meltquench.errors import Interrupted, UserError
from meltquench.driver import OPTIMISERS
from meltquench.finish import CHECKPOINT_NAME, check_frames, finish, finish_config
from meltquench.model import relax_region
from test_cli import assert_one_line_error, mq
from test_finish import FINISH_PAIR, config

FINISH = "finish.calculator={name: pair, dispersion: null, pair: {cutoff: 5.0, cutoff_on: 4.0}}"
RELAX = ("dynamics.final_relax=BFGS", "dynamics.relax_steps=5", "finish.relax_steps=6",
         "finish.check_every=2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run made with its finish and without it (``finish.calculator: null``)."""
    base = tmp_path_factory.mktemp("runs")
    driver.run(config(*RELAX), run_dir=base / "with")
    driver.run(config(*RELAX, "finish.calculator=null"), run_dir=base / "without")
    return base


def finished(tmp_path, runs, *extra, out="finish", **kw):
    cfg = finish_config(runs / "without", overrides=[FINISH, *extra])
    summary = finish(runs / "without", cfg, out=tmp_path / out, **kw)
    return summary, read(tmp_path / out / "final.traj")


def test_finishing_a_finishless_run_gives_the_run_made_with_its_finish(tmp_path, runs, capsys):
    summary, atoms = finished(tmp_path, runs)
    made = read(runs / "with" / "final.traj")
    assert np.allclose(atoms.positions, made.positions, atol=1e-10, rtol=0)
    assert atoms.get_potential_energy() == pytest.approx(made.get_potential_energy(), abs=1e-9)
    probe = atoms.copy()
    probe.calc = PairPotential(**FINISH_PAIR)
    assert atoms.get_potential_energy() == pytest.approx(probe.get_potential_energy(), abs=1e-9)
    # the same spot checks: frames 0, 2, ..., 8 of the run's trajectory and the final structure
    ours = json.loads((tmp_path / "finish" / "analysis" / "checks.json").read_text())
    theirs = json.loads((runs / "with" / "analysis" / "checks.json").read_text())
    assert [p["label"] for p in ours["per_structure"]] == [
        p["label"] for p in theirs["per_structure"]]
    for a, b in zip(ours["per_structure"], theirs["per_structure"]):
        assert a["mae"] == pytest.approx(b["mae"], rel=1e-9) and a["max"] == pytest.approx(
            b["max"], rel=1e-9)
    # the summary, and the run's own files untouched
    assert summary["steps"] == 6 and summary["optimiser"] == "BFGS"
    assert summary == json.loads((tmp_path / "finish" / "finish.json").read_text())
    start = read(runs / "without" / "final.traj")
    moved = np.linalg.norm(atoms.positions - start.positions, axis=1)[atoms.get_tags() == 2]
    assert summary["moved_from_run_final_A"]["max"] == pytest.approx(moved.max(), rel=1e-9)
    assert moved.max() > 1e-3
    assert start.get_potential_energy() != pytest.approx(atoms.get_potential_energy(), abs=1e-3)
    assert not (tmp_path / "finish" / CHECKPOINT_NAME).exists()
    assert check_frames(finish_config(runs / "without", overrides=[FINISH]),
                        runs / "without") == len(ours["per_structure"]) - 1 == 5
    assert yaml.safe_load((tmp_path / "finish" / "config.yaml").read_text())["finish"][
        "calculator"]["pair"]["cutoff"] == 5.0
    out = capsys.readouterr().out
    assert "final optimisation with the finish calculator (BFGS): 6 steps" in out
    assert "the mobile atoms moved from the run's final.traj by" in out


@pytest.mark.parametrize("optimiser", ["BFGS", "FIRE"])
def test_a_stopped_finish_continues_where_it_stopped(tmp_path, runs, monkeypatch, optimiser):
    """Stopped after its third step, the finish continues with the optimiser's memory (BFGS's
    Hessian, FIRE's velocities and time step): the uninterrupted optimisation's positions."""
    sets = (f"dynamics.final_relax={optimiser}", "finish.relax_steps=9")
    _, full = finished(tmp_path, runs, *sets, out="full")
    calls = []

    def stop_after_three(self):
        calls.append(1)  # the stop check runs before the first step and after each
        return 1 if len(calls) == 4 else 0
    monkeypatch.setattr(driver.MeltQuench, "stop_reason", stop_after_three)
    with pytest.raises(Interrupted, match="continue with: meltquench finish .* continues "
                                          "from the optimisation's last step"):
        finished(tmp_path, runs, *sets, out="part")
    state = json.loads((tmp_path / "part" / CHECKPOINT_NAME).read_text())
    assert state["steps_done"] == 3
    monkeypatch.undo()
    summary, part = finished(tmp_path, runs, *sets, out="part")
    assert summary["steps"] == 9
    assert np.allclose(part.positions, full.positions, atol=1e-10, rtol=0)
    # and without the optimiser's memory it would not have been: a fresh one from there
    atoms = read(runs / "without" / "final.traj")
    atoms.set_positions(np.asarray(state["positions"]), apply_constraint=False)
    atoms.calc = PairPotential(**FINISH_PAIR)
    with relax_region(atoms, "melt"):
        OPTIMISERS[optimiser](atoms, logfile=None).run(fmax=0.03, steps=6)
    assert not np.allclose(atoms.positions, full.positions, atol=1e-6, rtol=0)


def test_finish_refuses_what_it_cannot_do(tmp_path, runs):
    with pytest.raises(UserError, match="has no finish calculator .* --finish-of PRESET"):
        finish_config(runs / "without")
    with pytest.raises(UserError, match="preset 'demo' has no finish calculator"):
        finish_config(runs / "without", finish_of="demo")
    with pytest.raises(UserError, match="unknown preset"):
        finish_config(runs / "without", finish_of="paper-perfekt")
    with pytest.raises(UserError, match="has no config.yaml: give the folder of a run"):
        finish_config(tmp_path)
    (tmp_path / "replicas.yaml").write_text("replicas: {count: 2}\n")
    with pytest.raises(UserError, match="holds replicas: finish each of them, e.g. meltquench "
                                        "finish .*replica-0"):
        finish_config(tmp_path)
    (tmp_path / "replicas.yaml").unlink()
    with pytest.raises(Interrupted):  # a run stopped in its MD
        driver.run(config(), run_dir=tmp_path / "stopped", stop_after_s=1e-9)
    with pytest.raises(UserError, match="still in its MD: continue it first"):
        (tmp_path / "stopped" / "final.traj").write_bytes(
            (runs / "without" / "final.traj").read_bytes())
        finish_config(tmp_path / "stopped", overrides=[FINISH])
    # the run's finish section is taken as it is: --finish-of replaces it
    cfg = finish_config(runs / "with")
    assert cfg.finish.calculator.pair.cutoff == 5.0 and cfg.finish.relax_steps == 6
    cfg = finish_config(runs / "with", finish_of="ml-demo")
    assert cfg.finish.calculator.name == "gpaw" and cfg.finish.relax_steps == 0
    # a finished finish is kept; a stopped one continues only with the same physics
    finished(tmp_path, runs, "finish.relax_steps=1")
    with pytest.raises(UserError, match="already holds results .* --overwrite"):
        finished(tmp_path, runs)
    summary, _ = finished(tmp_path, runs, "finish.relax_steps=2", overwrite=True)
    assert summary["steps"] == 2
    (tmp_path / "finish" / "finish.json").unlink()
    (tmp_path / "finish" / CHECKPOINT_NAME).write_text(json.dumps({
        "steps_done": 1, "config": json.loads(json.dumps(finish_config(
            runs / "without", overrides=[FINISH]).to_dict()))}))
    with pytest.raises(UserError, match=r"other settings \(finish.calculator.pair.cutoff 5.0 "
                                        r"-> 4.5\).*--overwrite"):
        finished(tmp_path, runs, "finish.calculator.pair.cutoff=4.5")


def test_dos_and_adsorb_take_the_finish_calculator_of_a_preset(runs):
    """``--finish-of`` gives a run made without a finish calculator one, for ``meltquench
    dos`` and ``adsorb`` as for ``meltquench finish``: the preset's finish section, --set on
    top; without it the pair run's DOS is refused with the way out."""
    from meltquench.config import load_config
    from meltquench.target import load_target
    settings, which = load_target(runs / "without", finish_of="ml-demo").calculator_settings()
    assert settings == load_config(preset="ml-demo").finish.calculator
    assert "finish calculator" in which and settings.spinpol
    settings, _ = load_target(runs / "without", overrides=["finish.calculator.gpaw.h=0.2"],
                              finish_of="ml-demo").calculator_settings()
    assert settings.gpaw.h == 0.2 and settings.gpaw.basis == "sz(dzp)"
    assert load_target(runs / "without").calculator_settings()[0].name == "pair"
    assert_one_line_error(mq("dos", runs / "without"), "needs GPAW", "--finish-of PRESET")
    for command in ("dos", "adsorb"):
        assert_one_line_error(mq(command, runs / "without", "--finish-of", "demo"),
                              "preset 'demo' has no finish calculator")
    assert not (runs / "without" / "dos").exists() and not (runs / "without" / "adsorb").exists()


def test_the_command_line_finishes_and_analyses(tmp_path, runs):
    run_dir = tmp_path / "run"
    driver.run(config("finish.calculator=null", "analysis.enabled=true"), run_dir=run_dir)
    proc = mq("finish", run_dir, "--finish-of", "ml-demo", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "dry run: nothing is computed" in proc.stdout and "GPAW parallel layout" in proc.stdout
    assert "a single point from scratch: ~" in proc.stdout and "in all: ~" in proc.stdout
    assert not (run_dir / "finish").exists()
    proc = mq("finish", run_dir, "--set", FINISH, "--set", "finish.relax_steps=0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "a single point, max |F| component" in proc.stdout
    assert "moved from the run's final.traj" not in proc.stdout  # nothing moves
    assert "Region-resolved structure of the finished structure" in proc.stdout
    assert f"Done. Outputs in {run_dir / 'finish'}/" in proc.stdout
    for name in ("finish.json", "final.traj", "config.yaml", "analysis/checks.json",
                 "analysis/checks.png"):
        assert (run_dir / "finish" / name).is_file(), name
    assert len(list((run_dir / "finish" / "analysis").glob("*.csv"))) > 0
    assert_one_line_error(mq("finish", run_dir), "no finish calculator", "--finish-of")
    assert_one_line_error(mq("finish", tmp_path / "nowhere"), "is not a folder")
    assert_one_line_error(mq("finish", run_dir, "--set", FINISH), "already holds results")
    assert "meltquench finish runs/" in mq("finish", "--help").stdout


def test_a_gpaw_finish_under_mpirun_gives_a_fresh_serial_gpaws_forces(tmp_path):
    """``mpirun -np 2 meltquench finish`` with GPAW (a single point) on a finishless run:
    the forces of a fresh serial GPAW at the programme's last temperature (0.05 eV)."""
    pytest.importorskip("gpaw")
    gpaw = {"h": 0.25, "hubbard_u": {}, "occupations": {"name": "fermi-dirac", "width": 0.3},
            "convergence": {"energy": 1e-6, "density": 1e-6, "eigenstates": 1e-10}}
    run_dir = tmp_path / "run"
    tiny_pair_run(run_dir, "--set", "dynamics.relax_steps=0")
    proc = run_mpi(["python", "-m", "meltquench.cli", "finish", str(run_dir), "--set",
                    f"finish.calculator={{name: gpaw, dispersion: null, gpaw: {gpaw}}}",
                    "--set", "finish.relax_steps=0"], np=2)
    assert "smearing width 0.050 eV (the programme's last temperature, 300 K)" in proc.stdout
    assert proc.stdout.count("finish of ") == 1  # rank 0 speaks
    final = read(run_dir / "finish" / "final.traj")
    fresh = fresh_gpaw_forces(final, {"dispersion": None, "gpaw": {"h": 0.25, "hubbard_u": {}}},
                              0.05, tmp_path / "fresh", apply_constraint=False)
    assert np.abs(final.get_forces(apply_constraint=False) - fresh).max() < 0.01
    checks = json.loads((run_dir / "finish" / "analysis" / "checks.json").read_text())
    assert checks["per_structure"][-1]["label"] == "final structure"


def test_a_gpaw_finish_stopped_in_its_scf_resumes_it_under_mpirun(tmp_path):
    """``--stop-after`` stops a GPAW finish in its single point's SCF (exit code 75), the
    density of its last iteration in ``scf.npz`` (collective: rank 0 writes, every rank
    holds the whole matrix); the same command resumes that SCF and ends at the forces of a
    fresh serial GPAW, the SCF's file removed."""
    pytest.importorskip("gpaw")
    gpaw = {"h": 0.25, "hubbard_u": {}, "occupations": {"name": "fermi-dirac", "width": 0.3},
            "convergence": {"energy": 1e-6, "density": 1e-6, "eigenstates": 1e-10}}
    run_dir = tmp_path / "run"
    tiny_pair_run(run_dir, "--set", "dynamics.relax_steps=0")
    command = ["python", "-m", "meltquench.cli", "finish", str(run_dir), "--set",
               f"finish.calculator={{name: gpaw, dispersion: null, gpaw: {gpaw}}}",
               "--set", "finish.relax_steps=0"]
    stopped = run_mpi(command + ["--stop-after", "0.001"], np=2, check=False)
    said = stopped.stdout + stopped.stderr
    assert stopped.returncode == 75, said[-3000:]
    assert "in iteration 1 of the finish calculator's SCF; continue with: meltquench finish" in said
    assert (run_dir / "finish" / "scf.npz").exists()
    assert not (run_dir / "finish" / "finish.json").exists()
    proc = run_mpi(command, np=2)
    assert proc.stdout.count("the SCF resumes from the density after iteration 1 of the "
                             "stopped one") == 1
    assert "with its mixer's memory" in proc.stdout
    assert not (run_dir / "finish" / "scf.npz").exists()
    final = read(run_dir / "finish" / "final.traj")
    fresh = fresh_gpaw_forces(final, {"dispersion": None, "gpaw": {"h": 0.25, "hubbard_u": {}}},
                              0.05, tmp_path / "fresh", apply_constraint=False)
    assert np.abs(final.get_forces(apply_constraint=False) - fresh).max() < 0.01
