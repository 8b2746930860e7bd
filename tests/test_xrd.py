"""Simulated powder XRD and partial structure factors: corundum V2O3 against the paper's peaks
and its own Bragg lines, ASE's Debye sum on a finite cluster, the Faber-Ziman identity,
regions that add up, bad input, the command line and serial == mpirun -np 2."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from ase.utils.xrdebye import XrDebye

from meltquench.analysis import XRD, bragg_reflections
from meltquench.analysis.xrd import form_factor_coefficients
from meltquench.errors import UserError
from meltquench.kernels.xrd import (debye_intensity, debye_transform, excess_pairs, form_factors,
                                    linear_pair_histogram, lorentz_polarisation,
                                    q_from_two_theta, uniform_weights)
from meltquench.structures import v2o3_corundum
from test_analysis import heterophase_frames

HERE = Path(__file__).parent
PAPER_PEAKS = [24.5, 33.1, 36.2, 38.5, 50.1]   # 2theta, Cu K-alpha: (012) (104) (110) (006) (024)


@pytest.fixture(scope="module")
def corundum_xrd():
    """Corundum V2O3 (one hexagonal cell, 30 atoms), grains of 150 Å, LP factor on (default)."""
    return XRD(v2o3_corundum(), rmax=150.0, regions="all").run().result("corundum")


def test_corundum_peaks_within_0p3_degrees_of_the_paper(corundum_xrd):
    peaks = np.array(corundum_xrd.peaks())
    for expected in PAPER_PEAKS:
        nearest = peaks[np.argmin(np.abs(peaks - expected))]
        assert abs(nearest - expected) <= 0.3, (expected, nearest)


def test_corundum_peaks_sit_on_its_bragg_lines(corundum_xrd):
    """Every line above 2 % of the strongest (|F|^2 x multiplicity) with no line of a fifth of
    its intensity within 1.5 degrees gives a peak within 0.03 degrees of its Bragg 2theta, and
    every peak found is a line."""
    lines = [x for x in bragg_reflections(v2o3_corundum(), two_theta_max=80.0)
             if x["two_theta"] > 10.0]
    top = max(x["intensity"] for x in lines)
    strong = [x["two_theta"] for x in lines if x["intensity"] > 0.02 * top
              and not any(0 < abs(y["two_theta"] - x["two_theta"]) < 1.5
                          and y["intensity"] > 0.2 * x["intensity"] for y in lines)]
    peaks = np.array(corundum_xrd.peaks(prominence=0.005))
    assert len(strong) >= 8
    for t in strong:
        assert np.min(np.abs(peaks - t)) < 0.03, t
    every = np.array([x["two_theta"] for x in lines])
    for p in peaks:
        assert np.min(np.abs(every - p)) < 0.05, p


def test_bragg_lines_are_the_hexagonal_d_spacings():
    """(012) (104) (110) (006) (024) from 1/d^2 = 4/3 (h^2 + hk + k^2)/a^2 + l^2/c^2 at the
    paper-facts lattice, and their 2theta for lambda = 1.5405 Å as paper-facts.md lists them."""
    a, c = 4.952, 14.003
    lines = bragg_reflections(v2o3_corundum(), wavelength=1.5405, two_theta_max=52.0)
    found = [x["d"] for x in lines]
    listed = {(0, 1, 2): 24.32, (1, 0, 4): 33.00, (1, 1, 0): 36.25, (0, 0, 6): 38.54,
              (0, 2, 4): 49.83}
    for (h, k, l), two_theta in listed.items():
        d = (4 / 3 * (h * h + h * k + k * k) / a ** 2 + l * l / c ** 2) ** -0.5
        assert np.min(np.abs(np.array(found) - d)) < 1e-3, (h, k, l)
        line = min(lines, key=lambda x: abs(x["d"] - d))
        assert line["two_theta"] == pytest.approx(two_theta, abs=0.006)
    # R-3c: (003) and (001) are extinct, (012) is not
    d003 = c / 3
    assert np.min(np.abs(np.array(found) - d003)) > 1e-3


def cluster(symbol_for_v="Ni", radius=5.0):
    """Atoms of corundum V2O3 within ``radius`` Å of the cell centre, V replaced by an element
    ASE's form-factor table holds (it has no V), as an open cluster without a cell."""
    big = v2o3_corundum((3, 3, 1))
    centre = big.cell.sum(axis=0) / 2
    keep = np.linalg.norm(big.positions - centre, axis=1) < radius
    symbols = [symbol_for_v if s == "V" else s for s in np.array(big.get_chemical_symbols())[keep]]
    return Atoms(symbols, positions=big.positions[keep] - centre)


