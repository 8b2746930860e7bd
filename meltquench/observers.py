"""What a run records after each MD step, and the observers that write it.

The driver attaches these to its dynamics object with ``dyn.attach(observer, interval)``,
ASE's own pattern: after every step the dynamics calls them in the order they were attached.
:class:`StepRecorder` goes first and measures the step into a :class:`StepRecord`; the
writers that follow read ``recorder.record``.
"""
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.io.trajectory import Trajectory

from .errors import UserError


def _column(fmt):
    return field(metadata={"fmt": fmt})


@dataclass
class StepRecord:
    """One line of ``md.log``: the state after an MD step (ASE units: eV, fs, K)."""

    step: int = _column("d")
    time_fs: float = _column(".3f")
    T_target_K: float = _column(".3f")
    T_kin_K: float = _column(".3f")        # kinetic temperature of the mobile atoms
    E_pot_eV: float = _column(".8f")       # energy (GPAW: extrapolated to zero smearing)
    F_free_eV: float = _column(".8f")      # free energy: what the forces derive from
    E_kin_eV: float = _column(".8f")       # mobile atoms (fixed atoms have none)
    E_conserved_eV: float = _column(".8f")  # the thermostat's conserved quantity
    s_per_step: float = _column(".4f")     # wall seconds of the step
    scf_iter: int = _column("d")           # SCF iterations of the step's force call; -1: none
    width_eV: float = _column(".4f")       # smearing width of the step's force call; nan: none
    stage: str = _column("s")              # stage of the temperature programme

    @classmethod
    def header(cls):
        """The ``md.log`` header line (with its newline)."""
        return "# " + " ".join(f.name for f in dataclasses.fields(cls)) + "\n"

    def line(self):
        """This record as an ``md.log`` line (with its newline)."""
        return " ".join(format(getattr(self, f.name), f.metadata["fmt"])
                        for f in dataclasses.fields(self)) + "\n"

    @staticmethod
    def step_of(line):
        """The step number of an ``md.log`` data line."""
        return int(line.split()[0])


class StepRecorder:
    """Observer: measures the step just taken into :attr:`record`.

    ``start()`` marks the beginning of a step (for ``s_per_step``); ``scf_iterations(calc)``
    reads the SCF count of the last force call (None where the calculator has none),
    ``smearing_width(calc)`` its smearing width in eV (NaN where there is none).
    """

    def __init__(self, atoms, dyn, schedule, timestep_fs, scf_iterations, smearing_width):
        self.atoms, self.dyn, self.schedule = atoms, dyn, schedule
        self.timestep_fs = timestep_fs
        self.scf_iterations = scf_iterations
        self.smearing_width = smearing_width
        self.record = None
        self.seconds = 0.0
        self._t0 = None

    def start(self):
        self._t0 = time.perf_counter()

    def stop(self):
        self.seconds = 0.0 if self._t0 is None else time.perf_counter() - self._t0
        self._t0 = None

    def __call__(self):
        atoms, dyn = self.atoms, self.dyn
        t_fs = dyn.nsteps * self.timestep_fs
        n_scf = self.scf_iterations(atoms.calc)
        self.record = StepRecord(
            step=dyn.nsteps, time_fs=t_fs, T_target_K=self.schedule.temperature(t_fs),
            T_kin_K=dyn.get_kinetic_temperature(), E_pot_eV=atoms.get_potential_energy(),
            F_free_eV=dyn.get_free_energy(),
            E_kin_eV=atoms.get_kinetic_energy(), E_conserved_eV=dyn.get_conserved_energy(),
            s_per_step=self.seconds, scf_iter=-1 if n_scf is None else int(n_scf),
            width_eV=self.smearing_width(atoms.calc),
            stage=self.schedule.stage_of_step(t_fs).name)


