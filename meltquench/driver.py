"""Runs a melt-quench programme on a heterophase model: the engine's main loop.

:func:`run` takes a :class:`~meltquench.config.Config`, builds the model
(:mod:`meltquench.model`), the calculator (:mod:`meltquench.calculators`) and the NVT scheme
(:mod:`meltquench.dynamics`), and steps the dynamics with the target temperature following
the :class:`~meltquench.schedule.Schedule`. After every step the observers attached to the
dynamics (:mod:`meltquench.observers`) record the step, guard against runaway dynamics and
write ``md.log``, the trajectory and the checkpoints. Everything goes into one run folder
(:mod:`meltquench.rundir`):

====================  ==============================================================
``config.yaml``       the resolved configuration (what ``--restart`` continues with)
``initial.traj``      the model before the melt (region labels as tags)
``trajectory.traj``   one frame every ``output.trajectory_interval`` steps (+ extxyz export)
``md.log``            one line per step (:class:`~meltquench.observers.StepRecord`)
``checkpoint.npz``    the last checkpoint, data only (:mod:`meltquench.checkpoint`)
``final.traj``        the structure after the quench and the final optimisation
``relax.log``         the optimiser's log
``analysis/``         region-resolved RDF and coordination, melt diagnostics (did it melt?),
                      force spot checks against the finish calculator (JSON, CSV, PNG)
``.meltquench-run``   the marker of a meltquench run folder; ``.meltquench-lock`` its lock
====================  ==============================================================

A run holds the folder's lock (:class:`~meltquench.rundir.RunLock`) from start to end. The
checkpoint's ``phase`` says how far the run got: ``md`` (at ``step``), ``analysis`` (MD, final
optimisation and exports done) or ``done``; ``--restart`` goes on from there, and leaves a
finished run untouched. It continues with the run folder's ``config.yaml``, which may differ
from the run's configuration only in the keys of :data:`RESTART_MAY_CHANGE`, and, while no
step has used the finish calculator, in those of :data:`RESTART_BEFORE_FINISH_MAY_CHANGE`.

Every MPI rank runs the same loop with the same random numbers; only rank 0 writes.
"""
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Optional
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write
from ase.md.velocitydistribution import thermalize_momenta
from ase.optimize import BFGS, FIRE
from ase.parallel import DummyMPI

from . import calculators, dynamics, rundir
from .analysis import analyse, melt_diagnostics, vo_cutoff
from .calculators.scf_checkpoint import FILE_NAME as SCF_CHECKPOINT_NAME, SCFCheckpoint
from .checks import SpotChecks, unconstrained_forces
from .checkpoint import atoms_from_checkpoint, checkpoint_state, read_checkpoint
from .config import Config, config_from_dict, read_yaml
from .errors import Interrupted, RunawayDynamics, SCFFailure, UserError
from .kernels.parallel import allreduce_max, get_comm
from .model import (MIN_DISTANCE_A, apply_defect_recipe, build_model, check_model,
                    composition_text, relax_region)
from .observers import (TIGHTER_COUPLING, MDLogWriter, StepRecord, StepRecorder,
                        TrajectoryWriter, conserved_drift, drift_text, temperature_tracking,
                        tracking_text, width_changes)
from .plan import run_plan_text
from .progress import Progress, StopFlag
from .structures import fixed_mask, min_distance

OPTIMISERS = {"FIRE": FIRE, "BFGS": BFGS}

#: Configuration keys (dotted; a section name covers its keys) that may differ on
#: ``--restart`` from the run's configuration: numerical settings of the SCF, output and
#: analysis, the thermostat couplings the checkpoint does not hold, the runaway guard and
#: the final optimisation. Any other change (time step, schedule, model, physics of the
#: calculator, NHC time constant, seeds, ...) would not continue the same run and is refused.
_NUMERICAL_CALCULATOR_KEYS = (
    "gpaw.mixer", "gpaw.convergence", "gpaw.maxiter", "gpaw.scf_stagnation", "gpaw.parallel",
    "gpaw.extrapolation",
    "vasp.ncore", "vasp.algo", "tblite.max_iterations", "ml.threads")
RESTART_MAY_CHANGE = (
    "output", "analysis", "replicas.vary", "finish.check_every",
    *(f"{section}.{key}" for section in ("calculator", "finish.calculator")
      for key in _NUMERICAL_CALCULATOR_KEYS),
    "dynamics.taut_fs", "dynamics.friction_per_fs", "dynamics.max_temperature_factor",
    "dynamics.final_relax", "dynamics.relax_fmax", "dynamics.relax_steps",
    "dynamics.relax_region", "dynamics.relax_radius", "finish.scf_checkpoint_s")
#: Keys that may also change on ``--restart`` while no step has used the finish calculator
#: (the checkpoint is in the MD, at or before the last step of the run's own calculator,
#: under the old configuration and the new): the finish has not computed anything yet.
RESTART_BEFORE_FINISH_MAY_CHANGE = ("finish.calculator", "finish.anneal_ps", "finish.relax_steps")


