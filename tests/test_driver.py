"""The melt-quench driver on the fast pair potential: schedule, fixed atoms, restart, outputs."""
import json

import numpy as np
import pytest
import yaml
from ase.io import read

from meltquench import driver, progress
from meltquench.checkpoint import read_checkpoint
from meltquench.config import load_config
from meltquench.errors import Interrupted, UserError
from meltquench.observers import StepRecord, read_md_log
from meltquench.structures import CRYSTAL, MELT, split_regions

FAST = ["calculator.name=pair", "calculator.dispersion=null", "output.progress=none",
        "analysis.enabled=false", "dynamics.final_relax=null"]


def fast_config(*extra):
    return load_config(overrides=FAST + list(extra))


def md_log(run_dir):
    """md.log's columns by the names of its header."""
    col = read_md_log(run_dir / "md.log")
    return {"step": col["step"].astype(int), "T_target": col["T_target_K"],
            "T_kin": col["T_kin_K"], "E_pot": col["E_pot_eV"], "E_cons": col["E_conserved_eV"],
            "width": col["width_eV"], "stage": col["stage"]}


def test_schedule_is_followed_and_fixed_atoms_never_move(tmp_path):
    cfg = fast_config("structure.builder=v2o3", "structure.repeat=[1,1,2]",
                      "schedule.heat_ps=0.2", "schedule.melt_ps=0.3", "schedule.quench_ps=0.3",
                      "schedule.final_ps=0.2", "schedule.T_melt_K=2500", "dynamics.taut_fs=20",
                      "output.trajectory_interval=5")
    result = driver.run(cfg, run_dir=tmp_path / "run")
    log = md_log(tmp_path / "run")
    assert list(log["step"]) == list(range(501))
    # the kinetic temperature of the mobile atoms tracks the target: 50-step window means
    # (30 mobile atoms: canonical fluctuations of a window mean are ~5%)
    for stage, target in (("melt", 2500.0), ("final", 300.0)):
        sel = np.array([s == stage for s in log["stage"]])
        window = log["T_kin"][sel][-50:]
        assert abs(window.mean() - target) < 0.15 * target, (stage, window.mean())
    frames = read(tmp_path / "run" / "trajectory.traj", ":")
    assert len(frames) == 101
    crystal = frames[0].get_tags() == CRYSTAL
    assert crystal.sum() == 30 and (frames[0].get_tags() == MELT).sum() == 30
    for frame in frames[1:]:
        assert np.abs(frame.positions[crystal] - frames[0].positions[crystal]).max() < 1e-12
        assert np.abs(frame.get_momenta()[crystal]).max() == 0.0
    moved = np.abs(result.atoms.positions[~crystal] - frames[0].positions[~crystal]).max()
    assert moved > 0.1


@pytest.mark.parametrize("thermostat", ["nhc", "bussi", "langevin"])
def test_restart_equals_an_uninterrupted_run(tmp_path, thermostat):
    cfg = fast_config(f"dynamics.thermostat={thermostat}", "output.checkpoint_interval=7")
    full = driver.run(cfg, run_dir=tmp_path / "full").atoms
    with pytest.raises(Interrupted):
        driver.run(cfg, run_dir=tmp_path / "part", stop_after_s=1e-9)  # stops after step 1
    log = md_log(tmp_path / "part")
    assert log["step"][-1] == 1
    # a second interruption, then the rest
    with pytest.raises(Interrupted):
        driver.restart(tmp_path / "part", stop_after_s=1e-9)
    cont = driver.restart(tmp_path / "part").atoms
    assert np.abs(full.positions - cont.positions).max() < 1e-10
    assert np.abs(full.get_momenta() - cont.get_momenta()).max() < 1e-10
    a, b = md_log(tmp_path / "full"), md_log(tmp_path / "part")
    assert list(a["step"]) == list(b["step"])
    assert np.allclose(a["E_cons"], b["E_cons"], rtol=0, atol=1e-8)
    assert len(read(tmp_path / "full" / "trajectory.traj", ":")) == \
        len(read(tmp_path / "part" / "trajectory.traj", ":"))
    # a finished run is left as it is, to the byte and the modification time
    before = folder_snapshot(tmp_path / "part")
    again = driver.restart(tmp_path / "part")
    assert np.array_equal(again.atoms.positions, cont.positions)
    assert folder_snapshot(tmp_path / "part") == before


