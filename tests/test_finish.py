"""A run that changes calculator after its programme (``finish``), on fast pair potentials.

The run's calculator is the built-in pair potential, the finish's the same potential with a
shorter cutoff: two models with different energies and forces, so every step and every
structure shows which one computed it.
"""
import json

import numpy as np
import pytest
import yaml
from ase.io import read

from meltquench import driver
from meltquench.calculators import PairPotential
from meltquench.config import load_config
from meltquench.errors import Interrupted, UserError
from meltquench.observers import read_md_log
from meltquench.plan import dry_run

FINISH_PAIR = {"cutoff": 5.0, "cutoff_on": 4.0}
SETS = ["calculator.name=pair", "calculator.dispersion=null", "output.progress=none",
        "schedule.heat_ps=0.006", "schedule.melt_ps=0.004", "schedule.quench_ps=0.004",
        "schedule.final_ps=0.002", "dynamics.timestep_fs=2.0", "analysis.enabled=false",
        "output.checkpoint_interval=100",
        "finish.calculator={name: pair, dispersion: null, pair: {cutoff: 5.0, cutoff_on: 4.0}}"]
MAIN_STEPS = 8  # 16 fs of programme at 2 fs


def config(*extra):
    return load_config(overrides=SETS + list(extra))


def md_log(run_dir):
    return {name: list(values) for name, values in read_md_log(run_dir / "md.log").items()}


def energy(atoms, **pair):
    probe = atoms.copy()
    probe.calc = PairPotential(**pair)
    return probe.get_potential_energy()


def test_the_anneal_and_the_optimisation_use_the_finish_calculator(tmp_path):
    cfg = config("finish.anneal_ps=0.008", "dynamics.final_relax=FIRE",
                 "dynamics.relax_steps=5", "finish.check_every=2")
    result = driver.run(cfg, run_dir=tmp_path / "run")
    log = md_log(tmp_path / "run")
    assert log["stage"].count("anneal") == 4 and log["stage"][-1] == "anneal"
    frames = read(tmp_path / "run" / "trajectory.traj", ":")
    for step, frame in enumerate(frames):
        logged = float(log["E_pot_eV"][step])
        if step <= MAIN_STEPS:
            assert logged == pytest.approx(energy(frame), abs=1e-8), step
            assert energy(frame) != pytest.approx(energy(frame, **FINISH_PAIR), abs=1e-3)
        else:
            assert logged == pytest.approx(energy(frame, **FINISH_PAIR), abs=1e-8), step
    final = read(tmp_path / "run" / "final.traj")
    assert final.get_potential_energy() == pytest.approx(energy(final, **FINISH_PAIR), abs=1e-8)
    assert np.allclose(final.positions, result.atoms.positions)
    # spot checks: frames 0, 2, 4, 6, 8 of the programme and the final structure
    checks = json.loads((tmp_path / "run" / "analysis" / "checks.json").read_text())
    assert [p["label"] for p in checks["per_structure"]] == [
        "frame 0 (step 0)", "frame 2 (step 2)", "frame 4 (step 4)", "frame 6 (step 6)",
        "frame 8 (step 8)", "final structure"]
    assert set(checks["per_stage"]) == {"heat", "melt", "quench", "final", "final structure"}
    assert (tmp_path / "run" / "analysis" / "checks.png").stat().st_size > 1000
    # the final structure's error, recomputed independently on the mobile atoms
    mobile = final.get_tags() == 2
    a, b = final.copy(), final.copy()
    a.calc, b.calc = PairPotential(), PairPotential(**FINISH_PAIR)
    diff = a.get_forces(apply_constraint=False)[mobile] - b.get_forces(
        apply_constraint=False)[mobile]
    last = checks["per_structure"][-1]
    assert last["mae"] == pytest.approx(np.abs(diff).mean(), rel=1e-9)
    assert last["max"] == pytest.approx(np.abs(diff).max(), rel=1e-9)
    assert last["n_atoms"] == mobile.sum()


