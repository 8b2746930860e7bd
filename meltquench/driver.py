"""Runs a melt-quench programme on a heterophase model: the engine's main loop.

:func:`run` takes a :class:`~meltquench.config.Config`, builds the structure and the
calculator, and integrates the equations of motion with the NVT scheme the configuration
names, the target temperature following the :class:`~meltquench.schedule.Schedule` step by
step. Everything goes into one run folder:

====================  ==============================================================
``config.yaml``       the resolved configuration (what ``--restart`` continues with)
``initial.traj``      the structure before the melt (region labels as tags)
``trajectory.traj``   one frame every ``output.trajectory_interval`` steps (+ extxyz export)
``md.log``            one line per step: step, time, target and kinetic T, energies, ...
``checkpoint.pkl``    the last checkpoint (written to a temporary name, then renamed)
``final.traj``        the structure after the quench and the final optimisation
``relax.log``         the optimiser's log
``analysis/``         region-resolved RDF and coordination (JSON, CSV, PNG)
====================  ==============================================================

Every MPI rank runs the same loop with the same random numbers; only rank 0 writes. (ASE's
``read``/``write`` are collective under MPI unless given ``parallel=False``: code that only
rank 0 runs must pass it.)
"""
import math
import os
import pickle
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.constraints import FixAtoms

from .config import Config, calculator_settings, config_from_dict
from .errors import Interrupted, RunawayDynamics, SCFFailure, UserError
from .kernels.parallel import get_comm
from .structures import (BUILDERS, fixed_mask, format_region_report, min_distance, read_structure,
                         split_regions)

CHECKPOINT_VERSION = 1
MIN_DISTANCE_A = 0.5
LOG_COLUMNS = ("step", "time_fs", "T_target_K", "T_kin_K", "E_pot_eV", "E_kin_eV",
               "E_conserved_eV", "s_per_step", "scf_iter", "stage")


# --------------------------------------------------------------------------- structure
def build_structure(cfg):
    """The starting model of ``cfg``: crystal (builder or file), supercell, regions, defects."""
    st = cfg.structure
    if st.file:
        atoms = read_structure(st.file)
        atoms = atoms.repeat(st.repeat) if tuple(st.repeat) != (1, 1, 1) else atoms
    else:
        atoms = BUILDERS[st.builder](st.repeat)
    if not atoms.pbc[cfg.regions.axis]:
        raise UserError(f"the structure is not periodic along axis {cfg.regions.axis}: "
                        "the crystal/melt split needs a periodic cell")
    split_regions(atoms, axis=cfg.regions.axis, melt_fraction=cfg.regions.melt_fraction,
                  origin=cfg.regions.origin, fix_crystal=cfg.regions.fix_crystal)
    if st.defects and st.defect_stage == "before-melt":
        atoms = apply_defect_recipe(atoms, st.defects, st.seed)
    check_structure(atoms)
    return atoms


def apply_defect_recipe(atoms, recipe, seed):
    """Apply a defect recipe (a list, or 'paper' for the paper's defective model)."""
    from .defects import PAPER_DEFECTIVE_RECIPE, apply_defects
    if recipe == "paper":
        recipe = PAPER_DEFECTIVE_RECIPE
    atoms, _records = apply_defects(atoms, recipe, seed=seed)
    return atoms


def composition_text(atoms):
    from .defects import composition_report, format_composition
    return format_composition(composition_report(atoms))


def check_structure(atoms):
    """Refuse a model the dynamics cannot run: overlapping atoms, nothing mobile."""
    dmin = min_distance(atoms)
    if dmin < MIN_DISTANCE_A:
        raise UserError(f"atoms closer than {MIN_DISTANCE_A} Å ({dmin:.3f} Å): check the structure "
                        "file, its cell and units")
    if fixed_mask(atoms).all():
        raise UserError("all atoms are fixed: nothing can melt (check regions.melt_fraction and "
                        "any FixAtoms in the structure file)")


