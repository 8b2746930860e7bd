"""Fast, seeded, checkpointable standard-normal numbers for the Langevin noise (numba).

A Langevin step needs three standard-normal numbers per mobile atom. numpy's generator costs
about 3.5 ns per number even when called from numba, which is most of a Langevin step for
large systems; this module draws them in about a third of that, exactly reproducibly, from a
state of two 64-bit integers that goes into checkpoints.

The method
    Marsaglia and Tsang's ziggurat (J. Stat. Softw. 5(8), 2000) with 1024 layers, fed by
    SplitMix64 (Steele, Lea and Flood, OOPSLA 2014; the generator Java's SplittableRandom uses
    and xoshiro's authors recommend for seeding; it passes BigCrush). SplitMix64's n-th output
    is a hash of ``state + n * gamma``, so a block of outputs has no serial dependency and the
    hashing vectorises. Each normal number takes exactly one 64-bit word from the *main*
    stream: 10 bits pick the layer, one bit the sign, 52 bits the abscissa; 99.7 % of them
    are accepted at once (the point lies inside the layer's rectangle). The rest finish the
    ziggurat test (wedge or tail) with uniforms from a second, independent *slow* stream, so
    the main stream advances by one word per number whatever happens.

    The ziggurat is exact: it samples the normal density, up to the 2^-52 resolution of the
    abscissa (the same as numpy's). The tests check the moments, the tails and a
    Kolmogorov-Smirnov statistic against the normal distribution on 10^7 numbers.

State
    ``state`` is a ``uint64`` array of two words ``[main, slow]``; :func:`seed_state` makes it
    from any integer seed through numpy's ``SeedSequence`` (so nearby seeds give unrelated
    streams). Every function updates it in place; copying it saves the stream exactly.
    The same state gives the same numbers on every machine and MPI rank.
"""
import math

import numpy as np
from numba import njit, uint64

LAYERS = 1024
LAYER_BITS = 10
_ABS_BITS = 52  # 10 layer bits + 1 sign bit + 52 abscissa bits + 1 unused = 64
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (2^64 / golden ratio, odd)
_CHUNK = 512  # words hashed per vectorised block


def _ziggurat_tables(layers=LAYERS, abs_bits=_ABS_BITS):
    """Abscissa ``x_i`` of the layers and the fast-path tables (Marsaglia and Tsang 2000).

    ``f(x) = exp(-x^2 / 2)``. Layer 0 is the base strip plus the tail beyond ``r``; layers
    1..N-1 are the rectangles [0, x_i] x [f(x_i), f(x_(i-1))] with x_0 = 0, all of area
    ``v``. ``r`` is the root of "the top layer closes at f = 1", solved by bisection.
    Returns ``r, k, w, f``: ``k[i]`` the accept threshold on the integer abscissa, ``w[i]``
    its scale to x, ``f[i] = f(x_i)`` (f[0] = 1, the top of layer 1).
    """
    def density(x):
        return math.exp(-0.5 * x * x)

    def area(r):
        return r * density(r) + math.sqrt(math.pi / 2) * math.erfc(r / math.sqrt(2))

    def top_excess(r):  # > 0: layers too large, the stack runs past f = 1
        v, x = area(r), r
        for _ in range(layers - 2):
            a = v / x + density(x)
            if a >= 1.0:
                return 1.0
            x = math.sqrt(-2.0 * math.log(a))
        return v - x * (1.0 - density(x))

    lo, hi = 2.0, 6.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if top_excess(mid) > 0 else (lo, mid)
    r = hi
    v = area(r)
    x = np.empty(layers)
    x[layers - 1] = r
    for i in range(layers - 2, 0, -1):
        x[i] = math.sqrt(-2.0 * math.log(v / x[i + 1] + density(x[i + 1])))
    scale = 2.0 ** abs_bits
    q = v / density(r)  # width of the base strip's rectangle of area v
    k = np.zeros(layers, dtype=np.int64)
    w = np.empty(layers)
    f = np.empty(layers)
    k[0], w[0], f[0] = int(r / q * scale), q / scale, 1.0
    for i in range(1, layers):
        w[i] = x[i] / scale
        f[i] = density(x[i])
        k[i] = 0 if i == 1 else int(x[i - 1] / x[i] * scale)
    return r, k, w, f


ZIGGURAT_R, _K, _W, _F = _ziggurat_tables()


def seed_state(seed):
    """A new stream state (``uint64[2]``) from a non-negative integer seed of any size."""
    return np.random.SeedSequence(int(seed)).generate_state(2, np.uint64)


@njit(cache=True, inline="always")
def _splitmix(z):
    """SplitMix64's output function (a bijective 64-bit hash)."""
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return z ^ (z >> uint64(31))


@njit(cache=True, inline="always")
def _uniform(state):
    """Next number of the slow stream as a double in [0, 1) (53 bits)."""
    state[1] += uint64(_GAMMA)
    return np.int64(_splitmix(state[1]) >> uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _finish(word, state, k, w, f, r):
    """The ziggurat draw that began with the main-stream ``word`` and was not accepted at
    once: wedge or tail test, with fresh words from the slow stream until one is accepted."""
    mask = np.int64(k.size - 1)
    z = np.int64(word)
    while True:
        i = z & mask
        negative = (z >> LAYER_BITS) & 1
        a = (z >> (LAYER_BITS + 1)) & np.int64((1 << _ABS_BITS) - 1)
        x = a * w[i]
        if a < k[i]:
            return -x if negative else x
        if i == 0:  # tail beyond r (Marsaglia 1964), always ends in an accepted number
            while True:
                xx = -math.log1p(-_uniform(state)) / r
                yy = -math.log1p(-_uniform(state))
                if yy + yy > xx * xx:
                    return -(r + xx) if negative else r + xx
        if f[i] + _uniform(state) * (f[i - 1] - f[i]) < math.exp(-0.5 * x * x):
            return -x if negative else x
        state[1] += uint64(_GAMMA)
        z = np.int64(_splitmix(state[1]))


@njit(cache=True)
def standard_normal_fill(state, out):
    """Fill the float64 array ``out`` (any shape, C-contiguous) with standard-normal numbers
    drawn from ``state`` (``uint64[2]``, see :func:`seed_state`), which advances in place.
    Returns ``out``. Callable from other numba kernels."""
    k, w, f, r = _K, _W, _F, ZIGGURAT_R  # module constants, frozen into the compiled code
    o = out.ravel()
    n = o.size
    words = np.empty(_CHUNK, dtype=np.uint64)
    mask = np.int64(k.size - 1)
    amask = np.int64((1 << _ABS_BITS) - 1)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        base = state[0]
        for j in range(m):  # no serial dependency: vectorises
            words[j] = _splitmix(base + uint64(j + 1) * uint64(_GAMMA))
        state[0] = base + uint64(m) * uint64(_GAMMA)
        for j in range(m):
            z = np.int64(words[j])
            i = z & mask
            a = (z >> (LAYER_BITS + 1)) & amask
            if a < k[i]:
                x = a * w[i]
                o[start + j] = -x if (z >> LAYER_BITS) & 1 else x
            else:
                o[start + j] = _finish(words[j], state, k, w, f, r)
    return out
