"""Least-squares fits of g2 to measured C2 with optimistix (SPEC §4).

The solver sees only the free physical parameters, in the bounded O(1) coordinates of
`BoundedTransform`. Contrast and offset enter g2 linearly, so for every trial of the physical
parameters they are solved in closed form per angle (variable projection): the solver's problem has
at most 7 unknowns whatever the number of angles, and needs no starting values for them.

Each public function runs in two parts. First, in NumPy and with no work on the device, it checks
what it can see (types, shapes, the spec against the model and ``init``, NumPy data and σ) and
resolves the spec into a `_Setup` of arrays and flags. Then one compiled function (`_solve` under
`eqx.filter_jit`; `fit_many` vmaps it) builds the tiled problem, estimates σ if needed, checks the
values only it can see (JAX-array data and σ, each dataset of a batch, the estimated σ), solves and
returns the `FitResult`. Such value-dependent failures are a `FitStatus` in the result.
"""

import dataclasses
from collections.abc import Sequence
from typing import overload

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._bounds import BoundedTransform, default_bounds, log_scaled, resolve_bounds
from ._covariance import (
    DECREMENT_TOL,
    ERROR_WINDOW,
    inverse,
    inverse_and_blind,
    window_covariance,
)
from ._model import HomodyneModel
from ._options import FitOptions
from ._params import AbstractParams, LaminarFlowParams, Params, StaticParams, params_from_array
from ._precision import as_data, as_float64, require_float64
from ._problem import JointProblem, Problem, ProgressLine, solver_residuals, tiled_problem
from ._result import FitResult, FitStatus, JointFitResult
from ._spec import FitSpec, check_applies, parameter_names
from ._start import (
    MIN_FRAMES_FOR_NOISE,
    automatic_starts,
    noise_per_angle,
    second_difference_count,
)
from ._validate import is_traced

RACE_STEPS = 6  # solver steps from each automatic start before the better one is finished
#: at most this many blocks of frames per side of the two-time grid for the error covariance
SCORE_BLOCKS = 64
#: a physical parameter within this fraction of its range from a bound (on the solver's log scale
#: for D0 and gamma_dot_t0) is reported as near it (`FitResult.near_bound`)
NEAR_BOUND = 0.01
NEAR_BOUND_UNCONVERGED = 0.05  # ... and this fraction when the fit did not converge
#: frames stay correlated (share speckles) while g1² of the fitted model is above this
CORRELATION_LEVEL = 0.05
#: ... where the window holds at least this many correlation times (else the finest blocks)
MIN_ERROR_BLOCKS = 8


class _Setup(eqx.Module):
    """What a fit resolved from the model, the spec and ``init`` before compiling: arrays (new
    values reuse the compiled fit) and the flags that shape it."""

    transform: BoundedTransform  # over the free physical parameters
    lin_lower: Float[Array | np.ndarray, " 2"]  # contrast and offset bounds
    lin_upper: Float[Array | np.ndarray, " 2"]
    fixed_values: Float[Array | np.ndarray, "*B P"]  # physical values, used where not free
    start: Float[Array | np.ndarray, "*B P"] | None  # physical start from init; None: automatic
    frame_mask: Bool[Array | np.ndarray, "*B N"] | None  # True: frame used; None: all frames
    free: tuple[bool, ...] = eqx.field(static=True)
    laminar: bool = eqx.field(static=True)
    shared: bool = eqx.field(static=True)


# --- checks and resolution before compiling (NumPy, shapes, trace time) --------------------------


def _check_types(model, spec, options) -> None:
    if not isinstance(model, HomodyneModel):
        raise TypeError(f"model must be a HomodyneModel; got {type(model).__name__}.")
    if not isinstance(spec, FitSpec):
        raise TypeError(
            f"spec must be a homodyne.FitSpec (what is fitted); got {type(spec).__name__}. "
            "Build one: FitSpec(mode=..., bounds=..., fixed=..., scaling=...)."
        )
    if not isinstance(options, FitOptions):
        raise TypeError(
            f"options must be a homodyne.FitOptions (how it is solved); got "
            f"{type(options).__name__}. Build one: FitOptions(solver=..., max_steps=..., ...)."
        )
    require_float64()


def _as_array(x) -> Array | np.ndarray:
    """JAX arrays (and tracers) as they are; float32 NumPy arrays too (maps as stored, half the
    memory of float64: each tile is promoted where it is used); anything else as a float64 NumPy
    array. Conversion to float64 on the device happens inside the compiled fit."""
    if isinstance(x, jax.Array) or (isinstance(x, np.ndarray) and x.dtype == np.float32):
        return x
    return np.asarray(x, dtype=np.float64)


def _check_data(model: HomodyneModel, shape: tuple[int, ...], batched: bool) -> None:
    n, n_phi = model.n_frames, model.n_phi
    one = (n_phi, n, n)
    if batched:
        if len(shape) != 4 or shape[1:] != one:
            raise ValueError(
                f"data must have shape (B, n_phi, N, N) = (B, {n_phi}, {n}, {n}); got {shape}."
            )
    elif shape != one and not (n_phi == 1 and shape == (n, n)):
        raise ValueError(
            f"data must have shape (n_phi, N, N) = {one} to match the model; got {shape}."
        )
    if n < 3:
        raise ValueError(f"a fit needs at least 3 frames; the model has {n}.")


def _checked_sigma(sigma, model: HomodyneModel, batched: bool, frame_mask=None):
    """σ for the compiled fit: JAX arrays as they are, anything else as float64 NumPy (a Python
    number would be a static argument: every new value would recompile). Its shape is checked,
    and its values too when it is a few numbers (the rest is checked inside the fit). σ must be
    finite and > 0 everywhere, at excluded frames too."""
    if sigma is None:
        if model.n_frames < MIN_FRAMES_FOR_NOISE:
            raise ValueError(
                f"estimating σ from the data needs at least {MIN_FRAMES_FOR_NOISE} frames; the "
                f"model has {model.n_frames}. Pass sigma explicitly (command line: --sigma)."
            )
        if frame_mask is not None and not is_traced(frame_mask):
            needed = second_difference_count(np.ones(MIN_FRAMES_FOR_NOISE, bool))
            masks = np.asarray(frame_mask).reshape(-1, model.n_frames)
            if min(second_difference_count(m) for m in masks) < needed:
                raise ValueError(
                    "estimating σ from the data needs runs of 3 consecutive used frames (at least "
                    f"4 of them, as in {MIN_FRAMES_FOR_NOISE} frames); the frame mask leaves too "
                    "few. Pass sigma explicitly (command line: --sigma)."
                )
        return None
    sigma = _as_array(sigma)
    dataset = (model.n_phi, model.n_frames, model.n_frames)
    shape = np.shape(sigma)[1:] if batched else np.shape(sigma)
    grid = (shape[0], 1, 1) if len(shape) == 1 else shape
    try:
        fits = len(grid) <= 3 and np.broadcast_shapes(grid, dataset) == dataset
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"sigma must be a scalar, one value per angle, or an array like data {dataset}; "
            f"got shape {shape}."
        )
    # NumPy values here; a JAX array's too when it is a few numbers (a host read), else in the fit
    small = np.size(sigma) <= model.n_phi and not is_traced(sigma)
    if isinstance(sigma, np.ndarray) or small:
        values = np.asarray(sigma)
        if not (np.min(values) > 0 and np.isfinite(np.max(values))):  # NaN fails the first
            raise ValueError(
                "sigma must be finite and > 0 everywhere (it divides the residuals)"
                + (f"; got {values}." if small else ".")
            )
    return sigma


