"""meltquench.dynamics: drop-in ASE integrators on numba kernels.

References: ASE 3.29's own integrators on the same system (NoseHooverChainNVT,
VelocityVerlet, Bussi, LangevinBAOAB, NVTBerendsen), the canonical distribution of the
kinetic energy (mean N_f kT / 2, variance N_f (kT)^2 / 2), and uninterrupted runs for restarts
and MPI. Forces come from tests/test_dyn_models.py (EMT copper equal to ASE's EMT, and a
Lennard-Jones fluid).
"""
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.constraints import FixAtoms, FixBondLength, FixCom

from meltquench.checkpoint import CHECKPOINT_VERSION, decode_checkpoint, encode_checkpoint
from meltquench.config import DynamicsConfig
from meltquench.dynamics import (DYNAMICS, Berendsen, Bussi, DynamicsError, Langevin,
                                 NoseHooverChainNVT, Param, VelocityVerlet, from_config,
                                 make_dynamics, register, validate_config)
from meltquench.dynamics.params import positive
from meltquench.dynamics.registry import params_by_key
from meltquench.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from test_dyn_models import NumbaEMT, cu_emt, lj_fluid  # noqa: E402

FS = units.fs


def thermalize(atoms, temperature_K, seed):
    """Maxwell-Boltzmann momenta (numpy only; FixAtoms zeroes the fixed atoms' share)."""
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(atoms.get_masses() * units.kB * temperature_K)[:, None]
    atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * sigma)


def fix_lower_half(atoms):
    z = atoms.positions[:, 2]
    atoms.set_constraint(FixAtoms(mask=z < np.median(z)))
    return atoms.constraints[0].get_indices()


def copper(n_side=4, fixed=False, temperature_K=600, seed=5):
    atoms = cu_emt(n_side)
    if fixed:
        fix_lower_half(atoms)
    thermalize(atoms, temperature_K, seed)
    return atoms


# ------------------------------------------------------------------ ASE equivalence

@pytest.mark.parametrize("tchain,tloop,steps", [(3, 1, 1000), (5, 2, 200)])
def test_nhc_positions_equal_ase_after_1000_steps(tchain, tloop, steps):
    from ase.md.nose_hoover_chain import NoseHooverChainNVT as AseNHC
    ours, ref = copper(), copper()
    dt, tdamp = 2 * FS, 50 * FS
    dyn = NoseHooverChainNVT(ours, dt, 300.0, tdamp, tchain, tloop)
    ase_dyn = AseNHC(ref, dt, temperature_K=300.0, tdamp=tdamp, tchain=tchain, tloop=tloop)
    dyn.run(steps)
    ase_dyn.run(steps)
    assert np.abs(ours.positions - ref.positions).max() < 1e-8
    assert np.abs(ours.get_momenta() - ref.get_momenta()).max() < 1e-7
    assert dyn.get_conserved_energy() == pytest.approx(ase_dyn.get_conserved_energy(), abs=1e-8)


def test_nve_energy_drift_no_worse_than_ase_velocity_verlet():
    """EMT copper, 500 atoms, 1 fs, 2,000 steps (the issue's setting)."""
    from ase.md.verlet import VelocityVerlet as AseVV
    ours, ref = copper(5, temperature_K=600), copper(5, temperature_K=600)
    series = {}
    for name, atoms, dyn in (("ours", ours, VelocityVerlet(ours, 1 * FS)),
                             ("ase", ref, AseVV(ref, 1 * FS))):
        energies = []
        dyn.attach(lambda a=atoms, e=energies: e.append(a.get_total_energy()), interval=10)
        dyn.run(2000)
        series[name] = np.array(energies)
    t = np.arange(len(series["ours"])) * 10 * 1e-3  # ps
    drift = {k: abs(np.polyfit(t, e, 1)[0]) for k, e in series.items()}  # eV/ps
    spread = {k: np.ptp(e) for k, e in series.items()}
    assert drift["ours"] <= 1.05 * drift["ase"] + 1e-6, drift
    assert spread["ours"] <= 1.05 * spread["ase"] + 1e-6, spread
    assert np.abs(ours.positions - ref.positions).max() < 1e-8


# ASE's LangevinBAOAB does not handle FixAtoms, so Langevin is compared without fixed atoms.
@pytest.mark.parametrize("scheme,fixed", [("nve", False), ("nve", True), ("bussi", False),
                                          ("bussi", True), ("langevin", False),
                                          ("berendsen", False), ("berendsen", True)])
