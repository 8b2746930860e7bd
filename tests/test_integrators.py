"""Kernel-level tests of kernels/integrators against analytic results.

Every reference here is independent of the kernels: exact solutions of the harmonic
oscillator under velocity Verlet, the exact flow of the Nose-Hoover-chain equations (scipy's
ODE solver), the stationary covariance of BAOAB on a harmonic oscillator (a discrete Lyapunov
equation), the CSVR and Berendsen formulas, ASE's Suzuki-Yoshida weights and numpy's own
normal generator.
"""
import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import solve_discrete_lyapunov

from meltquench.kernels import integrators as K


def _system(n=50, nfixed=10, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 3)) * 3
    p = rng.normal(size=(n, 3))
    f = rng.normal(size=(n, 3))
    m = rng.uniform(1.0, 100.0, n)
    fixed = np.sort(rng.choice(n, nfixed, replace=False)).astype(np.int64)
    invm = 1.0 / m
    invm[fixed] = 0.0
    p[fixed] = 0.0
    return q, p, f, m, K.per_coordinate(invm), fixed


def test_sy_weights_sum_to_one_and_order_4_is_ase_s():
    from ase.md.nose_hoover_chain import FOURTH_ORDER_COEFFS
    for order, n in ((2, 1), (4, 3), (6, 7)):
        w = K.sy_weights(order)
        assert w.size == n and w.sum() == pytest.approx(1.0, abs=1e-14)
        assert np.allclose(w, w[::-1], rtol=0, atol=1e-15)  # symmetric: time reversible
    assert np.allclose(K.sy_weights(4), FOURTH_ORDER_COEFFS, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="2, 4 or 6"):
        K.sy_weights(3)


def _nhc_exact(kin2, p_eta, Q, nf, kT, delta):
    """Exact flow of the thermostat part of the NHC equations (positions fixed)."""
    M = len(p_eta)

    def rhs(t, y):
        lns, pe = y[0], y[1 + M:]
        d = np.zeros_like(y)
        d[0] = -pe[0] / Q[0]
        d[1:1 + M] = pe / Q
        g = np.empty(M)
        g[0] = kin2 * math.exp(2 * lns) - nf * kT
        g[1:] = pe[:-1] ** 2 / Q[:-1] - kT
        d[1 + M:] = g
        d[1 + M:-1] -= pe[:-1] * pe[1:] / Q[1:]
        return d

    y0 = np.concatenate([[0.0], np.zeros(M), p_eta])
    y = solve_ivp(rhs, (0, delta), y0, method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
    return math.exp(y[0]), y[1:1 + M], y[1 + M:]


@pytest.mark.parametrize("order", [2, 4, 6])
def test_nhc_propagate_converges_to_exact_flow_at_its_order(order):
    nf, kT = 30.0, 1.0
    Q = np.array([nf * kT, kT, kT])
    kin2, p_eta0, delta = 36.0, np.array([1.5, -0.8, 0.6]), 0.5
    s_ex, eta_ex, p_eta_ex = _nhc_exact(kin2, p_eta0, Q, nf, kT, delta)
    errs = []
    for nloop in (2, 4, 8):
        p_eta, eta = p_eta0.copy(), np.zeros(3)
        s = K.nhc_propagate(kin2, p_eta, eta, Q, nf, kT, delta, K.sy_weights(order), nloop)
        errs.append(max(abs(s - s_ex), np.abs(eta - eta_ex).max(),
                        np.abs(p_eta - p_eta_ex).max()))
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(rates - order) < 0.3), (errs, rates)
    assert errs[-1] < {2: 3e-3, 4: 1e-5, 6: 1e-7}[order]


def test_nhc_energy_formula():
    p_eta, eta, Q = np.array([0.3, -0.2]), np.array([0.1, 0.4]), np.array([5.0, 2.0])
    e = K.nhc_energy(p_eta, eta, Q, 12.0, 0.025)
    assert e == pytest.approx(12 * 0.025 * 0.1 + 0.025 * 0.4 + 0.09 / 10 + 0.04 / 4, abs=1e-15)


