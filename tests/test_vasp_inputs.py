"""The VASP path a VASP user runs on a cluster: 'meltquench build --write-input' writes the
programme as chained VASP runs (VASP's own MD, the paper's way) and run-programme.sh chains
them; the spin is one key for GPAW and VASP. VASP is not installed: the inputs are read back,
and the script runs against a stand-in VASP."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ase import units
from ase.io import read

from meltquench.calculators import (CalculatorSettings, make_calculator, prepare_atoms,
                                    programme_stages, vasp_parameters)
from meltquench.cli import main
from meltquench.config import load_config
from meltquench.errors import UserError
from meltquench.schedule import melt_quench
from meltquench.structures import fixed_mask, split_regions, v2o3_rhombohedral

RUNS = ["1-heat", "2-melt", "3-quench", "4-final", "5-relax"]
SMALL = ["--set", "structure.repeat=[1,1,2]"]  # 20 atoms: the paper programme, a small model


@pytest.fixture
def potcars(fake_potcars):
    """The stand-in POTCARs with V_sv beside plain V and O."""
    folder = fake_potcars / "potpaw_PBE" / "V_sv"
    folder.mkdir(exist_ok=True)
    (folder / "POTCAR").write_text(" PAW_PBE V_sv 07Sep2000\n")
    return fake_potcars


def incar(path):
    tags = {}
    for line in path.read_text().splitlines():
        key, value = (part.strip() for part in line.split("=", 1))
        tags[key] = value
    return tags


def build(tmp_path, *args, folder="vasp"):
    code = main(["build", "--preset", "paper-perfect-vasp", *args, "-o",
                 str(tmp_path / "model.extxyz"), "--overwrite",
                 "--write-input", str(tmp_path / folder)])
    assert code == 0
    return tmp_path / folder


def test_paper_preset_writes_four_md_runs_and_the_optimisation(tmp_path, potcars):
    folder = build(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(RUNS + ["run-programme.sh"])
    tags = {run: incar(folder / run / "INCAR") for run in RUNS}
    # the paper programme: 1 + 6 + 9 + 2 ps at 2 fs
    for run, nsw, tebeg, teend in (("1-heat", 500, 300, 4000), ("2-melt", 3000, 4000, 4000),
                                   ("3-quench", 4500, 4000, 300), ("4-final", 1000, 300, 300)):
        t = tags[run]
        assert t["IBRION"] == "0" and int(t["NSW"]) == nsw and float(t["POTIM"]) == 2.0, run
        assert float(t["TEBEG"]) == tebeg and float(t["TEEND"]) == teend, run
        assert t["MDALGO"] == "0" and float(t["SMASS"]) == 0.0, run  # Nose thermostat
    relax = tags["5-relax"]
    assert relax["IBRION"] == "2" and float(relax["EDIFFG"]) == -0.03
    assert int(relax["NSW"]) == 1000 and "TEBEG" not in relax and "SMASS" not in relax
    for run, t in tags.items():  # the paper's method in every run
        assert float(t["ENCUT"]) == 450 and t["GGA"] == "PE" and t["LASPH"] == ".TRUE.", run
        assert t["LDAU"] == ".TRUE." and t["LDAUTYPE"] == "2" and t["LMAXMIX"] == "4", run
        assert t["IVDW"] == "12" and t["ISYM"] == "0" and t["ISPIN"] == "1", run
        assert (folder / run / "KPOINTS").read_text().splitlines()[2].lower().startswith("g")
        assert (folder / run / "POTCAR").read_text().split() == \
            ["PAW_PBE", "V_sv", "07Sep2000", "PAW_PBE", "O", "06Sep2000"], run
    species = (folder / "1-heat" / "POSCAR").read_text().splitlines()[5].split()
    assert species == ["V", "O"] and tags["1-heat"]["LDAUL"] == "2 -1"
    assert tags["1-heat"]["LDAUU"] == "3.250 0.000"
    # only the first run has a POSCAR: the others start from the CONTCAR before them
    assert [run for run in RUNS if (folder / run / "POSCAR").exists()] == ["1-heat"]


def test_first_poscar_fixes_exactly_the_crystal_half_and_starts_at_T_start(tmp_path, potcars):
    folder = build(tmp_path)
    model = read(tmp_path / "model.extxyz")
    written = read(folder / "1-heat" / "POSCAR", format="vasp")
    order = np.loadtxt(folder / "1-heat" / "ase-sort.dat", dtype=int)[:, 1]  # resort
    assert np.allclose(written.positions[order], model.positions, atol=1e-8)
    fixed = fixed_mask(written)[order]
    assert np.array_equal(fixed, model.get_tags() == 1) and fixed.sum() == len(model) // 2
    velocities = written.get_velocities()[order]
    assert np.all(velocities[fixed] == 0) and np.all(np.abs(velocities[~fixed]).sum(1) > 0)
    masses = model.get_masses()[~fixed]
    T = (masses[:, None] * velocities[~fixed] ** 2).sum() / (3 * (~fixed).sum() * units.kB)
    assert 200 < T < 400  # Maxwell-Boltzmann at T_start = 300 K (dynamics.seed)


def test_runs_follow_the_configured_schedule_and_time_step(tmp_path, potcars):
    folder = build(tmp_path, *SMALL, "--set", "dynamics.timestep_fs=1.5",
                   "--set", "schedule.quench_rate_K_per_ps=1850",
                   "--set", "schedule.quench_ps=null",
                   "--set", "dynamics.relax_fmax=0.05", "--set", "dynamics.relax_steps=200")
    t = {run: incar(folder / run / "INCAR") for run in RUNS}
    assert [int(t[run]["NSW"]) for run in RUNS] == [667, 4000, 1333, 1333, 200]
    assert all(float(t[run]["POTIM"]) == 1.5 for run in RUNS[:4])
    assert float(t["5-relax"]["EDIFFG"]) == -0.05
    folder = build(tmp_path, *SMALL, "--set", "dynamics.final_relax=null", folder="norelax")
    assert sorted(p.name for p in folder.iterdir()) == RUNS[:4] + ["run-programme.sh"]


def test_long_stages_cut_into_runs_that_follow_the_ramp(tmp_path, potcars):
    folder = build(tmp_path, *SMALL, "--set", "calculator.vasp.stage_steps=1500")
    runs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert runs == ["1-heat", "2-melt-1", "3-melt-2", "4-quench-1", "5-quench-2",
                    "6-quench-3", "7-final", "8-relax"]
    t = [incar(folder / run / "INCAR") for run in runs[:-1]]
    assert sum(int(x["NSW"]) for x in t) == 9000 and max(int(x["NSW"]) for x in t) <= 1500
    for a, b in zip(t, t[1:]):  # one continuous programme: each run starts where the last ended
        assert float(a["TEEND"]) == float(b["TEBEG"])
    quench = [x for x, run in zip(t, runs) if "quench" in run]
    assert [(float(x["TEBEG"]), float(x["TEEND"])) for x in quench] == \
        [(4000, 2766.667), (2766.667, 1533.333), (1533.333, 300)]
    # SIGMA follows each run's hotter end: max(k_B T, 0.05 eV)
    assert [float(x["SIGMA"]) for x in quench] == [0.3447, 0.2384, 0.1321]


def test_electronic_smearing_per_run(tmp_path, potcars):
    folder = build(tmp_path, *SMALL)
    sigma = {run: float(incar(folder / run / "INCAR")["SIGMA"]) for run in RUNS}
    assert all(incar(folder / run / "INCAR")["ISMEAR"] == "-1" for run in RUNS)
    kT_melt = round(units.kB * 4000, 4)
    assert kT_melt == 0.3447
    assert sigma == {"1-heat": kT_melt, "2-melt": kT_melt, "3-quench": kT_melt,
                     "4-final": 0.05, "5-relax": 0.05}
    folder = build(tmp_path, *SMALL, "--set", "calculator.vasp.electronic_temperature=fixed",
                   "--set", "calculator.vasp.ismear=0", folder="fixed")
    for run in RUNS:
        t = incar(folder / run / "INCAR")
        assert t["ISMEAR"] == "0" and float(t["SIGMA"]) == 0.05


def test_potcar_choice_is_a_key(tmp_path, potcars, capsys):
    folder = build(tmp_path, *SMALL, "--set", "calculator.vasp.setups={}", folder="plain")
    assert (folder / "1-heat" / "POTCAR").read_text().split()[1] == "V"
    (potcars / "potpaw_PBE" / "V_sv" / "POTCAR").unlink()
    capsys.readouterr()
    assert main(["build", "--preset", "paper-perfect-vasp", *SMALL, "-o",
                 str(tmp_path / "m.traj"), "--write-input", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "calculator.vasp.setups" in error[0], error
    assert f"{potcars}/potpaw_PBE/V_sv/POTCAR is missing" in error[0]
    assert not (tmp_path / "m.traj").exists()  # found before anything was written


def test_write_input_checks_before_writing_and_never_mixes_with_output(tmp_path, potcars):
    folder = build(tmp_path, *SMALL)
    (folder / "2-melt" / "OUTCAR").write_text("a VASP run was here\n")
    proc = subprocess.run([sys.executable, "-m", "meltquench.cli", "build", "--preset",
                           "paper-perfect-vasp", *SMALL, "-o", tmp_path / "new.traj",
                           "--write-input", folder, "--overwrite"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 2 and "holds the output of a VASP run" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "new.traj").exists()  # checked before the model was written


def test_defects_after_the_quench_are_refused_not_forgotten(tmp_path, potcars, capsys):
    assert main(["build", "--preset", "paper-defective-vasp", "-o", str(tmp_path / "m.traj"),
                 "--write-input", str(tmp_path / "vasp")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "after-quench" in error[0] and "meltquench run" in error[0]
    assert not (tmp_path / "vasp").exists() and not (tmp_path / "m.traj").exists()


def test_engine_per_step_path_has_the_same_physics(tmp_path, monkeypatch, potcars):
    monkeypatch.setenv("ASE_VASP_COMMAND", "vasp_std")
    atoms = split_regions(v2o3_rhombohedral((1, 1, 2)))
    calc = make_calculator({"name": "vasp"}, directory=tmp_path)
    calc.write_input(atoms)
    t = incar(tmp_path / "vasp" / "INCAR")
    assert t["LASPH"] == ".TRUE." and t["IVDW"] == "12" and t["ISPIN"] == "1"
    assert "IBRION" not in t and "MDALGO" not in t  # single points; the engine moves the atoms
    assert (tmp_path / "vasp" / "POTCAR").read_text().split()[1] == "V_sv"


def test_spin_is_one_key_for_gpaw_and_vasp(tmp_path, potcars):
    assert CalculatorSettings().spinpol is False
    gpaw = make_calculator({"spinpol": True, "dispersion": None}, directory=tmp_path / "g")
    assert gpaw.params.spinpol is True
    assert make_calculator({"dispersion": None}, directory=tmp_path / "n").params.spinpol is False
    assert vasp_parameters({}, spinpol=True)["ispin"] == 2
    assert vasp_parameters({}, spinpol=False)["ispin"] == 1
    atoms = prepare_atoms({"spinpol": True}, v2o3_rhombohedral())
    moments = dict(zip(atoms.get_chemical_symbols(), atoms.get_initial_magnetic_moments()))
    assert moments == {"V": 2.0, "O": 0.0}
    assert not prepare_atoms({}, atoms).get_initial_magnetic_moments().any()
    folder = build(tmp_path, *SMALL, "--set", "calculator.spinpol=true")
    t = incar(folder / "1-heat" / "INCAR")
    assert t["ISPIN"] == "2" and t["MAGMOM"] == "24*2.0000 36*0.0000"  # V24 O36
    # calculator.gpaw.spinpol of older configuration files still loads when it agrees
    assert load_config(overrides=["calculator.gpaw.spinpol=false"]).calculator.spinpol is False
    with pytest.raises(UserError, match="calculator.spinpol"):
        load_config(overrides=["calculator.gpaw.spinpol=true"])


FAKE_VASP = r"""#!{python}
# A stand-in for VASP: copies POSCAR to CONTCAR, writes OSZICAR lines for NSW MD steps (fewer
# when a STOPCAR appears), OUTCAR's last words and a WAVECAR naming this run.
import os, sys, time
from pathlib import Path
tags = dict((k.strip().upper(), v.strip()) for k, v in
            (line.split("=", 1) for line in Path("INCAR").read_text().splitlines()))
