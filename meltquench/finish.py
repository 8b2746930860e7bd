"""``meltquench finish RUN_DIR``: the finish calculator's part, on a run that is over.

A run with ``finish.calculator`` ends with it (:mod:`meltquench.driver`): the final
optimisation, or a single point, with e.g. GPAW PBE+U+D3, then force spot checks of the run's
own calculator against it. At the paper's size that part alone is hours of DFT, more than
the machine that ran the machine-learned dynamics may give; a run made without it (or whose
finish failed) gets it here, afterwards, on a cluster or overnight, from the run's
``final.traj``:

* the finish settings: the run's ``config.yaml`` (its ``finish`` section), or the ``finish``
  section of a preset (``--finish-of paper-perfect-ml``), with ``--set`` on top;
* ``dynamics.final_relax`` with the finish calculator for at most ``finish.relax_steps``
  steps (0: a single point) to ``dynamics.relax_fmax``, on ``dynamics.relax_region``, its
  electrons at the programme's last temperature: exactly what the run's own finish does
  after its pre-optimisation, which a finishless run's final optimisation is. So a run
  finished here has the ``final.traj`` of the same run made with the finish;
* the spot checks (``finish.check_every`` frames of the run's trajectory, and the finished
  structure) and, with ``analysis.enabled``, the region-resolved structure of the finished
  structure.

Everything goes into ``RUN_DIR/finish/`` (or ``--out``), never into the run's own files:

=========================  ============================================================
``finish.json``            the summary (written last: its presence means done)
``final.traj``             the finished structure, with the finish calculator's energy
                           and forces (+ ``final.extxyz`` with ``output.extxyz``)
``config.yaml``            the configuration the finish ran with
``relax.log``              the optimiser's log
``analysis/``              spot checks (``checks.json``, ``checks.png``) and the structure
``checkpoint.json``        while it runs: the optimisation's last step (positions and the
                           optimiser's memory, e.g. BFGS's Hessian; data only, JSON)
=========================  ============================================================

A finish stopped by a signal or ``--stop-after`` (exit code 75) continues from the
checkpoint when the same command runs again: the positions and the optimiser's state of
its last step, so it takes the steps the uninterrupted optimisation takes (to the SCF's
precision: the first force call starts from a fresh density). Settings may change between
the two only where ``--restart`` of a run allows it (SCF numerics, the optimiser's step
count and criterion).
"""
import json
import time
from pathlib import Path

import numpy as np
from ase.io import write
from ase.io.trajectory import Trajectory

from . import calculators, rundir
from .analysis import analyse
from .config import load_config
from .calculators.scf_checkpoint import FILE_NAME as SCF_CHECKPOINT_NAME
from .checkpoint import read_checkpoint
from .driver import (RESTART_MAY_CHANGE, MeltQuench, describe_change, json_plain,
                     last_main_step, restart_changes)
from .errors import SCFFailure, UserError
from .kernels.parallel import get_comm
from .plan import finish_cost_lines
from .progress import StopFlag
from .rundir import collective, write_atomic
from .structures import fixed_mask, read_structure
from .target import open_output

SUMMARY_NAME = "finish.json"
CHECKPOINT_NAME = "checkpoint.json"
OPTIMISER_STATE_NAME = "optimiser.json"  # ASE's restart file, while the optimiser runs
#: What the command writes into its folder (``--overwrite`` deletes these, nothing else).
FINISH_FILES = (SUMMARY_NAME, CHECKPOINT_NAME, OPTIMISER_STATE_NAME, SCF_CHECKPOINT_NAME,
                "final.traj", "final.extxyz", "config.yaml", "relax.log", "gpaw.txt",
                "analysis/*")
#: Keys that may differ between a stopped finish and its continuation: those a run's
#: ``--restart`` allows, but the optimiser (its memory is its own), and the finish's own step
#: count (the optimisation goes on).
FINISH_MAY_CHANGE = tuple(key for key in RESTART_MAY_CHANGE if key != "dynamics.final_relax") \
    + ("finish.relax_steps", "finish.anneal_ps")
#: What an ASE optimiser remembers beyond its restart file: ASE's FIRE saves its velocities
#: and time step there, not its mixing parameter nor its count of steps downhill.
OPTIMISER_MEMORY = {"FIRE": ("a", "Nsteps")}


