"""'meltquench dos': the DOS, its region projections and the band gap on tiny GPAW cells
(LCAO sz(dzp), loose SCF), and the arrays underneath."""
import csv
import json

import numpy as np
import pytest
from ase.build import bulk
from ase.dft.bandgap import bandgap
from ase.io import write

from meltquench.electronic import (States, broadened_dos, compute_states, dos_from_states,
                                   dos_gap, mulliken_atom_weights, occupation_gap)
from meltquench.kernels.parallel import get_comm
from meltquench.structures import split_regions, v2o3_basal
from test_cli import assert_one_line_error, mq

LOOSE = {"energy": 0.001, "density": 1e-3, "eigenstates": 1e-6}


# --------------------------------------------------------------------------- arrays
def test_mulliken_weights_of_orthonormal_states_sum_to_one():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(6, 6))
    S = A @ A.T + 6 * np.eye(6)  # an overlap matrix
    L = np.linalg.cholesky(S)
    C = np.linalg.inv(L)  # rows are states: C S C^T = L^-1 L L^T L^-T = 1
    assert np.allclose(C @ S @ C.T, np.eye(6))
    w = mulliken_atom_weights(C, S, [0, 0, 1, 1, 1, 2], 3)
    assert w.shape == (6, 3)
    assert np.allclose(w.sum(axis=1), 1.0)
    # one atom's weight is the sum over its orbitals of C_nM (C S)_nM
    assert np.allclose(w[:, 2], C[:, 5] * (C @ S)[:, 5])


def test_dos_gap_and_occupation_gap_on_two_levels():
    grid = np.arange(-3, 3.0005, 0.001)
    eig = np.array([[[-1.0, 1.0]]])
    dos = broadened_dos(eig, np.ones_like(eig), grid, 0.05)
    assert np.trapezoid(dos, grid) == pytest.approx(2.0, abs=1e-6)
    gap, lo, hi = dos_gap(grid, dos, 0.0, 0.01)
    # a Gaussian of sigma 0.05 falls below 0.01/eV at 0.05 * sqrt(2 ln(1/(0.01 sqrt(2 pi) 0.05)))
    edge = 0.05 * np.sqrt(2 * np.log(1 / (0.01 * np.sqrt(2 * np.pi) * 0.05)))
    assert gap == pytest.approx(2.0 - 2 * edge, abs=0.003)
    assert (lo, hi) == pytest.approx((-1 + edge, 1 - edge), abs=0.002)
    assert dos_gap(grid, dos, 1.0, 0.01)[0] == 0.0  # E_F on a level: no gap
    assert occupation_gap(eig, np.array([[[1.0, 0.0]]])) == (2.0, -1.0, 1.0)
    assert occupation_gap(np.array([[[-0.1, 0.2]], [[0.1, 0.3]]]),
                          np.array([[[1.0, 1.0]], [[0.0, 0.0]]]))[0] == 0.0  # overlapping spins


