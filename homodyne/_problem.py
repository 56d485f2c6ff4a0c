"""The least-squares problem a fit hands to optimistix: residuals with variable projection."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._bounds import BoundedTransform
from ._model import HomodyneModel
from ._params import LaminarFlowParams, Params, StaticParams


class Problem(eqx.Module):
    """Everything the residuals need, as arrays: new data of the same shape reuses compiled code."""

    model: HomodyneModel
    data: Float[Array, "n_phi n_pairs"]  # upper triangle, t1 < t2
    weight: Float[Array, "n_phi n_pairs"]  # 1/σ
    pairs: Int[Array, " n_pairs"]  # flat indices i·N + j of the pairs i < j
    transform: BoundedTransform  # over the free physical parameters
    lin_lower: Float[Array, " 2"]  # contrast and offset bounds
    lin_upper: Float[Array, " 2"]
    fixed_values: Float[Array, " P"]  # physical values (used where not free)
    free: tuple[bool, ...] = eqx.field(static=True)  # (P,): which physical parameters are fitted
    laminar: bool = eqx.field(static=True)
    shared: bool = eqx.field(static=True)

    def physical(self, u: Float[Array, " F"]) -> Float[Array, " P"]:
        full = self.fixed_values
        return full.at[np.flatnonzero(self.free)].set(self.transform.to_physical(u))

    def typed(self, theta: Float[Array, " P"]) -> Params:
        return (LaminarFlowParams if self.laminar else StaticParams).from_array(theta)

    def basis(self, theta: Float[Array, " P"]) -> Float[Array, "n_phi n_pairs"]:
        """g1² on the fitted pairs: g2 = offset + contrast · basis."""
        g1 = self.model.g1(self.typed(theta))
        return jnp.reshape(g1**2, (g1.shape[0], -1))[:, self.pairs]

    def scaling(self, x: Float[Array, "n_phi n_pairs"]) -> tuple[Array, Array]:
        """Weighted least-squares contrast and offset for g1² = x (per angle or shared), clipped
        to their bounds."""
        axis = None if self.shared else 1
        w2 = self.weight**2
        total = jnp.sum(w2, axis=axis, keepdims=True)
        x_mean = jnp.sum(w2 * x, axis=axis, keepdims=True) / total
        d_mean = jnp.sum(w2 * self.data, axis=axis, keepdims=True) / total
        sxx = jnp.sum(w2 * (x - x_mean) ** 2, axis=axis)
        sxy = jnp.sum(w2 * (x - x_mean) * (self.data - d_mean), axis=axis)
        c = jnp.where(sxx > 0, sxy / jnp.where(sxx > 0, sxx, 1.0), 0.0)
        c = jnp.clip(c, self.lin_lower[0], self.lin_upper[0])
        b = jnp.clip(
            jnp.reshape(d_mean, c.shape) - c * jnp.reshape(x_mean, c.shape),
            self.lin_lower[1],
            self.lin_upper[1],
        )
        n_phi = self.data.shape[0]
        return jnp.broadcast_to(c, (n_phi,)), jnp.broadcast_to(b, (n_phi,))

    def residuals_at(self, theta, contrast, offset) -> Float[Array, "n_phi n_pairs"]:
        model = offset[:, None] + contrast[:, None] * self.basis(theta)
        return (self.data - model) * self.weight

    def projected_residuals(self, theta) -> Float[Array, "n_phi n_pairs"]:
        x = self.basis(theta)
        c, b = self.scaling(x)
        return (self.data - (b[:, None] + c[:, None] * x)) * self.weight


def progress(**fields) -> None:
    """Per-step progress for ``fit(verbose=True)``: optimistix passes (label, value) pairs."""
    step = fields.get("num_steps", ("", -1))[1]
    loss = fields.get("loss_last_accepted_step", fields.get("loss_this_step", ("", jnp.nan)))[1]
    jax.debug.callback(print_step, step, 2 * loss, ordered=True)


def print_step(step, chi2) -> None:
    if int(step) > 0:  # step 0 has no evaluated loss yet
        print(f"  step {int(step):4d}   chi2 = {float(chi2):.8g}", flush=True)


def solver_residuals(u, problem: Problem):
    # module-level, so optimistix sees the same function object every call (no recompilation)
    return problem.projected_residuals(problem.physical(u)).ravel()
