"""The plan of a run before it runs: model, regions, calculators, programme and cost.

:func:`plan_lines` is what every run prints at its start and :func:`dry_run` what
``meltquench run --dry-run`` prints. The cost of a step is a power law in the number of atoms N,
``s(N) = s_ref (N / N_ref)^k``, fitted (least squares in log-log) to the step times of
:data:`MEASURED`, on the 2-core development machine; with one measured size,
:data:`DEFAULT_EXPONENT` is used. On several MPI ranks a GPAW step is divided by Amdahl's
speed-up with the serial share measured at 240 atoms on 2 ranks for the run's layout
(:data:`GPAW_SERIAL_SHARE`, :func:`mpi_speedup`); the other calculators do not divide. Each
part of the run (the programme, the finish's anneal, the final optimisation) is costed with its
own calculator; a GPAW single point from scratch counts :data:`~meltquench.calibrate.COLD_ITERATIONS` SCF iterations instead
of an MD step's 12.5. ``--calibrate`` replaces the power law of a GPAW calculator by its timing
on the run's own model and ranks (:mod:`meltquench.calibrate`). Treat either as an order of
magnitude: what it cannot know is how many SCF iterations each step will need.
"""

import numpy as np

from . import calculators
from .calibrate import (COLD_ITERATIONS, FORCES_ITERATIONS, ITERATIONS_PER_STEP,
                        time_gpaw_scf)
from .config import load_config
from .errors import UserError
from .kernels.parallel import get_comm
from .model import build_model, composition_text
from .structures import format_region_report

#: Wall seconds per MD step (energy and forces once) measured on one core of the 2-core
#: development machine (shared, so indicative), as [(atoms, seconds), ...] per engine.
#: GPAW sz(dzp): ``python benchmarks/bench_gpaw_scf.py --steps 10 --only ours`` (40 atoms,
#: PBE+U, MDPulay mixer, median 12.5 SCF iterations per step, the other core busy) and the
#: 10-atom cell; GPAW dzp: ``paper-perfect``'s settings on its corundum model at 30, 60,
#: 120 and 240 atoms, ``python benchmarks/bench_gpaw_cost.py`` (move + 12.5 SCF iterations +
#: forces, the other core busy; set-up not counted; the law fitted to all four is within 3%
#: of the 240-atom step and 14% of the 120-atom one); tblite and pair: Bussi steps on corundum cells;
#: CHGNet 0.3.0 and SevenNet-0 (energy and forces, 1 torch thread, the other core busy):
#: corundum supercells of 120 and 240 atoms (``python benchmarks/bench_ml.py``). PW mode has
#: no measurement here, so its cost is not estimated.
MEASURED = {
    ("gpaw", "lcao", "sz(dzp)"): [(10, 3.5), (40, 33.0)],
    ("gpaw", "lcao", "dzp"): [(30, 161.0), (60, 298.0), (120, 1120.0), (240, 2405.0)],
    ("tblite", None, None): [(30, 3.0)],   # GFN1-xTB, OMP_NUM_THREADS=1
    ("pair", None, None): [(60, 0.0011)],
    ("chgnet", None, None): [(120, 1.07), (240, 2.94)],
    ("sevennet", None, None): [(120, 2.0), (240, 5.45)],
}
#: Exponent of the power law where one size was measured: LCAO at tens of atoms is still
#: dominated by matrix set-up rather than the N^3 diagonalisation (the sz(dzp) pair gives 1.6).
DEFAULT_EXPONENT = 2.0
#: Cost of a spin-polarised DFT step relative to an unpolarised one (two spin channels): GPAW
#: LCAO PBE+U V2O3 on this machine, 2.0-2.4x per SCF iteration (30 atoms dzp: 7 s against
#: about 17 s; 120 atoms sz(dzp): about 23 s against 25 s with more jobs sharing the cores).
SPIN_FACTOR = 2.0
#: Amdahl's serial share s of a GPAW LCAO MD step over MPI ranks, per parallel layout: a step
#: on P ranks takes (s + (1 - s) / P) of its one-rank time. From ``paper-perfect``'s 240-atom
#: step (dzp, 12.5 SCF iterations) on 1 rank, 2,405 s (:data:`MEASURED`), and on 2 ranks,
#: ``mpirun -np 2 python benchmarks/bench_gpaw_cost.py --sizes 240 [--set ...]``, s = 2/S - 1
#: for the speed-up S. "domain" (GPAW's automatic layout at the Γ point: the real-space grid
#: split, the LCAO eigensolver on one rank while the others wait): 1,952 s and 1,690 s in two
#: runs, S = 1.23 and 1.42, s of their mean 1.33. "band" (``parallel: {band: N}``: the
#: orbitals, the potential matrix and the eigenproblem split, the latter in ScaLAPACK):
#: 1,314 s, S = 1.83. The one-rank step had the other core busy, which flatters both. Two
#: ranks are all these rest on; 128 ranks are an extrapolation (benchmarks/README.md).
GPAW_SERIAL_SHARE = {"domain": 2.0 / 1.33 - 1.0, "band": 2.0 / 1.83 - 1.0}