def test_open_cluster_equals_ase_debye():
    """An open cluster (no cell: no density term), no window, no LP factor: our Debye sum over
    the linear histogram is ASE's XrDebye sum over all atom pairs, to the histogram's (q h)^2
    error. Compared with constant form factors f = Z (ASE's method other than 'Iwasa')."""
    atoms = cluster()
    assert 40 < len(atoms) < 80
    two_theta = np.arange(10.0, 80.0, 0.5)
    q = q_from_two_theta(two_theta)
    symbols = list(dict.fromkeys(atoms.get_chemical_symbols()))
    types = np.array([symbols.index(x) for x in atoms.get_chemical_symbols()])
    z = np.array([[0.0] * 10 + [float(Atoms(x).numbers[0])] for x in symbols])
    hist = linear_pair_histogram(atoms.positions, atoms.cell.array, atoms.pbc, types, 12.0,
                                 1200)[0]
    mine = debye_intensity(q, hist, np.zeros((2, 2)), np.bincount(types), z, 12.0, "none")
    ase = XrDebye(atoms, wavelength=1.5406, damping=0.0, method="constant-f")
    theirs = np.array(ase.calc_pattern(two_theta)) / len(atoms)
    np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-4 * theirs.max())
    # Through the analysis (tabulated f, which ASE has for Ni and O): no cell, so no density
    ours = XRD(atoms, rmax=12.0, window="none", lp=False, regions="all").run()
    assert any("no cell volume" in n for n in ours.notes)
    assert np.all(ours.results.intensity[0] > 0)


def test_ase_iwasa_form_factors_take_twice_sin_theta_over_lambda():
    """ASE 3.29's XrDebye 'Iwasa' evaluates the Waasmaier-Kirfel f at s = 2 sin(theta)/lambda
    (= q / 2 pi) where the fit's variable is sin(theta)/lambda: its pattern equals ours only
    with f taken at 2q. This is why the comparison above uses constant form factors."""
    atoms = cluster()
    two_theta = np.arange(10.0, 80.0, 0.5)
    q = q_from_two_theta(two_theta)
    symbols = list(dict.fromkeys(atoms.get_chemical_symbols()))
    types = np.array([symbols.index(x) for x in atoms.get_chemical_symbols()])
    coef = form_factor_coefficients(symbols)
    hist = linear_pair_histogram(atoms.positions, atoms.cell.array, atoms.pbc, types, 12.0,
                                 1200)[0]
    t = debye_transform(q, excess_pairs(hist, np.zeros((2, 2)), 12.0, "none"), 12.0)
    n_a = np.bincount(types)

    def intensity(f):
        return (n_a @ f ** 2 + np.einsum("aq,bq,abq->q", f, f, t)) / len(atoms)

    ase = XrDebye(atoms, wavelength=1.5406, damping=0.0, method="Iwasa", alpha=1.0)
    th = np.radians(two_theta)
    theirs = np.array(ase.calc_pattern(two_theta)) / (np.cos(th / 2) / (1 + np.cos(th) ** 2))
    theirs /= len(atoms)
    np.testing.assert_allclose(intensity(form_factors(coef, 2 * q)), theirs, rtol=2e-3)
    assert np.max(np.abs(intensity(form_factors(coef, q)) / theirs - 1)) > 0.1


