"""Information matrix, covariance and the minimum test of a fit."""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

DECREMENT_TOL = 1e-2  # converged: a Gauss–Newton step would gain < 0.01 in χ² (≈ 0.1 σ)
#: the error covariance sums scores over windows of this many blocks of frames per side: a block
#: and its neighbours on each side, which share its correlated errors
ERROR_WINDOW = 3
#: Newton–Schulz steps at most (`_leverage_factor`): 10 reach leverage 0.99, 21 leverage 1
MAX_SQRT_STEPS = 40
#: factors (I + e^(2^k)) of the product that gives 2(I + x)⁻¹ (`_leverage_factor`)
INVERSE_STEPS = 7


#: the pivots of `_cholesky` (of a matrix with unit diagonal) are floored at PIVOT_FLOOR: a
#: direction the information does not resolve in float64 gets a variance ~1/PIVOT_FLOOR, huge and
#: finite
PIVOT_FLOOR = 1e-12
#: a parameter whose component along such a direction exceeds this (squared, relative to the
#: component of the parameter whose pivot was floored) is not determined by the data
#: (`inverse_and_blind`)
BLIND = 1e-8


def inverse_and_blind(
    h: Float[Array, "*B K K"],
) -> tuple[Float[Array, "*B K K"], Bool[Array, "*B K"]]:
    """Inverse of a symmetric positive semi-definite matrix, and which parameters the matrix does
    not determine. Scaled to unit diagonal (a zero diagonal entry is left unscaled), factored
    (`_cholesky`), then (L Lᵀ)⁻¹ = L⁻ᵀL⁻¹ (`_lower_inverse`). No LAPACK: see `_cholesky`.

    A direction with no information (a pivot floored at `PIVOT_FLOOR`) gets a huge, finite
    variance instead of a failure. Row k of L⁻¹ for a floored pivot k is that direction times
    PIVOT_FLOOR^(−1/2) (up to rounding): parameter i is blind when its entry there, squared and
    times PIVOT_FLOOR, exceeds `BLIND`; (H⁻¹)_ii is then that direction's, not the parameter's."""
    diag = jnp.diagonal(h, axis1=-2, axis2=-1)
    d = jnp.sqrt(jnp.where(diag > 0, diag, 1.0))
    scale = d[..., :, None] * d[..., None, :]
    low, floored = _cholesky(h / scale)
    low_inverse = _lower_inverse(low)
    inv = jnp.swapaxes(low_inverse, -1, -2) @ low_inverse / scale
    along = jnp.where(floored[..., :, None], low_inverse * low_inverse, 0.0)  # (..., K, K)
    blind = PIVOT_FLOOR * jnp.max(along, axis=-2) > BLIND
    return 0.5 * (inv + jnp.swapaxes(inv, -1, -2)), blind


def inverse(h: Float[Array, "*B K K"]) -> Float[Array, "*B K K"]:
    """The inverse of `inverse_and_blind`."""
    return inverse_and_blind(h)[0]


def _cholesky(a: Float[Array, "*B F F"]) -> tuple[Float[Array, "*B F F"], Bool[Array, "*B F"]]:
    """Lower Cholesky factor L of a batch of small positive semi-definite matrices with unit
    diagonal, a = L Lᵀ, and which pivots were floored: array operations in a loop over the
    columns (a small program, quick to compile). Each c_kk (the diagonal entry left after the
    columns before k) is floored at `PIVOT_FLOOR`, so a direction nothing informs gets a huge,
    finite variance. Not LAPACK: jaxlib's batched LAPACK kernels (a fit under `vmap`) split their
    batch over XLA's CPU thread pool and wait for it; two of them running at once on that pool's
    threads, or one beside a pass's psum between simulated devices, wait for each other for ever
    (seen: two batched eigh calls in `fit_many`, 2 threads; gdb showed both in ParallelBatchMap)."""
    f = a.shape[-1]
    index = jnp.arange(f)

    def factor(k, state):  # column k of L (columns ≥ k still 0)
        low, floored = state
        row_k = jnp.take(low, k, axis=-2)  # (..., F)
        c = jnp.take(a, k, axis=-1) - jnp.einsum("...ij,...j->...i", low, row_k)
        c_kk = jnp.take(c, k, axis=-1)[..., None]
        pivot = jnp.sqrt(jnp.maximum(c_kk, PIVOT_FLOOR))
        column = jnp.where(index > k, c / pivot, jnp.where(index == k, pivot, 0.0))
        floored = jnp.where(index == k, c_kk <= PIVOT_FLOOR, floored)
        return jnp.where(index == k, column[..., :, None], low), floored

    start = (jnp.zeros_like(a), jnp.zeros(a.shape[:-1], bool))
    return jax.lax.fori_loop(0, f, factor, start)


