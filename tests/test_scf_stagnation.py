"""meltquench.calculators.stagnation: a GPAW SCF whose density error stops falling is given up.

The rule on plain lists, then on GPAW's own SCF loop (the 10-atom V2O3 cell, LCAO sz(dzp)): a
criterion that cannot be met raises SCFStagnation after exactly ``iterations + 1`` iterations,
the engine counts it as an SCF failure, and ``make_gpaw`` puts the criterion in from the config.
"""
import re

import pytest

from meltquench.errors import UserError


def test_the_rule():
    from meltquench.calculators.stagnation import stagnated
    falling = [1e-1 / 2 ** k for k in range(40)]
    assert not any(stagnated(falling[:n], 5, 2.0) for n in range(len(falling) + 1))
    flat = [1e-2, 5e-3, 4e-3] + [3.9e-3] * 5
    assert [stagnated(flat[:n], 5, 2.0) for n in range(5, 9)] == [False, False, True, True]
    # a plateau that then breaks through (as GPAW's Pulay does in hot V2O3) is left alone
    plateau = [1e-2, 1e-3] + [9e-4] * 4 + [4e-4, 1e-4]
    assert not any(stagnated(plateau[:n], 5, 2.0) for n in range(len(plateau) + 1))
    assert not stagnated(flat, 0, 2.0)  # 0: off


def test_setting_is_checked():
    from meltquench.calculators import GPAWSettings
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(UserError, match="scf_stagnation"):
            GPAWSettings.from_dict({"scf_stagnation": bad})
    assert GPAWSettings().scf_stagnation == 25


@pytest.mark.filterwarnings("ignore:Custom convergence criterion")  # the direct GPAW call's
def test_gpaw_scf_is_given_up_and_counts_as_an_scf_failure(tmp_path):
    pytest.importorskip("gpaw")
    from gpaw import GPAW
    from meltquench.calculators import gpaw_parameters, is_scf_failure, make_gpaw
    from meltquench.calculators.stagnation import SCFStagnation, Stagnation
    from meltquench.structures import v2o3_rhombohedral
    atoms = v2o3_rhombohedral()
    kw = gpaw_parameters({"basis": "sz(dzp)", "h": 0.25, "hubbard_u": None})
    kw["convergence"] = {"density": 1e-12, "custom": [Stagnation(3, factor=1e9)]}
    atoms.calc = GPAW(**kw, txt=str(tmp_path / "gpaw.txt"))
    with pytest.raises(SCFStagnation, match="after 5 iterations") as error:
        atoms.get_potential_energy()
    assert is_scf_failure(error.value)
    iterations = re.findall(r"\|iter:\s+(\d+)\|", (tmp_path / "gpaw.txt").read_text())
    # the first iteration has no density error yet; the 5th (the 4th error) is judged and
    # raises before GPAW logs it
    assert int(iterations[-1]) == 4
    # from the config: the engine's calculator carries the criterion, GPAW prints it (and
    # GPAW's warning about it is silenced: meltquench writes no .gpw files)
    atoms.calc = make_gpaw({"basis": "sz(dzp)", "h": 0.25, "scf_stagnation": 7},
                           directory=tmp_path / "c")
    atoms.get_potential_energy()
    import warnings
    assert any(action == "ignore" and message and message.match(
        "Custom convergence criterion stagnation encountered. Please be sure")
        for action, message, *_ in warnings.filters)
    text = (tmp_path / "c" / "gpaw.txt").read_text()
    assert "given up when its density error has not fallen below 1/2 of its best in 7" in text
    atoms.calc = make_gpaw({"basis": "sz(dzp)", "h": 0.25, "scf_stagnation": 0},
                           directory=tmp_path / "d")
    atoms.get_potential_energy()
    assert "given up" not in (tmp_path / "d" / "gpaw.txt").read_text()
