"""Run folders that cannot hurt (issue 11): data-only checkpoints, folders only meltquench made
are replaced, one writer per folder, restarts that refuse what they cannot honour, and the
exit-code contract (2 bad input, 75 stopped) kept for faults, through the CLI."""
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from ase.io import read

from conftest import mpi_env
from meltquench.checkpoint import (CHECKPOINT_NAME, CHECKPOINT_VERSION, decode_checkpoint,
                                   encode_checkpoint, read_checkpoint)
from meltquench.errors import UserError
from meltquench.rundir import LOCK_NAME, MARKER_NAME

FAST = ["--preset", "demo", "--set", "calculator.name=pair", "--set", "calculator.dispersion=null",
        "--set", "output.progress=log", "--set", "output.extxyz=false",
        "--set", "dynamics.final_relax=null", "--set", "analysis.enabled=false"]
CLI = [sys.executable, "-m", "meltquench.cli"]


def cli(*args, cwd=None, timeout=300):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=mpi_env(), cwd=cwd)


def error_line(proc):
    """The one error line of a failed command (mpirun's own banner aside)."""
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and not line.startswith(("-----", "  ", "Primary job",
                                                        "a non-zero", "mpirun", "the job",
                                                        "Process name", "Exit code"))]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("meltquench: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished pair-potential run (50 steps, analysis on)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    proc = cli("run", *FAST, "--set", "analysis.enabled=true", "-o", run)
    assert proc.returncode == 0, proc.stderr
    return run


# ------------------------------------------------------------------ 1. data-only checkpoints
def test_checkpoint_round_trip_is_exact_and_plain():
    rng = np.random.default_rng(3)
    state = {"version": CHECKPOINT_VERSION, "x": rng.normal(size=(5, 3)),
             "ints": np.arange(4, dtype=np.uint64), "f": 0.1 + 0.2, "big": 2 ** 100 + 7,
             "nested": {"t": (1, 2.5, "a"), "none": None, "nan": float("nan"),
                        "arrays": [np.array([1.0, np.inf]), np.float64(1 / 3)]}}
    back = decode_checkpoint(encode_checkpoint(state))
    assert np.array_equal(back["x"], state["x"]) and back["x"].dtype == np.float64
    assert back["ints"].dtype == np.uint64 and back["f"] == 0.1 + 0.2
    assert back["big"] == 2 ** 100 + 7 and back["nested"]["t"] == [1, 2.5, "a"]
    assert back["nested"]["none"] is None and np.isnan(back["nested"]["nan"])
    assert np.array_equal(back["nested"]["arrays"][0], [1.0, np.inf])
    assert back["nested"]["arrays"][1] == 1 / 3
    with pytest.raises(TypeError, match="plain data"):
        encode_checkpoint({"version": CHECKPOINT_VERSION, "obj": object()})
    with pytest.raises(TypeError, match="object arrays"):
        encode_checkpoint({"version": CHECKPOINT_VERSION, "a": np.array([None, 1])})


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_pickle_checkpoint_is_refused_and_never_run(finished_run, tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    for name in ("config.yaml", "md.log", MARKER_NAME):
        (run / name).write_bytes((finished_run / name).read_bytes())
    pwned = tmp_path / "pwned"
    (run / "checkpoint.pkl").write_bytes(pickle.dumps({"version": 1, "x": _Exploit(pwned)}))
    proc = cli("run", "--restart", run)
    assert proc.returncode == 2
    assert "pickle checkpoint of an older meltquench" in error_line(proc)
    assert not pwned.exists()
    # a pickle under the new name is no better: np.load refuses pickled data
    (run / CHECKPOINT_NAME).write_bytes(pickle.dumps(_Exploit(pwned)))
    proc = cli("run", "--restart", run)
    assert proc.returncode == 2 and "damaged or not a meltquench checkpoint" in error_line(proc)
    assert not pwned.exists()


# -------------------------------------------------- 5. a damaged checkpoint: exit 2, one line
@pytest.mark.parametrize("damage", ["truncated", "empty", "random", "npy", "version"])
def test_a_damaged_checkpoint_gives_exit_2(finished_run, tmp_path, damage):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes((finished_run / "config.yaml").read_bytes())
    good = (finished_run / CHECKPOINT_NAME).read_bytes()
    data = {"truncated": good[:len(good) // 2], "empty": b"",
            "random": np.random.default_rng(1).bytes(4000)}.get(damage)
    if damage == "npy":
        np.save(run / CHECKPOINT_NAME, np.arange(3))
        os.replace(run / (CHECKPOINT_NAME + ".npy"), run / CHECKPOINT_NAME)
    elif damage == "version":
        with open(run / CHECKPOINT_NAME, "wb") as fh:
            np.savez(fh, __meta__=np.array(json.dumps({"version": 99, "step": 3})))
    else:
        (run / CHECKPOINT_NAME).write_bytes(data)
    proc = cli("run", "--restart", run)
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert str(run / CHECKPOINT_NAME) in line
    assert ("damaged" in line) if damage != "version" else ("version 99" in line)


# ------------------------------------------------------- 2. --overwrite only what we made
def test_overwrite_refuses_a_folder_meltquench_did_not_make(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "thesis.tex").write_text("x")
    proc = cli("run", *FAST, "--overwrite", "-o", folder)
    assert proc.returncode == 2
    assert "was not made by meltquench" in error_line(proc)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]


def test_overwrite_of_a_run_deletes_only_its_files(tmp_path):
    run = tmp_path / "run"
    assert cli("run", *FAST, "-o", run).returncode == 0
    (run / "notes.txt").write_text("mine")
    (run / "analysis").mkdir()
    (run / "analysis" / "my-plot.png").write_text("mine too")
    old_id = json.loads((run / MARKER_NAME).read_text())["run_id"]
    proc = cli("run", *FAST, "--overwrite", "-o", run)
    assert proc.returncode == 0, proc.stderr
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "analysis" / "my-plot.png").read_text() == "mine too"
    assert "kept 2 entries meltquench did not write" in proc.stdout
    assert json.loads((run / MARKER_NAME).read_text())["run_id"] == old_id
    assert read_checkpoint(run)["phase"] == "done"


def test_bad_input_with_overwrite_deletes_nothing(tmp_path):
    run = tmp_path / "run"
    assert cli("run", *FAST, "-o", run).returncode == 0
    before = sorted(p.name for p in run.iterdir())
    proc = cli("run", *FAST, "--overwrite", "--set", "dynamics.seed=-1", "-o", run)
    assert proc.returncode == 2 and "seed" in error_line(proc)
    proc = cli("run", *FAST, "--overwrite", "--set", "structure.repeat=[0,1,1]", "-o", run)
    assert proc.returncode == 2, proc.stderr
    assert sorted(p.name for p in run.iterdir()) == before
    assert read_checkpoint(run)["phase"] == "done"


# ------------------------------------------------------------------- 3. one writer per folder
def test_a_second_writer_is_refused_with_the_holder(tmp_path):
    run = tmp_path / "run"
    # 500,000 steps: still running when the second writer has imported (seconds under load)
    long = ["--set", "schedule.melt_ps=1000", "--set", "output.checkpoint_interval=5"]
    proc = subprocess.Popen(CLI + ["run", *FAST, *long, "-o", str(run)], env=mpi_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / CHECKPOINT_NAME).exists():
            time.sleep(0.1)
        assert (run / CHECKPOINT_NAME).exists()
        for args in (["run", "--restart", run], ["run", *FAST, "--overwrite", "-o", run]):
            second = cli(*args)
            assert second.returncode == 2, second.stderr
            assert f"in use by PID {proc.pid} on host" in error_line(second)
        assert proc.poll() is None  # the first run goes on undisturbed
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    # the lock went with the process: the folder can be continued now
    assert "in use" not in cli("run", "--restart", run, "--stop-after", "0:00:01").stderr


def test_default_folder_names_are_unique_for_runs_started_together(tmp_path):
    procs = [subprocess.Popen(CLI + ["run", *FAST], cwd=tmp_path, env=mpi_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 3
    frames = [read(folder / "trajectory.traj", ":") for folder in folders]
    for folder, traj in zip(folders, frames):
        assert read_checkpoint(folder)["phase"] == "done"
        assert len(traj) == len(frames[0]) > 10
        assert np.array_equal(traj[-1].positions, frames[0][-1].positions)


# --------------------------------------------------------- 4. what a restart may change
def _stopped_run(tmp_path):
    run = tmp_path / "run"
    proc = cli("run", *FAST, "--set", "output.checkpoint_interval=5", "--stop-after", "0.001",
               "-o", run)
    assert proc.returncode == 75, proc.stderr
    return run


def _edit_config(run, section, key, value):
    import yaml
    data = yaml.safe_load((run / "config.yaml").read_text())
    data[section][key] = value
    (run / "config.yaml").write_text(yaml.safe_dump(data))


def test_restart_refuses_a_changed_time_step(tmp_path):
    run = _stopped_run(tmp_path)
    log = (run / "md.log").read_bytes()
    _edit_config(run, "dynamics", "timestep_fs", 1.0)
    proc = cli("run", "--restart", run)
    assert proc.returncode == 2
    assert "dynamics.timestep_fs 2.0 -> 1.0" in error_line(proc)
    assert (run / "md.log").read_bytes() == log


def test_restart_takes_an_allowed_change(tmp_path):
    run = _stopped_run(tmp_path)
    _edit_config(run, "dynamics", "taut_fs", 20.0)
    proc = cli("run", "--restart", run)
    assert proc.returncode == 0, proc.stderr
    assert "continuing with changed settings: dynamics.taut_fs 10.0 -> 20.0" in proc.stdout


def test_runaway_advice_does_not_invite_a_time_step_change(tmp_path):
    proc = cli("run", *FAST, "--set", "dynamics.max_temperature_factor=0.05", "-o",
               tmp_path / "run")
    assert proc.returncode == 3
    assert "cannot change the time step" in proc.stderr


# ---------------------------------------- 6. a run folder that cannot be made: exit 2, no work
@pytest.mark.parametrize("where", ["below-a-file", "read-only", "sys"])
def test_an_unusable_run_folder_gives_exit_2(tmp_path, where):
    if where == "below-a-file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "run"
    elif where == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (tmp_path / "ro").mkdir(mode=0o555)
        target = tmp_path / "ro" / "run"
    else:
        target = "/sys/meltquench-run"
    proc = cli("run", *FAST, "-o", target)
    assert proc.returncode == 2, proc.stderr
    assert "cannot use the run folder" in error_line(proc)


# ------------------------------- 8, 9. stopped or killed after the MD: a restart finishes it
STOPPER = textwrap.dedent("""
    import os, signal, sys
    from meltquench import driver
    from meltquench.analysis import report
    from meltquench.cli import main

    how = sys.argv[1]
    if how == "term-in-relax":
        class FIREStopped(driver.FIRE):
            def step(self, *a, **k):
                super().step(*a, **k)
                if self.nsteps == 2:
                    os.kill(os.getpid(), signal.SIGTERM)
        driver.OPTIMISERS["FIRE"] = FIREStopped
    else:  # SIGKILL once the analysis has written 2 of its files
        write_csv = report.AnalysisResult._write_csv
        def killed_after_csv(self, path):
            write_csv(self, path)
            os.kill(os.getpid(), signal.SIGKILL)
        report.AnalysisResult._write_csv = killed_after_csv
    sys.exit(main(sys.argv[2:]))
""")
RELAX = ["--set", "dynamics.final_relax=FIRE", "--set", "dynamics.relax_steps=6",
         "--set", "analysis.enabled=true"]


@pytest.fixture(scope="module")
def relaxed_reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    proc = cli("run", *FAST, *RELAX, "-o", run)
    assert proc.returncode == 0, proc.stderr
    return run


def _stopper(tmp_path, how, run):
    script = tmp_path / "stopper.py"
    script.write_text(STOPPER)
    return subprocess.run([sys.executable, str(script), how, "run", *FAST, *RELAX, "-o",
                           str(run)], capture_output=True, text=True, env=mpi_env(), timeout=300)


def _same_ending(run, ref):
    a, b = read(run / "final.traj"), read(ref / "final.traj")
    assert np.array_equal(a.positions, b.positions)
    assert (run / "relax.log").read_text().count("FIRE:") == \
        (ref / "relax.log").read_text().count("FIRE:")
    names = sorted(p.name for p in (ref / "analysis").iterdir())
    assert sorted(p.name for p in (run / "analysis").iterdir()) == names
    for name in ("summary.csv", "rdf.json"):
        assert (run / "analysis" / name).read_bytes() == (ref / "analysis" / name).read_bytes()
    a, b = (json.loads((folder / "analysis" / "summary.json").read_text())
            for folder in (run, ref))
    assert a.pop("source") != b.pop("source") and a == b


def test_sigterm_in_the_final_optimisation_stops_with_75(tmp_path, relaxed_reference):
    run = tmp_path / "run"
    proc = _stopper(tmp_path, "term-in-relax", run)
    assert proc.returncode == 75, proc.stderr
    assert "final optimisation" in proc.stderr and "--restart" in proc.stderr
    assert read_checkpoint(run)["phase"] == "md"
    proc = cli("run", "--restart", run)
    assert proc.returncode == 0, proc.stderr
    _same_ending(run, relaxed_reference)


def test_sigkill_in_the_analysis_is_finished_by_a_restart(tmp_path, relaxed_reference):
    run = tmp_path / "run"
    proc = _stopper(tmp_path, "kill-in-analysis", run)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert read_checkpoint(run)["phase"] == "analysis"
    assert sorted(p.name for p in (run / "analysis").iterdir()) == ["summary.csv",
                                                                      "summary.json"]
    proc = cli("run", "--restart", run)
    assert proc.returncode == 0, proc.stderr
    assert "the analysis is next" in proc.stdout
    assert read_checkpoint(run)["phase"] == "done"
    _same_ending(run, relaxed_reference)


def test_python_restart_of_a_missing_folder_is_a_user_error(tmp_path):
    from meltquench import driver
    with pytest.raises(UserError, match="not a folder"):
        driver.restart(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoint"):
        driver.restart(tmp_path / "empty")
    assert not (tmp_path / "empty" / LOCK_NAME).exists()


def test_under_mpirun_refusals_are_one_line_and_collective(tmp_path, finished_run, mpirun):
    """Under mpirun -np 2 the folder checks run on rank 0 and every rank exits with 2."""
    from conftest import run_mpi
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "thesis.tex").write_text("x")
    proc = run_mpi(["python", "-m", "meltquench.cli", "run", *FAST, "--overwrite", "-o",
                    str(folder)], check=False)
    assert proc.returncode == 2 and "was not made by meltquench" in error_line(proc)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_bytes((finished_run / "config.yaml").read_bytes())
    (run / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    proc = run_mpi(["python", "-m", "meltquench.cli", "run", "--restart", str(run)],
                   check=False)
    assert proc.returncode == 2 and "damaged" in error_line(proc)