def test_spin_polarised_states_give_moment_spin_dos_and_gaps_per_spin():
    """Two spins, one k-point, three states each: up has two electrons (gap 1 eV above the
    second), down one (gap 2 eV): moment +1, each spin's DOS integrates to its states."""
    from ase.atoms import Atoms
    eig = np.array([[[-2.0, -1.0, 0.0]], [[-2.0, 0.0, 1.0]]])
    f = np.array([[[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]])
    states = States(eig, f, np.array([1.0]), 1.0, -0.5, 3.0)
    result = dos_from_states(states, Atoms("H"), width=0.05, window=(-4.0, 4.0), step=0.005)
    assert result.meta["spin_polarised"] and result.meta["magnetic_moment_muB"] == 1.0
    assert result.gap["occupation_gap_up_eV"] == pytest.approx(1.0)
    assert result.gap["occupation_gap_down_eV"] == pytest.approx(2.0)
    assert result.gap["occupation_gap_eV"] == pytest.approx(1.0)  # up HOMO -1 to LUMOs at 0
    for name in ("up", "down"):
        assert np.trapezoid(result.spins[name], result.energy) == pytest.approx(3.0, abs=1e-3)
    assert np.allclose(result.spins["up"] + result.spins["down"], result.total)
    assert "magnetic moment +1.000" in "\n".join(result.lines())


# --------------------------------------------------------------------------- GPAW
@pytest.fixture(scope="module")
def mgo(tmp_path_factory):
    """MgO rocksalt, 2 atoms, 2x2x2 k-points: an insulator (about 7 s)."""
    folder = tmp_path_factory.mktemp("mgo")
    atoms = bulk("MgO", "rocksalt", a=4.21)
    settings = {"name": "gpaw", "dispersion": None,
                "gpaw": {"basis": "sz(dzp)", "hubbard_u": {}, "kpts": [2, 2, 2],
                         "convergence": LOOSE}}
    states, cached = compute_states(atoms, settings, folder, get_comm(), 300.0,
                                    cache=folder / "states.npz")
    assert not cached
    return atoms, states, settings, folder


def test_gap_from_states_agrees_with_ase_bandgap_and_the_dos(mgo):
    atoms, states, _, _ = mgo
    result = dos_from_states(states, atoms, width=0.05)
    g = result.gap
    eig = states.eig_skn - states.fermi_level
    assert g["occupation_gap_eV"] > 2.0  # an insulator
    assert g["occupation_gap_eV"] == pytest.approx(bandgap(eigenvalues=eig, efermi=0.0)[0],
                                                   abs=1e-12)
    assert g["ase_bandgap_eV"] == pytest.approx(g["occupation_gap_eV"], abs=1e-12)
    # the broadened DOS narrows the gap by a few widths, never widens it beyond a grid step
    assert g["occupation_gap_eV"] - 8 * 0.05 < g["dos_gap_eV"] <= (g["occupation_gap_eV"]
                                                                   + g["step_eV"])
    assert g["dos_gap_lower_eV"] < 0 < g["dos_gap_upper_eV"]


def test_total_dos_integrates_to_the_valence_electrons(mgo):
    atoms, states, _, _ = mgo
    g = dos_from_states(states, atoms).gap
    assert states.weight_k.sum() == pytest.approx(1.0)
    assert g["electrons_below_fermi"] == pytest.approx(states.nelectrons, abs=1e-3)
    assert states.nelectrons == pytest.approx(
        (states.f_skn * states.state_weights()).sum(), abs=1e-6)


def test_states_are_reused_only_for_the_same_structure_and_settings(mgo):
    atoms, states, settings, folder = mgo
    again, cached = compute_states(atoms, settings, folder, get_comm(), 300.0,
                                   cache=folder / "states.npz")
    assert cached and np.array_equal(again.eig_skn, states.eig_skn)
    moved = atoms.copy()
    moved.positions[0, 0] += 0.05
    from meltquench.electronic import dos_settings, fingerprint
    key = fingerprint(moved, dos_settings(settings), 300.0)
    assert key != states.fingerprint


def test_spin_polarised_gpaw_matches_the_spin_paired_states_of_mgo(mgo, tmp_path):
    """MgO started with a moment on Mg relaxes to none: both spins have the spin-paired
    levels and the same DOS, and the gap is the spin-paired one."""
    atoms, paired, settings, _ = mgo
    spin = dict(settings, spinpol=True, initial_magmoms={"Mg": 1.0})
    states, _ = compute_states(atoms, spin, tmp_path, get_comm(), 300.0)
    assert states.eig_skn.shape[0] == 2 and states.degeneracy == 1.0
    result = dos_from_states(states, atoms, width=0.05)
    reference = dos_from_states(paired, atoms, width=0.05)
    assert abs(result.meta["magnetic_moment_muB"]) < 0.01
    assert np.allclose(result.spins["up"], result.spins["down"], atol=0.05 * result.total.max())
    for eig in states.eig_skn:  # each spin's levels are the spin-paired ones (absolute eV;
        assert np.allclose(eig, paired.eig_skn[0], atol=0.02)  # E_F in a gap is arbitrary)
    for key in ("occupation_gap_eV", "occupation_gap_up_eV", "occupation_gap_down_eV"):
        assert result.gap[key] == pytest.approx(reference.gap["occupation_gap_eV"], abs=0.02)
    assert result.gap["electrons_below_fermi"] == pytest.approx(states.nelectrons, abs=1e-3)
    assert reference.spins == {} and not reference.meta["spin_polarised"]


@pytest.fixture(scope="module")
def v2o3_dos(tmp_path_factory):
    """'meltquench dos' on the 10-atom basal V2O3 cell split into crystal and melt halves
    (PBE+U, Gamma point; about 20 s)."""
    folder = tmp_path_factory.mktemp("v2o3")
    path = folder / "v10.extxyz"
    write(path, split_regions(v2o3_basal(), axis=2, melt_fraction=0.5))
    proc = mq("dos", path, "--interface-width", "1.0", "--set",
              "calculator.gpaw.convergence={energy: 0.001, density: 0.001, eigenstates: 1e-6}")
    assert proc.returncode == 0, proc.stderr
    return path, folder / "v10_dos", proc


def read_csv(path):
    with open(path) as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array(rows[1:], float)


def test_region_pdos_sums_to_the_total_dos(v2o3_dos):
    _, out, proc = v2o3_dos
    header, data = read_csv(out / "dos.csv")
    assert header == ["energy_minus_fermi_eV", "total_states_per_eV", "crystal_states_per_eV",
                      "melt_states_per_eV", "interface_states_per_eV"]
    total, crystal, melt, interface = data[:, 1], data[:, 2], data[:, 3], data[:, 4]
    assert total.max() > 10
    assert np.allclose(crystal + melt, total, rtol=1e-5, atol=1e-4)  # csv keeps 6 digits
    assert np.all(interface <= total + 1e-4) and interface.max() > 0
    assert (out / "dos.png").stat().st_size > 1000


def test_v2o3_report_states_the_method_and_the_paper(v2o3_dos):
    _, out, proc = v2o3_dos
    data = json.loads((out / "dos.json").read_text())
    g = data["gap"]
    assert g["nelectrons"] == 88  # V 13 (3s3p3d4s) x 4 + O 6 x 6
    assert g["electrons_below_fermi"] == pytest.approx(88, abs=0.2)
    assert g["ase_bandgap_eV"] == pytest.approx(g["occupation_gap_eV"], abs=1e-9)
    assert g["width_eV"] == 0.05 and g["threshold_per_atom"] == 0.01
    assert data["meta"]["region_atoms"] == {"crystal": 5, "melt": 5, "interface": 4}
    assert data["paper_gaps_eV"]["crystalline V2O3 (C-V2O3)"] == 0.49
    for words in ("ase.dft.bandgap", "sigma 0.05 eV", "depends on U", "0.49 eV", "U 3.25 eV"):
        assert words in proc.stdout


def test_dos_refuses_to_overwrite_and_reuses_its_states(v2o3_dos):
    path, out, _ = v2o3_dos
    before = (out / "dos.json").read_text()
    assert_one_line_error(mq("dos", path, "--interface-width", "1.0"), "already holds",
                          "--overwrite")
    assert (out / "dos.json").read_text() == before
    (out / "mine.txt").write_text("not meltquench's")
    proc = mq("dos", path, "--interface-width", "1.0", "--overwrite", "--width", "0.1", "--set",
              "calculator.gpaw.convergence={energy: 0.001, density: 0.001, eigenstates: 1e-6}")
    assert proc.returncode == 0, proc.stderr
    assert "were reused" in proc.stdout
    assert json.loads((out / "dos.json").read_text())["gap"]["width_eV"] == 0.1
    assert (out / "mine.txt").read_text() == "not meltquench's"


@pytest.mark.parametrize("args, words", [
    (["--width", "0"], ["--width", "positive"]),
    (["--window", "2", "-1"], ["--window", "EMIN < EMAX"]),
    (["--threshold", "-1"], ["--threshold"]),
    (["--set", "calculator.name=pair"], ["needs GPAW", "calculator.name=gpaw"]),
    (["--set", "calculator.gpaw.basiss=dzp"], ["basiss", "basis"]),
])
def test_bad_dos_input_is_one_line(tmp_path, args, words):
    path = tmp_path / "m.extxyz"
    write(path, bulk("MgO", "rocksalt", a=4.21))
    assert_one_line_error(mq("dos", path, *args), *words)
    assert not (tmp_path / "m_dos").exists()


def test_dos_of_a_missing_source_or_unfinished_run(tmp_path):
    assert_one_line_error(mq("dos", tmp_path / "nope.extxyz"), "not found")
    (tmp_path / "run").mkdir()
    assert_one_line_error(mq("dos", tmp_path / "run"), "no final.traj")


# --------------------------------------------------------------------------- several models
def _saved_dos(folder, eig_up, eig_down, n_occupied, atoms):
    """A 'meltquench dos' result folder written from made-up spin-polarised states: one
    k-point, ``n_occupied`` (up, down) states filled."""
    from ase.atoms import Atoms
    eig = np.array([[eig_up], [eig_down]], float)
    f = np.zeros_like(eig)
    f[0, 0, :n_occupied[0]] = f[1, 0, :n_occupied[1]] = 1.0
    states = States(eig, f, np.array([1.0]), 1.0, 0.0, float(sum(n_occupied)))
    result = dos_from_states(states, Atoms(f"H{atoms}"), width=0.05, window=(-4.0, 4.0),
                             step=0.005, source=str(folder))
    folder.mkdir(parents=True)
    result.write(folder)
    return result


def test_dos_compare_puts_each_models_gaps_beside_the_papers(tmp_path):
    """Two made-up models (a 2-atom insulator with a 1 eV gap, a 4-atom one with 0.2 eV):
    the table repeats each folder's own gaps and moment, the paper's gap of the model it
    stands for, and the figure's DOS per atom integrates to the states per atom."""
    one = _saved_dos(tmp_path / "crystal_dos", [-2, -0.5, 0.5], [-2, -0.5, 0.5], (2, 2), 2)
    two = _saved_dos(tmp_path / "run" / "dos", [-1, -0.1, 0.1, 1], [-1, 0.3, 0.6, 1.5],
                     (2, 1), 4)
    proc = mq("dos-compare", tmp_path / "crystal_dos", tmp_path / "run", "--paper", "crystal",
              "-", "--out", tmp_path / "cmp")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "cmp" / "dos-compare.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["crystal", "run"]  # default labels
    for row, result in zip(rows, (one, two)):
        assert float(row["occupation_gap_eV"]) == pytest.approx(result.gap["occupation_gap_eV"])
        assert float(row["dos_gap_eV"]) == pytest.approx(result.gap["dos_gap_eV"])
        assert float(row["magnetic_moment_muB"]) == result.meta["magnetic_moment_muB"]
    assert float(rows[0]["occupation_gap_eV"]) == pytest.approx(1.0)
    assert float(rows[1]["occupation_gap_eV"]) == pytest.approx(0.2)
    assert float(rows[0]["paper_gap_eV"]) == 0.49 and rows[1]["paper_gap_eV"] == ""
    assert float(rows[1]["magnetic_moment_muB"]) == 1.0
    assert (tmp_path / "cmp" / "dos-compare.png").stat().st_size > 10_000
    assert "paper eV" in proc.stdout and "0.49" in proc.stdout and "depends on U" in proc.stdout
    from meltquench.electronic import compare_dos
    comparison = compare_dos([tmp_path / "crystal_dos", tmp_path / "run" / "dos"],
                             labels=["C", "A/C"])
    for model, states in zip(comparison.models, (6, 8)):  # 3 + 3 and 4 + 4 states
        natoms = model.meta["natoms"]
        assert np.trapezoid(model.per_atom, model.energy) == pytest.approx(states / natoms,
                                                                           abs=1e-3)
    assert [m.label for m in comparison.models] == ["C", "A/C"]
    # a second comparison into the same folder is refused; --overwrite replaces only ours
    assert_one_line_error(mq("dos-compare", tmp_path / "run", "--out", tmp_path / "cmp"),
                          "already holds", "--overwrite")
    (tmp_path / "cmp" / "notes.txt").write_text("mine")
    proc = mq("dos-compare", tmp_path / "run", "--out", tmp_path / "cmp", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cmp" / "notes.txt").read_text() == "mine"
    with open(tmp_path / "cmp" / "dos-compare.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 1


@pytest.mark.parametrize("extra, words", [
    (["--paper", "glass"], ["--paper", "glass", "crystal, amorphous"]),
    (["--labels", "a", "b"], ["--labels", "one value per folder"]),
])
def test_bad_dos_compare_input_is_one_line(tmp_path, extra, words):
    _saved_dos(tmp_path / "m_dos", [-1, 1], [-1, 1], (1, 1), 2)
    assert_one_line_error(mq("dos-compare", tmp_path / "m_dos", *extra, "--out",
                             tmp_path / "cmp"), *words)
    assert not (tmp_path / "cmp").exists()


def test_dos_compare_of_a_folder_without_a_dos_result(tmp_path):
    (tmp_path / "run").mkdir()
    assert_one_line_error(mq("dos-compare", tmp_path / "run", "--out", tmp_path / "cmp"),
                          "no 'meltquench dos' result", "run 'meltquench dos'")
    _saved_dos(tmp_path / "m_dos", [-1, 1], [-1, 1], (1, 1), 2)
    (tmp_path / "m_dos" / "dos.json").write_text("{not json")
    assert_one_line_error(mq("dos-compare", tmp_path / "m_dos", "--out", tmp_path / "cmp"),
                          "not a readable")


def test_dos_compare_under_mpirun_writes_what_serial_writes(tmp_path, mpirun):
    _saved_dos(tmp_path / "a_dos", [-2, -0.5, 0.5], [-2, -0.5, 0.5], (2, 2), 2)
    _saved_dos(tmp_path / "b_dos", [-1, -0.1, 0.1, 1], [-1, 0.3, 0.6, 1.5], (2, 1), 4)
    folders = [tmp_path / "a_dos", tmp_path / "b_dos", "--paper", "crystal", "perfect"]
    assert mq("dos-compare", *folders, "--out", tmp_path / "serial").returncode == 0
    proc = mpirun(["python", "-m", "meltquench.cli", "dos-compare", *map(str, folders),
                   "--out", str(tmp_path / "mpi")], np=2)
    assert proc.stdout.count("written to") == 1  # rank 0 alone prints and writes
    assert ((tmp_path / "mpi" / "dos-compare.csv").read_text()
            == (tmp_path / "serial" / "dos-compare.csv").read_text())
    assert (tmp_path / "mpi" / "dos-compare.png").is_file()