# --------------------------------------------------------------------------- run folder
def default_run_dir(cfg, comm):
    """``runs/<name>-<YYYYmmdd-HHMMSS>`` (the same on every rank; unique: suffix if taken)."""
    if comm.Get_rank() == 0:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{cfg.output.name}-{stamp}"
        n = 1
        while path.exists():
            n += 1
            path = Path("runs") / f"{cfg.output.name}-{stamp}-{n}"
    else:
        path = None
    return Path(comm.bcast(str(path) if path else None, root=0))


def prepare_run_dir(run_dir, overwrite, comm):
    """Create ``run_dir`` on rank 0; an existing non-empty folder needs ``overwrite``."""
    error = None
    if comm.Get_rank() == 0:
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            error = f"run folder {run_dir} exists and is not a folder"
        elif run_dir.exists() and any(run_dir.iterdir()):
            if overwrite:
                shutil.rmtree(run_dir)
            else:
                error = (f"run folder {run_dir} already exists: pass --overwrite to replace it, "
                         f"--restart {run_dir} to continue it, or choose another --output")
        if error is None:
            run_dir.mkdir(parents=True, exist_ok=True)
    error = comm.bcast(error, root=0)
    if error:
        raise UserError(error)


# --------------------------------------------------------------------------- progress
class Progress:
    """A tqdm bar with ETA on a terminal, plain log lines otherwise (rank 0 only)."""

    def __init__(self, total, initial, mode, is_root, log_every=0, stream=None):
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "bar" if interactive(self.stream) else "log"
        self.mode = mode if is_root else "none"
        self.total, self.initial = total, initial
        self.log_every = log_every or max(1, (total - initial) // 20)
        self.t0 = time.perf_counter()
        self.bar = None
        if self.mode == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="step", file=self.stream,
                            dynamic_ncols=True)

    def update(self, step, record):
        if self.mode == "bar":
            self.bar.update(1)
            self.bar.set_postfix_str(f"{record['stage']} T={record['T_target_K']:.0f}/"
                                     f"{record['T_kin_K']:.0f} K", refresh=False)
        elif self.mode == "log" and (step % self.log_every == 0 or step == self.total):
            done = step - self.initial
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / done * (self.total - step) if done else float("nan")
            print(f"step {step}/{self.total} ({100.0 * step / self.total:.1f}%)  "
                  f"t={record['time_fs']:.1f} fs  {record['stage']}  "
                  f"T_target={record['T_target_K']:.0f} K  T_kin={record['T_kin_K']:.0f} K  "
                  f"E_pot={record['E_pot_eV']:.4f} eV  {record['s_per_step']:.2f} s/step  "
                  f"ETA {format_seconds(eta)}", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


#: Set by MPI launchers and batch schedulers: output then goes to a job log, not a person
#: (OpenMPI even hands its ranks a pseudo-terminal, so isatty() alone would say "terminal").
BATCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_JOB_ID", "PBS_JOBID")


def interactive(stream):
    """True when ``stream`` is a person's terminal: not a file, pipe, MPI rank or batch job."""
    return stream.isatty() and not any(v in os.environ for v in BATCH_VARIABLES)


def format_seconds(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# --------------------------------------------------------------------------- signals
class StopFlag:
    """Set by SIGTERM / SIGINT (what a batch scheduler sends before the wall-time kill)."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- checkpoints
def write_atomic(path, data: bytes):
    """Write ``data`` to ``path`` through a temporary file and a rename (crash-safe)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_traj(path, atoms):
    """Write one frame to an ASE .traj file from this rank, whatever its world rank is."""
    from ase.io.trajectory import Trajectory
    with Trajectory(path, "w", master=True) as traj:
        traj.write(atoms)


def read_checkpoint(run_dir):
    path = Path(run_dir) / "checkpoint.pkl"
    if not path.exists():
        raise UserError(f"no checkpoint in {run_dir}: it is not a meltquench run folder, or the "
                        "run stopped before its first checkpoint (start it again)")
    with open(path, "rb") as fh:
        state = pickle.load(fh)
    if state.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} was written by another meltquench version")
    return state


def atoms_from_checkpoint(state):
    atoms = Atoms(numbers=state["numbers"], positions=state["positions"], cell=state["cell"],
                  pbc=state["pbc"], tags=state["tags"], masses=state["masses"],
                  momenta=state["momenta"], info=state["info"])
    if len(state["fixed"]):
        atoms.set_constraint(FixAtoms(indices=state["fixed"]))
    return atoms


# --------------------------------------------------------------------------- the run
@dataclass
class RunResult:
    """What a finished run left behind."""

    run_dir: Path
    atoms: Atoms
    nsteps: int
    analysis: object = None
    files: dict = field(default_factory=dict)


class MeltQuench:
    """One melt-quench run in one run folder (see the module docstring)."""

    def __init__(self, cfg: Config, run_dir, comm=None, stop_after_s=None, stream=None,
                 calculator=None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.comm = get_comm(comm)
        self.is_root = self.comm.Get_rank() == 0
        self.schedule = cfg.build_schedule()
        self.dt_fs = cfg.dynamics.timestep_fs
        self.nsteps = self.schedule.nsteps(self.dt_fs)
        self.stop_after_s = stop_after_s
        self.stream = stream or sys.stdout
        self._calculator = calculator  # a ready ASE calculator (Python users, tests)
        self.t_start = time.perf_counter()
        self.n_frames = 0
        self.fallback_used = False

    # ---- small helpers
    def say(self, text):
        if self.is_root:
            print(text, file=self.stream, flush=True)

    def path(self, name):
        return self.run_dir / name

    def make_calculator(self, settings=None):
        if self._calculator is not None and settings is None:
            return self._calculator
        from .calculators import make_calculator
        return make_calculator(settings or calculator_settings(self.cfg), directory=self.run_dir,
                               comm=self.comm)

    def make_dynamics(self, atoms, temperature_K):
        from .dynamics import make_dynamics
        d = self.cfg.dynamics
        params = {"nhc": dict(tdamp_fs=d.tdamp_fs, tchain=d.tchain, tloop=d.tloop),
                  "bussi": dict(taut_fs=d.taut_fs), "berendsen": dict(taut_fs=d.taut_fs),
                  "langevin": dict(friction_per_fs=d.friction_per_fs), "nve": {}}[d.thermostat]
        return make_dynamics(d.thermostat, atoms, self.dt_fs, temperature_K, seed=d.seed, **params)

    # ---- start and restart
    def start(self, atoms):
        """Initial velocities at T(0) for the mobile atoms; files of a new run."""
        from ase.md.velocitydistribution import thermalize_momenta
        from ase.parallel import DummyMPI
        rng = np.random.default_rng(self.cfg.dynamics.seed)
        # Every rank draws the same numbers from the same seed: no broadcast needed.
        thermalize_momenta(atoms, self.schedule.temperature(0.0), rng=rng, comm=DummyMPI())
        if self.is_root:
            (self.run_dir / "config.yaml").write_text(self.cfg.to_yaml())
            write_traj(self.path("initial.traj"), atoms)
            with open(self.path("md.log"), "w") as fh:
                fh.write("# " + " ".join(LOG_COLUMNS) + "\n")
        self.comm.Barrier()
        return atoms

    def resume(self, state):
        """Cut the trajectory and the log back to the checkpoint (rank 0)."""
        self.n_frames = state["n_frames"]
        if not self.is_root:
            return
        from ase.io.trajectory import Trajectory
        traj_path = self.path("trajectory.traj")
        if traj_path.exists():
            frames = []
            with Trajectory(traj_path) as traj:
                for i in range(min(self.n_frames, len(traj))):
                    frames.append(traj[i])
            tmp = traj_path.with_name("trajectory.traj.tmp")
            with Trajectory(tmp, "w", master=True) as out:
                for frame in frames:
                    out.write(frame)
            os.replace(tmp, traj_path)
        log = self.path("md.log")
        if log.exists():
            kept = [line for line in log.read_text().splitlines(keepends=True)
                    if line.startswith("#") or int(line.split()[0]) <= state["step"]]
            write_atomic(log, "".join(kept).encode())

    def checkpoint(self, atoms, dyn, step, phase="md"):
        state = {"version": CHECKPOINT_VERSION, "step": step, "phase": phase,
                 "numbers": atoms.numbers.copy(), "positions": atoms.positions.copy(),
                 "momenta": atoms.get_momenta(), "masses": atoms.get_masses(),
                 "cell": atoms.cell.array.copy(), "pbc": atoms.pbc.copy(),
                 "tags": atoms.get_tags(), "info": dict(atoms.info),
                 "fixed": np.flatnonzero(fixed_mask(atoms)),
                 "dynamics": dyn.get_state() if dyn is not None else None,
                 "n_frames": self.n_frames, "fallback_used": self.fallback_used}
        if self.is_root:
            write_atomic(self.path("checkpoint.pkl"), pickle.dumps(state, protocol=4))
        self.comm.Barrier()

    # ---- one step, with its guards
    def _snapshot(self, atoms, dyn):
        return atoms.positions.copy(), atoms.get_momenta(), dyn.get_state()

    def _restore(self, atoms, dyn, snap):
        atoms.set_positions(snap[0], apply_constraint=False)
        atoms.set_momenta(snap[1], apply_constraint=False)
        dyn.set_state(snap[2])

    def _step(self, atoms, dyn, step):
        """Advance one step; on SCF non-convergence retry once with the fallback settings."""
        snap = self._snapshot(atoms, dyn)
        try:
            dyn.run(1)
            return snap
        except Exception as exc:  # GPAW: KohnShamConvergenceError
            if "Convergence" not in type(exc).__name__:
                raise
            error = exc
        from .calculators import conservative_fallback
        fallback = None if self.fallback_used else conservative_fallback(calculator_settings(self.cfg))
        if fallback is not None:
            self.say(f"step {step}: SCF did not converge ({type(error).__name__}); retrying with the fallback "
                     "settings (more conservative mixer), kept for the rest of the run")
            self.fallback_used = True
            self._restore(atoms, dyn, snap)
            atoms.calc = self.make_calculator(fallback)
            try:
                dyn.run(1)
                return snap
            except Exception as exc:
                if "Convergence" not in type(exc).__name__:
                    raise
                error = exc
        self._restore(atoms, dyn, snap)
        self.checkpoint(atoms, dyn, step - 1)
        raise SCFFailure(f"SCF did not converge at step {step} ({type(error).__name__}), also with the fallback "
                         f"settings; checkpoint of step {step - 1} written: change "
                         f"calculator.gpaw.mixer/convergence in {self.path('config.yaml')} and "
                         f"run 'meltquench run --restart {self.run_dir}'")

    def _guard(self, atoms, record, step, dyn, snap):
        """Stop on runaway dynamics, with a checkpoint of the last good step."""
        problem = None
        if not (np.isfinite(atoms.positions).all() and math.isfinite(record["E_pot_eV"])
                and math.isfinite(record["T_kin_K"])):
            problem = "non-finite positions or energies"
        else:
            limit = self.cfg.dynamics.max_temperature_factor * max(record["T_target_K"], 1000.0)
            if record["T_kin_K"] > limit:
                problem = (f"kinetic temperature {record['T_kin_K']:.0f} K above {limit:.0f} K "
                           f"(target {record['T_target_K']:.0f} K)")
            else:
                dmin = min_distance(atoms)
                if dmin < MIN_DISTANCE_A:
                    problem = f"atoms {dmin:.3f} Å apart (below {MIN_DISTANCE_A} Å)"
        if problem:
            self._restore(atoms, dyn, snap)
            self.checkpoint(atoms, dyn, step - 1)
            raise RunawayDynamics(f"runaway dynamics at step {step}: {problem}; checkpoint of step "
                                  f"{step - 1} written in {self.run_dir} (try a smaller time step "
                                  "or a tighter thermostat, then --restart)")

    def _record(self, atoms, dyn, step, seconds):
        t_fs = step * self.dt_fs
        return {"step": step, "time_fs": t_fs, "T_target_K": self.schedule.temperature(t_fs),
                "T_kin_K": dyn.get_kinetic_temperature(), "E_pot_eV": atoms.get_potential_energy(),
                "E_kin_eV": atoms.get_kinetic_energy(), "E_conserved_eV": dyn.get_conserved_energy(),
                "s_per_step": seconds, "scf_iter": self._scf(atoms),
                "stage": self.schedule.stage_at(max(t_fs - 1e-9, 0.0)).name}

    @staticmethod
    def _scf(atoms):
        from .calculators import scf_iterations
        n = scf_iterations(atoms.calc)
        return -1 if n is None else int(n)

    def _write_step(self, atoms, record, step, traj):
        if not self.is_root:
            return
        with open(self.path("md.log"), "a") as fh:
            fh.write(f"{record['step']:d} {record['time_fs']:.3f} {record['T_target_K']:.3f} "
                     f"{record['T_kin_K']:.3f} {record['E_pot_eV']:.8f} {record['E_kin_eV']:.8f} "
                     f"{record['E_conserved_eV']:.8f} {record['s_per_step']:.4f} "
                     f"{record['scf_iter']:d} {record['stage']}\n")

    def _want_stop(self, stop, step_seconds):
        """Collective decision: every rank stops after the same step."""
        reason = 0
        if stop.signal is not None:
            reason = 1
        elif self.stop_after_s is not None:
            elapsed = time.perf_counter() - self.t_start
            if elapsed + 2.0 * max(step_seconds, 1e-3) > self.stop_after_s:
                reason = 2
        if self.comm.Get_size() > 1:
            from mpi4py import MPI
            reason = self.comm.allreduce(reason, op=MPI.MAX)
        return reason

    # ---- the whole run
    def run(self, atoms=None, state=None):
        """Run (``atoms``: a new run) or continue (``state``: a checkpoint) to the end."""
        if state is not None:
            atoms = atoms_from_checkpoint(state)
            first = state["step"] + 1
            self.fallback_used = state.get("fallback_used", False)
            self.resume(state)
            if state["phase"] == "done":
                raise UserError(f"run {self.run_dir} has already finished")
        else:
            atoms = self.start(atoms)
            first = 1
        settings = calculator_settings(self.cfg)
        if self.fallback_used:
            from .calculators import conservative_fallback
            settings = conservative_fallback(settings) or settings
            atoms.calc = self.make_calculator(settings)
        else:
            atoms.calc = self.make_calculator()
        dyn = self.make_dynamics(atoms, self.schedule.temperature((first - 1) * self.dt_fs))
        if state is not None and state["dynamics"] is not None:
            dyn.set_state(state["dynamics"])
        self.say(self.plan_text(atoms, first))

        from ase.io.trajectory import Trajectory
        traj = Trajectory(self.path("trajectory.traj"), "a", master=True) if self.is_root else None
        progress = Progress(self.nsteps, first - 1, self.cfg.output.progress, self.is_root,
                            self.cfg.output.log_every, self.stream)
        interval = self.cfg.output.trajectory_interval
        try:
            if first == 1 and state is None:
                record = self._record(atoms, dyn, 0, 0.0)
                layout = gpaw_layout(atoms.calc)
                if layout:
                    self.say(f"GPAW parallel layout: {layout}")
                self._write_step(atoms, record, 0, traj)
                self._write_frame(atoms, traj)
                self.checkpoint(atoms, dyn, 0)
            step_seconds = 0.0
            with StopFlag() as stop:
                for step in range(first, self.nsteps + 1):
                    dyn.set_temperature(self.schedule.temperature(step * self.dt_fs))
                    t0 = time.perf_counter()
                    snap = self._step(atoms, dyn, step)
                    step_seconds = time.perf_counter() - t0
                    record = self._record(atoms, dyn, step, step_seconds)
                    self._guard(atoms, record, step, dyn, snap)
                    self._write_step(atoms, record, step, traj)
                    if step % interval == 0:
                        self._write_frame(atoms, traj)
                    progress.update(step, record)
                    reason = self._want_stop(stop, step_seconds)
                    if step % self.cfg.output.checkpoint_interval == 0 or step == self.nsteps or reason:
                        self.checkpoint(atoms, dyn, step)
                    if reason and step < self.nsteps:
                        why = "a stop signal" if reason == 1 else "the --stop-after budget"
                        raise Interrupted(f"stopped by {why} after step {step}/{self.nsteps}; "
                                          f"continue with: meltquench run --restart {self.run_dir}")
        finally:
            progress.close()
            if traj is not None:
                traj.close()
        return self.finish(atoms, dyn)

    def _write_frame(self, atoms, traj):
        if traj is not None:
            traj.write(atoms)
        self.n_frames += 1

    def finish(self, atoms, dyn):
        """Defects after the quench, final optimisation, exports, analysis."""
        st = self.cfg.structure
        if st.defects and st.defect_stage == "after-quench":
            calc = atoms.calc
            atoms = apply_defect_recipe(atoms, st.defects, st.seed)
            atoms.calc = calc
            self.say(f"defects made after the quench:\n{composition_text(atoms)}")
        d = self.cfg.dynamics
        files = {}
        if d.final_relax:
            from ase.optimize import BFGS, FIRE
            opt_cls = {"FIRE": FIRE, "BFGS": BFGS}[d.final_relax]
            logfile = str(self.path("relax.log")) if self.is_root else None
            opt = opt_cls(atoms, logfile=logfile)
            converged = opt.run(fmax=d.relax_fmax, steps=d.relax_steps)
            fmax = np.abs(atoms.get_forces()).max() if len(atoms) else 0.0
            self.say(f"final {d.final_relax} optimisation: {opt.nsteps} steps, max |F| component "
                     f"{fmax:.3f} eV/Å ({'converged' if converged else 'NOT converged'} to "
                     f"{d.relax_fmax} eV/Å)")
            files["relax_log"] = self.path("relax.log")
        if self.is_root:
            from ase.io import read, write
            write_traj(self.path("final.traj"), atoms)
            files["final"] = self.path("final.traj")
            files["trajectory"] = self.path("trajectory.traj")
            if self.cfg.output.extxyz:
                frames = read(self.path("trajectory.traj"), index=":", parallel=False)
                write(self.path("trajectory.extxyz"), frames, format="extxyz", parallel=False)
                write(self.path("final.extxyz"), atoms, format="extxyz", parallel=False)
                files["extxyz"] = self.path("trajectory.extxyz")
        self.checkpoint(atoms, None, self.nsteps, phase="done")
        result = RunResult(self.run_dir, atoms, self.nsteps, files=files)
        if self.cfg.analysis.enabled:
            result.analysis = self.analyse()
            files["analysis"] = self.path("analysis")
        return result

    def analysis_frames(self):
        """(source, start) of the frames ``analysis.frames`` names."""
        an = self.cfg.analysis
        if an.frames == "final":
            return self.path("final.traj"), 0
        if an.frames == "all":
            return self.path("trajectory.traj"), 0
        interval = self.cfg.output.trajectory_interval
        t_final = self.schedule.stage_start_fs(self.schedule.stages[-1].name)
        first_step = int(math.ceil(t_final / self.dt_fs - 1e-9))
        return self.path("trajectory.traj"), int(math.ceil(first_step / interval))

    def analyse(self):
        from .analysis import analyse
        an = self.cfg.analysis
        source, start = self.analysis_frames()
        self.comm.Barrier()
        result = analyse(str(source), rmax=an.rmax, nbins=an.nbins, start=start,
                         interface_width=an.interface_width, cutoffs=an.cutoffs or None,
                         pairs=an.pairs, comm=self.comm)
        result.write(self.path("analysis"))
        self.say(f"\nRegion-resolved structure ({an.frames} frames of {source.name}):\n"
                 f"{result.table()}")
        return result

    def plan_text(self, atoms, first):
        c = self.cfg
        lines = [f"meltquench run in {self.run_dir}",
                 f"structure: {atoms.get_chemical_formula()} ({len(atoms)} atoms), cell "
                 + " ".join(f"{x:.3f}" for x in atoms.cell.cellpar()),
                 format_region_report(atoms),
                 *defect_lines(c, atoms),
                 f"calculator: {describe_calculator(c)}",
                 f"dynamics: {c.dynamics.thermostat}, {self.dt_fs} fs steps, {self.nsteps} steps "
                 f"({self.schedule.total_fs / 1000.0:.3f} ps), seed {c.dynamics.seed}",
                 self.schedule.describe()]
        if first > 1:
            lines.append(f"continuing from the checkpoint of step {first - 1}")
        if self.comm.Get_size() > 1:
            lines.append(f"MPI: {self.comm.Get_size()} ranks (rank 0 writes)")
        return "\n".join(lines)


def defect_lines(cfg, atoms):
    """What the plan says about defects: the composition now, or what comes after the quench."""
    st = cfg.structure
    if not st.defects:
        return []
    recipe = "the paper's recipe" if st.defects == "paper" else f"{len(st.defects)} recipe entries"
    if st.defect_stage == "before-melt":
        return [f"defects ({recipe}, made before the melt):", composition_text(atoms)]
    return [f"defects: {recipe}, made after the quench"]


def gpaw_layout(calc):
    """'kpt 1, domain 2, band 1' as GPAW set it up (after its first calculation), else None."""
    from .calculators import inner_calculators
    for c in inner_calculators(calc):
        wfs = getattr(getattr(c, "_dft", None), "ibzwfs", None)  # GPAW 26's ASE interface
        if wfs is not None:
            return (f"kpt {wfs.kpt_comm.size}, domain {wfs.domain_comm.size}, "
                    f"band {wfs.band_comm.size}")
    return None


def describe_calculator(cfg):
    c = cfg.calculator
    if c.name == "gpaw":
        g = c.gpaw
        basis = f"LCAO {g.get('basis')}" if g.get("mode") == "lcao" else f"PW {g.get('ecut')} eV"
        u = ", ".join(f"U {v} eV on {k} d" for k, v in (g.get("hubbard_u") or {}).items())
        text = f"GPAW {basis}, {g.get('xc')}" + (f", {u}" if u else "")
    else:
        text = c.name
    return text + (", D3(BJ)" if c.dispersion == "d3bj" and c.name != "vasp" else "")


def run(cfg, run_dir=None, comm=None, overwrite=None, stop_after_s=None, stream=None,
        atoms=None, calculator=None):
    """Run a melt-quench from scratch; returns a :class:`RunResult`.

    ``atoms`` replaces the configured structure (regions must already be labelled, as
    :func:`~meltquench.structures.split_regions` does); ``calculator`` replaces the configured
    one (any ASE calculator).
    """
    comm = get_comm(comm)
    if run_dir is None:
        run_dir = cfg.output.directory or default_run_dir(cfg, comm)
    overwrite = cfg.output.overwrite if overwrite is None else overwrite
    if atoms is None:
        atoms = build_structure(cfg)
    else:
        atoms = atoms.copy()
        check_structure(atoms)
    prepare_run_dir(run_dir, overwrite, comm)
    engine = MeltQuench(cfg, run_dir, comm=comm, stop_after_s=stop_after_s, stream=stream,
                        calculator=calculator)
    return engine.run(atoms=atoms)


def restart(run_dir, comm=None, stop_after_s=None, stream=None, calculator=None):
    """Continue the run in ``run_dir`` from its last checkpoint, with its own config.yaml."""
    from .config import read_yaml
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--restart: {run_dir} is not a folder")
    state = read_checkpoint(run_dir)
    cfg = config_from_dict(read_yaml(run_dir / "config.yaml"), source=str(run_dir / "config.yaml"))
    engine = MeltQuench(cfg, run_dir, comm=comm, stop_after_s=stop_after_s, stream=stream,
                        calculator=calculator)
    return engine.run(state=state)
