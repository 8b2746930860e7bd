"""The extended-Lagrangian (XL-BOMD) start of each SCF, on its own: the recurrence against
Niklasson et al. (J. Chem. Phys. 130, 214109, 2009) written out by hand, its fixed points, and
its state round trip. GPAW itself is not needed: a stand-in calculator hands out the
"converged" density matrices. The GPAW runs (restart bit for bit) are in test_gpaw_driver.py."""
import numpy as np
import pytest

from meltquench.calculators.extrapolation import XLBOMDExtrapolation


class StandIn:
    """What the extrapolation touches of a GPAW calculator: move_atoms, hooks, atoms."""

    def __init__(self, natoms=3):
        self.hooks = {}
        self.atoms = type("A", (), {})()
        self.atoms.positions = np.zeros((natoms, 3))
        self.moved = 0

    def move_atoms(self, atoms):
        self.moved += 1

    def log(self, text):
        pass


class Recorded(XLBOMDExtrapolation):
    """The extrapolation with GPAW's density matrices and orbitals replaced by a list."""

    def __init__(self, calc):
        super().__init__(calc)
        self.converged = None  # the next "converged" density matrices
        self.starts = []       # every start handed to the SCF

    def _wave_functions(self):
        return [object() for _ in self.converged]

    def _density_matrix(self, wfs):  # called in _wave_functions' order
        return self.converged[self._next()]

    def _next(self):
        self._i = (getattr(self, "_i", -1) + 1) % len(self.converged)
        return self._i

    def _set_start(self, wfs, rho):
        self.starts.append(rho.copy())


def drive(extrapolation, densities, dx=0.01):
    """Converge to ``densities[n]`` at step n (moving the atoms by ``dx`` Å between steps);
    return the starts the SCFs were given (steps 1, 2, ...)."""
    calc = extrapolation.calc
    for n, d in enumerate(densities):
        if n:
            calc.atoms.positions = calc.atoms.positions + dx
            extrapolation.move_atoms(calc.atoms)
        extrapolation.converged = [d]
        extrapolation.store()
    return extrapolation.starts


def by_hand(densities, kappa=1.82, alpha=0.018, c=(-6, 14, -8, -3, 4, -1)):
    """Niklasson's recurrence written out: P(0..5) = D(0), then
    P(n+1) = 2P(n) - P(n-1) + kappa (D(n) - P(n)) + alpha sum_k c_k P(n-k)."""
    P = {n: densities[0] for n in range(-5, 1)}
    for n in range(len(densities) - 1):
        P[n + 1] = (2 * P[n] - P[n - 1] + kappa * (densities[n] - P[n])
                    + alpha * sum(ck * P[n - k] for k, ck in enumerate(c)))
    return [P[n] for n in range(1, len(densities))]


def random_symmetric(rng, m=4):
    a = rng.normal(size=(m, m))
    return a + a.T


def test_the_starts_follow_niklassons_recurrence():
    rng = np.random.default_rng(3)
    densities = [random_symmetric(rng) for _ in range(12)]
    xl = Recorded(StandIn())
    starts = drive(xl, densities)
    expected = by_hand(densities)
    assert len(starts) == len(expected) == 11
    for got, want in zip(starts, expected):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-12)
    assert sum(XLBOMDExtrapolation.C) == 0  # a constant density is left alone
    assert xl.extrapolated == 11


def test_a_density_linear_in_time_is_tracked_exactly_once_the_history_is_linear():
    """For D(n) = A + n B with the history on that line, the start is D(n+1)'s own line:
    the Verlet part is exact for linear motion and the dissipation's c_k have sum k c_k = 0."""
    rng = np.random.default_rng(4)
    a, b = random_symmetric(rng), random_symmetric(rng)
    xl = Recorded(StandIn())
    drive(xl, [a])
    xl.aux = [[a + (n - 4) * b] for n in range(6)]  # P(-4) .. P(1) on the line
    xl.starts.clear()
    calc = xl.calc
    for n in range(1, 8):
        calc.atoms.positions = calc.atoms.positions + 0.01
        xl.move_atoms(calc.atoms)
        np.testing.assert_allclose(xl.starts[-1], a + n * b, atol=1e-11)
        xl.converged = [a + n * b]
        xl.store()


def test_a_jump_of_the_atoms_resets_the_history_to_the_next_converged_density():
    rng = np.random.default_rng(5)
    densities = [random_symmetric(rng) for _ in range(4)]
    xl = Recorded(StandIn())
    drive(xl, densities[:3])
    n_starts = len(xl.starts)
    xl.calc.atoms.positions = xl.calc.atoms.positions + 1.0  # > max_step 0.5 Å
    xl.move_atoms(xl.calc.atoms)
    assert len(xl.starts) == n_starts  # GPAW's own start, nothing handed over
    xl.converged = [densities[3]]
    xl.store()
    assert all(np.array_equal(p[0], densities[3]) for p in xl.aux)


def test_the_state_round_trip_continues_exactly():
    rng = np.random.default_rng(6)
    densities = [random_symmetric(rng) for _ in range(10)]
    whole = Recorded(StandIn())
    drive(whole, densities)

    first = Recorded(StandIn())
    drive(first, densities[:5])
    state = first.get_state()
    assert state["scheme"] == "xl" and len(state["aux"]) == 6
    second = Recorded(StandIn())
    second.calc.atoms.positions = first.calc.atoms.positions.copy()
    second.converged = [densities[4]]
    second.store()  # the restarted run's first SCF, at the checkpoint's positions
    assert second.set_state(state)
    second.starts.clear()
    calc = second.calc
    for d in densities[5:]:
        calc.atoms.positions = calc.atoms.positions + 0.01
        second.move_atoms(calc.atoms)
        second.converged = [d]
        second.store()
    for got, want in zip(second.starts, whole.starts[4:]):
        assert np.array_equal(got, want)
    assert len(second.starts) == 5


@pytest.mark.parametrize("value", [3, "XL", True, 1.5])
def test_other_extrapolation_values_are_refused_with_the_choices(value):
    from meltquench.calculators import GPAWSettings
    from meltquench.errors import UserError
    with pytest.raises(UserError, match="calculator.gpaw.extrapolation must be"):
        GPAWSettings(extrapolation=value)


def test_a_polynomial_history_restored_into_xl_starts_it_afresh_without_switching_off():
    """A checkpoint of a run with ``extrapolation: 2`` continued with ``xl`` has no auxiliary
    matrices: the next SCF takes GPAW's own start and the history begins again."""
    rng = np.random.default_rng(7)
    densities = [random_symmetric(rng) for _ in range(3)]
    xl = Recorded(StandIn())
    drive(xl, densities[:1])
    polynomial = {"order": 2, "extrapolated": 0, "positions": [np.zeros((3, 3))],
                  "rho": [[densities[0]]], "fermi_levels": None}
    assert xl.set_state(polynomial) and xl.aux == []
    xl.starts.clear()
    xl.calc.atoms.positions = xl.calc.atoms.positions + 0.01
    xl.move_atoms(xl.calc.atoms)
    assert xl.enabled and xl.starts == []
    xl.converged = [densities[1]]
    xl.store()
    assert len(xl.aux) == 6 and np.array_equal(xl.aux[-1][0], densities[1])
