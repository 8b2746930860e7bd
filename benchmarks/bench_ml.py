"""Benchmark: CHGNet and SevenNet (MPtrj PBE+U) against GPAW PBE+U on V2O3 frames, and their cost.

    python benchmarks/bench_ml.py                      # everything (about 20 min on 2 free cores)
    python benchmarks/bench_ml.py --parts accuracy     # frames, GPAW and the two models on them
    python benchmarks/bench_ml.py --parts cost --cost-sizes 120 --threads 1
    python benchmarks/bench_ml.py --basis dzp --work /tmp/ml-bench   # the paper's basis

Frames (``--repeat``, default the 30-atom hexagonal corundum cell; all atoms mobile):

- *crystal*: corundum V2O3 rattled by a Gaussian of ``--rattle`` Å per component;
- *melt*: the last frame of CHGNet MD at 4000 K (meltquench's BAOAB Langevin, 2 fs, every
  atom thermostatted) started from the crystal; the mean-square displacement tells whether it
  melted (above 1 Å² over the last half of the melt; a superheated crystal stays below about
  0.5 Å²), and so does q̄6 of the O sublattice (meltquench's melt diagnostic);
- *quenched*: that melt cooled linearly to 300 K with CHGNet, then a few FIRE steps.

Everything is seeded (``--seed``), so the frames are the same at every run; they are cached in
``--work`` (with the GPAW results) and rebuilt when any of their parameters changes.

On each frame: one GPAW single point (meltquench's LCAO settings: PBE+U, U_eff(V) = 3.25 eV on
the d shell, Γ point, meltquench's convergence criteria; basis ``--basis``, default the engine's
sz(dzp), since dzp costs about twice as much per single point; Fermi-Dirac 0.05 eV for every
frame, the engine's cold width; GPAW's own mixer, since meltquench's MD mixer stalls on these
cold single points; no D3; spin-polarised with ferromagnetic starting moments, as the MPtrj
calculations were), then CHGNet 0.3.0 and SevenNet-0 (``calculator.dispersion: null``).
Printed: force MAE, RMSE and largest component error against GPAW (eV/Å), the slope and cosine
of model against GPAW forces (a slope below 1: the model is softer), GPAW's own net force, and
E(frame) - E(crystal) per atom for GPAW and each model (absolute energies have different
references; differences at the same composition compare).

Cost: seconds per energy+forces call of each model on corundum supercells (``--cost-sizes``,
120 and 240 atoms), the median of ``--calls`` calls after one warm-up, with
``calculator.ml.threads`` 1 and 2; wall and CPU time, since the machines are shared. Next to
them GPAW's single points of the frames (seconds and SCF iterations) and the ratio GPAW / model
on the same frame. Quote the ratios, not the seconds.

Ends with a recommendation: the model with the lower mean force RMSE against GPAW, unless its
RMSE is within 10% of the other's (``MARGIN``) while it costs more than 1.5x the CPU time per
call (``COST_RATIO``): then the cheaper, since a 10% smaller force error does not pay for a run
half as long again (the paper's 18 ps at 240 atoms is hours of ML).
"""
import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from ase.geometry import find_mic  # noqa: E402
from ase.io import read, write  # noqa: E402
from ase.md.velocitydistribution import Stationary, thermalize_momenta  # noqa: E402
from ase.optimize import FIRE  # noqa: E402

from meltquench.analysis.melt import ORDER_CUTOFF_A, Q6BAR_CORUNDUM  # noqa: E402
from meltquench.calculators import make_calculator, prepare_atoms, scf_iterations  # noqa: E402
from meltquench.dynamics import make_dynamics  # noqa: E402
from meltquench.kernels.order import bond_order  # noqa: E402
from meltquench.structures import min_distance, v2o3_corundum  # noqa: E402

MODELS = ("chgnet", "sevennet")
LABEL = {"chgnet": "CHGNet 0.3.0", "sevennet": "SevenNet-0"}
FRAMES = ("crystal", "melt", "quenched")
PARTS = ("accuracy", "cost")
T_MELT, T_FINAL = 4000.0, 300.0  # K
MELTED_MSD = 1.0  # Å², over the last half of the melt


def log(text):
    print(text, flush=True)


def digest(obj):
    """A short hash of JSON-able ``obj`` (cache keys)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def table(head, rows):
    """Print ``rows`` (tuples of strings) under ``head``, columns padded, house style."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    print(fmt(head))
    print(fmt(["-" * w for w in widths]))
    for r in rows:
        print(fmt(r))
    print(flush=True)


