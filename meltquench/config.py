"""One validated configuration object, read from YAML, with presets.

A configuration has one section per layer: ``structure``, ``regions``, ``schedule``,
``calculator``, ``dynamics``, ``output``, ``analysis``. Every key has a default (the field
defaults below: the paper's physics on a small cell and a short programme); a preset
overrides some of them (``meltquench run`` with no config file uses the ``demo`` preset), a YAML file
overrides the preset, and ``--set section.key=value`` on the command line overrides the file.
Unknown keys are errors with a suggestion of the close match.
"""
import copy
import dataclasses
import difflib
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .calculators import CalculatorSettings
from .calculators.base import Settings, setting
from .dynamics import validate_config as validate_dynamics
from .dynamics.registry import params_by_key
from .errors import UserError
from .model import DEFAULT_RELAX_RADIUS_A, RELAX_REGIONS
from .schedule import melt_quench
from .structures import BUILDERS


def _scheme_key(key):
    """A dynamics field whose default and documentation are the scheme registry's (one source
    for the YAML configuration and ``make_dynamics``)."""
    param = params_by_key()[key]
    return _doc(param.default, param.doc)


def _doc(default, doc, **kw):
    """A dataclass field with a documentation string (shown by ``meltquench config --keys``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc}, **kw)
    return field(default=default, metadata={"doc": doc}, **kw)


@dataclass
class StructureConfig:
    builder: str = _doc("v2o3-basal", "built-in crystal: 'v2o3' (hexagonal corundum cell, 30 "
                        "atoms), 'v2o3-basal' (10 atoms: hexagonal a, b and the rhombohedral "
                        "vector (2a+b+c)/3, so a split along c cuts (0 0 1) basal planes) or "
                        "'v2o3-rhombohedral' (primitive cell, 10 atoms; a split along c cuts "
                        "(0 1 -1) planes, 73 deg from basal); ignored when 'file' is given")
    file: Optional[str] = _doc(None, "structure file instead of a builder: anything ASE reads "
                               "(CIF, POSCAR, extxyz, traj); relative to the config file")
    repeat: list = _doc([1, 1, 2], "supercell repeat along a, b, c")
    defects: Union[list, str] = _doc([], "defect recipe: a list of {kind: vacancy|antisite, species, "
                                      "region, count|fraction, ...} (see meltquench.defects), or "
                                      "'paper' for the paper's defective model")
    defect_stage: str = _doc("before-melt", "when the defects are made: 'before-melt' or "
                             "'after-quench'")
    seed: int = _doc(0, "random seed for the defects")


@dataclass
class RegionsConfig:
    axis: Union[int, str] = _doc(2, "lattice vector the cell is split along: 0/1/2 or a/b/c "
                                  "(not x/y/z, which are Cartesian); the boundary planes are "
                                  "spanned by the other two (the plan names the plane)")
    melt_fraction: float = _doc(0.5, "fraction of the cell (by fractional coordinate) that "
                                "melts; 1: the whole cell, an amorphous bulk model (no crystal, "
                                "no interface)")
    origin: float = _doc(0.0, "fractional coordinate of the first boundary plane")
    fix_crystal: bool = _doc(True, "hold the crystal half fixed (ASE FixAtoms)")
    melt_expansion: float = _doc(
        0.0, "room for the melt: the cell grows along the split axis so that the melt layer is "
        "1 + this times as thick (its atoms spread over it, the crystal unchanged); 0: the "
        "crystal's cell, as the paper. A melt held at crystal density between fixed walls may "
        "superheat instead of melting")


@dataclass
class ScheduleConfig:
    T_start_K: float = _doc(300.0, "temperature at the start (K); the initial velocities are drawn at it")
    T_melt_K: float = _doc(4000.0, "melt temperature (K)")
    T_final_K: float = _doc(300.0, "final temperature (K)")
    heat_ps: float = _doc(0.02, "heating time T_start -> T_melt (ps)")
    melt_ps: float = _doc(0.03, "hold at T_melt (ps)")
    quench_ps: Optional[float] = _doc(0.03, "quench time T_melt -> T_final (ps); or give "
                                      "quench_rate_K_per_ps and set this to null")
    quench_rate_K_per_ps: Optional[float] = _doc(None, "quench rate (K/ps), instead of quench_ps")
    final_ps: float = _doc(0.02, "hold at T_final (ps)")


@dataclass
class DynamicsConfig:
    thermostat: str = _doc("bussi", "NVT scheme: nhc (Nose-Hoover chain), bussi (CSVR), langevin, "
                           "berendsen (heating only, not canonical) or nve")
    timestep_fs: float = _doc(2.0, "MD time step (fs), at most 5")
    seed: int = _doc(42, "random seed: initial velocities and stochastic thermostats (same on all ranks)")
    tdamp_fs: float = _scheme_key("tdamp_fs")
    tchain: int = _scheme_key("tchain")
    tloop: int = _scheme_key("tloop")
    taut_fs: float = _scheme_key("taut_fs")
    friction_per_fs: float = _scheme_key("friction_per_fs")
    final_relax: Optional[str] = _doc("FIRE", "geometry optimisation of the mobile atoms after the "
                                      "quench: FIRE, BFGS or null")
    relax_fmax: float = _doc(0.03, "force criterion of the final optimisation (eV/Å)")
    relax_steps: int = _doc(20, "maximum optimisation steps")
    relax_region: str = _doc("melt", "atoms the final optimisation moves: melt (those the MD "
                             "moved; the crystal half stays as built), melt+defects (also every "
                             "atom within relax_radius of a defect site, e.g. around the crystal's "
                             "V vacancies) or all (the whole model)")
    relax_radius: float = _doc(DEFAULT_RELAX_RADIUS_A, "with relax_region melt+defects: radius "
                               "(Å) around each defect site within which crystal atoms move too")
    max_temperature_factor: float = _doc(3.0, "runaway guard: stop when the kinetic T of the mobile "
                                         "atoms exceeds this factor times max(target, 1000 K)")


@dataclass
class OutputConfig:
    directory: Optional[str] = _doc(None, "run folder; null: runs/<name>-<date>-<time> (a new one "
                                    "each run)")
    name: str = _doc("demo", "run name, used for the default run folder")
    overwrite: bool = _doc(False, "replace an existing run folder")
    trajectory_interval: int = _doc(1, "write a trajectory frame every N steps")
    checkpoint_interval: int = _doc(5, "write a checkpoint every N steps")
    extxyz: bool = _doc(True, "also export the trajectory as extxyz at the end")
    progress: str = _doc("auto", "auto (bar on a terminal, log lines otherwise), bar, log or none")
    log_every: int = _doc(0, "with plain log lines: print one every N steps (0: about 20 in a run)")


@dataclass
class AnalysisConfig:
    enabled: bool = _doc(True, "analyse the run at the end")
    frames: str = _doc("final-hold", "which frames: final-hold (the last stage), final (the last "
                       "frame, after the optimisation) or all")
    rmax: float = _doc(6.0, "largest distance of g(r) (Å)")
    nbins: int = _doc(200, "number of g(r) bins")
    interface_width: float = _doc(3.0, "half-width of the interface band around the two boundary planes (Å)")
    cutoffs: dict = _doc({}, "coordination cutoffs per pair, e.g. {V-O: 2.3} (Å); missing pairs: "
                         "first minimum of g(r)")
    pairs: Optional[list] = _doc(None, "pairs to analyse, e.g. [V-O, O-V]; null: every pair")


@dataclass
class ReplicasConfig:
    count: int = _doc(1, "independent melt-quench runs in one job: the MPI ranks split into "
                      "groups, each with its own calculator and run folder <dir>/replica-<i>")
    vary: dict = _doc({}, "per-replica values, e.g. {schedule.quench_rate_K_per_ps: [100, 200]}; "
                      "each list has one value per replica. dynamics.seed and structure.seed get "
                      "+i for replica i unless given here")


@dataclass
class FinishConfig(Settings):
    """``finish``: what follows the temperature programme, with a calculator of its own.

    With ``calculator`` set the run switches calculator after the programme: e.g. a
    machine-learned potential heats, melts and quenches, then DFT (GPAW PBE+U+D3) anneals for
    ``anneal_ps`` at ``schedule.T_final_K`` and does the final optimisation
    (``dynamics.final_relax``; without an anneal the run's calculator optimises first, then
    the finish calculator for at most ``relax_steps``). The anneal is the programme's last
    stage, ``anneal``; md.log's conserved quantity jumps where the calculator changes (compare
    drifts within a stage).
    ``check_every``: spot checks of the run's calculator against the finish calculator on
    the same atoms (the run's summary, ``checks.json``, ``checks.png``).
    """

    section = "finish"
    unknown_key_hint = "keys: calculator, anneal_ps, relax_steps, check_every, scf_checkpoint_s"

    calculator: Optional[CalculatorSettings] = setting(
        None, "calculator of the finish (the anneal and the final optimisation), with the keys "
        "of the calculator section, e.g. {name: gpaw}; null: the run's calculator throughout")
    anneal_ps: float = setting(0.0, "MD at schedule.T_final_K after the programme, with the "
                               "finish calculator (ps); 0: none")
    relax_steps: Optional[int] = setting(
        None, "at most this many steps of the final optimisation with the finish calculator, "
        "after the run's calculator has optimised (dynamics.final_relax, relax_fmax); 0: "
        "forces only (a DFT single point of the final structure); null: "
        "dynamics.relax_steps")
    check_every: int = setting(
        0, "with a finish calculator: force spot checks of the run's calculator against it on "
        "every Nth trajectory frame of the programme and always on the final structure; 0: "
        "the final structure only")
    scf_checkpoint_s: Optional[float] = setting(
        600.0, "GPAW LCAO at the Gamma point: every this many seconds of the finish "
        "calculator's SCF in the final optimisation, its density matrix goes to scf.npz, and a "
        "stop signal or the --stop-after budget stops the SCF there; the continued finish "
        "resumes that SCF (0: every iteration; null: neither, a stop waits for the SCF's end)")

    def __post_init__(self):
        if isinstance(self.calculator, dict):
            try:
                self.calculator = CalculatorSettings.from_dict(self.calculator)
            except UserError as err:
                # the calculator's keys are named from the root of the configuration
                raise UserError(re.sub(r"(?<![\w.])calculator(?=\.)", "finish.calculator",
                                       str(err))) from None
        super().__post_init__()
        if not (math.isfinite(self.anneal_ps) and self.anneal_ps >= 0):
            raise UserError(f"finish.anneal_ps must be >= 0 ps, got {self.anneal_ps}")
        if self.relax_steps is not None and self.relax_steps < 0:
            raise UserError(f"finish.relax_steps must be >= 0, got {self.relax_steps}")
        if self.check_every < 0:
            raise UserError(f"finish.check_every must be >= 0, got {self.check_every}")
        if self.scf_checkpoint_s is not None and not (math.isfinite(self.scf_checkpoint_s)
                                                      and self.scf_checkpoint_s >= 0):
            raise UserError("finish.scf_checkpoint_s must be >= 0 s or null, got "
                            f"{self.scf_checkpoint_s}")


SECTIONS = {"structure": StructureConfig, "regions": RegionsConfig, "schedule": ScheduleConfig,
            "calculator": CalculatorSettings, "dynamics": DynamicsConfig, "finish": FinishConfig,
            "output": OutputConfig, "analysis": AnalysisConfig, "replicas": ReplicasConfig}


@dataclass
class Config:
    structure: StructureConfig = field(default_factory=StructureConfig)
    regions: RegionsConfig = field(default_factory=RegionsConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    calculator: CalculatorSettings = field(default_factory=CalculatorSettings)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    finish: FinishConfig = field(default_factory=FinishConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    replicas: ReplicasConfig = field(default_factory=ReplicasConfig)
    source: Optional[str] = field(default=None, repr=False, compare=False)

    def to_dict(self):
        """Plain nested dict (YAML-ready) of every section."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_yaml(self):
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def build_schedule(self):
        s = self.schedule
        return melt_quench(T_start_K=s.T_start_K, T_melt_K=s.T_melt_K, T_final_K=s.T_final_K,
                           heat_fs=s.heat_ps * 1000.0, melt_fs=s.melt_ps * 1000.0,
                           quench_fs=None if s.quench_ps is None else s.quench_ps * 1000.0,
                           quench_rate_K_per_ps=s.quench_rate_K_per_ps,
                           final_fs=s.final_ps * 1000.0,
                           anneal_fs=self.finish.anneal_ps * 1000.0)

    def finish_relax_steps(self):
        """At most this many steps of the final optimisation with the finish calculator:
        ``finish.relax_steps``, or where it is null ``dynamics.relax_steps``."""
        steps = self.finish.relax_steps
        return self.dynamics.relax_steps if steps is None else steps


# --------------------------------------------------------------------------- presets
def deep_merge(base, over):
    """``base`` updated recursively by ``over`` (new dict; lists and scalars replaced)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _paper(**extra):
    """The paper's method (Osman et al. 2022) as config overrides, plus ``extra``."""
    base = {
        # 240 atoms (2x2x2 hexagonal cells, V96 O144): each half is a 14 Å slab along c, thick
        # enough for a bulk-like middle in both phases; the paper's Figure 4 models look about
        # this size (at least 120 atoms).
        "structure": {"builder": "v2o3", "repeat": [2, 2, 2]},
        "schedule": {"T_start_K": 300.0, "T_melt_K": 4000.0, "T_final_K": 300.0, "heat_ps": 1.0,
                     "melt_ps": 6.0, "quench_ps": 9.0, "final_ps": 2.0},
        # LCAO dzp, not PW 450 eV, by default: about ten times cheaper per MD step for 240 atoms
        # with forces close to PW's; set calculator.gpaw.mode: pw for the plane-wave check.
        # dispersion: auto gives the paper's D3(BJ) for GPAW and VASP, none for tblite.
        "calculator": {"name": "gpaw", "gpaw": {"mode": "lcao", "basis": "dzp", "ecut": 450.0}},
        # The paper fixes half of the supercell for the AIMD only; its geometry optimisations
        # (0.03 eV/Å) name no constraint, and its crystalline phase is "lattice-distorted"
        # around the V vacancies: the final optimisation moves the whole model.
        # Bussi's CSVR, not a Nose-Hoover chain: the paper names no thermostat ("NVT"), and on
        # this model a chain (tdamp 100 fs) lags the 3,700 K/ps heat badly (measured with the
        # pair potential: 938 K at a target of 2,520 K, 3,270 K at the end of the heat), a
        # single Nose thermostat (VASP's) swings between 2,000 and 7,700 K at a 4,000 K hold,
        # while CSVR follows within its canonical fluctuations (tests/test_driver.py).
        "dynamics": {"thermostat": "bussi", "timestep_fs": 2.0, "tdamp_fs": 100.0,
                     "final_relax": "BFGS", "relax_fmax": 0.03, "relax_steps": 1000,
                     "relax_region": "all"},
        "output": {"checkpoint_interval": 10},
    }
    return deep_merge(base, extra)


def _vasp(preset):
    return deep_merge(preset, {"calculator": {"name": "vasp"}})


_DEFECTIVE = {
    # The paper's defective heterophase: V vacancies in the crystalline half (C-V(2-x)O3), O
    # vacancies and V/O antisites in the amorphous half (A-V2O(3-x)); see
    # meltquench.defects.PAPER_DEFECTIVE_RECIPE. Made after the quench (then the final
    # optimisation relaxes around them): antisites made before a 4000 K melt would be
    # scrambled by it and mean nothing.
    "structure": {"defects": "paper", "defect_stage": "after-quench", "seed": 1},
    # the defects exist only after the quench: analyse the final, optimised structure
    "analysis": {"frames": "final"},
}

#: The ML presets' GPAW finish is spin-polarised (ferromagnetic start, 2 μB per V): the
#: models were trained on MPtrj, whose PBE+U calculations are spin-polarised, so the spot
#: checks compare them with their own level of theory; and on this machine the spin-polarised
#: SCF converges where the unpolarised one stalls (the ml-demo's quenched 120-atom A/C frame,
#: sz(dzp), 0.05 eV: 49 iterations to 96 μB and a 0.377 eV gap, against not converged after 63
#: unpolarised; benchmarks/README.md).
ML_FINISH_SPIN = {"spinpol": True}

#: The ML presets' finish mixes with GPAW's MSR1, not the engine's MD Pulay: a single point has
#: no earlier MD steps for MD Pulay to remember, and on the ml-demo's quenched frames of
#: session 15 (spin-polarised, ferromagnetic start) MD Pulay wandered eV above the ground state
#: and stagnated twice (10^-2.3, also with the fallback's half step) where MSR1 converged
#: (120 atoms: 43 iterations, 96.0 μB, about 20 eV lower; benchmarks/README.md).
ML_FINISH_MIXER = {"backend": "msr1"}

#: The ML presets' finish gives its SCF 40 iterations without a halving of the density error
#: before it calls it stagnant (the MD default, 25, protects the next step of a run; a single
#: point has none). Cold (0.05 eV) on session 20's ml-demo frame MSR1 creeps from 10^-3.2 at
#: iteration 30 to 10^-4.05 at 74, where it converges; with 25 it was given up at 73
#: (1.16e-4 against 1e-4) and retried from scratch (benchmarks/README.md).
ML_FINISH_STAGNATION = 40


def _ml(preset, **finish):
    """``preset`` with CHGNet (+ D3) dynamics and a GPAW finish of the same physics, spin-
    polarised (:data:`ML_FINISH_SPIN`), mixed with :data:`ML_FINISH_MIXER`, given
    :data:`ML_FINISH_STAGNATION` iterations before its SCF is called stagnant."""
    gpaw = deep_merge(preset["calculator"]["gpaw"], {"mixer": ML_FINISH_MIXER,
                                                     "scf_stagnation": ML_FINISH_STAGNATION})
    return deep_merge(preset, {
        "calculator": {"name": "chgnet"},
        "finish": {"calculator": {"name": "gpaw", "gpaw": gpaw, **ML_FINISH_SPIN},
                   **finish}})


_ML_DEMO = {
    "_description": "amorphises for real on a workstation: 120-atom V2O3 (7 Å mobile "
                    "layer between fixed crystal, given 10% room along c), CHGNet + D3-BJ, "
                    "melt at 6000 K for 0.3 ps, quench to 300 K in 0.25 ps, CHGNet "
                    "optimisation (7-10 min on 2 cores), then a cold spin-polarised GPAW "
                    "PBE+U+D3 single point and force spot check (15-30 min more, by "
                    "machine and frame; --set finish.calculator=null leaves it out)",
    # 120 atoms (2x2x1 hexagonal cells) split along c into two 7 Å halves: the size at
    # which CHGNet was measured through this engine. At 4000 K and the crystal's density
    # between fixed walls its mobile layer did not melt in 0.6 ps (MSD 0.3-0.5 Å², a
    # superheated crystal); at 6000 K it did (2.7 Å² in 0.5 ps, V-O CN ~5.1). So 6000 K:
    # hotter than the paper's 4000 K, which a 18 ps run with more room can afford.
    # Quenched at the crystal's density the 7 Å layer came out at q6bar 0.30-0.35 in four
    # of five runs (partly ordered: the crystal walls template it); with 10% room along c
    # (regions.melt_expansion) two seeds gave 0.274 and 0.252 (amorphous; README).
    # No heat ramp: Bussi (taut 5 fs) takes the layer to 6000 K within the melt's first
    # 40 fs, where a 50 fs ramp lagged its target by 46%.
    "structure": {"builder": "v2o3", "repeat": [2, 2, 1]},
    "regions": {"melt_expansion": 0.1},
    "schedule": {"T_start_K": 300.0, "T_melt_K": 6000.0, "T_final_K": 300.0,
                 "heat_ps": 0.0, "melt_ps": 0.3, "quench_ps": 0.25, "final_ps": 0.2},
    "calculator": {"name": "chgnet"},
    "dynamics": {"thermostat": "bussi", "timestep_fs": 2.0, "taut_fs": 5.0,
                 "final_relax": "FIRE", "relax_fmax": 0.03, "relax_steps": 200},
    # GPAW as the demo has it (sz(dzp), h 0.25 Å), with the paper's U: one single point
    "finish": {"calculator": {"name": "gpaw", "gpaw": {"basis": "sz(dzp)", "h": 0.25,
                                                       "mixer": ML_FINISH_MIXER,
                                                       "scf_stagnation":
                                                           ML_FINISH_STAGNATION},
                              **ML_FINISH_SPIN},
               "relax_steps": 0},
    "output": {"name": "ml-demo", "trajectory_interval": 5, "checkpoint_interval": 25},
}


PRESETS = {
    "demo": {
        "_description": "what 'meltquench run' runs without a config: a pipeline demonstration "
                        "on 2 cores: 20-atom V2O3 split at two (0001) basal planes, GPAW LCAO "
                        "sz(dzp), h 0.25 Å, PBE + D3 (no U: see below), 40 fs programme, far "
                        "too short to amorphise",
        # The model is the defaults': builder v2o3-basal, repeat [1, 1, 2], split along c:
        # two halves of 10 atoms (V4O6), 4.668 Å thick, between basal planes, as the paper
        # presets' 240-atom hexagonal cell has them, at a third of the hexagonal cell's cost.
        # PBE+U V2O3 on a 20-atom cell needs 100+ SCF iterations for the first step and can
        # wander between nearly degenerate d-occupation solutions (benchmarks/README.md):
        # far beyond a demo's minutes. The paper presets keep U = 3.25 eV.
        "calculator": {"gpaw": {"basis": "sz(dzp)", "h": 0.25, "hubbard_u": {}}},
        "schedule": {"heat_ps": 0.008, "melt_ps": 0.012, "quench_ps": 0.012, "final_ps": 0.008},
        "dynamics": {"relax_steps": 5},
    },
    "paper-perfect": {
        "_description": "the paper's method on the perfect A/C model: 240-atom V2O3 (2x2x2 "
                        "hexagonal cells), GPAW LCAO dzp, PBE+U 3.25 eV, D3-BJ, Gamma, NHC, 2 fs, "
                        "4000 K melt, 300 K, 18 ps, BFGS to 0.03 eV/Å",
        **_paper(output={"name": "paper-perfect"}),
    },
    "paper-defective": {
        "_description": "as paper-perfect, then the paper's defects after the quench: V vacancies "
                        "in the crystal half, O vacancies and V/O antisites in the amorphous half",
        **_paper(output={"name": "paper-defective"}, **_DEFECTIVE),
    },
    "paper-perfect-vasp": {
        "_description": "paper-perfect with VASP's own MD (Nose, the paper's way): "
                        "'meltquench build --write-input DIR' writes the programme as chained "
                        "VASP runs (ENCUT 450, PBE+U, V_sv, LASPH, IVDW 12) and "
                        "DIR/run-programme.sh",
        **_vasp(_paper(output={"name": "paper-perfect-vasp"})),
    },
    "paper-defective-vasp": {
        "_description": "paper-defective with VASP through the engine's own dynamics "
                        "('meltquench run'); --write-input refuses it (defects after the quench)",
        **_vasp(_paper(output={"name": "paper-defective-vasp"}, **_DEFECTIVE)),
    },
    "ml-demo": _ML_DEMO,
    "ml-demo-amorphous": deep_merge(_ML_DEMO, {
        "_description": "ml-demo's programme on the whole 120-atom cell (regions.melt_fraction "
                        "1: no crystal, no interface) at the crystal's density: the amorphous "
                        "V2O3 model of the paper's Fig. 4d/4e at workstation size",
        # No walls to superheat against or template the quench: the whole cell melts at
        # 6000 K and comes out amorphous at the crystal's volume, as an NVT melt-quench of
        # the paper's kind would leave it (README: its structure and DOS).
        "regions": {"melt_fraction": 1.0, "melt_expansion": 0.0},
        "output": {"name": "ml-demo-amorphous"}}),
    "ml-demo-defective": deep_merge(_ML_DEMO, {
        "_description": "ml-demo with the paper's defects made after the quench (2 V vacancies "
                        "in the crystal half, 3 O vacancies and 2 V/O antisite pairs in the "
                        "amorphous half: 115 atoms), the crystal around them relaxed too: the "
                        "defective A/C model of the paper's Fig. 4b at workstation size",
        **_DEFECTIVE,
        # the crystal half is held in the MD; its V vacancies come after the quench, so the
        # final optimisation also moves every atom within dynamics.relax_radius of a defect
        # (the paper's crystal is "lattice-distorted" around them)
        "dynamics": {"relax_region": "melt+defects"},
        "output": {"name": "ml-demo-defective"}}),
    "paper-perfect-ml": {
        "_description": "paper-perfect with CHGNet (MPtrj PBE+U) + D3-BJ dynamics and final "
                        "optimisation (a few hours on 2 cores), then GPAW (LCAO dzp, PBE+U, D3) "
                        "on the final structure: a single point and force spot check here "
                        "(finish.relax_steps 0), a DFT optimisation on a cluster (raise it)",
        **_ml(_paper(output={"name": "paper-perfect-ml"}), relax_steps=0),
    },
    "paper-defective-ml": {
        "_description": "paper-defective with CHGNet + D3-BJ dynamics and optimisation, then "
                        "the GPAW finish of paper-perfect-ml",
        **_ml(_paper(output={"name": "paper-defective-ml"}, **_DEFECTIVE), relax_steps=0),
    },
}


def preset_dict(name):
    """The overrides of preset ``name`` (without its description)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}{_suggest(name, PRESETS)}; "
                        f"'meltquench presets' lists them")
    return {k: v for k, v in copy.deepcopy(PRESETS[name]).items() if not k.startswith("_")}


# --------------------------------------------------------------------------- loading
def _suggest(word, choices):
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# A float as Python writes it (digits may be grouped by "_"), or .inf/.nan, with a sign: every
# YAML 1.2 core-schema float. PyYAML follows YAML 1.1, whose floats need a dot and a signed
# exponent ("4.0e+3"), so "4e3", "1e-9", "1E+3" and "-.5" would otherwise be strings. Digits
# alone ("42") are left to the int resolver.
_DIGITS = r"[0-9](?:_?[0-9])*"
_EXPONENT = rf"[eE][-+]?{_DIGITS}"
_FLOAT = re.compile(rf"^[-+]?(?:(?:{_DIGITS})?\.{_DIGITS}(?:{_EXPONENT})?"  # .5  1.5  1.5e3
                    rf"|{_DIGITS}\.(?:{_EXPONENT})?"  # 1.  1.e3
                    rf"|{_DIGITS}{_EXPONENT}"  # 4e3  1E+3
                    rf"|\.(?:inf|Inf|INF|nan|NaN|NAN))$")


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python objects: ``!!python/...`` tags are refused) that also
    reads every float YAML 1.2 and Python write, e.g. ``4e3``, ``1e-9``, ``1E+3``, ``-.5``.

    Whole numbers stay ints (``42``) and other words stay strings (``sz(dzp)``, ``1,2``): the
    YAML 1.1 int resolver is tried first, and this float resolver only after the built-in ones.
    Values keep the units of their keys (``T_melt_K: 4e3`` is 4000 K).
    """


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text):
    """Parse YAML ``text`` with :class:`ConfigLoader` (safe; floats as in YAML 1.2)."""
    return yaml.load(text, Loader=ConfigLoader)


