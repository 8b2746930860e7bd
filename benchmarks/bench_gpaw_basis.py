"""GPAW LCAO basis and grid spacing against plane waves (450 eV): force error against cost.

    OMP_NUM_THREADS=1 python benchmarks/bench_gpaw_basis.py -o /work/bench/basis
    OMP_NUM_THREADS=1 python benchmarks/bench_gpaw_basis.py --quick -o /tmp/basis-quick
    python benchmarks/bench_gpaw_basis.py -o out --bases 'sz(dzp),dzp' --spacings 0.2
    python benchmarks/bench_gpaw_basis.py -o out --frames-only crystal,melt
    python benchmarks/bench_gpaw_basis.py -o out2 --frames out/frames.traj   # same frames
    python benchmarks/bench_gpaw_basis.py -o out --table-only   # the table of what is done

Frames: rhombohedral V2O3 x (1, 1, 4) (40 atoms; x (1, 1, 2), 20 atoms, with ``--quick``) split
along c with the crystal half fixed, as ``bench_gpaw_scf.py`` builds it:

- *crystal*: the ideal positions;
- *melt*: ``bench_gpaw_scf.hot_cell``'s state (the mobile half brought to 4000 K by 300 Bussi
  steps of the fast pair potential), positions only;
- *quenched*: that melt quenched with the same pair potential: Bussi NVT with the target
  lowered linearly from 4000 K to 300 K over ``--quench-ps`` (1 ps), then FIRE on the mobile
  half (at most 200 steps, fmax 0.05 eV/Å). Why not the local optimisation alone: the
  optimisation alone gives the melt's inherent structure, the 4000 K topology frozen in; the
  short ramp first lets the local order relax a little as a real quench does, and the FIRE
  then removes the thermal displacements, so the frame stands for the end of a quench (small
  forces, so the errors are compared with small forces). Why the pair potential: it is free;
  the frame only has to be a plausible disordered cold geometry, not a DFT minimum.

The frames are written to ``OUT/frames.traj`` (crystal, melt, quenched; tags and the FixAtoms
constraint kept), and ``--frames FILE`` reads them back instead of building them.

Reference on each frame: GPAW plane waves, 450 eV (the paper's cutoff), PBE, U_eff 3.25 eV on
V d (the engine's ``hubbard_u``, GPAW ``setups={'V': ':d,3.25'}``), Γ point, spin-paired,
symmetry off, Fermi-Dirac at the width the engine gives the frame's temperature
(max(k_B T, 0.05 eV): melt 0.345 eV at 4000 K, crystal and quenched 0.05 eV at 300 K), fixed.
Variants: GPAW LCAO, each basis of ``--bases`` x each grid spacing of ``--spacings``; everything
else as the reference. All rows share one SCF set-up: GPAW's own mixer (the engine's MD mixer
is tuned for MD steps, and stalls on cold single points, ``bench_ml.py``), criteria energy 1e-6
eV and density 1e-5 per valence electron, eigenstates 4e-8 eV², forces converged to 1e-3 eV/Å
(GPAW checks them once the rest is met), maxiter ``--maxiter``; no density extrapolation, no
stagnation stop. No D3: it is the same additive term for every row. The cold frames (0.05
eV) are first converged at the melt's 0.345 eV and then continued at 0.05 eV in the same
calculator, as the engine's quench does: from scratch at 0.05 eV GPAW's SCF of this PBE+U
oxide ends in different d-occupation solutions, eV apart (20-atom crystal: -135.51, -134.18
and -136.57 eV). With ``--retry-mixer`` an SCF that does not converge is retried once with a
conservative mixer (Pulay, beta 0.05, 5 densities, weight 50; column "retry"); a row whose
SCF failed says so.

Per variant and frame: RMS, mean and max |F - F_ref| (eV/Å, per atom) over the mobile atoms and
RMS over the fixed ones (the raw forces, FixAtoms not applied), |ΣF| (eV/Å: zero for exact
forces; the egg-box effect of the grid and the basis' incompleteness move it), the error of
E(melt) - E(crystal) and E(quenched) - E(crystal) per atom against the reference's (meV/atom;
free energies, the ones the forces belong to; the JSON also has the energies extrapolated to
zero width), the SCF iterations, seconds per iteration and for the whole single point (wall,
from calculator creation to forces), and the cost relative to the engine's default, sz(dzp)
at h 0.20 Å, on the same frame in the same process (a ratio: the machine is shared). Seconds
per iteration include the force evaluations of the force criterion and the set-up, divided
over the iterations.

Everything lands in ``OUT/results.json`` after each single point; a (frame, settings) pair
already there with the same settings is not run again, so a killed run continues (a failed
one neither, unless ``--retry-failed``). GPAW's text
output goes to ``OUT/gpaw/FRAME-LABEL.txt``. The order of the work puts the most informative
rows first: the references and every basis at h 0.20 on every frame, then the other spacings
of sz(dzp) and dzp, then the rest.
"""
import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from ase import units  # noqa: E402
from ase.io import read, write  # noqa: E402
from ase.md.bussi import Bussi  # noqa: E402
from ase.optimize import FIRE  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpaw_scf import hot_cell, mobile_temperature  # noqa: E402