def ml_calculator(name, threads, workdir):
    """CHGNet or SevenNet through meltquench, no D3, ``threads`` torch threads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_calculator({"name": name, "dispersion": None, "ml": {"threads": threads}},
                               directory=workdir)


def timed_call(atoms):
    """(energy, forces, wall s, CPU s) of one energy+forces call of ``atoms.calc``."""
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
    return energy, forces.copy(), time.perf_counter() - t0, time.process_time() - c0


# ---------------------------------------------------------------------------- frames

def frame_params(args):
    return {"repeat": args.repeat, "rattle": args.rattle, "seed": args.seed,
            "melt_ps": args.melt_ps, "quench_ps": args.quench_ps, "dt_fs": args.timestep_fs,
            "friction_per_fs": args.friction, "fire_steps": args.fire_steps, "version": 1}


class Displacements:
    """MD observer: unwrapped displacements from the first frame (minimum image per step)."""

    def __init__(self, atoms):
        self.atoms = atoms
        self.last = atoms.positions.copy()
        self.total = np.zeros_like(self.last)
        self.history = [self.total.copy()]
        self.temperatures = []

    def __call__(self):
        pos = self.atoms.positions
        step, _ = find_mic(pos - self.last, self.atoms.cell, pbc=True)
        self.total += step
        self.last = pos.copy()
        self.history.append(self.total.copy())
        self.temperatures.append(self.atoms.get_temperature())

    def msd(self, start=0, mask=None):
        """Mean-square displacement (Å²) from recorded frame ``start`` to the last one."""
        d = self.history[-1] - self.history[start]
        if mask is not None:
            d = d[mask]
        return float((d ** 2).sum(axis=1).mean())


def crystal_frame(args):
    """The rattled corundum frame (seeded)."""
    crystal = v2o3_corundum(tuple(args.repeat))
    crystal.rattle(stdev=args.rattle, seed=args.seed)
    return crystal


def make_frames(args, workdir):
    """(frames by name, facts about how they were made); cached in ``workdir``."""
    params = frame_params(args)
    path = workdir / f"frames-{digest(params)}.extxyz"
    facts_path = path.with_suffix(".json")
    if path.exists() and facts_path.exists() and not args.fresh:
        log(f"frames: cached {path}")
        images = read(path, ":")
        return dict(zip(FRAMES, images)), json.loads(facts_path.read_text())

    crystal = crystal_frame(args)
    ideal = v2o3_corundum(tuple(args.repeat))
    facts = {"rattle_rms_A": float(np.sqrt(((crystal.positions - ideal.positions) ** 2)
                                           .sum(axis=1).mean()))}
    atoms = crystal.copy()
    atoms.calc = ml_calculator("chgnet", 1, workdir)
    rng = np.random.default_rng(args.seed)
    thermalize_momenta(atoms, T_MELT, rng=rng)
    Stationary(atoms)
    dt = args.timestep_fs
    n_melt = int(round(args.melt_ps * 1000 / dt))
    n_quench = int(round(args.quench_ps * 1000 / dt))
    md = make_dynamics("langevin", atoms, dt, T_MELT, seed=args.seed,
                       friction_per_fs=args.friction)
    track = Displacements(atoms)
    md.attach(track, interval=1)
    v = atoms.numbers == 23
    t0, c0 = time.perf_counter(), time.process_time()
    log(f"frames: CHGNet Langevin MD of {len(atoms)} atoms (all mobile) at {T_MELT:.0f} K, "
        f"{n_melt} steps of {dt} fs ...")
    md.run(n_melt)
    half = n_melt // 2
    facts["melt"] = {"steps": n_melt, "msd_A2": track.msd(), "msd_last_half_A2": track.msd(half),
                     "msd_V_last_half_A2": track.msd(half, v),
                     "msd_O_last_half_A2": track.msd(half, ~v),
                     "T_mean_last_half_K": float(np.mean(track.temperatures[half:]))}
    facts["melt"]["melted"] = facts["melt"]["msd_last_half_A2"] > MELTED_MSD
    melt = atoms.copy()
    melt.wrap()

    log(f"frames: quench {T_MELT:.0f} -> {T_FINAL:.0f} K over {n_quench} steps ...")
    done = [0]

    def ramp():  # the target of the next step, linear in time
        done[0] += 1
        md.set_temperature(T_MELT + (T_FINAL - T_MELT) * min(1.0, done[0] / n_quench))

    md.attach(ramp, interval=1)
    md.run(n_quench)
    n_last = max(1, n_quench // 10)
    facts["quench"] = {"steps": n_quench,
                       "T_mean_last_tenth_K": float(np.mean(track.temperatures[-n_last:]))}
    atoms.set_momenta(np.zeros_like(atoms.positions))
    opt = FIRE(atoms, logfile=None)
    opt.run(fmax=0.05, steps=args.fire_steps)
    facts["quench"]["fire_steps"] = opt.nsteps
    facts["quench"]["fmax_after_fire"] = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    facts["md_wall_s"] = time.perf_counter() - t0
    facts["md_cpu_s"] = time.process_time() - c0
    quenched = atoms.copy()
    quenched.wrap()
    frames = {"crystal": crystal, "melt": melt, "quenched": quenched}
    for a in frames.values():
        a.calc = None
    write(path, [frames[k] for k in FRAMES])
    facts_path.write_text(json.dumps(facts, indent=1))
    return frames, facts


def frames_report(frames, facts, args):
    m, q = facts["melt"], facts["quench"]
    n = len(frames["crystal"])
    log(f"\nFrames: {n} atoms (V2O3 corundum x {tuple(args.repeat)}), seed {args.seed}; "
        f"crystal rattled {args.rattle} Å per component (RMS displacement "
        f"{facts['rattle_rms_A']:.3f} Å); CHGNet MD {facts['md_wall_s'] / 60:.1f} min wall "
        f"({facts['md_cpu_s'] / 60:.1f} min CPU)")
    log(f"melt: {m['steps']} steps of {args.timestep_fs} fs at {T_MELT:.0f} K (mean T over the "
        f"last half {m['T_mean_last_half_K']:.0f} K); MSD {m['msd_A2']:.2f} Å² over the melt, "
        f"{m['msd_last_half_A2']:.2f} Å² over its last half (V {m['msd_V_last_half_A2']:.2f}, "
        f"O {m['msd_O_last_half_A2']:.2f}): {'melted' if m['melted'] else 'NOT melted'} "
        f"(criterion > {MELTED_MSD} Å² over the last half)")
    log(f"quench: {q['steps']} steps {T_MELT:.0f} -> {T_FINAL:.0f} K (mean T over the last "
        f"tenth {q['T_mean_last_tenth_K']:.0f} K), then {q['fire_steps']} FIRE steps: max "
        f"|F| {q['fmax_after_fire']:.2f} eV/Å (CHGNet)")
    log("shortest distance: " + ", ".join(f"{k} {min_distance(a):.2f} Å"
                                          for k, a in frames.items()))
    log(f"order of the O sublattice, q̄6 (as meltquench's melt diagnostics; corundum "
        f"{Q6BAR_CORUNDUM:.3f}, superheated crystal 0.34-0.40, liquid and glass 0.11-0.16): "
        + ", ".join(f"{k} {o_order(a):.3f}" for k, a in frames.items()))


def o_order(atoms):
    """Mean q̄6 of the O atoms of ``atoms`` (O neighbours within ORDER_CUTOFF_A)."""
    oxygens = np.flatnonzero(atoms.numbers == 8)
    qbar = bond_order(atoms.positions, atoms.cell.array, atoms.pbc, oxygens, ORDER_CUTOFF_A)[0]
    return float(np.nanmean(qbar))


# ---------------------------------------------------------------------------- GPAW

def gpaw_settings(args):
    """The ``calculator`` section of the GPAW reference."""
    gpaw = {"basis": args.basis, "kpts": list(args.kpts), "electronic_temperature": "fixed",
            "occupations": {"name": "fermi-dirac", "width": args.width}}
    if args.mixer == "gpaw":
        gpaw["mixer"] = None  # GPAW's own
    if args.h is not None:
        gpaw["h"] = args.h
    gpaw.update(json.loads(args.gpaw))
    return {"name": "gpaw", "dispersion": None, "spinpol": args.spinpol, "gpaw": gpaw}


def gpaw_single_point(name, atoms, settings, workdir, fresh):
    """GPAW energy, forces, seconds and SCF iterations of ``atoms``; cached by geometry and
    settings. Runs in a worker process; an SCF that does not converge is returned as
    ``{"error": ...}``."""
    key = digest({"positions": np.round(atoms.positions, 6).tolist(),
                  "cell": np.round(atoms.cell.array, 6).tolist(),
                  "numbers": atoms.numbers.tolist(), "settings": settings})
    path = workdir / f"gpaw-{name}-{key}.json"
    if path.exists() and not fresh:
        out = json.loads(path.read_text())
        out["forces"] = np.array(out["forces"])
        out["cached"] = True
        return out
    atoms = atoms.copy()
    prepare_atoms(settings, atoms)
    atoms.calc = make_calculator(settings, directory=workdir / f"gpaw-{name}-{key}")
    try:
        energy, forces, wall, cpu = timed_call(atoms)
    except Exception as err:  # KohnShamConvergenceError: say so, keep the other frames
        return {"error": f"{type(err).__name__} {err}".strip()[:200], "cached": False}
    out = {"energy": float(energy), "forces": forces.tolist(), "wall_s": wall, "cpu_s": cpu,
           "scf_iterations": scf_iterations(atoms.calc),
           "magmom": float(atoms.calc.get_magnetic_moment()) if settings["spinpol"] else 0.0}
    path.write_text(json.dumps(out))
    out["forces"] = forces
    out["cached"] = False
    return out


# ---------------------------------------------------------------------------- accuracy

def force_errors(f, ref):
    """MAE, RMSE, largest component error of forces ``f`` against ``ref`` (eV/Å); ``slope``:
    the least-squares s of f = s ref (below 1: the model is softer), ``cos``: the cosine of
    the angle between the two 3N-vectors (1: same directions)."""
    d = (f - ref).ravel()
    a, b = f.ravel(), ref.ravel()
    return {"mae": float(np.abs(d).mean()), "rmse": float(np.sqrt((d ** 2).mean())),
            "max": float(np.abs(d).max()), "slope": float(a @ b / (b @ b)),
            "cos": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))}


def accuracy(args, workdir):
    """Frames, GPAW and both models on every frame; prints the tables, returns the numbers.

    The GPAW single points run in ``--jobs`` worker processes, the crystal's during the
    CHGNet MD that makes the other two frames; the models are timed once GPAW is done.
    """
    from meltquench.calculators import describe
    settings = gpaw_settings(args)
    log(f"Reference: {describe(settings)}, k-points {tuple(args.kpts)}, Fermi-Dirac "
        f"{args.width} eV (fixed), "
        f"{'V starting at 2 μB (ferromagnetic)' if args.spinpol else 'spin-paired'}, "
        f"{'GPAW' if args.mixer == 'gpaw' else 'meltquench'}'s mixer, no D3")
    pool = ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn"))
    started = {"crystal": time.perf_counter()}
    jobs = {"crystal": pool.submit(gpaw_single_point, "crystal", crystal_frame(args), settings,
                                   workdir, args.fresh)}
    frames, facts = make_frames(args, workdir)
    frames_report(frames, facts, args)
    for name in FRAMES[1:]:
        started[name] = time.perf_counter()
        jobs[name] = pool.submit(gpaw_single_point, name, frames[name], settings, workdir,
                                 args.fresh)
    log(f"\nGPAW single points ({args.jobs} worker process(es)) ...")
    ref = {}
    for name in FRAMES:
        ref[name] = r = jobs[name].result()
        if "error" in r:
            log(f"  {name}: no result, {r['error']}")
            continue
        log(f"  {name}: E {r['energy']:.4f} eV, {r['scf_iterations']} SCF iterations, "
            f"{r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} s CPU, magnetic moment "
            f"{r['magmom']:.2f} μB" + (" (cached)" if r["cached"] else ""))
    pool.shutdown()
    failed = [k for k in FRAMES if "error" in ref[k]]
    if "crystal" in failed:
        log("no GPAW crystal: no comparison")
        return None
    frames = {k: a for k, a in frames.items() if k not in failed}
    ours = {}
    for model in MODELS:
        calc = ml_calculator(model, 1, workdir)
        for name, atoms in frames.items():
            a = atoms.copy()
            a.calc = calc
            timed_call(a)  # warm-up, then the timed call on the same geometry, recomputed
            calc.results.clear()
            e, f, wall, cpu = timed_call(a)
            ours[model, name] = {"energy": e, "forces": f, "wall_s": wall, "cpu_s": cpu}
        del calc

    n = len(frames["crystal"])
    rows, summary = [], {m: {} for m in MODELS}
    for name in frames:
        fref = ref[name]["forces"]
        rows.append((name, "GPAW (reference)", f"{np.abs(fref).mean():.3f}",
                     f"{np.sqrt((fref ** 2).mean()):.3f}", f"{np.abs(fref).max():.3f}", "", "",
                     "", ""))
        for model in MODELS:
            err = force_errors(ours[model, name]["forces"], fref)
            summary[model][name] = err
            rows.append((name, LABEL[model], f"{err['mae']:.3f}", f"{err['rmse']:.3f}",
                         f"{err['max']:.3f}",
                         f"{np.abs(ours[model, name]['forces']).mean():.3f}",
                         f"{err['rmse'] / np.sqrt((fref ** 2).mean()):.2f}",
                         f"{err['slope']:.2f}", f"{err['cos']:.2f}"))
    log(f"\nForces on the {n}-atom frames (eV/Å). GPAW rows: mean |F|, RMS F, max |F| of the "
        "reference itself; model rows: MAE, RMSE, max component error against GPAW, the model's "
        "mean |F|, RMSE / RMS F(GPAW), slope s of F(model) = s F(GPAW) (below 1: softer) and "
        "the cosine between the two force vectors")
    table(("frame", "forces", "MAE", "RMSE", "max err", "mean |F|", "RMSE/RMS F", "slope",
           "cos"), rows)
    log("GPAW's net force |ΣF| (eV/Å; zero for exact forces: LCAO grid and basis errors): "
        + ", ".join(f"{k} {np.linalg.norm(ref[k]['forces'].sum(axis=0)):.2f}" for k in frames)
        + "\n")

    rows = []
    e_ref = {k: ref[k]["energy"] for k in frames}
    for name in list(frames)[1:]:
        d_ref = (e_ref[name] - e_ref["crystal"]) / n * 1000
        cells = [name, f"{d_ref:.1f}"]
        for model in MODELS:
            d = (ours[model, name]["energy"] - ours[model, "crystal"]["energy"]) / n * 1000
            summary[model][f"dE_{name}"] = d - d_ref
            cells += [f"{d:.1f}", f"{d - d_ref:+.1f}"]
        rows.append(tuple(cells))
    log("Energy relative to the crystal frame, E(frame) - E(crystal), meV/atom")
    table(("frame", "GPAW", LABEL["chgnet"], "CHGNet - GPAW", LABEL["sevennet"],
           "SevenNet - GPAW"), rows)

    rows = []
    for name in frames:
        r = ref[name]
        cells = [name, f"{r['scf_iterations']}", f"{r['wall_s']:.0f}", f"{r['cpu_s']:.0f}"]
        for model in MODELS:
            o = ours[model, name]
            cells += [f"{o['cpu_s']:.3f}", f"{r['cpu_s'] / o['cpu_s']:.0f}x"]
        rows.append(tuple(cells))
    log(f"Cost of one energy+forces call on the {n}-atom frames: GPAW (the reference) and the "
        "models (1 thread); ratio = GPAW CPU s / model CPU s"
        + (" (GPAW from the cache of an earlier run)" if any(ref[k]["cached"] for k in frames)
           else "") + (f"; GPAW ran in {args.jobs} processes at once" if args.jobs > 1 else ""))
    table(("frame", "GPAW SCF it.", "GPAW wall s", "GPAW CPU s", "CHGNet CPU s",
           "GPAW/CHGNet", "SevenNet CPU s", "GPAW/SevenNet"), rows)
    for model in MODELS:
        summary[model]["cpu_s_small"] = statistics.median(ours[model, k]["cpu_s"] for k in frames)
    summary["frames"] = list(frames)
    return summary


# ---------------------------------------------------------------------------- cost

def cost(args, workdir):
    """Median seconds per energy+forces call by model, size and thread count."""
    import torch
    results = {}
    for threads in args.threads:
        for model in MODELS:
            calc = ml_calculator(model, threads, workdir)
            if torch.get_num_threads() != threads:
                log(f"warning: torch runs {torch.get_num_threads()} threads, not {threads}")
            for n in args.cost_sizes:
                atoms = v2o3_corundum(COST_REPEATS[n])
                atoms.rattle(stdev=args.rattle, seed=args.seed)
                atoms.calc = calc
                rng = np.random.default_rng(args.seed)
                walls, cpus = [], []
                for k in range(args.calls + 1):  # the first is the warm-up
                    atoms.positions += rng.normal(0.0, 1e-3, atoms.positions.shape)
                    _, _, wall, cpu = timed_call(atoms)
                    if k:
                        walls.append(wall)
                        cpus.append(cpu)
                results[model, n, threads] = (statistics.median(walls), statistics.median(cpus))
                log(f"  {LABEL[model]}, {n} atoms, {threads} thread(s): "
                    f"{results[model, n, threads][0]:.2f} s wall, "
                    f"{results[model, n, threads][1]:.2f} s CPU per call")
            del calc
    rows = []
    for n in args.cost_sizes:
        for threads in args.threads:
            c, s = results["chgnet", n, threads], results["sevennet", n, threads]
            cells = [str(n), str(threads), f"{c[0]:.2f}", f"{c[1]:.2f}", f"{s[0]:.2f}",
                     f"{s[1]:.2f}", f"{s[0] / c[0]:.2f}"]
            if threads != args.threads[0]:
                t0 = args.threads[0]
                cells += [f"{results['chgnet', n, t0][0] / c[0]:.2f}",
                          f"{results['sevennet', n, t0][0] / s[0]:.2f}"]
            else:
                cells += ["1", "1"]
            rows.append(tuple(cells))
    log(f"\nCost per energy+forces call, median of {args.calls} after a warm-up (corundum "
        f"supercells rattled {args.rattle} Å); load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores at the end")
    table(("atoms", "threads", "CHGNet wall s", "CHGNet CPU s", "SevenNet wall s",
           "SevenNet CPU s", "SevenNet/CHGNet wall", f"CHGNet speed-up vs {args.threads[0]}",
           f"SevenNet speed-up vs {args.threads[0]}"), rows)
    return results


COST_REPEATS = {30: (1, 1, 1), 120: (2, 2, 1), 240: (2, 2, 2), 480: (2, 2, 4)}


# ---------------------------------------------------------------------------- verdict

#: The more accurate model must be more than this factor better in mean force RMSE ...
MARGIN = 1.10
#: ... to be recommended when it costs more than this factor per call.
COST_RATIO = 1.5


def recommend(summary, costs, args):
    """Print which model should be the default, and why."""
    lines = ["\nRecommendation:"]
    score = {}
    if summary:
        summary = dict(summary)
        for m in MODELS:
            score[m] = float(np.mean([summary[m][k]["rmse"] for k in summary["frames"]]))
        per_frame = "; ".join(
            f"{k}: " + ", ".join(f"{LABEL[m]} {summary[m][k]['rmse']:.3f}" for m in MODELS)
            for k in summary["frames"])
        lines.append(f"  force RMSE against GPAW (eV/Å), {per_frame}; mean "
                     + ", ".join(f"{LABEL[m]} {score[m]:.3f}" for m in MODELS))
        lines.append("  relative energy error (meV/atom): "
                     + "; ".join(f"{LABEL[m]} " + ", ".join(
                         f"{k} {summary[m]['dE_' + k]:+.1f}" for k in summary["frames"][1:])
                         for m in MODELS))
    speed = {}
    if costs:
        n = max(args.cost_sizes)
        t = args.threads[0]
        speed = {m: costs[m, n, t][1] for m in MODELS}
        lines.append(f"  cost at {n} atoms, {t} thread(s): "
                     + ", ".join(f"{LABEL[m]} {speed[m]:.2f} s CPU per call" for m in MODELS)
                     + f" (SevenNet/CHGNet {speed['sevennet'] / speed['chgnet']:.2f})")
    elif summary:  # no cost part: the models' CPU time per call on the frames themselves
        speed = {m: summary[m]["cpu_s_small"] for m in MODELS}
        lines.append("  cost on the frames (median CPU s per call): "
                     + ", ".join(f"{LABEL[m]} {speed[m]:.3f}" for m in MODELS)
                     + f" (SevenNet/CHGNet {speed['sevennet'] / speed['chgnet']:.2f})")
    if score:
        lines.append("  force slope against GPAW (1: as stiff as GPAW): " + "; ".join(
            f"{LABEL[m]} " + ", ".join(f"{k} {summary[m][k]['slope']:.2f}"
                                       for k in summary["frames"]) for m in MODELS))
        best, other = sorted(MODELS, key=score.get)
        frames = summary["frames"]
        wins = sum(summary[best][k]["rmse"] < summary[other][k]["rmse"] for k in frames)
        why = (f"lower force RMSE against GPAW on {wins} of {len(frames)} frames, mean "
               f"{score[best]:.3f} vs {score[other]:.3f} eV/Å "
               f"({score[other] / score[best]:.2f}x)")
        if speed and score[other] <= MARGIN * score[best] \
                and speed[best] > COST_RATIO * speed[other]:
            # a small gain in accuracy does not pay for a much longer run: the cheaper
            why = (f"{LABEL[best]}'s mean force RMSE is within {MARGIN - 1:.0%} of the other's "
                   f"({score[best]:.3f} vs {score[other]:.3f} eV/Å) and it costs "
                   f"{speed[best] / speed[other]:.2f}x the CPU time per call (more than "
                   f"{COST_RATIO}x): the cheaper")
            best, other = other, best
        elif speed:
            why += f"; it costs {speed[best] / speed[other]:.2f}x the other's CPU time per call"
        lines.append(f"  default: {LABEL[best]} ({best}): {why}")
    elif speed:
        best = min(MODELS, key=speed.get)
        lines.append(f"  (no accuracy part run) cheaper: {LABEL[best]}")
    log("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="what to run: accuracy (frames, GPAW, models) and/or cost (default both)")
    p.add_argument("--repeat", type=int, nargs=3, default=[1, 1, 1],
                   help="repeat of the 30-atom hexagonal corundum cell for the frames")
    p.add_argument("--rattle", type=float, default=0.025,
                   help="crystal rattle: Gaussian σ per component (Å); 0.025 gives an RMS "
                   "displacement of about 0.04 Å")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--melt-ps", type=float, default=1.0, help="CHGNet MD at 4000 K (ps)")
    p.add_argument("--quench-ps", type=float, default=2.0, help="linear quench to 300 K (ps)")
    p.add_argument("--timestep-fs", type=float, default=2.0)
    p.add_argument("--friction", type=float, default=0.02, help="Langevin friction (1/fs)")
    p.add_argument("--fire-steps", type=int, default=20, help="FIRE steps after the quench")
    p.add_argument("--basis", default="sz(dzp)", help="GPAW LCAO basis: sz(dzp), the "
                   "engine's default; dzp, the paper presets', costs about 3x per SCF iteration")
    p.add_argument("--kpts", type=int, nargs=3, default=[1, 1, 1], help="GPAW k-points")
    p.add_argument("--h", type=float, default=None, help="GPAW grid spacing (Å; default GPAW's)")
    p.add_argument("--width", type=float, default=0.05,
                   help="Fermi-Dirac width (eV), fixed for every frame (the engine's cold width)")
    p.add_argument("--no-spinpol", dest="spinpol", action="store_false",
                   help="spin-paired GPAW (the engine's default) instead of spin-polarised")
    p.add_argument("--mixer", choices=["gpaw", "md-pulay"], default="gpaw",
                   help="density mixer of the reference: GPAW's own (default) or meltquench's "
                   "MD mixer (tuned for the hot melt; slow on these cold single points)")
    p.add_argument("--jobs", type=int, default=2, help="GPAW single points at once (processes)")
    p.add_argument("--gpaw", default="{}", help="JSON overriding the GPAW settings, e.g. "
                   "'{\"mixer\": null}'")
    p.add_argument("--cost-sizes", type=int, nargs="+", default=[120, 240],
                   choices=sorted(COST_REPEATS))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--calls", type=int, default=3, help="timed calls per case (after a warm-up)")
    p.add_argument("--work", default=None, help="cache folder for the frames and GPAW results "
                   "(default: meltquench-bench-ml in the temporary folder)")
    p.add_argument("--fresh", action="store_true", help="ignore the cache")
    args = p.parse_args(argv)
    workdir = Path(args.work or Path(tempfile.gettempdir()) / "meltquench-bench-ml")
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; cache {workdir}")
    summary = costs = None
    if "accuracy" in args.parts:
        summary = accuracy(args, workdir)
    if "cost" in args.parts:
        log("\nCost ...")
        costs = cost(args, workdir)
    recommend(summary, costs, args)
    log(f"\ntotal {(time.perf_counter() - start) / 60:.1f} min wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