def test_form_factors():
    coef = form_factor_coefficients(["V", "O"])
    f0 = form_factors(coef, [0.0])[:, 0]
    assert f0[0] == pytest.approx(23.0, abs=0.01) and f0[1] == pytest.approx(8.0, abs=0.01)
    f = form_factors(coef, np.linspace(0, 8, 50))
    assert np.all(np.diff(f, axis=1) < 0)
    with pytest.raises(UserError, match="no X-ray form factor for Si"):
        form_factor_coefficients(["Si"])


def test_linear_histogram_weights():
    """Each pair adds 1, split between the two grid points around its distance; the uniform
    weights integrate 4 pi r^2 to the sphere's volume."""
    pos = np.array([[0.0, 0, 0], [1.234, 0, 0]])
    h = linear_pair_histogram(pos, np.zeros((3, 3)), [False] * 3, [0, 0], 2.0, 200)[0, 0, 0]
    assert h.sum() == pytest.approx(2.0)
    assert h[123] == pytest.approx(2 * 0.6) and h[124] == pytest.approx(2 * 0.4)
    assert uniform_weights(3.0, 300).sum() == pytest.approx(4 / 3 * np.pi * 27, rel=1e-12)


def heterophase(seed=0, n=2):
    """Corundum V2O3 (120 atoms) split along c, the melt half disordered (test_analysis)."""
    return heterophase_frames(n, seed=seed)


def test_regions_add_up_and_faber_ziman_identity():
    """N_all I_all = N_crystal I_crystal + N_melt I_melt; and per region, without the LP
    factor, I / N = sum c_a f_a^2 + sum c_a c_b f_a f_b (S_ab - 1) from the partials."""
    frames = heterophase()
    x = XRD(frames, rmax=30.0, lp=False, qmax=6.0, regions=("all", "crystal", "melt")).run()
    res = x.results
    n = res.n_centres.sum(axis=1)
    total = n[0] * res.intensity[0]
    np.testing.assert_allclose(n[1] * res.intensity[1] + n[2] * res.intensity[2], total,
                               rtol=1e-9, atol=1e-9 * np.abs(total).max())
    coef = form_factor_coefficients(x.species.symbols)
    q = res.sq_q
    f = form_factors(coef, q)
    direct = XRD(frames, rmax=30.0, lp=False, two_theta=(1.0, 179.0), step=0.05,
                 regions=("all", "crystal", "melt")).run().results
    t = len(x.species)
    c_all = res.n_centres[0] / res.n_centres[0].sum()
    for r in range(3):
        c = res.n_centres[r] / res.n_centres[r].sum()
        s = res.sq[:, r].reshape(t, t, -1)
        built = c @ f ** 2 + np.einsum("a,b,aq,bq,abq->q", c, c_all, f, f, s - 1)
        inside = q < direct.q.max()
        expect = np.interp(q[inside], direct.q, direct.intensity[r])
        np.testing.assert_allclose(built[inside], expect, rtol=0,
                                   atol=2e-3 * np.abs(expect).max())


def test_partial_structure_factors_peak_at_bragg_q():
    """The Fourier transform of the crystal's long-range histogram: the total S(q) built
    from the partials peaks at q = 2 pi / d of the strong reflections (within 0.01 Å^-1)."""
    atoms = v2o3_corundum()
    x = XRD(atoms, rmax=120.0, qmax=4.5, dq=0.002, regions="all").run()
    res = x.results
    t = len(x.species)
    c = res.n_centres[0] / res.n_centres[0].sum()
    f = form_factors(form_factor_coefficients(x.species.symbols), res.sq_q)
    s = res.sq[:, 0].reshape(t, t, -1)
    mean_f = c @ f
    total = 1 + np.einsum("a,b,aq,bq,abq->q", c, c, f, f, s - 1) / mean_f ** 2
    from scipy.signal import find_peaks
    peaks = res.sq_q[find_peaks(total, prominence=0.05 * total.max())[0]]
    lines = bragg_reflections(atoms, two_theta_max=70.0)
    top = max(x["intensity"] for x in lines)
    for line in lines:
        if line["intensity"] > 0.05 * top and line["q"] < 4.4:
            assert np.min(np.abs(peaks - line["q"])) < 0.01, line
    # the like-pair partials of a crystal peak where the lattice does: S_VV at (110)
    q110 = 2 * np.pi / (4.952 / 2)   # d(110) = a / 2
    s_vv = s[0, 0]
    k = np.argmin(np.abs(res.sq_q - q110))
    assert s_vv[k] > 10 and s_vv[k] == s_vv[k - 10:k + 11].max()


