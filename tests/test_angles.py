"""Bond-angle distributions: an ideal octahedron, corundum V2O3 against ASE's Atoms.get_angle
on the same triples, regions, bad input, and 'meltquench analyse' writing angles and XRD."""
import itertools
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from ase.neighborlist import neighbor_list as ase_neighbor_list

from meltquench.analysis import BondAngles
from meltquench.cli import analyse_from_args
from meltquench.errors import UserError
from meltquench.kernels.angles import angle_histogram
from meltquench.structures import split_regions, v2o3_corundum
from test_analysis import make_parser


def test_ideal_octahedron_gives_12_right_angles_and_3_straight():
    atoms = Atoms("VO6", positions=[[0, 0, 0], [2, 0, 0], [-2, 0, 0], [0, 2, 0], [0, -2, 0],
                                    [0, 0, 2], [0, 0, -2]])
    result = BondAngles(atoms, cutoffs={"V-O": 2.3}, triplets=["O-V-O"]).run().results
    hist = result.histogram[0, 0]
    assert hist.sum() == 15
    assert hist[90] == 12 and hist[179] == 3   # 1-degree bins: [90, 91) and [179, 180]
    assert result.mean[0, 0] == pytest.approx((12 * 90.5 + 3 * 179.5) / 15)


def ase_angles(atoms, centre, neighbour, cutoff):
    """Every angle neighbour-centre-neighbour with both bonds below cutoff, from ASE's
    neighbour list and Atoms.get_angle(mic=True)."""
    i, j = ase_neighbor_list("ij", atoms, cutoff)
    sym = np.array(atoms.get_chemical_symbols())
    out = []
    for c in np.flatnonzero(sym == centre):
        nb = j[(i == c) & (sym[j] == neighbour)]
        for a, b in itertools.combinations(nb, 2):
            out.append(atoms.get_angle(a, c, b, mic=True))
    return np.array(out)


def test_corundum_angles_match_ase_get_angle():
    atoms = v2o3_corundum((2, 2, 1))
    rng = np.random.default_rng(4)
    atoms.positions += rng.normal(0, 0.02, atoms.positions.shape)
    result = BondAngles(atoms, cutoffs={"V-O": 2.3}, nbins=360).run().results
    edges = np.linspace(0, 180, 361)
    for k, (centre, neighbour) in enumerate([("V", "O"), ("O", "V")]):
        ref = ase_angles(atoms, centre, neighbour, 2.3)
        assert len(ref) == (48 * 15 if centre == "V" else 72 * 6)
        np.testing.assert_array_equal(result.histogram[k, 0], np.histogram(ref, edges)[0])
    assert result.n_centres[:, 0].tolist() == [48, 72]


def test_region_histograms_add_up_and_kernel_groups():
    atoms = split_regions(v2o3_corundum((2, 2, 1)), axis=2, melt_fraction=0.5, origin=0.1)
    atoms.positions[atoms.get_tags() == 2] += np.random.default_rng(1).normal(
        0, 0.25, ((atoms.get_tags() == 2).sum(), 3))
    res = BondAngles(atoms, cutoffs={"O-V": 2.4}, regions=("all", "crystal", "melt")).run()
    h = res.results.histogram
    assert res.triplets == ["O-V-O", "V-O-V"]   # the O-V cutoff serves the V-O bond too
    np.testing.assert_array_equal(h[:, 0], h[:, 1] + h[:, 2])
    # the melt is less regular: its O-V-O angles spread over more bins
    assert np.count_nonzero(h[0, 2]) > np.count_nonzero(h[0, 1])
    types = np.where(atoms.numbers == 23, 0, 1)
    direct = angle_histogram(atoms.positions, atoms.cell.array, atoms.pbc, types,
                             [[0, 2.4], [2.4, 0]])
    np.testing.assert_array_equal(direct[0, 0, 1, 1], h[0, 0])


@pytest.mark.parametrize("kwargs, words", [
    (dict(cutoffs={"V-O": 2.3}, triplets=["O-V"]), "must look like 'O-V-O'"),
    (dict(cutoffs={"V-O": 2.3}, triplets=["O-X-O"]), "no X atoms"),
    (dict(cutoffs={"V-O": 2.3}, triplets=["V-V-V"]), "needs a cutoff for the V-V bond"),
    (dict(cutoffs={"V-O": -1}), "positive"),
    (dict(cutoffs={"V-O": 2.3}, nbins=0), "angle bins"),
])
def test_bad_input_is_one_line_user_error(kwargs, words):
    with pytest.raises(UserError) as info:
        BondAngles(v2o3_corundum(), **kwargs).run()
    assert words in str(info.value) and "\n" not in str(info.value)


def test_analyse_writes_angles_and_xrd(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    frames = [split_regions(v2o3_corundum((2, 2, 1)), axis=2, melt_fraction=0.5, origin=0.1)
              for _ in range(2)]
    write(run / "trajectory.traj", frames)
    args = make_parser().parse_args([str(run), "--no-melt", "--pairs", "V-O", "O-V",
                                     "--xrd-rmax", "30", "--two-theta", "20", "60"])
    analyse_from_args(args)
    out = capsys.readouterr().out
    assert "O-V-O" in out and "V-O-V" in out and "strongest peaks" in out
    for name in ("angles.csv", "angles.png", "xrd.csv", "xrd.png", "sq.csv"):
        assert (run / "analysis" / name).is_file(), name
    header = (run / "analysis" / "xrd.csv").read_text().splitlines()[0]
    assert header.startswith("two_theta_deg,q_inv_A,I_all")
    args = make_parser().parse_args([str(run), "--no-melt", "--no-xrd", "--no-angles",
                                     "--out", str(tmp_path / "plain")])
    analyse_from_args(args)
    assert not (tmp_path / "plain" / "xrd.csv").exists()
    assert not (tmp_path / "plain" / "angles.csv").exists()


@pytest.mark.parametrize("option, words", [
    (["--wavelength", "-1"], "--wavelength"),
    (["--two-theta", "80", "10"], "0 < min < max < 180"),
    (["--two-theta", "10"], "--two-theta"),
    (["--xrd-rmax", "0"], "--xrd-rmax"),
    (["--xrd-rmax", "abc"], "--xrd-rmax"),
])
def test_cli_bad_xrd_options_exit_2_with_one_line(tmp_path, option, words):
    write(tmp_path / "t.traj", v2o3_corundum())
    proc = subprocess.run([sys.executable, "-m", "meltquench.cli", "analyse",
                           str(tmp_path / "t.traj"), *option], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meltquench: error:"), proc.stderr
    assert words in lines[0]
    assert not (tmp_path / "t_analysis").exists()
