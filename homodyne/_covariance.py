"""Information matrix, covariance and the minimum test of a fit."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

DECREMENT_TOL = 1e-2  # converged: a Gauss–Newton step would gain < 0.01 in χ² (≈ 0.1 σ)
#: the error jackknife leaves out windows of this many blocks of frames per side: a block and its
#: neighbours on each side, which share its correlated errors
ERROR_WINDOW = 3


def inverse(h: Float[Array, "K K"]) -> Float[Array, "K K"]:
    """Inverse of a symmetric positive semi-definite matrix, after scaling it to unit diagonal;
    directions with no information get a huge (not infinite) variance instead of a failure."""
    d = jnp.sqrt(jnp.where(jnp.diagonal(h) > 0, jnp.diagonal(h), 1e-300))
    scaled = h / (d[:, None] * d[None, :])
    evals, evecs = jnp.linalg.eigh(scaled)
    evals = jnp.maximum(evals, 1e-15 * jnp.max(evals))
    return (evecs / evals) @ evecs.T / (d[:, None] * d[None, :])


def _spd_solve(a: Float[Array, "*B F F"], b: Float[Array, "*B F"]) -> Float[Array, "*B F"]:
    """a⁻¹b for a batch of small positive semi-definite matrices with unit diagonal: Cholesky
    written out in array operations, pivots floored at 1e-12 (a direction that only the removed
    cluster informs gets a huge, finite shift). Not LAPACK: a batched LAPACK call (eigh, LU) in
    one program with a pass's psum hangs XLA's CPU runtime when it simulates several devices."""
    f = a.shape[-1]
    cols: list = []
    for k in range(f):  # column k of the lower factor L, a = L Lᵀ
        c = a[..., :, k]
        for j in range(k):
            c = c - cols[j] * cols[j][..., k : k + 1]
        pivot = jnp.sqrt(jnp.maximum(c[..., k : k + 1], 1e-12))
        cols.append(jnp.where(jnp.arange(f) >= k, c / pivot, 0.0))
    low = jnp.stack(cols, axis=-1)  # (..., F, F)
    y = []
    for i in range(f):  # L y = b
        acc = b[..., i]
        for j in range(i):
            acc = acc - low[..., i, j] * y[j]
        y.append(acc / low[..., i, i])
    x: list = [None] * f
    for i in reversed(range(f)):  # Lᵀ x = y
        acc = y[i]
        for j in range(i + 1, f):
            acc = acc - low[..., j, i] * x[j]
        x[i] = acc / low[..., i, i]
    return jnp.stack(x, axis=-1)


def _spd_solve_scaled(a: Float[Array, "*B F F"], b: Float[Array, "*B F"]) -> Float[Array, "*B F"]:
    """a⁻¹b for positive semi-definite ``a`` of any scale: `_spd_solve` after scaling ``a`` to
    unit diagonal (a zero diagonal entry, a direction nothing informs, is left unscaled)."""
    diag = jnp.diagonal(a, axis1=-2, axis2=-1)
    d = jnp.sqrt(jnp.where(diag > 0, diag, 1.0))
    return _spd_solve(a / (d[..., :, None] * d[..., None, :]), b / d) / d


def window_sums(x: Float[Array, "n n ..."], width: int) -> Float[Array, "m m ..."]:
    """Sums of ``x`` over every ``width`` × ``width`` window of its first two axes that overlaps
    the grid, m = n + width − 1 per axis (windows at the edges are partly outside)."""
    for axis in (0, 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (width, width - 1)
        c = jnp.cumsum(jnp.pad(x, pad), axis=axis)
        n = c.shape[axis]
        x = jnp.take(c, jnp.arange(width, n), axis=axis) - jnp.take(
            c, jnp.arange(0, n - width), axis=axis
        )
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
    eye = jnp.broadcast_to(jnp.eye(m), g.shape)
    g_inverse = jax.vmap(jax.vmap(_spd_solve_scaled, in_axes=(None, 0)))(g, eye)
    g_inverse = 0.5 * (g_inverse + jnp.swapaxes(g_inverse, -1, -2))
    s_w = window_sums(score, width)  # (n + w − 1, n + w − 1, n_phi, m)
    h_w = window_sums(info, width)
    z = _spd_solve_scaled(g_inverse - h_w, s_w)
    zz = jnp.einsum("abkm,abkn->kmn", z, z) / width**2
    y = g_inverse @ zz @ g_inverse  # Σ_W y_W y_Wᵀ, y = G⁻¹z
    meat = jnp.einsum("kam,kmn,kbn->ab", embed, y, embed)
    cov = h_inverse @ meat @ h_inverse
    return 0.5 * (cov + cov.T)
