"""Information matrix, covariance and the minimum test of a fit."""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._problem import Problem

DECREMENT_TOL = 1e-2  # converged: a Gauss–Newton step would gain < 0.01 in χ² (≈ 0.1 σ)


def information(problem: Problem, theta, contrast, offset, u):
    """JᵀJ and Jᵀr over [free physical parameters, contrast, offset] (per angle or shared),
    accumulated block by block: the contrast/offset columns are known in closed form, so only the
    (n_res × F) Jacobian of the physical parameters is formed."""
    r = problem.residuals_at(theta, contrast, offset)
    free = np.flatnonzero(problem.free)

    def r_of_free(theta_free):
        return problem.residuals_at(theta.at[free].set(theta_free), contrast, offset)

    jac = jax.jacfwd(r_of_free)(theta[free])  # (n_phi, n_pairs, F)
    x = problem.basis(theta)
    w = problem.weight
    dc, db = -w * x, -w  # ∂r/∂contrast_k, ∂r/∂offset_k on angle k's residuals
    a = jnp.einsum("kpi,kpj->ij", jac, jac)
    g_phys = jnp.einsum("kpi,kp->i", jac, r)
    if problem.shared:
        b_block = jnp.stack([jnp.einsum("kpi,kp->i", jac, dc), jnp.einsum("kpi,kp->i", jac, db)], 1)
        c_block = jnp.array(
            [[jnp.sum(dc * dc), jnp.sum(dc * db)], [jnp.sum(dc * db), jnp.sum(db * db)]]
        )
        g_lin = jnp.array([jnp.sum(dc * r), jnp.sum(db * r)])
    else:
        b_block = jnp.concatenate(
            [jnp.einsum("kpi,kp->ik", jac, dc), jnp.einsum("kpi,kp->ik", jac, db)], axis=1
        )
        c_block = jnp.block(
            [
                [jnp.diag(jnp.sum(dc * dc, 1)), jnp.diag(jnp.sum(dc * db, 1))],
                [jnp.diag(jnp.sum(dc * db, 1)), jnp.diag(jnp.sum(db * db, 1))],
            ]
        )
        g_lin = jnp.concatenate([jnp.sum(dc * r, 1), jnp.sum(db * r, 1)])
    h = jnp.block([[a, b_block], [b_block.T, c_block]])
    return h, jnp.concatenate([g_phys, g_lin]), jnp.sum(r**2)


def inverse(h: Float[Array, "K K"]) -> Float[Array, "K K"]:
    """Inverse of a symmetric positive semi-definite matrix, after scaling it to unit diagonal;
    directions with no information get a huge (not infinite) variance instead of a failure."""
    d = jnp.sqrt(jnp.where(jnp.diagonal(h) > 0, jnp.diagonal(h), 1e-300))
    scaled = h / (d[:, None] * d[None, :])
    evals, evecs = jnp.linalg.eigh(scaled)
    evals = jnp.maximum(evals, 1e-15 * jnp.max(evals))
    return (evecs / evals) @ evecs.T / (d[:, None] * d[None, :])
