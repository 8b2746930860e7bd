"""The batch scripts of ``scripts/`` finish a run that is over (``FINISH``), as their comments
say: Slurm's with stand-ins for ``srun`` and ``sbatch``, PBS's with one for ``mpirun``, and
``mpirun.sh`` under the real ``mpirun -np 2``. Each result is the in-process finish's."""
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from conftest import mpi_env
from meltquench import driver
from meltquench.finish import finish, finish_config
from test_finish import config

REPO = Path(__file__).resolve().parent.parent
FINISH = "finish.calculator={name: pair, dispersion: null, pair: {cutoff: 5.0, cutoff_on: 4.0}}"
SETS = ["--set", FINISH, "--set", "finish.relax_steps=4", "--set", "dynamics.final_relax=BFGS"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finishless pair-potential run, and its finish made in this process."""
    base = tmp_path_factory.mktemp("batch")
    driver.run(config("finish.calculator=null", "dynamics.final_relax=BFGS",
                      "dynamics.relax_steps=3"), run_dir=base / "run")
    cfg = finish_config(base / "run", overrides=SETS[1::2])
    finish(base / "run", cfg, out=base / "serial")
    return base


def edited(name, folder, **values):
    """``scripts/name`` with its ``KEY=...  # EDIT`` lines set to ``values``, in ``folder``."""
    text = (REPO / "scripts" / name).read_text()
    for key, value in values.items():
        text, n = re.subn(rf"^{key}=.*?(?=\s+# EDIT)", f"{key}={value}", text, flags=re.M)
        assert n == 1, key
    path = folder / name
    path.write_text(text)
    return path


def stand_in(folder, name, body):
    path = folder / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


def run_script(path, folder, env=None):
    env = {**mpi_env(), "PATH": f"{folder / 'bin'}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["bash", str(path)], cwd=folder, capture_output=True, text=True,
                          timeout=600, env=env)


def finish_option(out):
    return "(" + " ".join(f"'{a}'" for a in SETS + ["--out", str(out)]) + ")"


def assert_same_finish(out, runs):
    assert json.loads((out / "finish.json").read_text())["steps"] == 4
    assert np.allclose(read(out / "final.traj").positions,
                       read(runs / "serial" / "final.traj").positions, atol=1e-10, rtol=0)


def test_slurm_script_finishes_a_run_and_resubmits_itself_when_stopped(tmp_path, runs):
    stand_in(tmp_path, "srun", 'exec "$@"')
    stand_in(tmp_path, "sbatch", f'echo "$@" >> {tmp_path / "sbatch.calls"}')
    out = tmp_path / "finish"
    env = {"SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_JOB_NAME": "test"}
    script = edited("slurm.sbatch", tmp_path, RUN_DIR=str(runs / "run"), STOP_AFTER="0.001",
                    FINISH=finish_option(out))
    proc = run_script(script, tmp_path, env)
    assert proc.returncode == 75, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "dry run: nothing is computed" in proc.stdout
    assert "submitting the continuation" in proc.stdout
    assert (tmp_path / "sbatch.calls").read_text().split() == [str(script)]
    script = edited("slurm.sbatch", tmp_path, RUN_DIR=str(runs / "run"), STOP_AFTER="1:00:00",
                    FINISH=finish_option(out))
    proc = run_script(script, tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert_same_finish(out, runs)
    assert len((tmp_path / "sbatch.calls").read_text().split()) == 1  # not again


def test_pbs_script_finishes_a_run(tmp_path, runs):
    stand_in(tmp_path, "mpirun", 'shift 2; exec "$@"')  # drops "-np N"
    out = tmp_path / "finish"
    script = edited("pbs.sh", tmp_path, RUN_DIR=str(runs / "run"), FINISH=finish_option(out))
    proc = run_script(script, tmp_path, {"PBS_O_WORKDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert_same_finish(out, runs)


def test_mpirun_script_finishes_a_run_on_two_ranks(tmp_path, runs):
    out = tmp_path / "finish"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "mpirun.sh"), *SETS, "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**mpi_env(), "NP": "2", "FINISH": "1",
                               "RUN_DIR": str(runs / "run")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("Done. Outputs in") == 1  # rank 0 speaks
    assert_same_finish(out, runs)