def gpaw_layout(settings, n_atoms, ranks):
    """'band' where calculator ``settings`` split GPAW's bands over ``ranks`` ranks for
    ``n_atoms`` atoms (``parallel: auto`` included), else 'domain'."""
    gpaw = calculators.CalculatorSettings.from_dict(settings).gpaw
    parallel = calculators.choose_parallel(gpaw, n_atoms, ranks) or {}
    return "band" if int(parallel.get("band", 1) or 1) > 1 else "domain"


def mpi_speedup(settings, ranks, n_atoms):
    """How many times faster a step of calculator ``settings`` on ``n_atoms`` atoms runs on
    ``ranks`` MPI ranks than on one: Amdahl's law with :data:`GPAW_SERIAL_SHARE` for GPAW; 1
    for the rest (the ML models run on rank 0 of their communicator, with the node's other
    ranks' cores as torch threads, a gain not counted here: 1.3-1.5x per call on 2 threads in
    benchmarks/bench_ml.py, less per MD step; tblite and the pair potential run on every rank
    alike)."""
    settings = calculators.CalculatorSettings.from_dict(settings)
    if ranks <= 1 or settings.name != "gpaw":
        return 1.0
    share = GPAW_SERIAL_SHARE[gpaw_layout(settings, n_atoms, ranks)]
    return 1.0 / (share + (1.0 - share) / ranks)


def cost_law(settings):
    """``(N_ref, s_ref, k)`` of the step-time power law of calculator ``settings``, or None."""
    c = calculators.CalculatorSettings.from_dict(settings)
    if c.name == "gpaw":
        key = ("gpaw", c.gpaw.mode, c.gpaw.basis if c.gpaw.mode == "lcao" else None)
    else:
        key = (c.name, None, None)
    points = MEASURED.get(key)
    if not points:
        return None
    n, t = np.log(np.array(points, float)).T
    if len(points) == 1:
        return float(np.exp(n[0])), float(np.exp(t[0])), DEFAULT_EXPONENT
    k, c0 = np.polyfit(n, t, 1)
    n_ref = float(np.exp(n[-1]))
    return n_ref, float(np.exp(c0 + k * n[-1])), float(k)


def step_cost_s(settings, n_atoms, ranks=1):
    """Estimated wall seconds per MD step of calculator ``settings`` (None where no step time
    was measured); :data:`SPIN_FACTOR` times more for a spin-polarised GPAW or VASP step (the
    step times measured are unpolarised)."""
    law = cost_law(settings)
    if law is None:
        return None
    n_ref, s_ref, k = law
    spin = SPIN_FACTOR if settings.spinpol and settings.name in ("gpaw", "vasp") else 1.0
    return spin * s_ref * (n_atoms / n_ref) ** k / mpi_speedup(settings, ranks, n_atoms)


