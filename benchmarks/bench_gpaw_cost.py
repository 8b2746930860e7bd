"""Where GPAW's time goes per MD step of the paper's model, by size: the measured cost model.

    python benchmarks/bench_gpaw_cost.py                          # dzp, 30-240 atoms
    python benchmarks/bench_gpaw_cost.py --basis "sz(dzp)" --sizes 30 60 120
    python benchmarks/bench_gpaw_cost.py --sizes 30 60 --validate 60   # + real MD steps
    mpirun -np 2 python benchmarks/bench_gpaw_cost.py --sizes 120     # the same on 2 ranks
    python benchmarks/bench_gpaw_cost.py --sizes 240 --iterations 1 --profile   # + where it went
    mpirun -np 2 python benchmarks/bench_gpaw_cost.py --sizes 240 --set "calculator.gpaw.parallel={band: 2}"

For each size (corundum supercells of the ``paper-perfect`` preset: 30 atoms (1,1,1), 60
(1,1,2), 120 (2,2,1), 240 (2,2,2); crystal half fixed as in the run) it times, with
:func:`meltquench.calibrate.time_gpaw_scf` (what ``meltquench run --calibrate`` does), the
preset's GPAW calculator (LCAO, PBE+U 3.25 eV on V d, Γ point, the engine's mixer and
criteria, the smearing of 4000 K) on the ranks it is started on: set-up, one SCF iteration,
forces, moving the atoms. It prints them with the MD step they imply at the engine's median of
12.5 SCF iterations per step and fits a power law t = a N^k to each part over the sizes.

``--validate N``: for the sizes up to N atoms, also runs the engine itself (``meltquench``'s
driver, Bussi at 4000 K, 3 MD steps of 2 fs from the crystal at 4000 K velocities) and
compares each step's measured seconds (``md.log``) with ``move + n * iteration + forces`` at
the step's own SCF iteration count n. That checks the model's form; what remains uncertain in
an estimate is n. Wall seconds on a shared machine: quote the ratios.

``--profile``: also prints, per size and per rank, where those seconds went: Python's profiler
(cProfile) over the whole timing, the functions with the most time of their own (GPAW's C
kernels, BLAS/LAPACK calls through numpy/scipy, MPI calls), with the number of calls. Under
mpirun, a rank that waits for another shows the wait in the MPI call it waits in.
"""
import argparse
import contextlib
import cProfile
import io
import os
import pstats
import tempfile
from pathlib import Path

import numpy as np

from meltquench import driver
from meltquench.calibrate import ITERATIONS_PER_STEP, time_gpaw_scf
from meltquench.config import load_config
from meltquench.kernels.parallel import get_comm
from meltquench.model import build_model
from meltquench.observers import read_md_log

REPEATS = {30: "[1,1,1]", 60: "[1,1,2]", 120: "[2,2,1]", 240: "[2,2,2]"}


def config(size, basis, *extra):
    return load_config(preset="paper-perfect", overrides=[
        f"structure.repeat={REPEATS[size]}", f"calculator.gpaw.basis={basis}", *extra])


def power_law(sizes, seconds):
    """(a, k) of t = a N^k, least squares in log-log (None with fewer than 2 sizes)."""
    if len(sizes) < 2:
        return None
    k, c = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(np.exp(c)), float(k)


def validate(size, basis, comm, say, overrides=()):
    """Measured against modelled seconds of 3 engine MD steps at ``size`` atoms."""
    cfg = config(size, basis, *overrides, "schedule.T_start_K=4000", "schedule.T_melt_K=4000",
                 "schedule.T_final_K=4000", "schedule.heat_ps=0.006", "schedule.melt_ps=0",
                 "schedule.quench_ps=0", "schedule.final_ps=0", "dynamics.thermostat=bussi",
                 "dynamics.final_relax=null", "analysis.enabled=false",
                 "output.progress=none", "output.extxyz=false")
    timing = time_gpaw_scf(cfg.calculator, build_model(cfg), 4000.0, comm=comm)
    folder = tempfile.mkdtemp(prefix="bench-gpaw-cost-") if comm.Get_rank() == 0 else None
    folder = comm.bcast(folder, root=0) if comm.Get_size() > 1 else folder
    driver.run(cfg, run_dir=Path(folder) / "run", comm=comm, stream=open(os.devnull, "w"))
    log = read_md_log(Path(folder) / "run" / "md.log")
    for step, n, seconds in zip(log["step"][1:], log["scf_iter"][1:], log["s_per_step"][1:]):
        step, n, seconds = int(step), int(n), float(seconds)
        model = timing.move_s + n * timing.iteration_s + timing.forces_s
        first = " (from scratch: + set-up)" if step == 1 else ""
        if step == 1:
            model += timing.setup_s
        say(f"  {size:4d} atoms, step {step}: {n:3d} SCF iterations, measured "
            f"{seconds:7.1f} s, model {model:7.1f} s, measured/model {seconds / model:.2f}{first}")