def test_schemes_equal_their_ase_counterparts(scheme, fixed):
    from ase.md.bussi import Bussi as AseBussi
    from ase.md.langevinbaoab import LangevinBAOAB
    from ase.md.nvtberendsen import NVTBerendsen
    from ase.md.verlet import VelocityVerlet as AseVV
    ours, ref = copper(fixed=fixed), copper(fixed=fixed)
    dt, tau = 2 * FS, 50 * FS
    if scheme == "nve":
        dyn, ase_dyn = VelocityVerlet(ours, dt), AseVV(ref, dt)
    elif scheme == "bussi":
        dyn = Bussi(ours, dt, 300.0, tau, seed=3)
        ase_dyn = AseBussi(ref, dt, 300.0, tau, rng=np.random.default_rng(3))
    elif scheme == "langevin":
        dyn = Langevin(ours, dt, 300.0, 1 / tau, seed=3, noise="numpy")  # ASE's numbers
        ase_dyn = LangevinBAOAB(ref, dt, temperature_K=300.0, T_tau=tau,
                                rng=np.random.default_rng(3))
    else:
        dyn = Berendsen(ours, dt, 300.0, tau)
        ase_dyn = NVTBerendsen(ref, dt, temperature_K=300.0, taut=tau, fixcm=False)
    ramp = scheme in ("langevin", "berendsen")  # ASE's classes that can change T
    for step in range(200):
        if ramp:
            dyn.set_temperature(300.0 + 5 * step)
            ase_dyn.set_temperature(temperature_K=300.0 + 5 * step)
        dyn.run(1)
        ase_dyn.run(1)
    assert np.abs(ours.positions - ref.positions).max() < 1e-8
    assert np.abs(ours.get_momenta() - ref.get_momenta()).max() < 1e-7
    if scheme == "bussi":
        assert dyn.get_thermostat_work() == pytest.approx(ase_dyn.transferred_energy, abs=1e-8)


# ------------------------------------------------------------------ canonical sampling

SAMPLING = [("nhc", False, True), ("nhc", True, False), ("bussi", False, True),
            ("bussi", True, False), ("langevin", False, False), ("langevin", False, True),
            ("langevin", True, False)]


@pytest.mark.parametrize("scheme,fixed,fixcm", SAMPLING)
def test_canonical_kinetic_energy_distribution(scheme, fixed, fixcm):
    """LJ argon fluid (108 atoms, 180 K, 5 fs steps), 40,000 steps: mean T within 1% of the
    target and Var(E_kin) within 10% of (N_f / 2)(kT)^2, N_f = 3 N_mobile (- 3 with fixcm).
    Measured integrated autocorrelation times give 2,000-4,500 independent samples, so the
    statistical errors are about 0.3% (mean) and 3% (variance)."""
    atoms = lj_fluid(3)
    if fixed:
        fix_lower_half(atoms)
    T = 180.0
    thermalize(atoms, T, seed=0)
    params = {"nhc": {"tdamp_fs": 50}, "bussi": {"taut_fs": 50},
              "langevin": {"friction_per_fs": 0.02}}[scheme]
    dyn = make_dynamics(scheme, atoms, 5.0, T, seed=1, fixcm=fixcm, **params)
    nmobile = len(atoms) - (len(atoms) // 2 if fixed else 0)
    assert dyn.ndof == 3 * nmobile - (3 if fixcm else 0)
    dyn.run(2000)
    kin = []
    dyn.attach(lambda: kin.append(dyn.get_kinetic_energy()))
    dyn.run(40000)
    kin = np.array(kin)
    kT = units.kB * T
    assert kin.mean() / (0.5 * dyn.ndof * kT) == pytest.approx(1.0, abs=0.01)
    assert kin.var() / (0.5 * dyn.ndof * kT ** 2) == pytest.approx(1.0, abs=0.10)
    if fixcm:
        assert np.abs(atoms.get_momenta().sum(axis=0)).max() < 1e-9


@pytest.mark.parametrize("scheme", ["nhc", "bussi", "langevin", "berendsen"])
def test_temperature_ramp_is_followed_and_energy_accounted(scheme):
    """300 K -> 3000 K in 5,000 steps of 2 fs (0.27 K/fs) through melting, half the atoms
    fixed (256-atom LJ solid, eps = 0.2 eV). Window means (1,000 steps) of the mobile atoms'
    kinetic T are within 8% of the target plus the expected lag 2 x rate x tau (tau the
    thermostat's time constant; the factor 2 because heat goes into potential energy too).
    The conserved quantity stays constant to 0.5% of the heat the thermostat put in."""
    atoms = lj_fluid(4, epsilon=0.2, sigma=2.3, density=0.9, mass=50.0)
    fix_lower_half(atoms)
    thermalize(atoms, 300.0, seed=0)
    params, tau = {"nhc": ({"tdamp_fs": 100}, 100.0), "bussi": ({"taut_fs": 100}, 100.0),
                   "langevin": ({"friction_per_fs": 0.01}, 50.0),
                   "berendsen": ({"taut_fs": 100}, 100.0)}[scheme]
    dyn = make_dynamics(scheme, atoms, 2.0, 300.0, seed=1, **params)
    dyn.run(1000)
    e0 = dyn.get_conserved_energy()
    heat0 = (dyn.get_thermostat_energy() if scheme == "nhc" else dyn.get_thermostat_work())
    nsteps, t0, t1 = 5000, 300.0, 3000.0
    target, kinetic, conserved = [], [], []
    for i in range(nsteps):
        temperature = t0 + (t1 - t0) * (i + 1) / nsteps
        dyn.set_temperature(temperature)
        dyn.run(1)
        target.append(temperature)
        kinetic.append(dyn.get_kinetic_temperature())
        if i % 100 == 0:
            conserved.append(dyn.get_conserved_energy())
    target = np.array(target).reshape(5, -1).mean(axis=1)
    kinetic = np.array(kinetic).reshape(5, -1).mean(axis=1)
    lag = 2 * (t1 - t0) / (nsteps * 2.0) * tau
    assert np.all(np.abs(kinetic - target) < 0.08 * target + lag), (kinetic, target, lag)
    heat = abs((dyn.get_thermostat_energy() if scheme == "nhc" else dyn.get_thermostat_work())
               - heat0)
    assert heat > 50.0  # eV: the ramp really heats
    assert np.abs(np.array(conserved) - e0).max() < 0.005 * heat


# ------------------------------------------------------------------ restarts, seeds, MPI

def _plain(obj):
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_plain(v) for v in obj)
    return obj is None or isinstance(obj, (bool, int, float, str, np.ndarray))


