"""``meltquench run --calibrate``: GPAW's SCF timed on the run's own model and ranks, and the
cost estimate built from it (``meltquench.calibrate``; issue 13). What the timings are worth
against real MD steps is measured in ``benchmarks/bench_gpaw_cost.py --validate``, not here."""
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("gpaw")

from conftest import MPIRUN, run_mpi  # noqa: E402
from meltquench.calibrate import ITERATIONS_PER_STEP, time_gpaw_scf  # noqa: E402
from meltquench.cli import main  # noqa: E402


def leftovers():
    return set(Path(tempfile.gettempdir()).glob("meltquench-calibrate-*"))


def test_calibrated_dry_run_times_the_demos_gpaw_and_costs_the_run_from_it(capsys,
                                                                            monkeypatch):
    from meltquench import plan
    timings = []

    def timed(*args, **kwargs):
        timings.append(time_gpaw_scf(*args, **kwargs))
        return timings[-1]

    monkeypatch.setattr(plan, "time_gpaw_scf", timed)
    before = leftovers()
    assert main(["run", "--preset", "demo", "--calibrate", "2"]) == 0
    out = capsys.readouterr().out
    [t] = timings
    assert t.atoms == 20 and t.ranks == 1 and t.iterations == 2
    assert t.iteration_s > 0 and t.forces_s > 0 and t.setup_s >= 0 and t.move_s >= 0
    assert t.step_s() == pytest.approx(t.move_s + ITERATIONS_PER_STEP * t.iteration_s
                                       + t.forces_s)
    assert t.single_point_s(10) == pytest.approx(t.setup_s + 10 * t.iteration_s + t.forces_s)
    assert leftovers() == before  # GPAW's log went into a folder that is gone
    assert "dry run: nothing is computed" in out
    assert "estimated cost on these 1 rank(s), calibrated here" in out
    assert f"calculator: {t.text()}" in out
    line = next(li for li in out.splitlines() if li.strip().startswith("MD: 20 steps"))
    assert f"~{t.step_s():.0f} s per step" in line
    assert not Path("runs").exists() or not any(Path("runs").glob("demo-*"))


def test_calibrate_needs_a_gpaw_calculator(capsys):
    assert main(["run", "--preset", "demo", "--set", "calculator.name=pair",
                 "--set", "calculator.dispersion=null", "--calibrate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calibrate times GPAW's SCF" in err[0]


@pytest.mark.skipif(MPIRUN is None, reason="mpirun not installed")
def test_calibration_under_mpirun_times_both_ranks_and_prints_once(tmp_path):
    proc = run_mpi(["python", "-m", "meltquench.cli", "run", "--preset", "demo",
                    "--calibrate", "1"], np=2, cwd=tmp_path)
    assert proc.stdout.count("calibrated here") == 1
    assert "20 atoms on 2 rank(s)" in proc.stdout
    assert not (tmp_path / "runs").exists()