def _lower_inverse(low: Float[Array, "*B F F"]) -> Float[Array, "*B F F"]:
    """L⁻¹ of lower triangular matrices L with nonzero diagonal: forward substitution on the
    identity, a loop over the rows."""
    f = low.shape[-1]
    index = jnp.arange(f)
    diagonal = jnp.diagonal(low, axis1=-2, axis2=-1)  # (..., F)

    def row(i, x):  # row i of L⁻¹, the rows before it already in x (the others 0)
        acc = (index == i).astype(low.dtype) - jnp.einsum(
            "...j,...jr->...r", jnp.take(low, i, axis=-2), x
        )
        return jnp.where(
            (index == i)[:, None],
            (acc / jnp.take(diagonal, i, axis=-1)[..., None])[..., None, :],
            x,
        )

    return jax.lax.fori_loop(0, f, row, jnp.zeros_like(low))


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


def _leverage_factor(x: Float[Array, "*B F F"], s: Float[Array, "*B F"]) -> Float[Array, "*B F"]:
    """f(x)·s, f(x) = x^(−1/2) · 2(I + x)⁻¹, for a batch of matrices whose eigenvalues are real and
    in [1e-6, 1 + 1e-6] (x need not be symmetric: x = (1 + 1e-6)I − H_W G is similar to a
    symmetric one), by matrix products only (no LAPACK, see `_cholesky`):
    - 2(I + x)⁻¹s = b⁻¹s, b = (I + x)/2 = I − e, as (I + e)(I + e²)(I + e⁴)…s: e's eigenvalues lie
      in [0, ½], so that `INVERSE_STEPS` factors leave an error e^(2^steps) of 2⁻¹²⁸ (times the
      condition number of the similarity that makes x symmetric, far below 2⁸⁰);
    - x^(−1/2) by the coupled Newton–Schulz iteration, which converges for eigenvalues of c·x in
      (0, 2), here c = 1.9; from 1 it needs ~log(1/√λ)/log 1.5 + 4 steps for the smallest
      eigenvalue λ, and stops when every matrix of the batch has converged, or when the largest
      error has stopped falling below 1e-6: rounding in a non-symmetric x is amplified by the
      condition number of the similarity that makes it symmetric (≈ √ of G's in units of the
      standard errors). At a variance inflation of 1e10 (a correlation of 1 − 5e-11) it stalls
      near 1e-8, and the standard errors are right to 1e-4–1e-3 (through a symmetric whitening,
      ~1e-5)."""
    c = 1.9
    eye = jnp.eye(x.shape[-1])

    def factor(_, state):  # v ← (I + e^(2^k)) v, e ← e²
        e, v = state
        return e @ e, v + jnp.einsum("...ij,...j->...i", e, v)

    _, v = jax.lax.fori_loop(0, INVERSE_STEPS, factor, (0.5 * (eye - x), s))

    def step(state):  # y → (c·x)^(1/2), z → (c·x)^(−1/2), zy → I
        y, z, zy, k, error, _ = state
        t = 1.5 * eye - 0.5 * zy
        y, z = y @ t, t @ z
        zy = z @ y
        return y, z, zy, k + 1, jnp.max(jnp.abs(zy - eye)), error

    def going(state):  # until converged, or stalled close to it by rounding (see above)
        k, error, before = state[3:]
        stalled = (error < 1e-6) & (error >= before)
        return (k < MAX_SQRT_STEPS) & (error > 1e-12) & ~stalled

    y0 = c * x
    start = (y0, jnp.broadcast_to(eye, x.shape), y0, 0, jnp.inf, jnp.inf)
    _, z, *_ = jax.lax.while_loop(going, step, start)
    return np.sqrt(c) * jnp.einsum("...ij,...j->...i", z, v)


