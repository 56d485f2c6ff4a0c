"""sin and cos in float64 from elementwise arithmetic that XLA vectorises.

XLA on the CPU evaluates float64 `sin` one element at a time (4–10 ns per element here), which made
the shear factor cost four times as much as writing the result. Here the argument is reduced by
Cody–Waite: n = round(2x/π) and r = x − n·π/2 with π/2 split into three 26-bit pieces and a tail,
so that each n·piece is exact for |n| < 2^27; then Taylor polynomials of degree 17 and 18 on
|r| ≤ π/4 (truncation below 1e-19) and the quadrant of n. For |x| < `FAST_TRIG_LIMIT` (2.1e8) the
results are within 2 ulp of a correctly rounded sin/cos, also relatively near multiples of π/2
(tests compare with NumPy). Beyond that the reduction loses digits gradually; in g1 such phases
give sinc² < 1e-16, far below the g1 floor.
"""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

# π/2 = PIO2_1 + PIO2_2 + PIO2_3 + PIO2_4 + O(1e-41); the first three have 26 significant bits
PIO2_1 = float.fromhex("0x1.921fb58000000p+0")
PIO2_2 = float.fromhex("-0x1.dde9740000000p-27")
PIO2_3 = float.fromhex("0x1.1a62630000000p-54")
PIO2_4 = float.fromhex("0x1.8a2e03707344ap-81")
TWO_OVER_PI = 0.6366197723675814
FAST_TRIG_LIMIT = 2.0**27 * (math.pi / 2)  # |n| ≤ 2^27 keeps n·PIO2_k exact for k ≤ 3

# Horner coefficients in r² of (sin r − r)/r³ and (cos r − 1 + r²/2)/r⁴: ±1/(2k+1)!, ±1/(2k)!
_SIN = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(1, 9))
_COS = tuple((-1) ** k / math.factorial(2 * k) for k in range(2, 10))


def _horner(coefficients: tuple[float, ...], x: Array) -> Array:
    acc = jnp.full_like(x, coefficients[-1])
    for c in coefficients[-2::-1]:
        acc = acc * x + c
    return acc


def _sin_cos(x: Float[Array, "*s"]) -> tuple[Float[Array, "*s"], Float[Array, "*s"]]:
    n = jnp.round(x * TWO_OVER_PI)
    # the products are exact and the first differences cancel exactly (Sterbenz), so r keeps its
    # relative accuracy even when x is close to a multiple of π/2
    r = (((x - n * PIO2_1) - n * PIO2_2) - n * PIO2_3) - n * PIO2_4
    r2 = r * r
    s = r + r * r2 * _horner(_SIN, r2)
    c = 1.0 - 0.5 * r2 + r2 * r2 * _horner(_COS, r2)
    quadrant = n - 4.0 * jnp.floor(n * 0.25)  # n mod 4, exact in float64
    sin = jnp.where(quadrant == 0, s, jnp.where(quadrant == 1, c, jnp.where(quadrant == 2, -s, -c)))
    cos = jnp.where(quadrant == 0, c, jnp.where(quadrant == 1, -s, jnp.where(quadrant == 2, -c, s)))
    return sin, cos


@jax.custom_jvp
def sin_cos(x: Float[Array, "*s"]) -> tuple[Float[Array, "*s"], Float[Array, "*s"]]:
    """(sin x, cos x), elementwise, within 2 ulp for |x| < 2.1e8 (see the module docstring)."""
    return _sin_cos(x)


@sin_cos.defjvp
def _sin_cos_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    sin, cos = sin_cos(x)
    return (sin, cos), (cos * t, -sin * t)


PI_1, PI_2, PI_3, PI_4 = 2 * PIO2_1, 2 * PIO2_2, 2 * PIO2_3, 2 * PIO2_4  # exact doublings
ONE_OVER_PI = 0.3183098861837907
# (sin r − r)/r³ on |r| ≤ π/2 to degree 23: truncation (π/2)^25/25! < 1e-20
_SIN_HALF_PERIOD = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(1, 12))


DSINC_SERIES_BELOW = 0.1  # |x| below which the derivative of sinc uses its series


def _sinc(x: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """sinc x with its sign, as (−1)^m (r/x) (1 + r²P(r²)) with r = x − mπ (see `sinc_squared`)."""
    m = jnp.round(x * ONE_OVER_PI)
    r = (((x - m * PI_1) - m * PI_2) - m * PI_3) - m * PI_4
    r2 = r * r
    zero = x == 0
    ratio = jnp.where(zero, 1.0, r / jnp.where(zero, 1.0, x))
    sign = 1.0 - 2.0 * (m - 2.0 * jnp.floor(m * 0.5))  # (−1)^m
    return sign * ratio * (1.0 + r2 * _horner(_SIN_HALF_PERIOD, r2))


@jax.custom_jvp
def sinc(x: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """The unnormalised sinc, sin(x)/x (1 at x = 0), the one the model uses: elementwise, within a
    few ulp for |x| < 4.2e8 (see `sinc_squared`). Near 0 it equals SPEC §2.6's series
    1 − x²/6 + x⁴/120 to far below an ulp (the series is exact there to x⁶/5040 < 2e-28 for
    |x| < 1e-4). Differentiable to any order: its derivative is `sinc_and_derivative`'s, with a
    series below 0.1 (autodiff of the r/x inside would be exact to first order, but second
    derivatives would sum terms of order 1/x² that cancel only in exact arithmetic: a Hessian
    entry off by 1e-6 at x ~ 1e-17, an angle 90° from φ0)."""
    return _sinc(x)


@sinc.defjvp
def _smooth_sinc_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    s, ds = sinc_and_derivative(x)
    return s, ds * t


def sinc_and_derivative(x: Float[Array, "*s"]) -> tuple[Float[Array, "*s"], Float[Array, "*s"]]:
    """(sin x / x, its derivative (cos x − sinc x)/x). The derivative cancels as eps/x² for small
    x; below 0.1 its series is used instead (exact to 1e-16, first omitted term x⁹/3991680).
    Differentiable to any order without cancellation (the value's derivative is this one)."""
    s = sinc(x)
    _, cos = sin_cos(x)
    small = jnp.abs(x) < DSINC_SERIES_BELOW
    x2 = x * x
    series = x * (-1 / 3 + x2 * (1 / 30 + x2 * (-1 / 840 + x2 / 45360)))
    return s, jnp.where(small, series, (cos - s) / jnp.where(small, 1.0, x))


@jax.custom_jvp
def sinc_squared(x: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """(sin x / x)², 1 at x = 0, within a few ulp for |x| < 4.2e8 (twice the sin_cos range).

    sin² has period π, so x is reduced by π (r = x − mπ, the same exact pieces as `sin_cos`) and a
    single polynomial gives sin r = r(1 + r²P(r²)); then sinc² = (r/x)²(1 + r²P)², which for |x| < π
    is (1 + x²P(x²))² with no division, so small phases need no separate series. The derivative
    2 sinc · sinc' comes from `sinc_and_derivative` (differentiating r/x itself would cancel
    catastrophically near x = 0).
    """
    return sinc(x) ** 2


@sinc_squared.defjvp
def _sinc_squared_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    s, ds = sinc_and_derivative(x)
    return s * s, 2 * s * ds * t
