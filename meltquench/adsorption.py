"""Adsorption of one atom (Na by default) at the largest voids of each region of a model.

``meltquench adsorb`` does, with the model's own calculator (any engine: GPAW, VASP, tblite,
the ML potentials, the pair potential):

1. **Sites.** The distance from every point of a grid over the cell (``grid`` Å apart) to the
   nearest atom, periodic images included (:class:`scipy.spatial.cKDTree`), is the radius of
   the largest empty sphere centred there. A grid point belongs to the interface when it lies
   within ``interface_width`` Å of a boundary plane (as atoms do,
   :func:`~meltquench.analysis.regions.interface_mask`), else to the region (crystal, melt)
   of its nearest atom; a structure without region tags has one region, ``all``. In each
   region the sites are the grid points of largest radius, taken greedily: the largest, then
   the largest at least ``separation`` Å (minimum image) from every site taken so far, up to
   ``per_region``. These are the centres of the widest channels and cavities of the model,
   where an intercalating ion sits in a bulk model without vacuum (the paper's Na sat in its
   models' channels and at their surfaces; the engine's models are periodic bulk).
2. **Relaxation.** The adatom goes to the site and is relaxed with the model's atoms the run
   relaxed (``dynamics.relax_region``: by default those no FixAtoms holds, so the crystal
   half stays fixed as in the run), with the run's optimiser (``dynamics.final_relax``, BFGS
   where the run had none) to ``fmax`` (0.03 eV/Å, the paper's criterion). The model alone is
   relaxed the same way (``E(model)``).
3. **Energy.** ``E_ads = E(model + X) - E(model) - E(X)``. The reference ``E(X)`` is computed
   with the same calculator settings, either (``atom``, the default) an isolated atom in a
   12 Å box, without periodic images: the paper's E_ads (-0.8 to -4.8 eV) are of the size of
   binding energies to a free atom, and the paper names no reference; or (``bulk``) the
   metal per atom (ASE's reference state: bcc Na, a = 4.23 Å), a supercell at least 8 Å on a
   side at the run's k-points, not relaxed: the reference of an intercalation voltage. An
   atom without spin polarisation (``calculator.spinpol`` false, as in the runs) lies above
   the spin-polarised one, which makes E_ads more negative by that spin-polarisation
   energy. The pair potential has no Na parameters of its own: its generic rule
   (:func:`~meltquench.calculators.pair.generic_pair`) gives Na-O a Morse bond (1 eV at 0.9
   times the covalent radii) and Na-V, Na-Na the O-O Born-Mayer repulsion, so its E_ads
   count Na-O bonds; its free atom has zero energy and its bulk Na only repulsion. The
   machine-learned models (CHGNet, SevenNet) have no free-atom energy: their training data
   (MPtrj) holds no isolated atoms, and CHGNet refuses a lone atom. With them the default is
   ``bulk`` and ``atom`` is refused before anything is computed.
4. **The host's share.** After each site's relaxation the adatom is taken out and the host
   computed as it stands (one single point, no relaxation): ``E_deform = E(host at the
   site) - E(model)``, the strain the adatom leaves in the model, and ``E_bind = E(model + X)
   - E(host at the site) - E(X)``, so that ``E_ads = E_deform + E_bind``. A model relaxed to
   a minimum gives ``E_deform >= 0`` up to its residual forces. A negative one (below
   :data:`HOST_DROP_EV`) means the adatom pushed the host over a barrier into a lower
   minimum, which a quickly quenched amorphous model has many of: that site's ``E_ads``
   then counts the host's own relaxation, and the command says so.

An SCF that does not converge (GPAW) is retried once from where the atoms are, with the
first fallback of :func:`~meltquench.calculators.conservative_fallback` (a more careful mixer:
the same energies) and noted in the task's result; a fallback that would change the smearing,
and with it the energies E_ads subtracts, is not used. A task that fails even so leaves the
other tasks to finish, then the command stops with :class:`~meltquench.errors.SCFFailure`
(exit code 4) naming it; run it again (with other ``--set calculator.gpaw...``: the finished
tasks are kept only with the same settings) to go on.

Every piece (the model, the reference, each site) is a task; a finished task's result is
kept in ``tasks/<name>.json`` (with its relaxed structure, ``.traj``) and not computed again
when the command is run again in the same folder. Under ``mpirun`` the tasks are spread over
groups of ranks as replicas are (:func:`~meltquench.replicas.replica_groups`; ``groups``, default one per rank), each group with its
own calculator; the table is the same as a serial run's.
"""
import csv
import io
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_numbers, reference_states
from ase.geometry import get_distances
from ase.parallel import DummyMPI
from scipy.spatial import cKDTree