def test_without_an_anneal_the_run_optimises_first_then_the_finish(tmp_path, capsys):
    cfg = config("dynamics.final_relax=BFGS", "dynamics.relax_steps=50",
                 "finish.relax_steps=0")
    driver.run(cfg, run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "pre-optimisation with the run's calculator (BFGS)" in out
    # each optimisation names itself on the line that says which atoms move
    assert out.count("pre-optimisation with the run's calculator (relax_region melt): ") == 1
    assert out.count("final optimisation (relax_region melt): ") == 1
    assert "final optimisation: a single point (0 optimisation steps asked for)" in out
    assert "NOT converged" not in out  # a single point has no force criterion to miss
    assert "Force spot checks" in out
    log = md_log(tmp_path / "run")
    assert "anneal" not in log["stage"] and len(log["stage"]) == MAIN_STEPS + 1
    final = read(tmp_path / "run" / "final.traj")
    assert final.get_potential_energy() == pytest.approx(energy(final, **FINISH_PAIR), abs=1e-8)


@pytest.mark.parametrize("thermostat", ["bussi", "nhc"])
def test_restart_across_the_switch_equals_the_uninterrupted_run(tmp_path, thermostat):
    cfg = config("finish.anneal_ps=0.008", "dynamics.final_relax=null",
                 f"dynamics.thermostat={thermostat}")
    full = driver.run(cfg, run_dir=tmp_path / "full").atoms
    with pytest.raises(Interrupted):
        driver.run(cfg, run_dir=tmp_path / "part", stop_after_s=1e-9)  # stops after step 1
    steps = [1]
    while steps[-1] < 12:  # one step per restart: checkpoints on both sides of the switch
        with pytest.raises(Interrupted):
            driver.restart(tmp_path / "part", stop_after_s=1e-9)
        steps.append(int(md_log(tmp_path / "part")["step"][-1]))
    assert steps == list(range(1, 13))
    part = driver.restart(tmp_path / "part").atoms
    assert np.array_equal(full.positions, part.positions)
    assert np.array_equal(full.get_momenta(), part.get_momenta())
    a, b = md_log(tmp_path / "full"), md_log(tmp_path / "part")
    assert a["E_conserved_eV"] == b["E_conserved_eV"] and a["stage"] == b["stage"]


def test_finish_settings_are_checked_and_the_plan_shows_each_part():
    with pytest.raises(UserError, match="unknown key 'finish.calculator.pair.cut'"):
        load_config(overrides=["finish.calculator={name: pair, pair: {cut: 1}}"])
    with pytest.raises(UserError, match="unknown calculator 'gpwa': finish.calculator.name"):
        load_config(overrides=["finish.calculator.name=gpwa"])
    with pytest.raises(UserError, match="finish.anneal_ps must be >= 0"):
        load_config(overrides=["finish.anneal_ps=-1"])
    with pytest.raises(UserError, match="unknown key 'finish.aneal_ps'.*anneal_ps"):
        load_config(overrides=["finish.aneal_ps=1"])
    text = dry_run(config("finish.anneal_ps=0.008", "dynamics.final_relax=FIRE"))
    assert "finish: pair potential (no dispersion: fitted without it) anneals 0.008 ps" in text
    assert "MD (heat, melt, quench, final): 8 steps with pair potential" in text
    assert "anneal (0.008 ps): 4 steps with pair potential" in text
    ml = dry_run(load_config(preset="paper-perfect-ml"))
    assert "9000 steps with CHGNet 0.3.0, D3(BJ)" in ml
    assert "final single point with GPAW LCAO dzp" in ml


def run_to_step(cfg, run_dir, step):
    """Start ``cfg`` in ``run_dir`` and stop it (checkpointed) after MD step ``step``."""
    with pytest.raises(Interrupted):
        driver.run(cfg, run_dir=run_dir, stop_after_s=1e-9)  # stops after step 1
    while int(md_log(run_dir)["step"][-1]) < step:
        with pytest.raises(Interrupted):
            driver.restart(run_dir, stop_after_s=1e-9)
    assert int(md_log(run_dir)["step"][-1]) == step


def change_config(run_dir, old, new):
    path = run_dir / "config.yaml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))


def test_the_finish_calculator_may_change_on_restart_until_it_has_computed(tmp_path, capsys):
    cfg = config("finish.anneal_ps=0.008", "dynamics.final_relax=null")
    run_to_step(cfg, tmp_path / "run", MAIN_STEPS)  # the last step of the run's calculator
    change_config(tmp_path / "run", "cutoff: 5.0", "cutoff: 5.5")
    capsys.readouterr()
    part = driver.restart(tmp_path / "run").atoms
    assert "continuing with changed settings: finish.calculator.pair.cutoff 5.0 -> 5.5" in (
        capsys.readouterr().out)
    changed = config("finish.anneal_ps=0.008", "dynamics.final_relax=null",
                     "finish.calculator.pair.cutoff=5.5")
    full = driver.run(changed, run_dir=tmp_path / "full").atoms  # as if it had been so
    assert np.array_equal(full.positions, part.positions)
    a, b = md_log(tmp_path / "full"), md_log(tmp_path / "run")
    for column in ("E_pot_eV", "E_conserved_eV", "stage"):
        assert a[column] == b[column], column
    # the checkpoint now holds the new finish: a second change is judged against it
    assert "cutoff: 5.5" in (tmp_path / "run" / "config.yaml").read_text()


def test_restart_refuses_a_changed_finish_calculator_once_it_has_computed(tmp_path):
    cfg = config("finish.anneal_ps=0.008", "dynamics.final_relax=null")
    run_to_step(cfg, tmp_path / "run", MAIN_STEPS + 1)  # the finish's first anneal step
    change_config(tmp_path / "run", "cutoff: 5.0", "cutoff: 5.5")
    with pytest.raises(UserError, match="finish.calculator.pair.cutoff 5.0 -> 5.5"):
        driver.restart(tmp_path / "run")
    change_config(tmp_path / "run", "cutoff: 5.5", "cutoff: 5.0")
    assert driver.restart(tmp_path / "run").nsteps == MAIN_STEPS + 4
    allowed, refused = driver.restart_changes(
        {"finish": {"calculator": None}}, {"finish": {"calculator": {"name": "pair"}}})
    assert refused == [("finish.calculator", None, {"name": "pair"})] and not allowed


def test_dropping_the_finish_on_restart_is_one_change_and_gives_the_finishless_run(
        tmp_path, capsys):
    cfg = config("dynamics.final_relax=null")
    run_to_step(cfg, tmp_path / "run", 3)
    path = tmp_path / "run" / "config.yaml"
    settings = yaml.safe_load(path.read_text())
    settings["finish"]["calculator"] = None
    path.write_text(yaml.safe_dump(settings))
    capsys.readouterr()
    part = driver.restart(tmp_path / "run").atoms
    said = [line for line in capsys.readouterr().out.splitlines() if "changed settings" in line]
    # the whole section in one entry, not each of its keys going to None
    assert said == ["continuing with changed settings: finish.calculator {name: pair, ...} "
                    "-> None"]
    full = driver.run(config("finish.calculator=null", "dynamics.final_relax=null"),
                      run_dir=tmp_path / "full").atoms
    assert np.array_equal(full.positions, part.positions)
    assert not (tmp_path / "run" / "analysis" / "checks.json").exists()


def test_adding_a_finish_on_restart_keeps_the_steps_done(tmp_path):
    cfg = config("finish.calculator=null", "dynamics.final_relax=null")
    run_to_step(cfg, tmp_path / "run", 3)
    change_config(tmp_path / "run", "calculator: null, anneal_ps: 0.0",
                  "calculator: {name: pair, dispersion: null, pair: {cutoff: 5.0, "
                  "cutoff_on: 4.0}}, anneal_ps: 0.008")
    # an anneal from step 9 on: steps 1-3 were the run's calculator's either way
    part = driver.restart(tmp_path / "run").atoms
    full = driver.run(config("finish.anneal_ps=0.008", "dynamics.final_relax=null"),
                      run_dir=tmp_path / "full").atoms
    assert np.array_equal(full.positions, part.positions)
class NotConverging(PairPotential):
    """The finish's pair potential whose first ``failures`` calls raise GPAW's SCF error."""

    failures = 0

    def calculate(self, *args, **kwargs):
        from gpaw import KohnShamConvergenceError
        if NotConverging.failures:
            NotConverging.failures -= 1
            raise KohnShamConvergenceError("did not converge")
        super().calculate(*args, **kwargs)


def flaky_finish(monkeypatch, failures, fallback):
    """Make the finish calculator a :class:`NotConverging` (``failures`` calls), with or
    without a fallback (the pair potential has none of its own)."""
    from meltquench import calculators
    make = calculators.make_calculator

    def make_calculator(settings, **kwargs):
        s = calculators.CalculatorSettings.from_dict(settings)
        if s.name == "pair" and s.pair.cutoff == FINISH_PAIR["cutoff"]:
            return NotConverging(**FINISH_PAIR)
        return make(settings, **kwargs)

    NotConverging.failures = failures
    monkeypatch.setattr(calculators, "make_calculator", make_calculator)
    if fallback:
        monkeypatch.setattr(calculators, "conservative_fallback", lambda settings: settings)


def test_a_finish_that_does_not_converge_keeps_the_runs_own_result(tmp_path, monkeypatch,
                                                                   capsys):
    """After 7 h of ML dynamics a failed DFT single point must not lose them: final.traj is
    the pre-optimised structure with the run's own energy, the analysis runs, there are no
    spot checks, and the command exits with 4 and says why."""
    from meltquench.cli import main
    flaky_finish(monkeypatch, failures=10, fallback=True)
    sets = [a for s in SETS + ["dynamics.final_relax=BFGS", "dynamics.relax_steps=50",
                               "finish.relax_steps=0", "analysis.enabled=true"]
            for a in ("--set", s)]
    assert main(["run", *sets, "-o", str(tmp_path / "run")]) == 4
    out, err = capsys.readouterr()
    assert "retrying with the fallback settings" in out
    assert "WARNING: the finish calculator's SCF did not converge (KohnShamConvergenceError)" \
        in out and "also with the fallback settings" in err
    assert NotConverging.failures == 8  # one try and one retry
    pre = read(tmp_path / "run" / "preoptimised.traj")
    final = read(tmp_path / "run" / "final.traj")
    assert np.array_equal(pre.positions, final.positions)
    assert final.get_potential_energy() == pytest.approx(energy(final), abs=1e-8)
    assert (tmp_path / "run" / "analysis" / "summary.json").exists()
    assert not (tmp_path / "run" / "analysis" / "checks.json").exists()


def test_a_finish_converges_on_its_fallback_retry(tmp_path, monkeypatch, capsys):
    flaky_finish(monkeypatch, failures=1, fallback=True)
    cfg = config("dynamics.final_relax=BFGS", "dynamics.relax_steps=50",
                 "finish.relax_steps=0")
    result = driver.run(cfg, run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert "retrying with the fallback settings" in out and "WARNING" not in out
    assert result.finish_failed is None and "Force spot checks" in out
    final = read(tmp_path / "run" / "final.traj")
    assert final.get_potential_energy() == pytest.approx(energy(final, **FINISH_PAIR), abs=1e-8)


def test_ml_presets_finish_spin_polarised_and_the_plan_costs_two_spin_channels():
    """The ML presets' GPAW finish is spin-polarised (MPtrj, the models' training data, is),
    with the ferromagnetic start, cold (the smearing follows the programme to its 0.05 eV
    floor) and given 40 SCF iterations before it is called stagnant (the MD's 25 gave up a
    converging cold finish one iteration short); the plan charges a spin-polarised DFT step
    SPIN_FACTOR times an unpolarised one and leaves other engines alone."""
    from dataclasses import replace
    from meltquench.config import ML_FINISH_STAGNATION
    from meltquench.plan import SPIN_FACTOR, step_cost_s
    assert ML_FINISH_STAGNATION == 40
    for name in ("ml-demo", "paper-perfect-ml", "paper-defective-ml"):
        cfg = load_config(preset=name)
        assert cfg.finish.calculator.spinpol and cfg.finish.calculator.initial_magmoms["V"] == 2
        finish = cfg.finish.calculator.gpaw
        assert finish.scf_stagnation == 40 and finish.electronic_temperature == "follow"
        assert finish.smearing_width(cfg.schedule.T_final_K) == 0.05
        assert not cfg.calculator.spinpol  # the model itself has no spin key
    assert load_config(preset="paper-perfect").calculator.gpaw.scf_stagnation == 25  # the MD's
    gpaw = load_config(preset="ml-demo").finish.calculator
    assert step_cost_s(gpaw, 120) == pytest.approx(
        SPIN_FACTOR * step_cost_s(replace(gpaw, spinpol=False), 120))
    chgnet = load_config(preset="ml-demo").calculator
    assert step_cost_s(replace(chgnet, spinpol=True), 120) == step_cost_s(chgnet, 120)
    assert "spin-polarised" in dry_run(load_config(preset="ml-demo"))


def test_plan_divides_only_gpaw_over_ranks_by_the_measured_amdahl_share(monkeypatch):
    """On P ranks a GPAW step costs (s + (1 - s)/P) of its one-rank time, with the serial
    share s measured on 2 ranks for its layout (domain: GPAW's own; band: {band: N}, which
    ``parallel: auto`` chooses from 150 atoms on an even number of ranks where GPAW has
    ScaLAPACK); the ML models run on rank 0 and do not divide; the dry run's 128-rank line
    uses the same law."""
    from meltquench.calculators import gpaw as gpaw_module
    from meltquench.plan import GPAW_SERIAL_SHARE, mpi_speedup, step_cost_s
    monkeypatch.setattr(gpaw_module, "gpaw_has_scalapack", lambda: True)
    auto = load_config(preset="paper-perfect")
    assert auto.calculator.gpaw.parallel == "auto"
    domain = load_config(preset="paper-perfect", overrides=["calculator.gpaw.parallel=null"])
    band = load_config(preset="paper-perfect",
                       overrides=["calculator.gpaw.parallel={band: 2}"]).calculator
    gpaw = domain.calculator
    assert mpi_speedup(gpaw, 1, 240) == 1.0
    assert mpi_speedup(gpaw, 2, 240) == pytest.approx(1.33)
    assert mpi_speedup(band, 2, 240) == pytest.approx(1.83)
    assert step_cost_s(gpaw, 240, ranks=2) == pytest.approx(step_cost_s(gpaw, 240) / 1.33)
    # auto: the bands split at 240 atoms on 2 or 4 ranks, not at 120 atoms nor on 3 ranks
    assert mpi_speedup(auto.calculator, 2, 240) == pytest.approx(1.83)
    assert mpi_speedup(auto.calculator, 4, 240) == mpi_speedup(band, 4, 240)
    assert mpi_speedup(auto.calculator, 2, 120) == pytest.approx(1.33)
    assert mpi_speedup(auto.calculator, 3, 240) == mpi_speedup(gpaw, 3, 240)
    # Amdahl: never faster than 1/s, however many ranks.
    assert 1.9 < mpi_speedup(gpaw, 128, 240) < 1.0 / GPAW_SERIAL_SHARE["domain"]
    assert 9.0 < mpi_speedup(band, 128, 240) < 1.0 / GPAW_SERIAL_SHARE["band"]
    chgnet = load_config(preset="ml-demo").calculator
    assert mpi_speedup(chgnet, 4, 120) == 1.0
    assert step_cost_s(chgnet, 120, ranks=4) == step_cost_s(chgnet, 120)
    text = dry_run(domain)
    assert "on 128 ranks" in text and "domain layout 0.50" in text
    assert "band layout 0.09" in dry_run(auto)
    assert "auto: band 2 (the LCAO eigensolver in ScaLAPACK)" in dry_run(auto, ranks=2)
    # without ScaLAPACK, auto is GPAW's own layout
    monkeypatch.setattr(gpaw_module, "gpaw_has_scalapack", lambda: False)
    assert mpi_speedup(auto.calculator, 2, 240) == pytest.approx(1.33)
    assert "parallel: auto keeps it" in dry_run(auto, ranks=2)
