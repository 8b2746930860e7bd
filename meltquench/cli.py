"""The ``meltquench`` command line: run, analyse, build, dos, dos-compare, adsorb, finish, presets,
config.

Bad input ends with one line on standard error and exit code 2 (a traceback only with
``--debug``). ``meltquench run`` exit codes: 0 done, 2 bad input, 75 stopped by a signal or by
``--stop-after`` (checkpointed: ``--restart`` continues), 3 runaway dynamics, 4 SCF failure
(both checkpointed at the last good step; of the finish calculator: the run's own result is
kept in ``final.traj`` and analysed), 1 anything unexpected.
"""
import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

# numba colours its error messages through colorama, whose exit handler then writes an ANSI
# reset (ESC[0m) to a stdout it takes for a terminal: under mpirun every rank's is a pseudo-
# terminal, so batch logs got stray escape lines. Set before numba is first imported.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")

from ase.config import cfg as ase_cfg
from ase.io import write

from . import __version__, calculators, driver
from .adsorption import (ADSORB_FILES, FMAX, GRID_A, PAPER_EADS_EV, PER_REGION, REFERENCES,
                         SEPARATION_A, STEPS, adsorb, check_options, choose_reference,
                         find_sites, format_table, host_warnings)
from .analysis import REGIONS, XRD, BondAngles, analyse, melt_diagnostics, vo_cutoff
from .analysis.base import check_length
from .analysis.frames import Frames
from .analysis.melt import ORDER_CUTOFF_A
from .analysis.xrd import TWO_THETA_RANGE, XRD_RMAX_A, check_two_theta
from .kernels.xrd import CU_KALPHA
from .calculators import prepare_atoms, programme_stages, write_vasp_programme
from .calculators.vasp import check_potcars, programme_table, starting_velocities
from .config import PRESETS, describe_keys, load_config
from .electronic import (COMPARE_FILES, DOS_FILES, PAPER_MODELS, STATES_NAME, THRESHOLD,
                         WIDTH_EV, WINDOW_EV, check_dos_options, compare_dos, compute_states,
                         dos_from_states, dos_settings)
from .errors import RunStopped, SCFFailure, UserError
from .finish import finish, finish_config, finish_plan
from .kernels.parallel import get_comm, is_root
from .model import build_model
from .plan import dry_run, preset_cost
from .replicas import restart_replicas, run_replicas
from .rundir import default_run_dir
from .structures import format_region_report
from .target import load_target, open_output

EPILOG = """\
examples:
  meltquench run                          the demo on its built-in defaults (a few minutes)
  mpirun -np 4 meltquench run config.yaml GPAW on 4 ranks, files written by rank 0
  meltquench run --preset paper-perfect --dry-run
                                          the paper's method: print the plan and cost, run nothing
  meltquench run --restart runs/demo-20261125-101500
                                          continue a stopped run from its last checkpoint
  meltquench analyse runs/demo-20261125-101500
                                          region-resolved g(r) and coordination numbers, bond
                                          angles, simulated powder XRD and S(q), and whether
                                          the melt melted (melt.json)
  meltquench dos runs/demo-20261125-101500
                                          total DOS, DOS per region, band gap (GPAW)
  meltquench dos-compare crystal_dos runs/A runs/B --paper crystal perfect defective
                                          several models' DOS and gaps in one figure (Fig. 4e)
  meltquench adsorb runs/demo-20261125-101500 --species Na
                                          Na adsorption energies at the largest voids per region
  meltquench finish runs/paper-perfect-ml-20261207 --set finish.relax_steps=100
                                          the GPAW finish (optimisation, spot checks) of a run
                                          made without it, e.g. on a cluster
  meltquench config --show --preset demo  the resolved configuration as YAML
  meltquench config --keys                every configuration key with its default
"""


def _add_config_args(p):
    p.add_argument("config", nargs="?", help="YAML configuration file (default: the built-in "
                   "defaults; 'meltquench run' with neither a file nor --preset runs the demo)")
    p.add_argument("--preset", metavar="NAME", help="start from a preset ('meltquench presets' lists them)")
    _add_set_argument(p, "override one key, e.g. --set schedule.melt_ps=0.5")