PARAMS = {"nve": {}, "nhc": {"tdamp_fs": 40, "tchain": 4, "tloop": 2, "sy_order": 6},
          "bussi": {"taut_fs": 40}, "langevin": {"friction_per_fs": 0.02},
          "berendsen": {"taut_fs": 40}}


@pytest.mark.parametrize("scheme", list(DYNAMICS))
def test_restart_from_state_equals_uninterrupted_run(scheme):
    def ramp(dyn, start, n):
        for i in range(start, start + n):
            dyn.set_temperature(400.0 + 20.0 * i)
            dyn.run(1)

    atoms = copper(fixed=True)
    dyn = make_dynamics(scheme, atoms, 2.0, 400.0, seed=21, **PARAMS[scheme])
    ramp(dyn, 0, 30)
    # through the data-only checkpoint format, as a restart reads it
    saved_state = {"version": CHECKPOINT_VERSION, "dynamics": dyn.get_state()}
    state = decode_checkpoint(encode_checkpoint(saved_state))["dynamics"]
    assert _plain(state) and state["nsteps"] == 30
    saved = atoms.get_positions(), atoms.get_momenta()
    ramp(dyn, 30, 30)

    fresh = copper(fixed=True)
    fresh.calc = NumbaEMT()
    fresh.set_positions(saved[0])
    fresh.set_momenta(saved[1])
    dyn2 = make_dynamics(scheme, fresh, 2.0, 123.0, seed=999, **PARAMS[scheme])
    dyn2.set_state(state)
    assert dyn2.nsteps == 30
    ramp(dyn2, 30, 30)
    assert np.abs(fresh.positions - atoms.positions).max() < 1e-10
    assert np.abs(fresh.get_momenta() - atoms.get_momenta()).max() < 1e-10
    assert dyn2.get_conserved_energy() == pytest.approx(dyn.get_conserved_energy(), abs=1e-10)
    other = "nhc" if scheme != "nhc" else "nve"
    with pytest.raises(DynamicsError, match="integrator state"):
        make_dynamics(other, fresh, 2.0, 300.0).set_state(state)