def test_verlet_follows_the_exact_discrete_harmonic_solution():
    """Velocity Verlet positions on x'' = -w^2 x obey q_{n+1} - 2 q_n + q_{n-1} = -(w h)^2 q_n,
    solved exactly by C cos(n theta) + D sin(n theta), cos(theta) = 1 - (w h)^2 / 2."""
    n = 40
    rng = np.random.default_rng(1)
    m = rng.uniform(1, 60, n)
    k = m * rng.uniform(0.2, 1.5, n) ** 2  # w h from 0.2 to 1.5 (stable below 2), h = 1
    h = 1.0
    q = rng.normal(size=(n, 3))
    p = rng.normal(size=(n, 3)) * np.sqrt(m)[:, None]
    q0 = q.copy()
    invm, fixed, q_ref = K.per_coordinate(1.0 / m), np.zeros(0, dtype=np.int64), q.copy()
    f = -k[:, None] * q
    traj = [q.copy()]
    for _ in range(500):
        K.verlet_first_half(q, p, f, invm, fixed, q_ref, h)
        assert np.array_equal(q_ref, q)
        f = -k[:, None] * q
        K.verlet_second_half(p, f, fixed, h)
        traj.append(q.copy())
    traj = np.array(traj)
    theta = np.arccos(1 - (np.sqrt(k / m) * h) ** 2 / 2)[:, None]
    D = (traj[1] - q0 * np.cos(theta)) / np.sin(theta)
    steps = np.arange(len(traj))[:, None, None]
    exact = q0 * np.cos(steps * theta) + D * np.sin(steps * theta)
    assert np.abs(traj - exact).max() < 1e-9


def test_baoab_samples_the_analytic_stationary_distribution_of_harmonic_oscillators():
    """BAOAB on harmonic oscillators: <q^2> = kT / k exactly at any stable step (Leimkuhler and
    Matthews 2013), <p^2> from the discrete Lyapunov equation of the linear BAOAB map."""
    n, h, gamma, kT = 3000, 1.0, 0.5, 0.7
    rng = np.random.default_rng(2)
    m = rng.choice([1.0, 16.0, 63.5], n)
    wh = rng.choice([0.3, 0.8, 1.4], n)
    k = m * (wh / h) ** 2
    c1 = math.exp(-gamma * h)
    c2 = math.sqrt(1 - c1 * c1)
    expect_p = np.empty(n)
    for i in range(n):  # stationary covariance of z -> A z + b xi
        B = np.array([[1.0, 0.0], [-h / 2 * k[i], 1.0]])
        A_ = np.array([[1.0, h / 2 / m[i]], [0.0, 1.0]])
        O = np.diag([1.0, c1])
        A = B @ A_ @ O @ A_ @ B
        b = B @ A_ @ np.array([0.0, c2 * math.sqrt(m[i] * kT)])
        S = solve_discrete_lyapunov(A, np.outer(b, b))
        assert S[0, 0] == pytest.approx(kT / k[i], rel=1e-10)  # BAOAB's exact configurations
        expect_p[i] = S[1, 1]
    q, p = np.zeros((n, 3)), np.zeros((n, 3))
    invm, sqrtm = K.per_coordinate(1.0 / m), K.per_coordinate(np.sqrt(m))
    fixed = np.zeros(0, dtype=np.int64)
    q_ref, noise = q.copy(), np.empty((n, 3))
    f = -k[:, None] * q
    zq, zp = 0.0, 0.0
    nsample = 600
    for step in range(200 + nsample):
        rng.standard_normal(out=noise)
        K.baoab_first_half(q, p, f, invm, sqrtm, fixed, q_ref, h, c1, c2, kT, noise)
        f = -k[:, None] * q
        K.verlet_second_half(p, f, fixed, h)
        if step >= 200:
            zq += np.mean(q ** 2 * (k / kT)[:, None])
            zp += np.mean(p ** 2 / expect_p[:, None])
    assert zq / nsample == pytest.approx(1.0, abs=0.005)
    assert zp / nsample == pytest.approx(1.0, abs=0.005)


