"""Region-resolved analysis against an independent reference built from ASE's neighbor_list,
corundum V2O3 through the whole pipeline, inputs and outputs, the CLI functions, and
serial == mpirun -np 2."""
import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.io import write
from ase.neighborlist import neighbor_list as ase_neighbor_list

from meltquench.analysis import AnalysisResult, analyse
from meltquench.cli import add_analyse_arguments, analyse_from_args, default_analysis_dir
from meltquench.errors import UserError
from meltquench.kernels.parallel import frame_plan
from meltquench.structures import split_regions, v2o3_corundum

HERE = Path(__file__).parent


def heterophase_frames(n_frames=4, melt_noise=0.35, crystal_noise=0.04, seed=0):
    """Corundum V2O3 (2x2x1, 120 atoms) split along c; the melt half strongly disordered."""
    rng = np.random.default_rng(seed)
    base = split_regions(v2o3_corundum((2, 2, 1)), axis=2, melt_fraction=0.5, origin=0.1)
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        melt = atoms.get_tags() == 2
        atoms.positions += rng.normal(0, crystal_noise, atoms.positions.shape)
        atoms.positions[melt] += rng.normal(0, melt_noise, (melt.sum(), 3))
        frames.append(atoms)
    return frames


def reference(frames, rmax, nbins, width, cutoff, pairs):
    """Per region and pair: counts, g, n(r) and CN histogram from ASE neighbour lists.

    The interface band is found from Cartesian z (the hexagonal c axis is along z), not from
    fractional coordinates as the code does.
    """
    edges = np.linspace(0, rmax, nbins + 1)
    shells = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    out = {}
    for atoms in frames:
        i, j, d = ase_neighbor_list("ijd", atoms, max(rmax, cutoff))
        c = atoms.cell[2, 2]
        z = atoms.positions[:, 2]
        near = np.zeros(len(atoms), bool)
        for p in atoms.info["region_planes"]:
            dz = (z - p * c + c / 2) % c - c / 2
            near |= np.abs(dz) <= width
        tags = atoms.get_tags()
        masks = {"all": np.ones(len(atoms), bool), "crystal": tags == 1, "melt": tags == 2,
                 "interface": near}
        sym = np.array(atoms.get_chemical_symbols())
        for pair in pairs:
            a, b = pair.split("-")
            for region, mask in masks.items():
                centres = mask & (sym == a)
                sel = centres[i] & (sym[j] == b)
                h = np.histogram(d[sel & (d < rmax)], bins=edges)[0]
                cn = np.bincount(i[sel & (d < cutoff)], minlength=len(atoms))[centres]
                acc = out.setdefault((pair, region), {"h": 0, "n": 0, "z": 0.0, "cn": []})
                acc["h"] = acc["h"] + h
                acc["n"] += int(centres.sum())
                acc["z"] += centres.sum() * np.count_nonzero(sym == b) / atoms.get_volume()
                acc["cn"].extend(cn.tolist())
    for acc in out.values():
        acc["g"] = acc["h"] / (acc["z"] * shells)
        acc["n_r"] = np.cumsum(acc["h"]) / acc["n"]
        acc["cn_hist"] = np.bincount(acc["cn"])
    return out


def test_regions_match_independent_reference():
    frames = heterophase_frames()
    pairs = ["V-O", "O-V", "O-O"]
    result = analyse(frames, rmax=5.0, nbins=100, interface_width=2.5, pairs=pairs,
                     cutoffs={"V-O": 2.4, "O-V": 2.4, "O-O": 2.4})
    assert isinstance(result, AnalysisResult)
    assert result.regions == ["all", "crystal", "melt", "interface"]
    ref = reference(frames, 5.0, 100, 2.5, 2.4, pairs)
    for pair in pairs:
        for region in result.regions:
            row, expect = result.get(pair, region), ref[(pair, region)]
            assert expect["n"] > 0
            np.testing.assert_array_equal(row.counts, expect["h"])
            np.testing.assert_allclose(row.g, expect["g"], rtol=1e-12)
            np.testing.assert_allclose(row.n_r, expect["n_r"], rtol=1e-12)
            np.testing.assert_array_equal(row.cn_histogram, expect["cn_hist"])
            assert row.centres_per_frame == expect["n"] / len(frames)
            assert row.mean_cn == pytest.approx(np.mean(ref[(pair, region)]["cn"]))
            assert row.cutoff == 2.4 and row.cutoff_source == "given"
    # The disordered melt is less ordered than the crystal: fewer V with exactly 6 O.
    frac6 = {reg: result.get("V-O", reg).cn_fractions()[6] for reg in ("crystal", "melt")}
    assert frac6["crystal"] > frac6["melt"]