def read_md_log(path):
    """The columns of an ``md.log`` by the names of its header line: ``{name: values}``, rows in
    file order.

    ``stage`` is a list of str; every other column a float array, in the units of
    :class:`StepRecord`: ``step``; ``time_fs`` (fs); ``T_target_K``, ``T_kin_K`` (K);
    ``E_pot_eV``, ``F_free_eV``, ``E_kin_eV``, ``E_conserved_eV``, ``width_eV`` (eV; NaN width:
    no smearing); ``s_per_step`` (wall seconds); ``scf_iter`` (count; -1: none). Blank and
    ``#`` lines after the header are skipped, and so is a last line with fewer fields than the
    header (cut short by a crash, or still being written). A file whose first line is not the
    ``# `` header, or another line with the wrong number of fields or a non-numeric value,
    raises :class:`~meltquench.errors.UserError`.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("#"):
        raise UserError(f"{path} has no md.log header (a first line '# step time_fs ...' "
                        "naming the columns): not an md.log written by meltquench")
    names = lines[0][1:].split()
    numbered = [(n, line.split()) for n, line in enumerate(lines[1:], start=2)
                if line.strip() and not line.startswith("#")]
    if numbered and len(numbered[-1][1]) < len(names):
        numbered.pop()  # a last line cut short
    for n, cells in numbered:
        if len(cells) != len(names):
            raise UserError(f"{path}, line {n}: {len(cells)} fields, but the header names "
                            f"{len(names)} columns")
    rows = [cells for _, cells in numbered]
    out = {}
    for i, name in enumerate(names):
        cells = [r[i] for r in rows]
        if name == "stage":
            out[name] = cells
            continue
        try:
            out[name] = np.array([float(c) for c in cells])
        except ValueError as exc:
            raise UserError(f"{path}: column {name} is not numeric ({exc})") from None
    return out


def smearing_work(log):
    """The work (eV) done on the electrons by the changes of the Fermi-Dirac smearing width
    up to each row of an ``md.log`` (:func:`read_md_log` output): ``W_n = sum_k dF/dsigma
    (sigma_(k+1) - sigma_k)`` over the steps before row n, with ``dF/dsigma = -S`` (Mermin:
    at self-consistency the free energy's derivative with respect to the width is minus the
    dimensionless entropy, the Hellmann-Feynman theorem for the parameter sigma) and
    ``sigma S = 2 (E - F)``, since the energy extrapolated to zero width is ``E = F + sigma S
    / 2`` for Fermi-Dirac occupations (GPAW's ``energy``, VASP's ``energy(sigma->0)``; the
    ``E_pot_eV`` column, ``F_free_eV`` the free energy). Trapezoidal in sigma between two
    steps. Rows without a width (NaN: no smearing, e.g. an ML stage) add nothing.

    The forces of a smeared DFT step derive from F at that step's width, so where the width
    follows a temperature ramp (``electronic_temperature: follow``) F + E_kin moves with the
    width as well as with the integrator's error: ``E_conserved - W`` takes the width's part
    out. Not valid for other smearing functions (their E - F is not sigma S / 2)."""
    width = np.asarray(log["width_eV"], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        entropy = 2.0 * (np.asarray(log["E_pot_eV"]) - np.asarray(log["F_free_eV"])) / width
    step = -0.5 * (entropy[1:] + entropy[:-1]) * np.diff(width)
    step[~np.isfinite(step)] = 0.0
    return np.concatenate([[0.0], np.cumsum(step)])


def conserved_drift(md_log, n_mobile, fermi_dirac=False):
    """Drift of the conserved quantity per stage of an ``md.log``: ``{stage: (meV per mobile
    atom per ps, ps)}``, the slope of a least-squares line through ``E_conserved_eV`` against
    ``time_fs`` (stages with fewer than 3 steps are left out). With ``fermi_dirac`` (the run's
    smearing is Fermi-Dirac) the work of the smearing width's changes is taken out first
    (:func:`smearing_work`): what is left is the dynamics' own drift, in the ramps too."""
    log = read_md_log(md_log)
    conserved = log["E_conserved_eV"] - (smearing_work(log) if fermi_dirac else 0.0)
    stages = np.array(log["stage"], dtype=object)
    out = {}
    for name in dict.fromkeys(log["stage"]):
        sel = stages == name
        if sel.sum() < 3:
            continue
        x, y = log["time_fs"][sel], conserved[sel]
        slope = np.polyfit(x, y, 1)[0]  # eV per fs
        out[name] = (slope * 1e3 * 1e3 / max(n_mobile, 1), (x[-1] - x[0]) / 1e3)
    return out


