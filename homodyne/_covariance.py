"""Information matrix, covariance and the minimum test of a fit."""

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

DECREMENT_TOL = 1e-2  # converged: a Gauss–Newton step would gain < 0.01 in χ² (≈ 0.1 σ)


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


def _bartlett_meat(x: Float[Array, "n n D"]) -> Float[Array, "D D"]:
    """Σ_{c,c'} w(Δ₁)w(Δ₂) x_c x_c'ᵀ over a grid of clusters c, w(0) = 1, w(±1) = ½: clusters next
    to each other count half (a Bartlett window in both directions, positive semi-definite)."""

    def smooth(y, axis):
        y = jnp.moveaxis(y, axis, 0)
        padded = jnp.pad(y, [(1, 1)] + [(0, 0)] * (y.ndim - 1))
        return jnp.moveaxis(y + 0.5 * (padded[:-2] + padded[2:]), 0, axis)

    meat = jnp.einsum("ab...k,ab...l->kl", x, smooth(smooth(x, 0), 1))
    return 0.5 * (meat + meat.T)


def clustered_covariance(
    score: Float[Array, "n n n_phi F"],
    info: Float[Array, "n n F F"],
    lin_score: Float[Array, "n n L"],
    h_ll_inverse: Float[Array, "L L"],
    projection: Float[Array, "L F"],
) -> tuple[Float[Array, "K K"], Int[Array, ""]]:
    """Covariance of [physical, contrast, offset] when the errors of C2 elements are correlated
    between nearby pairs of frames, and the number of clusters it rests on.

    The pairs of each angle are grouped into clusters: squares of the two-time grid, (block i) ×
    (block j), with blocks as wide as frames stay correlated (`Problem.block_scores` gives the
    squares' sums; squares without pairs do not count). Errors of elements (i, j) and (k, l) are
    correlated when i is near k and j near l (they share speckle patterns while g1 is high; SPEC
    §6), and elements in squares far apart are not; the angles are separate pixels of the
    detector, so their errors are independent and each angle's part of a square is a cluster of
    its own. The physical parameters' covariance is a jackknife over the clusters: leaving one
    out moves them by d = (H̃ − H̃_c)⁻¹ S̃ (one Newton step with contrast and offset profiled out;
    S̃ the cluster's reduced score, ``score`` (n, n, n_phi, F), and H̃_c the square's reduced
    information over all angles, ``info``, a conservative stand-in for the angle's share), and
    V = (G − 1)/G · Σ w(Δ₁)w(Δ₂) d d'ᵀ over pairs of clusters of the same angle, where squares
    next to each other count half (a Bartlett window, positive semi-definite) for correlations
    across their edges. Unlike the plain sandwich H⁻¹(Σ S_c S_cᵀ)H⁻¹, it does not shrink where a
    few clusters hold most of a parameter's information (late frames of slow dynamics). Contrast
    and offset, determined by every pair of their angle, take the sandwich of their own scores plus
    what the physical parameters' errors carry into them (l̂ = l*(θ̂), dl*/dθ = −Π, Π =
    ``projection`` = H_ll⁻¹H_lθ).
    """
    f = score.shape[-1]
    n_phi = score.shape[2]
    h_red = jnp.sum(info, axis=(0, 1))
    # The information without angle k of square c: taken as without the whole square (each
    # angle's share would be about 1/n_phi of it; the whole is the conservative side, and
    # measured on frame-level data it kept the median σ/sd of every parameter ≥ 0.84)
    rest = h_red - info  # (n, n, F, F)
    d = jnp.sqrt(jnp.where(jnp.diagonal(h_red) > 0, jnp.diagonal(h_red), 1.0))
    scaled = (rest / (d[:, None] * d[None, :]))[:, :, None]  # (n, n, 1, F, F)
    shifts = _spd_solve(scaled, score / d) / d  # (n, n, n_phi, F)
    n_clusters = n_phi * jnp.sum(jnp.trace(info, axis1=-2, axis2=-1) > 0)  # angles × squares
    g = n_clusters.astype(jnp.float64)
    v = _bartlett_meat(shifts) * ((g - 1) / jnp.maximum(g, 1))
    u = jnp.einsum("lm,abm->abl", h_ll_inverse, lin_score)
    w = _bartlett_meat(u)
    a = jnp.concatenate([jnp.eye(f), -projection], axis=0)  # (K, F)
    cov = a @ v @ a.T
    cov = cov.at[f:, f:].add(w)
    return 0.5 * (cov + cov.T), n_clusters