from . import calculators
from .driver import OPTIMISERS
from .analysis.regions import interface_mask
from .errors import SCFFailure, UserError
from .model import relax_region
from .replicas import replica_groups
from .rundir import collective, write_atomic, write_traj
from .structures import CRYSTAL, MELT

GRID_A = 0.25
SEPARATION_A = 3.0
PER_REGION = 2
FMAX = 0.03  # eV/Å, the paper's criterion
STEPS = 300
#: E_deform below this (eV): the site's relaxation took the host into a lower minimum.
HOST_DROP_EV = -0.1
BOX_A = 12.0  # the isolated atom's box
BULK_MIN_A = 8.0  # the bulk reference's smallest side
REFERENCES = ("atom", "bulk")
REFERENCE_NOTES = {
    "atom": f"isolated atom in a {BOX_A:g} Å box without periodic images, same calculator "
            "settings (and spin setting) as the model",
    "bulk": f"bulk metal per atom (ASE's reference state), supercell of at least {BULK_MIN_A:g} "
            "Å, not relaxed, same calculator settings as the model"}
ADSORB_FILES = ("plan.json", "results.json", "results.csv", "adsorption.png", "tasks/*.json",
                "tasks/*.traj", "tasks/*.log", "tasks/*/gpaw.txt", "*.tmp")
#: The paper's E_ads (eV, Fig. 4f): targets to compare with, not truths.
PAPER_EADS_EV = {"perfect A/C": {"crystal": -0.77, "melt": -2.81, "interface": -1.77},
                 "defective A/C": {"crystal": -4.09, "melt": -4.43, "interface": -4.77}}


