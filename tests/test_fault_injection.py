"""Fault injection: a run killed with SIGKILL at random steps, again and again, and continued
each time with ``meltquench run --restart``, ends bit for bit where an uninterrupted run ends.

Black-box: only the command line and the run folder's outputs (``trajectory.traj``, ``md.log``,
``final.traj``) are used, never the checkpoint file. The kills are placed at random MD steps
(seeded, so a failure can be replayed; ``MELTQUENCH_FAULT_SEED`` changes the seed) by polling
``md.log``, not at random wall times, so the test means the same on a slow machine; a small
random delay after the chosen step lands the kill at a random point inside a step (force call,
``md.log`` append, trajectory frame, checkpoint write).
"""
import os
import random
import re
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from ase.io.trajectory import Trajectory

from conftest import mpi_env

CLI = [sys.executable, "-m", "meltquench.cli"]
NSTEPS = 120                 # 0.24 ps at 2 fs
CHECKPOINT_INTERVAL = 3
N_KILLS = 4
ARGS = ["--preset", "demo",
        "--set", "calculator.name=pair", "--set", "calculator.dispersion=null",
        "--set", "structure.builder=v2o3",                   # 60 atoms: a few ms per step
        "--set", "schedule.heat_ps=0.04", "--set", "schedule.melt_ps=0.08",
        "--set", "schedule.quench_ps=0.08", "--set", "schedule.final_ps=0.04",
        "--set", "dynamics.timestep_fs=2.0",
        "--set", f"output.checkpoint_interval={CHECKPOINT_INTERVAL}",
        "--set", "output.trajectory_interval=1",
        "--set", "output.progress=log", "--set", "analysis.enabled=false",
        "--set", "dynamics.final_relax=FIRE", "--set", "dynamics.relax_steps=5"]
WALL_CLOCK_COLUMNS = ("s_per_step",)  # md.log columns that measure time, not the state


def start(args, run_dir, tag):
    """Start ``meltquench <args>`` in the background, its output into files next to run_dir."""
    out = open(run_dir.parent / f"{run_dir.name}.{tag}.out", "w")
    err = open(run_dir.parent / f"{run_dir.name}.{tag}.err", "w")
    proc = subprocess.Popen(CLI + [str(a) for a in args], stdout=out, stderr=err, text=True,
                            env=mpi_env())
    proc.files = (out, err)
    return proc


def finish(proc, timeout=300):
    """Wait for ``proc``; its return code, stdout and stderr."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{proc.args} did not finish within {timeout} s")
    out, err = proc.files
    for fh in (out, err):
        fh.close()
    return proc.returncode, open(out.name).read(), open(err.name).read()


def last_logged_step(run_dir):
    """The highest step in md.log (-1: none yet); a half-written last line is ignored."""
    try:
        text = (run_dir / "md.log").read_text()
    except FileNotFoundError:
        return -1
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#"):
        return -1
    ncol = len(lines[0][1:].split())
    if not text.endswith("\n"):
        lines = lines[:-1]
    steps = [int(line.split()[0]) for line in lines[1:]
             if not line.startswith("#") and len(line.split()) == ncol]
    return max(steps, default=-1)


def kill_at_step(proc, run_dir, target, delay_s, history, timeout=300):
    """SIGKILL ``proc`` once md.log shows ``target`` (then ``delay_s`` more seconds).

    Returns whether the kill landed (False: the process ended by itself first, and well) and
    the process's standard output."""
    deadline = time.monotonic() + timeout
    while last_logged_step(run_dir) < target:
        if proc.poll() is not None:
            rc, out, err = finish(proc)
            assert rc == 0, \
                f"run ended with {rc} before the kill at step {target}:\n{history}\n" \
                f"{out[-3000:]}\n{err[-3000:]}"
            return False, out
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no step {target} in md.log after {timeout} s:\n{history}")
        time.sleep(0.002)
    time.sleep(delay_s)
    if proc.poll() is not None:  # finished in the delay
        rc, out, err = finish(proc)
        assert rc == 0, f"{history}\n{out[-3000:]}\n{err[-3000:]}"
        return False, out
    proc.send_signal(signal.SIGKILL)
    rc, out, err = finish(proc)
    if rc != -signal.SIGKILL:  # it ended by itself just before the signal
        assert rc == 0, f"{history}\n{out[-3000:]}\n{err[-3000:]}"
    return rc == -signal.SIGKILL, out


def resumed_from(out):
    """What a restart says about where it continued (for the failure report only)."""
    found = re.findall(r"checkpoint of step \d+", out)
    return found[0] if found else "no 'checkpoint of step' in its output"


def strip_wall_clock(path):
    """md.log as lines, with the wall-clock column(s) cut out (by the header's column names)."""
    lines = path.read_text().splitlines()
    assert lines and lines[0].startswith("#"), f"{path} has no header"
    names = lines[0][1:].split()
    drop = {names.index(c) for c in WALL_CLOCK_COLUMNS if c in names}
    assert drop, f"none of {WALL_CLOCK_COLUMNS} in the md.log header {names}"
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split()
        assert len(fields) == len(names), f"{path}: malformed line {line!r}"
        out.append(" ".join(f for i, f in enumerate(fields) if i not in drop))
    return out


