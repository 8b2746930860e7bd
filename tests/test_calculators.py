"""Calculators: the pair potential against ASE references, settings for GPAW/VASP/tblite/D3."""
import sys

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.constraints import FixAtoms
from ase.neighborlist import neighbor_list

from meltquench.calculators import (CalculatorSettings, GPAWSettings, PairPotential, V_O_PAIRS,
                                    conservative_fallback, describe, generic_pair,
                                    gpaw_parameters, make_calculator, scf_iterations,
                                    vasp_parameters)
from meltquench.config import load_config
from meltquench.errors import UserError
from meltquench.structures import split_regions, v2o3_corundum, v2o3_rhombohedral


def pair_energy_reference(atoms, cutoff=6.0, cutoff_on=5.0):
    """The pair energy summed over ASE's neighbour list (each pair seen twice), in numpy."""
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    calc = PairPotential()
    symbols = sorted(set(atoms.get_chemical_symbols()))
    A, rho, D, alpha, r0 = calc.pair_parameters(symbols)
    kind = np.array([symbols.index(s) for s in atoms.get_chemical_symbols()])
    a, b = kind[i], kind[j]
    ex = np.exp(-alpha[a, b] * (d - r0[a, b]))
    phi = A[a, b] * np.exp(-d / rho[a, b]) + D[a, b] * (ex * ex - 2 * ex)
    x = np.clip((d - cutoff_on) / (cutoff - cutoff_on), 0, 1)
    return 0.5 * np.sum(phi * (1 - x**3 * (10 - 15 * x + 6 * x**2)))


@pytest.fixture
def rattled():
    atoms = v2o3_rhombohedral()  # 10 atoms: cell smaller than the 6 Å cutoff
    atoms.rattle(0.08, seed=3)
    atoms.calc = PairPotential()
    return atoms


def test_pair_energy_matches_ase_neighbour_list(rattled):
    reference = pair_energy_reference(rattled)
    assert rattled.get_potential_energy() == pytest.approx(reference, rel=1e-12)
    hexagonal = v2o3_corundum((1, 1, 1))
    hexagonal.rattle(0.05, seed=4)
    hexagonal.calc = PairPotential()
    assert hexagonal.get_potential_energy() == pytest.approx(pair_energy_reference(hexagonal),
                                                             rel=1e-12)


def test_pair_forces_and_stress_are_derivatives(rattled):
    forces = rattled.get_forces()
    assert np.abs(forces).max() > 0.5  # rattled: forces are not trivially zero
    numeric = calculate_numerical_forces(rattled, eps=1e-5)
    assert np.abs(forces - numeric).max() < 1e-6
    stress = rattled.get_stress()
    assert np.abs(stress - calculate_numerical_stress(rattled, eps=1e-6)).max() < 1e-7


def test_pair_periodic_images_small_cell_equals_supercell(rattled):
    e1 = rattled.get_potential_energy()
    f1 = rattled.get_forces()
    big = rattled.repeat((2, 2, 2))
    big.calc = PairPotential()
    assert big.get_potential_energy() == pytest.approx(8 * e1, rel=1e-11)
    assert np.allclose(big.get_forces(), np.tile(f1, (8, 1)), atol=1e-10)


def test_pair_open_boundaries_match_finite_differences():
    molecule = Atoms("VO2", positions=[(0, 0, 0), (1.9, 0.1, 0), (-0.5, 1.8, 0.3)])
    molecule.calc = PairPotential()
    numeric = calculate_numerical_forces(molecule, eps=1e-5)
    assert np.abs(molecule.get_forces() - numeric).max() < 1e-6
    assert np.abs(molecule.get_forces().sum(axis=0)).max() < 1e-12


def test_pair_corundum_is_a_local_minimum_with_sane_bonds():
    from ase.optimize import BFGS
    atoms = v2o3_corundum()
    atoms.calc = PairPotential()
    assert np.abs(atoms.get_forces()).max() < 0.01
    atoms.rattle(0.1, seed=1)
    BFGS(atoms, logfile=None).run(fmax=1e-3, steps=300)
    i, j, d = neighbor_list("ijd", atoms, 2.3)
    symbols = np.array(atoms.get_chemical_symbols())
    vo = (symbols[i] == "V") & (symbols[j] == "O")
    assert np.allclose(np.sort(np.unique(d[vo].round(2))), [1.97, 2.05], atol=0.011)
    assert np.all(np.bincount(i[vo], minlength=len(atoms))[symbols == "V"] == 6)