@contextlib.contextmanager
def profiled(enabled, comm, top=25):
    """Profile the block with cProfile; when it ends, the list it yields holds (on rank 0) one
    table per rank of the ``top`` functions by own time (empty when not ``enabled``)."""
    texts = []
    if not enabled:
        yield texts
        return
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield texts
    finally:
        profile.disable()
    buffer = io.StringIO()
    stats = pstats.Stats(profile, stream=buffer)
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    buffer.write(f"{'own s':>9} {'share':>6} {'calls':>8}  function\n")
    for (filename, line, name), (_, calls, own, _, _) in rows:
        where = name if filename == "~" else f"{Path(filename).name}:{line}({name})"
        buffer.write(f"{own:9.2f} {100 * own / total:5.1f}% {calls:8d}  {where}\n")
    buffer.write(f"{total:9.2f} 100.0%           in all\n")
    text = buffer.getvalue()
    texts.extend((comm.gather(text, root=0) or []) if comm.Get_size() > 1 else [text])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--sizes", type=int, nargs="+", default=[30, 60, 120, 240],
                   choices=sorted(REPEATS))
    p.add_argument("--basis", default="dzp", help="LCAO basis (the paper presets': dzp)")
    p.add_argument("--iterations", type=int, default=2, help="SCF iterations timed per size")
    p.add_argument("--validate", type=int, default=0, metavar="N",
                   help="also run 3 engine MD steps at every size up to N atoms")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override on top of paper-perfect's, as for meltquench run "
                        "(e.g. \"calculator.gpaw.parallel={band: 2}\"); repeatable")
    p.add_argument("--profile", action="store_true",
                   help="also print, per size and rank, the functions that took the time "
                        "(cProfile)")
    args = p.parse_args(argv)
    comm = get_comm()

    def say(text):
        if comm.Get_rank() == 0:
            print(text, flush=True)

    say(f"GPAW cost per part, LCAO {args.basis}, PBE+U, paper-perfect's settings"
        + "".join(f", {o}" for o in args.set)
        + f", {comm.Get_size()} rank(s), load average {os.getloadavg()[0]:.1f}")
    say(f"{'atoms':>5}  {'set-up s':>8}  {'iteration s':>11}  {'forces s':>8}  {'move s':>6}  "
        f"{'MD step s':>9}  (at {ITERATIONS_PER_STEP:g} iterations)")
    timings = []
    for size in args.sizes:
        cfg = config(size, args.basis, *args.set)
        with profiled(args.profile, comm) as profile:
            t = time_gpaw_scf(cfg.calculator, build_model(cfg), 4000.0, comm=comm,
                              iterations=args.iterations)
        timings.append(t)
        say(f"{size:5d}  {t.setup_s:8.1f}  {t.iteration_s:11.2f}  {t.forces_s:8.2f}  "
            f"{t.move_s:6.2f}  {t.step_s():9.1f}")
        for rank, text in enumerate(profile):
            say(f"Where the time went, {size} atoms, rank {rank} of {comm.Get_size()} (set-up, "
                f"{args.iterations + 2} SCF iterations, forces; functions by own time):\n{text}")
    sizes = [t.atoms for t in timings]
    for part in ("setup_s", "iteration_s", "forces_s", "move_s"):
        law = power_law(sizes, [max(getattr(t, part), 1e-3) for t in timings])
        if law:
            say(f"  {part[:-2]:9s} ~ {law[0]:.3g} N^{law[1]:.2f} s")
    law = power_law(sizes, [t.step_s() for t in timings])
    if law:
        say(f"  MD step   ~ {law[0]:.3g} N^{law[1]:.2f} s")
    say("plan.MEASURED entry: " + repr([(t.atoms, round(t.step_s(), 1)) for t in timings]))
    if args.validate:
        say("\nEngine MD steps against the model (move + n x iteration + forces):")
        for size in args.sizes:
            if size <= args.validate:
                validate(size, args.basis, comm, say, args.set)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
