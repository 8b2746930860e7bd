"""Numba kernels for molecular-dynamics integrators: plain functions over arrays.

Velocity-Verlet half steps, the Nose-Hoover chain (Martyna-Tuckerman-Klein equations with a
Suzuki-Yoshida factorisation), stochastic velocity rescaling (CSVR, Bussi), BAOAB Langevin and
Berendsen rescaling. Nothing here knows about ASE; :mod:`meltquench.dynamics` composes these
into ASE ``MolecularDynamics`` classes.

Units are ASE's (Å, eV, amu, ASE time units); ``kT`` is in eV. Array conventions:

``q, p, f``
    (N, 3) float64 C-contiguous positions, momenta and forces; ``q`` and ``p`` change in place.
``invm``
    (N, 3) float64 inverse masses, each row the atom's 1/m three times (:func:`per_coordinate`),
    **zero for fixed atoms**: the loops run over all 3 N numbers as one flat array (so they
    vectorise), and a zero inverse mass keeps a fixed atom exactly where it is and out of
    every kinetic-energy sum.
``fixed``
    int64 indices of the fixed atoms: their momenta are set to exactly zero at the start and
    at the end of every step, whatever forces act on them (between the two halves of a step
    they may hold a kick, which moves nothing since their ``invm`` is zero).
``mobile``
    int64 indices of the mobile atoms (for the centre-of-mass helpers).
``q_ref``
    (N, 3) float64: the kernels that move the atoms also write the new positions here, the
    positions the next force call is made at (the caller compares them with ``q`` to know
    whether its forces still belong to the atoms; writing them in the same pass is cheaper
    than a copy).

A step is a first half (thermostat, half kick, drift; everything before the force call), the
force call, then a second half (half kick, thermostat). Thermostats that rescale momenta
(NHC, CSVR, Berendsen) take the kinetic energy from :func:`mobile_kinetic_energy` and return
a factor that :func:`scale_kick_drift` or :func:`scale_rows` applies; the Langevin O step is
fused into :func:`baoab_first_half`. Every kernel is deterministic (no fastmath), so a restart
or another MPI rank reproduces a trajectory bit for bit. Sums that feed the trajectory
(kinetic energies for the thermostats) use four interleaved partial sums in a fixed order:
fast, and the same everywhere. The one exception is the BAOAB O-step's energy account, summed
with reassociation so that it vectorises: it only goes into the thermostat's energy account
(a logged diagnostic), never into positions or momenta.

Speed: the loops run over the 3 N numbers of each array as one flat vector (hence ``invm`` per
coordinate), so numba/LLVM vectorises them; see ``benchmarks/bench_integrators.py``.
"""
import math

import numpy as np
from numba import njit

_Y4 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_Y6 = (0.784513610477560, 0.235573213359357, -1.17767998417887)  # Yoshida 1990, solution A
SY_WEIGHTS = {
    2: np.array([1.0]),
    4: np.array([_Y4, -(2.0 ** (1.0 / 3.0)) * _Y4, _Y4]),
    6: np.array([_Y6[0], _Y6[1], _Y6[2], 1.0 - 2.0 * sum(_Y6), _Y6[2], _Y6[1], _Y6[0]]),
}
"""Suzuki-Yoshida weights by order of accuracy (2: one weight, 4: three, 6: seven).

H. Yoshida, Phys. Lett. A 150, 262 (1990); the fourth-order set is the one ASE's
``NoseHooverChainNVT`` uses.
"""


def sy_weights(order):
    """Suzuki-Yoshida weights (a new float64 array) for order 2, 4 or 6."""
    try:
        return SY_WEIGHTS[int(order)].copy()
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"Suzuki-Yoshida order must be 2, 4 or 6 (1, 3 or 7 weights), "
                         f"got {order!r}") from None


# ---------------------------------------------------------------- building blocks

def per_coordinate(invm):
    """(N, 3) C-contiguous copy of the per-atom values ``invm`` (N,), one per coordinate."""
    invm = np.asarray(invm, dtype=np.float64)
    return np.ascontiguousarray(np.repeat(invm[:, None], 3, axis=1))


@njit(cache=True)
def _check_shapes(a, b):
    if a.shape != b.shape:
        raise ValueError("kernel arrays must all have the shape (N, 3) of the positions")