def test_pair_md_4000K_conserves_energy_and_stays_sane():
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet
    atoms = v2o3_rhombohedral((1, 1, 4))
    split_regions(atoms)
    atoms.calc = PairPotential()
    thermalize_momenta(atoms, 4000, rng=np.random.default_rng(5))
    fixed_positions = atoms.positions[atoms.get_tags() == 1].copy()
    md = VelocityVerlet(atoms, 2 * units.fs)
    energies, dmin = [], np.inf
    for _ in range(40):
        md.run(5)
        energies.append(atoms.get_total_energy())
        dmin = min(dmin, neighbor_list("d", atoms, 3.0).min())
    ekin = atoms.get_kinetic_energy()
    assert ekin > 1.0  # it is hot
    assert np.ptp(energies) < 0.02 * ekin  # velocity Verlet, 2 fs: energy conserved
    assert dmin > 1.3  # no collapse
    assert np.array_equal(atoms.positions[atoms.get_tags() == 1], fixed_positions)


def test_pair_is_deterministic_and_generic_for_other_elements(rattled):
    e1, f1 = rattled.get_potential_energy(), rattled.get_forces().copy()
    again = rattled.copy()
    again.calc = PairPotential()
    assert again.get_potential_energy() == e1 and np.array_equal(again.get_forces(), f1)
    assert generic_pair("Al", "O")["D"] > 0 and generic_pair("Al", "Sn")["D"] == 0
    from ase.build import bulk
    sno2 = bulk("Sn", "sc", a=3.2) + Atoms("O", positions=[(1.6, 1.6, 0)])
    sn_o = {"A": 0.0, "rho": 0.3, "D": 1.2, "alpha": 1.7, "r0": 2.05}
    sno2.calc = PairPotential(pairs={"Sn-O": sn_o})
    numeric = calculate_numerical_forces(sno2, eps=1e-5)
    assert np.abs(sno2.get_forces() - numeric).max() < 1e-6
    assert sno2.calc.pair_parameters(["O", "Sn"])[2][0, 1] == 1.2
    assert V_O_PAIRS["V-O"]["r0"] == pytest.approx(1.981)


def test_pair_through_make_calculator_with_d3_adds_grimme_pbe_bj(tmp_path, rattled):
    from dftd3.ase import DFTD3
    calc = make_calculator({"name": "pair", "dispersion": "d3bj"}, directory=tmp_path)
    atoms = rattled.copy()
    atoms.calc = calc
    total = atoms.get_potential_energy()
    reference = rattled.copy()
    # PBE-D3(BJ) two-body parameters of Grimme et al. 2011 (VASP IVDW = 12: no ATM term).
    reference.calc = DFTD3(damping="d3bj", params_tweaks={"s6": 1.0, "s8": 0.7875, "a1": 0.4289,
                                                          "a2": 4.4407, "s9": 0.0})
    e_d3 = reference.get_potential_energy()
    assert e_d3 < -0.1
    assert total == pytest.approx(pair_energy_reference(rattled) + e_d3, abs=1e-8)
    assert scf_iterations(calc) is None


