"""The pure mathematics of the model (SPEC §2): time floor, rates, integrals, g1 and g2.

Plain functions of float64 JAX arrays, no classes and no validation: `HomodyneModel` and
`homodyne.core.jax_backend` check their inputs and then call these. Every function is safe under
jit, vmap, grad, jacfwd and hessian.

Floors are *straight-through*: below a floor the value is the floor, but the derivative passed back is
that of the unfloored expression, so a Jacobian or a sampler trajectory that wanders into a floored
region still sees which way leads out. The time floor is the exception: it protects t = 0 with a
negative exponent, where the unfloored derivative would be infinite, so it is an ordinary floor.
"""

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._trig import sinc_squared

TIME_FLOOR_MIN = 1e-8  # smallest time floor [s], also the floor for a single frame
RATE_FLOOR = 1e-10  # floor of D(t) and gamma_dot(t)
G1_FLOOR = 1e-10  # floor of g1
PAIR_EPSILON = 1e-12  # M_ij = sqrt((C_i - C_j)^2 + PAIR_EPSILON): smooth |C_i - C_j|
EXPONENT_CLIP = -700.0  # exp(-700) ~ 1e-304, the edge of float64

Scalar = Float[Array, ""]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def straight_through_floor(x: Float[Array, "*s"], floor: float) -> Float[Array, "*s"]:
    """``x`` where ``x > floor``, else ``floor``; the derivative is always that of ``x``."""
    return jnp.where(x > floor, x, floor)


@straight_through_floor.defjvp
def _straight_through_floor_jvp(floor, primals, tangents):
    (x,), (x_dot,) = primals, tangents
    return straight_through_floor(x, floor), x_dot


def floored_times(t: Float[Array, " n_t"]) -> Float[Array, " n_t"]:
    """SPEC §2.1: τ̃_i = τ_i where τ_i > ε_t, else ε_t, with ε_t = max(|τ_1 − τ_0| / 2, 1e-8)."""
    if t.shape[0] > 1:
        eps = jnp.maximum(jnp.abs(t[1] - t[0]) / 2, TIME_FLOOR_MIN)
    else:
        eps = jnp.asarray(TIME_FLOOR_MIN, t.dtype)
    return jnp.where(t > eps, t, eps)


def power_law_rate(
    t_floored: Float[Array, " n_t"], amplitude: Scalar, exponent: Scalar, offset: Scalar
) -> Float[Array, " n_t"]:
    """SPEC §2.2: ``amplitude · t^exponent + offset``, straight-through floored at 1e-10."""
    return straight_through_floor(amplitude * t_floored**exponent + offset, RATE_FLOOR)


def cumulative_trapezoid(f: Float[Array, " n_t"]) -> Float[Array, " n_t"]:
    """SPEC §2.3: C_0 = 0, C_i = Σ_{k<i} (f_k + f_{k+1}) / 2, in units of grid steps."""
    steps = (f[:-1] + f[1:]) / 2
    return jnp.concatenate([jnp.zeros((1,), f.dtype), jnp.cumsum(steps)])


def pair_integral(c_i: Float[Array, "*pair"], c_j: Float[Array, "*pair"]) -> Float[Array, "*pair"]:
    """SPEC §2.3 for given pairs: sqrt((C_i − C_j)² + 1e-12), a smooth |C_i − C_j|."""
    d = c_i - c_j
    return jnp.sqrt(d * d + PAIR_EPSILON)


def pairwise_integral(c: Float[Array, " n_t"]) -> Float[Array, "n_t n_t"]:
    """SPEC §2.3: M_ij = sqrt((C_i − C_j)² + 1e-12) for every pair, exactly symmetric."""
    return pair_integral(c[:, None], c[None, :])


def rate_integral(
    t: Float[Array, " n_t"], amplitude: Scalar, exponent: Scalar, offset: Scalar
) -> Float[Array, "n_t n_t"]:
    """∫ rate dt between every pair of frames, in grid steps (SPEC §2.1–2.3)."""
    rate = power_law_rate(floored_times(t), amplitude, exponent, offset)
    return pairwise_integral(cumulative_trapezoid(rate))


def g1_diffusion_from_integral(
    wavevector_q_squared_half_dt: Scalar, m_diffusion: Float[Array, "*s"]
) -> Float[Array, "*s"]:
    """SPEC §2.5: exp(clip(−½q²Δ · M^D, −700, 0))."""
    return jnp.exp(jnp.clip(-wavevector_q_squared_half_dt * m_diffusion, EXPONENT_CLIP, 0.0))


def shear_phase(
    sinc_prefactor: Scalar,
    phi0: Scalar,
    phi: Float[Array, " n_phi"],
    m_shear: Float[Array, "n_t n_t"],
) -> Float[Array, "n_phi n_t n_t"]:
    """SPEC §2.6: Φ_kij = qLΔ/2π · cos(deg2rad(φ0 − φ_k)) · M^γ_ij (angles in degrees)."""
    factor = sinc_prefactor * jnp.cos(jnp.deg2rad(phi0 - phi))
    return factor[:, None, None] * m_shear[None, :, :]


def g1_shear_from_integral(
    sinc_prefactor: Scalar,
    phi0: Scalar,
    phi: Float[Array, " n_phi"],
    m_shear: Float[Array, "n_t n_t"],
) -> Float[Array, "n_phi n_t n_t"]:
    """SPEC §2.6: sinc(Φ)², by `homodyne._trig.sinc_squared` (vectorised; `homodyne.sinc` squared,
    within a few ulp)."""
    return sinc_squared(shear_phase(sinc_prefactor, phi0, phi, m_shear))


def combine_g1(
    g1_diffusion: Float[Array, "*pair"], g1_shear: Float[Array, "n_phi ..."]
) -> Float[Array, "n_phi ..."]:
    """SPEC §2.7: g1 = g1_diff · g1_shear, straight-through floored at 1e-10 (on (N, N) grids or
    on lists of pairs). ``g1_diffusion`` is shared by the bins, or per bin (leading axis n_phi)
    when q is given per bin."""
    per_bin = g1_diffusion.ndim == g1_shear.ndim
    return straight_through_floor(
        (g1_diffusion if per_bin else g1_diffusion[None]) * g1_shear, G1_FLOOR
    )


def per_bin(prefactor: Float[Array, "*bins"], ndim: int) -> Float[Array, "*bins"]:
    """A prefactor (scalar, or one per bin when q is per bin) shaped to multiply arrays of
    ``ndim`` axes after the bin axis: (n_phi, 1, …, 1), or the scalar itself."""
    return prefactor if prefactor.ndim == 0 else jnp.reshape(prefactor, (-1,) + (1,) * ndim)


def g2_from_g1(
    g1: Float[Array, "n_phi n_t n_t"],
    contrast: Float[Array, " n_phi"],
    offset: Float[Array, " n_phi"],
) -> Float[Array, "n_phi n_t n_t"]:
    """SPEC §2.7: g2 = offset_k + contrast_k · g1² (no clipping)."""
    return offset[:, None, None] + contrast[:, None, None] * g1**2
