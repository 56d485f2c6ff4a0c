"""χ² over the full (n_phi, N, N) grid without forming the model array.

A fused `sum((data − g2)²/σ²)` is what XLA runs slowest on the CPU: its reduction loops neither
vectorise the model's arithmetic nor split it over threads, and they took twice as long as
writing g2. Here the grid is walked in blocks of rows: each block's residuals are an ordinary
(vectorised, cache-sized) elementwise computation, reduced while still in cache. Under reverse-mode
differentiation every block is recomputed (`jax.checkpoint`) instead of stored, so the gradient
needs no more memory than the value.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._pairs import g1_squared_on_pairs, profiles
from ._params import Params

ROW_BLOCK_ELEMENTS = 2**17  # angles × rows × columns per block: 1 MB per float64 array


def chi2_by_rows(
    q_squared_half_dt: Float[Array, ""],
    sinc_prefactor: Float[Array, ""],
    t: Float[Array, " N"],
    phi: Float[Array, " n_phi"],
    p: Params,
    contrast: Float[Array, " n_phi"],
    offset: Float[Array, " n_phi"],
    data: Float[Array, "n_phi N N"],
    sigma: Float[Array, "..."],
) -> Float[Array, ""]:
    """Σ ((data − g2)/σ)² over every angle and every (t1, t2), diagonal included; ``sigma`` is
    anything that broadcasts to the data's shape."""
    n_phi, n = phi.shape[0], t.shape[0]
    c_d, c_g, factor = profiles(t, phi, sinc_prefactor, p)
    sigma = jnp.broadcast_to(sigma, data.shape)

    def block(start, size: int):
        def rows(v):
            return jax.lax.dynamic_slice_in_dim(v, start, size)[:, None]

        at_i = (rows(c_d), None if c_g is None else rows(c_g), factor)
        at_j = (c_d[None, :], None if c_g is None else c_g[None, :], factor)
        x = g1_squared_on_pairs(q_squared_half_dt, n_phi, at_i, at_j)  # (n_phi, size, N)
        model = offset[:, None, None] + contrast[:, None, None] * x
        d = jax.lax.dynamic_slice_in_dim(data, start, size, axis=1)
        s = jax.lax.dynamic_slice_in_dim(sigma, start, size, axis=1)
        return jnp.sum(((d - model) / s) ** 2)

    size = max(1, min(n, ROW_BLOCK_ELEMENTS // (n_phi * n)))
    n_blocks, rest = divmod(n, size)
    full_block = jax.checkpoint(lambda start: block(start, size))

    def step(total, i):
        return total + full_block(i * size), None

    total, _ = jax.lax.scan(step, jnp.zeros((), data.dtype), jnp.arange(n_blocks))
    if rest:
        total = total + block(n_blocks * size, rest)
    return total