def finish_config(run_dir, finish_of=None, overrides=()):
    """The :class:`~meltquench.config.Config` of finishing ``run_dir``: its ``config.yaml``,
    the ``finish`` section of preset ``finish_of`` in place of its own, ``overrides``
    (``section.key=value``) on top. A configuration without a finish calculator, or a run
    that is not over, is a :class:`UserError`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"finish: {run_dir} is not a folder (give a run folder)")
    if (run_dir / "replicas.yaml").exists():
        raise UserError(f"finish: {run_dir} holds replicas: finish each of them, e.g. "
                        f"meltquench finish {run_dir / 'replica-0'}")
    for name in ("config.yaml", "final.traj"):
        if not (run_dir / name).is_file():
            raise UserError(f"finish: {run_dir} has no {name}: give the folder of a run "
                            "that has finished its MD and final optimisation")
    phase = read_checkpoint(run_dir)["phase"]
    if phase == "md":
        raise UserError(f"finish: the run in {run_dir} is still in its MD: continue it first "
                        f"with meltquench run --restart {run_dir}")
    cfg = load_config(run_dir / "config.yaml", overrides=overrides, finish_of=finish_of)
    if cfg.finish.calculator is None:
        raise UserError(f"{run_dir / 'config.yaml'} has no finish calculator (finish.calculator: "
                        "null): give one with --finish-of PRESET (e.g. paper-perfect-ml) or "
                        "--set 'finish.calculator={name: gpaw}'")
    calculators.check_available(cfg.finish.calculator)
    return cfg


def check_frames(cfg, run_dir):
    """How many frames of the run's trajectory the spot checks take (``finish.check_every``;
    the programme's, not the anneal's)."""
    every = cfg.finish.check_every
    path = Path(run_dir) / "trajectory.traj"
    if not every or not path.exists():
        return 0
    with Trajectory(str(path)) as frames:
        n_frames = len(frames)
    interval = cfg.output.trajectory_interval
    nsteps = cfg.build_schedule().nsteps(cfg.dynamics.timestep_fs)
    last = last_main_step(cfg, nsteps)
    return sum(1 for k in range(0, n_frames, every) if k * interval <= last)


def finish_plan(run_dir, cfg, ranks=1):
    """What ``meltquench finish --dry-run`` prints: the finish of ``run_dir`` with ``cfg``
    and its estimated cost on ``ranks`` ranks; computes nothing."""
    atoms = read_structure(Path(run_dir) / "final.traj")
    n_checks = check_frames(cfg, run_dir)
    d = cfg.dynamics
    steps = cfg.finish_relax_steps()
    lines = ["dry run: nothing is computed",
             f"finish of {run_dir} (its final.traj, {atoms.get_chemical_formula()}, "
             f"{len(atoms)} atoms): {calculators.describe(cfg.finish.calculator)}",
             (f"  {d.final_relax} of relax_region {d.relax_region}, at most {steps} steps to "
              f"{d.relax_fmax} eV/Å" if d.final_relax and steps else "  a single point"),
             f"  spot checks against {calculators.describe(cfg.calculator)} on "
             + (f"{n_checks} trajectory frame(s) and " if n_checks else "") + "the result"]
    if cfg.finish.calculator.name == "gpaw":
        lines.append(f"GPAW parallel layout on {ranks} rank(s): " + calculators.parallel_plan_text(
            cfg.finish.calculator.gpaw, ranks, len(atoms)))
    return "\n".join(lines + finish_cost_lines(cfg, len(atoms), n_checks, ranks))


def finish(run_dir, cfg, out=None, comm=None, overwrite=False, stop_after_s=None, stream=None):
    """Finish the run in ``run_dir`` with ``cfg`` (:func:`finish_config`) into ``out``
    (default ``run_dir/finish``); returns the summary (a dict, also ``finish.json``).
    Continues a stopped finish in ``out`` from its checkpoint."""
    comm = get_comm(comm)
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "finish"
    with open_output(out, SUMMARY_NAME, overwrite, comm, FINISH_FILES):
        engine = MeltQuench(cfg, out, comm=comm, stop_after_s=stop_after_s, stream=stream)
        command = f"meltquench finish {run_dir}" + ("" if out == run_dir / "finish"
                                                    else f" --out {out}")
        engine.continue_command = command
        engine.relax_resumes = "it continues from the optimisation's last step"
        engine.keep_scf(out / SCF_CHECKPOINT_NAME)
        with StopFlag(f"continue with: {command}") as stop:
            engine.stop = stop
            return _finish(engine, run_dir, out)


def _finish(engine, run_dir, out):
    cfg, comm, say = engine.cfg, engine.comm, engine.say
    t0 = time.perf_counter()
    start = read_structure(run_dir / "final.traj")
    atoms = start.copy()
    state = _read_checkpoint(out, cfg)
    if engine.is_root:
        (out / "config.yaml").write_text(cfg.to_yaml())
    say(f"finishing {run_dir} (its final.traj, {len(atoms)} atoms) into {out}")
    if cfg.finish.anneal_ps > 0:
        say(f"note: finish.anneal_ps {cfg.finish.anneal_ps:g} ps is part of a run's programme "
            "(MD with the finish calculator); here the finish optimises only")
    width = engine.attach_calculator(atoms, None)
    say("the finish calculator: " + calculators.describe(cfg.finish.calculator)
        + ("" if width is None else f"; smearing width {width:.3f} eV (the programme's last "
           f"temperature, {cfg.schedule.T_final_K:.0f} K)"))
    d = cfg.dynamics
    steps = cfg.finish_relax_steps()
    done = 0
    optimiser_state = out / OPTIMISER_STATE_NAME
    if state is not None:
        done = int(state["steps_done"])
        atoms.set_positions(np.asarray(state["positions"], float), apply_constraint=False)
        collective(comm, lambda: optimiser_state.write_text(state["optimiser_state"]))
        say(f"continuing the finish's optimisation after its step {done} "
            f"(checkpoint {out / CHECKPOINT_NAME})")
        if engine.is_root:
            with open(engine.path("relax.log"), "a") as log:
                log.write(f"# continued after step {done}\n")
    else:
        collective(comm, lambda: optimiser_state.unlink(missing_ok=True))
    engine.resume_scf(atoms)  # at the positions of the first force call
    # optimiser steps taken and the optimiser's memory, over stops and the SCF fallback's retry
    progress = {"done": done, "memory": state.get("memory", {}) if state else {}}
    if d.final_relax and steps > 0:
        def relax():
            base = progress["done"]

            def remember(opt):
                """Before the first step: the memory the state file leaves out; after each:
                the checkpoint."""
                if opt.nsteps == 0:
                    for key, value in progress["memory"].items():
                        setattr(opt, key, value)
                    return
                progress["done"] = base + opt.nsteps
                progress["memory"] = {key: getattr(opt, key) for key in
                                      OPTIMISER_MEMORY.get(d.final_relax, ())}
                if engine.is_root:
                    _write_checkpoint(out, cfg, progress, atoms, optimiser_state)
            engine.optimise(atoms, "final optimisation with the finish calculator",
                            max(steps - base, 0), restart=optimiser_state,
                            observers=[remember])
        failed = engine.finish_scf(atoms, relax)
    else:
        failed = engine.finish_scf(atoms, atoms.get_forces)
    if failed:
        raise SCFFailure(
            f"the finish calculator's SCF did not converge ({failed}), also with the fallback "
            f"settings; nothing of the run was changed. Try other SCF settings (--set "
            "finish.calculator.gpaw.mixer=..., maxiter=...) or more ranks; "
            + (f"the optimisation continues from {out / CHECKPOINT_NAME}" if
               (out / CHECKPOINT_NAME).exists() else "it starts again from final.traj"))
    total = progress["done"]
    forces = atoms.get_forces()
    energy = float(atoms.get_potential_energy())
    if engine.is_root:
        rundir.write_traj(out / "final.traj", atoms)
        if cfg.output.extxyz:
            write(out / "final.extxyz", atoms, format="extxyz", parallel=False)
    checks = engine.spot_checks(atoms, trajectory=run_dir / "trajectory.traj")
    if cfg.analysis.enabled:
        an = cfg.analysis
        comm.Barrier()
        result = analyse(str(out / "final.traj"), rmax=an.rmax, nbins=an.nbins,
                         interface_width=an.interface_width, cutoffs=an.cutoffs or None,
                         pairs=an.pairs, comm=comm)
        result.write(out / "analysis")
        say(f"\nRegion-resolved structure of the finished structure:\n{result.table()}")
    mobile = ~fixed_mask(atoms)
    shift = np.linalg.norm(atoms.positions - start.positions, axis=1)[mobile]
    fmax = float(np.abs(forces).max()) if len(atoms) else 0.0
    summary = {
        "run": str(run_dir), "calculator": calculators.describe(cfg.finish.calculator),
        "run_calculator": calculators.describe(cfg.calculator),
        "optimiser": d.final_relax if steps > 0 else None, "relax_region": d.relax_region,
        "steps": int(total), "max_steps": int(steps) if d.final_relax else 0,
        "fmax_eV_per_A": fmax, "relax_fmax_eV_per_A": d.relax_fmax,
        "converged": bool(fmax <= d.relax_fmax),
        "energy_eV": energy, "fallback_used": engine.fallback_used,
        "moved_from_run_final_A": {"rms": float(np.sqrt((shift ** 2).mean())) if len(shift)
                                   else 0.0, "max": float(shift.max()) if len(shift) else 0.0,
                                   "n_atoms": int(mobile.sum())},
        "spot_checks": checks.summary()["per_stage"],
        "wall_time_s": time.perf_counter() - t0,
        "units": {"energy": "eV", "forces": "eV/Å", "distances": "Å"},
    }
    if engine.is_root:
        write_atomic(out / SUMMARY_NAME, json.dumps(summary, indent=1).encode() + b"\n")
        for name in (CHECKPOINT_NAME, SCF_CHECKPOINT_NAME):
            (out / name).unlink(missing_ok=True)
        optimiser_state.unlink(missing_ok=True)
    say("\n".join(summary_lines(summary)))
    return summary


def summary_lines(summary):
    """The summary as the console shows it."""
    moved = summary["moved_from_run_final_A"]
    if summary["optimiser"]:
        relax = (f"{summary['optimiser']} {summary['steps']} of at most {summary['max_steps']} "
                 f"steps, max |F| component {summary['fmax_eV_per_A']:.3f} eV/Å ("
                 + ("converged" if summary["converged"] else "NOT converged")
                 + f" to {summary['relax_fmax_eV_per_A']} eV/Å)")
    else:
        relax = (f"a single point, max |F| component {summary['fmax_eV_per_A']:.3f} eV/Å")
    lines = [f"finish of {summary['run']}: {summary['calculator']}",
             f"  {relax}; E = {summary['energy_eV']:.4f} eV"]
    if summary["optimiser"]:
        lines.append(f"  the mobile atoms moved from the run's final.traj by {moved['rms']:.3f} Å "
                     f"rms, {moved['max']:.3f} Å at most ({moved['n_atoms']} atoms)")
    return lines


def _read_checkpoint(out, cfg):
    """The checkpoint of a stopped finish in ``out`` (None if there is none); settings that
    changed where they may not are a :class:`UserError`."""
    path = out / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        old = state["config"]
    except (ValueError, KeyError) as exc:
        raise UserError(f"cannot read the finish checkpoint {path} ({exc}): pass --overwrite "
                        "to start the finish afresh") from None
    _, refused = restart_changes(old, json_plain(cfg.to_dict()), may_change=FINISH_MAY_CHANGE)
    if refused:
        raise UserError(f"{out} holds a stopped finish made with other settings ("
                        + "; ".join(describe_change(*c) for c in refused)
                        + "): finish with the same ones to continue it, or pass --overwrite "
                        "to start afresh")
    return state


def _write_checkpoint(out, cfg, progress, atoms, optimiser_state):
    """Rank 0: the optimisation after its step ``progress['done']``, with the optimiser's
    state file of that step and its ``progress['memory']``, in one atomic write."""
    state = {"format": "meltquench finish checkpoint 1", "steps_done": int(progress["done"]),
             "positions": atoms.get_positions().tolist(),
             "optimiser_state": Path(optimiser_state).read_text(),
             "memory": {key: value.item() if hasattr(value, "item") else value
                        for key, value in progress["memory"].items()},
             "config": json_plain(cfg.to_dict())}
    write_atomic(out / CHECKPOINT_NAME, json.dumps(state).encode())