def _check_finite(data, frame_mask=None) -> None:
    """NaN or infinite NumPy data at pairs of used frames: ``ValueError`` with the first location.
    (JAX arrays, and data under a traced frame mask, are checked inside the compiled fit: here it
    would cost a pass on the device and a wait for it.)"""
    if not isinstance(data, np.ndarray) or is_traced(frame_mask):
        return
    if frame_mask is None:
        if not np.isfinite(np.sum(data)):  # no temporary array
            bad = np.argwhere(~np.isfinite(data))
            if bad.size:  # else the sum of finite values overflowed
                raise ValueError(_nonfinite_message(bad[0]))
        return
    used = np.flatnonzero(np.asarray(frame_mask))
    grid = np.ix_(used, used)
    for k, angle in enumerate(data.reshape(-1, *data.shape[-2:])):  # one angle's copy at a time
        sub = angle[grid]
        if not np.isfinite(np.sum(sub)):
            bad = np.argwhere(~np.isfinite(sub))
            if bad.size:
                raise ValueError(_nonfinite_message((k, used[bad[0][0]], used[bad[0][1]])))


def _nonfinite_message(index) -> str:
    k, i, j = (0, *index) if len(index) == 2 else index
    return (
        f"data contains NaN or infinite values (first at angle {k}, t1 index {i}, t2 index {j}); "
        "exclude their frames with frame_mask=, or repair them before fitting."
    )


def _checked_mask(frame_mask, model: HomodyneModel, batched: bool):
    """The frame mask for the compiled fit, a boolean array leaf (a new mask of the same shape
    reuses the compiled fit): JAX arrays as they are, anything else as NumPy. Its shape and dtype
    are checked, and, unless traced, that every mask leaves at least 3 frames."""
    if frame_mask is None:
        return None
    mask = frame_mask if isinstance(frame_mask, jax.Array) else np.asarray(frame_mask)
    n = model.n_frames
    if mask.dtype != bool:
        raise TypeError(
            f"frame_mask must be a boolean array, True for each frame used and False for each "
            f"excluded; got dtype {mask.dtype}. Build one: mask = np.ones({n}, bool); "
            "mask[bad] = False."
        )
    if not (mask.shape == (n,) or (batched and mask.ndim == 2 and mask.shape[1] == n)):
        shapes = f"({n},) or (B, {n})" if batched else f"({n},)"
        raise ValueError(
            f"frame_mask must have shape {shapes}, one entry per frame of the model; got "
            f"{mask.shape}."
        )
    if not is_traced(mask):
        used = np.sum(np.asarray(mask).reshape(-1, n), axis=1)
        if np.min(used) < 3:
            which = f" (dataset {int(np.argmin(used))})" if mask.ndim == 2 else ""
            raise ValueError(
                f"frame_mask leaves {int(np.min(used))} of {n} frames{which}; a fit needs at "
                "least 3 used frames."
            )
    return mask


def _init_values(init) -> tuple[type[AbstractParams] | None, Array | np.ndarray | None]:
    """The class and flat values (…, P) of ``init``: NumPy when concrete, else traced."""
    if init is None:
        return None, None
    if isinstance(init, AbstractParams):
        cls, leaves = type(init), [getattr(init, name) for name in init.names]
        if is_traced(*leaves):
            return cls, jnp.stack([as_float64(x) for x in leaves], axis=-1)
        return cls, np.stack([np.asarray(x, dtype=np.float64) for x in leaves], axis=-1)
    shape = np.shape(init)
    if not shape or shape[-1] not in (3, 7):
        params_from_array(init)  # raises the documented message
    cls = LaminarFlowParams if shape[-1] == 7 else StaticParams
    return cls, as_float64(init) if is_traced(init) else np.asarray(init, dtype=np.float64)


def _resolve_mode(model: HomodyneModel, cls, spec: FitSpec) -> bool:
    if cls is not None:
        laminar = cls is LaminarFlowParams
        if spec.mode is not None and (spec.mode == "laminar") != laminar:
            raise ValueError(
                f"mode={spec.mode!r} does not match init of type {cls.__name__}: pass init of "
                "the mode's parameter type, or leave mode=None to take it from init."
            )
        why = f"init is {cls.__name__}"
    elif spec.mode is None:
        if model.n_phi > 1:  # never guessed: a laminar fit of static data finds spurious shear
            raise ValueError(
                f"say which model to fit: with {model.n_phi} angles the data may be static (D(t) "
                "only) or laminar flow (D(t), γ̇(t) and φ0), and a laminar fit of static data "
                "finds small, meaningless shear rates. Pass spec=FitSpec(mode='static') or "
                "FitSpec(mode='laminar') (command line: --mode), or an init of that mode's type."
            )
        laminar = False  # one angle cannot separate shear from the direction of diffusion
        why = "one angle: static (one angle cannot separate shear from diffusion)"
    else:
        laminar = spec.mode == "laminar"
        why = f"mode={spec.mode!r}"
    check_applies(spec, laminar, why)
    return laminar