from meltquench.calculators import (GPAWSettings, PairPotential, make_gpaw,  # noqa: E402
                                    scf_iterations, set_smearing_width)
from meltquench.structures import min_distance, split_regions, v2o3_rhombohedral  # noqa: E402

FRAMES = ("crystal", "melt", "quenched")
T_MELT, T_COLD = 4000.0, 300.0  # K
FRAME_T = {"crystal": T_COLD, "melt": T_MELT, "quenched": T_COLD}
DEFAULT = ("sz(dzp)", 0.20)  # the engine's: basis sz(dzp), GPAW's default grid 0.2 Å
REFERENCE = "PW 450 eV"
CONVERGENCE = {"energy": 1e-6, "density": 1e-5, "eigenstates": 4e-8, "forces": 1e-3}
ENGINE_CONVERGENCE = {"energy": 0.0005, "density": 1e-4, "eigenstates": 4e-8}
ANNEAL_WIDTH = float(units.kB * T_MELT)  # 0.345 eV, the melt's width: one SCF solution there
CONSERVATIVE_MIXER = {"backend": "pulay", "beta": 0.05, "nmaxold": 5, "weight": 50.0}


def log(text):
    print(text, flush=True)


# ---------------------------------------------------------------------------- frames

def quench(melt, ps, seed=11):
    """The melt quenched with the pair potential: Bussi NVT, target 4000 -> 300 K linearly
    over ``ps``, then FIRE on the mobile half (fixed atoms held by the FixAtoms of the cell)."""
    atoms = melt.copy()
    atoms.set_momenta(melt.get_momenta())
    atoms.calc = PairPotential()
    md = Bussi(atoms, 2 * units.fs, temperature_K=T_MELT, taut=20 * units.fs,
               rng=np.random.default_rng(seed))
    n = max(1, int(round(ps * 1000 / 2)))
    done = [0]

    def ramp():
        done[0] += 1
        target = T_MELT + (T_COLD - T_MELT) * min(1.0, done[0] / n)
        md.temp = target * units.kB  # ASE 3.29's Bussi has no set_temperature
        md.target_kinetic_energy = 0.5 * md.temp * md.ndof

    md.attach(ramp, interval=1)
    md.run(n)
    t_end = mobile_temperature(atoms)
    atoms.set_momenta(np.zeros_like(atoms.positions))
    opt = FIRE(atoms, logfile=None)
    opt.run(fmax=0.05, steps=200)
    fmax = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    atoms.calc = None
    return atoms, {"quench_steps": n, "T_end_K": round(t_end), "fire_steps": opt.nsteps,
                   "pair_fmax_after_fire": round(fmax, 3)}


def build_frames(nz, quench_ps):
    crystal = v2o3_rhombohedral((1, 1, nz))
    split_regions(crystal)
    melt = hot_cell(nz)
    facts = {"melt_T_K": round(mobile_temperature(melt))}
    quenched, qfacts = quench(melt, quench_ps)
    facts.update(qfacts)
    melt = melt.copy()  # positions only
    melt.set_momenta(np.zeros_like(melt.positions))
    return {"crystal": crystal, "melt": melt, "quenched": quenched}, facts