def last_main_step(cfg, nsteps):
    """The last MD step of the run's own calculator in a programme of ``nsteps`` steps: later
    steps (the anneal) are the finish calculator's, as is the final optimisation."""
    if cfg.finish.calculator is not None and cfg.finish.anneal_ps > 0:
        return int(round(cfg.build_schedule().stage_start_fs("anneal")
                         / cfg.dynamics.timestep_fs))
    return nsteps


def _flatten(tree, prefix=""):
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def restart_changes(old, new, before_finish=False, may_change=None):
    """The keys whose values differ between configuration dicts ``old`` and ``new``, as
    ``(allowed, refused)`` lists of ``(key, old value, new value)``. A key ``old`` does not
    have (one a later meltquench added) is not a change: the run did not know it.
    ``before_finish``: no step has used the finish calculator yet, so the keys of
    :data:`RESTART_BEFORE_FINISH_MAY_CHANGE` may change too. ``may_change``: the keys that
    may change in place of those (dotted; a section name covers its keys)."""
    a, b = _flatten(old), _flatten(new)
    if may_change is None:
        may_change = RESTART_MAY_CHANGE + (RESTART_BEFORE_FINISH_MAY_CHANGE if before_finish
                                           else ())

    def may(key):
        return any(key == p or key.startswith(p + ".") for p in may_change)

    # a section that is null on one side (finish.calculator: null <-> settings) is one change
    sections = sorted(key for side, other in ((a, b), (b, a)) for key in side
                      if side[key] is None and any(k.startswith(key + ".") for k in other))
    # the keys under a section old had as null are new settings, not keys the run did not know
    keys = set(a) | {key for key in b if any(key.startswith(s + ".") for s in sections)}
    allowed, refused = [], []
    for key in sorted(keys):
        if any(key.startswith(s + ".") for s in sections) or a.get(key) == b.get(key):
            continue
        (allowed if may(key) else refused).append((key, a.get(key), b.get(key)))
    for section in sections:
        changed = [key for key in keys if key.startswith(section + ".")
                   and a.get(key) != b.get(key)]
        (allowed if all(map(may, changed)) else refused).append(
            (section, _subtree(old, section), _subtree(new, section)))
    return allowed, refused


def _subtree(tree, key):
    """``tree['a']['b']`` for ``key`` 'a.b' (None where it is missing)."""
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def describe_change(key, old, new):
    """'key old -> new', a settings section shown by its name: 'finish.calculator {name:
    gpaw, ...} -> None' rather than every key under it."""
    def shown(value):
        if isinstance(value, dict):
            return "{" + (f"name: {value['name']}, " if "name" in value else "") + "...}"
        return repr(value)
    return f"{key} {shown(old)} -> {shown(new)}"