def test_lp_factor_is_a_factor():
    atoms = v2o3_corundum()
    on = XRD(atoms, rmax=40.0, regions="all").run().results
    off = XRD(atoms, rmax=40.0, regions="all", lp=False).run().results
    np.testing.assert_allclose(on.intensity[0], off.intensity[0] * lorentz_polarisation(on.two_theta),
                               rtol=1e-12)
    assert lorentz_polarisation(90.0) == pytest.approx(1 / (0.5 * np.sqrt(0.5)))
    assert q_from_two_theta(180.0, 2.0) == pytest.approx(2 * np.pi)


@pytest.mark.parametrize("kwargs, words", [
    (dict(wavelength=-1.0), "wavelength"),
    (dict(two_theta=(50.0, 20.0)), "0 < min < max < 180"),
    (dict(two_theta=(10.0, 190.0)), "0 < min < max < 180"),
    (dict(two_theta="x"), "two numbers"),
    (dict(rmax=0.0), "XRD rmax"),
    (dict(window="hann"), "window must be one of"),
])
def test_bad_options_are_one_line_user_errors(kwargs, words):
    with pytest.raises(UserError) as info:
        XRD(v2o3_corundum(), **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_write_outputs(tmp_path):
    result = XRD(heterophase(n=1), rmax=20.0).run().result("test")
    paths = result.write(tmp_path)
    assert [p.name for p in paths] == ["xrd.csv", "sq.csv", "xrd.png", "sq.png"]
    with open(tmp_path / "xrd.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["two_theta_deg", "q_inv_A", "I_all", "I_crystal", "I_melt", "I_interface"]
    assert len(rows) - 1 == len(result.two_theta)
    assert float(rows[1][2]) == pytest.approx(result.intensity[0, 0], rel=1e-7)
    with open(tmp_path / "sq.csv") as fh:
        header = next(csv.reader(fh))
    assert header[1] == "S_V-V_all" and len(header) == 1 + 4 * 4
    for name in ("xrd.png", "sq.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "strongest peaks" in "\n".join(result.lines())


def test_mpi_two_ranks_equal_serial(tmp_path, mpirun):
    """XRD and bond angles under mpirun -np 2 (3 frames: one each, the third shared by atoms)."""
    from meltquench.analysis import BondAngles
    frames = heterophase(seed=3, n=3)
    path = tmp_path / "t.traj"
    write(path, frames)
    mpirun(["python", str(HERE / "mpi_xrd.py"), str(path), str(tmp_path / "mpi.json")], np=2)
    parallel = json.loads((tmp_path / "mpi.json").read_text())
    xrd = XRD(str(path), rmax=20.0, interface_width=2.5).run().results
    angles = BondAngles(str(path), cutoffs={"V-O": 2.3}, interface_width=2.5).run().results
    np.testing.assert_allclose(np.array(parallel["intensity"], float), xrd.intensity,
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.array(parallel["sq"], float), xrd.sq, rtol=1e-10, atol=1e-10)
    assert parallel["n_centres"] == xrd.n_centres.tolist()
    assert parallel["angles"] == angles.histogram.tolist()
    assert sum(map(sum, parallel["angles"][0])) > 0