def test_corundum_through_analyse_with_auto_cutoff():
    """Corundum V2O3 with 0.03 Å of noise: the automatic V-O cutoff lies between the first and
    second shells, every V has 6 O and every O 4 V, the first peak is at 1.95-2.06 Å."""
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(2):
        atoms = split_regions(v2o3_corundum((1, 1, 2)))
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
        frames.append(atoms)
    result = analyse(frames, pairs=["V-O", "O-V"], regions=("all", "crystal", "melt"))
    for pair, cn in (("V-O", 6), ("O-V", 4)):
        assert result.cutoffs[pair] > 2.06 and result.cutoffs[pair] < 2.9
        for region in result.regions:
            row = result.get(pair, region)
            assert row.cutoff_source == "auto"
            assert row.mean_cn == cn
            assert np.flatnonzero(row.cn_histogram).tolist() == [cn]
            assert 1.95 <= row.first_peak <= 2.06
        assert result.get(pair, "all").centres_per_frame == (24 if pair == "V-O" else 36)


def test_without_tags_only_all():
    rng = np.random.default_rng(2)
    atoms = v2o3_corundum()
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    result = analyse(atoms, rmax=4.0, nbins=40)
    assert result.regions == ["all"]
    assert result.pairs == ["V-V", "V-O", "O-V", "O-O"]
    assert any("crystal" in note for note in result.notes)
    assert len(result.rows) == 4
    # g(r) is symmetric in the pair for the ASE normalisation.
    np.testing.assert_allclose(result.get("V-O").g, result.get("O-V").g, rtol=1e-12)


def test_open_molecule_without_cell():
    """Ethanol in no cell: g(r) is undefined, but the automatic cutoffs (from the histogram's
    shape) and coordination numbers follow the bonds: every H has one C or O, O has one H."""
    from ase.build import molecule
    result = analyse(molecule("CH3CH2OH"), rmax=3.0, nbins=60)
    assert result.regions == ["all"]
    assert np.all(np.isnan(result.get("C-H").g))
    assert result.get("O-H").mean_cn == 1.0 and result.get("C-C").mean_cn == 1.0
    assert result.get("C-H").mean_cn == 2.5  # 3 + 2 H on the two C
    assert result.get("H-C").mean_cn == pytest.approx(5 / 6)
    assert result.get("H-O").mean_cn == pytest.approx(1 / 6)
    assert len(result.get("H-C").cn_histogram) == 2  # no H with two C
    assert 1.40 < result.get("C-O").first_peak < 1.46


def test_sources_and_frame_selection(tmp_path):
    frames = heterophase_frames(5)
    run = tmp_path / "run"
    run.mkdir()
    write(run / "trajectory.traj", frames)
    write(tmp_path / "frames.extxyz", frames)
    kwargs = dict(rmax=4.0, nbins=40, pairs=["V-O"], cutoffs={"V-O": 2.3})
    from_list = analyse(frames[1::2], **kwargs)
    for source in (run, run / "trajectory.traj", tmp_path / "frames.extxyz"):
        result = analyse(source, start=1, stride=2, **kwargs)
        assert result.frames == [1, 3]
        assert result.regions == from_list.regions == ["all", "crystal", "melt", "interface"]
        for a, b in zip(result.rows, from_list.rows):
            np.testing.assert_array_equal(a.counts, b.counts)
            np.testing.assert_array_equal(a.cn_histogram, b.cn_histogram)
    assert analyse(run, stop=-2, **kwargs).frames == [0, 1, 2]


def test_write_outputs(tmp_path):
    result = analyse(heterophase_frames(2), rmax=4.0, nbins=80, pairs=["V-O", "O-V"],
                     regions=("all", "crystal"))
    paths = result.write(tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == sorted(["summary.json", "summary.csv", "rdf.json", "rdf_all.png",
                            "rdf_crystal.png", "coordination_all.png",
                            "coordination_crystal.png"])
    for p in paths:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["results"]) == 4 and summary["n_frames"] == 2
    rdf = json.loads((tmp_path / "out" / "rdf.json").read_text())
    assert len(rdf["r"]) == 80
    np.testing.assert_allclose(rdf["rdf"]["crystal"]["V-O"]["g"], result.get("V-O", "crystal").g)
    with open(tmp_path / "out" / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["pair"], r["region"]) for r in rows] == [("V-O", "all"), ("V-O", "crystal"),
                                                      ("O-V", "all"), ("O-V", "crystal")]
    assert float(rows[1]["mean_cn"]) == pytest.approx(result.get("V-O", "crystal").mean_cn)
    table = result.table()
    assert "V-O" in table and "crystal" in table and "mean CN" in table
    json.dumps(result.to_dict(), allow_nan=False)


