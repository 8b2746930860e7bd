"""Bad input through the command line: one line ``meltquench: error: ...``, exit code 2, found
before anything is made (also with ``--dry-run``), printed once under ``mpirun``."""
import random

import pytest
import yaml

from conftest import run_mpi
from test_cli import FAST, assert_one_line_error, mq


def run_both_ways(tmp_path, *args):
    """``meltquench run ARGS -o tmp/x`` with and without ``--dry-run``; the two processes."""
    out = tmp_path / "x"
    return [mq("run", *FAST, *args, *dry, "-o", out) for dry in (["--dry-run"], [])]


def shown(*args):
    """The configuration ``meltquench config --show ARGS`` resolves, as a dict."""
    proc = mq("config", "--show", *args)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


# --------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("key", ["dynamics.seed", "structure.seed"])
def test_negative_seed_is_refused_before_anything_is_made(tmp_path, key):
    # with the defects made after the quench, structure.seed is used only after the whole MD
    defects = ["--set", "structure.defects=paper", "--set", "structure.defect_stage=after-quench"]
    for proc in run_both_ways(tmp_path, *defects, "--set", f"{key}=-1"):
        assert_one_line_error(proc, key, "-1")
        assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- YAML floats
def test_floats_without_a_dot_in_a_config_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("schedule: {T_start_K: 1E+3, T_melt_K: 4e3, melt_ps: .5, final_ps: 2.5e-3}\n"
                      "regions: {origin: -2.5e-3}\n"
                      "dynamics: {relax_fmax: 1e-9, seed: 42}\n"
                      "calculator: {gpaw: {basis: sz(dzp)}}\n"
                      "output: {name: '1,2'}\n")
    cfg = shown(config)
    assert cfg["schedule"]["T_start_K"] == 1000.0 and cfg["schedule"]["T_melt_K"] == 4000.0
    assert cfg["schedule"]["melt_ps"] == 0.5 and cfg["schedule"]["final_ps"] == 0.0025
    assert cfg["regions"]["origin"] == -0.0025
    assert cfg["dynamics"]["relax_fmax"] == 1e-9
    assert cfg["dynamics"]["seed"] == 42 and isinstance(cfg["dynamics"]["seed"], int)
    assert cfg["calculator"]["gpaw"]["basis"] == "sz(dzp)" and cfg["output"]["name"] == "1,2"
    # the resolved YAML (a run folder's config.yaml, read by --restart) reads back the same
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(mq("config", "--show", config).stdout)
    assert shown(resolved) == cfg


@pytest.mark.parametrize("item, key, value", [
    ("schedule.T_melt_K=4e3", ("schedule", "T_melt_K"), 4000.0),
    ("dynamics.relax_fmax=1e-9", ("dynamics", "relax_fmax"), 1e-9),
    ("schedule.T_start_K=1E+3", ("schedule", "T_start_K"), 1000.0),
    ("schedule.melt_ps=.5", ("schedule", "melt_ps"), 0.5),
    ("regions.origin=-2.5e-3", ("regions", "origin"), -0.0025),
    ("regions.origin=-.5", ("regions", "origin"), -0.5),
    ("dynamics.seed=42", ("dynamics", "seed"), 42),
    ("calculator.gpaw.basis=sz(dzp)", ("calculator", "gpaw", "basis"), "sz(dzp)"),
    ("output.name=1,2", ("output", "name"), "1,2"),
])
def test_set_values_read_like_yaml_1_2(item, key, value):
    node = shown("--set", item)
    for part in key:
        node = node[part]
    assert node == value and type(node) is type(value)


@pytest.mark.parametrize("item", ["schedule.T_melt_K=.inf", "schedule.melt_ps=1e999",
                                  "calculator.gpaw.h=.nan"])
def test_infinite_and_nan_values_are_refused(tmp_path, item):
    for proc in run_both_ways(tmp_path, "--set", item):
        assert_one_line_error(proc, item.partition("=")[0], "finite")
        assert not (tmp_path / "x").exists()


def test_python_tags_are_still_refused(tmp_path):
    marker = tmp_path / "ran"
    config = tmp_path / "c.yaml"
    config.write_text(f"schedule: !!python/object/apply:os.system ['touch {marker}']\n")
    assert_one_line_error(mq("config", "--show", config), "not valid YAML")
    proc = mq("config", "--show", "--set", "schedule.T_melt_K=!!python/name:os.system")
    assert_one_line_error(proc, "not valid YAML")
    assert not marker.exists()


# --------------------------------------------------------------------------- structure files
def test_unreadable_structure_files_say_what_was_expected(tmp_path):
    rng = random.Random(13)
    junk = tmp_path / "junk.cif"
    junk.write_text("\n".join(" ".join("".join(rng.choice("abcdefxyz_;'0123456789")
                                               for _ in range(rng.randint(1, 12)))
                                       for _ in range(6)) for _ in range(20)) + "\n")
    empty = tmp_path / "empty.cif"
    empty.write_text("")
    for path, words in ((junk, ["not a valid CIF file", "AssertionError"]), (empty, ["empty"])):
        for proc in run_both_ways(tmp_path, "--set", f"structure.file={path}"):
            assert_one_line_error(proc, f"cannot read structure file {path}", *words,
                                  "expected a structure file ASE reads (CIF, POSCAR, extxyz, traj)")
            assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- regions.axis
@pytest.mark.parametrize("axis", ["x", "y", "z", "Z"])
def test_cartesian_axis_names_are_refused(tmp_path, axis):
    for proc in run_both_ways(tmp_path, "--set", f"regions.axis={axis}"):
        assert_one_line_error(proc, "regions.axis", "Cartesian", "0, 1, 2 or a, b, c")
        assert not (tmp_path / "x").exists()


def test_lattice_vector_names_are_accepted():
    assert shown("--set", "regions.axis=b")["regions"]["axis"] == 1
    assert shown("--set", "regions.axis=C")["regions"]["axis"] == 2
    assert "x/y/z" in mq("config", "--keys").stdout


# --------------------------------------------------------------------------- argparse, mpirun
@pytest.mark.parametrize("args, words", [
    (["run", "--bogus"], ["unrecognized arguments: --bogus", "meltquench run --help"]),
    (["run", "--stop-after"], ["--stop-after", "meltquench run --help"]),
    (["frobnicate"], ["invalid choice", "meltquench --help"]),
    (["run", "--set", "schedule.melt_ps"], ["--set", "schedule.melt_ps"]),
    (["run", "--stop-after", "soon", "--dry-run"], ["--stop-after", "soon"]),
    (["run", "--restart", "somerun", "--set", "finish.calculator=null"],
     ["--restart", "--set", "edit somerun/config.yaml"]),
])
def test_argument_errors_are_one_line(args, words):
    assert_one_line_error(mq(*args), *words)


@pytest.mark.parametrize("case", ["bad-value", "bad-yaml", "bad-key", "bad-argument"])
def test_an_error_is_printed_once_under_mpirun(tmp_path, case):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("schedule: [\n")
    args = {"bad-value": ["--set", "dynamics.timestep_fs=abc"], "bad-yaml": [bad_yaml],
            "bad-key": ["--set", "dynamics.timstep_fs=1"], "bad-argument": ["--bogus"]}[case]
    proc = run_mpi(["python", "-m", "meltquench.cli", "run", *map(str, args),
                    "-o", str(tmp_path / "x")], np=2, check=False)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("meltquench: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "meltquench run: error" not in proc.stderr
    assert not (tmp_path / "x").exists()
