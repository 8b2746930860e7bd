"""VASP through ASE's ``Vasp`` calculator: the paper's settings, and the paper's programme as
chained VASP runs.

The settings are INCAR tags in lower case, as ASE's ``Vasp`` takes them; a tag set to null is
left out of the INCAR (VASP's own default then applies). VASP adds D3(BJ) itself
(``IVDW = 12``), so no dispersion calculator goes on top. Fixed atoms (FixAtoms) are written
as selective dynamics in the POSCAR by ASE. Units: eV (``encut``, ``sigma``, ``ediff``), fs
(``POTIM``), K (``TEBEG``, ``TEEND``).

There are two ways to run VASP:

- **VASP's own molecular dynamics, the paper's way** (Osman et al. ran AIMD in VASP, NVT):
  :func:`write_vasp_programme` (``meltquench build --write-input DIR``) writes the programme
  as chained VASP runs. One VASP run has one linear ``TEBEG -> TEEND`` ramp, so every stage
  of the schedule (heat, melt, quench, hold) is its own run (``IBRION = 0``, ``NSW`` steps of
  ``POTIM`` fs, the Nosé thermostat of ``MDALGO``/``SMASS``), optionally cut into runs of at
  most ``stage_steps`` steps, then the final optimisation (``IBRION = 2``, ``EDIFFG``). A
  shell script, ``run-programme.sh``, runs them in order, each from the ``CONTCAR`` of the one
  before (positions, velocities and VASP's predictor-corrector block: the MD goes on where it
  stopped).
- **The engine's own dynamics** (:func:`make_vasp`): ASE runs one VASP single point per MD
  step and meltquench's thermostats move the atoms, for users who want those thermostats.

Electronic smearing of the chained runs: with ``electronic_temperature: follow`` (default),
Fermi smearing (``ISMEAR = -1``) with ``SIGMA = max(k_B T, sigma)`` at the hotter end of each
run, as GPAW's width follows the programme (0.345 eV at 4000 K, 0.05 eV for the 300 K hold and
the optimisation).
"""
import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from ase import units
from ase.config import cfg as ase_config
from ase.md.velocitydistribution import thermalize_momenta
from ase.parallel import DummyMPI

from ..errors import UserError
from .base import Settings, setting