@pytest.mark.parametrize("exp_term", [0.0, 0.3, 0.9])
def test_csvr_alpha_gives_the_exact_kinetic_energy_distribution(exp_term):
    """E[K'] = e K + (1 - e) K_target for any e = exp(-dt/tau); with e = 0 K' is drawn from
    the canonical (gamma) distribution: mean ndof kT / 2, variance ndof (kT)^2 / 2."""
    ndof, kT, kin = 30, 0.05, 0.4
    target = 0.5 * ndof * kT
    rng = np.random.default_rng(3)
    n = 200_000
    r1 = rng.standard_normal(n)
    chi2 = 2.0 * rng.standard_gamma(0.5 * (ndof - 1), n)
    k2 = np.array([K.csvr_alpha(kin, target, ndof, exp_term, a, b) ** 2 * kin
                   for a, b in zip(r1, chi2)])
    mean = exp_term * kin + (1 - exp_term) * target
    assert abs(k2.mean() - mean) < 4 * k2.std() / math.sqrt(n)
    if exp_term == 0.0:
        assert k2.var() == pytest.approx(0.5 * ndof * kT ** 2, rel=0.02)
    assert K.csvr_alpha(kin, target, ndof, 1.0, 0.3, 20.0) == 1.0
    assert K.csvr_alpha(0.0, target, ndof, exp_term, 0.3, 20.0) == 1.0


def test_berendsen_lambda():
    assert K.berendsen_lambda(300.0, 600.0, 0.1, 0.9, 1.1) == pytest.approx(math.sqrt(1.1))
    assert K.berendsen_lambda(300.0, 3000.0, 0.5, 0.9, 1.1) == 1.1  # clipped
    assert K.berendsen_lambda(3000.0, 300.0, 0.5, 0.9, 1.1) == 0.9
    assert K.berendsen_lambda(0.0, 300.0, 0.5, 0.9, 1.1) == 1.0


def test_fill_standard_normal_draws_numpy_s_numbers():
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    out = np.empty((1000, 3))
    K.fill_standard_normal(a, out)
    assert np.array_equal(out, b.standard_normal((1000, 3)))
    assert a.bit_generator.state == b.bit_generator.state


def test_kinetic_energy_and_mobile_kinetic_energy():
    q, p, f, m, invm, fixed = _system()
    mobile = np.setdiff1d(np.arange(len(m)), fixed)
    ref = 0.5 * np.sum(p[mobile] ** 2 / m[mobile, None])
    assert K.kinetic_energy(p, invm) == pytest.approx(ref, rel=1e-14)
    p[fixed] = 5.0  # garbage on fixed rows is ignored and cleared
    assert K.mobile_kinetic_energy(p, invm, fixed) == pytest.approx(ref, rel=1e-14)
    assert np.all(p[fixed] == 0)


def test_fixed_atoms_never_move_and_keep_zero_momenta():
    q, p, f, m, invm, fixed = _system()
    f[fixed] = 3.0  # forces on fixed atoms (ASE does not zero them for md=True) do nothing
    q0 = q.copy()
    q_ref = q.copy()
    nmob = len(m) - len(fixed)
    rng = np.random.default_rng(4)
    p_eta, eta, Q = np.zeros(3), np.zeros(3), np.array([10.0, 1.0, 1.0])
    for step in range(20):
        kin = K.mobile_kinetic_energy(p, invm, fixed)
        s = K.nhc_propagate(2 * kin, p_eta, eta, Q, 3.0 * nmob, 0.02, 0.05, K.sy_weights(4), 1)
        K.scale_kick_drift(q, p, f, invm, s, 0.05, 0.1, q_ref)
        K.kick(p, f, fixed, 0.05)
        K.scale_rows(p, K.nhc_propagate(2 * K.kinetic_energy(p, invm), p_eta, eta, Q,
                                        3.0 * nmob, 0.02, 0.05, K.sy_weights(4), 1))
        K.baoab_first_half(q, p, f, invm, K.per_coordinate(np.sqrt(m)), fixed, q_ref, 0.1,
                           0.9, 0.43, 0.02, rng.standard_normal((nmob, 3)))
        K.verlet_second_half(p, f, fixed, 0.1)
        assert np.array_equal(q[fixed], q0[fixed]) and np.all(p[fixed] == 0.0)
    mobile = np.setdiff1d(np.arange(len(m)), fixed)
    assert np.all(q[mobile] != q0[mobile])