@dataclass
class RunResult:
    """What a finished run left behind."""

    run_dir: Path
    atoms: Atoms
    nsteps: int
    analysis: object = None
    melt: object = None  # the melt diagnostics (analysis.MeltResult): did it melt?
    finish_failed: Optional[str] = None  # why the finish calculator's part was given up
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
        #: the last step of the run's own calculator: later steps (the anneal) are the
        #: finish calculator's, as is the final optimisation
        self.last_main_step = last_main_step(cfg, self.nsteps)
        self.stop_after_s = stop_after_s
        self.stream = stream or sys.stdout
        self._calculator = calculator  # a ready ASE calculator (Python users, tests)
        self.t_start = time.perf_counter()
        self.fallback_used = False
        self.frames = None  # the TrajectoryWriter, while the MD runs
        self.n_frames = 0  # frames in trajectory.traj once the MD is over
        self.stop = None  # the StopFlag, while the run runs
        self.recorder = None  # the StepRecorder, once the MD runs
        self.attached_finish = False  # whether the atoms carry the finish calculator
        self.finish_failed = None  # why the finish was given up, if it was
        #: how a stopped run continues, and where its final optimisation then starts
        self.continue_command = f"meltquench run --restart {self.run_dir}"
        self.relax_resumes = "the optimisation starts again from the end of the MD"
        self.relax_step_s = 0.0  # wall time of the optimiser's last step
        #: the finish calculator's SCF in progress, kept on disk (finish.scf_checkpoint_s)
        self.scf_checkpoint = None
        self._relax_clock = None  # when the optimiser's last step ended

    def say(self, text):
        if self.is_root:
            print(text, file=self.stream, flush=True)

    def path(self, name):
        return self.run_dir / name

    def in_finish(self, step):
        """True where the finish calculator computes: MD steps after :attr:`last_main_step`
        (the anneal) and, with ``step=None``, the final optimisation."""
        if self.cfg.finish.calculator is None:
            return False
        return step is None or step > self.last_main_step

    def calculator_settings(self, step=None):
        """The settings of the calculator of MD step ``step`` (None: the final optimisation's),
        or their SCF fallback once the fallback was needed."""
        settings = self.cfg.finish.calculator if self.in_finish(step) else self.cfg.calculator
        if self.fallback_used:
            settings = calculators.conservative_fallback(settings) or settings
        return settings

    def user_calculator(self, step):
        """The calculator a Python user gave, where it computes (None elsewhere)."""
        if self._calculator is None or self.fallback_used or self.in_finish(step):
            return None
        return self._calculator

    def make_calculator(self, step, atoms):
        """The calculator of MD step ``step`` (None: of the final optimisation) for ``atoms``."""
        return self.user_calculator(step) or calculators.make_calculator(
            self.calculator_settings(step), directory=self.run_dir, comm=self.comm,
            natoms=len(atoms))

    def attach_calculator(self, atoms, step):
        """Give ``atoms`` the calculator of MD step ``step`` (None: of the final optimisation)
        and the initial magnetic moments its settings imply, its electrons at the temperature
        of ``step``."""
        calculators.prepare_atoms(self.calculator_settings(step), atoms)
        atoms.calc = self.make_calculator(step, atoms)
        self.attached_finish = self.in_finish(step)
        if self.attached_finish and step is None and self.scf_checkpoint is not None:
            self.scf_checkpoint.attach(atoms.calc)
        return self.follow_electrons(atoms, step)

    def follow_electrons(self, atoms, step):
        """Set the smearing width for the target temperature of ``step`` (None: the final
        optimisation, at the programme's last temperature) (``electronic_temperature:
        follow``): the step's force call runs at it. A pure function of the step, so a restart
        uses the widths of the uninterrupted run. A calculator the user gave is left as it is.
        Returns the width (eV), or None where none was set."""
        if self.user_calculator(step) is not None:
            return None
        t_fs = (self.nsteps if step is None else step) * self.dt_fs
        return calculators.set_electronic_temperature(
            atoms.calc, self.calculator_settings(step), self.schedule.temperature(t_fs))

    # ---- start and restart
    def start(self, atoms):
        """Initial velocities at T(0) for the mobile atoms; files of a new run."""
        rng = np.random.default_rng(self.cfg.dynamics.seed)
        # Every rank draws the same numbers from the same seed: no broadcast needed.
        thermalize_momenta(atoms, self.schedule.temperature(0.0), rng=rng, comm=DummyMPI())
        if self.is_root:
            self.path("config.yaml").write_text(self.cfg.to_yaml())
            rundir.write_traj(self.path("initial.traj"), atoms)
            self.path("md.log").write_text(StepRecord.header())
        self.comm.Barrier()

    def resume(self, state):
        """Cut the trajectory and ``md.log`` back to the checkpoint (rank 0). A last line
        without its newline (a write cut by a kill) is dropped, as are the steps after the
        checkpoint."""
        if not self.is_root:
            return
        rundir.trim_trajectory(self.path("trajectory.traj"), state["n_frames"])
        log = self.path("md.log")
        if log.exists():
            kept = [line for line in log.read_text().splitlines(keepends=True)
                    if line.endswith("\n") and line.strip()
                    and (line.startswith("#") or StepRecord.step_of(line) <= state["step"])]
            rundir.write_atomic(log, "".join(kept).encode())

    def checkpoint(self, atoms, dyn, step, phase="md", scf_memory=True):
        """Write the checkpoint of ``step``. In the MD it holds what the calculator carries
        between steps (:func:`~meltquench.calculators.scf_memory`: GPAW's extrapolation and
        mixer), unless ``scf_memory`` is False: after a step was undone the calculator
        remembers that step, which is not the checkpoint's."""
        n_frames = self.frames.n_frames if self.frames is not None else self.n_frames
        memory = (calculators.scf_memory(atoms.calc, self.comm)
                  if phase == "md" and scf_memory and atoms.calc is not None else {})
        state = checkpoint_state(atoms, dyn.get_state() if dyn is not None else None, step,
                                 phase, n_frames=n_frames, fallback_used=self.fallback_used,
                                 finish_failed=self.finish_failed or "",
                                 config=self.cfg.to_dict(), scf_memory=memory)
        rundir.write_checkpoint(self.run_dir, state, self.comm)

    # ---- the whole run
    def run(self, atoms=None, state=None):
        """Run (``atoms``: a new run) or continue (``state``: a checkpoint) to the end.

        The MD, then the final optimisation and exports, then the analysis; a checkpoint's
        ``phase`` skips what is done. SIGTERM/SIGINT stop any of them (:class:`Interrupted`).
        """
        phase = "md"
        if state is not None:
            atoms = atoms_from_checkpoint(state)
            self.fallback_used = state.get("fallback_used", False)
            self.finish_failed = state.get("finish_failed") or None
            self.n_frames = state["n_frames"]
            phase = state["phase"]
        elif atoms is not None:
            self.start(atoms)
        with StopFlag(f"continue with: meltquench run --restart {self.run_dir}") as stop:
            self.stop = stop
            if phase == "md":
                if state is not None:
                    self.resume(state)
                first = state["step"] + 1 if state is not None else 1
                self.run_md(atoms, state, first)
                self.report_drift(atoms)
                atoms = self.relax_and_export(atoms)
            else:
                self.say(f"continuing {self.run_dir}: the MD and the final optimisation are "
                         "done; the analysis is next")
            return self.conclude(atoms)

    def run_md(self, atoms, state, first):
        """The MD programme from step ``first`` (a checkpoint's ``state`` or None)."""
        self.attach_calculator(atoms, first - 1)
        dyn = dynamics.from_config(self.cfg.dynamics, atoms,
                                   self.schedule.temperature((first - 1) * self.dt_fs))
        if state is not None and state["dynamics"] is not None:
            dyn.set_state(state["dynamics"])  # with the forces the uninterrupted run had here
            atoms.get_forces()  # at the checkpoint's step and electronic temperature
            left_out = calculators.restore_scf_memory(atoms.calc, state.get("scf_memory"),
                                                      self.comm)
            if left_out:
                self.say(f"the checkpoint's {' and '.join(left_out)} do not fit this run (other "
                         "ranks or settings): it continues to the SCF's precision, not bit for "
                         "bit")
        self.say(run_plan_text(self.cfg, atoms, self.run_dir, first, self.comm.Get_size()))
        self.frames = TrajectoryWriter(self.path("trajectory.traj"), atoms, self.is_root,
                                       n_frames=self.n_frames)
        self.progress = Progress(self.nsteps, first - 1, self.cfg.output.progress, self.is_root,
                                 self.cfg.output.log_every, self.stream)
        try:
            self.md(atoms, dyn, first, self.stop)
        finally:
            self.progress.close()
            self.frames.close()
            self.n_frames = self.frames.n_frames
            self.frames = None

    def md(self, atoms, dyn, first, stop):
        """Steps ``first`` to the end of the programme, the observers after each."""
        self.recorder = StepRecorder(atoms, dyn, self.schedule, self.dt_fs,
                                     calculators.scf_iterations,
                                     calculators.smearing_width_of)
        self.snapshot = None
        dyn.attach(self.recorder, 1)
        dyn.attach(self.guard, 1, atoms, dyn)
        dyn.attach(MDLogWriter(self.path("md.log"), self.recorder, self.is_root), 1)
        dyn.attach(self.frames, self.cfg.output.trajectory_interval)
        dyn.attach(self.report_progress, 1)
        dyn.attach(self.checkpoint_or_stop, 1, atoms, dyn)
        if first == 1:
            atoms.get_forces()
            dyn.call_observers()  # step 0: the starting point
            layout = calculators.parallel_layout(atoms.calc)
            if layout:
                self.say(f"GPAW parallel layout: {layout}")
        for step in range(first, self.nsteps + 1):
            dyn.set_temperature(self.schedule.temperature(step * self.dt_fs))
            self.snapshot = (atoms.positions.copy(), atoms.get_momenta(), dyn.get_state())
            if self.in_finish(step) and not self.attached_finish:
                self.switch_to_finish(atoms, dyn, step)
            self.follow_electrons(atoms, step)
            self.recorder.start()
            self.advance(atoms, dyn, step)
            self.recorder.stop()
            dyn.nsteps += 1
            dyn.call_observers()

    def switch_to_finish(self, atoms, dyn, step):
        """Hand the dynamics to the finish calculator before step ``step``: its forces at the
        current positions start the step (a restart from any checkpoint does the same)."""
        self.say(f"step {step}: switching to the finish calculator, "
                 f"{calculators.describe(self.cfg.finish.calculator)}")
        self.attach_calculator(atoms, step)
        dyn.forget_forces()

    def advance(self, atoms, dyn, step):
        """One step; on SCF non-convergence one retry with the fallback settings, from the state
        before the step."""
        error = self.with_scf_fallback(
            dyn.step, atoms, step,
            lambda name: f"step {step}: SCF did not converge ({name}); retrying with the "
                         "fallback settings (more conservative mixer), kept for the rest of the "
                         "run",
            before_retry=lambda: self.restore(atoms, dyn))
        if error is not None:
            self.abort(SCFFailure, atoms, dyn, step,
                       f"SCF did not converge at step {step} ({type(error).__name__}), also with "
                       "the fallback settings",
                       f"change calculator.gpaw.mixer/convergence in {self.path('config.yaml')} "
                       f"and run 'meltquench run --restart {self.run_dir}'")

    def with_scf_fallback(self, action, atoms, step, retrying, before_retry=None):
        """``action()``; where it fails with SCF non-convergence
        (:func:`~meltquench.calculators.is_scf_failure`) and the calculator of MD step ``step``
        (None: of the final optimisation) has a conservative fallback not yet used: say
        ``retrying(error name)``, switch to the fallback for the rest of the run, call
        ``before_retry()``, attach the fallback calculator and try ``action()`` once more.
        Returns None, or the SCF error that remained; any other error is raised."""
        for retry in (False, True):
            try:
                action()
                return None
            except Exception as exc:
                if not calculators.is_scf_failure(exc):
                    raise
                error = exc
            if retry or self.fallback_used or not calculators.conservative_fallback(
                    self.calculator_settings(step)):
                return error
            detail = str(error).strip()  # SCFStagnation says how far the SCF got
            self.say(retrying(type(error).__name__ + (f": {detail}" if detail else "")))
            self.fallback_used = True
            if before_retry is not None:
                before_retry()
            self.attach_calculator(atoms, step)
        return error

    def restore(self, atoms, dyn):
        """Back to the state before the current step."""
        positions, momenta, state = self.snapshot
        atoms.set_positions(positions, apply_constraint=False)
        atoms.set_momenta(momenta, apply_constraint=False)
        dyn.set_state(state)

    def abort(self, error_type, atoms, dyn, step, problem, advice):
        """Stop the run: back to the last good step, checkpoint it, raise ``error_type``."""
        self.restore(atoms, dyn)
        self.checkpoint(atoms, dyn, step - 1, scf_memory=False)
        raise error_type(f"{problem}; checkpoint of step {step - 1} written in {self.run_dir}: "
                         f"{advice}")

    # ---- observers
    def guard(self, atoms, dyn):
        """Stop on runaway dynamics: NaN, a kinetic temperature far above the programme's,
        atoms closer than :data:`~meltquench.model.MIN_DISTANCE_A`."""
        record = self.recorder.record
        if record.step == 0:
            return
        problem = None
        if not (np.isfinite(atoms.positions).all() and math.isfinite(record.E_pot_eV)
                and math.isfinite(record.T_kin_K)):
            problem = "non-finite positions or energies"
        else:
            limit = self.cfg.dynamics.max_temperature_factor * max(record.T_target_K, 1000.0)
            if record.T_kin_K > limit:
                problem = (f"kinetic temperature {record.T_kin_K:.0f} K above {limit:.0f} K "
                           f"(target {record.T_target_K:.0f} K)")
            else:
                dmin = min_distance(atoms, np.flatnonzero(~fixed_mask(atoms)))  # fixed pairs stay
                if dmin < MIN_DISTANCE_A:
                    problem = f"atoms {dmin:.3f} Å apart (below {MIN_DISTANCE_A} Å)"
        if problem:
            coupling = TIGHTER_COUPLING.get(str(self.cfg.dynamics.thermostat).lower(),
                                            "a tighter thermostat coupling")
            self.abort(RunawayDynamics, atoms, dyn, record.step,
                       f"runaway dynamics at step {record.step}: {problem}",
                       f"--restart with {coupling} in config.yaml, or start a new run with "
                       "a smaller dynamics.timestep_fs (a restart cannot change the time step)")

    def report_progress(self):
        record = self.recorder.record
        if record.step > 0:
            self.progress.update(record.step, record)

    def checkpoint_or_stop(self, atoms, dyn):
        """Checkpoint every ``output.checkpoint_interval`` steps, at the end and before a stop
        (a signal or the ``--stop-after`` budget): every rank stops after the same step."""
        step = self.recorder.record.step
        reason = self.stop_reason() if step > 0 else 0
        if step % self.cfg.output.checkpoint_interval == 0 or step == self.nsteps or reason:
            self.checkpoint(atoms, dyn, step)
        if reason and step < self.nsteps:
            why = "a stop signal" if reason == 1 else "the --stop-after budget"
            raise Interrupted(f"stopped by {why} after step {step}/{self.nsteps}; "
                              f"continue with: meltquench run --restart {self.run_dir}")

    def stop_reason(self, step_s=None):
        """0: go on; 1: a stop signal; 2: the wall-time budget would be spent by two more
        steps of ``step_s`` seconds (default: the last MD or optimiser step's) (collective)."""
        reason = 0
        if self.stop.signal is not None:
            reason = 1
        elif self.stop_after_s is not None:
            elapsed = time.perf_counter() - self.t_start
            if step_s is None:
                step_s = max(self.recorder.seconds if self.recorder is not None else 0.0,
                             self.relax_step_s)
            if elapsed + 2.0 * max(step_s, 1e-3) > self.stop_after_s:
                reason = 2
        return allreduce_max(reason, self.comm)

    def keep_scf(self, path):
        """With ``finish.scf_checkpoint_s`` set: keep the finish calculator's SCF in progress
        in ``path`` from the next :meth:`attach_calculator` of the final optimisation on, and
        stop in the SCF on a signal or the ``--stop-after`` budget; the SCF of a stopped
        finish resumes (after the calculator is attached: :meth:`resume_scf`)."""
        every = self.cfg.finish.scf_checkpoint_s
        if every is not None and self.scf_checkpoint is None:
            self.scf_checkpoint = SCFCheckpoint(path, every, self.comm, self.scf_stop)

    def resume_scf(self, atoms):
        """Start the attached finish calculator's first SCF from the kept one, where it holds
        these positions (:meth:`keep_scf`); says what it did."""
        if self.scf_checkpoint is not None:
            note = self.scf_checkpoint.resume(atoms.calc, atoms)
            if note:
                self.say(note)

    def scf_stop(self, iteration, iteration_s):
        """In the finish calculator's SCF, after each iteration: why to stop (a signal, or the
        ``--stop-after`` budget would be spent by two more iterations), else None
        (collective)."""
        reason = self.stop_reason(step_s=iteration_s)
        if not reason:
            return None
        why = "a stop signal" if reason == 1 else "the --stop-after budget"
        return (f"stopped by {why} in iteration {iteration} of the finish calculator's SCF; "
                f"continue with: {self.continue_command} (its SCF resumes where it stopped)")

    # ---- after the programme
    def report_drift(self, atoms):
        """Print the drift of the conserved quantity per stage (from ``md.log``, rank 0).
        Where the smearing width follows a ramp, the work of its changes is taken out for
        Fermi-Dirac smearing (:func:`~meltquench.observers.smearing_work`), and the line says
        so; for other smearing functions it stays in, and the line says that."""
        if self.is_root:
            mobile = len(atoms) - int(fixed_mask(atoms).sum())
            log = self.path("md.log")
            fermi_dirac = any(calculators.fermi_dirac_smearing(c) for c in
                              (self.cfg.calculator, self.cfg.finish.calculator) if c)
            ramps = width_changes(log)
            note = ""
            if ramps:
                note = ("the work of the smearing width's changes taken out (Fermi-Dirac); "
                        "md.log's E_conserved_eV includes it" if fermi_dirac else
                        "includes the smearing width's changes: compare stages of constant width")
            drift = conserved_drift(log, mobile, fermi_dirac=fermi_dirac)
            self.say(drift_text(drift, note))
            rundir.write_atomic(self.path("drift.json"), json.dumps({
                "quantity": "drift of the MD's conserved quantity, least-squares slope per stage",
                "units": {"drift": "meV per mobile atom per ps", "ps": "ps"},
                "mobile_atoms": mobile,
                "smearing_work_taken_out": bool(fermi_dirac and ramps),
                "note": note,
                "stages": {name: {"drift": float(rate), "ps": float(ps)}
                           for name, (rate, ps) in drift.items()}}, indent=1).encode() + b"\n")
            line, warnings = tracking_text(temperature_tracking(log),
                                           thermostat=self.cfg.dynamics.thermostat)
            for text in [line] + warnings:
                self.say(text)

    def relax_and_export(self, atoms):
        """Defects after the quench, the final optimisation, ``final.traj`` and the extxyz
        exports; then the checkpoint of phase ``analysis``. Returns the final atoms."""
        st = self.cfg.structure
        if st.defects and st.defect_stage == "after-quench":
            calc = atoms.calc
            atoms = apply_defect_recipe(atoms, st.defects, st.seed)
            atoms.calc = calc
            self.say(f"defects made after the quench:\n{composition_text(atoms)}")
        d = self.cfg.dynamics
        if self.is_root:
            self.path("relax.log").unlink(missing_ok=True)  # a restart's starts afresh
        finish = self.in_finish(None)
        handover = finish and not self.attached_finish
        if d.final_relax and handover:
            # the cheap calculator first: the finish starts near its minimum
            self.optimise(atoms, "pre-optimisation with the run's calculator", d.relax_steps)
        if handover:
            if self.is_root:  # the run's own result, whatever the finish does
                rundir.write_traj(self.path("preoptimised.traj"), atoms)
            kept = atoms.positions.copy()
            self.keep_scf(self.path(SCF_CHECKPOINT_NAME))
            width = self.attach_calculator(atoms, None)
            self.say("the finish calculator takes over: "
                     f"{calculators.describe(self.cfg.finish.calculator)}"
                     + ("" if width is None else
                        f"; smearing width {width:.3f} eV (the programme's last temperature, "
                        f"{self.schedule.temperature(self.nsteps * self.dt_fs):.0f} K)"))
            self.resume_scf(atoms)
        if d.final_relax:
            steps = d.relax_steps
            if finish:
                steps = self.cfg.finish_relax_steps()
            failed = self.finish_scf(atoms, lambda: self.optimise(atoms, "final optimisation",
                                                                  steps))
        else:
            failed = self.finish_scf(atoms, atoms.get_forces) if finish else None
        if self.is_root:  # the finish's SCFs are over
            self.path(SCF_CHECKPOINT_NAME).unlink(missing_ok=True)
        if failed:
            self.finish_failed = (
                f"the finish calculator's SCF did not converge ({failed}), also with the "
                "fallback settings: final.traj is the run's own structure"
                + (" after its pre-optimisation" if d.final_relax and handover else "")
                + ", with its own calculator, and there are no spot checks. Try the finish "
                "on final.traj with another mixer or more SCF iterations "
                "(finish.calculator.gpaw.mixer, maxiter), or under mpirun")
            self.say(f"WARNING: {self.finish_failed}")
            if handover:
                atoms.positions = kept
            atoms.calc = self.make_calculator(self.last_main_step, atoms)
            atoms.get_forces()  # final.traj carries the run's own energy and forces
        if self.is_root:
            rundir.write_traj(self.path("final.traj"), atoms)
            if self.cfg.output.extxyz:
                frames = read(self.path("trajectory.traj"), index=":", parallel=False)
                write(self.path("trajectory.extxyz"), frames, format="extxyz", parallel=False)
                write(self.path("final.extxyz"), atoms, format="extxyz", parallel=False)
        if finish and not failed:
            self.spot_checks(atoms)
        self.checkpoint(atoms, None, self.nsteps, phase="analysis")
        return atoms

    def finish_scf(self, atoms, action):
        """``action()`` with the finish calculator attached; on SCF non-convergence one retry
        with its fallback settings (from where the atoms are). Returns None, or the name of the
        SCF error that remained (the finish failed); any other error is raised."""
        error = self.with_scf_fallback(
            action, atoms, None,
            lambda name: f"the finish calculator's SCF did not converge ({name}); retrying with "
                         "the fallback settings (more conservative mixer)")
        return None if error is None else type(error).__name__

    def optimise(self, atoms, label, steps, restart=None, observers=()):
        """``dynamics.final_relax`` of the atoms of ``dynamics.relax_region`` with the attached
        calculator, for at most ``steps`` steps (0: forces only), logged to ``relax.log``.
        ``restart``: the optimiser's own state file (ASE's JSON; read if it exists, written
        after every step); ``observers``: functions of the optimiser called after every step
        (and before the first), ahead of the stop check."""
        d = self.cfg.dynamics
        logfile = str(self.path("relax.log")) if self.is_root else None
        self._relax_clock = None
        with relax_region(atoms, d.relax_region, d.relax_radius, label) as note:
            self.say(note)
            opt = OPTIMISERS[d.final_relax](atoms, logfile=logfile,
                                            restart=None if restart is None else str(restart))
            for observer in observers:
                opt.attach(observer, 1, opt)
            opt.attach(self.time_relax_step, 1)
            opt.attach(self.stop_in_relax, 1, opt)
            converged = opt.run(fmax=d.relax_fmax, steps=steps)
            fmax = np.abs(atoms.get_forces()).max() if len(atoms) else 0.0
        if steps == 0:  # asked for forces only: there was no criterion to meet
            self.say(f"{label}: a single point (0 optimisation steps asked for), max |F| "
                     f"component {fmax:.3f} eV/Å")
        else:
            self.say(f"{label} ({d.final_relax}): {opt.nsteps} steps, max |F| component "
                     f"{fmax:.3f} eV/Å ({'converged' if converged else 'NOT converged'} to "
                     f"{d.relax_fmax} eV/Å)")

    def spot_checks(self, atoms, trajectory=None):
        """Forces of the run's calculator against the finish calculator's on the mobile atoms
        of the final structure and of every ``finish.check_every``-th frame of the
        programme (``trajectory``, default the run folder's; :mod:`meltquench.checks`);
        printed, and written to ``analysis/``. Returns the :class:`SpotChecks`."""
        reference = atoms.calc
        checks = SpotChecks(calculators.describe(self.cfg.calculator),
                            calculators.describe(self.cfg.finish.calculator))
        mobile = ~fixed_mask(atoms)
        final_reference = atoms.get_forces(apply_constraint=False)[mobile]
        own = self.make_calculator(self.last_main_step, atoms)
        every = self.cfg.finish.check_every
        if every:
            interval = self.cfg.output.trajectory_interval
            frames = read(trajectory or self.path("trajectory.traj"), index=f"::{every}",
                          parallel=False)
            for k, frame in enumerate(frames):
                step = k * every * interval
                if step > self.last_main_step:
                    break
                moving = ~fixed_mask(frame)
                stage = self.schedule.stage_of_step(step * self.dt_fs).name
                checks.add(f"frame {k * every} (step {step})", stage,
                           unconstrained_forces(frame, own)[moving],
                           unconstrained_forces(frame, reference)[moving])
        checks.add("final structure", "final structure",
                   unconstrained_forces(atoms, own)[mobile], final_reference)
        self.say("\n".join(checks.lines()))
        if self.is_root:
            checks.write(self.path("analysis"))
        return checks

    def time_relax_step(self):
        """Optimiser observer: the wall time of the last step, for the ``--stop-after``
        budget."""
        now = time.perf_counter()
        if self._relax_clock is not None:
            self.relax_step_s = now - self._relax_clock
        self._relax_clock = now

    def stop_in_relax(self, opt):
        """Optimiser observer: stop (checkpointed: the one of the last MD step) on a signal
        or the ``--stop-after`` budget."""
        reason = self.stop_reason()
        if reason:
            why = "a stop signal" if reason == 1 else "the --stop-after budget"
            raise Interrupted(f"stopped by {why} in step {opt.nsteps} of the final "
                              f"optimisation; continue with: {self.continue_command} "
                              f"({self.relax_resumes})")

    def conclude(self, atoms):
        """The analysis, then the checkpoint of phase ``done``; the :class:`RunResult`."""
        reason = self.stop_reason()
        if reason:
            why = "a stop signal" if reason == 1 else "the --stop-after budget"
            raise Interrupted(f"stopped by {why} before the analysis; continue with: "
                              f"meltquench run --restart {self.run_dir}")
        names = {"final": "final.traj", "trajectory": "trajectory.traj",
                 "relax_log": "relax.log", "extxyz": "trajectory.extxyz"}
        files = {key: self.path(name) for key, name in names.items()
                 if self.path(name).exists()}
        result = RunResult(self.run_dir, atoms, self.nsteps, files=files,
                           finish_failed=self.finish_failed)
        if self.cfg.analysis.enabled:
            result.analysis = self.analyse()
            result.melt = self.melt
            files["analysis"] = self.path("analysis")
        self.checkpoint(atoms, None, self.nsteps, phase="done")
        return result

    def analysis_frames(self):
        """(source, start) of the frames ``analysis.frames`` names."""
        frames = self.cfg.analysis.frames
        if frames == "final":
            return self.path("final.traj"), 0
        if frames == "all":
            return self.path("trajectory.traj"), 0
        interval = self.cfg.output.trajectory_interval
        t_final = self.schedule.stage_start_fs(self.schedule.stages[-1].name)
        first_step = int(math.ceil(t_final / self.dt_fs - 1e-9))
        return self.path("trajectory.traj"), int(math.ceil(first_step / interval))

    def analyse(self):
        an = self.cfg.analysis
        source, start = self.analysis_frames()
        self.comm.Barrier()
        result = analyse(str(source), rmax=an.rmax, nbins=an.nbins, start=start,
                         interface_width=an.interface_width, cutoffs=an.cutoffs or None,
                         pairs=an.pairs, comm=self.comm)
        result.write(self.path("analysis"))
        self.say(f"\nRegion-resolved structure ({an.frames} frames of {source.name}):\n"
                 f"{result.table()}")
        # did it melt? every frame of the programme, by region and stage
        melt = melt_diagnostics(str(self.run_dir), cutoff_VO=vo_cutoff(result),
                                interface_width=an.interface_width, comm=self.comm)
        melt.write(self.path("analysis"))
        self.say("\n" + "\n".join(melt.verdict_lines()))
        self.melt = melt
        return result