# --------------------------------------------------------------------------- sites
def void_radii(atoms, spacing=GRID_A):
    """(points (n, 3) Å, distance to the nearest atom (n,) Å, index of that atom (n,)) on a
    grid over the cell with about ``spacing`` Å between points, periodic images included."""
    cell = atoms.cell.array
    counts = [max(1, int(np.ceil(np.linalg.norm(v) / spacing))) for v in cell]
    axes = [(np.arange(n) + 0.5) / n for n in counts]
    frac = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    points = frac @ cell
    shifts = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                       if all(s == 0 or atoms.pbc[d] for d, s in enumerate((i, j, k)))])
    images = (atoms.positions[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)
    distance, index = cKDTree(images).query(points)
    return points, distance, index % len(atoms)


def point_regions(atoms, points, nearest, interface_width):
    """Region name of every point: 'interface' within ``interface_width`` Å of a boundary
    plane, else that of its nearest atom ('crystal', 'melt'); 'all' without region tags."""
    tags = atoms.get_tags()
    labels = np.full(len(points), "all", dtype=object)
    if not np.any((tags == CRYSTAL) | (tags == MELT)):
        return labels
    labels[tags[nearest] == CRYSTAL] = "crystal"
    labels[tags[nearest] == MELT] = "melt"
    if "region_axis" in atoms.info and "region_planes" in atoms.info:
        probe = Atoms(positions=points, cell=atoms.cell, pbc=atoms.pbc, info={
            "region_axis": atoms.info["region_axis"],
            "region_planes": atoms.info["region_planes"]})
        labels[interface_mask(probe, interface_width)] = "interface"
    return labels


def find_sites(atoms, per_region=PER_REGION, spacing=GRID_A, separation=SEPARATION_A,
               interface_width=3.0):
    """The adsorption sites of ``atoms``: a list of dicts (region, position (Å), void radius
    (Å)), per region the largest voids at least ``separation`` Å apart (see the module)."""
    for name, value in (("--grid", spacing), ("--separation", separation),
                        ("--interface-width", interface_width)):
        if not value > 0:
            raise UserError(f"{name} must be a positive distance (Å), got {value!r}")
    if not per_region >= 1:
        raise UserError(f"--sites-per-region must be at least 1, got {per_region!r}")
    points, radius, nearest = void_radii(atoms, spacing)
    labels = point_regions(atoms, points, nearest, interface_width)
    sites, taken = [], np.zeros((0, 3))
    for region in ("crystal", "melt", "interface", "all"):
        mine = np.flatnonzero(labels == region)
        if not len(mine):
            continue
        candidates = mine[np.argsort(-radius[mine], kind="stable")]
        if len(taken):
            _, d = get_distances(taken, points[candidates], cell=atoms.cell, pbc=atoms.pbc)
            candidates = candidates[(d >= separation).all(axis=0)]
        count = 0
        while len(candidates) and count < per_region:
            best = candidates[0]
            sites.append({"region": region, "position": points[best].tolist(),
                          "void_radius_A": float(radius[best])})
            taken = np.vstack([taken, points[best]])
            _, d = get_distances(points[best], points[candidates], cell=atoms.cell,
                                 pbc=atoms.pbc)
            candidates = candidates[d[0] >= separation]
            count += 1
    return sites


# --------------------------------------------------------------------------- structures
def reference_atoms(species, kind):
    """The reference of ``species``: an isolated atom in a :data:`BOX_A` box (no periodic
    images) or its bulk reference state (ASE's) repeated to at least :data:`BULK_MIN_A` Å."""
    if kind == "atom":
        return Atoms(species, positions=[(BOX_A / 2,) * 3], cell=[BOX_A] * 3, pbc=False)
    state = reference_states[atomic_numbers[species]] or {}
    try:
        unit = bulk(species, cubic=True)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"no bulk reference for {species} ({state.get('symmetry')}: {exc}); "
                        "use --reference atom") from None
    reps = [max(1, int(np.ceil(BULK_MIN_A / np.linalg.norm(v)))) for v in unit.cell]
    return unit.repeat(reps)


def choose_reference(reference, settings):
    """``reference`` ('atom' or 'bulk'), or, if None, the default for the calculator
    ``settings``: 'bulk' for a machine-learned model (no free-atom energy), else 'atom'."""
    machine_learned = settings.name in calculators.ML_ENGINES
    if reference is None:
        return "bulk" if machine_learned else "atom"
    if reference == "atom" and machine_learned:
        raise UserError(f"--reference atom: {calculators.describe(settings)} has no free-atom "
                        "energy (its training data, MPtrj, holds no isolated atoms): use "
                        "--reference bulk")
    return reference


