"""The pairs t1 < t2 that a fit uses, in tiles, and g1² evaluated directly on them.

A fit never needs the (n_phi, N, N) model array: the diagonal is excluded and the lower triangle
mirrors the upper one. The N(N−1)/2 pairs i < j are cut into tiles of T pairs (the last one padded,
with weight 0), so that sums over the data can be accumulated tile by tile in bounded memory.
"""

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from . import _kernels as k
from ._params import LaminarFlowParams, Params
from ._trig import sinc_and_derivative, sinc_squared

TILE_ELEMENTS = 2**16  # angles × pairs per tile: 0.5 MB per float64 array, cache-sized


def tile_layout(
    n_frames: int, n_phi: int, n_shards: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column indices of the pairs i < j, (n_tiles, T) each, and which entries are pairs
    (the padding of the last tiles is not); n_tiles is a multiple of ``n_shards``."""
    rows, cols = np.triu_indices(n_frames, 1)
    n_pairs = rows.size
    size = min(n_pairs, max(256, TILE_ELEMENTS // n_phi))
    n_tiles = n_shards * math.ceil(n_pairs / (size * n_shards))
    pad = n_tiles * size - n_pairs
    valid = np.concatenate([np.ones(n_pairs, bool), np.zeros(pad, bool)])
    rows = np.concatenate([rows, np.zeros(pad, rows.dtype)]).astype(np.int32)
    cols = np.concatenate([cols, np.ones(pad, cols.dtype)]).astype(np.int32)
    shape = (n_tiles, size)
    return rows.reshape(shape), cols.reshape(shape), valid.reshape(shape)


def to_tiles(
    grid: Float[Array, "n_phi N N"],
    rows: Int[np.ndarray, "n_tiles T"] | Int[Array, "n_tiles T"],
    cols: Int[np.ndarray, "n_tiles T"] | Int[Array, "n_tiles T"],
) -> Float[Array, "n_tiles n_phi T"]:
    """Values of a full (n_phi, N, N) array at the tiled pairs, tile-major."""
    return jnp.moveaxis(grid[:, rows, cols], 1, 0)


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


def g1_squared_on_pairs(
    q_squared_half_dt: Float[Array, ""],
    n_phi: int,
    at_i: Profiles,
    at_j: Profiles,
) -> Float[Array, "n_phi T"]:
    """g1² on pairs (i, j) from the profiles gathered at i and at j (the per-angle factor is the
    same in both), (n_phi, *pair shape) for profiles of any broadcastable pair shape; the same
    operations as the full-grid kernels."""
    c_d_i, c_g_i, factor = at_i
    c_d_j, c_g_j, _ = at_j
    g1_d = k.g1_diffusion_from_integral(q_squared_half_dt, k.pair_integral(c_d_i, c_d_j))
    if c_g_i is None or c_g_j is None or factor is None:
        g1_s = jnp.ones((n_phi, *g1_d.shape), g1_d.dtype)
    else:
        m_g = k.pair_integral(c_g_i, c_g_j)
        g1_s = sinc_squared(jnp.reshape(factor, (-1,) + (1,) * m_g.ndim) * m_g[None])
    return k.combine_g1(g1_d, g1_s) ** 2


def g1_squared_and_jacobian_on_pairs(
    q_squared_half_dt: Float[Array, ""],
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
    c_d_i, c_g_i, factor = at_i
    c_d_j, c_g_j, _ = at_j
    dc_d = jac_i[0] - jac_j[0]  # (T, F)
    delta_d = c_d_i - c_d_j
    m_d = k.pair_integral(c_d_i, c_d_j)
    exponent = -q_squared_half_dt * m_d
    g1_d = jnp.exp(jnp.clip(exponent, k.EXPONENT_CLIP, 0.0))
    # ∂g1_d = g1_d · (−½q²Δ) · ∂M, ∂M = (ΔC/M) · ∂ΔC; nothing passes the clip
    slope_d = jnp.where(exponent > k.EXPONENT_CLIP, -q_squared_half_dt * g1_d * delta_d / m_d, 0.0)
    dg1_d = slope_d[:, None] * dc_d  # (T, F)
    if c_g_i is None or c_g_j is None or factor is None:
        g1 = k.straight_through_floor(jnp.broadcast_to(g1_d, (n_phi, *g1_d.shape)), k.G1_FLOOR)
        dx = (2 * g1)[:, None, :] * dg1_d.T[None, :, :]
        return g1 * g1, dx
    dfactor = jac_i[2]  # (n_phi, F), the same at i and j
    assert dfactor is not None and jac_i[1] is not None and jac_j[1] is not None
    delta_g = c_g_i - c_g_j
    m_g = k.pair_integral(c_g_i, c_g_j)
    dm_g = (delta_g / m_g)[:, None] * (jac_i[1] - jac_j[1])  # (T, F)
    phase = factor[:, None] * m_g[None, :]  # (n_phi, T)
    s, ds = sinc_and_derivative(phase)
    shear = s * s
    g1 = k.straight_through_floor(g1_d[None, :] * shear, k.G1_FLOOR)
    # ∂x = 2 g1 (shear ∂g1_d + g1_d · 2 s s' ∂Φ), ∂Φ_k = factor_k ∂M + ∂factor_k M
    along_d = 2 * g1 * shear  # (n_phi, T)
    along_phase = 4 * g1 * g1_d[None, :] * s * ds
    dx = (
        along_d[:, None, :] * dg1_d.T[None, :, :]
        + (along_phase * factor[:, None])[:, None, :] * dm_g.T[None, :, :]
        + (along_phase * m_g[None, :])[:, None, :] * dfactor[:, :, None]
    )
    return g1 * g1, dx