@dataclass
class VaspSettings(Settings):
    """``calculator.vasp``: INCAR tags for ASE's ``Vasp`` (the paper's method)."""

    section = "calculator.vasp"
    unknown_key_hint = "put any other vasp keyword under calculator.vasp.extra"

    xc: Optional[str] = setting("PBE", "exchange-correlation functional (ASE's xc, sets GGA)")
    encut: Optional[float] = setting(450.0, "plane-wave cutoff ENCUT (eV)")
    kpts: list = setting([1, 1, 1], "k-point grid")
    gamma: bool = setting(True, "Gamma-centred k-point grid")
    hubbard_u: Optional[dict] = setting(
        {"V": 3.25}, "{element: U_eff (eV)} on the d shell: LDAU, LDAUTYPE 2, LDAUL 2 on these "
        "elements and -1 elsewhere")
    setups: Optional[Union[str, dict]] = setting(
        {"base": "recommended", "V": "_sv"},
        "POTCARs, as ASE's Vasp setups: {element: suffix} on top of a base set. Default: V_sv "
        "(3s3p semicore in valence, as VASP recommends and as GPAW's V setup has) and VASP's "
        "recommended set (ASE's table) for every other element; {} or null: the plain "
        "potentials (ASE's own default is plain V)")
    lasph: Optional[bool] = setting(
        True, "LASPH: non-spherical gradient corrections inside the PAW spheres (essential for "
        "3d oxides with DFT+U, VASP's documentation says)")
    ismear: Optional[int] = setting(-1, "ISMEAR (-1: Fermi smearing, as GPAW's fermi-dirac)")
    sigma: Optional[float] = setting(
        0.05, "SIGMA, the smearing width (eV); with electronic_temperature follow, the floor of "
        "the chained runs' widths")
    electronic_temperature: str = setting(
        "follow", "smearing of the chained runs of 'build --write-input': 'follow' (ISMEAR -1, "
        "SIGMA = max(k_B T, sigma) at the hotter end of each run, as GPAW's width follows the "
        "programme) or 'fixed' (ismear and sigma in every run); the engine's own per-step "
        "driving follows the target temperature of each step the same way")
    ediff: Optional[float] = setting(1e-5, "EDIFF, the SCF energy criterion (eV)")
    prec: Optional[str] = setting("Normal", "PREC")
    algo: Optional[str] = setting("Fast", "ALGO")
    lreal: Optional[Union[str, bool]] = setting("Auto", "LREAL (real-space projection)")
    lmaxmix: Optional[int] = setting(4, "LMAXMIX (4 for d electrons with LDAU)")
    isym: Optional[int] = setting(0, "ISYM (0: no symmetry, as MD needs)")
    istart: Optional[int] = setting(1, "ISTART (1: start from the previous step's WAVECAR)")
    lwave: Optional[bool] = setting(True, "LWAVE (keep the WAVECAR for the next step)")
    lcharg: Optional[bool] = setting(False, "LCHARG")
    ncore: Optional[int] = setting(None, "NCORE (cores per orbital; null: VASP's default)")
    mdalgo: Optional[int] = setting(
        0, "MDALGO of the chained MD runs: 0, VASP's standard MD, with SMASS >= 0 the Nosé "
        "thermostat (needs no -Dtbdyn); 2, the same Nosé-Hoover thermostat through -Dtbdyn")
    smass: Optional[float] = setting(
        0.0, "SMASS, the Nosé mass of the chained MD runs: 0 gives a thermostat period of 40 "
        "steps (80 fs at POTIM 2; the engine's NHC uses dynamics.tdamp_fs)")
    stage_steps: Optional[int] = setting(
        None, "cut the chained MD runs into VASP runs of at most this many steps (each its own "
        "folder and piece of the ramp, and SIGMA), so one run fits a job's wall time; null: "
        "one VASP run per stage of the schedule")
    extra: Optional[dict] = setting({}, "any further Vasp keyword, applied last (in every "
                                    "chained run too)")

    def __post_init__(self):
        super().__post_init__()
        if self.electronic_temperature not in ("follow", "fixed"):
            raise UserError(f"calculator.vasp.electronic_temperature must be 'follow' or "
                            f"'fixed', got {self.electronic_temperature!r}")
        if self.electronic_temperature == "follow" and not (self.sigma or 0) > 0:
            raise UserError("calculator.vasp.sigma must be > 0 eV with electronic_temperature "
                            f"follow (it is the floor of the width), got {self.sigma!r}")
        if self.stage_steps is not None and self.stage_steps < 1:
            raise UserError(f"calculator.vasp.stage_steps must be >= 1 or null, got "
                            f"{self.stage_steps}")

    def potcars(self):
        """The POTCAR choice in words, e.g. ``V_sv, recommended set``."""
        setups = self.setups
        if not setups:
            return "plain POTCARs"
        if isinstance(setups, str):
            return f"{setups} POTCAR set"
        named = [f"{el}{suffix}" for el, suffix in setups.items() if el != "base"]
        base = [f"{setups['base']} set"] if "base" in setups else []
        return "POTCAR " + ", ".join(named + base)

    def describe(self):
        """One line, e.g. ``VASP PW 450 eV, PBE, U 3.25 eV on V d, POTCAR V_sv, ...``."""
        u = ", ".join(f"U {v} eV on {k} d" for k, v in (self.hubbard_u or {}).items() if v)
        return (f"VASP PW {self.encut:g} eV, {self.xc}" + (f", {u}" if u else "")
                + f", {self.potcars()}" + (", LASPH" if self.lasph else ""))


#: Tags only the chained runs use (the engine's per-step single points leave them out).
PROGRAMME_KEYS = ("electronic_temperature", "mdalgo", "smass", "stage_steps")


def vasp_parameters(settings, *, dispersion=None, spinpol=False, stage=None):
    """Keyword arguments for ASE's ``Vasp`` from :class:`VaspSettings` (or a dict).

    ``dispersion='d3bj'`` adds ``IVDW = 12`` (D3 with Becke-Johnson damping, no three-body
    term); ``spinpol`` sets ``ISPIN`` 2 (else 1; the initial moments come from the atoms as
    ``MAGMOM``); ``stage`` (a dict of tags, :func:`programme_stages`) is applied before
    ``extra``.
    """
    s = VaspSettings.from_dict(settings)
    kw = {k: v for k, v in s.to_dict().items()
          if k not in ("hubbard_u", "extra", "kpts", "setups", *PROGRAMME_KEYS)
          and v is not None}
    kw["kpts"] = tuple(int(k) for k in s.kpts)
    kw["gamma"] = bool(s.gamma)
    if s.setups:
        kw["setups"] = copy.deepcopy(s.setups)
    luj = {el: {"L": 2, "U": float(u), "J": 0.0} for el, u in (s.hubbard_u or {}).items() if u}
    if luj:
        kw.update(ldau=True, ldautype=2, ldau_luj=luj)
    kw["ispin"] = 2 if spinpol else 1
    if dispersion == "d3bj":
        kw["ivdw"] = 12
    kw.update(copy.deepcopy(stage or {}))
    kw.update(copy.deepcopy(s.extra or {}))
    return kw