def check_options(species, reference, fmax, steps):
    """A UserError for an adsorbate, reference or optimiser setting that cannot be used."""
    if species not in atomic_numbers or species == "X":
        raise UserError(f"--species {species!r} is not a chemical element (e.g. Na, Li, K)")
    if reference not in REFERENCES:
        raise UserError(f"--reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    if not fmax > 0:
        raise UserError(f"--fmax must be a positive force (eV/Å), got {fmax!r}")
    if not steps >= 0:
        raise UserError(f"--steps must be 0 or more, got {steps!r}")


def adsorb(atoms, cfg, settings, sites, out, comm, species="Na", reference="atom", fmax=FMAX,
           steps=STEPS, source="", groups=None, say=print):
    """Adsorb ``species`` at ``sites`` (:func:`find_sites`) of ``atoms`` with the calculator
    ``settings`` (``cfg`` gives the relaxation and the electronic temperature), into the
    folder ``out`` (collective; see the module). A folder holding the plan of another
    computation is refused; one holding this plan's finished tasks keeps them. Returns
    (rows, meta); rank 0 writes the results."""
    tasks = plan_tasks(sites, reference)
    meta = {"source": str(source), "species": species, "reference": reference,
            "reference_note": REFERENCE_NOTES[reference], "calculator":
            calculators.describe(settings), "fmax_eV_per_A": fmax, "max_steps": steps,
            "optimiser": cfg.dynamics.final_relax or "BFGS",
            "relax_region": cfg.dynamics.relax_region, "natoms": len(atoms),
            "formula": atoms.get_chemical_formula(), "sites": sites}
    plan = {**meta, "settings": settings.to_dict(), "numbers": atoms.numbers.tolist(),
            "positions": atoms.positions.tolist(), "cell": atoms.cell.array.tolist()}
    plan = json.loads(json.dumps(plan))

    def check_plan():
        path = Path(out) / "plan.json"
        if path.exists():
            if json.loads(path.read_text()) != plan:
                raise UserError(f"{out} holds an adsorption computation with other settings, "
                                "structure or sites (plan.json): pass --overwrite to replace "
                                "it or --out DIR to write elsewhere")
            return True
        write_atomic(path, (json.dumps(plan, indent=1) + "\n").encode())
        return False

    if collective(comm, check_plan) and comm.Get_rank() == 0:
        say(f"continuing the adsorption computation in {out}: finished tasks are kept")
    results = run_tasks(tasks, atoms, species, cfg, settings, out, comm, fmax, steps, groups,
                        say)
    rows = adsorption_table(results, tasks)
    if comm.Get_rank() == 0:
        write_results(out, rows, meta)
    return rows, meta


# --------------------------------------------------------------------------- tasks
def plan_tasks(sites, reference):
    """[(name, description)] of the tasks: the model, the reference, one per site."""
    tasks = [("model", {"kind": "model"}), ("reference", {"kind": "reference",
                                                          "reference": reference})]
    for i, site in enumerate(sites):
        tasks.append((f"site-{i}", {"kind": "site", **site}))
    return tasks


def task_atoms(atoms, task, species):
    """The structure a task computes, and whether it is relaxed."""
    if task["kind"] == "model":
        return atoms.copy(), True
    if task["kind"] == "reference":
        return reference_atoms(species, task["reference"]), False
    combined = atoms.copy()
    combined.extend(Atoms(species, positions=[task["position"]]))
    combined.info["adsorbate_index"] = len(atoms)
    return combined, True


def same_energy_fallback(settings):
    """The first SCF fallback of ``settings`` where it computes the same energies (only the
    mixer, the extrapolation and ``maxiter`` differ), else None: every energy in E_ads must
    come from one functional at one smearing."""
    fallback = calculators.conservative_fallback(settings)
    if fallback is None:
        return None
    old, new = settings.gpaw, fallback.gpaw
    return fallback if (old.occupations, old.width_min) == (new.occupations,
                                                            new.width_min) else None


def run_task(name, task, atoms, species, cfg, settings, folder, comm, fmax, steps):
    """Compute one task on the ranks of ``comm``; returns its result dict (every rank) and
    writes ``folder/<name>.json`` and ``.traj`` (its rank 0). An SCF failure is retried once
    with :func:`same_energy_fallback`, from where the atoms are; one that remains raises
    :class:`~meltquench.errors.SCFFailure`."""
    start = time.perf_counter()
    work, relax = task_atoms(atoms, task, species)
    calculators.prepare_atoms(settings, work)
    result = {"name": name, **task, "natoms": len(work)}
    fallback = same_energy_fallback(settings)
    try:
        compute_task(work, relax, result, name, cfg, settings, folder, comm, fmax, steps)
    except Exception as exc:
        if not calculators.is_scf_failure(exc):
            raise
        why = f"{type(exc).__name__}" + (f": {str(exc).strip()}" if str(exc).strip() else "")
        if fallback is None:
            raise SCFFailure(f"{name}: the SCF did not converge ({why}) and the calculator has "
                             "no fallback with the same energies") from exc
        result["scf_fallback"] = why
        try:
            compute_task(work, relax, result, name, cfg, fallback, folder, comm, fmax, steps)
        except Exception as again:
            if not calculators.is_scf_failure(again):
                raise
            raise SCFFailure(f"{name}: the SCF did not converge ({why}), nor with the fallback "
                             f"mixer ({type(again).__name__})") from again
    result["seconds"] = time.perf_counter() - start
    if comm.Get_rank() == 0:
        work.calc = None
        write_traj(folder / f"{name}.traj", work)
        write_atomic(folder / f"{name}.json", (json.dumps(result, indent=1) + "\n").encode())
    return result


def compute_task(work, relax, result, name, cfg, settings, folder, comm, fmax, steps):
    """Relax (if ``relax``) and compute ``work`` with a new calculator of ``settings``,
    filling ``result``."""
    work.calc = calculators.make_calculator(settings, directory=folder / name, comm=comm,
                                            natoms=len(work))
    calculators.set_electronic_temperature(work.calc, settings, cfg.schedule.T_final_K)
    root = comm.Get_rank() == 0
    if relax:
        d = cfg.dynamics
        optimiser = d.final_relax or "BFGS"
        with relax_region(work, d.relax_region, d.relax_radius) as note:
            opt = OPTIMISERS[optimiser](work, logfile=str(folder / f"{name}.log") if root
                                        else None, comm=DummyMPI())
            converged = bool(opt.run(fmax=fmax, steps=steps))
            forces = work.get_forces()
        result.update(optimiser=optimiser, steps=int(opt.nsteps), converged=converged,
                      fmax_eV_per_A=float(np.linalg.norm(forces, axis=1).max()), relaxed=note)
    result["energy_eV"] = float(work.get_potential_energy())
    if result["kind"] == "reference":
        result["energy_per_atom_eV"] = result["energy_eV"] / len(work)
    if result["kind"] == "site":
        i = work.info["adsorbate_index"]
        result["final_position"] = work.positions[i].tolist()
        _, d = get_distances(result["position"], work.positions[i], cell=work.cell,
                             pbc=work.pbc)
        result["displacement_A"] = float(d[0, 0])
        host = work.copy()  # as it stands, with the same calculator
        del host[i]
        result["host_energy_eV"] = float(work.calc.get_potential_energy(host))


def read_task(folder, name, task):
    """The finished result of task ``name`` in ``folder``, or None (not done, or made for
    another task)."""
    path = folder / f"{name}.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = all(result.get(k) == v for k, v in task.items())
    return result if same and "energy_eV" in result else None


def split_tasks(comm, n_tasks, groups=None):
    """(group communicator, indices of the tasks this rank's group runs): ``groups`` groups
    of contiguous ranks (default one per rank, at most one per task), task i to group
    i mod groups, as replicas are split."""
    size, rank = comm.Get_size(), comm.Get_rank()
    n_groups = max(1, min(groups or size, n_tasks, size))
    colors, _ = replica_groups(n_groups, size)
    sub = comm.Split(colors[rank], rank) if size > 1 else comm
    return sub, list(range(colors[rank], n_tasks, n_groups))


def run_tasks(tasks, atoms, species, cfg, settings, out, comm, fmax, steps, groups=None,
              say=print):
    """Every unfinished task of ``tasks``, spread over groups of ranks (collective); returns
    {name: result} on every rank."""
    folder = Path(out) / "tasks"
    world = comm
    if world.Get_rank() == 0:
        folder.mkdir(parents=True, exist_ok=True)
    world.Barrier()
    sub, mine = split_tasks(world, len(tasks), groups)
    failed = []
    for index in mine:
        name, task = tasks[index]
        done = read_task(folder, name, task) if sub.Get_rank() == 0 else None
        done = sub.bcast(done, root=0)
        if done is not None:
            if sub.Get_rank() == 0:
                say(f"{name}: kept from an earlier run (E = {done['energy_eV']:.6f} eV)")
            continue
        try:
            result = run_task(name, task, atoms, species, cfg, settings, folder, sub, fmax,
                              steps)
        except SCFFailure as exc:  # the other tasks go on; the command stops after them
            failed.append(str(exc))
            if sub.Get_rank() == 0:
                say(f"{exc}; going on with the other tasks")
            continue
        if result.get("scf_fallback") and sub.Get_rank() == 0:
            say(f"{name}: the SCF did not converge ({result['scf_fallback']}); done with the "
                "fallback mixer")
        if sub.Get_rank() == 0:
            say(f"{name}: E = {result['energy_eV']:.6f} eV"
                + (f", {result['steps']} {result['optimiser']} steps, max |F| "
                   f"{result['fmax_eV_per_A']:.3f} eV/Å" if "steps" in result else "")
                + (f", {result['natoms']} atoms, {result['energy_per_atom_eV']:.6f} eV per "
                   "atom" if result.get("natoms", 1) > 1 and "energy_per_atom_eV" in result
                   else "")
                + f" ({result['seconds']:.1f} s)")
    world.Barrier()
    failed = sorted({text for part in world.allgather(failed) for text in part})
    if failed:
        raise SCFFailure(f"{len(failed)} task(s) failed: " + "; ".join(failed) + f". Finished "
                         f"tasks are kept in {folder}: run the same command again to retry the "
                         "rest, with --set calculator.gpaw.mixer=... to change the mixer (other "
                         "settings start the computation afresh)")
    results = {}
    if world.Get_rank() == 0:
        results = {name: read_task(folder, name, task) for name, task in tasks}
    return world.bcast(results, root=0)


def adsorption_table(results, tasks):
    """Rows (dicts) per site: region, E_ads = E(site) - E(model) - E_ref per atom (eV), and
    its parts E_deform = E(host) - E(model), E_bind = E(site) - E(host) - E_ref (None for a
    site computed before the host was)."""
    model, ref = results["model"], results["reference"]
    rows = []
    for name, task in tasks:
        if task["kind"] != "site":
            continue
        r = results[name]
        host = r.get("host_energy_eV")
        rows.append({"site": name, "region": task["region"],
                     "x_A": task["position"][0], "y_A": task["position"][1],
                     "z_A": task["position"][2], "void_radius_A": task["void_radius_A"],
                     "E_site_eV": r["energy_eV"], "E_model_eV": model["energy_eV"],
                     "E_reference_eV": ref["energy_per_atom_eV"],
                     "E_ads_eV": r["energy_eV"] - model["energy_eV"] - ref["energy_per_atom_eV"],
                     "E_host_eV": host,
                     "E_deform_eV": None if host is None else host - model["energy_eV"],
                     "E_bind_eV": (None if host is None
                                   else r["energy_eV"] - host - ref["energy_per_atom_eV"]),
                     "displacement_A": r["displacement_A"], "steps": r["steps"],
                     "converged": r["converged"], "fmax_eV_per_A": r["fmax_eV_per_A"]})
    return rows


def host_warnings(rows, species):
    """One line per site whose relaxation took the host into a lower minimum
    (E_deform < :data:`HOST_DROP_EV`)."""
    return [f"{r['site']} ({r['region']}): the host without {species} lies "
            f"{-r['E_deform_eV']:.2f} eV below the relaxed model, so the adatom pushed it "
            f"into a lower minimum and E_ads ({r['E_ads_eV']:.2f} eV) counts that relaxation; "
            f"against the host as it stands E_bind = {r['E_bind_eV']:.2f} eV. A model relaxed "
            "further (a longer final hold, an anneal) gives E_ads that measure the site alone"
            for r in rows if r["E_deform_eV"] is not None and r["E_deform_eV"] < HOST_DROP_EV]


def write_results(out, rows, meta):
    """``results.json``, ``results.csv`` and ``adsorption.png`` (E_ads per site and region,
    as the paper's Fig. 4f) in ``out`` (rank 0)."""
    out = Path(out)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "results.csv", text.getvalue().encode())
    data = {"meta": meta, "sites": rows, "paper_E_ads_eV": PAPER_EADS_EV}
    write_atomic(out / "results.json", (json.dumps(data, indent=1) + "\n").encode())
    adsorption_figure(rows, meta).savefig(out / "adsorption.png", dpi=130)


