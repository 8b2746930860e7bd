"""'meltquench adsorb' with the pair potential: sites per region, E_ads by hand, restart per
site, bad input, and mpirun -np 2 equal to serial."""
import csv
import json
import re

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.geometry import get_distances
from ase.io import read

from conftest import run_mpi
from meltquench.adsorption import (PAPER_EADS_EV, adsorption_figure, adsorption_table,
                                   choose_reference, find_sites, format_table, host_warnings,
                                   reference_atoms, void_radii)
from meltquench.analysis.regions import interface_mask
from meltquench.calculators import CalculatorSettings, PairPotential
from meltquench.config import load_config
from meltquench.structures import CRYSTAL, MELT
from test_cli import FAST, assert_one_line_error, mq

WIDTH = ["--interface-width", "1.0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished pair-potential run of the demo model (20 atoms, crystal half fixed)."""
    folder = tmp_path_factory.mktemp("adsorb") / "run"
    proc = mq("run", *FAST, "-o", folder)
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.fixture(scope="module")
def serial(run_dir):
    out = run_dir.parent / "serial"
    proc = mq("adsorb", run_dir, "--species", "Na", *WIDTH, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def table(out):
    with open(out / "results.csv") as fh:
        return list(csv.DictReader(fh))


def test_sites_lie_in_the_regions_they_are_reported_in(run_dir):
    atoms = read(run_dir / "final.traj")
    sites = find_sites(atoms, per_region=2, interface_width=1.0)
    assert {s["region"] for s in sites} == {"crystal", "melt", "interface"}
    tags = atoms.get_tags()
    points = np.array([s["position"] for s in sites])
    probe = atoms.copy()[:len(points)]
    probe.positions = points
    in_band = interface_mask(probe, 1.0)
    for site, band in zip(sites, in_band):
        if site["region"] == "interface":
            assert band
        else:
            assert not band
            _, dist = get_distances(site["position"], atoms.positions, cell=atoms.cell,
                                    pbc=atoms.pbc)
            expected = {CRYSTAL: "crystal", MELT: "melt"}[tags[np.argmin(dist[0])]]
            assert site["region"] == expected
            assert site["void_radius_A"] == pytest.approx(dist.min(), abs=1e-9)
    # sites are at least the separation apart (minimum image)
    _, dist = get_distances(points, cell=atoms.cell, pbc=atoms.pbc)
    assert dist[np.triu_indices(len(points), 1)].min() >= 3.0


def test_void_radius_is_the_distance_to_the_nearest_atom(run_dir):
    atoms = read(run_dir / "final.traj")
    points, radius, nearest = void_radii(atoms, 0.5)
    _, dist = get_distances(points[::37], atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    assert np.allclose(radius[::37], dist.min(axis=1))
    assert np.array_equal(nearest[::37], dist.argmin(axis=1))


def test_adsorption_energy_is_the_hand_computed_difference(serial):
    out, proc = serial
    rows = table(out)
    assert {r["region"] for r in rows} == {"crystal", "melt", "interface"}
    calc = PairPotential()
    model = read(out / "tasks" / "model.traj")
    e_model = calc.get_potential_energy(model)
    e_ref = PairPotential().get_potential_energy(reference_atoms("Na", "atom"))
    assert e_ref == 0.0  # a lone atom of the pair potential
    for r in rows:
        site = read(out / "tasks" / f"{r['site']}.traj")
        assert site.get_chemical_symbols()[-1] == "Na" and len(site) == len(model) + 1
        e_site = PairPotential().get_potential_energy(site)
        assert float(r["E_ads_eV"]) == pytest.approx(e_site - e_model - e_ref, abs=1e-9)
        e_host = PairPotential().get_potential_energy(site[:-1])
        assert float(r["E_host_eV"]) == pytest.approx(e_host, abs=1e-9)
        assert float(r["E_deform_eV"]) == pytest.approx(e_host - e_model, abs=1e-9)
        assert float(r["E_bind_eV"]) == pytest.approx(e_site - e_host - e_ref, abs=1e-9)
        assert float(r["E_deform_eV"]) > -0.01  # the host stayed in the model's minimum
        assert r["converged"] == "True" and float(r["fmax_eV_per_A"]) <= 0.03
        # the crystal half stayed where the run left it
        fixed = model.get_tags() == CRYSTAL
        assert np.array_equal(site.positions[:-1][fixed], read(out.parent / "run" /
                                                              "final.traj").positions[fixed])
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["reference"] == "atom" and "isolated atom" in data["meta"]["reference_note"]
    assert data["paper_E_ads_eV"]["perfect A/C"]["crystal"] == -0.77
    assert (out / "adsorption.png").stat().st_size > 1000
    assert "E_ads" in proc.stdout and "the paper's E_ads" in proc.stdout


def test_a_host_that_fell_into_a_lower_minimum_is_named():
    """E_ads = E_deform + E_bind; a site whose host (adatom taken out) lies more than 0.1 eV
    below the relaxed model is named; a site computed before the host was has no parts."""
    site = {"kind": "site", "region": "melt", "position": [0.0, 0.0, 0.0],
            "void_radius_A": 2.0}
    tasks = [("model", {"kind": "model"}), ("reference", {"kind": "reference"}),
             ("site-0", site), ("site-1", site), ("site-2", site)]
    common = {"displacement_A": 0.1, "steps": 9, "converged": True, "fmax_eV_per_A": 0.02}
    results = {"model": {"energy_eV": -100.0}, "reference": {"energy_per_atom_eV": -1.5},
               "site-0": {"energy_eV": -103.0, "host_energy_eV": -99.8, **common},
               "site-1": {"energy_eV": -110.0, "host_energy_eV": -107.5, **common},
               "site-2": {"energy_eV": -102.0, **common}}
    rows = adsorption_table(results, tasks)
    assert [r["E_ads_eV"] for r in rows] == pytest.approx([-1.5, -8.5, -0.5])
    assert [r["E_deform_eV"] for r in rows[:2]] == pytest.approx([0.2, -7.5])
    assert [r["E_bind_eV"] for r in rows[:2]] == pytest.approx([-1.7, -1.0])
    assert rows[2]["E_host_eV"] is None and rows[2]["E_bind_eV"] is None
    warnings = host_warnings(rows, "Na")
    assert len(warnings) == 1 and warnings[0].startswith("site-1 (melt): the host without Na "
                                                         "lies 7.50 eV below")
    assert "E_bind = -1.00 eV" in warnings[0]
    assert format_table(rows).splitlines()[3].split()[3:6] == ["-0.5000", "-", "-"]


def test_the_plot_shows_the_papers_values_beside_ours(serial):
    data = json.loads((serial[0] / "results.json").read_text())
    ax = adsorption_figure(data["sites"], data["meta"]).axes[0]
    regions = [t.get_text() for t in ax.get_xticklabels()]
    assert regions == ["crystal", "melt", "interface"]
    for model, paper in PAPER_EADS_EV.items():
        line, = [line for line in ax.get_lines() if line.get_label() == f"paper, {model}"]
        assert list(line.get_ydata()) == [paper[r] for r in regions]

    def points(ax, filled):
        return sorted(y for line in ax.get_lines() if line.get_marker() == "o"
                      and (line.get_markerfacecolor() == "none") != filled
                      for y in line.get_ydata())

    assert points(ax, True) == sorted(row["E_ads_eV"] for row in data["sites"])
    assert points(ax, False) == sorted(row["E_bind_eV"] for row in data["sites"])
    assert not [line for line in ax.get_lines() if line.get_marker() == "x"]  # none fell
    assert [patch.get_height() for patch in ax.patches] == [
        min(r["E_ads_eV"] for r in data["sites"] if r["region"] == region) for region in regions]
    fallen = dict(data["sites"][0], E_deform_eV=-2.0)
    data["meta"]["species"] = "Li"  # no paper values for another species
    ax = adsorption_figure([fallen] + data["sites"][1:], data["meta"]).axes[0]
    assert not [line for line in ax.get_lines() if line.get_label().startswith("paper")]
    cross, = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert list(cross.get_ydata()) == [fallen["E_ads_eV"]]
    assert list(cross.get_xdata()) == [regions.index(fallen["region"])]
    bars = [patch.get_height() for patch in ax.patches]
    for k, region in enumerate(regions):  # the fallen site is left out of its bar
        others = [r["E_ads_eV"] for r in data["sites"][1:] if r["region"] == region]
        assert bars[k] == min(others or [fallen["E_ads_eV"]])


def test_rescoring_compares_the_binding_of_two_models(serial, tmp_path):
    """bench_adsorb_rescore.py --contrast --hosts with a site of another adsorption folder
    (OTHER:NAME, another model): E_bind less the first site's, which with the folders' own
    calculator is the difference of their E_bind; no E_ads contrast across models, and none
    without --hosts."""
    out, _ = serial
    run = tmp_path / "run7"
    assert mq("run", *FAST, "--set", "dynamics.seed=7", "-o", run).returncode == 0
    other = tmp_path / "other"
    proc = mq("adsorb", run, "--species", "Na", *WIDTH, "--sites-per-region", "1", "--out",
              other)
    assert proc.returncode == 0, proc.stderr
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_adsorb_rescore.py"
    first, second = table(out)[0], table(other)[-1]
    result_file = tmp_path / "models.json"
    sites = f"{first['site']},{other}:{second['site']}"
    proc = subprocess.run([sys.executable, str(script), str(out), "--contrast", "--hosts",
                           "--sites", sites, "-o", str(result_file)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(result_file.read_text())["rows"]
    assert [r["folder"] for r in rows] == [str(out), str(other)]
    expected = float(second["E_bind_eV"]) - float(first["E_bind_eV"])
    assert rows[1]["new_dE_bind_eV"] == pytest.approx(expected, abs=1e-9)
    assert rows[1]["dE_bind_eV"] == pytest.approx(expected, abs=1e-9)
    assert rows[1]["new_dE_ads_eV"] is None and rows[0]["new_dE_ads_eV"] == 0.0
    proc = subprocess.run([sys.executable, str(script), str(out), "--contrast", "--sites",
                           sites], capture_output=True, text=True)
    assert proc.returncode != 0 and "needs --hosts" in proc.stderr


def test_the_bulk_reference_is_bcc_na_per_atom(run_dir, serial, tmp_path):
    """--reference bulk: E_ads against bcc Na per atom (ASE's reference state, a = 4.23 Å,
    built here independently: 2x2x2 conventional cells, 8.46 Å); the sites are the same."""
    out = tmp_path / "bulk"
    proc = mq("adsorb", run_dir, "--species", "Na", *WIDTH, "--reference", "bulk",
              "--out", out)
    assert proc.returncode == 0, proc.stderr
    metal = Atoms("Na2", scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5)], cell=[4.23] * 3,
                  pbc=True).repeat(2)
    e_metal = PairPotential().get_potential_energy(metal) / len(metal)
    assert e_metal > 0  # the pair potential's Na-Na term is a Born-Mayer repulsion
    line = re.search(r"reference: E = (\S+) eV, 16 atoms, (\S+) eV per atom", proc.stdout)
    assert float(line[1]) == pytest.approx(16 * e_metal, abs=2e-6)
    assert float(line[2]) == pytest.approx(e_metal, abs=2e-6)
    model = read(out / "tasks" / "model.traj")
    e_model = PairPotential().get_potential_energy(model)
    rows, atom_rows = table(out), table(serial[0])
    assert [r["site"] for r in rows] == [r["site"] for r in atom_rows]
    for r in rows:
        e_site = PairPotential().get_potential_energy(read(out / "tasks" / f"{r['site']}.traj"))
        assert float(r["E_ads_eV"]) == pytest.approx(e_site - e_model - e_metal, abs=1e-9)
    assert json.loads((out / "results.json").read_text())["meta"]["reference"] == "bulk"


def test_rescoring_with_the_same_calculator_gives_the_same_energies(serial, tmp_path):
    """benchmarks/bench_adsorb_rescore.py: single points at the relaxed geometries with the
    folder's own settings reproduce its E_ads and E_bind; another setting changes them."""
    out, _ = serial
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_adsorb_rescore.py"
    same = tmp_path / "same.json"
    proc = subprocess.run([sys.executable, str(script), str(out), "-o", str(same)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(same.read_text())["rows"]
    assert len(rows) == len(table(out))
    for r in rows:
        assert r["new_E_ads_eV"] == pytest.approx(r["E_ads_eV"], abs=1e-9)
        assert r["new_E_bind_eV"] == pytest.approx(r["E_bind_eV"], abs=1e-9)
    other = tmp_path / "d3.json"
    proc = subprocess.run([sys.executable, str(script), str(out), "--set", "dispersion=d3bj",
                           "--sites", "site-0", "-o", str(other)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(other.read_text())
    assert "D3" in result["calculator"] and [r["site"] for r in result["rows"]] == ["site-0"]
    assert result["rows"][0]["new_E_bind_eV"] != pytest.approx(rows[0]["E_bind_eV"], abs=1e-3)
    # --contrast: the sites alone, E_ads less the first listed site's
    names = [r["site"] for r in rows][::-1][:2]
    diff = tmp_path / "contrast.json"
    proc = subprocess.run([sys.executable, str(script), str(out), "--contrast", "--sites",
                           ",".join(names), "-o", str(diff)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    by_site = {r["site"]: r for r in rows}
    result = json.loads(diff.read_text())
    assert [r["site"] for r in result["rows"]] == names and result["contrast_to"] == names[0]
    expected = by_site[names[1]]["E_ads_eV"] - by_site[names[0]]["E_ads_eV"]
    assert result["rows"][1]["new_dE_ads_eV"] == pytest.approx(expected, abs=1e-9)
    assert result["rows"][0]["new_dE_ads_eV"] == 0.0
    # --hosts: E_bind less the first site's as well, from the sites and their hosts
    proc = subprocess.run([sys.executable, str(script), str(out), "--contrast", "--hosts",
                           "--sites", ",".join(names), "-o", str(diff)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(diff.read_text())
    expected = by_site[names[1]]["E_bind_eV"] - by_site[names[0]]["E_bind_eV"]
    assert result["rows"][1]["new_dE_bind_eV"] == pytest.approx(expected, abs=1e-9)
    assert result["rows"][1]["dE_bind_eV"] == pytest.approx(expected, abs=1e-9)
    assert abs(expected - result["rows"][1]["new_dE_ads_eV"]) > 1e-6  # the hosts differ
    proc = subprocess.run([sys.executable, str(script), str(out), "--hosts"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--hosts goes with --contrast" in proc.stderr
    # --finish-of: a preset's finish calculator in place of the folder's settings
    sys.path.insert(0, str(script.parent))
    from bench_adsorb_rescore import rescore_settings
    finish = load_config(preset="ml-demo").finish.calculator
    assert rescore_settings({"name": "pair"}, finish_of="ml-demo") == finish
    assert rescore_settings({}, ["gpaw.h=0.2"], finish_of="ml-demo").gpaw.h == 0.2
    proc = subprocess.run([sys.executable, str(script), str(out), "--finish-of", "demo"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "has no finish calculator" in proc.stderr


def test_a_restart_keeps_finished_sites(serial, tmp_path):
    out, _ = serial
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "results.json").unlink()
    (copy / "tasks" / "site-1.json").unlink()
    kept = {p.name: p.read_text() for p in (copy / "tasks").glob("*.json")}
    run = out.parent / "run"
    proc = mq("adsorb", run, "--species", "Na", *WIDTH, "--out", copy)
    assert proc.returncode == 0, proc.stderr
    assert "continuing" in proc.stdout
    assert proc.stdout.count("kept from an earlier run") == len(kept)
    assert "site-1: E =" in proc.stdout
    for name, text in kept.items():
        assert (copy / "tasks" / name).read_text() == text
    assert table(copy) == table(out)
    # another computation in the same folder is refused, with or without results
    (copy / "results.json").unlink()
    assert_one_line_error(mq("adsorb", run, "--species", "Na", *WIDTH, "--fmax", "0.05",
                             "--out", copy), "plan.json", "--overwrite")
    assert_one_line_error(mq("adsorb", run, "--species", "Na", *WIDTH, "--out", out),
                          "already holds results", "--overwrite")


@pytest.mark.parametrize("args, words", [
    (["--species", "Xx"], ["--species", "not a chemical element"]),
    (["--reference", "gas"], ["--reference", "invalid choice"]),
    (["--fmax", "0"], ["--fmax", "positive"]),
    (["--grid", "-1"], ["--grid", "positive"]),
    (["--sites-per-region", "0"], ["--sites-per-region"]),
    (["--set", "calculator.nam=pair"], ["calculator.nam", "name"]),
    (["--set", "calculator.name=chgnet", "--reference", "atom"],
     ["--reference atom", "CHGNet", "no free-atom energy", "--reference bulk"]),
])
def test_bad_adsorb_input_is_one_line(run_dir, tmp_path, args, words):
    assert_one_line_error(mq("adsorb", run_dir, *args, "--out", tmp_path / "o"), *words)
    assert not (tmp_path / "o").exists()


def test_the_default_reference_is_the_free_atom_but_bulk_for_machine_learned_models():
    for name, default in [("pair", "atom"), ("gpaw", "atom"), ("chgnet", "bulk"),
                          ("sevennet", "bulk")]:
        settings = CalculatorSettings.from_dict({"name": name})
        assert choose_reference(None, settings) == default
        assert choose_reference("bulk", settings) == "bulk"


def test_adsorb_needs_a_finished_run_or_a_structure(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(mq("adsorb", tmp_path / "empty"), "no final.traj")
    assert_one_line_error(mq("adsorb", tmp_path / "nope.traj"), "not found")


def test_mpirun_spreads_sites_over_groups_and_equals_serial(serial, tmp_path):
    out, _ = serial
    proc = run_mpi(["python", "-m", "meltquench.cli", "adsorb", str(out.parent / "run"),
                    "--species", "Na", *WIDTH, "--out", str(tmp_path / "mpi")], np=2)
    assert "kept" not in proc.stdout
    mpi, ser = table(tmp_path / "mpi"), table(out)
    assert [r["site"] for r in mpi] == [r["site"] for r in ser]
    for a, b in zip(mpi, ser):
        assert a["region"] == b["region"]
        assert float(a["E_ads_eV"]) == pytest.approx(float(b["E_ads_eV"]), abs=1e-10)
    assert len(list((tmp_path / "mpi" / "tasks").glob("*.json"))) == len(ser) + 2


def test_the_fallback_keeps_the_energies_or_is_not_used():
    from meltquench.adsorption import same_energy_fallback
    from meltquench.calculators import CalculatorSettings
    first = same_energy_fallback(CalculatorSettings(name="gpaw"))
    assert first is not None and first.gpaw.mixer["beta"] < 0.2  # a more careful mixer
    assert first.gpaw.occupations == CalculatorSettings(name="gpaw").gpaw.occupations
    at_floor = CalculatorSettings.from_dict({"name": "gpaw", "gpaw": {
        "extrapolation": 0, "mixer": {"backend": "pulay", "beta": 0.02, "nmaxold": 20}}})
    assert same_energy_fallback(at_floor) is None  # its fallback would widen the smearing
    assert same_energy_fallback(CalculatorSettings(name="pair")) is None


def test_an_scf_failure_is_retried_and_a_lasting_one_stops_after_the_other_sites(
        serial, tmp_path, monkeypatch):
    """site-0's first calculator stalls (retried with the fallback: the same result as a run
    without failures); site-1's always do (the others finish, then SCFFailure names it; the
    command run again computes only site-1)."""
    from ase.calculators.calculator import Calculator
    from gpaw import KohnShamConvergenceError
    from meltquench import adsorption, calculators
    from meltquench.errors import SCFFailure
    from meltquench.kernels.parallel import get_comm
    from meltquench.target import load_target

    class Stalling(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            raise KohnShamConvergenceError("SCF stagnated (a test)")

    out, _ = serial
    target = load_target(out.parent / "run")
    settings, _ = target.calculator_settings()
    sites = json.loads((out / "plan.json").read_text())["sites"]
    real, stalls, used = calculators.make_calculator, {"site-0": 1, "site-1": 99}, []

    def make(s, *, directory, comm=None, natoms=None):
        name = directory.name
        used.append((name, s))
        if stalls.get(name, 0) > 0:
            stalls[name] -= 1
            return Stalling()
        return real(s, directory=directory, comm=comm, natoms=natoms)

    monkeypatch.setattr(calculators, "make_calculator", make)
    monkeypatch.setattr(adsorption, "same_energy_fallback", lambda s: s)  # pair: none of its own
    said = []
    with pytest.raises(SCFFailure, match="1 task.*site-1.*nor with the fallback"):
        adsorption.adsorb(target.atoms, target.cfg, settings, sites, tmp_path, get_comm(),
                          say=said.append)
    done = {p.stem for p in (tmp_path / "tasks").glob("*.json")}
    assert done == {"model", "reference"} | {f"site-{i}" for i in range(len(sites))} - {"site-1"}
    site0 = json.loads((tmp_path / "tasks" / "site-0.json").read_text())
    assert "KohnShamConvergenceError: SCF stagnated (a test)" in site0["scf_fallback"]
    assert any("site-0: the SCF did not converge" in line for line in said)
    assert [n for n, _ in used].count("site-1") == 2  # tried, then the fallback once
    del stalls["site-1"]
    used.clear()
    rows, _ = adsorption.adsorb(target.atoms, target.cfg, settings, sites, tmp_path,
                                get_comm(), say=said.append)
    assert [n for n, _ in used] == ["site-1"]
    reference = {r["site"]: float(r["E_ads_eV"]) for r in table(out)}
    assert {r["site"]: r["E_ads_eV"] for r in rows} == pytest.approx(reference, abs=1e-9)


FAILING_UNDER_MPI = '''
import json, sys
from pathlib import Path
from ase.calculators.calculator import Calculator
from gpaw import KohnShamConvergenceError
from meltquench import adsorption, calculators
from meltquench.errors import SCFFailure
from meltquench.kernels.parallel import get_comm
from meltquench.target import load_target

class Stalling(Calculator):
    implemented_properties = ["energy", "forces"]
    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        raise KohnShamConvergenceError("SCF stagnated (a test)")

run, plan, out = (Path(a) for a in sys.argv[1:4])
target = load_target(run)
settings, _ = target.calculator_settings()
sites = json.loads(plan.read_text())["sites"]
real, stalls = calculators.make_calculator, {"site-0": 1, "site-1": 99}
def make(s, *, directory, comm=None, natoms=None):
    if stalls.get(directory.name, 0) > 0:
        stalls[directory.name] -= 1
        return Stalling()
    return real(s, directory=directory, comm=comm, natoms=natoms)
calculators.make_calculator = make
adsorption.same_energy_fallback = lambda s: s
comm = get_comm()
try:
    adsorption.adsorb(target.atoms, target.cfg, settings, sites, out, comm, say=lambda t: None)
    said = "finished"
except SCFFailure as exc:
    said = f"SCFFailure: {exc}"
(out.parent / f"rank-{comm.Get_rank()}.txt").write_text(said)  # non-root stdout is muted
'''


def test_under_mpirun_a_failing_site_stops_every_rank_after_the_others(serial, tmp_path):
    """Two ranks, two groups: site-1 (rank 1's) fails for good, site-0 (rank 0's) once; both
    ranks raise the same SCFFailure once every other task is done (no rank left waiting)."""
    out, _ = serial
    script = tmp_path / "failing.py"
    script.write_text(FAILING_UNDER_MPI)
    (tmp_path / "mpi").mkdir()  # the command's open_output makes it
    run_mpi(["python", str(script), str(out.parent / "run"), str(out / "plan.json"),
             str(tmp_path / "mpi")], np=2, timeout=300)
    said = [(tmp_path / f"rank-{r}.txt").read_text() for r in (0, 1)]
    assert said[0] == said[1] and said[0].startswith("SCFFailure: 1 task(s) failed: site-1")
    done = {p.stem for p in (tmp_path / "mpi" / "tasks").glob("*.json")}
    assert "site-1" not in done and {"model", "reference", "site-0"} <= done
    site0 = json.loads((tmp_path / "mpi" / "tasks" / "site-0.json").read_text())
    assert "SCF stagnated (a test)" in site0["scf_fallback"]