def test_a_log_line_cut_by_a_kill_is_dropped_on_restart(tmp_path):
    """A kill inside a write can leave md.log ending in part of a line (here the "1" of a step
    "12"): the restart drops it, so the next step's line does not run into it."""
    cfg = fast_config("output.checkpoint_interval=7")
    full = driver.run(cfg, run_dir=tmp_path / "full")
    with pytest.raises(Interrupted):
        driver.run(cfg, run_dir=tmp_path / "part", stop_after_s=1e-9)
    with open(tmp_path / "part" / "md.log", "a") as log:
        log.write("1")
    driver.restart(tmp_path / "part")
    log, reference = md_log(tmp_path / "part"), md_log(tmp_path / "full")
    assert list(log["step"]) == list(reference["step"])  # every line whole, none twice
    assert np.allclose(log["E_cons"], reference["E_cons"], rtol=0, atol=1e-8)
    cont = read(tmp_path / "part" / "trajectory.traj", -1)
    assert np.abs(full.atoms.positions - cont.positions).max() < 1e-10


def folder_snapshot(folder):
    """{relative path: (bytes, mtime_ns)} of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_hold_what_they_claim(tmp_path):
    cfg = fast_config("dynamics.final_relax=FIRE", "dynamics.relax_steps=5")
    result = driver.run(cfg, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "initial.traj", "trajectory.traj", "trajectory.extxyz", "md.log",
                 "checkpoint.npz", "final.traj", "final.extxyz", "relax.log"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp"))
    # the resolved configuration reads back to the one that ran
    assert yaml.safe_load((run / "config.yaml").read_text()) == cfg.to_dict()
    log = md_log(run)
    assert len(log["step"]) == 51 and set(log["stage"]) == {"heat", "melt", "quench", "final"}
    frames = read(run / "trajectory.extxyz", ":")
    assert len(frames) == 51
    assert set(frames[-1].get_tags()) == {CRYSTAL, MELT}
    traj = read(run / "trajectory.traj", ":")
    assert np.allclose(frames[-1].positions, traj[-1].positions)
    assert traj[-1].get_potential_energy() == pytest.approx(log["E_pot"][-1], abs=1e-7)
    final = read(run / "final.traj")
    assert np.allclose(final.positions, result.atoms.positions)
    assert final.info["region_axis"] == 2
    # the optimisation moved only mobile atoms and lowered the energy
    assert final.get_potential_energy() < log["E_pot"][-1]


def test_existing_run_folder_needs_overwrite(tmp_path):
    cfg = fast_config()
    driver.run(cfg, run_dir=tmp_path / "run")
    with pytest.raises(UserError, match="--overwrite"):
        driver.run(cfg, run_dir=tmp_path / "run")
    driver.run(cfg, run_dir=tmp_path / "run", overwrite=True)


def test_default_run_folders_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = fast_config()
    a = driver.run(cfg).run_dir
    b = driver.run(cfg).run_dir
    assert a != b and a.parent.name == b.parent.name == "runs"


def test_user_atoms_and_calculator(tmp_path):
    from ase.calculators.emt import EMT
    from ase.build import bulk
    atoms = split_regions(bulk("Cu", cubic=True).repeat((2, 2, 2)), axis=2)
    cfg = fast_config("schedule.T_melt_K=1500")
    result = driver.run(cfg, run_dir=tmp_path / "cu", atoms=atoms, calculator=EMT())
    assert result.nsteps == 50 and len(result.atoms) == 32


def test_runaway_dynamics_stop_with_a_checkpoint(tmp_path):
    # a guard far below the programme's temperatures trips at the first step
    cfg = fast_config("dynamics.max_temperature_factor=0.05")
    from meltquench.errors import RunawayDynamics
    with pytest.raises(RunawayDynamics, match="checkpoint of step") as stop:
        driver.run(cfg, run_dir=tmp_path / "run")
    # the advice names the coupling key of the thermostat that ran
    key = {"nhc": "tdamp_fs", "bussi": "taut_fs", "berendsen": "taut_fs",
           "langevin": "friction_per_fs"}[cfg.dynamics.thermostat]
    assert f"dynamics.{key}" in str(stop.value)
    state = read_checkpoint(tmp_path / "run")
    assert state["phase"] == "md" and state["step"] == 0
    initial = read(tmp_path / "run" / "initial.traj")
    assert np.allclose(state["positions"], initial.positions)


def test_scf_failure_stops_with_a_checkpoint_of_the_last_good_step(tmp_path):
    from gpaw import KohnShamConvergenceError

    from meltquench.calculators import PairPotential
    from meltquench.errors import SCFFailure

    class Flaky(PairPotential):
        calls = 0

        def calculate(self, *args, **kwargs):
            Flaky.calls += 1
            if Flaky.calls == 5:  # the force call of step 4
                raise KohnShamConvergenceError("did not converge")
            super().calculate(*args, **kwargs)

    cfg = fast_config()
    with pytest.raises(SCFFailure, match="checkpoint of step 3"):
        driver.run(cfg, run_dir=tmp_path / "run", calculator=Flaky())
    assert read_checkpoint(tmp_path / "run")["step"] == 3
    assert md_log(tmp_path / "run")["step"][-1] == 3
    # the restart (here with a sound calculator) continues to the end
    result = driver.restart(tmp_path / "run")
    assert result.nsteps == 50


def test_progress_is_a_bar_on_a_terminal_and_log_lines_in_batch_jobs(monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for var in progress.BATCH_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    record = StepRecord(step=1, time_fs=2.0, T_target_K=4000.0, T_kin_K=3900.0, E_pot_eV=-1.0,
                        F_free_eV=-1.01,
                        E_kin_eV=0.5, E_conserved_eV=-0.5, s_per_step=0.1, scf_iter=-1,
                        width_eV=0.05, stage="melt")
    bar = progress.Progress(10, 0, "auto", True, stream=Terminal())
    assert bar.mode == "bar"
    bar.update(1, record)
    bar.close()
    assert "ETA" not in bar.stream.getvalue() and "1/10" in bar.stream.getvalue()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")  # a rank under mpirun has a pty too
    log = progress.Progress(10, 0, "auto", True, stream=Terminal())
    assert log.mode == "log"
    log.update(1, record)
    assert log.stream.getvalue().startswith("step 1/10 (10.0%)") and "ETA" in log.stream.getvalue()
    assert progress.Progress(10, 0, "auto", False, stream=Terminal()).mode == "none"  # rank > 0


def test_every_run_reports_the_drift_of_its_conserved_quantity(tmp_path, capsys):
    """The summary gives, per stage, the slope of E_conserved (meV per mobile atom per ps);
    NVE with the pair potential drifts little, and the figure is the md.log's slope."""
    from meltquench.observers import conserved_drift
    cfg = fast_config("dynamics.thermostat=nve")
    driver.run(cfg, run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("E_conserved drift"))
    drift = conserved_drift(tmp_path / "run" / "md.log", 10)
    assert set(drift) == {"heat", "melt", "quench", "final"}
    log = md_log(tmp_path / "run")
    melt = np.array([s == "melt" for s in log["stage"]])
    times = np.arange(len(log["step"]))[melt] * 2.0
    slope = np.polyfit(times, log["E_cons"][melt], 1)[0] * 1e6 / 10
    assert drift["melt"][0] == pytest.approx(slope, rel=1e-6, abs=1e-9)
    assert f"melt {drift['melt'][0]:+.3g}" in line
    assert all(abs(rate) < 50.0 for rate, _ in drift.values())  # meV/atom/ps, 2 fs NVE
    saved = json.loads((tmp_path / "run" / "drift.json").read_text())
    assert saved["stages"]["melt"]["drift"] == pytest.approx(drift["melt"][0], rel=1e-12)
    assert saved["mobile_atoms"] == 10 and saved["smearing_work_taken_out"] is False


