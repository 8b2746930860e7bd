"""Dispersion only where the method lacks it: one rule (calculator.dispersion: auto) for every
engine, through the engine's own calculator stack and command line."""
import os
import subprocess
import sys

import pytest
from ase.calculators.mixing import SumCalculator

from meltquench.calculators import (FITTED_WITHOUT, HAS_DISPERSION, LACKS_DISPERSION, NAMES,
                                    CalculatorSettings, PairPotential, describe,
                                    dispersion_rule, inner_calculators, make_calculator)
from meltquench.cli import main
from meltquench.config import load_config
from meltquench.errors import UserError


def mq(*args):
    return subprocess.run([sys.executable, "-m", "meltquench.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def kinds(calc):
    """The class names of ``calc`` and the calculators inside it."""
    return [type(c).__name__ for c in inner_calculators(calc)]


def test_every_engine_is_in_exactly_one_dispersion_table():
    tables = (LACKS_DISPERSION, HAS_DISPERSION, FITTED_WITHOUT)
    for name in NAMES:
        assert sum(name in table for table in tables) == 1, name
    assert set(NAMES) == set(LACKS_DISPERSION) | set(HAS_DISPERSION) | set(FITTED_WITHOUT)
    assert dispersion_rule("gpaw")[0] == dispersion_rule("vasp")[0] == "d3bj"
    assert dispersion_rule("tblite")[0] is None and dispersion_rule("pair")[0] is None
    # MPtrj-trained potentials learned PBE(+U) without dispersion, as the DFT they replace
    assert dispersion_rule("chgnet")[0] == dispersion_rule("sevennet")[0] == "d3bj"
    with pytest.raises(KeyError, match="add it to one"):
        dispersion_rule("mace")  # a new engine must say what it contains


def test_auto_is_the_default_and_resolves_from_the_calculator():
    assert CalculatorSettings.__dataclass_fields__["dispersion"].default == "auto"
    expected = {"gpaw": "d3bj", "vasp": "d3bj", "tblite": None, "pair": None}
    for name, value in expected.items():
        assert CalculatorSettings.from_dict({"name": name}).dispersion == value, name
        assert CalculatorSettings.from_dict({"name": name, "dispersion": "auto"}).dispersion \
            == value, name
        # null always means none
        assert CalculatorSettings.from_dict({"name": name, "dispersion": None}).dispersion is None


def test_pair_potential_gets_no_d3_by_default(tmp_path):
    calc = make_calculator({"name": "pair"}, directory=tmp_path)
    assert isinstance(calc, PairPotential) and kinds(calc) == ["PairPotential"]
    assert describe({"name": "pair"}) == "pair potential (no dispersion: fitted without it)"


def test_explicit_d3bj_on_the_pair_potential_is_allowed_and_said_to_change_the_model(tmp_path):
    calc = make_calculator({"name": "pair", "dispersion": "d3bj"}, directory=tmp_path)
    assert isinstance(calc, SumCalculator) and "D3" in kinds(calc)
    assert "not in its fit" in describe({"name": "pair", "dispersion": "d3bj"})
    assert "changes the fitted model" in FITTED_WITHOUT["pair"]


def test_tblite_gets_no_d3_by_default(tmp_path):
    pytest.importorskip("tblite")
    calc = make_calculator({"name": "tblite"}, directory=tmp_path)
    assert kinds(calc) == ["TBLite"]
    assert describe({"name": "tblite"}) == "tblite GFN1-xTB (contains D3 dispersion; none added)"
    assert "D4" in describe({"name": "tblite", "tblite": {"method": "GFN2-xTB"}})


def test_explicit_d3bj_on_tblite_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="GFN1-xTB already contains D3 dispersion; "
                                        "calculator.dispersion d3bj would count it twice"):
        make_calculator({"name": "tblite", "dispersion": "d3bj"}, directory=tmp_path)
    with pytest.raises(UserError, match="GFN2-xTB already contains D4 dispersion"):
        CalculatorSettings.from_dict({"name": "tblite", "dispersion": "d3bj",
                                      "tblite": {"method": "GFN2-xTB"}})
    proc = mq("config", "--show", "--set", "calculator.name=tblite",
              "--set", "calculator.dispersion=d3bj")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "GFN1-xTB already contains D3 dispersion" in lines[0], proc.stderr
    assert "auto or null" in lines[0]


def test_dft_engines_get_d3bj_by_default(tmp_path, monkeypatch, fake_potcars):
    gpaw = make_calculator({"dispersion": "auto"}, directory=tmp_path / "gpaw")
    assert isinstance(gpaw, SumCalculator) and "D3" in kinds(gpaw)
    monkeypatch.setenv("ASE_VASP_COMMAND", "vasp_std")
    vasp = make_calculator({"name": "vasp", "dispersion": "auto"}, directory=tmp_path / "vasp")
    # VASP adds D3(BJ) itself: IVDW = 12 in its INCAR, no dftd3 calculator on top
    assert kinds(vasp) == ["Vasp"] and vasp.int_params["ivdw"] == 12
    assert describe({"name": "vasp"}).endswith("D3(BJ) as IVDW 12")
    off = make_calculator({"name": "vasp", "dispersion": None}, directory=tmp_path / "off")
    assert off.int_params["ivdw"] is None


def test_unknown_dispersion_is_refused_with_a_suggestion():
    with pytest.raises(UserError, match="auto, d3bj or null.*did you mean 'd3bj'"):
        CalculatorSettings.from_dict({"dispersion": "d3"})


def test_resolved_value_shows_in_config_show_and_the_plan(capsys):
    assert main(["config", "--show", "--set", "calculator.name=tblite"]) == 0
    out = capsys.readouterr().out
    assert "dispersion: null" in out and "dispersion: auto" not in out
    assert main(["config", "--show"]) == 0
    assert "dispersion: d3bj" in capsys.readouterr().out
    assert main(["run", "--dry-run", "--set", "calculator.name=pair"]) == 0
    assert "calculator: pair potential (no dispersion: fitted without it)" in \
        capsys.readouterr().out
    assert main(["run", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "calculator: GPAW" in plan and "D3(BJ)" in plan


def test_python_settings_equal_the_cli_settings_for_every_engine():
    for name in NAMES:
        python = CalculatorSettings.from_dict({"name": name})
        cli = load_config(overrides=[f"calculator.name={name}"]).calculator
        assert python == cli, name
        assert python.dispersion == dispersion_rule(name)[0]
    # the resolved value reads back as itself (a run's config.yaml, a restart)
    again = CalculatorSettings.from_dict(CalculatorSettings.from_dict({"name": "tblite"}).to_dict())
    assert again.dispersion is None
