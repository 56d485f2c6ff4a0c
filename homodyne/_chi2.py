"""χ² over the full (n_phi, N, N) grid without forming the model array.

A fused `sum((data − g2)²/σ²)` is what XLA runs slowest on the CPU: its reduction loops neither
vectorise the model's arithmetic nor split it over threads, and they took twice as long as
writing g2. Here the grid is cut into square tiles of B × B frames. g2 is symmetric in (t1, t2), so
only tiles on or above the diagonal are evaluated: a tile above it is compared with the data there
and, transposed, with the data in its mirror tile below (data and σ need not be symmetric). Each
tile is an ordinary vectorised, cache-sized computation, reduced while still in cache. Under
reverse-mode differentiation tiles are recomputed (`jax.checkpoint`) instead of stored, so the
gradient needs no more memory than the value.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._pairs import at_frames, g1_squared_on_pairs, profiles
from ._params import Params

TILE_ELEMENTS = 2**19  # angles × B × B per tile: 4 MB per float64 array


def chi2_in_tiles(
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
    prof = profiles(t, phi, sinc_prefactor, p)
    # σ keeps its own (broadcastable) shape: broadcasting it to the data's would write a full array
    sigma = jnp.asarray(sigma)
    sigma = jnp.reshape(sigma, (1,) * (3 - sigma.ndim) + sigma.shape)
    size = max(1, min(n, math.isqrt(TILE_ELEMENTS // n_phi)))
    n_blocks = -(-n // size)
    # Tiles (bi, bj) with bi ≤ bj. The last block is shifted back to fit inside the grid (starts
    # are clipped), and a mask drops what the previous block already covered.
    bi, bj = np.triu_indices(n_blocks)
    index = jnp.asarray(np.stack([bi, bj], axis=1) * size)

    def tile(nominal):
        r0, c0 = nominal[0], nominal[1]
        rs, cs = jnp.minimum(r0, n - size), jnp.minimum(c0, n - size)
        rows, cols = rs + jnp.arange(size), cs + jnp.arange(size)
        mask = (rows >= r0)[:, None] & (cols >= c0)[None, :]

        at_i, at_j = at_frames(prof, rows[:, None]), at_frames(prof, cols[None, :])
        x = g1_squared_on_pairs(q_squared_half_dt, n_phi, at_i, at_j)  # (n_phi, B, B)
        model = offset[:, None, None] + contrast[:, None, None] * x

        def block(a, r, c):
            """The (·, B, B) block of ``a`` at rows r and columns c; axes of length 1 stay."""
            shape = (a.shape[0], size if a.shape[1] > 1 else 1, size if a.shape[2] > 1 else 1)
            start = (0, r if a.shape[1] > 1 else 0, c if a.shape[2] > 1 else 0)
            return jax.lax.dynamic_slice(a, start, shape)

        upper = ((block(data, rs, cs) - model) / block(sigma, rs, cs)) ** 2
        # the mirror tile below the diagonal, transposed onto this one (absent on the diagonal)
        mirror = block(data, cs, rs).swapaxes(1, 2), block(sigma, cs, rs).swapaxes(1, 2)
        lower = ((mirror[0] - model) / mirror[1]) ** 2
        return jnp.sum(jnp.where(mask, upper + jnp.where(r0 == c0, 0.0, lower), 0.0))

    tile = jax.checkpoint(tile)

    def step(total, nominal):
        return total + tile(nominal), None

    return jax.lax.scan(step, jnp.zeros((), data.dtype), index)[0]