def single_point_s(settings, n_atoms, ranks=1):
    """Estimated wall seconds of a single point of ``settings`` from scratch (a GPAW SCF
    takes :data:`~meltquench.calibrate.COLD_ITERATIONS` iterations where an MD step, started
    from the last one's density, takes :data:`~meltquench.calibrate.ITERATIONS_PER_STEP`);
    None where no step time was measured."""
    seconds = step_cost_s(settings, n_atoms, ranks)
    if seconds is not None and settings.name == "gpaw":
        seconds *= ((COLD_ITERATIONS + FORCES_ITERATIONS)
                    / (ITERATIONS_PER_STEP + FORCES_ITERATIONS))
    return seconds


def format_duration(seconds):
    if seconds is None:
        return "unknown"
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def run_parts(cfg):
    """``[(label, calculator settings, steps)]``: the programme, the finish's anneal and the
    final optimisation (at most ``relax_steps`` force calls; steps None: a single point),
    each with its calculator."""
    schedule = cfg.build_schedule()
    dt = cfg.dynamics.timestep_fs
    nsteps = schedule.nsteps(dt)
    finish = cfg.finish.calculator
    anneal = 0
    if cfg.finish.anneal_ps > 0:
        anneal = nsteps - int(round(schedule.stage_start_fs("anneal") / dt))
    parts = []
    if finish is None:
        parts.append(("MD", cfg.calculator, nsteps))
    else:
        parts.append(("MD (heat, melt, quench, final)", cfg.calculator, nsteps - anneal))
        if anneal:
            parts.append((f"anneal ({cfg.finish.anneal_ps:g} ps)", finish, anneal))
    relax = cfg.dynamics.final_relax
    if relax:
        steps = cfg.dynamics.relax_steps
        if finish is not None and not anneal:
            parts.append((f"pre-optimisation {relax} (at most)", cfg.calculator, steps))
        if finish is not None:
            steps = cfg.finish_relax_steps()
        if steps:
            parts.append((f"final {relax} (at most)", finish or cfg.calculator, steps))
        else:
            parts.append(("final single point", finish or cfg.calculator, None))
    return parts


def cost_lines(cfg, atoms, ranks=1, timings=None):
    """The plan's cost lines. ``timings``: ``{"calculator": SCFTiming, "finish": SCFTiming}``
    measured by :mod:`meltquench.calibrate` on this model and these ranks (``--calibrate``),
    used in place of the power laws for the parts of those calculators."""
    timings = timings or {}
    schedule = cfg.build_schedule()
    nsteps = schedule.nsteps(cfg.dynamics.timestep_fs)
    relax = cfg.dynamics.relax_steps if cfg.dynamics.final_relax else 0
    lines = [f"atoms {len(atoms)} ({atoms.get_chemical_formula()}), MD steps {nsteps} "
             f"({schedule.total_fs / 1000.0:g} ps at {cfg.dynamics.timestep_fs} fs)"
             + (f" + up to {relax} optimisation steps" if relax else "")]
    total, unknown = 0.0, []
    total_128 = 0.0  # the same parts on 128 ranks
    if timings:
        lines.append(f"estimated cost on these {ranks} rank(s), calibrated here "
                     "(meltquench.calibrate):")
        for which, t in timings.items():
            lines.append(f"  {which}: {t.text()}")
    else:
        lines.append(f"estimated cost on {ranks} core(s) of a 2-core laptop-class machine "
                     "(power laws fitted to measured step times, GPAW's MPI speed-up "
                     "measured on 2 ranks; see meltquench.plan; --calibrate measures it here):")
    paid_setup = set()
    for label, settings, steps in run_parts(cfg):
        which = "calculator" if settings is cfg.calculator else "finish"
        timing = timings.get(which)
        if timing is not None:
            per_step = timing.step_s() if steps is not None else timing.single_point_s()
            if steps is not None and which not in paid_setup:  # the first step from scratch
                total += timing.single_point_s() - per_step
            paid_setup.add(which)
        else:
            per_step = (step_cost_s if steps is not None else single_point_s)(
                settings, len(atoms), ranks)
        name = calculators.describe(settings)
        what = f"{label} with {name}" if steps is None else f"{label}: {steps} steps with {name}"
        if per_step is None:
            unknown.append(label)
            lines.append(f"  {what}: not estimated (no step time of this calculator/mode was "
                         "measured on the development machine; VASP cannot run there)")
            continue
        scale_128 = (mpi_speedup(settings, ranks, len(atoms))
                     / mpi_speedup(settings, 128, len(atoms)))
        if steps is None:
            total += per_step
            total_128 += per_step * scale_128
            lines.append(f"  {what}: ~{format_duration(per_step)}")
            continue
        total += per_step * steps
        total_128 += per_step * steps * scale_128
        lines.append(f"  {what}: ~{format_duration(per_step)} per step, "
                     f"~{format_duration(per_step * steps)}")
    if unknown:
        lines.append(f"  in all: ~{format_duration(total)} plus the parts not estimated")
    else:
        lines.append(f"  in all: ~{format_duration(total)}")
        if ranks == 1 and total > 86400:
            layouts = sorted({gpaw_layout(s, len(atoms), 128) for _, s, _ in run_parts(cfg)
                              if s.name == "gpaw"})
            shares = ", ".join(f"{k} layout {GPAW_SERIAL_SHARE[k]:.2f}" for k in layouts)
            lines.append(f"  on 128 ranks: ~{format_duration(total_128)} (Amdahl's law with the "
                         f"serial share measured on 2 ranks: {shares}; an extrapolation)")
    return lines