def read_yaml(path):
    """Read a YAML configuration file safely into a dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"config file {path} is not valid YAML{where}: "
                        f"{getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of sections "
                        f"({', '.join(SECTIONS)}), not a {type(data).__name__}")
    return data


def parse_set(items):
    """``['schedule.melt_ps=0.5', ...]`` -> nested override dict (values parsed as YAML)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise UserError(f"--set takes section.key=value, got {item!r}")
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        try:
            node[parts[-1]] = load_yaml(value)
        except yaml.YAMLError:
            raise UserError(f"--set {item!r}: the value is not valid YAML") from None
    return out


_TYPES = {float: (int, float), int: (int,), str: (str,), bool: (bool,), list: (list, tuple),
          dict: (dict,)}


def _check_value(section, key, value, annotation):
    """Validate one value against its field type; return it (ints become floats for floats)."""
    where = f"{section}.{key}"
    optional = False
    kinds = [annotation]
    origin = getattr(annotation, "__origin__", None)
    if origin is Union:
        kinds = [a for a in annotation.__args__ if a is not type(None)]
        optional = len(kinds) < len(annotation.__args__)
    if value is None:
        if optional:
            return None
        raise UserError(f"{where} must not be null")
    for kind in kinds:
        if kind is Any:
            return value
        ok = _TYPES[kind]
        if isinstance(value, bool) and kind is not bool:
            continue
        if isinstance(value, ok):
            return float(value) if kind is float else (list(value) if kind is list else value)
    names = " or ".join(k.__name__ for k in kinds)
    raise UserError(f"{where} must be {names}, got {value!r}")