def _setup(model: HomodyneModel, init, spec: FitSpec, batched: bool, frame_mask=None) -> _Setup:
    """Resolve ``spec`` and ``init`` for ``model`` (``ValueError`` for what cannot be fitted);
    ``frame_mask`` as `_checked_mask` returns it."""
    cls, values = _init_values(init)
    if values is not None and values.ndim not in ((1, 2) if batched else (1,)):
        raise ValueError(
            f"init must be one parameter set{' or one per dataset' if batched else ''}; got "
            f"values of shape {values.shape}."
            + ("" if batched else " Fit a batch of datasets with homodyne.fit_many.")
        )
    laminar = _resolve_mode(model, cls, spec)
    names = parameter_names(laminar)
    fixed = dict(spec.fixed)
    at_init = [name for name, value in fixed.items() if value is None]
    if at_init and values is None:
        raise ValueError(
            f"fixed={at_init} needs init (the values to hold them at), or give the values: "
            f"FitSpec(fixed={{{at_init[0]!r}: value, ...}})."
        )
    free = np.array([name not in fixed for name in names])
    if not free.any():
        raise ValueError("every physical parameter is fixed: nothing to fit.")
    masked = frame_mask is not None and not is_traced(frame_mask)
    n = model.n_frames
    if masked:  # the fewest used frames of any dataset
        n = int(np.min(np.sum(np.asarray(frame_mask).reshape(-1, n), axis=1)))
    n_residuals = model.n_phi * n * (n - 1) // 2
    shared = spec.scaling == "shared"
    n_unknowns = _n_unknowns(free, shared, model.n_phi)
    if n_residuals <= n_unknowns:
        raise ValueError(
            f"{n_residuals} pairs t1 < t2{' of used frames' if masked else ''} cannot determine "
            f"{n_unknowns} unknowns (free parameters, contrast and offset): use more frames"
            f"{' (exclude fewer)' if masked else ''}, fix parameters, or "
            "FitSpec(scaling='shared')."
        )
    lower, upper = resolve_bounds(names, dict(spec.bounds), default_bounds(model))
    # the scaling only widens ranges and keeps their signs, so the reference table decides which
    # ranges are logarithmic even where the model's bounds are traced
    log_scale = log_scaled(*resolve_bounds(names, dict(spec.bounds)))
    given = [(i, v) for i, name in enumerate(names) if (v := fixed.get(name)) is not None]
    _check_negative_times(model, names, free, lower, dict(given), values)
    base = values if values is not None else 0.5 * (lower[:-2] + upper[:-2])
    if is_traced(base):
        fixed_values = jnp.asarray(base)
        if given:
            index, held = zip(*given, strict=True)
            fixed_values = fixed_values.at[..., np.array(index)].set(np.array(held))
    else:
        fixed_values = np.array(base, dtype=np.float64)
        for i, v in given:
            fixed_values[..., i] = v
        if values is not None and not is_traced(lower, upper):
            outside = [
                f"{name} (bounds {lower[i]:.4g} to {upper[i]:.4g})"
                for i, name in enumerate(names)
                if free[i]
                and not np.all((lower[i] <= values[..., i]) & (values[..., i] <= upper[i]))
            ]
            if outside:
                raise ValueError(
                    f"init is outside the bounds for {', '.join(outside)}; widen them with "
                    "FitSpec(bounds={name: (lower, upper)})."
                )
    return _Setup(
        transform=BoundedTransform(
            lower[:-2][free],
            upper[:-2][free],
            tuple(bool(v) for v in np.array(log_scale)[:-2][free]),
        ),
        lin_lower=lower[-2:],
        lin_upper=upper[-2:],
        fixed_values=fixed_values,
        start=values,
        frame_mask=frame_mask,
        free=tuple(bool(f) for f in free),
        laminar=laminar,
        shared=shared,
    )


def _check_negative_times(model: HomodyneModel, names, free, lower, held, values) -> None:
    """``ValueError`` for frame times before t = 0 where an exponent may be negative: D0·t^α is
    a power of the sample's age, and the time floor would silently stand in for the ages < 0."""
    if is_traced(model.t, lower):
        return
    first = float(np.min(np.asarray(model.t)))
    if first >= 0:
        return
    negative = []
    for i, name in enumerate(names):
        if name not in ("alpha", "beta"):
            continue
        if i in held:
            value = held[i]
        elif values is not None and not free[i]:
            value = float(np.min(values[..., i]))
        else:
            value = float(lower[i])
        if value < 0:
            negative.append(name)
    if negative:
        raise ValueError(
            f"the frame times start at {first:g} s, before the sample's age 0, and {' and '.join(negative)}"
            " may be negative: D(t) = D0·t^α (γ̇0·t^β) is then not defined. Give the sample's age "
            "at the first analysed frame (time_origin ≥ 0; command line --time-origin or "
            "--sample-age), or bound the exponent ≥ 0 (FitSpec(bounds={'alpha': (0.0, 2.0)}))."
        )


def _n_unknowns(free, shared: bool, n_phi: int) -> int:
    """Free physical parameters plus contrast and offset (shared, or per angle)."""
    return int(np.sum(free)) + (2 if shared else 2 * n_phi)


# --- the compiled fit --------------------------------------------------------------------------


