"""Information matrix, covariance and the minimum test of a fit."""

import jax.numpy as jnp
from jaxtyping import Array, Float

DECREMENT_TOL = 1e-2  # converged: a Gauss–Newton step would gain < 0.01 in χ² (≈ 0.1 σ)


def inverse(h: Float[Array, "K K"]) -> Float[Array, "K K"]:
    """Inverse of a symmetric positive semi-definite matrix, after scaling it to unit diagonal;
    directions with no information get a huge (not infinite) variance instead of a failure."""
    d = jnp.sqrt(jnp.where(jnp.diagonal(h) > 0, jnp.diagonal(h), 1e-300))
    scaled = h / (d[:, None] * d[None, :])
    evals, evecs = jnp.linalg.eigh(scaled)
    evals = jnp.maximum(evals, 1e-15 * jnp.max(evals))
    return (evecs / evals) @ evecs.T / (d[:, None] * d[None, :])
