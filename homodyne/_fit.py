"""Least-squares fits of g2 to measured C2 with optimistix (SPEC §4).

The solver sees only the free physical parameters, in the bounded O(1) coordinates of
`BoundedTransform`. Contrast and offset enter g2 linearly, so for every trial of the physical
parameters they are solved in closed form per angle (variable projection): the solver's problem has
at most 7 unknowns whatever the number of angles, and needs no starting values for them.
"""

from collections.abc import Mapping, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Float

from ._bounds import BoundedTransform, resolve_bounds
from ._covariance import DECREMENT_TOL, information, inverse
from ._model import HomodyneModel
from ._params import AbstractParams, LaminarFlowParams, Params, StaticParams, params_from_array
from ._precision import as_float64
from ._problem import Problem, progress, solver_residuals, tiled_problem
from ._result import FitResult
from ._solver import FitSolver
from ._start import MIN_FRAMES_FOR_NOISE, automatic_starts, noise_per_angle
from ._validate import is_traced

RACE_STEPS = 6  # solver steps from each automatic start before the better one is finished


@eqx.filter_jit
def _fit(problem: Problem, u0, data_grid, sigma_grid, solver, max_steps: int, throw: bool):
    def solve(start, limit=max_steps, throw=throw):
        sol = optx.least_squares(
            solver_residuals, solver, start, args=problem, max_steps=limit, throw=throw
        )
        return sol.value, sol.result, sol.stats["num_steps"]

    if u0 is None:
        starts = jax.lax.stop_gradient(automatic_starts(problem, data_grid, sigma_grid))
        # A race: a few steps on the full data from each start (one after the other: memory), then
        # the fit is finished from the one with the lower χ². Both starts end in their basins well
        # within the first steps, so the race costs RACE_STEPS per start instead of a full fit.
        race = min(RACE_STEPS, max_steps)
        heads, _, head_steps = jax.lax.map(lambda u: solve(u, race, False), starts)
        costs = jax.lax.map(lambda u: problem.chi2(problem.physical(u)), heads)
        pick = jnp.argmin(jnp.where(jnp.isfinite(costs), costs, jnp.inf))
        value, result, n_steps = solve(heads[pick], max(1, max_steps - race))
        n_steps = n_steps + jnp.sum(head_steps)
    else:
        value, result, n_steps = solve(u0)
    theta = problem.physical(value)
    contrast, offset = problem.scaling(theta)
    h, g, chi2 = information(problem, theta, contrast, offset)
    n_free = sum(problem.free)
    dof = problem.n_residuals - n_free - problem.n_linear
    reduced = chi2 / dof
    cov = inverse(h)
    # A parameter on a bound (physical, or a clipped contrast/offset) is a constrained minimum only
    # if χ² rises going inward; then it leaves the minimum test. One whose gradient points inward
    # stays in the test, so a fit stuck on a bound it should leave is not converged.
    frac = problem.transform.fraction(theta[np.flatnonzero(problem.free)])
    lin = (
        jnp.concatenate([contrast, offset])
        if not problem.shared
        else jnp.stack([contrast[0], offset[0]])
    )
    lin_lo = jnp.repeat(problem.lin_lower, lin.size // 2)
    lin_hi = jnp.repeat(problem.lin_upper, lin.size // 2)
    at_lower = jnp.concatenate([frac < 1e-4, lin <= lin_lo])
    at_upper = jnp.concatenate([frac > 1 - 1e-4, lin >= lin_hi])
    pinned = (at_lower & (g >= 0)) | (at_upper & (g <= 0))  # g = ½∂χ²/∂p
    phys_at_bound = (at_lower | at_upper)[:n_free]
    active = ~pinned
    g_active = jnp.where(active, g, 0.0)
    h_active = jnp.where(active[:, None] & active[None, :], h, jnp.eye(h.shape[0]))
    decrement = g_active @ inverse(h_active) @ g_active / jnp.maximum(reduced, 1.0)
    # Near a bound the logistic map flattens, so the solver may creep towards a pinned parameter
    # until max_steps; that is still a minimum if the test below passes.
    solver_done = (result == optx.RESULTS.successful) | (
        (result == optx.RESULTS.nonlinear_max_steps_reached) & jnp.any(pinned[:n_free])
    )
    converged = solver_done & (decrement < DECREMENT_TOL)
    # a fit with every physical parameter on a bound has determined none of them
    converged = converged & jnp.isfinite(chi2) & ~jnp.all(phys_at_bound)
    return (
        result,
        n_steps,
        theta,
        contrast,
        offset,
        cov,
        chi2,
        dof,
        reduced,
        decrement,
        converged,
        phys_at_bound,
    )


def _all_finite(given, x, positive: bool = False) -> bool:
    """Whether the concrete ``x`` (``given`` converted to float64) is finite, and > 0 if
    ``positive``, everywhere. NumPy arrays and Python numbers are checked with NumPy: an eager
    jnp check compiles for every new shape (about 60 ms)."""
    if isinstance(given, np.ndarray | float | int):
        v = np.asarray(given)
        return bool((np.isfinite(v) & (v > 0) if positive else np.isfinite(v)).all())
    return bool(jnp.all(jnp.isfinite(x) & (x > 0) if positive else jnp.isfinite(x)))


def _as_data(model: HomodyneModel, data) -> Float[Array, "n_phi N N"]:
    d = as_float64(data)
    n, n_phi = model.n_frames, model.n_phi
    if d.ndim == 2 and n_phi == 1:
        d = d[None]
    if d.shape != (n_phi, n, n):
        raise ValueError(
            f"data must have shape (n_phi, N, N) = {(n_phi, n, n)} to match the model; got {d.shape}."
        )
    if n < 3:
        raise ValueError(f"a fit needs at least 3 frames; the model has {n}.")
    if not is_traced(d) and not _all_finite(data, d):
        bad = np.argwhere(~np.isfinite(np.asarray(d)))[0]
        raise ValueError(
            f"data contains NaN or infinite values (first at angle {bad[0]}, t1 index {bad[1]}, "
            f"t2 index {bad[2]}); mask or repair them before fitting."
        )
    return d


def _sigma_grid(sigma, shape) -> Float[Array, "_ _ _"]:
    """σ checked and reshaped to three axes that broadcast to the data's ``shape`` (not broadcast:
    a scalar σ stays one number until jitted code needs it per element)."""
    s = as_float64(sigma)
    s = s[:, None, None] if s.ndim == 1 else s
    try:
        if s.ndim > 3 or jnp.broadcast_shapes(s.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"sigma must be a scalar, one value per angle, or an array like data {shape}; "
            f"got shape {s.shape}."
        ) from None
    if not is_traced(s) and not _all_finite(sigma, s, positive=True):
        raise ValueError("sigma must be finite and > 0 everywhere (it divides the residuals).")
    return jnp.reshape(s, (1,) * (3 - s.ndim) + s.shape)


def _resolve_mode(model, init, mode) -> bool:
    if mode is not None and mode not in ("static", "laminar"):
        raise ValueError(f"mode must be 'static' or 'laminar'; got {mode!r}.")
    if init is not None:
        laminar = isinstance(init, LaminarFlowParams)
        if mode is not None and (mode == "laminar") != laminar:
            raise ValueError(f"mode={mode!r} does not match init of type {type(init).__name__}.")
        return laminar
    if mode is None:
        return model.n_phi > 1  # one angle cannot separate shear from diffusion direction
    return mode == "laminar"


def _build(model, data, sigma, init, mode, bounds, fixed, scaling):
    if not isinstance(model, HomodyneModel):
        raise TypeError(f"model must be a HomodyneModel; got {type(model).__name__}.")
    if scaling not in ("per_angle", "shared"):
        raise ValueError(f"scaling must be 'per_angle' or 'shared'; got {scaling!r}.")
    if init is not None and not isinstance(init, AbstractParams):
        init = params_from_array(init)
    laminar = _resolve_mode(model, init, mode)
    cls = LaminarFlowParams if laminar else StaticParams
    names = cls.names
    data = _as_data(model, data)
    if sigma is None:
        if model.n_frames < MIN_FRAMES_FOR_NOISE:
            raise ValueError(
                f"estimating σ from the data needs at least {MIN_FRAMES_FOR_NOISE} frames; the "
                f"model has {model.n_frames}. Pass sigma explicitly (command line: --sigma)."
            )
        sigma_grid = noise_per_angle(data)[:, None, None]
        if not is_traced(sigma_grid) and not bool(jnp.all(sigma_grid > 0)):
            raise ValueError(
                "could not estimate the noise from the data (identical neighbouring values); "
                "pass sigma explicitly (command line: --sigma)."
            )
    else:
        sigma_grid = _sigma_grid(sigma, data.shape)

    fixed_map: dict[str, float] = {}
    if isinstance(fixed, Mapping):
        fixed_map = {k: v for k, v in fixed.items()}
    else:
        for name in fixed:
            if init is None:
                raise ValueError(
                    f"fixed={list(fixed)} needs init (or pass fixed as a dict of values)."
                )
            fixed_map[name] = getattr(init, name)
    for name in fixed_map:
        if name not in names:
            raise ValueError(
                f"cannot fix {name!r}: the {('static', 'laminar')[laminar]} parameters are {names}."
            )
    free = np.array([n not in fixed_map for n in names])
    if not free.any():
        raise ValueError("every physical parameter is fixed: nothing to fit.")
    n = model.n_frames
    n_residuals = model.n_phi * n * (n - 1) // 2
    n_unknowns = int(free.sum()) + (2 if scaling == "shared" else 2 * model.n_phi)
    if n_residuals <= n_unknowns:
        raise ValueError(
            f"{n_residuals} pairs t1 < t2 cannot determine {n_unknowns} unknowns (free parameters, "
            "contrast and offset): use more frames, fix parameters, or scaling='shared'."
        )

    lower, upper = resolve_bounds(names, bounds)
    transform = BoundedTransform(lower[:-2][free], upper[:-2][free])
    start = init.to_array() if init is not None else jnp.asarray(0.5 * (lower[:-2] + upper[:-2]))
    fixed_values = start.at[np.flatnonzero(~free)].set(
        jnp.asarray([as_float64(fixed_map[n]) for n in names if n in fixed_map])
    ) if fixed_map else start  # fmt: skip
    if init is not None and not is_traced(start):
        values = np.asarray(start)
        outside = [
            n
            for n, v, lo, hi, f in zip(names, values, lower, upper, free, strict=False)
            if f and not lo <= v <= hi
        ]
        if outside:
            raise ValueError(
                f"init is outside the bounds for {outside}; widen them with bounds={{name: (lo, hi)}}."
            )
    problem = tiled_problem(
        model,
        data,
        sigma_grid,
        transform=transform,
        lin_lower=jnp.asarray(lower[-2:]),
        lin_upper=jnp.asarray(upper[-2:]),
        fixed_values=fixed_values,
        free=tuple(bool(f) for f in free),
        laminar=laminar,
        shared=scaling == "shared",
    )
    u0 = _start_inside(transform, start, tuple(bool(f) for f in free)) if init is not None else None
    sigma_used = sigma_grid[:, 0, 0] if sigma is None else as_float64(sigma)
    return problem, u0, data, sigma_grid, sigma_used


# Small steps before and after the solver, compiled as one function each: run eagerly, every jnp
# operation compiles on its own (about 15 ms apiece, 0.5 s of a first fit).


@eqx.filter_jit
def _start_inside(transform: BoundedTransform, start, free: tuple):
    # a start on a bound is moved 0.1 % of the range inside, where the solver can still move it
    return transform.to_internal(start[np.flatnonzero(free)], margin=1e-3)


@eqx.filter_jit
def _uncertainties(cov, reduced, theta, at_bound, problem: Problem, estimated: bool):
    """The covariance (scaled by the reduced χ² when σ was estimated), standard errors of every
    physical parameter (0 where fixed), of contrast and offset per angle, and which physical
    parameters are on a bound (False where fixed)."""
    if estimated:
        cov = cov * reduced
    index = np.flatnonzero(problem.free)
    var = jnp.diagonal(cov)
    errors = jnp.zeros_like(theta).at[index].set(jnp.sqrt(var[: index.size]))
    lin_err = jnp.sqrt(var[index.size :])
    n_phi = problem.model.n_phi
    if problem.shared:
        c_err, b_err = jnp.full(n_phi, lin_err[0]), jnp.full(n_phi, lin_err[1])
    else:
        c_err, b_err = lin_err[:n_phi], lin_err[n_phi:]
    on_bound = jnp.zeros(theta.shape, bool).at[index].set(at_bound)
    return cov, errors, c_err, b_err, on_bound


def fit(
    model: HomodyneModel,
    data: ArrayLike,
    *,
    sigma: ArrayLike | None = None,
    init: Params | ArrayLike | None = None,
    mode: Literal["static", "laminar"] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    fixed: Sequence[str] | Mapping[str, float] = (),
    scaling: Literal["per_angle", "shared"] = "per_angle",
    solver: optx.AbstractLeastSquaresSolver | optx.AbstractMinimiser | None = None,
    max_steps: int = 256,
    rtol: float = 1e-8,
    atol: float = 1e-8,
    throw: bool = False,
    verbose: bool = False,
) -> FitResult:
    """Fit g2 = offset + contrast·g1² of ``model`` to measured C2 by nonlinear least squares.

    Residuals (data − g2)/σ run over every angle and every pair t1 < t2 once; the diagonal
    t1 = t2, which carries a shot-noise excess, is excluded. Contrast and offset are solved in
    closed form for each trial of the physical parameters (variable projection), per angle or
    shared, and clipped to their bounds.

    Args:
        model: the experiment (q, L, dt, frame times, angles).
        data: measured C2, (n_phi, N, N) (or (N, N) for one angle); symmetric, full matrices.
        sigma: noise: scalar, one per angle, or an array like data. ``None``: estimated per angle
            from the data (second differences along lines of equal lag) and the covariance
            is scaled by the reduced χ²; the result says so (``sigma_estimated``).
        init: starting parameters (`StaticParams`, `LaminarFlowParams` or a flat array of 3 or 7).
            ``None``: automatic. A coarse grid over D0 × alpha (laminar: × gamma_dot_t0 × beta ×
            phi0; others mid-range) is scored on the data subsampled to 32 frames; its best points
            are refined there; the best refined point and the best grid point are polished on
            128 frames (with at least 256), each gets 6 solver steps on the full data, and the
            fit is finished from the one with the lower χ² (about 2–3× the cost of a fit from a
            good ``init``).
        mode: ``"static"`` or ``"laminar"``; default: the type of ``init``, else laminar flow when
            the model has several angles and static for one angle.
        bounds: overrides of the SPEC §4 bounds, ``{"D0": (1e3, 1e5), ...}``; bounds are
            respected through a smooth reparametrisation, never by clipping the solver's values.
        fixed: names of physical parameters held at their ``init`` values, or ``{name: value}``.
        scaling: ``"per_angle"`` (default) or ``"shared"`` contrast and offset.
        solver: any optimistix least-squares solver or minimiser; default
            ``homodyne.FitSolver(rtol, atol)`` (Levenberg–Marquardt whose damping starts at the
            scale of the problem, and which also stops once a Gauss–Newton step would gain less
            than 1e-6 in χ²). It works in bounded, O(1)-scaled coordinates, on a compressed residual
            vector of length F + 1 with the Gauss–Newton model of the full one (see
            `homodyne._problem`).
        max_steps: solver step limit.
        rtol, atol: tolerances of the default solver (on steps in the scaled coordinates and on χ²).
        throw: raise if the solver fails; by default failure is reported in ``result`` and
            ``converged`` so that a batch of fits is not aborted by one bad dataset.
        verbose: print the solver's progress at every step (default solver only).

    Returns:
        A `FitResult`. ``print(result)`` shows a table with units.

    Raises:
        ValueError: for data whose shape does not match the model, NaN/inf data, bad sigma,
            unknown or invalid bounds, an init outside the bounds, or an impossible ``fixed``.

    The fit is compiled once per problem shape: new data, σ, init or model values of the same
    shapes reuse it. It is differentiable: gradients of the estimates with respect to the data or
    the model's inputs follow from the implicit function theorem (optimistix's ImplicitAdjoint).
    """
    problem, u0, data_grid, sigma_grid, sigma_used = _build(
        model, data, sigma, init, mode, bounds, fixed, scaling
    )
    if solver is None:
        solver = FitSolver(rtol=rtol, atol=atol, verbose=progress if verbose else False)
    out = _fit(problem, u0, data_grid, sigma_grid, solver, max_steps, throw)
    return _result(problem, out, sigma_used, sigma is None)


def _result(problem: Problem, out, sigma_used, estimated: bool) -> FitResult:
    (
        result,
        n_steps,
        theta,
        contrast,
        offset,
        cov,
        chi2,
        dof,
        reduced,
        decrement,
        converged,
        at_bound,
    ) = out
    cls = LaminarFlowParams if problem.laminar else StaticParams
    cov, errors_full, c_err, b_err, at_bound_full = _uncertainties(
        cov, reduced, theta, at_bound, problem, estimated
    )
    n_phi = problem.model.n_phi
    if problem.shared:
        lin_names = ("contrast", "offset")
    else:
        lin_names = tuple(f"contrast[{k}]" for k in range(n_phi)) + tuple(
            f"offset[{k}]" for k in range(n_phi)
        )
    return FitResult(
        params=cls.from_array(theta),
        errors=cls.from_array(errors_full),
        contrast=contrast,
        offset=offset,
        contrast_error=c_err,
        offset_error=b_err,
        covariance=cov,
        chi2=chi2,
        dof=jnp.asarray(dof),
        reduced_chi2=reduced,
        n_steps=n_steps,
        result=result,
        converged=converged,
        decrement=decrement,
        at_bound=at_bound_full,
        sigma=sigma_used,
        model=problem.model,
        names=tuple(n for n, f in zip(cls.names, problem.free, strict=True) if f) + lin_names,
        sigma_estimated=estimated,
    )


def fit_many(
    model: HomodyneModel,
    data: ArrayLike,
    *,
    sigma: ArrayLike | None = None,
    init: Params | ArrayLike | None = None,
    mode: Literal["static", "laminar"] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    fixed: Sequence[str] | Mapping[str, float] = (),
    scaling: Literal["per_angle", "shared"] = "per_angle",
    solver: optx.AbstractLeastSquaresSolver | optx.AbstractMinimiser | None = None,
    max_steps: int = 256,
    rtol: float = 1e-8,
    atol: float = 1e-8,
) -> FitResult:
    """Fit B datasets of the same shape in one vectorised call (see `fit` for the arguments).

    Args:
        data: (B, n_phi, N, N).
        sigma: ``None`` (estimated per dataset and angle), a scalar, or an array like one dataset
            (shared by all) or like ``data`` (one per dataset).
        init: ``None`` (automatic per dataset), one parameter set for all, or a batched one
            (leaves of shape (B,), e.g. ``LaminarFlowParams.from_array(x)`` with x of shape (B, 7)).

    Returns:
        A `FitResult` whose leaves have a leading batch axis B; take fit b with
        ``jax.tree.map(lambda x: x[b], result)``. A failed fit does not stop the others: check
        ``result.converged``.
    """
    d = as_float64(data)
    if d.ndim != 4 or d.shape[1:] != (model.n_phi, model.n_frames, model.n_frames):
        raise ValueError(
            f"data must have shape (B, n_phi, N, N) = (B, {model.n_phi}, {model.n_frames}, "
            f"{model.n_frames}); got {d.shape}."
        )
    if not is_traced(d) and not _all_finite(data, d):
        bad = np.argwhere(~np.isfinite(np.asarray(d)))[0]
        raise ValueError(f"data contains NaN or infinite values (first in dataset {bad[0]}).")
    sigma_axis = None
    if sigma is not None:
        given, sigma = sigma, as_float64(sigma)
        sigma_axis = 0 if sigma.ndim == 4 else None
        if not is_traced(sigma) and not _all_finite(given, sigma, positive=True):
            raise ValueError("sigma must be finite and > 0 everywhere (it divides the residuals).")
    init_axis = None
    if init is not None:
        if not isinstance(init, AbstractParams):
            init = params_from_array(init)
        init_axis = 0 if init.D0.ndim == 1 else None
    # the checks that vmap would trace past (σ and init values) run here, on each dataset's inputs
    if not is_traced(d):
        for b in range(d.shape[0]):
            _build(
                model,
                d[b],
                None if sigma is None else (sigma[b] if sigma_axis == 0 else sigma),
                None
                if init is None
                else (jax.tree.map(lambda x, b=b: x[b], init) if init_axis == 0 else init),
                mode,
                bounds,
                fixed,
                scaling,
            )
    if solver is None:
        solver = FitSolver(rtol=rtol, atol=atol)
    options = (mode, bounds, tuple(fixed) if not isinstance(fixed, Mapping) else fixed, scaling)
    return _fit_many(model, d, sigma, init, solver, max_steps, options, sigma_axis, init_axis)


@eqx.filter_jit
def _fit_many(model, data, sigma, init, solver, max_steps, options, sigma_axis, init_axis):
    mode, bounds, fixed, scaling = options

    def one(d, s, p):
        problem, u0, data_grid, sigma_grid, sigma_used = _build(
            model, d, s, p, mode, bounds, fixed, scaling
        )
        out = _fit(problem, u0, data_grid, sigma_grid, solver, max_steps, False)
        return _result(problem, out, sigma_used, s is None)

    return eqx.filter_vmap(one, in_axes=(0, sigma_axis, init_axis))(data, sigma, init)