def make_parser():
    parser = argparse.ArgumentParser(prog="meltquench analyse")
    add_analyse_arguments(parser)
    return parser


def test_cli_functions(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write(run / "trajectory.traj", heterophase_frames(3))
    args = make_parser().parse_args([str(run), "--rmax", "4", "--nbins", "50", "--cutoff",
                                     "V-O=2.3", "--cutoff", "O-V=2.3", "--pairs", "V-O",
                                     "O-V", "--regions", "all", "melt", "--stride", "2"])
    result = analyse_from_args(args)
    assert result.frames == [0, 2]
    assert result.cutoffs == {"V-O": 2.3, "O-V": 2.3}
    assert (run / "analysis" / "summary.json").is_file()
    out = capsys.readouterr().out
    assert "V-O" in out and "melt" in out
    assert default_analysis_dir(run) == run / "analysis"
    assert default_analysis_dir(run / "trajectory.traj") == run / "trajectory_analysis"
    args = make_parser().parse_args([str(run / "trajectory.traj"), "--out",
                                     str(tmp_path / "x"), "--pairs", "V-O,O-O", "--nbins", "30"])
    assert [r.pair for r in analyse_from_args(args).rows][::4] == ["V-O", "O-O"]
    assert (tmp_path / "x" / "rdf_interface.png").is_file()
    # an earlier analysis is never replaced unless asked
    with pytest.raises(UserError, match="--overwrite"):
        analyse_from_args(args)
    args = make_parser().parse_args([str(run / "trajectory.traj"), "--out", str(tmp_path / "x"),
                                     "--overwrite"])
    assert analyse_from_args(args).frames == [0, 1, 2]


@pytest.mark.parametrize("argv, words", [
    (["{missing}"], "not found"),
    (["{empty}"], "trajectory.traj"),
    (["{traj}", "--cutoff", "V-O:2.3"], "V-O=2.3"),
    (["{traj}", "--cutoff", "V-O=-1"], "positive"),
    (["{traj}", "--pairs", "V-X"], "no X atoms"),
    (["{traj}", "--pairs", "VO"], "centre-neighbour"),
    (["{traj}", "--pairs", "V-O", "--cutoff", "O-O=2"], "not among the pairs"),
    (["{traj}", "--stride", "0"], "stride"),
    (["{traj}", "--start", "7"], "no frames selected"),
    (["{traj}", "--rmax", "0"], "rmax"),
    (["{traj}", "--regions", "bulk"], "unknown region"),
])
def test_cli_errors_are_one_line_user_errors(tmp_path, argv, words):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "t.traj", heterophase_frames(1))
    names = {"missing": tmp_path / "nope.traj", "empty": tmp_path / "empty",
             "traj": tmp_path / "t.traj"}
    argv = [a.format(**names) for a in argv]
    with pytest.raises(UserError) as info:
        analyse_from_args(make_parser().parse_args(argv))
    message = str(info.value)
    assert words in message and "\n" not in message


def test_frame_plan_shares_every_frame_once():
    for n in range(0, 9):
        for size in (1, 2, 3, 4):
            owned = []
            shared = None
            for rank in range(size):
                own, sh = frame_plan(n, rank, size)
                owned += own
                assert shared is None or sh == shared
                shared = sh
            assert sorted(owned + shared) == list(range(n))
            assert len(owned) == len(set(owned)) and len(shared) == n % size


def test_works_without_mpi4py(monkeypatch):
    """With mpi4py missing, analyse runs serially and gives the same result as one rank."""
    frames = heterophase_frames(2)
    kwargs = dict(rmax=4.0, nbins=40, pairs=["V-O"], cutoffs={"V-O": 2.3})
    with_mpi = analyse(frames, **kwargs)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # "import mpi4py" now raises ImportError
    with pytest.raises(ImportError):
        import mpi4py  # noqa: F401
    without = analyse(frames, **kwargs)
    for a, b in zip(with_mpi.rows, without.rows):
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.cn_histogram, b.cn_histogram)