@njit(cache=True)
def _weighted_square_sum(a, w):
    """sum a^2 w over flat arrays, with four interleaved partial sums (a fixed order, so the
    result is the same on every run and rank, but not a serial chain of additions)."""
    n = a.size
    m = n - n % 4
    s0 = s1 = s2 = s3 = 0.0
    for k in range(0, m, 4):
        s0 += a[k] * a[k] * w[k]
        s1 += a[k + 1] * a[k + 1] * w[k + 1]
        s2 += a[k + 2] * a[k + 2] * w[k + 2]
        s3 += a[k + 3] * a[k + 3] * w[k + 3]
    for k in range(m, n):
        s0 += a[k] * a[k] * w[k]
    return (s0 + s1) + (s2 + s3)


@njit(cache=True)
def positions_equal(q, q_ref):
    """True if ``q`` and ``q_ref`` are equal element by element (bitwise for finite values)."""
    a = q.ravel()
    b = q_ref.ravel()
    if a.size != b.size:
        return False
    differ = False
    for i in range(a.size):
        differ |= a[i] != b[i]
    return not differ


@njit(cache=True)
def zero_rows(a, rows):
    """Set ``a[rows] = 0`` for an (N, 3) array."""
    for j in range(rows.size):
        i = rows[j]
        a[i, 0] = 0.0
        a[i, 1] = 0.0
        a[i, 2] = 0.0


@njit(cache=True)
def kinetic_energy(p, invm):
    """Kinetic energy (eV): sum p^2 invm / 2 (fixed atoms, invm = 0, count nothing)."""
    _check_shapes(p, invm)
    return 0.5 * _weighted_square_sum(p.ravel(), invm.ravel())


@njit(cache=True)
def mobile_kinetic_energy(p, invm, fixed):
    """Set the fixed atoms' momenta to zero, then return the kinetic energy (eV)."""
    zero_rows(p, fixed)
    return kinetic_energy(p, invm)


@njit(cache=True)
def scale_kick_drift(q, p, f, invm, scale, dt_kick, dt_drift, q_ref):
    """p <- scale p + dt_kick f; q <- q + dt_drift invm p; q_ref <- q (all 3 N numbers)."""
    _check_shapes(q, p)
    _check_shapes(q, f)
    _check_shapes(q, invm)
    _check_shapes(q, q_ref)
    a, b, c, w, r = q.ravel(), p.ravel(), f.ravel(), invm.ravel(), q_ref.ravel()
    for k in range(a.size):
        pk = scale * b[k] + dt_kick * c[k]
        b[k] = pk
        qk = a[k] + (dt_drift * w[k]) * pk
        a[k] = qk
        r[k] = qk


@njit(cache=True)
def kick(p, f, fixed, dt_kick):
    """p <- p + dt_kick f, then zero the fixed rows."""
    _check_shapes(p, f)
    b, c = p.ravel(), f.ravel()
    for k in range(b.size):
        b[k] += dt_kick * c[k]
    zero_rows(p, fixed)


@njit(cache=True)
def scale_rows(p, scale):
    """p <- scale p (all rows; fixed rows are zero and stay zero)."""
    a = p.ravel()
    for i in range(a.size):
        a[i] *= scale


@njit(cache=True)
def remove_net_force(f, m, mobile):
    """Subtract m_i F / M from each mobile row, F the net force on them and M their mass.

    Afterwards the forces change no total momentum. Returns the net force removed (eV/Å)."""
    fs = np.zeros(3)
    msum = 0.0
    for j in range(mobile.size):
        i = mobile[j]
        msum += m[i]
        for k in range(3):
            fs[k] += f[i, k]
    for j in range(mobile.size):
        i = mobile[j]
        w = m[i] / msum
        for k in range(3):
            f[i, k] -= w * fs[k]
    return fs


@njit(cache=True)
def remove_com_momentum(p, m, mobile):
    """Subtract m_i P / M from each mobile row (P their total momentum); returns P."""
    return remove_net_force(p, m, mobile)


@njit(cache=True)
def project_noise_com(noise, m, mobile):
    """Remove from mass-weighted Gaussian noise the part that would move the centre of mass.

    ``noise[j]`` is the standard-normal vector of atom ``mobile[j]``; the momentum kick is
    ``sqrt(m) * noise``. In mass-weighted coordinates the centre-of-mass direction is the unit
    vector ``sqrt(m_i / M)``; projecting it out of an isotropic Gaussian leaves an isotropic
    Gaussian in the 3N - 3 other directions, so the kicks sum to zero momentum exactly.
    """
    s = np.zeros(3)
    msum = 0.0
    for j in range(mobile.size):
        i = mobile[j]
        msum += m[i]
        sm = math.sqrt(m[i])
        for k in range(3):
            s[k] += sm * noise[j, k]
    for j in range(mobile.size):
        i = mobile[j]
        w = math.sqrt(m[i]) / msum
        for k in range(3):
            noise[j, k] -= w * s[k]