def mobile_mask(atoms):
    return atoms.get_tags() == 2


# ---------------------------------------------------------------------------- GPAW

def settings_for(frame, basis, h, ecut, maxiter, mixer=None):
    """GPAWSettings of one row on ``frame``: PW ``ecut`` when ``basis`` is None, else LCAO."""
    width = GPAWSettings().smearing_width(FRAME_T[frame])
    common = {"xc": "PBE", "hubbard_u": {"V": 3.25}, "kpts": [1, 1, 1], "spinpol": False,
              "mixer": mixer, "occupations": {"name": "fermi-dirac", "width": width},
              "electronic_temperature": "fixed", "convergence": dict(CONVERGENCE),
              "maxiter": maxiter, "scf_stagnation": 0, "extrapolation": 0}
    if basis is None:
        return GPAWSettings.from_dict({**common, "mode": "pw", "ecut": ecut, "basis": None})
    return GPAWSettings.from_dict({**common, "mode": "lcao", "basis": basis, "h": h})


def label_of(basis, h, ecut):
    return f"PW {ecut:g} eV" if basis is None else f"{basis} h{h:.2f}"


def single_point(atoms, settings, txt_dir, name):
    """Energies, raw forces, SCF iterations and seconds of one GPAW single point.

    Below the melt's width (the cold frames) the SCF is annealed: first converged at
    ANNEAL_WIDTH to the engine's criteria, then the same calculator is continued at the
    frame's width to CONVERGENCE (the engine does the same when the width follows the
    temperature down a quench). From scratch at 0.05 eV GPAW's SCF of this PBE+U oxide wanders
    between d-occupation solutions up to 2.6 eV apart on 20 atoms (see the README)."""
    from gpaw.new.scf import create_convergence_criteria
    a = atoms.copy()
    width = settings.occupations["width"]
    anneal = width < 0.99 * ANNEAL_WIDTH
    t0, c0 = time.perf_counter(), time.process_time()
    first = replace(settings, occupations={**settings.occupations, "width": ANNEAL_WIDTH},
                    convergence=dict(ENGINE_CONVERGENCE)) if anneal else settings
    a.calc = calc = make_gpaw(first, directory=txt_dir)
    out = {}
    if anneal:
        out["anneal_free_energy"] = float(a.get_potential_energy(force_consistent=True))
        out["anneal_iterations"] = scf_iterations(calc)
        out["anneal_s"] = round(time.perf_counter() - t0, 2)
        set_smearing_width(calc, width)
        loop = calc.dft.scf_loop
        loop.convergence = create_convergence_criteria(dict(settings.convergence))
        loop.maxiter = settings.maxiter
        calc.dft.results.clear()
        calc.results.clear()
    free = a.get_potential_energy(force_consistent=True)
    energy = a.get_potential_energy()
    forces = a.get_forces(apply_constraint=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out.update({"free_energy": float(free), "energy": float(energy),
                "forces": np.asarray(forces).tolist(), "iterations": scf_iterations(calc),
                "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)})
    try:
        out["grid"] = [int(n) for n in calc.dft.density.nt_sR.desc.size]
    except Exception:
        pass
    return out


def run_one(atoms, frame, basis, h, args, outdir):
    """One (frame, settings) single point with one retry on SCF failure (conservative mixer)."""
    label = label_of(basis, h, args.ecut)
    result = {"frame": frame, "label": label, "basis": basis, "h": h,
              "width_eV": GPAWSettings().smearing_width(FRAME_T[frame]), "attempts": []}
    mixers = (None, CONSERVATIVE_MIXER) if args.retry_mixer else (None,)
    for attempt, mixer in enumerate(mixers):
        settings = settings_for(frame, basis, h, args.ecut, args.maxiter, mixer)
        txt_dir = outdir / "gpaw" / f"{frame}-{label.replace(' ', '_')}" / f"try{attempt}"
        log(f"  start {frame:8s} {label:16s} mixer {'GPAW default' if mixer is None else mixer}"
            f" ({time.strftime('%H:%M:%S')}; GPAW text {txt_dir / 'gpaw.txt'})")
        t0 = time.perf_counter()
        try:
            out = single_point(atoms, settings, txt_dir, frame)
        except Exception as err:  # KohnShamConvergenceError and the like: said in the table
            msg = f"{type(err).__name__}: {err}".strip()[:300]
            result["attempts"].append({"mixer": mixer, "error": msg,
                                       "wall_s": round(time.perf_counter() - t0, 1)})
            log(f"  FAILED  {frame:8s} {label:16s} after {time.perf_counter() - t0:.0f} s: {msg}")
            continue
        result.update(out)
        result["retry"] = attempt > 0
        result["mixer"] = mixer
        return result
    result["error"] = result["attempts"][-1]["error"]
    return result


# ---------------------------------------------------------------------------- analysis

def errors(result, ref, mobile):
    f, fr = np.asarray(result["forces"]), np.asarray(ref["forces"])
    d = np.linalg.norm(f - fr, axis=1)
    out = {"rms": float(np.sqrt((d[mobile] ** 2).mean())), "mae": float(d[mobile].mean()),
           "max": float(d[mobile].max()),
           "net_force": float(np.linalg.norm(f.sum(axis=0)))}
    if (~mobile).any():
        out["rms_fixed"] = float(np.sqrt((d[~mobile] ** 2).mean()))
    return out


def relative_energy(results, frame, label, n, key="free_energy"):
    """E(frame) - E(crystal) per atom (meV) of row ``label``, or None."""
    a, c = results.get(f"{frame}|{label}"), results.get(f"crystal|{label}")
    if not a or not c or "error" in a or "error" in c:
        return None
    return (a[key] - c[key]) / n * 1000


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def tables(results, frames, labels, ref_label, default_label, n_atoms, n_mobile):
    """Markdown tables (text) of what ``results`` holds; also the summary dict."""
    lines = [f"Reference rows: {ref_label}, {n_atoms} atoms ({n_mobile} mobile); |F| of the "
             "reference over the mobile atoms (eV/Å)", "",
             "| frame | width eV | SCF it. | SCF s | RMS |F| | max |F| | |ΣF| | E_free eV |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for frame, atoms in frames.items():
        r = results.get(f"{frame}|{ref_label}")
        if not r:
            lines.append(f"| {frame} | | not run | | | | | |")
            continue
        if "error" in r:
            lines.append(f"| {frame} | {r['width_eV']:.3f} | FAILED: {r['error'][:80]} | | | | | |")
            continue
        m = mobile_mask(atoms)
        f = np.linalg.norm(np.asarray(r["forces"]), axis=1)[m]
        lines.append(f"| {frame} | {r['width_eV']:.3f} | {r['iterations']}"
                     f"{' (retry)' if r.get('retry') else ''} | {r['wall_s']:.0f} | "
                     f"{np.sqrt((f ** 2).mean()):.3f} | {f.max():.3f} | "
                     f"{np.linalg.norm(np.asarray(r['forces']).sum(axis=0)):.3f} | "
                     f"{r['free_energy']:.3f} |")
    for frame in ("melt", "quenched"):
        d = relative_energy(results, frame, ref_label, n_atoms)
        if d is not None:
            lines.append(f"\nReference E({frame}) - E(crystal): {d:.1f} meV/atom (free energies)")
    lines += ["", f"LCAO against {ref_label} (forces: |F - F_ref| per atom, eV/Å, mobile atoms "
              "unless stated; dE: error of E(frame) - E(crystal) per atom against the "
              f"reference's, meV/atom; cost: SCF seconds / those of {default_label} on the same "
              "frame)", "",
              "| frame | LCAO | RMS | mean | max | RMS fixed | |ΣF| | dE meV/at | SCF it. | "
              "s/it. | SCF s | cost vs default | s/it. vs default |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
              "| ---: |"]
    summary = {}
    for frame, atoms in frames.items():
        ref = results.get(f"{frame}|{ref_label}")
        default = results.get(f"{frame}|{default_label}")
        m = mobile_mask(atoms)
        for label in labels:
            r = results.get(f"{frame}|{label}")
            if r is None:
                lines.append(f"| {frame} | {label} | not run | | | | | | | | | | |")
                continue
            if "error" in r:
                lines.append(f"| {frame} | {label} | FAILED (SCF): {r['error'][:80]} "
                             "| | | | | | | | | | |")
                continue
            e = errors(r, ref, m) if ref and "error" not in ref else {}
            de = None
            if frame != "crystal":
                d, dref = (relative_energy(results, frame, label, n_atoms),
                           relative_energy(results, frame, ref_label, n_atoms))
                de = None if d is None or dref is None else d - dref
            spi = r["wall_s"] / r["iterations"] if r.get("iterations") else None
            ok_default = default and "error" not in default
            cost = r["wall_s"] / default["wall_s"] if ok_default else None
            spi_ratio = (spi / (default["wall_s"] / default["iterations"])
                         if ok_default and spi else None)
            summary[f"{frame}|{label}"] = {**e, "dE_meV_per_atom": de, "s_per_iteration": spi,
                                           "cost_vs_default": cost,
                                           "s_per_iteration_vs_default": spi_ratio}
            lines.append(
                f"| {frame} | {label} | {fmt(e.get('rms'), '.3f')} | {fmt(e.get('mae'), '.3f')} "
                f"| {fmt(e.get('max'), '.3f')} | {fmt(e.get('rms_fixed'), '.3f')} | "
                f"{fmt(e.get('net_force'), '.3f')} | {fmt(de, '+.1f')} | {r['iterations']}"
                f"{' (retry)' if r.get('retry') else ''} | {fmt(spi, '.2f')} | "
                f"{r['wall_s']:.0f} | {fmt(cost, '.2f')} | {fmt(spi_ratio, '.2f')} |")
    return "\n".join(lines), summary


# ---------------------------------------------------------------------------- main

def work_order(frames, bases, spacings):
    """(frame, basis, h) in priority order; basis None is the PW reference. Frame by frame
    (melt, crystal, quenched): the reference and every basis at h 0.20; then the other
    spacings of sz(dzp) and dzp on every frame; then the rest."""
    frames = sorted(frames, key=("melt", "crystal", "quenched").index)
    order = []
    for f in frames:
        order += [(f, None, None)] + [(f, b, 0.20) for b in bases if 0.20 in spacings]
    for b in [b for b in bases if b in ("sz(dzp)", "dzp")] + [b for b in bases
                                                             if b not in ("sz(dzp)", "dzp")]:
        order += [(f, b, h) for h in spacings if h != 0.20 for f in frames]
    seen, out = set(), []
    for item in order:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("-o", "--out", default="bench-gpaw-basis", help="output folder")
    p.add_argument("--bases", default="sz(dzp),szp(dzp),dzp", help="comma-separated LCAO bases")
    p.add_argument("--spacings", default="0.25,0.20,0.15", help="comma-separated h (Å)")
    p.add_argument("--frames-only", default=",".join(FRAMES),
                   help="comma-separated subset of crystal,melt,quenched")
    p.add_argument("--frames", default=None, help="read the frames from this trajectory "
                   "(crystal, melt, quenched, as written to OUT/frames.traj)")
    p.add_argument("--ecut", type=float, default=450.0, help="reference PW cutoff (eV)")
    p.add_argument("--maxiter", type=int, default=300, help="SCF iterations before giving up")
    p.add_argument("--quench-ps", type=float, default=1.0, help="pair-potential quench ramp (ps)")
    p.add_argument("--quick", action="store_true",
                   help="20-atom cell, two variants (sz(dzp) and dzp at h 0.20)")
    p.add_argument("--retry-mixer", action="store_true",
                   help="after an SCF failure, try once more with the conservative Pulay mixer")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the single points that failed in OUT/results.json")
    p.add_argument("--table-only", action="store_true",
                   help="print the tables of OUT/results.json, run nothing")
    args = p.parse_args(argv)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    bases = [b.strip() for b in args.bases.split(",") if b.strip()]
    spacings = [round(float(h), 3) for h in args.spacings.split(",")]
    if args.quick:
        bases, spacings = ["sz(dzp)", "dzp"], [0.20]
    only = [f.strip() for f in args.frames_only.split(",")]
    if "crystal" not in only:
        log("note: without the crystal frame there are no relative energies")
    nz = 2 if args.quick else 4
    started = time.perf_counter()
    log(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; output {outdir}")

    traj = Path(args.frames) if args.frames else outdir / "frames.traj"
    facts_path = outdir / "frames.json"
    if traj.exists():
        images = read(traj, ":")
        frames = dict(zip(FRAMES, images))
        facts = json.loads(facts_path.read_text()) if facts_path.exists() else {}
        log(f"frames: read {traj}")
    else:
        frames, facts = build_frames(nz, args.quench_ps)
        write(traj, [frames[k] for k in FRAMES])
        facts_path.write_text(json.dumps(facts, indent=1))
        log(f"frames: built and written to {traj}")
    n_atoms = len(frames["crystal"])
    n_mobile = int(mobile_mask(frames["crystal"]).sum())
    log(f"frames: {n_atoms} atoms ({n_mobile} mobile); {facts}; shortest distance "
        + ", ".join(f"{k} {min_distance(a):.2f} Å" for k, a in frames.items()))
    frames = {k: v for k, v in frames.items() if k in only}

    results_path = outdir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    ref_label = label_of(None, None, args.ecut)
    default_label = label_of(*DEFAULT, args.ecut)
    labels = [label_of(b, h, args.ecut) for b in bases for h in spacings]
    if default_label not in labels:
        log(f"note: {default_label} (the cost baseline) is not among the variants")

    order = work_order(list(frames), bases, spacings)
    if not args.table_only:
        for i, (frame, basis, h) in enumerate(order, 1):
            label = label_of(basis, h, args.ecut)
            key = f"{frame}|{label}"
            want = settings_for(frame, basis, h, args.ecut, args.maxiter).to_dict()
            old = results.get(key)
            if (old and old.get("settings") == want
                    and not ("error" in old and args.retry_failed)):
                log(f"[{i}/{len(order)}] {key}: done before"
                    f"{' (failed)' if 'error' in old else ''}, skipped")
                continue
            log(f"[{i}/{len(order)}] {key} (elapsed {(time.perf_counter() - started) / 60:.1f} "
                f"min, load {os.getloadavg()[0]:.2f})")
            r = run_one(frames[frame], frame, basis, h, args, outdir)
            r["settings"] = want
            r["load_average"] = round(os.getloadavg()[0], 2)
            results[key] = r
            results_path.write_text(json.dumps(results, indent=1))
            if "error" in r:
                log(f"[{i}/{len(order)}] {key}: FAILED ({r['error'][:120]})")
            else:
                ref = results.get(f"{frame}|{ref_label}")
                extra = ""
                if basis is not None and ref and "error" not in ref:
                    e = errors(r, ref, mobile_mask(frames[frame]))
                    extra = f", |dF| RMS {e['rms']:.3f} max {e['max']:.3f} eV/Å"
                log(f"[{i}/{len(order)}] {key}: {r['iterations']} SCF iterations, "
                    f"{r['wall_s']:.0f} s ({r['wall_s'] / max(1, r['iterations']):.2f} s/it.)"
                    f"{' after a retry' if r['retry'] else ''}, E_free {r['free_energy']:.4f} eV"
                    f"{extra}")

    text, summary = tables(results, frames, labels, ref_label, default_label, n_atoms, n_mobile)
    log("\n" + text)
    (outdir / "summary.json").write_text(json.dumps(
        {"frames": facts, "n_atoms": n_atoms, "n_mobile": n_mobile, "reference": ref_label,
         "default": default_label, "rows": summary}, indent=1))
    (outdir / "table.md").write_text(text + "\n")
    log(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min wall; results in {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
