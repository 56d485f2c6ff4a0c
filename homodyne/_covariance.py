"""Information matrix, covariance and the minimum test of a fit."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

DECREMENT_TOL = 1e-2  # converged: a Gauss–Newton step would gain < 0.01 in χ² (≈ 0.1 σ)
#: the error jackknife leaves out windows of this many blocks of frames per side: a block and its
#: neighbours on each side, which share its correlated errors
ERROR_WINDOW = 3


def inverse(h: Float[Array, "K K"]) -> Float[Array, "K K"]:
    """Inverse of a symmetric positive semi-definite matrix, after scaling it to unit diagonal
    (`_spd_solve_scaled`); a direction with no information gets a huge (not infinite) variance
    instead of a failure. No LAPACK: see `_spd_solve`."""
    eye = jnp.broadcast_to(jnp.eye(h.shape[-1]), h.shape)
    inv = _spd_solve_scaled(h, eye)
    return 0.5 * (inv + jnp.swapaxes(inv, -1, -2))


def _spd_solve(a: Float[Array, "*B F F"], b: Float[Array, "*B F R"]) -> Float[Array, "*B F R"]:
    """a⁻¹b for a batch of small positive semi-definite matrices with unit diagonal: Cholesky
    in array operations, a loop over the columns (a small program, quick to compile), pivots
    floored at 1e-12 (a direction that only the removed cluster informs gets a huge, finite
    shift). Not LAPACK: jaxlib's batched LAPACK kernels (a fit under `vmap`) split their batch
    over XLA's CPU thread pool and wait for it; two of them running at once on that pool's
    threads, or one beside a pass's psum between simulated devices, wait for each other for
    ever (seen: two batched eigh calls in `fit_many`, 2 threads; gdb showed both in
    ParallelBatchMap)."""
    f = a.shape[-1]
    index = jnp.arange(f)

    def factor(k, low):  # column k of the lower factor L, a = L Lᵀ (columns ≥ k still 0)
        row_k = jnp.take(low, k, axis=-2)  # (..., F)
        c = jnp.take(a, k, axis=-1) - jnp.einsum("...ij,...j->...i", low, row_k)
        pivot = jnp.sqrt(jnp.maximum(jnp.take(c, k, axis=-1), 1e-12))
        column = jnp.where(index >= k, c / pivot[..., None], 0.0)
        return jnp.where(index == k, column[..., :, None], low)

    low = jax.lax.fori_loop(0, f, factor, jnp.zeros_like(a))
    diagonal = jnp.diagonal(low, axis1=-2, axis2=-1)[..., None]  # (..., F, 1)

    def substitute(t, rhs, reverse: bool):  # t x = rhs, t triangular with L's diagonal
        def row(n, x):  # row i, the rows solved before it already in x (the others 0)
            i = f - 1 - n if reverse else n
            acc = jnp.take(rhs, i, axis=-2) - jnp.einsum(
                "...j,...jr->...r", jnp.take(t, i, axis=-2), x
            )
            return jnp.where(
                (index == i)[:, None], (acc / jnp.take(diagonal, i, axis=-2))[..., None, :], x
            )

        return jax.lax.fori_loop(0, f, row, jnp.zeros_like(rhs))

    y = substitute(low, b, reverse=False)  # L y = b
    return substitute(jnp.swapaxes(low, -1, -2), y, reverse=True)  # Lᵀ x = y


def _spd_solve_scaled(
    a: Float[Array, "*B F F"], b: Float[Array, "*B F R"]
) -> Float[Array, "*B F R"]:
    """a⁻¹b for positive semi-definite ``a`` of any scale: `_spd_solve` after scaling ``a`` to
    unit diagonal (a zero diagonal entry, a direction nothing informs, is left unscaled)."""
    diag = jnp.diagonal(a, axis1=-2, axis2=-1)
    d = jnp.sqrt(jnp.where(diag > 0, diag, 1.0))[..., None]  # (..., F, 1)
    return _spd_solve(a / (d * jnp.swapaxes(d, -1, -2)), b / d) / d


def window_sums(x: Float[Array, "n n ..."], width: int) -> Float[Array, "m m ..."]:
    """Sums of ``x`` over every ``width`` × ``width`` window of its first two axes that overlaps
    the grid, m = n + width − 1 per axis (windows at the edges are partly outside): ``width``
    shifted copies added per axis (exact, where differences of cumulative sums would cancel)."""
    for axis in (0, 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (width - 1, width - 1)
        padded = jnp.pad(x, pad)
        m = x.shape[axis] + width - 1
        x = jax.lax.slice_in_dim(padded, 0, m, axis=axis)
        for s in range(1, width):
            x = x + jax.lax.slice_in_dim(padded, s, s + m, axis=axis)
    return x


def window_jackknife(
    score: Float[Array, "n n n_phi m"],
    info: Float[Array, "n n n_phi m m"],
    h: Float[Array, "K K"],
    embed: Float[Array, "n_phi K m"],
    width: int,
) -> Float[Array, "K K"]:
    """Covariance of all fitted parameters when the errors of C2 elements are correlated between
    nearby pairs of frames: a jackknife that leaves out windows of the two-time grid.

    The pairs of each angle are summed into squares, (block i) × (block j), blocks of frames
    about as wide as frames stay correlated (`Problem.block_scores`: ``score`` = J_kᵀr and
    ``info`` = J_kᵀJ_k over angle k's parameters [θ, contrast_k, offset_k], m = F + 2). Errors of
    elements (i, j) and (k, l) are correlated when i is near k and j near l (they share speckle
    patterns while g1 is high; SPEC §6), not across angles (separate pixels). Every window W of
    ``width`` × ``width`` squares of one angle, at every position, is left out in turn: the fit
    without it moves by d_W = (H − H_W)⁻¹S_W (one Newton step over all parameters, so contrast and
    offset are fitted again without the window), and V = Σ_W d_W d_Wᵀ / width².

    Why windows: Σ_W S_W S_Wᵀ / width² counts each pair of squares a and b apart (in squares) with
    weight (1 − a/width)(1 − b/width), a Bartlett window in two dimensions (positive
    semi-definite); and leaving out a whole window, not one square, undoes the shrinkage that the
    fit leaves in the residuals of a square's correlated neighbours, which otherwise hides a
    quarter of the variance (measured: `benchmarks/estimator_study.py`).

    ``h`` is the information over all K parameters [θ, contrast, offset] (a held parameter has
    an identity row and column and zero scores), and ``embed[k]`` (K, m) places angle k's
    parameters among them. The Newton steps are taken through the Woodbury identity: with
    G_k = E_kᵀH⁻¹E_k, d_W = H⁻¹E_k G_k⁻¹ z_W, z_W = (G_k⁻¹ − H_W)⁻¹ S_W, G_k⁻¹ − H_W being the
    information that remains on angle k's parameters (positive semi-definite).
    """
    m = score.shape[-1]
    h_inverse = inverse(h)
    g = jnp.einsum("kam,ab,kbn->kmn", embed, h_inverse, embed)  # (n_phi, m, m)
    g_inverse = _spd_solve_scaled(g, jnp.broadcast_to(jnp.eye(m), g.shape))
    g_inverse = 0.5 * (g_inverse + jnp.swapaxes(g_inverse, -1, -2))
    s_w = window_sums(score, width)  # (n + w − 1, n + w − 1, n_phi, m)
    h_w = window_sums(info, width)
    z = _spd_solve_scaled(g_inverse - h_w, s_w[..., None])[..., 0]
    zz = jnp.einsum("abkm,abkn->kmn", z, z) / width**2
    y = g_inverse @ zz @ g_inverse  # Σ_W y_W y_Wᵀ, y = G⁻¹z
    meat = jnp.einsum("kam,kmn,kbn->ab", embed, y, embed)
    cov = h_inverse @ meat @ h_inverse
    return 0.5 * (cov + cov.T)