@njit(cache=True)
def fill_standard_normal(rng, out):
    """Fill ``out`` with standard-normal numbers from the numpy Generator ``rng``.

    Draws the same numbers, in the same order, as ``rng.standard_normal(out=out)`` and
    advances ``rng`` the same way, about three times faster for large arrays (slower below
    about a thousand numbers because of the call overhead).
    """
    o = out.ravel()
    for i in range(o.size):
        o[i] = rng.standard_normal()


# ---------------------------------------------------------------- Nose-Hoover chain

@njit(cache=True)
def _nhc_update_p_eta(j, p_eta, Q, kin2, nf, kT, d2, d4):
    last = p_eta.size - 1
    if j < last:
        p_eta[j] *= math.exp(-d4 * p_eta[j + 1] / Q[j + 1])
    if j == 0:
        g = kin2 - nf * kT
    else:
        g = p_eta[j - 1] * p_eta[j - 1] / Q[j - 1] - kT
    p_eta[j] += d2 * g
    if j < last:
        p_eta[j] *= math.exp(-d4 * p_eta[j + 1] / Q[j + 1])


@njit(cache=True)
def nhc_propagate(kin2, p_eta, eta, Q, nf, kT, delta, weights, nloop):
    """Propagate the chain by ``delta`` (exp(iL_NHC delta)); return the momentum scale factor.

    ``kin2`` is sum p^2/m of the thermostatted atoms before; ``p_eta``, ``eta`` (length M) are
    updated in place; ``Q`` are the chain masses (eV (ASE time)^2), ``nf`` the number of
    thermostatted degrees of freedom. The operator is split into ``nloop`` x len(weights)
    Suzuki-Yoshida sub-steps, each the Tuckerman et al. (2006) sequence: chain momenta from the
    end of the chain inwards, chain positions, particle momenta, chain momenta outwards.
    The caller scales the particle momenta by the returned factor once.
    """
    M = p_eta.size
    scale = 1.0
    for _ in range(nloop):
        for w in weights:
            d = w * delta / nloop
            d2 = d / 2
            d4 = d / 4
            for jj in range(M):
                _nhc_update_p_eta(M - 1 - jj, p_eta, Q, kin2, nf, kT, d2, d4)
            for j in range(M):
                eta[j] += d * p_eta[j] / Q[j]
            s = math.exp(-d * p_eta[0] / Q[0])
            scale *= s
            kin2 *= s * s
            for j in range(M):
                _nhc_update_p_eta(j, p_eta, Q, kin2, nf, kT, d2, d4)
    return scale


@njit(cache=True)
def nhc_energy(p_eta, eta, Q, nf, kT):
    """Energy of the chain (eV): nf kT eta_1 + kT sum_{j>1} eta_j + sum p_eta^2 / 2Q."""
    e = nf * kT * eta[0]
    for j in range(1, eta.size):
        e += kT * eta[j]
    for j in range(p_eta.size):
        e += 0.5 * p_eta[j] * p_eta[j] / Q[j]
    return e


# ---------------------------------------------------------------- half steps

@njit(cache=True)
def verlet_first_half(q, p, f, invm, fixed, q_ref, dt):
    """Velocity Verlet before the force call: half kick, full drift (``q_ref`` <- new q)."""
    zero_rows(p, fixed)
    scale_kick_drift(q, p, f, invm, 1.0, 0.5 * dt, dt, q_ref)


@njit(cache=True)
def verlet_second_half(p, f, fixed, dt):
    """Velocity Verlet after the force call: half kick (also the end of CSVR, BAOAB and
    Berendsen steps, whose thermostat acts before the force call)."""
    kick(p, f, fixed, 0.5 * dt)


@njit(cache=True)
def csvr_alpha(kin, kin_target, ndof, exp_term, r1, chi2):
    """Bussi-Donadio-Parrinello rescaling factor, Eq. (A7) of J. Chem. Phys. 126, 014101.

    ``kin``: kinetic energy now; ``kin_target`` = ndof kT / 2; ``exp_term`` = exp(-dt/tau);
    ``r1`` a standard normal number; ``chi2`` a chi-square number with ndof - 1 degrees of
    freedom. Zero kinetic energy cannot be rescaled: the factor is then 1."""
    if kin <= 0.0:
        return 1.0
    c = (1.0 - exp_term) * kin_target / kin / ndof
    a2 = exp_term + c * (chi2 + r1 * r1) + 2.0 * r1 * math.sqrt(exp_term * c)
    return math.sqrt(max(a2, 0.0))