def window_covariance(
    score: Float[Array, "n n n_phi m"],
    info: Float[Array, "n n n_phi m m"],
    h_inverse: Float[Array, "K K"],
    embed: Float[Array, "n_phi K m"],
    width: int,
) -> Float[Array, "K K"]:
    """Covariance of all fitted parameters when the errors of C2 elements are correlated between
    nearby pairs of frames: a sandwich H⁻¹MH⁻¹ whose middle M sums the scores of windows of the
    two-time grid, each corrected for its window's leverage.

    The pairs of each angle are summed into squares, (block a) × (block b), a ≤ b, blocks of frames
    about as wide as frames stay correlated (`Problem.block_scores`: ``score`` = J_kᵀr and
    ``info`` = J_kᵀJ_k over angle k's parameters [θ, contrast_k, offset_k], m = F + 2). Errors of
    elements (i, j) and (k, l) are correlated when i is near k and j near l (they share speckle
    patterns while g1 is high; SPEC §6), not across angles (separate pixels). Every window W of
    ``width`` × ``width`` squares of one angle, at every position, contributes y_W y_Wᵀ / width²:
    Σ_W S_W S_Wᵀ / width² counts each pair of squares a and b apart (in squares) with weight
    (1 − a/width)(1 − b/width), a Bartlett window in two dimensions (positive semi-definite).

    Leverage: the fit follows its data, so residual scores are shrunk, most where a window alone
    informs a direction: S_W = (I − H_W G) s_W − H_W G s_out for true scores s (G = the angle's
    block of H⁻¹; H_W G has the window's leverages λ ∈ [0, 1] as eigenvalues). Each window's
    score is scaled back up, y_W = f(I − H_W G) S_W, with f(x) = x^(−1/2) · 2/(1 + x):
    - Bell & McCaffrey's CR2, f = x^(−1/2), is exact (unbiased) when the element errors are
      independent. On frame-level detector data it comes out ~0.8× the seed-to-seed scatter: the
      errors a window shares with its correlated neighbours are shrunk too (measured,
      `benchmarks/coverage.py --leverage`).
    - Leaving the window out (a jackknife: what homodyne did before), f = 1/x, gets detector data
      right at the moderate leverages (0.2–0.6) of typical windows, but over-corrects by
      (1 − λ)^(−1/2) as λ → 1: errors up to 4× too wide where few windows carry a parameter
      (slow dynamics, few blocks).
    - f here is the jackknife's to first order in λ and never more than 2× CR2's: measured, it
      keeps the jackknife's coverage on detector data and cuts its over-width on independent
      errors from 4.2× to 1.4× (the worst parameter).
    f(I − H_W G) is a matrix function of a matrix that is not symmetric but similar to one
    (with G = R Rᵀ, H_W G = R⁻ᵀ (RᵀH_W R) Rᵀ), so its eigenvalues are the leverages, real, and
    polynomials in it converge as they would for the symmetric one (`_leverage_factor`: matrix
    products only, in one loop).

    ``h_inverse`` is the inverse of the information over all K parameters [θ, contrast, offset]
    (`inverse`; a held parameter has an identity row and column and zero scores), and ``embed[k]`` (K, m) places angle k's
    parameters among them. Squares below the diagonal (a > b) must be empty: the windows that
    hold only those are skipped.
    """
    n, m = score.shape[0], score.shape[-1]
    g = jnp.einsum("kam,ab,kbn->kmn", embed, h_inverse, embed)  # (n_phi, m, m)
    # in units of each parameter's standard error (G to unit diagonal): f commutes with the
    # change of units, and the matrices it takes are then of order 1
    diag = jnp.diagonal(g, axis1=-2, axis2=-1)
    d = jnp.sqrt(jnp.where(diag > 0, diag, 1.0))  # (n_phi, m)
    g = g / (d[:, :, None] * d[:, None, :])
    # windows that hold a square on or above the diagonal: rows a − width + 1 … a, columns up to b
    a, b = np.nonzero(np.subtract.outer(np.arange(n + width - 1), np.arange(n + width - 1)) < width)
    s_w = window_sums(score, width)[a, b] * d  # (windows, n_phi, m)
    h_w = window_sums(info, width)[a, b] * (d[:, :, None] * d[:, None, :])
    # x = (1 + 1e-6) − H_W G: a window that alone informs a direction (leverage 1) gets a
    # factor 2000, large and finite
    x = (1 + 1e-6) * jnp.eye(m) - h_w @ g
    y = _leverage_factor(x, s_w) / d  # y_W = f(I − H_W G) S_W
    y = jnp.einsum("wkm,wkn->kmn", y, y) / width**2  # Σ_W y_W y_Wᵀ / width²
    meat = jnp.einsum("kam,kmn,kbn->ab", embed, y, embed)
    cov = h_inverse @ meat @ h_inverse
    return 0.5 * (cov + cov.T)