def test_unknown_or_missing_calculators_say_how_to_fix(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="unknown calculator 'gpaww'"):
        make_calculator({"name": "gpaww"}, directory=tmp_path)
    monkeypatch.setitem(sys.modules, "tblite.ase", None)
    with pytest.raises(UserError, match="pip install tblite"):
        make_calculator({"name": "tblite", "dispersion": None}, directory=tmp_path)
    for key in ("ASE_VASP_COMMAND", "VASP_COMMAND", "VASP_SCRIPT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(UserError, match="ASE_VASP_COMMAND"):
        make_calculator({"name": "vasp"}, directory=tmp_path)
    with pytest.raises(UserError, match="dispersion"):
        make_calculator({"name": "pair", "dispersion": "d4"}, directory=tmp_path)


def test_vasp_input_files_have_the_paper_settings(tmp_path, monkeypatch, fake_potcars):
    from ase.io import read
    monkeypatch.setenv("ASE_VASP_COMMAND", "vasp_std")
    atoms = v2o3_rhombohedral((1, 1, 2))
    split_regions(atoms)
    calc = make_calculator({"name": "vasp", "dispersion": "d3bj"}, directory=tmp_path / "run")
    calc.write_input(atoms)
    folder = tmp_path / "run" / "vasp"
    incar = {}
    for line in (folder / "INCAR").read_text().splitlines():
        key, value = (part.strip() for part in line.split("="))
        incar[key] = value
    assert float(incar["ENCUT"]) == 450.0
    assert incar["GGA"] == "PE" and incar["ISYM"] == "0" and incar["IVDW"] == "12"
    assert incar["LDAU"] == ".TRUE." and incar["LDAUTYPE"] == "2"
    species = (folder / "POSCAR").read_text().splitlines()[5].split()
    ldaul = dict(zip(species, incar["LDAUL"].split()))
    ldauu = dict(zip(species, map(float, incar["LDAUU"].split())))
    assert ldaul == {"V": "2", "O": "-1"} and ldauu == {"V": 3.25, "O": 0.0}
    kpoints = (folder / "KPOINTS").read_text().splitlines()
    assert kpoints[2].strip().lower().startswith("g") and kpoints[3].split() == ["1", "1", "1"]
    written = read(folder / "POSCAR", format="vasp")
    fixed_written = np.zeros(len(written), bool)
    for c in written.constraints:
        if isinstance(c, FixAtoms):
            fixed_written[c.get_indices()] = True
    # ASE sorts atoms by species in the POSCAR; calc.resort maps them back.
    assert np.allclose(written.positions[calc.resort], atoms.positions, atol=1e-8)
    assert np.array_equal(fixed_written[calc.resort], atoms.get_tags() == 1)
    assert vasp_parameters({}, dispersion=None).get("ivdw") is None
    assert vasp_parameters({"extra": {"ediff": 1e-6}})["ediff"] == 1e-6


def test_gpaw_parameters_follow_the_config_and_gpaw_parses_them():
    from gpaw.dft import Parameters
    from gpaw.hubbard import parse_hubbard_string
    kw = gpaw_parameters(GPAWSettings())
    assert kw["symmetry"] == "off" and kw["setups"] == {"V": ":d,3.25"}
    assert kw["kpts"] == {"size": [1, 1, 1], "gamma": True} and kw["mode"] == "lcao"
    _, hubbard = parse_hubbard_string(kw["setups"]["V"])
    assert hubbard.l == [2] and hubbard.U[0] * units.Ha == pytest.approx(3.25)
    params = Parameters(**kw)
    mixer = GPAWSettings().mixer
    assert params.mixer.name == mixer["backend"]
    assert params.mixer.mixer_params["nmaxold"] == mixer["nmaxold"]
    assert params.mixer.metric_params["weight"] == mixer["weight"]
    assert params.occupations.todict() == GPAWSettings().occupations
    pw = gpaw_parameters({"mode": "pw", "ecut": 450, "extra": {"nbands": "120%", "xc": "LDA"}})
    assert Parameters(**pw).mode.ecut == 450.0 and pw["xc"] == "LDA" and pw["nbands"] == "120%"
    with pytest.raises(UserError):
        gpaw_parameters({"mode": "plane"})
    with pytest.raises(UserError):
        gpaw_parameters({"hubbard_u": {"Vx": 3.0}})


def test_parallel_auto_splits_the_bands_only_where_that_was_measured_faster():
    """``calculator.gpaw.parallel: auto`` (the default): {band: 2} in LCAO at the Γ point on an
    even number of ranks from 150 atoms with ScaLAPACK (240 atoms on 2 ranks: 1.3-1.5x faster
    per step than GPAW's own layout; 30-120 atoms: 4-20% slower); else GPAW's own choice.
    A dict or null is used as it is, and nothing else is accepted."""
    from meltquench.calculators import BAND_PARALLEL_FROM_ATOMS, choose_parallel
    auto = GPAWSettings()
    assert auto.parallel == "auto" and "parallel" not in gpaw_parameters(auto)
    n = BAND_PARALLEL_FROM_ATOMS
    assert n == 150
    assert choose_parallel(auto, 240, 2, scalapack=True) == {"band": 2}
    assert choose_parallel(auto, n, 8, scalapack=True) == {"band": 2}
    for natoms, ranks, scalapack in ((n - 1, 2, True), (240, 1, True), (240, 3, True),
                                     (240, 2, False), (None, 2, True)):
        assert choose_parallel(auto, natoms, ranks, scalapack=scalapack) is None
    assert choose_parallel(GPAWSettings(mode="pw"), 240, 2, scalapack=True) is None
    assert choose_parallel(GPAWSettings(kpts=[2, 2, 1]), 240, 2, scalapack=True) is None
    assert choose_parallel(GPAWSettings(parallel=None), 240, 2, scalapack=True) is None
    own = GPAWSettings(parallel={"domain": 2, "band": 2})
    assert choose_parallel(own, 10, 4, scalapack=False) == {"domain": 2, "band": 2}
    assert gpaw_parameters(own)["parallel"] == {"domain": 2, "band": 2}
    with pytest.raises(UserError, match="calculator.gpaw.parallel must be 'auto', null or"):
        GPAWSettings(parallel="fast")


def test_the_scalapack_probe_agrees_with_gpaw_without_importing_it(tmp_path, monkeypatch):
    """``gpaw_has_scalapack`` reads GPAW's compiled extension instead of importing GPAW (a dry
    run stays free of it): it agrees with GPAW's own ``compiled_with_sl``, and an extension
    without the BLACS wrappers, or none, means no ScaLAPACK."""
    import importlib.machinery
    import sys
    from meltquench.calculators import gpaw_has_scalapack
    gpaw_utilities = pytest.importorskip("gpaw.utilities")
    assert gpaw_has_scalapack() == bool(gpaw_utilities.compiled_with_sl())
    fake = tmp_path / ("_gpaw" + importlib.machinery.EXTENSION_SUFFIXES[0])
    fake.write_bytes(b"\x7fELF built without ScaLAPACK: dgemm_ dsyevd_")
    monkeypatch.setattr(sys, "path", [str(tmp_path)] + sys.path)
    monkeypatch.delitem(sys.modules, "_gpaw", raising=False)
    assert gpaw_has_scalapack() is False
    fake.write_bytes(b"\x7fELF Cblacs_gridinit_ numroc_")
    assert gpaw_has_scalapack() is True
    monkeypatch.setattr(sys, "path", [str(tmp_path / "nowhere")])
    assert gpaw_has_scalapack() is False


def test_antiferromagnetic_start_alternates_by_layer_along_c():
    """``magnetic_order: antiferro-c``: the V moments alternate in sign from one buckled
    honeycomb layer to the next along c (corundum: 6 layers of 2 V per hexagonal cell), so
    the face-sharing V pairs (the closest V-V, 2.7 Å along c) start opposite and the net
    moment is zero; an odd number of layers is refused, ferro stays the default."""
    from ase.neighborlist import neighbor_list
    from meltquench.calculators import prepare_atoms
    from meltquench.structures import layers_along_c
    atoms = v2o3_corundum()
    v = atoms.symbols == "V"
    layer, count = layers_along_c(atoms, v)
    assert count == 6 and (np.bincount(layer[v]) == 2).all() and (layer[~v] == -1).all()
    heights = atoms.get_scaled_positions()[:, 2] * atoms.cell.cellpar()[2]
    for k in range(count):  # one layer: within 0.5 Å in height (modulo the cell)
        h = heights[layer == k]
        assert min(np.ptp(h), np.ptp((h + 3.0) % atoms.cell.cellpar()[2])) < 0.5
    afm = prepare_atoms({"spinpol": True, "magnetic_order": "antiferro-c"}, atoms.copy())
    m = afm.get_initial_magnetic_moments()
    assert np.abs(m[v]).tolist() == [2.0] * 12 and (m[~v] == 0).all() and m.sum() == 0
    assert all(m[layer == k][0] == m[layer == k][1] == 2.0 * (-1) ** k for k in range(count))
    i, j, d = neighbor_list("ijd", afm, 2.8)
    pairs = v[i] & v[j] & (d < 2.8)
    assert pairs.any() and (m[i[pairs]] == -m[j[pairs]]).all()
    ferro = prepare_atoms({"spinpol": True}, atoms.copy()).get_initial_magnetic_moments()
    assert (ferro[v] == 2.0).all()
    # the rhombohedral cell's 4 V are 4 layers: + - + - in height
    rhombo = prepare_atoms({"spinpol": True, "magnetic_order": "antiferro-c"},
                           v2o3_rhombohedral()).get_initial_magnetic_moments()
    assert sorted(rhombo[:4]) == [-2.0, -2.0, 2.0, 2.0]
    odd = v2o3_corundum()
    del odd[[k for k in range(len(odd)) if layer[k] == 5]]
    with pytest.raises(UserError, match="form 5 layers along c, an odd number"):
        prepare_atoms({"spinpol": True, "magnetic_order": "antiferro-c"}, odd)
    with pytest.raises(UserError, match="calculator.magnetic_order must be one of ferro"):
        CalculatorSettings.from_dict({"magnetic_order": "afm"})


def test_settings_from_dicts_and_conservative_fallback():
    merged = CalculatorSettings.from_dict({"gpaw": {"basis": "dzp",
                                                    "mixer": {"backend": "msr1"}}})
    assert merged.gpaw.basis == "dzp" and merged.gpaw.mixer == {"backend": "msr1"}
    assert merged.gpaw.xc == "PBE" and GPAWSettings().basis == "sz(dzp)"
    settings = merged
    betas, widths, maxiters = [], [], []
    for _ in range(10):
        settings = conservative_fallback(settings)
        if settings is None:
            break
        betas.append(settings.gpaw.mixer["beta"])
        widths.append(settings.gpaw.occupations["width"])
        maxiters.append(settings.gpaw.maxiter)
    assert settings is None and len(betas) >= 2  # a finite chain of ever more careful retries
    assert betas[0] < 0.05 + 1e-12 and all(b >= 0.02 for b in betas)
    assert all(np.diff(betas) <= 0) and all(np.diff(maxiters) >= 0) and max(widths) <= 0.3
    assert maxiters[0] > GPAWSettings().maxiter
    assert conservative_fallback({"name": "pair"}) is None
    with pytest.raises(UserError, match="unknown key 'calculator.gpaw.basiss'.*'basis'"):
        CalculatorSettings.from_dict({"gpaw": {"basiss": "dzp"}})


def test_python_defaults_are_the_cli_defaults(tmp_path):
    """make_calculator({}) from Python builds what 'meltquench run' builds with no config."""
    cli = load_config().calculator
    assert CalculatorSettings.from_dict({}) == cli == CalculatorSettings()
    assert cli.gpaw.basis == "sz(dzp)" and cli.dispersion == "d3bj"
    assert describe({}) == describe(cli) == ("GPAW LCAO sz(dzp), PBE, U 3.25 eV on V d, "
                                             "smearing max(kT, 0.05 eV), D3(BJ)")
    python = make_calculator({}, directory=tmp_path / "python")
    run = make_calculator(cli, directory=tmp_path / "cli")
    for a, b in ((python, run), *zip(python.mixer.calcs, run.mixer.calcs)):
        assert type(a) is type(b)
    gpaw_python, d3_python = python.mixer.calcs
    gpaw_run, d3_run = run.mixer.calcs
    assert repr(gpaw_python.params) == repr(gpaw_run.params)
    assert gpaw_python.params.basis == {"default": "sz(dzp)"}
    assert gpaw_python.meltquench_extrapolation.order == gpaw_run.meltquench_extrapolation.order
    assert d3_python.parameters == d3_run.parameters


def test_tblite_gfn1_runs_on_a_periodic_oxide(tmp_path):
    pytest.importorskip("tblite")
    calc = make_calculator({"name": "tblite", "dispersion": None}, directory=tmp_path)
    assert calc.parameters.method == "GFN1-xTB"
    atoms = v2o3_rhombohedral()
    atoms.rattle(0.05, seed=2)
    atoms.calc = calc
    forces = atoms.get_forces()
    assert np.isfinite(atoms.get_potential_energy())
    assert np.abs(forces.sum(axis=0)).max() < 1e-6 < np.abs(forces).max()


def test_electronic_temperature_follows_the_target_and_keeps_the_results(tmp_path, monkeypatch,
                                                                       fake_potcars):
    """GPAW's width and VASP's SIGMA are max(k_B T, floor) for each step's target temperature;
    setting them keeps the results at the current positions (a restart reuses them)."""
    from ase import units
    from meltquench.calculators import set_electronic_temperature, smearing_width_of
    gpaw = CalculatorSettings.from_dict({"name": "gpaw"}).gpaw
    assert gpaw.smearing_width(4000.0) == pytest.approx(units.kB * 4000.0)  # 0.345 eV
    assert gpaw.smearing_width(300.0) == 0.05 == gpaw.smearing_width(580.0)
    fixed = CalculatorSettings.from_dict({"gpaw": {"electronic_temperature": "fixed"}})
    assert fixed.gpaw.smearing_width(4000.0) is None
    with pytest.raises(UserError, match="electronic_temperature"):
        CalculatorSettings.from_dict({"gpaw": {"electronic_temperature": "hot"}})
    # VASP's per-step path: SIGMA set for the next step, the results kept
    monkeypatch.setenv("ASE_VASP_COMMAND", "vasp_std")
    settings = {"name": "vasp", "dispersion": None}
    calc = make_calculator(settings, directory=tmp_path)
    calc.results = {"energy": -1.0}
    assert set_electronic_temperature(calc, settings, 4000.0) == pytest.approx(0.3447)
    assert smearing_width_of(calc) == pytest.approx(0.3447) and calc.results == {"energy": -1.0}
    assert set_electronic_temperature(calc, settings, 300.0) == 0.05
    assert smearing_width_of(calc) == 0.05
    pair = {"name": "pair"}
    assert set_electronic_temperature(make_calculator(pair, directory=tmp_path), pair, 4000.0) \
        is None