def width_changes(md_log):
    """True if the smearing width of an ``md.log`` changes from one step to another."""
    width = read_md_log(md_log)["width_eV"]
    width = width[np.isfinite(width)]
    return width.size > 1 and bool(np.ptp(width) > 0)


def drift_text(drift, note=""):
    """One line: ``E_conserved drift (meV/atom/ps, linear fit per stage): heat +1.2 (0.02 ps),
    ...``, and ``note`` (what was taken out) after the figures, in brackets."""
    parts = [f"{name} {rate:+.3g} ({ps:.3g} ps)" for name, (rate, ps) in drift.items()]
    return ("E_conserved drift (meV per mobile atom per ps, linear fit per stage): "
            + (", ".join(parts) if parts else "too few steps") + (f" [{note}]" if note else ""))


#: A stage whose mean kinetic temperature is further than this from its mean target (relative)
#: did not follow the programme.
TRACKING_TOLERANCE = 0.10


def temperature_tracking(md_log):
    """Mean kinetic and target temperature per stage of an ``md.log``: ``{stage: (mean T_kin,
    mean T_target, steps)}`` (K). A thermostat follows the programme when the two agree within
    :data:`TRACKING_TOLERANCE`; Nose-Hoover chains on many atoms lag a fast ramp."""
    log = read_md_log(md_log)
    stages = np.array(log["stage"][1:], dtype=object)  # step 0 is the start
    kin, target = log["T_kin_K"][1:], log["T_target_K"][1:]
    out = {}
    for name in dict.fromkeys(log["stage"][1:]):
        sel = stages == name
        out[name] = (float(np.mean(kin[sel])), float(np.mean(target[sel])), int(sel.sum()))
    return out


#: What tightens each thermostat's coupling, for the warning of a stage it did not follow.
TIGHTER_COUPLING = {
    "nhc": "a smaller dynamics.tdamp_fs, or thermostat bussi (a Nose-Hoover chain on many "
           "atoms lags a fast ramp)",
    "bussi": "a smaller dynamics.taut_fs",
    "berendsen": "a smaller dynamics.taut_fs",
    "langevin": "a larger dynamics.friction_per_fs, or thermostat bussi",
}


def tracking_text(tracking, min_steps=20, thermostat=None):
    """``(line, warnings)``: mean T_kin against mean target per stage, and one warning per stage
    of at least ``min_steps`` steps that missed its target by more than the tolerance, saying
    what tightens ``thermostat``'s coupling (a ``dynamics.thermostat`` name)."""
    advice = TIGHTER_COUPLING.get(str(thermostat).lower(),
                                  "a tighter thermostat coupling (see 'meltquench config --keys')")
    parts, warnings = [], []
    for name, (kin, target, n) in tracking.items():
        parts.append(f"{name} {kin:.0f}/{target:.0f}")
        if n >= min_steps and target > 0 and abs(kin / target - 1) > TRACKING_TOLERANCE:
            warnings.append(
                f"WARNING: the thermostat did not follow the programme in stage {name}: mean "
                f"T_kin {kin:.0f} K against a mean target of {target:.0f} K "
                f"({kin / target - 1:+.0%}); {advice}, or a longer stage")
    line = ("mean T_kin / T_target per stage (K): "
            + (", ".join(parts) if parts else "too few steps"))
    return line, warnings


class MDLogWriter:
    """Observer: appends the recorder's record to ``md.log`` (rank 0)."""

    def __init__(self, path, recorder, is_root):
        self.path, self.recorder, self.is_root = Path(path), recorder, is_root

    def write_header(self):
        if self.is_root:
            self.path.write_text(StepRecord.header())

    def __call__(self):
        if self.is_root:
            with open(self.path, "a") as fh:
                fh.write(self.recorder.record.line())


class TrajectoryWriter:
    """Observer: appends the atoms to ``trajectory.traj`` (rank 0) and counts the frames.

    Every rank keeps :attr:`n_frames`, which goes into checkpoints.
    """

    def __init__(self, path, atoms, is_root, n_frames=0):
        self.atoms = atoms
        self.n_frames = n_frames
        self._traj = Trajectory(path, "a", master=True) if is_root else None

    def __call__(self):
        if self._traj is not None:
            self._traj.write(self.atoms)
        self.n_frames += 1

    def close(self):
        if self._traj is not None:
            self._traj.close()
