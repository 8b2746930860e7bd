"""The command line as a user meets it: help, presets, config, build, and bad input."""
import os
import subprocess
import sys

import pytest
from ase import Atoms
from ase.constraints import FixAtoms
from ase.io import read, write

FAST = ["--set", "calculator.name=pair", "--set", "calculator.dispersion=null",
        "--set", "output.progress=log", "--set", "analysis.enabled=false",
        "--set", "dynamics.final_relax=null"]


def mq(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "meltquench.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meltquench: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_help_explains_itself():
    proc = mq("--help")
    assert proc.returncode == 0
    for word in ("run", "analyse", "build", "presets", "config", "mpirun", "--restart"):
        assert word in proc.stdout
    proc = mq("run", "--help")
    for word in ("--preset", "--dry-run", "--stop-after", "--overwrite", "exit codes"):
        assert word in proc.stdout


def test_presets_and_config_show():
    proc = mq("presets")
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout and "paper-perfect" in proc.stdout and "atoms" in proc.stdout
    proc = mq("config", "--show", "--preset", "paper-perfect")
    assert proc.returncode == 0 and "T_melt_K: 4000.0" in proc.stdout
    assert "melt_ps" in mq("config", "--keys").stdout


def test_build_writes_a_labelled_model(tmp_path):
    out = tmp_path / "m.extxyz"
    proc = mq("build", "--set", "structure.builder=v2o3", "-o", out)
    assert proc.returncode == 0, proc.stderr
    atoms = read(out)
    assert len(atoms) == 60 and set(atoms.get_tags()) == {1, 2}
    assert_one_line_error(mq("build", "-o", out), "already exists", "--overwrite")


def test_run_and_restart_from_the_command_line(tmp_path):
    proc = mq("run", *FAST, "-o", tmp_path / "r", "--stop-after", "0.000001")
    assert proc.returncode == 75, proc.stderr
    assert "--restart" in proc.stderr
    proc = mq("run", "--restart", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    assert "step 20/20" in proc.stdout
    assert "Done: 20 MD steps" in proc.stdout and "  final.traj" in proc.stdout
    assert_one_line_error(mq("run", *FAST, "-o", tmp_path / "r"), "already exists", "--overwrite")


@pytest.mark.parametrize("sets, words", [
    (["schedule.T_melt_K=0"], ["T_melt_K"]),
    (["schedule.T_final_K=-10"], ["T_final_K"]),
    (["dynamics.timestep_fs=0"], ["timestep_fs"]),
    (["dynamics.timestep_fs=5.5"], ["timestep_fs"]),
    (["schedule.melt_pss=1"], ["melt_pss", "melt_ps"]),
    (["regions.melt_fraction=0.01"], ["melt region has no atoms"]),
])
def test_bad_settings(tmp_path, sets, words):
    args = [a for s in sets for a in ("--set", s)]
    assert_one_line_error(mq("run", *FAST, *args, "-o", tmp_path / "r"), *words)
    assert not (tmp_path / "r").exists()


def test_bad_structure_files(tmp_path):
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("this is not a CIF file\n")
    unknown = tmp_path / "model.qwerty"
    unknown.write_text("1\n")
    close = tmp_path / "close.extxyz"
    write(close, Atoms("VO", positions=[(0, 0, 0), (0.3, 0, 0.1)], cell=[5, 5, 5], pbc=True))
    allfixed = tmp_path / "fixed.traj"
    a = Atoms("V2O2", scaled_positions=[(0, 0, 0.1), (0.5, 0.5, 0.3), (0, 0.5, 0.6), (0.5, 0, 0.8)],
              cell=[4, 4, 6], pbc=True)
    a.set_constraint(FixAtoms(indices=range(4)))
    write(allfixed, a)
    for path, words in ((tmp_path / "missing.cif", ["not found"]), (garbage, ["cannot read"]),
                        (unknown, ["cannot read"]), (close, ["closer than 0.5"]),
                        (allfixed, ["all atoms are fixed"])):
        assert_one_line_error(mq("run", *FAST, "--set", f"structure.file={path}",
                                 "-o", tmp_path / "r"), *words)


def test_missing_calculator_says_how_to_install(tmp_path):
    fake = tmp_path / "fake"
    (fake / "tblite").mkdir(parents=True)
    (fake / "tblite" / "__init__.py").write_text("raise ImportError('no tblite here')\n")
    proc = mq("run", *FAST, "--set", "calculator.name=tblite", "-o", tmp_path / "r",
              env={"PYTHONPATH": str(fake)})
    assert_one_line_error(proc, "tblite", "pip install")


def test_unknown_preset_and_config_file(tmp_path):
    assert_one_line_error(mq("run", "--preset", "paper-perfekt"), "paper-perfect")
    assert_one_line_error(mq("run", tmp_path / "nope.yaml"), "not found")