def test_the_state_carries_the_forces_so_a_restart_makes_no_extra_force_call():
    """A restart starts its first step from the forces the state holds (those the
    uninterrupted run used there), not from a new force call: for DFT a new SCF at the same
    positions would end elsewhere within its tolerance. Old states without forces still load
    (the forces are then computed)."""
    class Counting(NumbaEMT):
        calls = 0

        def calculate(self, *args, **kwargs):
            Counting.calls += 1
            super().calculate(*args, **kwargs)

    atoms = copper(fixed=True)
    dyn = make_dynamics("bussi", atoms, 2.0, 500.0, seed=3)
    dyn.run(5)
    state = decode_checkpoint(encode_checkpoint(
        {"version": CHECKPOINT_VERSION, "dynamics": dyn.get_state()}))["dynamics"]
    assert np.array_equal(state["forces"], atoms.get_forces(apply_constraint=False))
    saved = atoms.get_positions(), atoms.get_momenta()
    dyn.run(5)
    for with_forces, calls in ((True, 5), (False, 6)):
        fresh = copper(fixed=True)
        fresh.calc = Counting()
        fresh.set_positions(saved[0])
        fresh.set_momenta(saved[1])
        restarted = make_dynamics("bussi", fresh, 2.0, 500.0, seed=99)
        restarted.set_state(state if with_forces else
                            {k: v for k, v in state.items() if k != "forces"})
        Counting.calls = 0
        restarted.run(5)
        assert Counting.calls == calls
        assert np.array_equal(fresh.positions, atoms.positions)


@pytest.mark.parametrize("scheme", ["bussi", "langevin"])
def test_same_seed_same_trajectory(scheme):
    runs = []
    for seed in (7, 7, 8):
        atoms = copper(fixed=True)
        make_dynamics(scheme, atoms, 2.0, 300.0, seed=seed).run(40)
        runs.append(atoms.positions.copy())
    assert np.array_equal(runs[0], runs[1])
    assert np.abs(runs[0] - runs[2]).max() > 1e-6


def test_langevin_noise_choice_is_checked_and_kept_in_the_state():
    atoms = copper(fixed=True)
    with pytest.raises(DynamicsError, match="noise must be one of fast, numpy"):
        Langevin(atoms, 2 * FS, 300.0, 0.02 / FS, seed=1, noise="gauss")
    fast = make_dynamics("langevin", atoms, 2.0, 300.0, seed=1)
    fast.run(2)
    state = fast.get_state()
    assert state["thermostat"]["noise"] == "fast" and len(state["thermostat"]["stream"]) == 2
    slow = make_dynamics("langevin", copper(fixed=True), 2.0, 300.0, seed=1, noise="numpy")
    with pytest.raises(DynamicsError, match="noise='fast', this run with 'numpy'"):
        slow.set_state(state)


def test_large_langevin_draws_the_same_numbers_as_numpy():
    """noise='numpy': above a few thousand numbers the noise is drawn by numba, the same
    numbers as numpy's."""
    atoms = copper(5, fixed=True)  # 250 mobile atoms: 750 numbers, numpy's path
    twin = atoms.copy()
    twin.calc = NumbaEMT()
    a = Langevin(atoms, 2 * FS, 300.0, 0.02 / FS, seed=5, noise="numpy")
    b = Langevin(twin, 2 * FS, 300.0, 0.02 / FS, seed=5, noise="numpy")
    b.thermostat.numba_rng_min = 1  # the numba path on b only
    a.thermostat.numba_rng_min = 10 ** 9
    b.run(3)
    a.run(3)
    assert np.array_equal(atoms.positions, twin.positions)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


MPI_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from mpi4py import MPI
from test_dynamics import copper
from meltquench.dynamics import make_dynamics
out = []
for scheme, seed in (("nhc", 11), ("bussi", 11), ("langevin", 11), ("berendsen", 11),
                     ("langevin", None)):
    atoms = copper(fixed=True)
    dyn = make_dynamics(scheme, atoms, 2.0, 500.0, seed=seed)
    for i in range(25):
        dyn.set_temperature(500.0 + 10 * i)
        dyn.run(1)
    out.append(atoms.positions.copy())