def _add_set_argument(p, help):
    p.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                   dest="overrides", help=help + " (repeatable)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors (usage and ``PROG: error: ...`` on every rank, exit 2) raised
    as a :class:`UserError`, which :func:`main` prints as one line on rank 0 like any bad
    input. Subparsers are of this class too."""

    def error(self, message):
        raise UserError(f"{message} (see '{self.prog} --help')")


def build_parser():
    parser = ArgumentParser(
        prog="meltquench", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Ab initio melt-quench engine: fix one half of a crystal, melt and quench the "
                    "other half under NVT with DFT forces (GPAW by default), and measure the "
                    "amorphous/crystalline result (partial g(r), coordination numbers).")
    parser.add_argument("--version", action="version", version=f"meltquench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a melt-quench (default: the demo)",
                       description="Build the model, melt and quench it, optimise, analyse. Every "
                       "output goes into one run folder (default runs/<name>-<date>-<time>).",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="exit codes: 0 done, 2 bad input, 75 stopped by a signal or "
                       "--stop-after (checkpointed),\n3 runaway dynamics, 4 SCF failure (of the finish: the run's own "
                       "result kept in final.traj), 1 unexpected error")
    _add_config_args(p)
    p.add_argument("-o", "--output", metavar="DIR", help="run folder (overrides output.directory)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--restart", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint "
                   "with its own config.yaml")
    p.add_argument("--dry-run", action="store_true", help="build the structure, resolve the "
                   "configuration, print the plan and the estimated cost; run nothing")
    p.add_argument("--stop-after", metavar="TIME", help="wall-time budget (seconds or HH:MM:SS): "
                   "checkpoint and exit with code 75 before it is spent")
    p.add_argument("--calibrate", nargs="?", type=int, const=2, default=0, metavar="N",
                   help="a dry run whose cost is measured here: time N (default 2) SCF "
                   "iterations, the forces and a move of the run's GPAW calculator(s) on its "
                   "model, on the ranks it was started on (under mpirun: those ranks)")

    p = sub.add_parser("analyse", aliases=["analyze"], help="region-resolved g(r), coordination "
                       "numbers, bond angles and powder XRD of a run folder or trajectory, and "
                       "whether it melted")
    add_analyse_arguments(p)

    p = sub.add_parser("build", help="build the starting model and write it to a file")
    _add_config_args(p)
    p.add_argument("-o", "--output", metavar="FILE", default="model.traj",
                   help="output file, any format ASE writes (default model.traj; extxyz keeps the "
                   "region labels as tags)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--write-input", metavar="DIR", help="also write the VASP input of the whole "
                   "programme for this model into DIR: one folder per VASP run (heat, melt, quench, "
                   "hold as MD with the Nose thermostat, then the optimisation) with INCAR, "
                   "KPOINTS, POTCAR, the first one's POSCAR (selective dynamics, starting "
                   "velocities), and DIR/run-programme.sh that chains them; needs VASP_PP_PATH")

    p = sub.add_parser("dos", help="total DOS, DOS per region and band gap of a run's final "
                       "structure or a structure file (GPAW)",
                       description="One GPAW SCF with the run's own calculator settings (its "
                       "config.yaml; a structure file takes the defaults; --set changes keys) on "
                       "its final structure, then the total DOS, the DOS projected on the "
                       "crystal, melt and interface atoms (Mulliken weights, LCAO mode) and the "
                       "band gap found three ways (occupations, ase.dft.bandgap, the broadened "
                       "DOS): dos.json, dos.csv, dos.png in RUN_DIR/dos/. A PBE+U gap of V2O3 "
                       "depends on U, the magnetic order and the cell.")
    _add_target_args(p, "dos")
    p.add_argument("--width", type=float, default=WIDTH_EV, metavar="EV",
                   help=f"Gaussian broadening, standard deviation (eV), default {WIDTH_EV:g}")
    p.add_argument("--window", type=float, nargs=2, default=list(WINDOW_EV),
                   metavar=("EMIN", "EMAX"), help="energy window around E_F (eV), default "
                   f"{WINDOW_EV[0]:g} {WINDOW_EV[1]:g}")
    p.add_argument("--threshold", type=float, default=THRESHOLD, metavar="X",
                   help="the DOS gap is where the total DOS is below X states/eV per atom, "
                   f"default {THRESHOLD:g}")

    p = sub.add_parser("dos-compare", help="the total DOS and band gaps of several models "
                       "side by side (after 'meltquench dos' on each), like the paper's Fig. 4e",
                       description="Reads the dos.json and dos.csv that 'meltquench dos' wrote "
                       "for each model and writes dos-compare.png (one panel per model, top to "
                       "bottom: total DOS per atom against E - E_F, the DOS gap shaded) and "
                       "dos-compare.csv (formula, magnetic moment, the gaps, the paper's gap of "
                       "the model it stands for). Computes nothing new.",
                       epilog="example:\n  meltquench dos-compare crystal_dos amorph mldemo "
                       "defective \\\n      --labels C-V2O3 A-V2O3 A/C A/C-def --paper crystal "
                       "amorphous perfect defective",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", metavar="DOS_DIR", help="a 'meltquench dos' output "
                   "folder, or a run folder holding one as dos/")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="one name per folder (default "
                   "the run folder's or structure's name)")
    p.add_argument("--paper", nargs="+", metavar="MODEL", help="which of the paper's models "
                   f"each folder stands for: {', '.join(PAPER_MODELS)}, or - for none; their "
                   "gaps (Fig. 4e) are written beside the engine's")
    p.add_argument("--out", metavar="DIR", default="dos-compare", help="output folder "
                   "(default ./dos-compare)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier comparison in "
                   "the output folder (only the files this command writes)")

    p = sub.add_parser("adsorb", help="adsorption energy of an atom (Na) at the largest voids "
                       "of each region, with the run's own calculator",
                       description="Find the largest voids per region (crystal, melt, interface), "
                       "place the atom there, relax it with the run's calculator, optimiser and "
                       "relax region (crystal half fixed as in the run) to --fmax, and report "
                       "E_ads = E(model+X) - E(model) - E(X): results.csv, results.json, "
                       "adsorption.png in RUN_DIR/adsorb/. Finished sites are kept when the "
                       "command runs again; under mpirun the sites are spread over groups of "
                       "ranks (--groups).")
    _add_target_args(p, "adsorb")
    p.add_argument("--species", default="Na", help="the adsorbed element, default Na")
    p.add_argument("--reference", default=None, choices=REFERENCES,
                   help="E(X): 'atom' (isolated atom in a 12 Å box, the default) or 'bulk' "
                   "(the metal per atom, ASE's reference state; the default, and the only "
                   "choice, with chgnet and sevennet, which have no free-atom energy)")
    p.add_argument("--sites-per-region", type=int, default=PER_REGION, metavar="N",
                   help=f"sites per region, the largest voids (default {PER_REGION})")
    p.add_argument("--grid", type=float, default=GRID_A, metavar="Å",
                   help=f"spacing of the void search grid (Å), default {GRID_A:g}")
    p.add_argument("--separation", type=float, default=SEPARATION_A, metavar="Å",
                   help=f"smallest distance between two sites (Å), default {SEPARATION_A:g}")
    p.add_argument("--fmax", type=float, default=FMAX, metavar="EV/Å",
                   help=f"force criterion of the relaxations (eV/Å), default {FMAX:g}")
    p.add_argument("--steps", type=int, default=STEPS, help="maximum optimiser steps per "
                   f"relaxation, default {STEPS}")
    p.add_argument("--groups", type=int, default=None, metavar="G",
                   help="under mpirun: groups of ranks the tasks are spread over (default: "
                   "one per rank)")

    p = sub.add_parser("finish", help="the finish calculator's part on a run that is over: "
                       "its final optimisation (or single point) and the force spot checks, "
                       "e.g. GPAW on a machine-learned run, on a cluster or overnight",
                       description=textwrap.fill("From the run's final.traj: dynamics.final_relax with the "
                       "finish calculator (the run's finish section, or --finish-of PRESET's) "
                       "for at most finish.relax_steps steps (0: a single point), then the force "
                       "spot checks of the run's calculator against it (finish.check_every "
                       "frames of its trajectory and the finished structure) and the "
                       "region-resolved structure. The same as the run's own finish would have "
                       "done. Writes RUN_DIR/finish/ (finish.json, final.traj, relax.log, "
                       "analysis/); the run's own files are not touched. Stopped (signal, "
                       "--stop-after: exit code 75), the same command continues it from its "
                       "last optimisation step.", 88),
                       epilog="example:\n  mpirun -np 64 meltquench finish "
                       "runs/paper-perfect-ml-20261207 --set finish.relax_steps=100\n\n"
                       "exit codes: 0 done, 2 bad input, 75 stopped (checkpointed), 4 SCF "
                       "failure, 1 unexpected error",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="RUN_DIR", help="a run folder whose MD is done (final.traj, "
                   "config.yaml)")
    p.add_argument("--finish-of", metavar="PRESET", help="use the finish section of PRESET "
                   "(e.g. paper-perfect-ml, ml-demo) instead of the run's own")
    _add_set_argument(p, "change one key, e.g. --set finish.relax_steps=50 or --set "
                      "finish.calculator.gpaw.basis=dzp")
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/finish)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier finish in the "
                   "output folder (only the files this command writes), or start a stopped one "
                   "afresh")
    p.add_argument("--stop-after", metavar="TIME", help="wall-time budget (seconds or "
                   "HH:MM:SS): checkpoint and exit with code 75 before it is spent")
    p.add_argument("--dry-run", action="store_true", help="print what it would compute and its "
                   "estimated cost on these ranks; compute nothing")

    sub.add_parser("presets", help="list the presets with their cost")

    p = sub.add_parser("config", help="show the resolved configuration or every key")
    _add_config_args(p)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--show", action="store_true", help="print the resolved configuration (default)")
    group.add_argument("--keys", action="store_true", help="print every key with its default and meaning")
    return parser


def _add_target_args(p, command):
    p.add_argument("source", metavar="RUN_DIR", help="a run folder (final.traj and config.yaml) "
                   "or a structure file ASE reads")
    p.add_argument("--preset", metavar="NAME", help="with a structure file: the preset whose "
                   "calculator settings to use")
    p.add_argument("--finish-of", metavar="PRESET", help="use the finish calculator of PRESET "
                   "(e.g. ml-demo: GPAW PBE+U) in place of the run's own: for a run made with "
                   "finish.calculator null")
    _add_set_argument(p, "change one key of the configuration, e.g. --set "
                      "calculator.gpaw.basis=dzp")
    p.add_argument("--out", metavar="DIR", help=f"output folder (default RUN_DIR/{command} or "
                   f"<stem>_{command} beside a structure file)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in the "
                   "output folder (only the files this command writes)")
    p.add_argument("--interface-width", type=float, default=None, metavar="Å",
                   help="interface band around the boundary planes (Å), default the run's "
                   "analysis.interface_width")


def parse_duration(text):
    """'3600', '90.5' or 'HH:MM:SS' / 'MM:SS' -> seconds."""
    if text is None:
        return None
    try:
        parts = [float(x) for x in str(text).split(":")]
    except ValueError:
        raise UserError(f"--stop-after takes seconds or HH:MM:SS, got {text!r}") from None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60.0 + part
    if seconds <= 0 or len(parts) > 3:
        raise UserError(f"--stop-after takes a positive time in seconds or HH:MM:SS, got {text!r}")
    return seconds


def cmd_run(args):
    stop_after = parse_duration(args.stop_after)
    if args.restart:
        if args.config or args.preset or args.overrides:
            raise UserError("--restart continues with the run's own config.yaml: give no config, "
                            "--preset or --set with it; to change a setting a restart may "
                            f"change, edit {Path(args.restart) / 'config.yaml'}")
        if (Path(args.restart) / "replicas.yaml").exists():
            restart_replicas(args.restart, stop_after_s=stop_after)
            return 0
        result = driver.restart(args.restart, stop_after_s=stop_after)
        say_done(result)
        return finish_status(result)
    preset = args.preset or (None if args.config else "demo")  # no config: the demo
    cfg = load_config(args.config, preset=preset, overrides=args.overrides)
    if args.output:
        cfg.output.directory = args.output
    if args.dry_run or args.calibrate:
        text = dry_run(cfg, calibrate_iterations=args.calibrate)
        if is_root():
            print(text)
        return 0
    if cfg.replicas.count > 1:
        run_dir = cfg.output.directory or default_run_dir(cfg.output.name, get_comm())
        run_replicas(cfg, run_dir, overwrite=args.overwrite or cfg.output.overwrite,
                     stop_after_s=stop_after)
        return 0
    result = driver.run(cfg, overwrite=args.overwrite or cfg.output.overwrite, stop_after_s=stop_after)
    say_done(result)
    if is_root():
        if cfg.output.name == "demo":
            print("\nThis was the demo: a demonstration of the pipeline on a small cell, far too "
                  "short to amorphise anything.\nFor the paper's method: meltquench run --preset "
                  "paper-perfect --dry-run (then on a cluster, see scripts/).")
    return finish_status(result)


def say_done(result):
    """The closing lines of a run, started or restarted: its steps and its files (rank 0)."""
    if result is None or not is_root():
        return
    print(f"\nDone: {result.nsteps} MD steps. Outputs in {result.run_dir}/:")
    for name in sorted(p.name for p in Path(result.run_dir).iterdir()
                       if not p.name.startswith(".")):
        print(f"  {name}")


def finish_status(result):
    """The exit status of a finished run (``result``: a :class:`~meltquench.driver.RunResult`
    or None): 0, or where the finish calculator's part was given up ``SCFFailure.exit_code``
    with why on stderr (rank 0)."""
    if result is None or not result.finish_failed:
        return 0
    if is_root():
        print(f"meltquench: {result.finish_failed}", file=sys.stderr)
    return SCFFailure.exit_code


def cmd_build(args):
    cfg = load_config(args.config, preset=args.preset, overrides=args.overrides)
    atoms = build_model(cfg)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} already exists: pass --overwrite to replace it")
    if args.write_input:
        check_calculator_input(cfg, Path(args.write_input), args.overwrite, atoms)
    if is_root():
        try:
            write(out, atoms, parallel=False)
        except Exception as exc:
            raise UserError(f"cannot write {out}: {exc}") from None
        print(f"{atoms.get_chemical_formula()} ({len(atoms)} atoms) written to {out}")
        print(format_region_report(atoms))
        if args.write_input:
            write_calculator_input(cfg, atoms, Path(args.write_input), args.overwrite)
    return 0


def check_calculator_input(cfg, folder, overwrite=False, atoms=None):
    """Raise :class:`UserError` unless ``--write-input`` can write ``folder`` for ``cfg``;
    return the VASP runs it will write (:func:`~meltquench.calculators.programme_stages`)."""
    if cfg.calculator.name != "vasp":
        raise UserError(f"--write-input writes VASP input files; the calculator here is "
                        f"{cfg.calculator.name} (use a *-vasp preset or calculator.name=vasp)")
    st = cfg.structure
    if st.defects and st.defect_stage == "after-quench":
        raise UserError("the chained VASP runs cannot make defects between the quench and the "
                        "optimisation (structure.defect_stage: after-quench): run the engine's "
                        "own dynamics with VASP ('meltquench run'), or set "
                        "structure.defect_stage=before-melt")
    if "VASP_PP_PATH" not in ase_cfg:
        raise UserError("VASP_PP_PATH is not set: point it at the folder holding potpaw_PBE "
                        "(the POTCAR files come from your VASP licence)")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--write-input {folder} is a file, not a folder")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise UserError(f"{folder} is not empty: pass --overwrite to write into it")
    dy = cfg.dynamics
    runs = programme_stages(cfg.calculator.vasp, cfg.build_schedule(), dy.timestep_fs,
                            relax_fmax=dy.relax_fmax if dy.final_relax else None,
                            relax_steps=dy.relax_steps)
    for run in runs:  # --overwrite never mixes new input with a VASP run's output
        ran = [name for name in ("done", "OUTCAR", "CONTCAR")
               if (folder / run.folder / name).exists()]
        if ran:
            raise UserError(f"{folder / run.folder} holds the output of a VASP run "
                            f"({', '.join(ran)}): write the input into a new folder")
    if atoms is not None:
        check_potcars(cfg.calculator.vasp, atoms)
    return runs


def write_calculator_input(cfg, atoms, folder, overwrite=False):
    """Write the VASP input of ``cfg``'s whole programme for ``atoms`` into ``folder``: one
    folder per VASP run and ``run-programme.sh`` that chains them (no VASP needed).

    The runs follow ``cfg``'s schedule and time step (VASP's own MD with its Nosé
    thermostat, the paper's way), then the final optimisation; the first run starts from the
    velocities ``meltquench run`` would draw (``dynamics.seed``, zero on fixed atoms).
    """
    runs = check_calculator_input(cfg, folder, overwrite)
    c = cfg.calculator
    atoms = prepare_atoms(c, atoms.copy())
    starting_velocities(atoms, cfg.build_schedule().temperature(0.0), cfg.dynamics.seed)
    folder.mkdir(parents=True, exist_ok=True)
    script = write_vasp_programme(c.vasp, atoms, folder, runs=runs, dispersion=c.dispersion,
                                  spinpol=c.spinpol, title=cfg.output.name)
    print(f"VASP input of the programme written to {folder}: {calculators.describe(c)}")
    print("\n".join("  " + line for line in programme_table(runs)))
    print(f"run it with: VASP_COMMAND='srun vasp_gam' {script}")


def cmd_presets(args):
    for name, preset in PRESETS.items():
        print(f"{name}\n  {preset['_description']}")
        print(textwrap.indent(preset_cost(name), "  "))
    return 0


def cmd_config(args):
    if args.keys:
        print(describe_keys())
        return 0
    cfg = load_config(args.config, preset=args.preset, overrides=args.overrides)
    print(cfg.to_yaml(), end="")
    return 0


def add_analyse_arguments(parser):
    """Add the ``meltquench analyse`` arguments to an argparse parser."""
    parser.add_argument("source", help="run folder (with trajectory.traj) or trajectory file")
    parser.add_argument("--rmax", type=float, default=6.0, help="largest distance (Å), default 6")
    parser.add_argument("--nbins", type=int, default=200, help="histogram bins, default 200")
    parser.add_argument("--start", type=int, default=0, help="first frame, default 0")
    parser.add_argument("--stop", type=int, default=None, help="stop before this frame")
    parser.add_argument("--stride", type=int, default=1, help="take every n-th frame")
    parser.add_argument("--regions", nargs="+", default=list(REGIONS), metavar="REGION",
                        help="regions among all, crystal, melt, interface (default all four)")
    parser.add_argument("--interface-width", type=float, default=3.0,
                        help="interface band: within this distance (Å) of a boundary plane")
    parser.add_argument("--cutoff", action="append", default=[], metavar="A-B=R",
                        help="coordination cutoff in Å, e.g. V-O=2.3 (repeatable); pairs "
                             "without one use the first minimum of g(r)")
    parser.add_argument("--pairs", nargs="+", default=None, metavar="A-B",
                        help="centre-neighbour pairs, e.g. V-O O-V (default every pair)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default RUN_DIR/analysis or <trajectory>_analysis)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier analysis in the output folder")
    parser.add_argument("--no-melt", dest="melt", action="store_false",
                        help="skip the melt diagnostics (MSD, V6/O4 fractions and q6bar per "
                             "region against time, and the melted / amorphous / intact "
                             "verdicts: melt.json, melt_msd.png, melt_order.png)")
    parser.add_argument("--order-cutoff", type=float, default=ORDER_CUTOFF_A, metavar="R",
                        help="O-O bond cutoff (Å) of the order parameter q6bar, default "
                             f"{ORDER_CUTOFF_A:g}")
    parser.add_argument("--no-angles", dest="angles", action="store_false",
                        help="skip the bond-angle distributions (O-V-O at V, V-O-V at O, bonds "
                             "below the coordination cutoffs: angles.csv, angles.png)")
    parser.add_argument("--no-xrd", dest="xrd", action="store_false",
                        help="skip the simulated powder XRD and partial structure factors "
                             "(xrd.csv, xrd.png, sq.csv)")
    parser.add_argument("--wavelength", type=float, default=CU_KALPHA, metavar="Å",
                        help=f"X-ray wavelength (Å), default {CU_KALPHA} (Cu K-alpha1)")
    parser.add_argument("--two-theta", type=float, nargs=2, default=list(TWO_THETA_RANGE),
                        metavar=("MIN", "MAX"), help="2theta range of the pattern (degrees), "
                        f"default {TWO_THETA_RANGE[0]:g} {TWO_THETA_RANGE[1]:g}")
    parser.add_argument("--xrd-rmax", type=float, default=XRD_RMAX_A, metavar="Å",
                        help="pair distances summed, which is the diameter of the grains the "
                             f"pattern is of (default {XRD_RMAX_A:g}: peaks ~1 degree wide); "
                             "the cost per frame grows as its cube")
    parser.add_argument("--no-lp", dest="lp", action="store_false",
                        help="leave out the Lorentz-polarisation factor (default: applied, as "
                             "in a laboratory powder pattern)")
    parser.add_argument("--xrd-all-frames", action="store_true",
                        help="average the XRD over every analysed frame (default: the last "
                             "analysed frame, the final structure)")
    return parser


def parse_cutoff_options(items):
    """['V-O=2.3', ...] -> {'V-O': 2.3}; a malformed item is a UserError."""
    out = {}
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                out[name.strip()] = float(value)
            except ValueError:
                raise UserError(f"--cutoff {part!r} must look like V-O=2.3 (Å)") from None
    return out


def default_analysis_dir(source):
    """RUN_DIR/analysis for a run folder, else <stem>_analysis beside the trajectory file."""
    path = Path(source)
    if path.is_dir():
        return path / "analysis"
    return path.with_name(path.stem + "_analysis")


def analyse_from_args(args):
    """Run :func:`~meltquench.analysis.analyse` (and, unless ``--no-melt``,
    :func:`~meltquench.analysis.melt_diagnostics`) from parsed arguments, write the outputs and
    print the table and the verdicts (rank 0); returns the
    :class:`~meltquench.analysis.AnalysisResult`."""
    cutoffs = parse_cutoff_options(getattr(args, "cutoff", None)) or None
    out = Path(args.out) if getattr(args, "out", None) else default_analysis_dir(args.source)
    if (out / "summary.json").exists() and not getattr(args, "overwrite", False):
        raise UserError(f"{out} already holds an analysis: pass --overwrite to replace it or "
                        "--out DIR to write elsewhere")
    regions = tuple(getattr(args, "regions", None) or REGIONS)
    order_cutoff = check_length("--order-cutoff", getattr(args, "order_cutoff", ORDER_CUTOFF_A))
    xrd_options = None
    if getattr(args, "xrd", False):
        xrd_options = dict(wavelength=check_length("--wavelength", args.wavelength),
                           two_theta=check_two_theta(args.two_theta),
                           rmax=check_length("--xrd-rmax", args.xrd_rmax), lp=args.lp)
    result = analyse(args.source, rmax=args.rmax, nbins=args.nbins, start=args.start,
                     stop=args.stop, stride=args.stride, regions=regions,
                     interface_width=args.interface_width, cutoffs=cutoffs, pairs=args.pairs)
    result.write(out)
    if result.rank == 0:
        print(result.table())
    structure_extras(args, result, regions, xrd_options, out)
    if getattr(args, "melt", True):
        melt = melt_diagnostics(args.source, cutoff_VO=vo_cutoff(result),
                                order_cutoff=order_cutoff,
                                regions=regions, interface_width=args.interface_width,
                                start=args.start, stop=args.stop, stride=args.stride)
        melt.write(out)
        if melt.rank == 0:
            print("\n" + "\n".join(melt.verdict_lines()))
    if result.rank == 0:
        print(f"written to {out}")
    return result


def structure_extras(args, result, regions, xrd_options, out):
    """The bond angles (with ``result``'s cutoffs) and the powder XRD of ``analyse_from_args``:
    written to ``out``, summarised on rank 0."""
    options = dict(regions=regions, interface_width=args.interface_width)
    frames = (args.start, args.stop, args.stride)
    if getattr(args, "angles", False):
        cutoffs = {k: v for k, v in result.cutoffs.items() if v == v}  # finite (not NaN)
        if cutoffs:
            angles = BondAngles(args.source, cutoffs=cutoffs, **options).run(*frames)
            report = angles.result(result.source)
            report.write(out)
            if report.rank == 0:
                print("\n" + "\n".join(report.lines()))
        elif result.rank == 0:
            print("\nBond angles: no coordination cutoff, none measured (give --cutoff V-O=2.3)")
    if xrd_options is not None:
        with Frames(args.source) as source:
            selected = source.select(*frames)
            if not args.xrd_all_frames:
                frames = (selected[-1], selected[-1] + 1, 1)
            xrd = XRD(source, **xrd_options, **options).run(*frames)
        report = xrd.result(result.source)
        report.write(out)
        if report.rank == 0:
            print("\n" + "\n".join(report.lines()))


def cmd_dos(args):
    comm = get_comm()
    target = load_target(args.source, args.preset, args.overrides, args.finish_of)
    settings, which = target.calculator_settings()
    settings = dos_settings(settings)
    check_dos_options(args.width, args.window, args.threshold)
    width = _interface_width(args, target)
    out = Path(args.out) if args.out else target.default_out("dos")
    with open_output(out, "dos.json", args.overwrite, comm, DOS_FILES):
        if is_root():
            print(f"DOS of {target.label}: {calculators.describe(settings)} ({which}, "
                  "no D3: it changes no eigenvalue)", flush=True)
        states, cached = compute_states(target.atoms, settings, out, comm,
                                        target.cfg.schedule.T_final_K, cache=out / STATES_NAME)
        result = dos_from_states(states, target.atoms, width=args.width,
                                 window=tuple(args.window), threshold=args.threshold,
                                 interface_width=width, source=target.label,
                                 calculator=calculators.describe(settings))
        if is_root():
            result.write(out)
            if cached:
                print(f"(the Kohn-Sham states of {out / STATES_NAME} were reused: same "
                      "structure and settings)")
            print("\n".join(result.lines()))
            print(f"written to {out}")
    return 0


def cmd_dos_compare(args):
    comparison = compare_dos(args.folders, args.labels, args.paper)
    out = Path(args.out)
    with open_output(out, "dos-compare.csv", args.overwrite, get_comm(), COMPARE_FILES):
        if is_root():
            comparison.write(out)
            print("\n".join(comparison.lines()))
            print(f"written to {out}")
    return 0


def _interface_width(args, target):
    width = (target.cfg.analysis.interface_width if args.interface_width is None
             else args.interface_width)
    return check_length("--interface-width", width)


def cmd_adsorb(args):
    comm = get_comm()
    target = load_target(args.source, args.preset, args.overrides, args.finish_of)
    settings, which = target.calculator_settings()
    reference = choose_reference(args.reference, settings)
    check_options(args.species, reference, args.fmax, args.steps)
    if args.groups is not None and not 1 <= args.groups:
        raise UserError(f"--groups must be at least 1, got {args.groups}")
    calculators.check_available(settings)
    sites = find_sites(target.atoms, args.sites_per_region, args.grid, args.separation,
                       _interface_width(args, target))
    out = Path(args.out) if args.out else target.default_out("adsorb")
    with open_output(out, "results.json", args.overwrite, comm, ADSORB_FILES):
        if is_root():
            print(f"{args.species} adsorption on {target.label}: {len(sites)} sites, "
                  f"{calculators.describe(settings)} ({which}), reference {reference}",
                  flush=True)
        rows, meta = adsorb(target.atoms, target.cfg, settings, sites, out, comm,
                            species=args.species, reference=reference, fmax=args.fmax,
                            steps=args.steps, source=target.label, groups=args.groups,
                            say=lambda text: print(text, flush=True))
        if is_root():
            print(format_table(rows))
            for line in host_warnings(rows, args.species):
                print(f"WARNING: {line}")
            print(f"reference: {meta['reference_note']}")
            print("the paper's E_ads (Fig. 4f, eV): " + "; ".join(
                f"{model}: " + ", ".join(f"{k} {v:g}" for k, v in values.items())
                for model, values in PAPER_EADS_EV.items()))
            print(f"written to {out}")
    return 0


def cmd_analyse(args):
    analyse_from_args(args)
    return 0


def cmd_finish(args):
    stop_after = parse_duration(args.stop_after)
    cfg = finish_config(args.source, args.finish_of, args.overrides)
    if args.dry_run:
        text = finish_plan(args.source, cfg, get_comm().Get_size())
        if is_root():
            print(text)
        return 0
    out = Path(args.out) if args.out else Path(args.source) / "finish"
    finish(args.source, cfg, out, overwrite=args.overwrite, stop_after_s=stop_after)
    if is_root():
        print(f"Done. Outputs in {out}/")
    return 0


COMMANDS = {"run": cmd_run, "analyse": cmd_analyse, "analyze": cmd_analyse, "build": cmd_build,
            "dos": cmd_dos, "dos-compare": cmd_dos_compare, "adsorb": cmd_adsorb,
            "finish": cmd_finish, "presets": cmd_presets, "config": cmd_config}


#: Where mpirun/mpiexec (Open MPI, PMIx, MPICH/Intel MPI, MVAPICH) tell a process its rank and
#: the number of ranks, before MPI starts.
_LAUNCHER_RANK = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
_LAUNCHER_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


def _started_mpi():
    """mpi4py's MPI module if this process has started MPI (and not yet finished it), else None."""
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized() else None


def _rank():
    """(rank, number of ranks) of this process: from MPI once it has started, else from the
    launcher's environment, else (0, 1). Bad input is mostly found before anything starts MPI,
    and then every rank finds it: the environment tells them apart without starting MPI."""
    mpi = _started_mpi()
    if mpi is not None:
        return mpi.COMM_WORLD.Get_rank(), mpi.COMM_WORLD.Get_size()
    rank = next((os.environ[k] for k in _LAUNCHER_RANK if k in os.environ), "0")
    size = next((os.environ[k] for k in _LAUNCHER_SIZE if k in os.environ), "1")
    try:
        return int(rank), int(size)
    except ValueError:
        return 0, 1


def _hold_until_rank0_printed(size, seconds=10.0):
    """Under mpirun, keep every rank from exiting until rank 0 has printed the error: mpirun
    ends the job at the first non-zero exit, and a rank that got there first took rank 0's
    line with it (seen with the cores busy). All ranks meet in a non-blocking barrier (MPI is
    started here if it was not: every rank found the same bad input); a rank whose error the
    others did not find gives up waiting after ``seconds``."""
    if size < 2:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        from mpi4py import MPI
    except ImportError:
        return
    if not MPI.Is_initialized() or MPI.Is_finalized():
        return
    request = MPI.COMM_WORLD.Ibarrier()
    deadline = time.monotonic() + seconds
    while not request.Test() and time.monotonic() < deadline:
        time.sleep(0.01)


def _parse_args(parser, argv):
    """``parser.parse_args(argv)``; no command means ``run``. Unknown arguments are reported
    with the command's help, which lists the known ones."""
    args, unknown = parser.parse_known_args(argv)
    if args.command is None:
        args, unknown = parser.parse_known_args(["run"] + argv)
    if unknown:
        raise UserError(f"unrecognized arguments: {' '.join(unknown)} (see '{parser.prog} "
                        f"{args.command} --help')")
    return args


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    try:
        args = _parse_args(build_parser(), argv)
        return COMMANDS[args.command](args)
    except (UserError, RunStopped) as exc:
        if args is not None and args.debug:
            raise
        rank, size = _rank()
        if rank == 0:
            print(f"meltquench: error: {exc}" if isinstance(exc, UserError) else f"meltquench: {exc}",
                  file=sys.stderr)
        _hold_until_rank0_printed(size)
        return exc.exit_code
    except KeyboardInterrupt:
        print("meltquench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args is not None and args.debug:
            raise
        rank, size = _rank()
        print(f"meltquench: unexpected error{f' on rank {rank}' if size > 1 else ''}: "
              f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        mpi = _started_mpi()
        if mpi is not None and size > 1:  # the other ranks may wait in a collective call
            mpi.COMM_WORLD.Abort(1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