def make_vasp(settings, *, directory, dispersion=None, spinpol=False):
    """ASE ``Vasp`` calculator running in ``directory/vasp``: one VASP single point per MD step
    of the engine's own dynamics.

    Needs ``ASE_VASP_COMMAND`` (or ``VASP_COMMAND``/``VASP_SCRIPT``) and ``VASP_PP_PATH``, in
    the environment or ASE's configuration file.
    """
    if not any(k in ase_config for k in ("ASE_VASP_COMMAND", "VASP_COMMAND", "VASP_SCRIPT")):
        raise UserError("VASP is not set up: set ASE_VASP_COMMAND (e.g. 'mpirun vasp_std') "
                        "and VASP_PP_PATH (folder holding potpaw_PBE)")
    if "VASP_PP_PATH" not in ase_config:
        raise UserError("VASP_PP_PATH is not set: point it at the folder holding potpaw_PBE")
    parameters = vasp_parameters(settings, dispersion=dispersion, spinpol=spinpol)
    vasp_dir = Path(directory) / "vasp"
    vasp_dir.mkdir(parents=True, exist_ok=True)
    from ase.calculators.vasp import Vasp
    return Vasp(directory=str(vasp_dir), **parameters)


# --------------------------------------------------------------------------- the programme
@dataclass(frozen=True)
class VaspRun:
    """One VASP run of the chained programme: its folder, what it is and its own INCAR tags."""

    folder: str
    stage: str
    tags: dict

    @property
    def is_md(self):
        return self.tags.get("ibrion") == 0


def smearing_width(settings, temperature_K):
    """SIGMA (eV) of a chained run whose hotter end is ``temperature_K``:
    ``max(k_B T, sigma)`` (rounded to 0.1 meV) with ``electronic_temperature: follow``, else
    None (``ismear`` and ``sigma`` as they are)."""
    s = VaspSettings.from_dict(settings)
    if s.electronic_temperature != "follow":
        return None
    return round(max(float(s.sigma), units.kB * float(temperature_K)), 4)