def run(cfg, run_dir=None, comm=None, overwrite=None, stop_after_s=None, stream=None,
        atoms=None, calculator=None):
    """Run a melt-quench from scratch; returns a :class:`RunResult`.

    ``atoms`` replaces the configured model (regions must already be labelled, as
    :func:`~meltquench.structures.split_regions` does); ``calculator`` replaces the configured
    one (any ASE calculator). The model is checked before the run folder is made or touched;
    the run holds the folder's lock to the end.
    """
    comm = get_comm(comm)
    overwrite = cfg.output.overwrite if overwrite is None else overwrite
    if atoms is None:
        atoms = build_model(cfg)
    else:
        atoms = atoms.copy()
        check_model(atoms)
    if calculator is None:
        calculators.check_available(cfg.calculator)
    if cfg.finish.calculator is not None:
        calculators.check_available(cfg.finish.calculator)
    if run_dir is None:
        run_dir = cfg.output.directory or rundir.default_run_dir(cfg.output.name, comm)
    with rundir.prepare_run_dir(run_dir, overwrite, comm):
        engine = MeltQuench(cfg, run_dir, comm=comm, stop_after_s=stop_after_s, stream=stream,
                            calculator=calculator)
        return engine.run(atoms=atoms)


def json_plain(data):
    """``data`` as JSON gives it back (tuples as lists, ...): what a checkpoint holds."""
    return json.loads(json.dumps(data))