@pytest.mark.parametrize("thermostat", ["nhc", "bussi"])
def test_the_summary_says_when_the_thermostat_did_not_follow_the_programme(
        tmp_path, capsys, thermostat):
    """The paper's 1 ps heat to 4000 K on its 240-atom model (pair potential): a Nose-Hoover
    chain with tdamp 100 fs lags the 3,700 K/ps ramp by far more than 10% and the run says so;
    Bussi's CSVR, the paper presets' thermostat, follows it."""
    from meltquench.observers import temperature_tracking
    cfg = load_config(preset="paper-perfect", overrides=[
        "calculator.name=pair", "schedule.melt_ps=0", "schedule.quench_ps=0",
        "schedule.final_ps=0", f"dynamics.thermostat={thermostat}",
        "dynamics.final_relax=null", "analysis.enabled=false", "output.progress=none",
        "output.extxyz=false", "output.checkpoint_interval=100"])
    assert load_config(preset="paper-perfect").dynamics.thermostat == "bussi"
    driver.run(cfg, run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    kin, target, steps = temperature_tracking(tmp_path / "run" / "md.log")["heat"]
    assert steps == 500 and target == pytest.approx(2150 + 3.7, abs=5)  # the ramp's mean
    log = md_log(tmp_path / "run")
    assert kin == pytest.approx(log["T_kin"][1:].mean())
    assert "mean T_kin / T_target per stage (K): heat" in out
    warned = "the thermostat did not follow the programme in stage heat" in out
    if thermostat == "nhc":
        assert kin < 0.75 * target and warned and "a smaller dynamics.tdamp_fs" in out
    else:
        assert abs(kin / target - 1) < 0.1 and not warned


@pytest.mark.parametrize("thermostat, key", [
    ("bussi", "dynamics.taut_fs"), ("berendsen", "dynamics.taut_fs"),
    ("nhc", "dynamics.tdamp_fs"), ("langevin", "dynamics.friction_per_fs")])
def test_the_tracking_warning_names_the_coupling_of_the_thermostat_in_use(thermostat, key):
    """A lagging stage's advice names the key that tightens the thermostat that ran (bussi's
    time constant is taut_fs: tdamp_fs is the Nose-Hoover chain's, and changing it for a Bussi
    run changes nothing); a stage within 10% of its target or of fewer than 20 steps is not
    judged."""
    from meltquench.observers import tracking_text
    tracking = {"heat": (1769.0, 3264.0, 25), "melt": (6050.0, 6000.0, 200),
                "final": (900.0, 300.0, 10)}
    line, warnings = tracking_text(tracking, thermostat=thermostat)
    assert line == "mean T_kin / T_target per stage (K): heat 1769/3264, melt 6050/6000, final 900/300"
    assert len(warnings) == 1 and "stage heat" in warnings[0] and "(-46%)" in warnings[0]
    assert key in warnings[0]
    others = {"dynamics.taut_fs", "dynamics.tdamp_fs", "dynamics.friction_per_fs"} - {key}
    assert not any(other in warnings[0] for other in others)


def test_a_second_signal_stops_at_once_and_the_restart_continues_exactly(tmp_path):
    """The first SIGTERM stops at the end of the step; a second one, in the middle of a step
    that does not end (a stalled SCF), stops at once: Interrupted, the last checkpoint kept,
    and --restart ends where an uninterrupted run ends."""
    import os
    import signal

    from meltquench.calculators import PairPotential

    class Stalling(PairPotential):
        calls = 0

        def calculate(self, *args, **kwargs):
            Stalling.calls += 1
            if Stalling.calls == 8:  # the force call of step 7
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
                raise AssertionError("the second signal did not stop the step")
            super().calculate(*args, **kwargs)

    cfg = fast_config("output.checkpoint_interval=3")
    full = driver.run(cfg, run_dir=tmp_path / "full").atoms
    with pytest.raises(Interrupted, match=r"second signal \(SIGTERM\).*--restart"):
        driver.run(cfg, run_dir=tmp_path / "run", calculator=Stalling())
    assert read_checkpoint(tmp_path / "run")["step"] == 6
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers given back
    part = driver.restart(tmp_path / "run").atoms
    assert np.array_equal(full.positions, part.positions)
    assert np.array_equal(full.get_momenta(), part.get_momenta())


def test_the_smearing_widths_work_is_exact_for_a_free_energy_quadratic_in_the_width():
    """F(sigma) = F0 - a sigma^2 has S = -dF/dsigma = 2 a sigma and E = F + sigma S / 2 = F0
    (Fermi-Dirac's zero-width extrapolation): along a width ramp at rest the work is
    F(sigma_n) - F(sigma_0) exactly (trapezoidal in sigma is exact for S linear in sigma),
    so F - W stays at F0 - a sigma_0^2. Rows without a width add nothing."""
    from meltquench.calculators import CalculatorSettings, fermi_dirac_smearing
    from meltquench.observers import smearing_work
    a, f0 = 7.0, -100.0
    sigma = np.array([0.05, 0.08, 0.13, 0.2, 0.345, 0.345, np.nan, 0.3])
    free = f0 - a * sigma**2
    log = {"width_eV": sigma, "E_pot_eV": np.full_like(sigma, f0), "F_free_eV": free}
    work = smearing_work(log)
    np.testing.assert_allclose(work[:6], free[:6] - free[0], atol=1e-12)
    assert work[6] == work[7] == work[5]  # across a row with no width: no work
    assert fermi_dirac_smearing({"name": "gpaw"})
    assert fermi_dirac_smearing({"name": "gpaw", "gpaw": {"occupations": None,
                                                          "electronic_temperature": "fixed"}})
    assert not fermi_dirac_smearing({"name": "gpaw", "gpaw": {"occupations": {
        "name": "marzari-vanderbilt", "width": 0.1}}})
    assert fermi_dirac_smearing({"name": "vasp"})
    assert not fermi_dirac_smearing({"name": "pair"}) and not fermi_dirac_smearing(None)
    assert isinstance(CalculatorSettings.from_dict({"name": "pair"}), CalculatorSettings)