def adsorption_figure(rows, meta):
    """E_ads per site and region, as the paper's Fig. 4f, with each site's E_bind beside it
    and the sites whose host fell into a lower minimum (:func:`host_warnings`) crossed out;
    bars: the lowest E_ads of each region among the other sites (of all, if every host
    fell). For Na, the paper's values (open markers: their reference is unstated)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    regions = list(dict.fromkeys(row["region"] for row in rows))
    fell = {r["site"] for r in rows
            if r["E_deform_eV"] is not None and r["E_deform_eV"] < HOST_DROP_EV}
    for k, region in enumerate(regions):
        mine = [row for row in rows if row["region"] == region]
        values = [row["E_ads_eV"] for row in mine]
        kept = [row["E_ads_eV"] for row in mine if row["site"] not in fell] or values
        ax.bar(k, min(kept), color=f"C{k}", alpha=0.6, width=0.6)
        ax.plot([k] * len(values), values, "ko", ms=4, label="E_ads" if k == 0 else None)
        bind = [row["E_bind_eV"] for row in mine if row["E_bind_eV"] is not None]
        ax.plot([k - 0.12] * len(bind), bind, "o", mfc="none", mec="k", ms=4,
                label="E_bind" if k == 0 else None)
        ax.annotate(f"{min(kept):.2f}", (k, min(kept)), ha="center", va="top",
                    xytext=(0, -3), textcoords="offset points", fontsize=8)
    crossed = [(regions.index(r["region"]), r["E_ads_eV"]) for r in rows if r["site"] in fell]
    if crossed:
        ax.plot(*zip(*crossed), "x", color="C3", ms=9, mew=1.5,
                label="host fell into a lower minimum")
    if meta["species"] == "Na":
        for (model, paper), marker, dx in zip(PAPER_EADS_EV.items(), "Dv", (0.2, 0.34)):
            shown = [k for k, region in enumerate(regions) if region in paper]
            ax.plot([k + dx for k in shown], [paper[regions[k]] for k in shown], marker,
                    mfc="none", mec="0.2", ls="none", ms=6, label=f"paper, {model}")
    ax.legend(fontsize=7, title="the paper's reference is unstated" if meta["species"] == "Na"
              else None, title_fontsize=7)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(regions)), regions)
    ax.set_ylabel(f"E_ads of {meta['species']} (eV)")
    ax.set_title(f"{meta['species']} adsorption (reference {meta['reference']})\nbars: the "
                 "lowest E_ads per region" + (", fallen hosts left out" if fell else ""),
                 fontsize=9)
    return fig


def format_table(rows):
    lines = [f"{'site':<8} {'region':<10} {'void (Å)':>8} {'E_ads (eV)':>11} "
             f"{'E_deform':>9} {'E_bind':>9} {'moved (Å)':>9} {'steps':>5}  converged"]

    def energy(value):
        return f"{value:>9.4f}" if value is not None else f"{'-':>9}"

    for r in rows:
        lines.append(f"{r['site']:<8} {r['region']:<10} {r['void_radius_A']:>8.2f} "
                     f"{r['E_ads_eV']:>11.4f} {energy(r['E_deform_eV'])} "
                     f"{energy(r['E_bind_eV'])} {r['displacement_A']:>9.2f} {r['steps']:>5}  "
                     f"{'yes' if r['converged'] else 'NO'}")
    return "\n".join(lines)