def test_centre_of_mass_helpers():
    n = 200
    rng = np.random.default_rng(5)
    m = rng.uniform(1, 100, n)
    mobile = np.arange(n, dtype=np.int64)
    f = rng.normal(size=(n, 3))
    net = f.sum(axis=0)
    assert np.allclose(K.remove_net_force(f, m, mobile), net)
    assert np.abs(f.sum(axis=0)).max() < 1e-12
    p = rng.normal(size=(n, 3))
    K.remove_com_momentum(p, m, mobile)
    assert np.abs(p.sum(axis=0)).max() < 1e-12
    # projected noise: zero net momentum kick, and 3N - 3 unit-variance directions left
    total = 0.0
    for _ in range(200):
        noise = rng.standard_normal((n, 3))
        K.project_noise_com(noise, m, mobile)
        assert np.abs((np.sqrt(m)[:, None] * noise).sum(axis=0)).max() < 1e-10
        total += np.sum(noise ** 2)
    assert total / 200 == pytest.approx(3 * n - 3, rel=0.01)


@pytest.mark.parametrize("nfixed", [0, 10])
def test_baoab_first_half_equals_a_numpy_transcription(nfixed):
    """Both code paths (all atoms mobile: flat blocks; some fixed: row by row) against the
    BAOA formulas written out in numpy: bit-identical positions and momenta."""
    q, p, f, m, invm, fixed = _system(n=3000 + 7, nfixed=nfixed, seed=3)
    mobile = np.setdiff1d(np.arange(len(m)), fixed)
    dt, c1, c2, kT = 0.7, 0.93, math.sqrt(1 - 0.93 ** 2), 0.025
    noise = np.random.default_rng(4).standard_normal((mobile.size, 3))
    w = invm[mobile]
    h = 0.5 * dt * w
    p0 = p[mobile] + 0.5 * dt * f[mobile]
    n0 = c1 * p0 + (c2 * math.sqrt(kT) * np.sqrt(m[mobile])[:, None]) * noise
    q_expect, p_expect = q.copy(), p.copy()
    p_expect[mobile] = n0
    q_expect[mobile] = (q[mobile] + h * p0) + h * n0
    work = 0.5 * np.sum((n0 ** 2 - p0 ** 2) * w)
    q_ref = q.copy()
    got = K.baoab_first_half(q, p, f, invm, K.per_coordinate(np.sqrt(m)), fixed, q_ref, dt, c1,
                             c2, kT, noise)
    assert np.array_equal(q, q_expect) and np.array_equal(p, p_expect)
    assert np.array_equal(q_ref, q)
    assert got == pytest.approx(work, rel=1e-12, abs=1e-12)


def test_kernels_refuse_per_atom_inverse_masses():
    """invm must be (N, 3) (per_coordinate): a flat loop over an (N,) array would read past it."""
    q, p, f, m, invm, fixed = _system()
    with pytest.raises(ValueError, match="shape"):
        K.verlet_first_half(q, p, f, invm[:, 0].copy(), fixed, q.copy(), 0.1)
    with pytest.raises(ValueError, match="shape"):
        K.kinetic_energy(p, invm[:, 0].copy())