def finish_cost_lines(cfg, n_atoms, n_checks, ranks=1):
    """The estimated cost of ``meltquench finish`` with ``cfg`` on a structure of ``n_atoms``
    whose spot checks take ``n_checks`` trajectory frames."""
    settings = cfg.finish.calculator
    name = calculators.describe(settings)
    relax = cfg.dynamics.final_relax
    steps = cfg.finish_relax_steps()
    start = single_point_s(settings, n_atoms, ranks)
    per_step = step_cost_s(settings, n_atoms, ranks)
    lines = [f"estimated cost on {ranks} core(s) of a 2-core laptop-class machine (see "
             "meltquench.plan):"]
    if start is None:
        return lines + [f"  {name}: not estimated (no step time of this calculator/mode was "
                        "measured on the development machine)"]
    total = start
    if relax and steps:
        total += per_step * steps
        lines.append(f"  final {relax}, at most {steps} steps: ~{format_duration(start)} for "
                     f"the first (from scratch), ~{format_duration(per_step)} per step after, "
                     f"~{format_duration(start + per_step * steps)} at most")
    else:
        lines.append(f"  a single point from scratch: ~{format_duration(start)}")
    if n_checks:
        total += start * n_checks
        lines.append(f"  spot checks on {n_checks} trajectory frame(s): ~{format_duration(start)}"
                     f" each, ~{format_duration(start * n_checks)}")
    return lines + [f"  in all: ~{format_duration(total)} (with {name})"]


def defect_lines(cfg, atoms):
    """What the plan says about defects: the composition now, or what comes after the quench."""
    st = cfg.structure
    if not st.defects:
        return []
    recipe = "the paper's recipe" if st.defects == "paper" else f"{len(st.defects)} recipe entries"
    if st.defect_stage == "before-melt":
        return [f"defects ({recipe}, made before the melt):", composition_text(atoms)]
    return [f"defects: {recipe}, made after the quench"]


def plan_lines(cfg, atoms):
    """Model, regions, defects, calculator and programme of ``cfg`` on ``atoms``."""
    return [f"structure: {atoms.get_chemical_formula()} ({len(atoms)} atoms), cell "
            + " ".join(f"{x:.3f}" for x in atoms.cell.cellpar()),
            format_region_report(atoms),
            *defect_lines(cfg, atoms),
            f"calculator: {calculators.describe(cfg.calculator)}",
            *finish_lines(cfg)]