def _finish_unused(state, old_config, cfg):
    """True if the checkpoint ``state`` (made with ``old_config``, a dict) lies before any
    step of the finish calculator, under the old configuration and under ``cfg``, the new."""
    if state["phase"] != "md":
        return False  # the final optimisation is done: the finish has computed
    old = config_from_dict(old_config, source="the checkpoint's configuration")
    step = int(state["step"])
    return all(step <= last_main_step(c, c.build_schedule().nsteps(c.dynamics.timestep_fs))
               for c in (old, cfg))


def restart(run_dir, comm=None, stop_after_s=None, stream=None, calculator=None):
    """Continue the run in ``run_dir`` from its last checkpoint, with its own config.yaml.

    A finished run is left untouched. ``config.yaml`` may differ from the configuration the
    run ran with only in the keys of :data:`RESTART_MAY_CHANGE`; other changes are refused.
    """
    comm = get_comm(comm)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--restart: {run_dir} is not a folder")
    state = read_checkpoint(run_dir)
    if state["phase"] == "done":
        if comm.Get_rank() == 0:
            print(f"run {run_dir} has already finished: nothing to do (nothing in it was "
                  "changed)", file=stream or sys.stdout, flush=True)
        return RunResult(run_dir, atoms_from_checkpoint(state), int(state["step"]))
    cfg = config_from_dict(read_yaml(run_dir / "config.yaml"), source=str(run_dir / "config.yaml"))
    old = json_plain(state["config"])
    allowed, refused = restart_changes(old, json_plain(cfg.to_dict()),
                                       before_finish=_finish_unused(state, old, cfg))
    if refused:
        changes = "; ".join(describe_change(*change) for change in refused)
        raise UserError(f"--restart cannot continue the run with a changed {changes} (in "
                        f"{run_dir / 'config.yaml'}): the checkpoint was made with the old "
                        "value(s); revert them, or start a new run with the new ones")
    with rundir.RunLock(run_dir, comm):
        state = read_checkpoint(run_dir)  # as it is now that this process holds the folder
        engine = MeltQuench(cfg, run_dir, comm=comm, stop_after_s=stop_after_s, stream=stream,
                            calculator=calculator)
        if allowed:
            engine.say("continuing with changed settings: " + "; ".join(
                describe_change(*change) for change in allowed))
        return engine.run(state=state)