def test_mpi_two_ranks_equal_serial(tmp_path, mpirun):
    frames = heterophase_frames(5, seed=3)
    path = tmp_path / "t.traj"
    write(path, frames)
    mpirun(["python", str(HERE / "mpi_analysis.py"), str(path), str(tmp_path / "mpi")], np=2)
    cases = {"all": dict(pairs=None, cutoffs={"V-O": 2.3}),
             "one": dict(stop=1, pairs=["V-O", "O-V", "O-O"], cutoffs=None)}
    for name, kwargs in cases.items():
        serial = analyse(path, rmax=5.0, nbins=100, interface_width=2.5, **kwargs).to_dict()
        parallel = json.loads((tmp_path / f"mpi_{name}.json").read_text())
        assert parallel["frames"] == serial["frames"]
        assert len(parallel["results"]) == len(serial["results"]) > 0
        for a, b in zip(parallel["results"], serial["results"]):
            assert (a["pair"], a["region"]) == (b["pair"], b["region"])
            assert a["counts"] == b["counts"]              # histograms exactly
            assert a["cn_histogram"] == b["cn_histogram"]
            for key in ("g", "n_r"):
                np.testing.assert_allclose(np.array(a[key], float), np.array(b[key], float),
                                           rtol=1e-12, atol=1e-12)
            for key in ("first_peak", "first_minimum", "cutoff", "mean_cn",
                        "centres_per_frame"):
                if b[key] is None:
                    assert a[key] is None
                else:
                    assert math.isclose(a[key], b[key], rel_tol=1e-12)


def test_classes_on_their_own_match_analyse():
    """PartialRDF, then Coordination with the cutoffs PartialRDF found, give what analyse()
    gives; the frames split the same whichever strategy plans them, and one pass of both
    (AnalysisCollection) equals two."""
    from meltquench.analysis import (AnalysisCollection, Coordination, Frames, PartialRDF,
                                     WholeFrames)
    frames = heterophase_frames(3, seed=4)
    rdf = PartialRDF(frames, rmax=5.0, nbins=100, pairs=["V-O", "O-V"]).run(step=2)
    assert rdf.frames == [0, 2] and rdf.pairs == ["V-O", "O-V"]
    assert rdf.regions == ["all", "crystal", "melt", "interface"]
    assert set(rdf.cutoffs) == {"V-O", "O-V"} and 2.06 < rdf.cutoffs["V-O"] < 2.9
    cn = Coordination(frames, cutoffs=rdf.cutoffs, pairs=["V-O", "O-V"]).run(step=2)
    ref = analyse(frames, rmax=5.0, nbins=100, pairs=["V-O", "O-V"], stride=2)
    assert ref.cutoffs == rdf.cutoffs
    for p, pair in enumerate(rdf.pairs):
        for q, region in enumerate(rdf.regions):
            row = ref.get(pair, region)
            np.testing.assert_array_equal(rdf.results.counts[p, q], row.counts)
            np.testing.assert_array_equal(rdf.results.g[p, q], row.g)
            assert rdf.results.first_minimum[p, q] == row.first_minimum
            hist = cn.results.histogram[p, q]
            np.testing.assert_array_equal(hist[:len(row.cn_histogram)], row.cn_histogram)
            assert not hist[len(row.cn_histogram):].any()
            assert cn.results.mean[p, q] == row.mean_cn
    np.testing.assert_array_equal(cn.results.n_centres, rdf.results.n_centres)
    assert cn.results.n_centres[0, 0] == 2 * 48  # the V centres of two frames
    # one pass over a shared Frames, and whole frames per rank, give the same numbers
    with Frames(frames) as source:
        rdf2 = PartialRDF(source, rmax=5.0, nbins=100, pairs=["V-O", "O-V"])
        cn2 = Coordination(source, cutoffs=rdf.cutoffs, pairs=["V-O", "O-V"])
        rdf2.split = cn2.split = WholeFrames()
        AnalysisCollection(rdf2, cn2).run(step=2)
    np.testing.assert_array_equal(rdf2.results.counts, rdf.results.counts)
    np.testing.assert_array_equal(cn2.results.histogram, cn.results.histogram)


def test_split_strategies_cover_every_frame_once():
    from meltquench.analysis import FramesThenAtoms, WholeFrames
    for n in range(0, 7):
        for size in (1, 2, 3):
            whole = [pos for rank in range(size) for pos, _ in WholeFrames().plan(n, rank, size)]
            assert whole == list(range(n))
            plans = [FramesThenAtoms().plan(n, rank, size) for rank in range(size)]
            own = sorted(pos for plan in plans for pos, share in plan if share is None)
            shared = [[pos for pos, share in plan if share is not None] for plan in plans]
            assert all(s == shared[0] for s in shared) and len(shared[0]) == n % size
            assert sorted(own + shared[0]) == list(range(n))