def programme_stages(settings, schedule, timestep_fs, *, relax_fmax=None, relax_steps=0):
    """The chained VASP runs of ``schedule`` (a :class:`~meltquench.schedule.Schedule`) with
    ``timestep_fs`` steps, then the optimisation (``relax_fmax`` eV/Å, at most
    ``relax_steps`` steps; none when ``relax_fmax`` is None): a list of :class:`VaspRun`.

    Each stage gets ``round(duration / timestep)`` steps (a stage of no step is left out) and
    is cut into runs of at most ``stage_steps``; each run ramps linearly from its start to its
    end temperature, so the runs together follow the schedule's piecewise-linear T(t).
    """
    s = VaspSettings.from_dict(settings)
    pieces = []
    for stage in schedule.stages:
        nsteps = int(round(stage.duration_fs / timestep_fs))
        if nsteps < 1:
            continue
        n_runs = -(-nsteps // s.stage_steps) if s.stage_steps else 1
        bounds = [round(nsteps * k / n_runs) for k in range(n_runs + 1)]
        for k in range(n_runs):
            t0, t1 = bounds[k] / nsteps, bounds[k + 1] / nsteps
            tebeg = stage.T_start_K + (stage.T_end_K - stage.T_start_K) * t0
            teend = stage.T_start_K + (stage.T_end_K - stage.T_start_K) * t1
            tags = {"ibrion": 0, "nsw": bounds[k + 1] - bounds[k], "potim": float(timestep_fs),
                    "tebeg": round(tebeg, 3), "teend": round(teend, 3)}
            for key in ("mdalgo", "smass"):
                if getattr(s, key) is not None:
                    tags[key] = getattr(s, key)
            pieces.append((stage.name + (f"-{k + 1}" if n_runs > 1 else ""), tags,
                           max(tebeg, teend)))
    if relax_fmax is not None and relax_steps:
        pieces.append(("relax", {"ibrion": 2, "nsw": int(relax_steps), "isif": 2,
                                 "ediffg": -abs(float(relax_fmax))}, 0.0))
    width = len(str(len(pieces)))
    runs = []
    for i, (name, tags, hottest_K) in enumerate(pieces, start=1):
        sigma = smearing_width(s, hottest_K)
        if sigma is not None:
            tags.update(ismear=-1, sigma=sigma)
        runs.append(VaspRun(f"{i:0{width}d}-{name}", name, tags))
    return runs


def write_vasp_programme(settings, atoms, folder, *, runs, dispersion=None, spinpol=False,
                         title="meltquench"):
    """Write the chained VASP runs ``runs`` (:func:`programme_stages`) for ``atoms`` into
    ``folder``: one sub-folder per run with its INCAR, KPOINTS and POTCAR, the POSCAR (with
    the atoms' velocities, if they have any) in the first, and ``run-programme.sh``.

    Needs ``VASP_PP_PATH`` (the POTCARs). Returns the path of the script.
    """
    from ase.calculators.vasp import Vasp
    folder = Path(folder)
    for i, run in enumerate(runs):
        target = folder / run.folder
        target.mkdir(parents=True, exist_ok=True)
        calc = Vasp(directory=str(target),
                    **vasp_parameters(settings, dispersion=dispersion, spinpol=spinpol,
                                      stage=run.tags))
        try:
            calc.write_input(atoms)
        except RuntimeError as exc:  # ASE: no POTCAR for an element
            raise missing_potcar(exc) from None
        if i > 0:  # later runs start from the CONTCAR before them (run-programme.sh)
            for name in ("POSCAR", "ase-sort.dat"):
                (target / name).unlink(missing_ok=True)
    script = folder / "run-programme.sh"
    script.write_text(programme_script(runs, title))
    os.chmod(script, 0o755)
    return script


def missing_potcar(exc):
    """A one-line :class:`UserError` for ASE's error about a POTCAR it did not find."""
    words = str(exc).split()
    looked = next((words[i + 2] for i, w in enumerate(words[:-2])
                   if w == "Looking" and words[i + 1] == "for"), None)
    where = f" {looked.rstrip('.')} is missing" if looked else f" {words[-1] if words else ''}"
    return UserError(f"cannot write the VASP input:{where} (calculator.vasp.setups chooses the "
                     "POTCARs, VASP_PP_PATH where they are)")


def check_potcars(settings, atoms):
    """Raise :class:`UserError` unless every POTCAR ``atoms`` need with ``settings`` exists."""
    from ase.calculators.vasp import Vasp
    try:
        Vasp(**vasp_parameters(settings)).initialize(atoms)  # ASE's own POTCAR lookup
    except RuntimeError as exc:
        raise missing_potcar(exc) from None


def programme_table(runs):
    """The runs as a table (text lines), as the script's header shows it."""
    lines = [f"{'folder':<14} {'steps':>6}  {'POTIM':>5}  {'TEBEG -> TEEND':>24}  "
             f"{'ISMEAR':>6} {'SIGMA':>6}"]
    for run in runs:
        t = run.tags
        smear = (f"{t['ismear']:>6} {t['sigma']:>6g}" if "sigma" in t else f"{'':>6} {'':>6}")
        if run.is_md:
            ramp = f"{t['tebeg']:g} -> {t['teend']:g} K"
            lines.append(f"{run.folder:<14} {t['nsw']:>6}  {t['potim']:>5g}  {ramp:>24}  {smear}")
        else:
            what = f"IBRION {t['ibrion']}, EDIFFG {t['ediffg']:g}"
            lines.append(f"{run.folder:<14} {t['nsw']:>6}  {'':>5}  {what:>24}  {smear}")
    return lines


_SCRIPT = r"""#!/usr/bin/env bash
# @TITLE@: the melt-quench programme as chained VASP runs, written by
# 'meltquench build --write-input'. One VASP run has one linear TEBEG -> TEEND ramp, so each
# stage of the programme is its own run (its own folder), then the final optimisation:
#
@TABLE@
#
# Each run starts from the CONTCAR of the run before it: positions, velocities and VASP's
# predictor-corrector block, so the MD goes on where it stopped (the first run's POSCAR holds
# the starting velocities); the optimisation takes the positions only. Each run also starts
# from the WAVECAR before it. A finished run gets a file 'done' and is skipped when this
# script runs again; an unfinished one starts over from its beginning.
#
# Usage:   VASP_COMMAND="srun vasp_gam" ./run-programme.sh     (from any folder)
#   vasp_gam, VASP's Gamma-only build, suits the Gamma-only KPOINTS and is faster than
#   vasp_std. On SIGTERM or SIGINT the running VASP is told to stop (STOPCAR, LSTOP) after
#   its current step and the script exits with code 75: run it again to go on.
# Exit codes: 0 all done, 1 a run failed, 75 stopped by a signal.
set -euo pipefail
cd "$(dirname "$0")"
VASP_COMMAND=${VASP_COMMAND:-mpirun vasp_std}
RUNS=(@RUNS@)
RELAX=@RELAX@

# A POSCAR/CONTCAR without its velocities and predictor-corrector block.
positions_only() {
  awk 'NR == 7 { n = 0; for (i = 1; i <= NF; i++) n += $i }
       NR == 8 { sd = ($1 ~ /^[sS]/) }
       { print }
       NR > 8 && NR == 8 + sd + n { exit }' "$1"
}

# True when the run in folder $1 ended normally and, for MD, made all its NSW steps.
finished() {
  grep -q "General timing" "$1/OUTCAR" 2>/dev/null || return 1
  grep -Eiq '^ *IBRION *= *0' "$1/INCAR" || return 0
  local nsw
  nsw=$(awk -F= 'toupper($1) ~ /^ *NSW *$/ { print $2 + 0 }' "$1/INCAR")
  [ "$(grep -c ' T= ' "$1/OSZICAR" 2>/dev/null || true)" -ge "$nsw" ]
}

stopping=0
previous=""
for run in "${RUNS[@]}"; do
  if [ -f "$run/done" ]; then previous=$run; continue; fi
  if [ -n "$previous" ]; then
    if [ ! -s "$previous/CONTCAR" ]; then echo "$previous/CONTCAR is missing" >&2; exit 1; fi
    if [ "$run" = "$RELAX" ]; then
      positions_only "$previous/CONTCAR" > "$run/POSCAR"
    else
      cp "$previous/CONTCAR" "$run/POSCAR"
    fi
    if [ -s "$previous/WAVECAR" ]; then cp "$previous/WAVECAR" "$run/WAVECAR"; fi
  fi
  rm -f "$run/STOPCAR"
  echo "$(date '+%F %T') $run: $VASP_COMMAND"
  (cd "$run" && exec $VASP_COMMAND > vasp.out 2>&1) &
  pid=$!
  trap 'stopping=1; echo "LSTOP = .TRUE." > "$run/STOPCAR"
        echo "stopping $run after its current step"' TERM INT
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
  trap - TERM INT
  if [ "$stopping" = 1 ]; then
    echo "stopped in $run: run this script again to go on" >&2
    exit 75
  fi
  if ! finished "$run"; then
    echo "$run did not finish: see $run/vasp.out and $run/OUTCAR" >&2
    exit 1
  fi
  if [ "$run" = "$RELAX" ] && ! grep -q "reached required accuracy" "$run/OUTCAR"; then
    echo "warning: the optimisation stopped after NSW steps without reaching EDIFFG" >&2
  fi
  touch "$run/done"
  previous=$run
done
echo "$(date '+%F %T') all runs done: the final structure is $previous/CONTCAR"
"""


def programme_script(runs, title="meltquench"):
    """The text of ``run-programme.sh`` for ``runs``."""
    relax = next((r.folder for r in runs if not r.is_md), "")
    table = "\n".join("#   " + line for line in programme_table(runs))
    return (_SCRIPT.replace("@TITLE@", title).replace("@TABLE@", table)
            .replace("@RUNS@", " ".join(r.folder for r in runs))
            .replace("@RELAX@", relax or '""'))


def starting_velocities(atoms, temperature_K, seed):
    """Give ``atoms`` Maxwell-Boltzmann velocities at ``temperature_K`` from ``seed``, zero on
    fixed atoms: the draw :mod:`meltquench.driver` makes at the start of a run."""
    thermalize_momenta(atoms, temperature_K, rng=np.random.default_rng(seed), comm=DummyMPI())
    return atoms