def _checked_values(model: HomodyneModel, data, sigma, setup: _Setup):
    """Data (n_phi, N, N) and σ (three axes that broadcast to it) for the problem, the σ to
    report, and the status of their values. Unusable values are harmless where they are used
    (the tiles hold 0 for non-finite data; σ becomes 1) so that a fit, or a batch of them, runs
    on; the status says so. With a frame mask, whatever the pairs that touch an excluded frame
    hold (NaN, garbage) is neither checked nor used. The data keep their precision (float32 maps
    as stored: no float64 copy of their size; see `as_data`)."""
    n, n_phi = model.n_frames, model.n_phi
    d = jnp.reshape(as_data(data), (n_phi, n, n))
    mask = None if setup.frame_mask is None else jnp.asarray(setup.frame_mask)
    frames_ok = True
    checked = d
    if mask is not None:
        checked = jnp.where(mask[:, None] & mask[None, :], d, 0.0)  # fused into the sum below
        m = jnp.sum(mask)
        n_unknowns = _n_unknowns(setup.free, setup.shared, n_phi)
        frames_ok = (m >= 3) & (n_phi * m * (m - 1) // 2 > n_unknowns)  # seen here when traced
    # finite everywhere iff the sum is (float64 values of C2 ~ 1 cannot overflow): one fused
    # reduction, where all(isfinite) kept a boolean map of the data's size
    data_ok = jnp.isfinite(jnp.sum(checked, dtype=jnp.float64))
    if sigma is None:
        used = noise_per_angle(d, mask)
        sigma_ok = jnp.all(used > 0)
        grid = jnp.where(sigma_ok, used, 1.0)[:, None, None]
        bad_sigma = FitStatus.noise_not_estimated
    else:
        used = as_float64(sigma)
        sigma_ok = jnp.all(jnp.isfinite(used) & (used > 0))
        s = used[:, None, None] if used.ndim == 1 else used
        grid = jnp.where(sigma_ok, jnp.reshape(s, (1,) * (3 - s.ndim) + s.shape), 1.0)
        bad_sigma = FitStatus.invalid_sigma
    status = FitStatus.where(
        data_ok, FitStatus.where(sigma_ok, FitStatus.ok, bad_sigma), FitStatus.nonfinite_data
    )
    status = FitStatus.where(frames_ok, status, FitStatus.too_few_frames)
    return d, grid, used, status


def _frames_used(problem: Problem) -> Bool[Array, " N"]:
    """The frame mask of a fit's result: all True without one."""
    mask = problem.frame_mask
    return jnp.ones(problem.model.n_frames, bool) if mask is None else mask


def _problem_and_start(model, data, sigma_grid, setup: _Setup) -> tuple[Problem, Array | None]:
    """The tiled problem of one run, and its start in the solver coordinates of its own
    transform (None: automatic)."""
    problem = tiled_problem(
        model,
        data,
        sigma_grid,
        transform=setup.transform,
        lin_lower=jnp.asarray(setup.lin_lower),
        lin_upper=jnp.asarray(setup.lin_upper),
        fixed_values=jnp.asarray(setup.fixed_values),
        free=setup.free,
        laminar=setup.laminar,
        shared=setup.shared,
        frame_mask=None if setup.frame_mask is None else jnp.asarray(setup.frame_mask),
    )
    start = _physical_start(setup)
    # a start on a bound is moved 0.1 % of the range inside, where the solver can still move it
    return problem, None if start is None else setup.transform.to_internal(start, margin=1e-3)


def _physical_start(setup: _Setup) -> Array | None:
    """The free physical values of ``init``, (…, F); None for an automatic start."""
    if setup.start is None:
        return None
    return jnp.asarray(setup.start)[..., np.flatnonzero(setup.free)]


def _joint_transform(setups, index, n_joint: int) -> BoundedTransform:
    """The bounds of the joint coordinates: a per-run parameter keeps its run's; a shared one gets
    the union of the runs' (each run's defaults follow its own q, frame step and window)."""
    lower: list = [None] * n_joint
    upper: list = [None] * n_joint
    logs: list = [False] * n_joint
    for setup, ix in zip(setups, index, strict=True):
        t = setup.transform
        for j, i in enumerate(ix):
            lo, hi = t.lower[j], t.upper[j]
            lower[i] = lo if lower[i] is None else jnp.minimum(lower[i], lo)
            upper[i] = hi if upper[i] is None else jnp.maximum(upper[i], hi)
            logs[i] = t.log_scale[j]
    return BoundedTransform(jnp.stack(lower), jnp.stack(upper), tuple(logs))


def _padded(x: Array, n: int) -> Array:
    """Zero blocks appended to the two leading (block) axes up to n × n: windows there hold no
    pairs and add nothing to the error covariance."""
    pad = [(0, n - x.shape[0]), (0, n - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return jnp.pad(x, pad)


def _first_failure(statuses) -> FitStatus:
    status = FitStatus.ok
    for s in reversed(statuses):
        status = FitStatus.where(s == FitStatus.ok, status, s)
    return status


def _solve_runs(runs, index, names, solver, max_steps: int, throw: bool) -> JointFitResult:
    """One fit of one or more runs ((model, data, σ, `_Setup`) each) sharing physical parameters,
    start to results: a pure function of arrays. Run r's free parameters are the joint
    coordinates ``index[r]``; ``names`` labels the joint physical parameters."""
    checked = [_checked_values(m, d, s, setup) for m, d, s, setup in runs]
    setups = [setup for *_, setup in runs]
    statuses = [c[3] for c in checked]
    ok = jnp.all(jnp.stack([s == FitStatus.ok for s in statuses]))
    n_joint = len(names)
    transform = _joint_transform(setups, index, n_joint)
    problems = [
        _problem_and_start(m, c[0], c[1], setup)[0]
        for (m, *_, setup), c in zip(runs, checked, strict=True)
    ]
    joint = JointProblem(problems, transform, index)
    problems = joint.runs  # each with the joint bounds

    def solve(start, limit=max_steps, throw=throw):
        sol = optx.least_squares(
            solver_residuals, solver, start, args=joint, max_steps=limit, throw=throw
        )
        return sol.value, sol.result, sol.stats["num_steps"]

    def assemble(values):  # joint coordinates from each run's (run 0's win where shared)
        u = jnp.zeros(n_joint)
        for ix, v in reversed(list(zip(index, values, strict=True))):
            u = u.at[np.array(ix)].set(v)
        return u

    starts = [_physical_start(setup) for setup in setups]
    if starts[0] is None:
        each = [
            jax.lax.stop_gradient(automatic_starts(p, c[0], c[1]))
            for p, c in zip(problems, checked, strict=True)
        ]
        # every run's two starts, its per-run parameters completed from the others' first
        base = assemble([e[0] for e in each])
        candidates = jnp.stack(
            [
                base.at[np.array(ix)].set(e[c])
                for ix, e in zip(index, each, strict=True)
                for c in (0, 1)
            ]
        )
        # A race: a few steps on the full data from each start (one after the other: memory), then
        # the fit is finished from the one with the lower χ². Both starts end in their basins well
        # within the first steps, so the race costs RACE_STEPS per start instead of a full fit.
        race = min(RACE_STEPS, max_steps)
        heads, _, head_steps = jax.lax.map(lambda u: solve(u, race, False), candidates)
        costs = jax.lax.map(joint.chi2, heads)
        pick = jnp.argmin(jnp.where(jnp.isfinite(costs), costs, jnp.inf))
        value, result, n_steps = solve(heads[pick], max(1, max_steps - race))
        n_steps = n_steps + jnp.sum(head_steps)
    else:
        # a start on a bound is moved 0.1 % of the range inside, where the solver can still move it
        value, result, n_steps = solve(transform.to_internal(assemble(starts), margin=1e-3))

    # Per run: JᵀJ, Jᵀr and χ² summed per square of its two-time grid and per angle: their totals
    # are the information and gradient, and the squares are the error covariance's (one pass for
    # both). Runs and angles are independent clusters: their squares stand side by side.
    thetas, scalings, blocks, scores, infos, chi2s, embeds, columns = [], [], [], [], [], [], [], []
    n_total = n_joint + sum(p.n_linear for p in problems)
    start = n_joint
    for r, problem in enumerate(problems):
        theta = problem.physical(joint.run_coordinates(value, r))
        contrast, offset = problem.scaling(theta)
        block_of, n_blocks, resolved = _error_blocks(problem, theta)
        score, info, chi2_k = problem.block_scores(theta, contrast, offset, block_of, n_blocks)
        cols = np.array([*index[r], *range(start, start + problem.n_linear)])
        start += problem.n_linear
        thetas.append(theta)
        scalings.append((contrast, offset))
        blocks.append((block_of, resolved))
        scores.append(score)
        infos.append(info)
        chi2s.append(chi2_k)
        embeds.append(_angle_embedding(problem, cols, n_total))
        columns.append(cols)
    n_max = max(s.shape[0] for s in scores)
    score = jnp.concatenate([_padded(s, n_max) for s in scores], axis=2)
    info = jnp.concatenate([_padded(i, n_max) for i in infos], axis=2)
    embed = jnp.concatenate(embeds, axis=0)
    chi2_k = jnp.concatenate(chi2s)
    h = jnp.einsum("kam,kmn,kbn->ab", embed, jnp.sum(info, axis=(0, 1)), embed)
    g = jnp.einsum("kam,km->a", embed, jnp.sum(score, axis=(0, 1)))
    chi2 = jnp.sum(chi2_k)
    n_residuals = sum(p.n_residuals for p in problems)
    dof = jnp.asarray(n_residuals - n_total, float)  # traced with a mask
    reduced = chi2 / dof
    h_inv = inverse(h)
    # A parameter on a bound (physical, or a clipped contrast/offset) is a constrained minimum only
    # if χ² rises going inward; then it leaves the minimum test. One whose gradient points inward
    # stays in the test, so a fit stuck on a bound it should leave is not converged.
    frac = transform.fraction(transform.to_physical(value))
    lin, lin_lo, lin_hi = [], [], []
    for problem, (contrast, offset) in zip(problems, scalings, strict=True):
        groups = problem.n_linear // 2
        lin.append(jnp.concatenate([contrast[:groups], offset[:groups]]))
        lin_lo.append(jnp.repeat(problem.lin_lower, groups))
        lin_hi.append(jnp.repeat(problem.lin_upper, groups))
    lin, lin_lo, lin_hi = map(jnp.concatenate, (lin, lin_lo, lin_hi))
    at_lower = jnp.concatenate([frac < 1e-4, lin <= lin_lo])
    at_upper = jnp.concatenate([frac > 1 - 1e-4, lin >= lin_hi])
    pinned = (at_lower & (g >= 0)) | (at_upper & (g <= 0))  # g = ½∂χ²/∂p
    phys_at_bound = (at_lower | at_upper)[:n_joint]
    active = ~pinned
    g_active = jnp.where(active, g, 0.0)
    h_active = jnp.where(active[:, None] & active[None, :], h, jnp.eye(h.shape[0]))
    decrement = g_active @ inverse(h_active) @ g_active / jnp.maximum(reduced, 1.0)
    # Near a bound the logistic map flattens, so the solver may creep towards a pinned parameter
    # until max_steps; that is still a minimum if the test below passes.
    solver_done = (result == optx.RESULTS.successful) | (
        (result == optx.RESULTS.nonlinear_max_steps_reached) & jnp.any(pinned[:n_joint])
    )
    converged = solver_done & (decrement < DECREMENT_TOL)
    # a fit with every physical parameter on a bound has determined none of them
    converged = converged & jnp.isfinite(chi2) & ~jnp.all(phys_at_bound) & ok
    # creeping towards a bound: reported, so that a fit stopped by a bound is never taken as free
    # (a fit that did not converge may still be on its way there: a wider margin)
    margin = jnp.where(converged, NEAR_BOUND, NEAR_BOUND_UNCONVERGED)
    phys_near_bound = (frac < margin) | (frac > 1 - margin) | phys_at_bound

    # Uncertainties. Errors of C2 elements that share frames (or frames within the correlation
    # time) are correlated, so (JᵀJ)⁻¹ counts every element as new information; the reported
    # covariance sums scores over windows of squares of the two-time grid as wide as the fitted
    # dynamics keep frames correlated (`_correlated_covariance`). It needs no σ scale. (JᵀJ)⁻¹, scaled by
    # the reduced χ² when σ was estimated, stays as the independent-element covariance.
    estimated = runs[0][2] is None
    cov_independent = h_inv * reduced if estimated else h_inv
    linear_free = jnp.concatenate(
        [p.linear_free(c, b) for p, (c, b) in zip(problems, scalings, strict=True)]
    )
    cov, undetermined = _correlated_covariance(n_joint, linear_free, h, score, info, embed)
    ratio = jnp.ones_like(chi2_k)
    if estimated:
        # The second differences that estimated σ cancel much of the noise that neighbouring
        # frames share (SPEC §6): 5–30 % low on detector data. The σ reported is the residuals'
        # own per angle (each angle's share of the degrees of freedom), so that χ²/dof = 1 by
        # construction; the estimates and the error covariance do not depend on σ's scale.
        pairs = jnp.concatenate(  # each angle's residuals, its share of the dof
            [jnp.full(p.model.n_phi, p.n_residuals / p.model.n_phi) for p in problems]
        )
        ratio = jnp.sqrt(chi2_k / (dof * pairs / n_residuals))
        chi2 = jnp.sum(chi2_k / ratio**2)  # = dof
        reduced = chi2 / dof
    # a variance that is not ≥ 0 also comes from an information matrix that is singular in
    # floating point: the data do not determine that parameter. Its variance is inf, its
    # covariances NaN (a correlation with it means nothing)
    unknown = undetermined | ~(jnp.diagonal(cov) >= 0)
    unknown = unknown[:, None] | unknown[None, :]
    diagonal = jnp.eye(h.shape[0], dtype=bool)
    cov, cov_independent = (
        jnp.where(unknown, jnp.where(diagonal, jnp.inf, jnp.nan), c) for c in (cov, cov_independent)
    )
    std, std_independent = (jnp.sqrt(jnp.diagonal(c)) for c in (cov, cov_independent))

    def void(x):  # estimates from unusable inputs are NaN (the status says why)
        return jnp.where(ok, x, jnp.nan)

    code = optx.RESULTS.where(ok, result, optx.RESULTS.nonfinite)
    results, first_angle = [], 0
    for r, problem in enumerate(problems):
        model, _, _, sigma_used, status = runs[r][0], *checked[r]
        n_phi, ix, cols = model.n_phi, np.array(index[r]), columns[r]
        angles = slice(first_angle, first_angle + n_phi)
        first_angle += n_phi
        free = np.flatnonzero(problem.free)
        cls = LaminarFlowParams if problem.laminar else StaticParams
        zeros = jnp.zeros_like(thetas[r])
        groups = problem.n_linear // 2
        # one value per bin from one per contrast/offset group (one group when shared)
        lin_std = jnp.repeat(std[cols[free.size :]], n_phi // groups)
        chi2_r = jnp.sum(chi2_k[angles] / ratio[angles] ** 2)
        dof_r = jnp.asarray(problem.n_residuals - free.size - problem.n_linear, float)
        lin_names = (
            ("contrast", "offset")
            if problem.shared
            else tuple(f"contrast[{k}]" for k in range(n_phi))
            + tuple(f"offset[{k}]" for k in range(n_phi))
        )
        contrast, offset = scalings[r]
        block_of, resolved = blocks[r]
        results.append(
            FitResult(
                params=cls.from_array(void(thetas[r])),
                errors=cls.from_array(void(zeros.at[free].set(std[ix]))),
                contrast=void(contrast),
                offset=void(offset),
                contrast_error=void(lin_std[:n_phi]),
                offset_error=void(lin_std[n_phi:]),
                covariance=void(cov[np.ix_(cols, cols)]),
                errors_independent=cls.from_array(void(zeros.at[free].set(std_independent[ix]))),
                covariance_independent=void(cov_independent[np.ix_(cols, cols)]),
                error_blocks=block_of[-1] + 1,
                n_clusters=jnp.sum(jnp.trace(infos[r], axis1=-2, axis2=-1) > 0),
                correlation_resolved=resolved,
                chi2=void(chi2_r),
                dof=dof_r.astype(int),
                reduced_chi2=void(chi2_r / dof_r),
                n_steps=n_steps,
                result=code,
                status=status,
                converged=converged,
                decrement=void(decrement),
                at_bound=jnp.zeros(thetas[r].shape, bool).at[free].set(phys_at_bound[ix] & ok),
                near_bound=jnp.zeros(thetas[r].shape, bool).at[free].set(phys_near_bound[ix] & ok),
                bounds_lower=jnp.full(thetas[r].shape, jnp.nan).at[free].set(transform.lower[ix]),
                bounds_upper=jnp.full(thetas[r].shape, jnp.nan).at[free].set(transform.upper[ix]),
                sigma=sigma_used * ratio[angles] if estimated else sigma_used,
                frame_mask=_frames_used(problem),
                model=model,
                names=tuple(n for n, f in zip(cls.names, problem.free, strict=True) if f)
                + lin_names,
                sigma_estimated=estimated,
            )
        )
    lin_names = tuple(
        f"{name} (run {r})" for r, res in enumerate(results) for name in res.names[len(index[r]) :]
    )
    return JointFitResult(
        runs=tuple(results),
        covariance=void(cov),
        covariance_independent=void(cov_independent),
        chi2=void(chi2),
        dof=dof.astype(int),
        reduced_chi2=void(reduced),
        n_steps=n_steps,
        result=code,
        status=_first_failure(statuses),
        converged=converged,
        decrement=void(decrement),
        names=tuple(names) + lin_names,
        sigma_estimated=estimated,
    )


def _solve(model, data, sigma, setup: _Setup, solver, max_steps: int, throw: bool) -> FitResult:
    """One fit, start to `FitResult`: a pure function of arrays, compiled by `fit` and vmapped by
    `fit_many` (`_solve_runs` with one run)."""
    names = tuple(n for n, f in zip(parameter_names(setup.laminar), setup.free, strict=True) if f)
    index = (tuple(range(len(names))),)
    runs = ((model, data, sigma, setup),)
    return _solve_runs(runs, index, names, solver, max_steps, throw).runs[0]


def _error_blocks(problem: Problem, theta) -> tuple[Int[Array, " S"], int, Bool[Array, ""]]:
    """The block of frames of each square of the tiles, (S,), for the error covariance, the
    number of blocks it may use, and whether the blocks are as wide as the frames stay
    correlated. Blocks: one step of the fitted model's decorrelation clock each
    (`Problem.decorrelation_clock`), in whole squares (a square joins the block of its middle
    frame), at most SCORE_BLOCKS. Up to 256 frames the squares are single frames."""
    n, n_squares, side = problem.model.n_frames, problem.n_squares, problem.side
    n_blocks = min(n_squares, SCORE_BLOCKS)
    spacing = np.log(1 / CORRELATION_LEVEL)
    clock = problem.decorrelation_clock(theta, CORRELATION_LEVEL)
    resolved = clock[-1] >= MIN_ERROR_BLOCKS * spacing
    step = jnp.maximum(spacing, clock[-1] / (n_blocks - 0.5))
    middle = np.minimum(np.arange(n_squares) * side + side // 2, n - 1)  # each square's frame
    by_clock = jnp.minimum(jnp.floor(clock[middle] / jnp.where(resolved, step, 1.0)), n_blocks - 1)
    # Fewer than MIN_ERROR_BLOCKS correlation times in the window: blocks that wide would leave
    # too few windows for the error covariance to stand on, and none narrower can hold the
    # correlation. The blocks are then the finest (equal runs of squares): right for independent element
    # errors, too small for detector data; the result says so (``correlation_resolved``).
    by_squares = jnp.asarray((np.arange(n_squares) * n_blocks) // n_squares, jnp.int32)
    return jnp.where(resolved, by_clock.astype(jnp.int32), by_squares), n_blocks, resolved


def _angle_embedding(
    problem: Problem, columns: np.ndarray | None = None, n_total: int | None = None
) -> Float[Array, "n_phi K m"]:
    """Where angle k's parameters [free θ, contrast_k, offset_k] (m) sit among all of them: 0/1
    matrices. Without ``columns``, among the problem's own [free θ, contrast, offset] (K; one
    contrast and offset when shared); with them, at ``columns`` (the positions of the problem's
    own among ``n_total``: a run of a joint fit)."""
    f, n_phi, groups = sum(problem.free), problem.model.n_phi, problem.n_linear // 2
    index = np.array([[*range(f), f + k % groups, f + groups + k % groups] for k in range(n_phi)])
    if columns is None or n_total is None:
        columns, n_total = np.arange(f + 2 * groups), f + 2 * groups
    return jnp.asarray(np.eye(n_total)[:, columns[index]].transpose(1, 0, 2))


def _correlated_covariance(n_physical: int, linear_free, h, score, info, embed):
    """The covariance that accounts for correlated C2 errors (`window_covariance`) from the
    per-square sums of `Problem.block_scores` (of every angle of every run), over ``n_physical``
    physical parameters and the contrast/offset values, ``linear_free`` telling which of those
    are inside their bounds (`Problem.linear_free`). A contrast or offset clipped to a bound is
    held there: an identity row and column of the information, no scores. Also which parameters
    the data do not determine (`homodyne._covariance.inverse_and_blind`, of that information):
    their error is unbounded, whatever the sandwich gives (zero residuals give it zero)."""
    held = jnp.concatenate([jnp.ones(n_physical, bool), linear_free])
    h_held = jnp.where(held[:, None] & held[None, :], h, jnp.eye(h.shape[0]))
    # angle k's columns of J_k among all parameters: 0 for a held one
    kept = jnp.einsum("kam,a->km", embed, held.astype(float))
    score = score * kept
    info = info * kept[:, :, None] * kept[:, None, :]
    h_inverse, blind = inverse_and_blind(h_held)
    return window_covariance(score, info, h_inverse, embed, ERROR_WINDOW), blind


_solve_jit = eqx.filter_jit(_solve)


@eqx.filter_jit
def _solve_many(
    model, data, sigma, setup: _Setup, solver, max_steps, throw, sigma_axis, init_axis, mask_axis
):
    def one(d, s, start, fixed_values, frame_mask):
        each = dataclasses.replace(
            setup, start=start, fixed_values=fixed_values, frame_mask=frame_mask
        )
        return _solve(model, d, s, each, solver, max_steps, throw)

    in_axes = (0, sigma_axis, init_axis, init_axis, mask_axis)
    return eqx.filter_vmap(one, in_axes=in_axes)(
        data, sigma, setup.start, setup.fixed_values, setup.frame_mask
    )


def _checked_inputs(model, data, sigma, init, spec, options, frame_mask):
    """`fit`'s checks before compiling, in NumPy: data and σ as the compiled fit takes them and
    the resolved `_Setup` (``TypeError``/``ValueError`` for what cannot be fitted)."""
    _check_types(model, spec, options)
    data = _as_array(data)
    _check_data(model, np.shape(data), batched=False)
    mask = _checked_mask(frame_mask, model, batched=False)
    _check_finite(data, mask)
    sigma = _checked_sigma(sigma, model, batched=False, frame_mask=mask)
    return data, sigma, _setup(model, init, spec, batched=False, frame_mask=mask)


def _raise_for_status(status: FitStatus, data, prefix: str = "", frame_mask=None) -> None:
    """``ValueError`` with the status's message (and where the data are not finite at pairs of
    used frames) unless ok."""
    message = FitStatus[status]
    if not message:
        return
    if message == FitStatus[FitStatus.nonfinite_data]:
        bad = ~np.isfinite(np.asarray(data))
        if frame_mask is not None:
            used = np.asarray(frame_mask)
            bad &= used[:, None] & used[None, :]
        message = _nonfinite_message(np.argwhere(bad)[0])
    raise ValueError(prefix + message)


# --- the public entry points -------------------------------------------------------------------


@overload
def fit(
    model: HomodyneModel,
    data: ArrayLike,
    *,
    sigma: ArrayLike | None = None,
    init: Params | ArrayLike | None = None,
    spec: FitSpec = FitSpec(),
    options: FitOptions = FitOptions(),
    frame_mask: ArrayLike | None = None,
) -> FitResult: ...


@overload
def fit(
    model: Sequence[tuple[HomodyneModel, ArrayLike]],
    data: None = None,
    *,
    sigma: Sequence[ArrayLike] | None = None,
    init: Params | ArrayLike | None = None,
    spec: FitSpec = FitSpec(),
    options: FitOptions = FitOptions(),
    frame_mask: Sequence[ArrayLike | None] | None = None,
) -> JointFitResult: ...


def fit(
    model,
    data=None,
    *,
    sigma=None,
    init=None,
    spec: FitSpec = FitSpec(),
    options: FitOptions = FitOptions(),
    frame_mask=None,
) -> FitResult | JointFitResult:
    """Fit g2 = offset + contrast·g1² of ``model`` to measured C2 by nonlinear least squares.

    ``fit(model, data)`` fits one run (one time axis; its bins may lie on several q rings).
    ``fit([(model_a, data_a), (model_b, data_b), ...])`` fits several runs jointly (files,
    sample ages, windows or time origins, each with its own model) and returns a
    `JointFitResult`: see "Several runs" below.

    Residuals (data − g2)/σ run over every angle and every pair t1 < t2 once; the diagonal
    t1 = t2, which carries a shot-noise excess, is excluded. Contrast and offset are solved in
    closed form for each trial of the physical parameters (variable projection), per angle or
    shared, and clipped to their bounds.

    Args:
        model: the experiment (q, L, dt, frame times, angles).
        data: measured C2, (n_phi, N, N) (or (N, N) for one angle); symmetric, full matrices.
        sigma: noise: scalar, one per angle, or an array like data. ``None``: estimated per angle
            (second differences along lines of equal lag weigh the angles in the fit; the σ
            reported is each angle's residual RMS, so the reduced χ² is 1); the result says so
            (``sigma_estimated``). The reported errors (``result.errors``) do not depend on σ's
            scale: they come from the residuals, by scores summed over windows of the two-time
            grid (see `FitResult`).
        init: starting parameters (`StaticParams`, `LaminarFlowParams` or a flat array of 3 or 7).
            ``None``: automatic. A coarse grid over D0 × alpha (laminar: × gamma_dot_t0 × beta ×
            phi0; others mid-range) is scored on the data subsampled to 32 frames; its best points
            (and the best for each phi0) are refined on the data subsampled to 128 frames (below
            256 frames, on the full data); the two refined points with the lowest χ² on the full
            data each get 6 solver steps there, and the fit is finished from the one with the
            lower χ² (about 2–3× the cost of a fit from a good ``init``).
        spec: what is fitted (`FitSpec`: mode, bounds, fixed parameters, scaling); default: the
            mode from ``init`` (or static for one angle; with several angles and no ``init`` the
            mode must be given), the SPEC §4 bounds scaled to the experiment
            (`homodyne.default_bounds`), nothing fixed, contrast and offset per angle.
        options: how it is solved (`FitOptions`: solver, max_steps, rtol, atol, throw,
            verbose); default: `homodyne.FitSolver` with tolerances 1e-8, at most 256 steps.
        frame_mask: bad frames (beam dumps, detector glitches): a boolean array (N,), True for
            each frame used, False for each excluded. Every pair (t1, t2) that touches an
            excluded frame is left out of the fit (and of the noise estimate, the automatic
            start and ``dof``); the time axis is unchanged, the model is still evaluated at
            every frame time. Data there may hold anything, NaN included. ``None``: every
            frame is used. A new mask of the same shape reuses the compiled fit.

    Returns:
        A `FitResult`. ``print(result)`` shows a table with units (and how many frames were
        excluded; ``result.frame_mask`` holds the mask).

    Raises:
        TypeError: for a model, spec or options of the wrong type, or a frame_mask that is not
            boolean.
        ValueError: for data whose shape does not match the model, NaN/inf data at used frames,
            bad sigma (or one that cannot be estimated from the data), a frame_mask of the wrong
            shape or that leaves fewer than 3 frames (or too few pairs for the unknowns), an
            init outside the bounds or of another mode than ``spec.mode``, or an impossible
            ``spec.fixed``. Inside
            ``jax.jit``/``vmap``/``grad``, where the values of data and σ cannot be seen, their
            failures are reported in ``result.status`` instead (`FitStatus`).

    The whole fit is one compiled function, compiled once per problem shape (and spec flags):
    new data, σ, init, bounds or model values of the same shapes reuse it. It is differentiable:
    gradients of the estimates with respect to the data or the model's inputs follow from the
    implicit function theorem (optimistix's ImplicitAdjoint).

    Several runs: ``model`` is a sequence of ``(model, data)`` pairs (``data`` is not given).
    The runs share every free physical parameter except those named in ``spec.per_run``
    (e.g. ``FitSpec(mode="static", per_run=("D_offset",))``), which are fitted once per run;
    contrast and offset are per bin of each run. χ² is the sum over the runs. ``sigma`` and
    ``frame_mask`` are then ``None`` or one entry per run (each as for one run; σ is given for
    every run or estimated for every run). ``init``, ``spec`` and ``options`` are shared: a
    per-run parameter starts from ``init``'s value in every run. A shared parameter's default
    bounds are the union of the runs' (each run's follow its own q and window). The automatic
    start tries each run's two starts (the race costs 2 × runs × 6 steps). Errors come from one
    covariance over all runs (the runs are independent clusters of the error covariance).
    """
    if isinstance(model, Sequence) and not isinstance(model, str):
        return _fit_runs(model, data, sigma, init, spec, options, frame_mask)
    _check_one_run(spec)
    data, sigma, setup = _checked_inputs(model, data, sigma, init, spec, options, frame_mask)
    if options.verbose:
        ProgressLine.start()
    result = _solve_jit(
        model, data, sigma, setup, options.fit_solver(), options.max_steps, options.throw
    )
    if options.verbose and not is_traced(result.chi2):
        jax.block_until_ready(result.chi2)  # every step's callback has run
        ProgressLine.end()
    # what only the compiled fit could check raises as soon as it can be seen (one small read,
    # which waits for the fit: skipped when NumPy inputs were checked above)
    unchecked = sigma is None or isinstance(data, jax.Array) or isinstance(sigma, jax.Array)
    if unchecked and not is_traced(result.chi2):
        _raise_for_status(result.status, data, frame_mask=setup.frame_mask)
    return result


def _fit_runs(runs, data, sigma, init, spec, options, frame_mask) -> JointFitResult:
    """`fit` of several runs: the checks of each run (in NumPy), then one compiled joint fit."""
    if data is not None:
        raise TypeError(
            "a joint fit takes the data inside its runs: fit([(model_a, data_a), (model_b, "
            "data_b), ...]) without a second argument."
        )
    runs = list(runs)
    if not runs or not all(isinstance(r, tuple | list) and len(r) == 2 for r in runs):
        raise TypeError(
            "a joint fit takes a non-empty sequence of (model, data) pairs, one per run: "
            "fit([(model_a, data_a), (model_b, data_b)])."
        )
    n = len(runs)
    sigmas = _per_run_argument(sigma, n, "sigma")
    masks = _per_run_argument(frame_mask, n, "frame_mask")
    if len({s is None for s in sigmas}) > 1:
        raise ValueError(
            "sigma must be given for every run or for none (then it is estimated for each): "
            f"got it for runs {[r for r, s in enumerate(sigmas) if s is not None]} only."
        )
    checked = []
    for r, ((m, d), s, mask) in enumerate(zip(runs, sigmas, masks, strict=True)):
        try:
            checked.append((m, *_checked_inputs(m, d, s, init, spec, options, mask)))
        except (TypeError, ValueError) as error:
            raise type(error)(f"run {r}: {error}") from None
    setups = [c[3] for c in checked]
    modes = {setup.laminar for setup in setups}
    if len(modes) > 1:
        raise ValueError(
            "the runs resolve to different modes (static and laminar flow): give the mode for "
            "all of them, FitSpec(mode='static') or FitSpec(mode='laminar')."
        )
    names = parameter_names(setups[0].laminar)
    free = [name for name, f in zip(names, setups[0].free, strict=True) if f]
    joint_names, index = _joint_layout(free, spec.per_run, n)
    if options.verbose:
        ProgressLine.start()
    result = _solve_runs_jit(
        tuple(checked),
        index,
        joint_names,
        options.fit_solver(),
        options.max_steps,
        options.throw,
    )
    if options.verbose and not is_traced(result.chi2):
        jax.block_until_ready(result.chi2)
        ProgressLine.end()
    if not is_traced(result.chi2):
        for r, ((_, d, _, setup), run) in enumerate(zip(checked, result.runs, strict=True)):
            _raise_for_status(run.status, d, f"run {r}: ", setup.frame_mask)
    return result


def _check_one_run(spec) -> None:
    if isinstance(spec, FitSpec) and spec.per_run:
        raise ValueError(
            f"FitSpec(per_run={list(spec.per_run)}) applies to a joint fit of several runs, "
            "homodyne.fit([(model_a, data_a), (model_b, data_b), ...]); this fit has one run."
        )


def _per_run_argument(value, n: int, name: str) -> list:
    """``None`` for every run, or the sequence of one entry per run."""
    if value is None:
        return [None] * n
    if isinstance(value, np.ndarray | jax.Array) or not isinstance(value, Sequence):
        raise TypeError(
            f"in a joint fit {name} is None or a sequence of one entry per run (a list); got "
            f"{type(value).__name__}."
        )
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries; the joint fit has {n} runs.")
    return list(value)


def _joint_layout(
    free: list[str], per_run: tuple[str, ...], n_runs: int
) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    """The joint coordinates: each shared free parameter once, each per-run one once per run
    (``"D_offset[run 1]"``), in the order of the parameters; and each run's positions among
    them."""
    names: list[str] = []
    index: list[list[int]] = [[] for _ in range(n_runs)]
    for name in free:
        if name in per_run:
            for r in range(n_runs):
                index[r].append(len(names))
                names.append(f"{name}[run {r}]")
        else:
            for r in range(n_runs):
                index[r].append(len(names))
            names.append(name)
    return tuple(names), tuple(tuple(i) for i in index)


_solve_runs_jit = eqx.filter_jit(_solve_runs)


def fit_many(
    model: HomodyneModel,
    data: ArrayLike,
    *,
    sigma: ArrayLike | None = None,
    init: Params | ArrayLike | None = None,
    spec: FitSpec = FitSpec(),
    options: FitOptions = FitOptions(),
    frame_mask: ArrayLike | None = None,
) -> FitResult:
    """Fit B datasets of the same shape in one vectorised call (see `fit` for the arguments).

    Args:
        data: (B, n_phi, N, N).
        sigma: ``None`` (estimated per dataset and angle), a scalar, or an array like one dataset
            (shared by all) or like ``data`` (one per dataset).
        init: ``None`` (automatic per dataset), one parameter set for all, or a batched one
            (leaves of shape (B,), e.g. ``LaminarFlowParams.from_array(x)`` with x of shape (B, 7)).
        spec, options: as for `fit`, shared by every dataset. ``options.verbose`` is not
            available (the fits run side by side). ``options.throw=True`` raises if any fit fails
            or any dataset is unusable.
        frame_mask: ``None`` (every frame used), one boolean mask (N,) for all datasets, or one
            per dataset (B, N); True for each frame used (see `fit`).

    Returns:
        A `FitResult` whose leaves have a leading batch axis B; take fit b with
        ``jax.tree.map(lambda x: x[b], result)``. A failed fit does not stop the others: check
        ``result.converged``, and ``result.status`` for datasets whose values were unusable
        (NaN data, σ not > 0 or not estimable: their estimates are NaN). Only a σ given as a
        Python number or NumPy array is checked before (``ValueError``), as are shapes and init.
    """
    _check_types(model, spec, options)
    _check_one_run(spec)
    if options.verbose:
        raise ValueError(
            "fit_many cannot print progress (its fits run side by side): use FitOptions with "
            "verbose=False, or fit the datasets one by one with homodyne.fit."
        )
    data = _as_array(data)
    _check_data(model, np.shape(data), batched=True)
    n_batch = np.shape(data)[0]
    sigma_axis = None
    if sigma is not None and np.ndim(sigma) == 4:  # one σ array per dataset
        sigma_axis = 0
        if np.shape(sigma)[0] != n_batch:
            raise ValueError(
                f"sigma holds {np.shape(sigma)[0]} arrays like one dataset; data has {n_batch} "
                "datasets."
            )
    mask = _checked_mask(frame_mask, model, batched=True)
    mask_axis = None if mask is None or mask.ndim == 1 else 0
    if mask is not None and mask_axis == 0 and mask.shape[0] != n_batch:
        raise ValueError(f"frame_mask holds {mask.shape[0]} masks; data has {n_batch} datasets.")
    sigma = _checked_sigma(sigma, model, batched=sigma_axis == 0, frame_mask=mask)
    setup = _setup(model, init, spec, batched=True, frame_mask=mask)
    init_axis = None if setup.start is None or setup.start.ndim == 1 else 0
    if init_axis == 0 and setup.start is not None and setup.start.shape[0] != n_batch:
        raise ValueError(
            f"init holds {setup.start.shape[0]} parameter sets; data has {n_batch} datasets."
        )
    result = _solve_many(
        model,
        data,
        sigma,
        setup,
        options.fit_solver(),
        options.max_steps,
        options.throw,
        sigma_axis,
        init_axis,
        mask_axis,
    )
    if options.throw and not is_traced(result.chi2):
        codes = jax.tree.map(np.asarray, result.status)
        for b in range(n_batch):
            status = jax.tree.map(lambda x, b=b: np.asarray(x[b]), codes)
            if FitStatus[status]:
                each = None if mask is None else mask if mask.ndim == 1 else mask[b]
                _raise_for_status(status, data[b], f"dataset {b}: ", each)
    return result


def _build(
    model: HomodyneModel, data, sigma, init=None, spec: FitSpec = FitSpec(), frame_mask=None
) -> tuple[Problem, Array | None]:
    """The problem and solver start that `fit` solves (for tests and benchmarks): `fit`'s checks,
    then the problem built by one compiled function (run eagerly, each of its many small
    operations would be compiled on its own)."""
    data, sigma, setup = _checked_inputs(model, data, sigma, init, spec, FitOptions(), frame_mask)
    return _build_compiled(model, data, sigma, setup)


@eqx.filter_jit
def _build_compiled(model, data, sigma, setup: _Setup) -> tuple[Problem, Array | None]:
    d, sigma_grid, _, _ = _checked_values(model, data, sigma, setup)
    return _problem_and_start(model, d, sigma_grid, setup)
