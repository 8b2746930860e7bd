"""Melt diagnostics: the order parameter against an independent implementation, MSD against
numpy across the periodic boundary, the verdicts on synthetic crystals and melts, frames mapped
to the stages of a run, bad input, the CLI on a real (pair-potential) run, serial == mpirun."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from ase.io import write
from ase.neighborlist import neighbor_list as ase_neighbor_list
from scipy import special

from meltquench.analysis import MeltDiagnostics, melt_diagnostics
from meltquench.analysis.melt import (MSD_MELTED_A2, ORDER_CUTOFF_A, Q6BAR_CORUNDUM,
                                      Q6BAR_CRYSTAL_MIN)
from meltquench.config import load_config
from meltquench.errors import UserError
from meltquench.kernels.order import bond_order
from meltquench.structures import split_regions, v2o3_corundum, v2o3_rhombohedral

HERE = Path(__file__).parent


def reference_bond_order(atoms, cutoff, l=6):
    """q_l and Lechner-Dellago qbar_l of the O atoms among themselves: ASE's neighbour list,
    complex Y_lm from scipy, numpy sums."""
    i, j, D = ase_neighbor_list("ijD", atoms, cutoff)
    oxygen = atoms.numbers == 8
    keep = oxygen[i] & oxygen[j]
    i, j, D = i[keep], j[keep], D[keep]
    r = np.linalg.norm(D, axis=1)
    theta, phi = np.arccos(D[:, 2] / r), np.arctan2(D[:, 1], D[:, 0])
    m = np.arange(-l, l + 1)
    if hasattr(special, "sph_harm_y"):
        Y = special.sph_harm_y(l, m[None, :], theta[:, None], phi[:, None])
    else:  # scipy < 1.15
        Y = special.sph_harm(m[None, :], l, phi[:, None], theta[:, None])
    n = len(atoms)
    count = np.bincount(i, minlength=n)
    qlm = np.zeros((n, 2 * l + 1), complex)
    np.add.at(qlm, i, Y)
    qlm[count > 0] /= count[count > 0, None]
    qbar_lm = qlm.copy()
    np.add.at(qbar_lm, i, qlm[j])
    qbar_lm /= (count + 1)[:, None]
    norm = 4 * np.pi / (2 * l + 1)
    q = np.sqrt(norm * (abs(qlm) ** 2).sum(axis=1))
    qbar = np.sqrt(norm * (abs(qbar_lm) ** 2).sum(axis=1))
    return qbar[oxygen], q[oxygen], count[oxygen]


def rattled(atoms, sigma, rng):
    atoms = atoms.copy()
    atoms.positions += rng.normal(0, sigma, atoms.positions.shape)
    return atoms


@pytest.mark.parametrize("l", [4, 6])
def test_order_parameter_matches_independent_implementation(l):
    rng = np.random.default_rng(0)
    for atoms in (v2o3_corundum((2, 2, 1)), rattled(v2o3_corundum((2, 2, 1)), 0.15, rng),
                  rattled(v2o3_rhombohedral((2, 2, 2)), 0.3, rng)):
        oxygens = np.flatnonzero(atoms.numbers == 8)
        qbar, q, n = bond_order(atoms.positions, atoms.cell.array, atoms.pbc, oxygens,
                                ORDER_CUTOFF_A, l=l)
        ref_qbar, ref_q, ref_n = reference_bond_order(atoms, ORDER_CUTOFF_A, l)
        np.testing.assert_array_equal(n, ref_n)
        np.testing.assert_allclose(q, ref_q, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(qbar, ref_qbar, rtol=1e-10, atol=1e-12)


def test_order_parameter_separates_crystal_from_disorder():
    """Perfect corundum: every O has 12 O and one q̄6 in any cell setting; thermal rattling
    keeps it crystal-like; an ideal gas at the same density is far below the threshold."""
    rng = np.random.default_rng(1)
    values = {}
    for name, atoms in (("hexagonal", v2o3_corundum((2, 2, 1))),
                        ("rhombohedral", v2o3_rhombohedral((2, 2, 2))),
                        ("rattled", rattled(v2o3_corundum((2, 2, 1)), 0.1, rng))):
        oxygens = np.flatnonzero(atoms.numbers == 8)
        qbar, _, n = bond_order(atoms.positions, atoms.cell.array, atoms.pbc, oxygens,
                                ORDER_CUTOFF_A)
        values[name] = qbar
        if name != "rattled":
            assert np.all(n == 12)
    for name in ("hexagonal", "rhombohedral"):
        np.testing.assert_allclose(values[name], Q6BAR_CORUNDUM, atol=1e-4)
    assert values["rattled"].mean() > 0.42
    gas = v2o3_corundum((2, 2, 1))
    gas.positions = rng.random((len(gas), 3)) @ gas.cell.array
    oxygens = np.flatnonzero(gas.numbers == 8)
    qbar = bond_order(gas.positions, gas.cell.array, gas.pbc, oxygens, ORDER_CUTOFF_A)[0]
    assert np.nanmean(qbar) < 0.2 < Q6BAR_CRYSTAL_MIN


def random_walk_frames(n_frames=6, seed=2):
    """Corundum (1x1x1, split along c) whose melt atoms walk 0.4 Å per coordinate per frame,
    the crystal standing still; one melt atom marches across the cell face along a, 5% of a per
    frame from s_a = 0.97. Returns the frames, the path (frames, atoms, 3) and that atom."""
    rng = np.random.default_rng(seed)
    base = split_regions(v2o3_corundum(), axis=2, melt_fraction=0.5, origin=0.1)
    melt = base.get_tags() == 2
    crossing = int(np.flatnonzero(melt)[0])
    s = base.get_scaled_positions()[crossing]
    s[0] = 0.97
    base.positions[crossing] = s @ base.cell.array
    steps = rng.normal(0, 0.4, (n_frames, len(base), 3))
    steps[0] = 0.0
    steps[:, ~melt] = 0.0
    steps[1:, crossing] = 0.05 * base.cell[0]
    path = base.positions + np.cumsum(steps, axis=0)
    frames = []
    for positions in path:
        atoms = base.copy()
        atoms.positions = positions
        frames.append(atoms)
    return frames, path, crossing


def test_msd_against_numpy_across_the_periodic_boundary():
    frames, path, crossing = random_walk_frames()
    assert frames[-1].cell.scaled_positions(path[-1, [crossing]])[0, 0] > 1.0  # left the cell
    wrapped = [a.copy() for a in frames]
    for a in wrapped:
        a.wrap()
    assert np.abs(wrapped[-1].positions[crossing] - path[-1, crossing]).max() > 4.0
    tags = frames[0].get_tags()
    msd = ((path - path[0]) ** 2).sum(axis=2)
    expect = {"all": msd.mean(axis=1), "crystal": msd[:, tags == 1].mean(axis=1),
              "melt": msd[:, tags == 2].mean(axis=1)}
    for source, unwrapped in ((frames, False), (wrapped, True)):
        md = MeltDiagnostics(source, cutoff_VO=2.5, regions=("all", "crystal", "melt")).run()
        assert md.unwrapped is unwrapped
        for q, region in enumerate(md.regions):
            np.testing.assert_allclose(md.results.msd[q], expect[region], rtol=1e-12,
                                       atol=1e-12)
    assert expect["crystal"].max() == 0.0 and expect["melt"][-1] > MSD_MELTED_A2


def heterophase(repeat=(2, 2, 2)):
    return split_regions(v2o3_corundum(repeat), axis=2, melt_fraction=0.5, origin=0.1)


def synthetic_run(n_frames, walk, seed=3, rattle=0.03):
    """Frames of a heterophase whose every atom rattles by ``rattle`` Å and whose melt atoms
    also walk ``walk(f)`` Å per coordinate in frame f, less (0.3 times) along z, the normal
    of the interface, so that they do not crowd into the crystal."""
    rng = np.random.default_rng(seed)
    base = heterophase()
    melt = base.get_tags() == 2
    offset = np.zeros((len(base), 3))
    frames = []
    for f in range(n_frames):
        if walk(f):
            offset[melt] += rng.normal(0, walk(f), (melt.sum(), 3)) * [1.0, 1.0, 0.3]
        frames.append(rattled(base, rattle, rng))
        frames[-1].positions += offset
    return frames


def test_crystal_with_thermal_rattling_stays_a_crystal():
    sigma = 0.05
    result = melt_diagnostics(synthetic_run(6, lambda f: 0.0, rattle=sigma))
    assert result.regions == ["all", "crystal", "melt", "interface"]
    assert result.stages == ["all"] * 6 and result.times_fs == [None] * 6
    for region in result.regions:
        s = result.series[region]
        np.testing.assert_array_equal(s["frac_V6"], 1.0)
        np.testing.assert_array_equal(s["frac_O4"], 1.0)
        assert np.all(s["q6bar"] > 0.44)
        # two independent rattles: <|u1 - u0|^2> = 6 sigma^2
        np.testing.assert_allclose(s["msd"][1:], 6 * sigma ** 2, rtol=0.25)
    assert result.cutoff_source == "auto" and 2.06 < result.cutoff_VO < 3.39
    crystal = result.verdict("crystal")
    assert crystal.status == "intact" and crystal.ok
    assert crystal.region == "crystal (outside the interface band)"
    assert result.verdict("melt").status == "did not melt"
    assert result.verdict("quench").status == "crystalline"


def test_synthetic_melt_is_melted_and_amorphous():
    result = melt_diagnostics(synthetic_run(8, lambda f: 0.5 if f else 0.0))
    melt = result.verdict("melt")
    assert (melt.status, melt.ok) == ("melted", True)
    assert melt.numbers["msd_A2"] > 2.5 and melt.numbers["q6bar"] < 0.25
    assert result.verdict("quench").status == "amorphous"
    assert result.verdict("crystal").status == "intact"
    assert result.series["melt"]["frac_V6"][-1] < 0.5
    assert result.series["crystal"]["msd"].max() < 0.01
    text = "\n".join(result.verdict_lines())
    assert "melt:    melted" in text and "amorphous" in text and "what to change" not in text


def fake_run_folder(tmp_path, frames, **schedule):
    """A run folder of ``frames`` (one per 2-fs step): config.yaml with that schedule (ps),
    md.log with the stage of every step by the programme, as the driver writes them."""
    overrides = ["calculator.name=pair", "dynamics.timestep_fs=2", "output.trajectory_interval=1"]
    overrides += [f"schedule.{k}={v}" for k, v in schedule.items()]
    cfg = load_config(overrides=overrides)
    sched = cfg.build_schedule()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(cfg.to_yaml())
    lines = ["# step time_fs stage"]
    for step in range(len(frames)):
        t = 2.0 * step
        lines.append(f"{step} {t:.3f} {sched.stage_at(max(t - 1e-9, 0.0)).name}")
    (run / "md.log").write_text("\n".join(lines) + "\n")
    write(run / "trajectory.traj", frames)
    return run


STAGES = ["heat"] * 3 + ["melt"] * 5 + ["quench"] * 2 + ["final"] * 2
SCHEDULE = dict(heat_ps=0.004, melt_ps=0.010, quench_ps=0.004, final_ps=0.004, T_melt_K=4000)


@pytest.mark.parametrize("walk_stage, walk, status, why", [
    ("melt", 0.5, "melted", ""),
    ("melt", 0.02, "did not melt", "its atoms stayed near their sites and its O sublattice"),
    ("heat", 0.6, "did not melt", "disordered in place, not molten"),
])
def test_run_folder_frames_are_staged_and_judged(tmp_path, walk_stage, walk, status, why):
    """Frames timed and staged from config.yaml and md.log; the melt stage judged. A region
    disordered before the hold and then still (no diffusion in the hold) did not melt."""
    frames = synthetic_run(12, lambda f: walk if STAGES[f] == walk_stage and f else 0.0)
    run = fake_run_folder(tmp_path, frames, **SCHEDULE)
    result = melt_diagnostics(run, start=1)
    assert result.frames == list(range(1, 12))
    assert result.stages == STAGES[1:]
    assert result.steps == list(range(1, 12))
    assert result.times_fs == [2.0 * k for k in range(1, 12)]
    melt = result.verdict("melt")
    assert melt.status == status
    assert melt.frames.startswith("melt stage, 0.006-0.014 ps (5 frames)")
    assert result.verdict("quench").frames.startswith("final stage")
    assert result.verdict("crystal").status == "intact"
    if status == "melted":
        assert result.verdict("quench").status == "amorphous"
        return
    # a melt that did not melt says so loudly, why, and what to change
    assert melt.numbers["msd_gain_A2"] < MSD_MELTED_A2
    assert result.verdict("quench").status == ("crystalline" if walk_stage == "melt"
                                               else "amorphous")
    text = "\n".join(result.verdict_lines())
    assert "DID NOT MELT" in text and why in melt.advice
    for words in ("schedule.melt_ps, now 0.01 ps", "schedule.T_melt_K, now 4000 K",
                  "thicker mobile region", "room to expand along the split axis"):
        assert words in melt.advice and words in text
    # the same trajectory without its run folder: one stage, 'all'
    plain = melt_diagnostics([*frames])
    assert set(plain.stages) == {"all"} and plain.verdict("melt").frames.startswith("all frames")


@pytest.mark.parametrize("kwargs, words", [
    (dict(regions=("all", "bulk")), "unknown region 'bulk'"),
    (dict(cutoff_VO=-1.0), "cutoff_VO must be a positive number"),
    (dict(cutoff_VO="abc"), "cutoff_VO must be a number"),
    (dict(order_cutoff=0), "order_cutoff must be a positive number"),
    (dict(interface_width=-2), "interface_width"),
    (dict(stride=0), "stride"),
    (dict(start=5), "no frames selected"),
])
def test_bad_input_is_one_line(kwargs, words):
    with pytest.raises(UserError) as info:
        melt_diagnostics([heterophase((1, 1, 1))] * 2, **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_frames_with_other_atoms_are_refused():
    a = heterophase((1, 1, 1))
    b = a.copy()
    del b[0]
    with pytest.raises(UserError, match="holds 29 atoms, the first analysed frame 30"):
        melt_diagnostics([a, b], cutoff_VO=2.5)


def test_cli_writes_melt_outputs_for_a_real_run(tmp_path, capsys):
    """A tiny pair-potential run through the driver, then 'meltquench analyse': melt.json and
    the PNGs beside the unchanged RDF/coordination outputs; frames timed and staged as md.log."""
    from meltquench import driver
    from meltquench.cli import main
    cfg = load_config(overrides=[
        "calculator.name=pair", "calculator.dispersion=null", "output.progress=none",
        "analysis.enabled=false", "dynamics.final_relax=null", "output.extxyz=false",
        "schedule.heat_ps=0.006", "schedule.melt_ps=0.01", "schedule.quench_ps=0.006",
        "schedule.final_ps=0.006", "output.trajectory_interval=2"])
    run = tmp_path / "run"
    driver.run(cfg, run_dir=run)
    capsys.readouterr()
    options = ["--nbins", "60", "--pairs", "V-O", "O-V", "--regions", "crystal", "melt"]
    assert main(["analyse", str(run), *options]) == 0
    out = capsys.readouterr().out
    assert "Melt diagnostics" in out and "melt:" in out and "quench:" in out
    assert "crystal:" in out
    melt = json.loads((run / "analysis" / "melt.json").read_text())
    rows = [line.split() for line in (run / "md.log").read_text().splitlines()[1:]]
    names = (run / "md.log").read_text().splitlines()[0][1:].split()
    stage_of = {int(r[0]): r[names.index("stage")] for r in rows}
    assert melt["frames"] == list(range(len(melt["frames"])))
    assert melt["step"] == [2 * k for k in melt["frames"]]
    assert melt["time_fs"] == [4.0 * k for k in melt["frames"]]
    assert melt["stage"] == [stage_of[s] for s in melt["step"]]
    assert {"heat", "melt", "quench", "final"} <= set(melt["stage"])
    assert [v["name"] for v in melt["verdicts"]] == ["melt", "quench", "crystal"]
    order = melt["order_parameter"]
    assert order["name"] == "q6bar" and "Lechner" in order["citation"]
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    vo = next(r for r in summary["results"] if r["pair"] == "V-O")
    assert melt["cutoff_VO"]["value"] == vo["cutoff"]  # the coordination analysis's cutoff
    for region in melt["regions"]:
        series = melt["series"][region]
        assert len(series["msd_A2"]) == len(melt["frames"]) == len(series["q6bar"])
    assert max(melt["series"]["crystal"]["msd_A2"]) == 0.0  # FixAtoms
    for name in ("melt_msd.png", "melt_order.png"):
        assert (run / "analysis" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the earlier outputs are the same with and without the melt diagnostics
    assert main(["analyse", str(run), *options, "--no-melt", "--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "melt.json").exists()
    for name in ("summary.json", "summary.csv", "rdf.json"):
        assert (tmp_path / "plain" / name).read_bytes() == (run / "analysis" / name).read_bytes()


def test_mpi_two_ranks_equal_serial(tmp_path, mpirun):
    """Under mpirun -np 2 (frames 0-2 on rank 0, 3-4 on rank 1) the result equals the serial
    one, also for wrapped frames whose boundary crossing happens on rank 0's frames."""
    frames, _, _ = random_walk_frames(5, seed=4)
    wrapped = [a.copy() for a in frames]
    for a in wrapped:
        a.wrap()
    paths = {"raw": tmp_path / "raw.traj", "wrapped": tmp_path / "wrapped.traj"}
    write(paths["raw"], frames)
    write(paths["wrapped"], wrapped)
    mpirun(["python", str(HERE / "mpi_melt.py"), str(paths["raw"]), str(paths["wrapped"]),
            str(tmp_path / "mpi")], np=2)
    for name, path in paths.items():
        serial = json.loads(json.dumps(melt_diagnostics(path, cutoff_VO=2.5).to_dict()))
        parallel = json.loads((tmp_path / f"mpi_{name}.json").read_text())
        assert parallel == serial
        assert parallel["unwrapped"] is (name == "wrapped")
        assert not math.isclose(parallel["series"]["melt"]["msd_A2"][-1], 0.0)


@pytest.mark.parametrize("q6, v6, o4, status", [
    (0.20, 0.40, 0.40, "amorphous"),
    (0.45, 0.95, 0.92, "recrystallised"),
    # the ml-demo's quenched layer: an ordered O sublattice, but not corundum's coordination
    (0.301, 0.72, 0.61, "partly ordered"),
])
def test_quench_verdict_needs_corundum_coordination_to_say_recrystallised(q6, v6, o4, status):
    from meltquench.analysis.melt import Clock, _quench_verdict
    n = 4
    clock = Clock(n, steps=range(n), times_fs=[2.0 * i for i in range(n)],
                  stages=["melt", "melt", "final", "final"])
    mobile = {"q6bar": np.full(n, q6), "frac_V6": np.full(n, v6), "frac_O4": np.full(n, o4)}
    verdict = _quench_verdict(mobile, "melt", clock, melted=True)
    assert verdict.status == status and verdict.ok == (status == "amorphous")
