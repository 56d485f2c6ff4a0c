"""The default solver of a fit: Levenberg–Marquardt on the compressed residuals of `Problem`.

It is an optimistix Gauss–Newton solver (damped Newton descent, any optimistix search machinery
around it) with two differences from `optx.LevenbergMarquardt` that matter for XPCS fits:

- The damping starts at τ·max diag(JᵀJ) and follows Nielsen's update (H. B. Nielsen, "Damping
  parameter in Marquardt's method", IMM-REP-1999-05), so it adapts to the scale of χ², which runs
  from 1e2 to 1e8 with the size of the data; a fixed first damping of 1 wasted about eight
  rejected steps on every fit.
- It also stops when the Gauss–Newton decrement |z|² = gᵀH⁻¹g (the χ² a full Gauss–Newton step
  would still gain, read off the compressed residuals) falls below ``decrement_tol``: then the
  estimates are within a small fraction of a standard error of the minimum, and further steps only
  polish digits that the data do not determine.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx
from jaxtyping import Array, Bool, PyTree, Scalar

#: a decrement below this fraction of χ² is not resolved by float64 sums of χ² (≈ 5000 eps)
DECREMENT_RESOLUTION = 1e-12
#: stop when a full Gauss–Newton step would gain less than this in χ² (σ² units; default tolerances)
SOLVER_DECREMENT_TOL = 1e-6


def _quiet(**_) -> None:
    pass


class _DampingState(eqx.Module):
    step_size: Scalar  # 1 / damping
    growth: Scalar  # factor for the next rejection


class MarquardtDamping(optx.AbstractSearch):
    """Damping update for `optx.DampedNewtonDescent` (step size = 1/damping).

    The gain ratio ρ = actual / predicted decrease of ½|r|² decides: ρ > 0 accepts the step and
    scales the damping by max(1/3, 1 − (2ρ − 1)³); otherwise the damping grows by a factor that
    doubles with every consecutive rejection.
    """

    initial: float = 1e-5  # τ: first damping relative to the largest diagonal entry of JᵀJ

    def init(self, y, f_info_struct) -> _DampingState:
        del y, f_info_struct
        return _DampingState(step_size=jnp.array(1.0), growth=jnp.array(2.0))

    def step(
        self,
        first_step: Bool[Array, ""],
        y,
        y_eval,
        f_info,
        f_eval_info,
        state: _DampingState,
    ) -> tuple[Scalar, Bool[Array, ""], optx.RESULTS, _DampingState]:
        jac = f_eval_info.jac.as_matrix()
        first_size = 1.0 / (self.initial * jnp.max(jnp.sum(jac * jac, axis=0)) + 1e-300)
        delta = jax.tree.map(jnp.subtract, y_eval, y)
        j_delta = f_info.jac.mv(delta)
        r0 = f_info.residual
        predicted = -(jnp.vdot(r0, j_delta) + 0.5 * jnp.vdot(j_delta, j_delta))
        actual = 0.5 * (jnp.vdot(r0, r0) - jnp.vdot(f_eval_info.residual, f_eval_info.residual))
        rho = actual / jnp.where(predicted > 0, predicted, jnp.inf)
        accept = (rho > 0) & jnp.isfinite(actual)
        shrink = jnp.maximum(1 / 3, 1 - (2 * jnp.minimum(rho, 1.0) - 1) ** 3)
        size = jnp.where(accept, state.step_size / shrink, state.step_size / state.growth)
        growth = jnp.where(accept, 2.0, 2 * state.growth)
        size = jnp.where(first_step, first_size, size)
        growth = jnp.where(first_step, 2.0, growth)
        accept = accept | first_step
        return size, accept, optx.RESULTS.successful, _DampingState(size, growth)


class FitSolver(optx.AbstractGaussNewton):
    """Levenberg–Marquardt for `homodyne.fit` (see the module docstring).

    ``rtol``/``atol`` are optimistix's Cauchy tolerances on steps and residuals; the solver also
    stops at a Gauss–Newton decrement below ``decrement_tol`` (default 1e-6 · (min(rtol, atol) /
    1e-8)², at most 1e-3) or below 1e-12 χ², the resolution of χ² in float64.
    """

    rtol: float
    atol: float
    norm: Callable[[PyTree], Scalar]
    descent: optx.DampedNewtonDescent
    search: MarquardtDamping
    verbose: Callable[..., None]
    decrement_tol: float

    def __init__(
        self,
        rtol: float,
        atol: float,
        *,
        decrement_tol: float | None = None,
        verbose: Callable[..., None] | bool = False,
    ):
        self.rtol = rtol
        self.atol = atol
        self.norm = optx.max_norm
        # the compressed Jacobian is (F + 1) × F: any factorisation is free
        self.descent = optx.DampedNewtonDescent(linear_solver=lx.QR())
        self.search = MarquardtDamping()
        # a module-level function: a new lambda per solver would recompile every fit
        self.verbose = verbose if callable(verbose) else _quiet
        if decrement_tol is None:
            # a decrement is quadratic in the distance to the minimum: tolerances on steps of
            # 1e-8 (the default) give 1e-6; tighter ones ask for proportionally more
            decrement_tol = min(1e-3, SOLVER_DECREMENT_TOL * (min(rtol, atol) / 1e-8) ** 2)
        self.decrement_tol = decrement_tol

    def terminate(self, fn, y, args, options: dict[str, Any], state, tags):
        done, result = super().terminate(fn, y, args, options, state, tags)
        residual = state.f_info.residual  # at the last accepted point
        z = residual[:-1]  # |z|² = gᵀH⁻¹g
        # χ² itself is known to ~eps·χ²: a decrement far below that cannot be resolved by comparing
        # trial values, and asking for it leaves the damping to grow until max_steps
        tol = jnp.maximum(self.decrement_tol, DECREMENT_RESOLUTION * jnp.vdot(residual, residual))
        small = (state.num_accepted_steps > 0) & (jnp.vdot(z, z) < tol)
        return done | small, result