def assert_frames_identical(path_ref, path_run, what, report=""):
    """Every frame of two .traj files equal bit for bit (and as many frames)."""
    with Trajectory(path_ref) as ref, Trajectory(path_run) as run:
        assert len(run) == len(ref), \
            f"{what}: {len(run)} frames, uninterrupted {len(ref)}\n{report}"
        for i in range(len(ref)):
            a, b = ref[i], run[i]
            arrays = {"numbers": (a.numbers, b.numbers),
                      "cell": (a.cell.array, b.cell.array),
                      "pbc": (a.pbc, b.pbc),
                      "positions": (a.positions, b.positions),
                      "momenta": (a.get_momenta(), b.get_momenta())}
            ra = a.calc.results if a.calc is not None else {}
            rb = b.calc.results if b.calc is not None else {}
            assert sorted(ra) == sorted(rb), \
                f"{what} frame {i}: results {sorted(rb)}, uninterrupted {sorted(ra)}\n{report}"
            arrays.update({k: (np.asarray(ra[k]), np.asarray(rb[k])) for k in ra})
            for name, (x, y) in arrays.items():
                if not np.array_equal(x, y):
                    diff = (np.abs(np.asarray(x, float) - np.asarray(y, float)).max()
                            if np.shape(x) == np.shape(y) else "shape")
                    pytest.fail(f"{what} frame {i}: {name} differs from the uninterrupted run "
                                f"(max |diff| {diff})\n{report}")


@pytest.fixture
def seed(request):
    base = int(os.environ.get("MELTQUENCH_FAULT_SEED", "20240611"))
    return base + zlib.crc32(request.node.callspec.id.encode())


@pytest.mark.parametrize("thermostat", ["bussi", "nhc", "langevin"])
def test_random_sigkills_and_restarts_give_the_uninterrupted_run_bit_for_bit(
        tmp_path, thermostat, seed):
    args = [*ARGS, "--set", f"dynamics.thermostat={thermostat}"]
    rng = random.Random(seed)
    run_dir, ref_dir = tmp_path / "killed", tmp_path / "reference"

    # the reference runs alongside the first attempt of the killed run (two cores)
    ref = start(["run", *args, "-o", ref_dir], ref_dir, "run")
    proc = start(["run", *args, "-o", run_dir], run_dir, "run0")
    procs = [ref, proc]
    targets = sorted(rng.sample(range(CHECKPOINT_INTERVAL + 2, NSTEPS - 15), N_KILLS))
    history = [f"seed {seed}, kill targets {targets}"]
    try:
        seen = -1  # the highest step logged before the last kill
        kills = 0
        done = False
        for n, target in enumerate(targets, start=1):
            target = max(target, seen + 1)  # at least one step past what the last attempt logged
            delay = rng.uniform(0.0, 0.03)
            killed, out = kill_at_step(proc, run_dir, target, delay, "\n".join(history))
            if n > 1:
                history.append(f"  (restart {n - 1}: {resumed_from(out)})")
            if not killed:
                history.append(f"attempt {n - 1} finished before step {target}")
                done = True
                break
            kills += 1
            seen = last_logged_step(run_dir)
            history.append(f"killed attempt {n - 1} at step >= {target} (+{delay * 1e3:.0f} ms): "
                           f"md.log reaches step {seen}")
            proc = start(["run", "--restart", run_dir], run_dir, f"run{n}")
            procs.append(proc)
        if not done:
            rc, out, err = finish(proc)
            history.append(f"last restart ({resumed_from(out)}): exit {rc}")
            assert rc == 0, \
                "\n".join(history) + f"\n{out[-3000:]}\n{err[-3000:]}"
        rc, out, err = finish(ref)
        assert rc == 0, f"uninterrupted run: exit {rc}\n{out[-3000:]}\n{err[-3000:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    report = "\n".join(history)
    print(report)

    assert_frames_identical(ref_dir / "trajectory.traj", run_dir / "trajectory.traj",
                            "trajectory.traj", report)
    assert_frames_identical(ref_dir / "final.traj", run_dir / "final.traj", "final.traj", report)
    ref_log, run_log = strip_wall_clock(ref_dir / "md.log"), strip_wall_clock(run_dir / "md.log")
    assert len(ref_log) == NSTEPS + 2  # header, step 0, steps 1..NSTEPS
    for i, (a, b) in enumerate(zip(ref_log, run_log)):
        assert a == b, \
            f"md.log line {i} differs:\n  uninterrupted: {a}\n  killed:        {b}\n{report}"
    assert len(run_log) == len(ref_log), f"md.log: {len(run_log)} lines, uninterrupted " \
                                         f"{len(ref_log)}\n{report}"
    # last: a run that got ahead of the kills is no error of the engine, only a weaker test
    assert kills >= N_KILLS - 1, f"only {kills} of {N_KILLS} kills landed:\n{report}"