Path("calls").write_text(Path("calls").read_text() + "x" if Path("calls").exists() else "x")
Path("wavecar_in").write_text(Path("WAVECAR").read_text() if Path("WAVECAR").exists() else "")
if Path(os.environ.get("FAKE_FAIL", "/nonexistent")).name == Path.cwd().name:
    sys.exit(1)
steps = int(tags["NSW"])
if os.environ.get("FAKE_WAIT") and Path.cwd().name == os.environ["FAKE_WAIT"]:
    Path("started").write_text("")
    for _ in range(600):
        if Path("STOPCAR").exists():
            steps = 1
            break
        time.sleep(0.05)
Path("CONTCAR").write_text(Path("POSCAR").read_text() + "\n predictor-corrector block\n")
if tags["IBRION"] == "0":
    Path("OSZICAR").write_text("".join(f"{{i}} T=   300. E= -1.0\n" for i in range(1, steps + 1)))
Path("WAVECAR").write_text(Path.cwd().name)
Path("OUTCAR").write_text("General timing and accounting informations for this job:\n")
"""


@pytest.fixture
def programme(tmp_path, potcars):
    folder = build(tmp_path, *SMALL)
    fake = tmp_path / "fake_vasp"
    fake.write_text(FAKE_VASP.format(python=sys.executable))
    fake.chmod(0o755)
    return folder, {**os.environ, "VASP_COMMAND": str(fake)}


def run_script(folder, env, **kw):
    return subprocess.run(["bash", str(folder / "run-programme.sh")], capture_output=True,
                          text=True, timeout=120, env=env, cwd="/", **kw)


def test_run_programme_chains_contcar_to_poscar_with_velocities(programme):
    folder, env = programme
    proc = run_script(folder, env)
    assert proc.returncode == 0, proc.stderr
    assert all((folder / run / "done").exists() for run in RUNS)
    for before, run in zip(RUNS[:3], RUNS[1:4]):  # MD continues: positions and velocities
        assert (folder / run / "POSCAR").read_text() == (folder / before / "CONTCAR").read_text()
        assert (folder / run / "wavecar_in").read_text() == before
        assert read(folder / run / "POSCAR", format="vasp").get_velocities().any()
    first = read(folder / "1-heat" / "POSCAR", format="vasp")
    relax_text = (folder / "5-relax" / "POSCAR").read_text()
    relax = read(folder / "5-relax" / "POSCAR", format="vasp")
    assert "predictor" not in relax_text and not relax.has("momenta")  # positions only
    assert np.allclose(relax.positions, first.positions)
    assert np.array_equal(fixed_mask(relax), fixed_mask(first))  # selective dynamics kept
    assert "all runs done" in proc.stdout and "5-relax/CONTCAR" in proc.stdout
    assert "without reaching EDIFFG" in proc.stderr  # the stand-in does not optimise
    # run again: every run is done, nothing is run twice
    assert run_script(folder, env).returncode == 0
    assert all((folder / run / "calls").read_text() == "x" for run in RUNS)


def test_run_programme_stops_on_a_failed_run_and_goes_on_from_it(programme):
    folder, env = programme
    proc = run_script(folder, {**env, "FAKE_FAIL": "3-quench"})
    assert proc.returncode == 1 and "3-quench did not finish" in proc.stderr
    assert [run for run in RUNS if (folder / run / "done").exists()] == RUNS[:2]
    assert run_script(folder, env).returncode == 0
    assert (folder / "1-heat" / "calls").read_text() == "x"  # done runs are skipped
    assert (folder / "3-quench" / "calls").read_text() == "xx"


def test_run_programme_stops_cleanly_on_sigterm(programme):
    folder, env = programme
    proc = subprocess.Popen(["bash", str(folder / "run-programme.sh")], env={
        **env, "FAKE_WAIT": "2-melt"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(400):
        if (folder / "2-melt" / "started").exists():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, (out, err)
    assert (folder / "2-melt" / "STOPCAR").read_text().strip() == "LSTOP = .TRUE."
    assert not (folder / "2-melt" / "done").exists()  # 1 of 3000 steps: not finished
    proc = run_script(folder, env)  # the next job: the stopped run starts over
    assert proc.returncode == 0 and (folder / "2-melt" / "calls").read_text() == "xx"


def test_programme_stages_from_python():
    runs = programme_stages({}, melt_quench(quench_fs=9000.0), 2.0, relax_fmax=0.03,
                            relax_steps=1000)
    assert [r.folder for r in runs] == RUNS
    assert [r.tags["nsw"] for r in runs] == [500, 3000, 4500, 1000, 1000]


def test_scripts_parse():
    root = os.path.join(os.path.dirname(__file__), "..", "scripts", "vasp")
    for name in os.listdir(root):
        assert subprocess.run(["bash", "-n", os.path.join(root, name)]).returncode == 0, name