@njit(cache=True)
def berendsen_lambda(temperature, target, dt_over_tau, smin, smax):
    """Berendsen scale factor sqrt(1 + dt/tau (T0/T - 1)) clipped to [smin, smax] (T in K)."""
    if temperature <= 0.0:
        return 1.0
    l2 = 1.0 + (target / temperature - 1.0) * dt_over_tau
    if l2 <= 0.0:
        return smin
    return min(max(math.sqrt(l2), smin), smax)


@njit(cache=True)
def baoab_first_half(q, p, f, invm, sqrtm, fixed, q_ref, dt, c1, c2, kT, noise):
    """BAOAB Langevin before the force call (Leimkuhler and Matthews 2013).

    B: p += dt/2 f; A: q += dt/2 p/m; O: p = c1 p + c2 sqrt(m kT) R; A: q += dt/2 p/m, with
    c1 = exp(-gamma dt), c2 = sqrt(1 - c1^2), ``sqrtm`` = sqrt(m) per coordinate (N, 3) and
    R = ``noise[j]``, the standard-normal row of the j-th mobile atom (``invm > 0``) in index
    order; ``q_ref`` <- new q. Returns the kinetic energy the O step added (eV).
    """
    _check_shapes(q, invm)
    _check_shapes(q, sqrtm)
    hdt = 0.5 * dt
    skT = c2 * math.sqrt(kT)
    if noise.shape[0] == q.shape[0]:  # no fixed atoms: one flat, vectorisable pass
        _check_shapes(q, noise)
        work = _baoab_all(q.ravel(), p.ravel(), f.ravel(), invm.ravel(), sqrtm.ravel(),
                          q_ref.ravel(), noise.ravel(), hdt, c1, skT)
    else:
        zero_rows(p, fixed)
        work = _baoab_mobile(q, p, f, invm, sqrtm, q_ref, noise, hdt, c1, skT)
    return 0.5 * work


@njit(cache=True, inline="always")
def _baoab_one(k, q, p, f, invm, sqrtm, q_ref, r, hdt, c1, skT):
    """BAOA for flat element ``k`` with noise ``r``; returns p before the O step."""
    h = hdt * invm[k]
    p0 = p[k] + hdt * f[k]
    n0 = c1 * p0 + (skT * sqrtm[k]) * r
    p[k] = n0
    q0 = (q[k] + h * p0) + h * n0
    q[k] = q0
    q_ref[k] = q0
    return p0


@njit(cache=True)
def _baoab_block(q, p, f, invm, sqrtm, q_ref, noise, hdt, c1, skT, before):
    for k in range(q.size):  # no reduction here: vectorises, exact IEEE arithmetic
        before[k] = _baoab_one(k, q, p, f, invm, sqrtm, q_ref, noise[k], hdt, c1, skT)


@njit(cache=True, fastmath={"reassoc"})
def _o_step_work(after, before, invm):
    """sum (after^2 - before^2) invm. Reassociation lets this sum vectorise: it is only the
    thermostat's energy account (a diagnostic), never fed back into the trajectory."""
    s = 0.0
    for k in range(after.size):
        s += (after[k] * after[k] - before[k] * before[k]) * invm[k]
    return s


@njit(cache=True)
def _baoab_all(q, p, f, invm, sqrtm, q_ref, noise, hdt, c1, skT):
    """All atoms mobile: flat arrays, in blocks that stay in the L1 cache."""
    block = 1024
    before = np.empty(block)
    work = 0.0
    for s in range(0, q.size, block):
        e = min(s + block, q.size)
        _baoab_block(q[s:e], p[s:e], f[s:e], invm[s:e], sqrtm[s:e], q_ref[s:e], noise[s:e],
                     hdt, c1, skT, before)
        work += _o_step_work(p[s:e], before[:e - s], invm[s:e])
    return work


@njit(cache=True)
def _baoab_mobile(q, p, f, invm, sqrtm, q_ref, noise, hdt, c1, skT):
    a, b, c, w, s, r = q.ravel(), p.ravel(), f.ravel(), invm.ravel(), sqrtm.ravel(), q_ref.ravel()
    work = 0.0
    j = 0
    for i in range(q.shape[0]):
        if w[3 * i] == 0.0:
            continue
        for d in range(3):
            k = 3 * i + d
            p0 = _baoab_one(k, a, b, c, w, s, r, noise[j, d], hdt, c1, skT)
            work += (b[k] * b[k] - p0 * p0) * w[k]
        j += 1
    return work