def _section_from_dict(name, data):
    cls = SECTIONS[name]
    if not isinstance(data, dict):
        raise UserError(f"section '{name}' must be a mapping of keys, got {data!r}")
    if hasattr(cls, "from_dict"):  # a section that reads its own nested keys (calculator)
        return cls.from_dict(data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise UserError(f"unknown key '{name}.{key}'{_suggest(key, fields)}; "
                            f"'meltquench config --keys' lists every key")
        value = _check_value(name, key, value, hints[key])
        default = fields[key].default_factory() if fields[key].default_factory is not \
            dataclasses.MISSING else None
        if isinstance(default, dict) and isinstance(value, dict):
            value = deep_merge(default, value)  # a dict key's defaults stay unless replaced
        kwargs[key] = value
    return cls(**kwargs)


def _check_finite(value, where):
    """Refuse inf and nan anywhere in ``value`` (YAML reads .inf, .nan and 1e999 as floats; no
    key means anything by them): one line naming the key, e.g. ``schedule.melt_ps``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {value}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")


def config_from_dict(data, source=None):
    """Validate a nested dict into a :class:`Config` (defaults fill what is missing)."""
    for key in data:
        if key not in SECTIONS:
            raise UserError(f"unknown config section '{key}'{_suggest(key, SECTIONS)}; sections: "
                            f"{', '.join(SECTIONS)}")
    _check_finite(data, "")
    cfg = Config(**{name: _section_from_dict(name, data.get(name) or {}) for name in SECTIONS},
                 source=source)
    validate(cfg)
    return cfg


def load_config(path=None, preset=None, overrides=(), finish_of=None):
    """Defaults <- preset <- YAML file <- ``--set`` overrides, validated into a :class:`Config`.

    ``finish_of`` names a preset whose ``finish`` section replaces the one so far (before the
    overrides): how ``meltquench finish``, ``dos`` and ``adsorb`` give a run made without a
    finish calculator one (``--finish-of``)."""
    data = preset_dict(preset) if preset else {}
    base_dir = None
    if path is not None:
        file_data = read_yaml(path)
        base_dir = Path(path).resolve().parent
        data = deep_merge(data, file_data)
    if finish_of:
        finish = preset_dict(finish_of).get("finish") or {}
        if finish.get("calculator") is None:
            raise UserError(f"--finish-of: preset {finish_of!r} has no finish calculator")
        data["finish"] = finish
    data = deep_merge(data, parse_set(overrides))
    structure = data.get("structure") or {}
    if isinstance(structure, dict) and structure.get("file") and base_dir is not None:
        file = Path(structure["file"])
        if not file.is_absolute():
            structure["file"] = str(base_dir / file)
    return config_from_dict(data, source=str(path) if path else None)


# --------------------------------------------------------------------------- validation
_AXES = {"a": 0, "b": 1, "c": 2}


def _one_of(where, value, choices):
    if value not in choices:
        raise UserError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}"
                        f"{_suggest(value, choices)}")


def validate(cfg):
    """Check values and cross-section consistency; normalise a few (axis letters)."""
    st = cfg.structure
    if st.file is None:
        _one_of("structure.builder", st.builder, tuple(BUILDERS))
    if len(st.repeat) != 3 or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1
                                      for r in st.repeat):
        raise UserError(f"structure.repeat must be three whole numbers >= 1, got {st.repeat}")
    _one_of("structure.defect_stage", st.defect_stage, ("before-melt", "after-quench"))
    if isinstance(st.defects, str):
        _one_of("structure.defects", st.defects, ("paper",))
    if st.seed < 0:  # checked here: defects made after the quench would find it only then
        raise UserError(f"structure.seed must be a whole number >= 0, got {st.seed}")
    rg = cfg.regions
    if isinstance(rg.axis, str):
        if rg.axis.lower() in ("x", "y", "z"):  # Cartesian: equals a/b/c only in a rectangular cell
            raise UserError(f"regions.axis {rg.axis!r} is a Cartesian direction, but the cell is "
                            "split along a lattice vector: give 0, 1, 2 or a, b, c")
        if rg.axis.lower() not in _AXES:
            raise UserError(f"regions.axis must be 0, 1, 2 or a, b, c, got {rg.axis!r}")
        rg.axis = _AXES[rg.axis.lower()]
    if rg.axis not in (0, 1, 2):
        raise UserError(f"regions.axis must be 0, 1, 2 or a, b, c, got {rg.axis!r}")
    if not 0.0 <= rg.melt_expansion <= 1.0:
        raise UserError(f"regions.melt_expansion must lie between 0 and 1, got "
                        f"{rg.melt_expansion}")
    if not 0.0 < rg.melt_fraction <= 1.0:
        raise UserError("regions.melt_fraction must lie above 0 and at most 1 (the whole cell), "
                        f"got {rg.melt_fraction}")
    cfg.build_schedule()  # raises UserError for bad temperatures and durations
    dy = cfg.dynamics
    validate_dynamics(dy)
    for key in ("relax_fmax", "max_temperature_factor"):
        if not getattr(dy, key) > 0:
            raise UserError(f"dynamics.{key} must be > 0, got {getattr(dy, key)}")
    if dy.final_relax is not None:
        _one_of("dynamics.final_relax", dy.final_relax, ("FIRE", "BFGS"))
    _one_of("dynamics.relax_region", dy.relax_region, RELAX_REGIONS)
    if not dy.relax_radius > 0:
        raise UserError(f"dynamics.relax_radius must be > 0 (Å), got {dy.relax_radius}")
    out = cfg.output
    for key in ("trajectory_interval", "checkpoint_interval"):
        if getattr(out, key) < 1:
            raise UserError(f"output.{key} must be >= 1, got {getattr(out, key)}")
    _one_of("output.progress", out.progress, ("auto", "bar", "log", "none"))
    an = cfg.analysis
    _one_of("analysis.frames", an.frames, ("final-hold", "final", "all"))
    if not (an.rmax > 0 and an.nbins >= 1 and an.interface_width >= 0):
        raise UserError("analysis: rmax must be > 0, nbins >= 1 and interface_width >= 0")
    rp = cfg.replicas
    if rp.count < 1:
        raise UserError(f"replicas.count must be >= 1, got {rp.count}")
    for key, values in rp.vary.items():
        if not isinstance(values, list) or len(values) != rp.count:
            raise UserError(f"replicas.vary.{key} must be a list of replicas.count = {rp.count} values")
        section, _, name = str(key).partition(".")
        if section not in SECTIONS or section == "replicas" or not name:
            raise UserError(f"replicas.vary: {key!r} is not a section.key of the configuration")


def replica_config(cfg, index):
    """The configuration of replica ``index``: ``replicas.vary`` values applied, seeds shifted."""
    data = cfg.to_dict()
    data["replicas"] = {"count": 1, "vary": {}}
    vary = cfg.replicas.vary
    if "dynamics.seed" not in vary:
        data["dynamics"]["seed"] = cfg.dynamics.seed + index
    if "structure.seed" not in vary:
        data["structure"]["seed"] = cfg.structure.seed + index
    if "calculator.name" in vary and "calculator.dispersion" not in vary:
        data["calculator"]["dispersion"] = "auto"  # resolved anew for each replica's engine
    for key, values in vary.items():
        section, _, name = key.partition(".")
        node = data[section]
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = values[index]
    return config_from_dict(data, source=cfg.source)


def describe_keys():
    """Every key with its default and documentation, one per line, by section."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"{name}:")
        lines += _key_lines(cls, "  ")
    return "\n".join(lines)


def _key_lines(cls, indent):
    """Lines of :func:`describe_keys` for the fields of ``cls``; nested sections indented."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        doc = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(default):  # e.g. calculator.gpaw: its keys one by one
            lines.append(f"{indent}{f.name}:\n{indent}    {doc}")
            lines += _key_lines(type(default), indent + "  ")
        else:
            lines.append(f"{indent}{f.name}: {default!r}\n{indent}    {doc}")
    return lines