def finish_lines(cfg):
    """What the plan says about the finish: its calculator and anneal."""
    f = cfg.finish
    if f.calculator is None:
        return []
    anneal = (f"anneals {f.anneal_ps:g} ps at {cfg.schedule.T_final_K:g} K, then " if
              f.anneal_ps > 0 else "")
    opt, steps = cfg.dynamics.final_relax, cfg.finish.relax_steps
    if not opt:
        relax = "no final optimisation"
    elif f.anneal_ps > 0:
        relax = f"the final {opt} optimisation"
    else:
        relax = (f"after a {opt} pre-optimisation with the run's calculator, " +
                 ("a single point (finish.relax_steps 0)" if steps == 0 else
                  f"the final {opt} optimisation" + (f" (at most {steps} steps)" if steps
                                                       else "")))
    checks = ("every {} frames and the final structure".format(f.check_every) if f.check_every
              else "the final structure")
    return [f"finish: {calculators.describe(f.calculator)} {anneal}{relax}; force spot checks "
            f"of the run's calculator against it on {checks}"]


def run_plan_text(cfg, atoms, run_dir, first_step, ranks):
    """What a run prints when it starts (or continues from step ``first_step - 1``)."""
    schedule = cfg.build_schedule()
    dt_fs = cfg.dynamics.timestep_fs
    lines = [f"meltquench run in {run_dir}", *plan_lines(cfg, atoms),
             f"dynamics: {cfg.dynamics.thermostat}, {dt_fs} fs steps, "
             f"{schedule.nsteps(dt_fs)} steps ({schedule.total_fs / 1000.0:.3f} ps), "
             f"seed {cfg.dynamics.seed}",
             schedule.describe()]
    if first_step > 1:
        lines.append(f"continuing from the checkpoint of step {first_step - 1}")
    if ranks > 1:
        lines.append(f"MPI: {ranks} ranks (rank 0 writes)")
    return "\n".join(lines)


def calibrate(cfg, atoms, iterations=2, comm=None):
    """``{"calculator": SCFTiming, "finish": SCFTiming}`` for the GPAW calculators of ``cfg``
    on ``atoms``, at the smearing of the melt, on the ranks of ``comm``."""
    out = {}
    for which, settings in (("calculator", cfg.calculator), ("finish", cfg.finish.calculator)):
        if settings is not None and settings.name == "gpaw":
            out[which] = time_gpaw_scf(settings, atoms, cfg.schedule.T_melt_K, comm=comm,
                                       iterations=iterations)
    if not out:
        raise UserError("--calibrate times GPAW's SCF, and this run uses no GPAW calculator "
                        f"({calculators.describe(cfg.calculator)})")
    return out


def dry_run(cfg, ranks=None, calibrate_iterations=0):
    """Build the model and describe the run; with ``calibrate_iterations``, time that many SCF
    iterations of its GPAW calculators on these ranks first (:mod:`meltquench.calibrate`)."""
    atoms = build_model(cfg)
    ranks = ranks or get_comm().Get_size()
    timings = calibrate(cfg, atoms, calibrate_iterations) if calibrate_iterations else None
    lines = ["dry run: nothing is computed", *plan_lines(cfg, atoms),
             f"dynamics: {cfg.dynamics.thermostat}, seed {cfg.dynamics.seed}",
             cfg.build_schedule().describe()]
    if "gpaw" in (cfg.calculator.name, getattr(cfg.finish.calculator, "name", None)):
        lines.append(f"GPAW parallel layout on {ranks} rank(s): "
                     f"{calculators.parallel_plan_text(cfg.calculator.gpaw, ranks, len(atoms))}")
    lines += cost_lines(cfg, atoms, ranks, timings)
    lines.append(f"output: {cfg.output.directory or f'runs/{cfg.output.name}-<date>-<time>'}")
    return "\n".join(lines)


def preset_cost(name):
    """Atoms, steps and cost of preset ``name`` (builds its model; computes nothing)."""
    cfg = load_config(preset=name)
    return "\n".join(cost_lines(cfg, build_model(cfg)))
