"""The plan of a run before it runs: atoms, regions, steps and an estimated cost.

The cost is a rough extrapolation from step times measured on a 2-core development machine
(:data:`MEASURED`, with the command that measured them) to the model's size, as
N^:data:`SCALING_EXPONENT` with the number of atoms N, and ideal division over the MPI ranks.
Treat it as an order of magnitude, not a promise.
"""
from .config import PRESETS, calculator_settings, load_config

#: Seconds per MD step measured on one core of the 2-core development machine (shared, so
#: indicative), as (atoms, seconds per MD step at 4000 K with the engine's defaults):
#: GPAW sz(dzp): ``python benchmarks/bench_gpaw_scf.py --steps 10 --only ours`` (40 atoms,
#: PBE+U, MDPulay mixer, median 12.5 SCF iterations, 33 s per step with the other core busy); GPAW dzp: the 10-atom cell, 11 s per MD step (issue 2's measurement on this
#: machine); tblite and pair: ``meltquench.dynamics`` Bussi steps on corundum cells. PW mode
#: has no measurement here, so its cost is not estimated.
MEASURED = {
    ("gpaw", "lcao", "sz(dzp)"): (40, 33.0),
    ("gpaw", "lcao", "dzp"): (10, 11.0),
    ("tblite", None, None): (30, 3.0),   # GFN1-xTB, OMP_NUM_THREADS=1
    ("pair", None, None): (60, 0.0011),
}
#: Cost ~ N^2.5: the 10-atom sz(dzp) step (3.5 s, issue 2) and the 40-atom one with session 1's
#: mixer (109 s) give log(109 / 3.5) / log(4) = 2.5 (LCAO at these sizes is still dominated by
#: matrix set-up rather than the N^3 diagonalisation, so very large cells may cost more).
SCALING_EXPONENT = 2.5


def step_cost_s(cfg, n_atoms, ranks=1):
    """Estimated wall seconds per MD step (None for VASP, which we cannot measure here)."""
    c = cfg.calculator
    if c.name == "gpaw":
        mode = c.gpaw.get("mode", "lcao")
        key = ("gpaw", mode, c.gpaw.get("basis") if mode == "lcao" else None)
        ref = MEASURED.get(key)
        if ref is None:
            return None
    elif c.name == "vasp":
        return None
    else:
        ref = MEASURED[(c.name, None, None)]
    n_ref, s_ref = ref
    return s_ref * (n_atoms / n_ref) ** SCALING_EXPONENT / max(ranks, 1)


def format_duration(seconds):
    if seconds is None:
        return "unknown"
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def cost_lines(cfg, atoms, ranks=1):
    schedule = cfg.build_schedule()
    nsteps = schedule.nsteps(cfg.dynamics.timestep_fs)
    per_step = step_cost_s(cfg, len(atoms), ranks)
    relax = cfg.dynamics.relax_steps if cfg.dynamics.final_relax else 0
    total = None if per_step is None else per_step * (nsteps + relax)
    lines = [f"atoms {len(atoms)} ({atoms.get_chemical_formula()}), MD steps {nsteps} "
             f"({schedule.total_fs / 1000.0:g} ps at {cfg.dynamics.timestep_fs} fs)"
             + (f" + up to {relax} optimisation steps" if relax else "")]
    if per_step is None:
        lines.append("cost: not estimated (no step time of this calculator/mode was measured "
                     "on the development machine; VASP cannot run there)")
    else:
        lines.append(f"estimated cost on {ranks} core(s) of a 2-core laptop-class machine: "
                     f"~{format_duration(per_step)} per step, ~{format_duration(total)} in all "
                     "(rough N^2.5 extrapolation, ideal MPI scaling; see meltquench.plan)")
        if ranks == 1 and total > 86400:
            lines.append(f"  on 128 ranks (ideal scaling): ~{format_duration(per_step / 128)} per "
                         f"step, ~{format_duration(total / 128)} in all")
    return lines


def dry_run(cfg, ranks=None):
    """Build the structure and describe the run without calling the calculator."""
    from .driver import build_structure, defect_lines, describe_calculator
    from .kernels.parallel import get_comm
    from .structures import format_region_report
    atoms = build_structure(cfg)
    ranks = ranks or get_comm().Get_size()
    schedule = cfg.build_schedule()
    lines = ["dry run: nothing is computed",
             f"structure: {atoms.get_chemical_formula()} ({len(atoms)} atoms), cell "
             + " ".join(f"{x:.3f}" for x in atoms.cell.cellpar()),
             format_region_report(atoms),
             *defect_lines(cfg, atoms),
             f"calculator: {describe_calculator(cfg)}",
             f"dynamics: {cfg.dynamics.thermostat}, seed {cfg.dynamics.seed}",
             schedule.describe()]
    settings = calculator_settings(cfg)
    if settings["name"] == "gpaw":
        lines.append(f"GPAW parallel layout on {ranks} rank(s): "
                     f"{gpaw_parallel_text(settings['gpaw'].get('parallel'), ranks)}")
    lines += cost_lines(cfg, atoms, ranks)
    lines.append(f"output: {cfg.output.directory or f'runs/{cfg.output.name}-<date>-<time>'}")
    return "\n".join(lines)


def gpaw_parallel_text(parallel, ranks):
    """What GPAW will do with ``calculator.gpaw.parallel`` on ``ranks`` ranks (no GPAW import).

    Automatic (``parallel: null``): with the Γ point only there are no k-points to share, so
    GPAW decomposes the real-space domain over all ranks (bands are not split unless asked).
    Explicit: GPAW's own ``parallel`` dict, e.g. ``{domain: 4, band: 2, sl_auto: true}``
    (``sl_auto`` switches on ScaLAPACK for the LCAO eigensolver where GPAW was built with it;
    it pays off from a few hundred atoms on many ranks).
    """
    if not parallel:
        if ranks == 1:
            return "serial (one rank)"
        return (f"automatic: domain decomposition over {ranks} ranks, kpt 1 (Γ point), band 1; "
                "set calculator.gpaw.parallel (e.g. {domain: N, band: M, sl_auto: true}) to change")
    return "as configured: " + ", ".join(f"{k}={v}" for k, v in parallel.items())


def preset_cost(name):
    """Atoms, steps and cost of preset ``name`` (builds its structure; computes nothing)."""
    from .driver import build_structure
    cfg = load_config(preset=name)
    atoms = build_structure(cfg)
    return "\n".join(cost_lines(cfg, atoms))


__all__ = ["dry_run", "preset_cost", "step_cost_s", "PRESETS"]
