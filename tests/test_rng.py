"""kernels/rng: the standard-normal stream of the Langevin noise.

References are independent of the kernel: the normal distribution's exact moments, tail
probabilities (scipy.stats.norm) and a Kolmogorov-Smirnov test against it. The seeds are
fixed, so every statistic below is a fixed number, not a flaky draw; the bounds are 5
standard errors wide.
"""
import numpy as np
import pytest
from scipy import stats

from meltquench.kernels import rng as R

N = 10_000_000


@pytest.fixture(scope="module")
def sample():
    return R.standard_normal_fill(R.seed_state(2026), np.empty(N))


def test_moments_are_those_of_the_standard_normal(sample):
    se = 1 / np.sqrt(N)
    assert abs(sample.mean()) < 5 * se
    assert abs(sample.var() - 1) < 5 * np.sqrt(2) * se
    assert abs(stats.skew(sample)) < 5 * np.sqrt(6) * se
    assert abs(stats.kurtosis(sample)) < 5 * np.sqrt(24) * se


def test_distribution_passes_kolmogorov_smirnov(sample):
    assert stats.kstest(sample[:2_000_000], "norm").pvalue > 1e-3


@pytest.mark.parametrize("cut", [0.5, 1.0, 2.0, 3.0, R.ZIGGURAT_R, 4.5])
def test_tail_probabilities_match_the_normal_law(sample, cut):
    """Inside the layers, at the base layer's edge r and in the tail beyond it."""
    expected = N * 2 * stats.norm.sf(cut)
    observed = np.count_nonzero(np.abs(sample) > cut)
    assert abs(observed - expected) < 5 * np.sqrt(expected) + 1


def test_layers_have_equal_area_and_close_at_the_top():
    """The ziggurat's construction: r solves 'layer 1 closes at f = 1'."""
    assert R.ZIGGURAT_R == pytest.approx(4.0388498461, rel=1e-9)
    assert R._F[0] == 1.0 and np.all(np.diff(R._F[1:]) < 0)  # x_i increases with i
    # the accept fraction of the fast path, averaged over layers, is above 99.6 %
    assert (R._K[2:] / 2.0 ** 52).mean() > 0.996


def test_same_state_same_numbers_in_any_pieces():
    """Drawing n numbers at once or in pieces of any size gives the same numbers and the
    same final state (one main-stream word per number, slow-stream words in order)."""
    whole = R.standard_normal_fill(R.seed_state(5), np.empty(20_000))
    state = R.seed_state(5)
    parts = [R.standard_normal_fill(state, np.empty(k)) for k in (1, 7, 511, 513, 1024, 17944)]
    assert np.array_equal(np.concatenate(parts), whole)
    end = R.seed_state(5)
    R.standard_normal_fill(end, np.empty(20_000))
    assert np.array_equal(state, end)


def test_state_copy_replays_the_stream_and_seeds_differ():
    state = R.seed_state(11)
    R.standard_normal_fill(state, np.empty(100))
    saved = state.copy()
    a = R.standard_normal_fill(state, np.empty((50, 3)))
    b = R.standard_normal_fill(saved, np.empty((50, 3)))
    assert np.array_equal(a, b)
    c = R.standard_normal_fill(R.seed_state(12), np.empty(150))
    d = R.standard_normal_fill(R.seed_state(2 ** 100 + 11), np.empty(150))
    assert not np.array_equal(c, d) and not np.array_equal(c[:150], a.ravel())