np.save({prefix!r} + str(MPI.COMM_WORLD.Get_rank()) + ".npy", np.array(out))
"""


def test_mpi_ranks_agree_and_equal_the_serial_run(tmp_path, mpirun):
    import subprocess
    tests = str(Path(__file__).parent)
    script = tmp_path / "run.py"
    script.write_text(MPI_SCRIPT.format(tests=tests, prefix=str(tmp_path / "mpi")))
    mpirun(["python", str(script)], np=2)
    r0, r1 = np.load(tmp_path / "mpi0.npy"), np.load(tmp_path / "mpi1.npy")
    assert np.array_equal(r0, r1)  # every rank, including seed=None (rank 0's seed is shared)
    script.write_text(MPI_SCRIPT.format(tests=tests, prefix=str(tmp_path / "serial")))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    serial = np.load(tmp_path / "serial0.npy")
    assert np.array_equal(r0[:4], serial[:4])


# ------------------------------------------------------------------ atoms bookkeeping

class CountingEMT(NumbaEMT):
    ncalc = 0

    def calculate(self, *args, **kwargs):
        CountingEMT.ncalc += 1
        super().calculate(*args, **kwargs)


@pytest.mark.parametrize("scheme", ["nve", "langevin"])
@pytest.mark.parametrize("interval", [1, 3])
def test_observers_that_move_atoms_inside_run_are_noticed(scheme, interval):
    """An observer that moves an atom (every step, or every third) inside run() gets fresh
    forces, exactly as a twin run that moves the atom between run(1) calls."""
    def nudge(a):
        a.positions[0] += 0.01

    atoms, twin = copper(), copper()
    atoms.calc, twin.calc = CountingEMT(), NumbaEMT()
    dyn = make_dynamics(scheme, atoms, 2.0, 300.0, seed=4)
    twin_dyn = make_dynamics(scheme, twin, 2.0, 300.0, seed=4)
    dyn.attach(nudge, interval=interval, a=atoms)
    CountingEMT.ncalc = 0
    dyn.run(12)
    twin_dyn.run(0)
    nudge(twin)  # observers are called at step 0 too
    for step in range(1, 13):
        twin_dyn.run(1)
        if step % interval == 0:
            nudge(twin)
    assert np.array_equal(atoms.positions, twin.positions)
    moved = len(range(0, 12, interval))  # nudges before a step (steps 0, interval, ... < 12)
    assert CountingEMT.ncalc == 1 + 12 + moved


def test_an_overridden_log_counts_as_user_code():
    class Moving(VelocityVerlet):
        def log(self):
            self.atoms.positions[0] += 0.01

    atoms, twin = copper(), copper()
    twin.calc = NumbaEMT()
    Moving(atoms, 2 * FS).run(5)
    plain = VelocityVerlet(twin, 2 * FS)
    plain.run(0)
    twin.positions[0] += 0.01  # log() is called at step 0 too
    for _ in range(5):
        plain.run(1)
        twin.positions[0] += 0.01
    assert np.array_equal(atoms.positions, twin.positions)


@pytest.mark.parametrize("scheme", list(DYNAMICS))
def test_one_force_evaluation_per_step_and_moved_atoms_are_noticed(scheme):
    atoms = copper(fixed=True)
    atoms.calc = CountingEMT()
    dyn = make_dynamics(scheme, atoms, 2.0, 300.0, seed=4)
    CountingEMT.ncalc = 0
    dyn.run(10)
    for _ in range(5):  # the driver's pattern: run(1) with a new target each step
        dyn.set_temperature(350.0)
        dyn.run(1)
    assert CountingEMT.ncalc == 1 + 15
    assert dyn.nsteps == 15
    # move an atom behind the integrator's back: the next step must use fresh forces
    mobile = dyn.mobile_indices
    atoms.positions[mobile[0]] += 0.05
    twin = atoms.copy()
    twin.calc = NumbaEMT()
    twin_dyn = make_dynamics(scheme, twin, 2.0, 350.0, seed=4)
    twin_dyn.set_state(dyn.get_state())
    CountingEMT.ncalc = 0
    dyn.run(5)
    assert CountingEMT.ncalc == 1 + 5  # fresh forces once, then one per step
    twin_dyn.run(5)
    assert np.array_equal(atoms.positions, twin.positions)


@pytest.mark.parametrize("scheme", list(DYNAMICS))
def test_fixed_atoms_stay_put_with_zero_momenta_and_do_not_count(scheme):
    atoms = copper(fixed=True)
    fixed = atoms.constraints[0].get_indices()
    atoms.arrays["momenta"][fixed] = 1.0  # even if someone wrote momenta behind ASE's back
    before = atoms.get_positions()
    dyn = make_dynamics(scheme, atoms, 2.0, 800.0, seed=2)
    dyn.run(50)
    assert np.array_equal(atoms.positions[fixed], before[fixed])
    assert np.all(atoms.get_momenta()[fixed] == 0.0)
    mobile = dyn.mobile_indices
    assert len(mobile) == len(atoms) - len(fixed) and dyn.ndof == 3 * len(mobile)
    assert np.all(np.abs(atoms.positions[mobile] - before[mobile]).max(axis=1) > 0)
    ekin = 0.5 * np.sum(atoms.get_momenta()[mobile] ** 2 / atoms.get_masses()[mobile, None])
    assert dyn.get_kinetic_energy() == pytest.approx(ekin, rel=1e-12)
    assert dyn.get_kinetic_temperature() == pytest.approx(
        2 * ekin / (3 * len(mobile) * units.kB), rel=1e-12)


def test_fixcm_keeps_the_centre_of_mass_still_and_fixcom_means_the_same():
    from ase.calculators.calculator import Calculator, all_changes

    class Pushed(NumbaEMT):  # a calculator with a net force
        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.results["forces"] = self.results["forces"] + np.array([0.3, 0.0, -0.2])

    assert issubclass(Pushed, Calculator)
    for scheme in DYNAMICS:
        atoms = copper()
        atoms.calc = Pushed()
        com = atoms.get_center_of_mass()
        dyn = make_dynamics(scheme, atoms, 2.0, 500.0, seed=3, fixcm=True)
        assert dyn.ndof == 3 * len(atoms) - 3
        dyn.run(30)
        assert np.abs(atoms.get_momenta().sum(axis=0)).max() < 1e-10
        assert np.abs(atoms.get_center_of_mass() - com).max() < 1e-9
    atoms = copper()
    atoms.set_constraint(FixCom())
    assert make_dynamics("langevin", atoms, 2.0, 300.0, seed=1).ndof == 3 * len(atoms) - 3


def test_constraints_we_cannot_honour_are_refused():
    atoms = copper()
    atoms.set_constraint(FixBondLength(0, 1))
    with pytest.raises(DynamicsError, match="FixAtoms"):
        NoseHooverChainNVT(atoms, 2 * FS, 300.0, 100 * FS)
    atoms = copper(fixed=True)
    with pytest.raises(DynamicsError, match="fixcm"):
        make_dynamics("bussi", atoms, 2.0, 300.0, fixcm=True)


def test_make_dynamics_defaults_are_the_configuration_defaults():
    """One source of defaults: a YAML configuration without scheme keys builds the scheme
    make_dynamics builds without them."""
    for scheme in DYNAMICS:
        cfg = DynamicsConfig(thermostat=scheme, timestep_fs=1.5)
        a = from_config(cfg, copper(), 300.0)
        b = make_dynamics(scheme, copper(), 1.5, 300.0, seed=cfg.seed)
        for name in ("dt", "tdamp", "tchain", "tloop", "sy_order", "taut", "fr"):
            assert getattr(a, name, None) == getattr(b, name, None), (scheme, name)


def test_make_dynamics_defaults_units_and_errors():
    atoms = copper()
    dyn = make_dynamics("nhc", atoms, 2.0, 300.0)
    assert isinstance(dyn, NoseHooverChainNVT)
    assert dyn.dt == pytest.approx(2 * FS) and dyn.tdamp == pytest.approx(50 * FS)
    assert (dyn.tchain, dyn.tloop, dyn.sy_order) == (3, 1, 4)
    assert make_dynamics("bussi", atoms, 1.0, 300.0, seed=1).taut == pytest.approx(10 * FS)
    assert make_dynamics("langevin", atoms, 1.0, 300.0, seed=1).fr == pytest.approx(0.02 / FS)
    lang = make_dynamics("langevin", atoms, 1.0, 300.0, seed=1, friction_per_fs=0.05)
    assert lang.fr == pytest.approx(0.05 / FS)
    assert make_dynamics("berendsen", atoms, 2.0, 300.0, taut_fs=20).taut == pytest.approx(20 * FS)
    assert isinstance(make_dynamics("NVE", atoms, 2.0, 300.0), VelocityVerlet)
    for name, kwargs, match in (("nosehoover", {}, "unknown dynamics"),
                                ("nhc", {"taut_fs": 10}, "unknown parameter"),
                                ("bussi", {"taut_fs": -1}, "taut_fs"),
                                ("nhc", {"sy_order": 3}, "2, 4 or 6"),
                                ("nhc", {"tchain": 0}, "tchain")):
        with pytest.raises(DynamicsError, match=match) as err:
            make_dynamics(name, atoms, 2.0, 300.0, **kwargs)
        assert isinstance(err.value, ValueError) and isinstance(err.value, UserError)
    with pytest.raises(DynamicsError, match="temperature_K"):
        make_dynamics("nhc", atoms, 2.0, 0.0)
    with pytest.raises(DynamicsError, match="temperature_K"):
        Bussi(atoms, 2 * FS, None, 100 * FS)


def test_log_has_the_conserved_energy_and_trajectory_is_written(tmp_path):
    from ase.io import read
    atoms = copper(fixed=True)
    log = tmp_path / "md.log"
    dyn = make_dynamics("bussi", atoms, 2.0, 300.0, seed=1, logfile=str(log), loginterval=5,
                        trajectory=str(tmp_path / "md.traj"))
    dyn.run(20)
    dyn.close()
    frames = read(tmp_path / "md.traj", ":")
    assert len(frames) == 5 and np.array_equal(frames[-1].positions, atoms.positions)
    assert np.allclose(frames[-1].get_forces(apply_constraint=False),
                       atoms.get_forces(apply_constraint=False))
    lines = log.read_text().splitlines()
    assert "Econs[eV]" in lines[0] and len(lines) == 1 + 5
    last = [float(x) for x in lines[-1].split()]
    assert last[-1] == pytest.approx(dyn.get_conserved_energy(), abs=1e-5)
    assert last[4] == pytest.approx(dyn.get_kinetic_temperature(), abs=0.01)


def test_irun_and_step_follow_ase_semantics():
    from ase.md.verlet import VelocityVerlet as AseVV
    ours, ref, stepped = copper(fixed=True), copper(fixed=True), copper(fixed=True)
    dyn, ase_dyn = VelocityVerlet(ours, 2 * FS), AseVV(ref, 2 * FS)
    assert list(dyn.irun(3)) == list(ase_dyn.irun(3)) == [False, False, False, True]
    assert dyn.nsteps == ase_dyn.nsteps == 3
    dyn3 = VelocityVerlet(stepped, 2 * FS)
    for _ in range(3):
        dyn3.step()  # as ASE: step() does not count steps
    assert dyn3.nsteps == 0
    assert np.array_equal(stepped.positions, ours.positions)
    assert np.abs(ours.positions - ref.positions).max() < 1e-12


# ------------------------------------------------------------------ the driver's pattern

class FailingOnce(NumbaEMT):
    """EMT whose force call raises once, at a chosen call (an SCF failure)."""

    def __init__(self, fail_at):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def calculate(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("SCF did not converge")
        super().calculate(*args, **kwargs)


@pytest.mark.parametrize("scheme", list(DYNAMICS))
def test_driver_steps_with_a_failed_step_retried_equal_run_1(scheme):
    """set_temperature, step(), nsteps += 1, call_observers(), with one step that fails in its
    force call and is retried after restoring positions, momenta and get_state(): bit for bit
    the trajectory of run(1) per step."""
    ref, atoms = copper(fixed=True), copper(fixed=True)
    atoms.calc = FailingOnce(fail_at=6)
    dyn = make_dynamics(scheme, ref, 2.0, 400.0, seed=5, **PARAMS[scheme])
    driven = make_dynamics(scheme, atoms, 2.0, 400.0, seed=5, **PARAMS[scheme])
    seen, retried = [], []
    driven.attach(lambda: seen.append(driven.nsteps))
    atoms.get_forces()
    driven.call_observers()
    for step in range(1, 13):
        dyn.set_temperature(400.0 + 15.0 * step)
        dyn.run(1)
        driven.set_temperature(400.0 + 15.0 * step)
        saved = atoms.get_positions(), atoms.get_momenta(), driven.get_state()
        try:
            driven.step()
        except RuntimeError:
            atoms.set_positions(saved[0], apply_constraint=False)
            atoms.set_momenta(saved[1], apply_constraint=False)
            driven.set_state(saved[2])
            retried.append(step)
            driven.step()
        driven.nsteps += 1
        driven.call_observers()
    assert len(retried) == 1 and seen == list(range(13))
    assert np.array_equal(atoms.positions, ref.positions)
    assert np.array_equal(atoms.get_momenta(), ref.get_momenta())
    assert driven.get_conserved_energy() == dyn.get_conserved_energy()


@pytest.mark.parametrize("scheme", list(DYNAMICS))
def test_state_survives_json_with_arrays_as_lists(scheme):
    atoms = copper(fixed=True)
    dyn = make_dynamics(scheme, atoms, 2.0, 400.0, seed=8, **PARAMS[scheme])
    dyn.run(5)
    text = json.dumps(dyn.get_state(), default=lambda a: a.tolist())
    saved = atoms.get_positions(), atoms.get_momenta()
    dyn.run(5)
    fresh = copper(fixed=True)
    fresh.calc = NumbaEMT()
    fresh.set_positions(saved[0])
    fresh.set_momenta(saved[1])
    again = make_dynamics(scheme, fresh, 2.0, 100.0, seed=1, **PARAMS[scheme])
    again.set_state(json.loads(text))
    again.run(5)
    assert np.array_equal(fresh.positions, atoms.positions)
    with pytest.raises(DynamicsError, match="version"):
        again.set_state(dict(json.loads(text), version=99))


# ------------------------------------------------------------------ registry and configuration

CONFIG_VALUES = {"nve": {}, "nhc": {"tdamp_fs": 40.0, "tchain": 4, "tloop": 2},
                 "bussi": {"taut_fs": 40.0}, "langevin": {"friction_per_fs": 0.02},
                 "berendsen": {"taut_fs": 40.0}}


@pytest.mark.parametrize("scheme", list(DYNAMICS))
def test_from_config_equals_make_dynamics(scheme):
    cfg = DynamicsConfig(thermostat=scheme, timestep_fs=1.5, seed=3, **CONFIG_VALUES[scheme])
    validate_config(cfg)
    a, b = copper(fixed=True), copper(fixed=True)
    dyn = from_config(cfg, a, 500.0)
    twin = make_dynamics(scheme, b, 1.5, 500.0, seed=3, **CONFIG_VALUES[scheme])
    assert type(dyn) is DYNAMICS[scheme] and dyn.dt == twin.dt
    dyn.run(10)
    twin.run(10)
    assert np.array_equal(a.positions, b.positions)
    as_dict = dict(dataclasses.asdict(cfg), thermostat=scheme)
    assert type(from_config(as_dict, copper(), 300.0)) is DYNAMICS[scheme]


@pytest.mark.parametrize("changes,match", [
    ({"thermostat": "nosehoover"}, "dynamics.thermostat must be one of"),
    ({"thermostat": "NHC"}, "did you mean 'nhc'"),
    ({"timestep_fs": 0.0}, "dynamics.timestep_fs must be > 0 and <= 5 fs"),
    ({"timestep_fs": 6.0}, "dynamics.timestep_fs must be > 0 and <= 5 fs"),
    ({"tdamp_fs": -1.0}, "dynamics.tdamp_fs must be a finite number > 0"),
    ({"tchain": 0}, "dynamics.tchain must be a whole number >= 1"),
    ({"tloop": 1.5}, "dynamics.tloop must be a whole number >= 1"),
    ({"taut_fs": float("nan")}, "dynamics.taut_fs must be a finite number"),
    ({"friction_per_fs": -0.1}, "dynamics.friction_per_fs must be a finite number >= 0"),
    ({"seed": -1}, "dynamics.seed must be a non-negative integer"),
])
def test_validate_config_names_the_key_in_one_line(changes, match):
    """Every scheme key is checked whichever thermostat is chosen (here bussi)."""
    cfg = dataclasses.replace(DynamicsConfig(thermostat="bussi"), **changes)
    with pytest.raises(DynamicsError, match=match) as err:
        validate_config(cfg)
    assert "\n" not in str(err.value) and isinstance(err.value, UserError)


def test_validate_config_accepts_the_defaults_and_zero_friction():
    validate_config(DynamicsConfig())
    validate_config(DynamicsConfig(thermostat="langevin", friction_per_fs=0.0))


def test_every_thermostat_key_of_the_configuration_is_declared_in_the_registry():
    """A DynamicsConfig field is a common key, a scheme key of the registry or the driver's."""
    common = {"thermostat", "timestep_fs", "seed"}
    driver = {"final_relax", "relax_fmax", "relax_steps", "relax_region", "relax_radius",
              "max_temperature_factor"}
    fields = {f.name for f in dataclasses.fields(DynamicsConfig)}
    scheme_keys = fields - common - driver
    assert scheme_keys and scheme_keys <= set(params_by_key())
    for scheme, cls in DYNAMICS.items():
        assert cls.scheme == scheme and all(isinstance(p, Param) for p in cls.params)


def test_a_shared_key_must_be_the_same_param():
    class Other(Bussi):
        scheme = "other"
        params = (Param("taut_fs", "taut", positive),)

    with pytest.raises(TypeError, match="taut_fs"):
        register(Other)
    assert "other" not in DYNAMICS
