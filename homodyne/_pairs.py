"""The per-pair kernel: g1 on pairs (i, j) of frames from per-frame profiles, with the per-pair
factors that every derivative needs.

No pass over the data needs the (n_phi, N, N) model array: a fit sums over the pairs t1 < t2 and the
functional API's χ² over blocks of them (`homodyne._tiles`). The model on a pair is a function of
per-frame profiles at its two frames (the cumulative integrals and the per-angle shear factor), so
every pass gathers or slices the profiles and calls `pair_terms`; the derivative of anything built
on g1 is a few multiply-adds of the factors it returns (see `g1_squared_and_jacobian_on_pairs`).
"""

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from . import _kernels as k
from ._params import LaminarFlowParams, Params
from ._trig import sinc_and_derivative, sinc_squared

# Per-frame profiles: everything g1 needs that does not depend on the pair. The model on a pair
# (i, j) is a function of the profiles at i and j only.
Profiles = tuple[
    Float[Array, " N"],  # cumulative diffusion integral C^D (grid steps)
    Float[Array, " N"] | None,  # cumulative shear integral C^γ (laminar flow)
    Float[Array, " n_phi"] | None,  # qLΔ/2π · cos(φ0 − φ_k) (laminar flow)
]


def profiles(
    t: Float[Array, " N"], phi: Float[Array, " n_phi"], sinc_prefactor: Float[Array, ""], p: Params
) -> Profiles:
    """Per-frame profiles of parameters ``p`` on frame times ``t`` (angles in degrees)."""
    t = k.floored_times(t)
    c_d = k.cumulative_trapezoid(k.power_law_rate(t, p.D0, p.alpha, p.D_offset))
    if not isinstance(p, LaminarFlowParams):
        return c_d, None, None
    c_g = k.cumulative_trapezoid(k.power_law_rate(t, p.gamma_dot_t0, p.beta, p.gamma_dot_t_offset))
    factor = sinc_prefactor * jnp.cos(jnp.deg2rad(p.phi0 - phi))
    return c_d, c_g, factor


def at_frames(prof: Profiles, index) -> Profiles:
    """The profiles at frame indices ``index`` (any integer array); the per-angle factor is kept."""
    c_d, c_g, factor = prof
    return c_d[index], None if c_g is None else c_g[index], factor


class PairTerms(NamedTuple):
    """g1 on pairs and the per-pair factors of its derivatives. ΔC = C_i − C_j (i the first frame,
    the row); entries of laminar flow are None in static mode, and all but ``g1`` are None when
    only the value was asked for."""

    g1: Float[Array, "n_phi ..."]  # straight-through floored at 1e-10
    g1_d: Float[Array, "..."] | None  # exp(clip(−a·M^D)); a leading bin axis when q is per bin
    g1_d_live: Float[Array, "..."] | None  # g1_d where the exponent is not clipped, else 0
    delta_d: Float[Array, "..."] | None  # ΔC^D
    m_d: Float[Array, "..."] | None  # M^D
    sinc: Float[Array, "n_phi ..."] | None  # sinc Φ
    dsinc: Float[Array, "n_phi ..."] | None  # sinc'(Φ)
    delta_g: Float[Array, "..."] | None  # ΔC^γ
    m_g: Float[Array, "..."] | None  # M^γ


Shear = tuple[
    Float[Array, "n_phi ..."],  # sinc Φ
    Float[Array, "n_phi ..."],  # sinc'(Φ)
    Float[Array, "..."],  # ΔC^γ = C^γ_i − C^γ_j
    Float[Array, "..."],  # M^γ
]


def exact_shear(
    factor: Float[Array, " n_phi"], c_g_i: Float[Array, "..."], c_g_j: Float[Array, "..."]
) -> Shear:
    """sinc Φ and sinc'(Φ) from Φ_k = factor_k · M^γ itself (`sinc_and_derivative`)."""
    delta_g = c_g_i - c_g_j
    m_g = k.pair_integral(c_g_i, c_g_j)
    phase = jnp.reshape(factor, (-1,) + (1,) * m_g.ndim) * m_g[None]
    s, ds = sinc_and_derivative(phase)
    return s, ds, delta_g, m_g


