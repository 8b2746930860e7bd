"""The plan of a run before it runs: model, regions, calculator, programme and cost.

:func:`plan_lines` is what every run prints at its start and :func:`dry_run` what
``meltquench run --dry-run`` prints. The cost is an extrapolation from step times measured on
a 2-core development machine (:data:`MEASURED`) to the model's size, as
N^:data:`SCALING_EXPONENT` with the number of atoms N, and ideal division over the MPI ranks.
Treat it as an order of magnitude, not a promise.
"""
from . import calculators
from .config import load_config
from .kernels.parallel import get_comm
from .model import build_model, composition_text
from .structures import format_region_report

#: Seconds per MD step measured on one core of the 2-core development machine (shared, so
#: indicative), as (atoms, seconds per MD step at 4000 K with the engine's defaults).
#: GPAW sz(dzp): ``python benchmarks/bench_gpaw_scf.py --steps 10 --only ours`` (40 atoms,
#: PBE+U, MDPulay mixer, median 12.5 SCF iterations per step, the other core busy); GPAW dzp:
#: the 10-atom cell; tblite and pair: Bussi steps on corundum cells. PW mode has no
#: measurement here, so its cost is not estimated.
MEASURED = {
    ("gpaw", "lcao", "sz(dzp)"): (40, 33.0),
    ("gpaw", "lcao", "dzp"): (10, 11.0),
    ("tblite", None, None): (30, 3.0),   # GFN1-xTB, OMP_NUM_THREADS=1
    ("pair", None, None): (60, 0.0011),
}
#: Cost ~ N^2.5, from the 10- and 40-atom sz(dzp) steps: log(109 s / 3.5 s) / log(4) = 2.5
#: (LCAO at these sizes is still dominated by matrix set-up rather than the N^3
#: diagonalisation, so very large cells may cost more).
SCALING_EXPONENT = 2.5


def step_cost_s(cfg, n_atoms, ranks=1):
    """Estimated wall seconds per MD step (None where no step time was measured)."""
    c = cfg.calculator
    if c.name == "gpaw":
        mode = c.gpaw.mode
        ref = MEASURED.get(("gpaw", mode, c.gpaw.basis if mode == "lcao" else None))
    else:
        ref = MEASURED.get((c.name, None, None))
    if ref is None:
        return None
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
            f"calculator: {calculators.describe(cfg.calculator)}"]


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


def dry_run(cfg, ranks=None):
    """Build the model and describe the run without calling the calculator."""
    atoms = build_model(cfg)
    ranks = ranks or get_comm().Get_size()
    lines = ["dry run: nothing is computed", *plan_lines(cfg, atoms),
             f"dynamics: {cfg.dynamics.thermostat}, seed {cfg.dynamics.seed}",
             cfg.build_schedule().describe()]
    if cfg.calculator.name == "gpaw":
        lines.append(f"GPAW parallel layout on {ranks} rank(s): "
                     f"{calculators.parallel_plan_text(cfg.calculator.gpaw.parallel, ranks)}")
    lines += cost_lines(cfg, atoms, ranks)
    lines.append(f"output: {cfg.output.directory or f'runs/{cfg.output.name}-<date>-<time>'}")
    return "\n".join(lines)


def preset_cost(name):
    """Atoms, steps and cost of preset ``name`` (builds its model; computes nothing)."""
    cfg = load_config(preset=name)
    return "\n".join(cost_lines(cfg, build_model(cfg)))