def pair_terms(
    wavevector_q_squared_half_dt: Float[Array, "*bins"],
    n_phi: int,
    at_i: Profiles,
    at_j: Profiles,
    *,
    derivatives: bool = True,
    shear: Shear | None = None,
) -> PairTerms:
    """g1 on pairs (i, j), (n_phi, *pair shape), from the profiles gathered at i and at j (of any
    broadcastable pair shape; the per-angle factor is the same in both), and with
    ``derivatives`` the factors of its derivatives. ``shear`` gives sinc Φ another way (the
    functional API's χ² uses angle addition); by default it is computed from Φ.

    The value takes the same operations as the full-grid kernels of `homodyne._kernels`.
    """
    c_d_i, c_g_i, factor = at_i
    c_d_j, c_g_j, _ = at_j
    # ½q²Δ: a scalar shared by the bins, or one per bin (q per bin: g1_d gets the bin axis)
    pair_shape = jnp.broadcast_shapes(jnp.shape(c_d_i), jnp.shape(c_d_j))
    a = k.per_bin(wavevector_q_squared_half_dt, len(pair_shape))
    if not derivatives:
        g1_d = k.g1_diffusion_from_integral(a, k.pair_integral(c_d_i, c_d_j))
        if c_g_i is None or c_g_j is None or factor is None:
            g1_s = jnp.ones((n_phi, *pair_shape), g1_d.dtype)
        else:
            m_g = k.pair_integral(c_g_i, c_g_j)
            g1_s = sinc_squared(jnp.reshape(factor, (-1,) + (1,) * m_g.ndim) * m_g[None])
        return PairTerms(k.combine_g1(g1_d, g1_s), *(None,) * 8)
    delta_d = c_d_i - c_d_j
    m_d = jnp.sqrt(delta_d * delta_d + k.PAIR_EPSILON)
    exponent = -a * m_d
    g1_d = jnp.exp(jnp.clip(exponent, k.EXPONENT_CLIP, 0.0))
    live = jnp.where(exponent > k.EXPONENT_CLIP, g1_d, 0.0)  # nothing passes the clip
    if c_g_i is None or c_g_j is None or factor is None:
        g1 = k.straight_through_floor(jnp.broadcast_to(g1_d, (n_phi, *pair_shape)), k.G1_FLOOR)
        return PairTerms(g1, g1_d, live, delta_d, m_d, None, None, None, None)
    s, ds, delta_g, m_g = exact_shear(factor, c_g_i, c_g_j) if shear is None else shear
    g1 = k.combine_g1(g1_d, s * s)
    return PairTerms(g1, g1_d, live, delta_d, m_d, s, ds, delta_g, m_g)


def g1_squared_on_pairs(
    wavevector_q_squared_half_dt: Float[Array, "*bins"],
    n_phi: int,
    at_i: Profiles,
    at_j: Profiles,
) -> Float[Array, "n_phi T"]:
    """g1² on pairs (i, j) from the profiles gathered at i and at j (see `pair_terms`)."""
    g1 = pair_terms(wavevector_q_squared_half_dt, n_phi, at_i, at_j, derivatives=False).g1
    return g1 * g1


def g1_squared_and_jacobian_on_pairs(
    wavevector_q_squared_half_dt: Float[Array, "*bins"],
    n_phi: int,
    at_i: Profiles,
    at_j: Profiles,
    jac_i: Profiles,
    jac_j: Profiles,
) -> tuple[Float[Array, "n_phi T"], Float[Array, "n_phi F T"]]:
    """g1² on pairs and its derivatives with respect to F parameters, given the profiles and their
    (·, F) Jacobians gathered at i and at j (the factor's Jacobian is (n_phi, F)).

    Written out by hand, because forward mode through sinc costs ten times the value: every
    parameter's derivative is a multiple of two per-element factors (one for diffusion, one for
    shear), so each costs a few multiply-adds. The straight-through floors and the exponent clip
    are differentiated as in `homodyne._kernels`; tests compare with `jax.jacfwd` of the full model.
    """
    t = pair_terms(wavevector_q_squared_half_dt, n_phi, at_i, at_j)
    assert t.g1_d is not None and t.g1_d_live is not None
    assert t.delta_d is not None and t.m_d is not None
    g1 = t.g1
    # ∂g1_d = g1_d · (−½q²Δ) · ∂M, ∂M = (ΔC/M) · ∂ΔC; with q per bin, per bin
    a = k.per_bin(wavevector_q_squared_half_dt, 1)
    slope_d = -a * t.g1_d_live * t.delta_d / t.m_d  # (T,) or (n_phi, T)
    dg1_d = slope_d[..., None] * (jac_i[0] - jac_j[0])  # (T, F) or (n_phi, T, F)
    dg1_d_t = jnp.swapaxes(dg1_d, -1, -2)  # (…, F, T)
    if dg1_d_t.ndim == 2:  # shared by the bins
        dg1_d_t = dg1_d_t[None]
    g1_d = t.g1_d if t.g1_d.ndim == g1.ndim else t.g1_d[None]  # (1 or n_phi, T)
    if t.sinc is None:
        dx = (2 * g1)[:, None, :] * dg1_d_t
        return g1 * g1, dx
    factor, dfactor = at_i[2], jac_i[2]  # (n_phi,), (n_phi, F): the same at i and j
    assert factor is not None and dfactor is not None and t.dsinc is not None
    assert t.delta_g is not None and t.m_g is not None
    assert jac_i[1] is not None and jac_j[1] is not None
    dm_g = (t.delta_g / t.m_g)[:, None] * (jac_i[1] - jac_j[1])  # (T, F)
    # ∂x = 2 g1 (shear ∂g1_d + g1_d · 2 s s' ∂Φ), ∂Φ_k = factor_k ∂M + ∂factor_k M
    along_d = 2 * g1 * t.sinc * t.sinc  # (n_phi, T)
    along_phase = 4 * g1 * g1_d * t.sinc * t.dsinc
    dx = (
        along_d[:, None, :] * dg1_d_t
        + (along_phase * factor[:, None])[:, None, :] * dm_g.T[None, :, :]
        + (along_phase * t.m_g[None, :])[:, None, :] * dfactor[:, :, None]
    )
    return g1 * g1, dx
