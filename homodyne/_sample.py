"""`homodyne.sample`: the posterior of the physical parameters (SPEC §7).

The log-posterior is a function of the sampled physical parameters θ themselves: the integrated
log-likelihood (`homodyne._likelihood`: the fit's residuals, contrast and offset integrated out
per bin) plus each prior, −inf outside the bounds (`homodyne._prior`). Not the fit's unbounded
coordinates: the parameters are strongly correlated (D0, alpha and D_offset; gamma_dot_t0, beta
and gamma_dot_t_offset), so the posterior is a narrow ridge that is straight in θ but bent by the
fit's logistic and logarithmic maps, enough to make it far from Gaussian there (the log-density
along a ridge direction fell 30–60× faster than quadratic one standard deviation out, at
3 × 200 frames).

Correlated C2 errors. Elements of a measured C2 share frames, so the likelihood that takes them as
independent is too sharp by the factor the fit's error covariance measures (SPEC §6: 10–40×
in the errors on detector data). The sampled likelihood is curvature-adjusted (Chandler & Bate
2007, "Inference for clustered data using the independence loglikelihood", Biometrika 94, 167;
Ribatet, Cooley & Davison 2012 for its use in Bayesian inference): ℓ_adj(θ) = ℓ(θ̂ + C(θ − θ̂)),
with θ̂ the fit and C = R_I⁻¹R_A, where R_IᵀR_I = −∇²ℓ(θ̂) (the independent-element curvature,
by central differences of the exact gradient) and R_AᵀR_A = Σ_A⁻¹ (the fit's error
covariance). ℓ_adj has the mode of ℓ and the curvature Σ_A⁻¹, so with flat priors the posterior's
covariance is the fit's covariance at large N, and on data with independent errors C ≈ I.
``adjust=False`` samples ℓ itself.

Samplers: ``"laplace"``, the Gaussian at the posterior mode (Newton from the fit), checked by
Pareto-smoothed importance sampling; ``"nuts"``, blackjax's NUTS with the Laplace covariance as
its metric, started from Laplace draws, step size adapted by dual averaging during warm-up. The
chains run in parallel threads (the compiled passes release the GIL; one pass keeps about one core
busy), one compiled function for every chain, in chunks between which progress is reported.
"""

import concurrent.futures
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from . import _fit
from ._diagnostics import ess_bulk, ess_tail, psis, rhat
from ._likelihood import log_likelihood
from ._model import HomodyneModel
from ._options import FitOptions
from ._params import LaminarFlowParams, StaticParams
from ._posterior import Posterior, diagnostic_warnings
from ._precision import as_data
from ._prior import AbstractPrior, log_prior, resolve_priors
from ._result import FitResult, JointFitResult
from ._spec import FitSpec

METHODS = ("nuts", "laplace")
TARGET_ACCEPTANCE = 0.65  # see `_DualAveraging`
CHUNK = 50  # NUTS steps per compiled call, at most (progress is reported between calls)
NEWTON_STEPS = 8  # at most, from the fit to the posterior mode
HESSIAN_STEP = 1e-2  # central differences of the gradient, in standard deviations


class _Run(eqx.Module):
    """What the likelihood of one run reads: its data in place, σ, the frames used, the fit's
    contrast and offset (the reference of the sums), and its held values."""

    model: HomodyneModel
    data: Float[Array, "n_phi N N"]
    sigma: Float[Array, "_ _ _"]
    frames_used: Bool[Array, " N"]
    contrast: Float[Array, " n_phi"]
    offset: Float[Array, " n_phi"]
    values: Float[Array, " P"]  # the fit's physical values (held ones stay)
    free: tuple[bool, ...] = eqx.field(static=True)
    laminar: bool = eqx.field(static=True)
    shared: bool = eqx.field(static=True)

    def log_likelihood(self, free_values: Float[Array, " F"]) -> Float[Array, ""]:
        theta = self.values.at[np.flatnonzero(self.free)].set(free_values)
        params = (LaminarFlowParams if self.laminar else StaticParams).from_array(theta)
        return log_likelihood(
            self.model, params, self.data, self.sigma, self.contrast, self.offset,
            frames_used=self.frames_used, shared=self.shared,
        )  # fmt: skip


class LogPosterior(eqx.Module):
    """log p(θ | data) up to a constant, over a fit's G sampled physical parameters θ (a joint
    fit's, per-run ones included): −inf outside the bounds."""

    runs: tuple[_Run, ...]
    lower: Float[Array, " G"]
    upper: Float[Array, " G"]
    center: Float[Array, " G"]  # θ̂, the fit
    adjustment: Float[Array, "G G"]  # C
    priors: tuple[AbstractPrior, ...]
    index: tuple[tuple[int, ...], ...] = eqx.field(static=True)

    def log_likelihood(self, theta: Float[Array, " G"]) -> Float[Array, ""]:
        """The integrated log-likelihood, unadjusted."""
        total = jnp.zeros(())
        for run, ix in zip(self.runs, self.index, strict=True):
            total = total + run.log_likelihood(theta[np.array(ix)])
        return total

    def __call__(self, theta: Float[Array, " G"]) -> Float[Array, ""]:
        # the likelihood at the point moved into the bounds: finite everywhere (outside the
        # prior makes it −inf), so that no NaN reaches a gradient
        inside = jnp.clip(theta, self.lower, self.upper)
        moved = self.center + self.adjustment @ (inside - self.center)
        return self.log_likelihood(moved) + log_prior(self.priors, self.lower, self.upper, theta)


# --- compiled pieces (one compilation per problem shape, reused by every chain) -----------------


@eqx.filter_jit
def _value_and_grad(density, u):
    return jax.value_and_grad(lambda v: density(v))(u)


@eqx.filter_jit
def _likelihood_grad(density: LogPosterior, u):
    return jax.grad(density.log_likelihood)(u)


@eqx.filter_jit
def _values(density, us):
    return jax.lax.map(density, us)


def _fd_hessian(grad, u: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """∇² in u by central differences of the exact gradient along the columns of ``basis`` (L
    with LLᵀ a covariance close to the inverse Hessian: the parameters are strongly correlated,
    so steps along u's own axes would be ill-conditioned), HESSIAN_STEP long in units of
    ``basis``, symmetrised."""
    g = len(u)
    h_z = np.empty((g, g))
    for j in range(g):
        step = HESSIAN_STEP * basis[:, j]
        diff = np.asarray(grad(u + step)) - np.asarray(grad(u - step))
        h_z[:, j] = basis.T @ diff / (2 * HESSIAN_STEP)
    h_z = 0.5 * (h_z + h_z.T)
    inv = np.linalg.inv(basis)
    return inv.T @ h_z @ inv


def _covariance_factor(cov: np.ndarray, what: str) -> np.ndarray:
    """Lower L with LLᵀ = ``cov``; ValueError if ``cov`` is not finite and positive definite."""
    if _is_positive_definite(cov):
        return np.linalg.cholesky(0.5 * (cov + cov.T))
    raise ValueError(
        f"{what} is not finite and positive definite: the data do not determine every sampled "
        "parameter. Hold the undetermined ones (FitSpec(fixed=...)) or narrow their bounds."
    )


def _upper_cholesky(h: np.ndarray, what: str) -> np.ndarray:
    """R with RᵀR = h; ValueError saying ``what`` is not positive definite otherwise."""
    try:
        return np.linalg.cholesky(h).T
    except np.linalg.LinAlgError:
        raise ValueError(
            f"{what} is not positive definite: the data do not determine every sampled "
            "parameter. Hold the undetermined ones (FitSpec(fixed=...)) or narrow their bounds."
        ) from None


# --- NUTS ---------------------------------------------------------------------------------------


class _DualAveraging(eqx.Module):
    """Hoffman & Gelman's (2014) dual averaging of log(step size) towards a mean acceptance
    statistic of TARGET_ACCEPTANCE. 0.65, the optimum of HMC in high dimension (Beskos et al.
    2013), rather than Stan's 0.8: with the Laplace covariance as metric the posterior is close
    to an isotropic Gaussian, and at 3 angles × 300 frames (laminar flow) 0.8 took 5.6 leapfrog
    steps per draw where 0.65 took 3.5, with the same bulk ESS (≥ 4000 of 4000 draws) and no
    divergences in either. A divergence or a low ESS is still reported."""

    log_step: Float[Array, ""]
    log_step_mean: Float[Array, ""]
    error: Float[Array, ""]
    count: Float[Array, ""]
    mu: Float[Array, ""]

    @staticmethod
    def start(step_size: float) -> "_DualAveraging":
        s = jnp.log(jnp.asarray(step_size, float))
        return _DualAveraging(s, s, jnp.zeros(()), jnp.zeros(()), jnp.log(10.0) + s)

    def update(self, acceptance) -> "_DualAveraging":
        t = self.count + 1
        error = (1 - 1 / (t + 10)) * self.error + (TARGET_ACCEPTANCE - acceptance) / (t + 10)
        log_step = self.mu - jnp.sqrt(t) / 0.05 * error
        weight = t**-0.75
        mean = weight * log_step + (1 - weight) * self.log_step_mean
        return _DualAveraging(log_step, mean, error, t, self.mu)


@eqx.filter_jit
def _nuts_init(density, u):
    import blackjax  # pyright: ignore[reportMissingImports]  (an optional extra)

    return blackjax.nuts.init(u, density)


@eqx.filter_jit
def _nuts_chunk(density, state, dual, keys, inverse_mass, adapt, step_size):
    """len(keys) NUTS steps: during warm-up (``adapt``) at dual averaging's current step size,
    which it updates; after it at ``step_size``."""
    import blackjax  # pyright: ignore[reportMissingImports]  (an optional extra)

    def body(carry, key):
        state, dual = carry
        eps = jnp.where(adapt, jnp.exp(dual.log_step), step_size)
        kernel = blackjax.nuts(density, eps, inverse_mass)
        # blackjax declares the generic State and Info; these are HMCState and NUTSInfo
        stepped: Any = kernel.step(key, state)
        state, info = stepped
        position = stepped[0].position
        new_dual = dual.update(
            jnp.where(jnp.isfinite(info.acceptance_rate), info.acceptance_rate, 0.0)
        )
        dual = jax.tree.map(lambda a, b: jnp.where(adapt, a, b), new_dual, dual)
        stats = (position, info.num_integration_steps, info.is_divergent, info.acceptance_rate)
        return (state, dual), stats

    (state, dual), stats = jax.lax.scan(body, (state, dual), keys)
    return state, dual, stats


def _chunk_size(*counts: int) -> int:
    """The largest number ≤ CHUNK that divides every count (> 0): one compiled chunk for all."""
    g = 0
    for c in counts:
        g = math.gcd(g, c)
    return max(d for d in range(1, min(CHUNK, g) + 1) if g % d == 0)


def _workers(n_chains: int) -> int:
    """Chains run at once: one per CPU core on the CPU (a pass keeps about one busy), else one."""
    if jax.default_backend() != "cpu":
        return 1
    return max(
        1,
        min(
            n_chains,
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1,
        ),
    )


class _Progress:
    """One updating line on stderr: steps done over all chains."""

    def __init__(self, total: int, label: str, show: bool):
        self.total, self.label, self.show = total, label, show
        self.done = 0
        self.lock = threading.Lock()
        self.start = time.perf_counter()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n

    def write(self, end: bool = False) -> None:
        if not self.show:
            return
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        sys.stderr.write(
            f"\r  {self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
            f"  {elapsed:.0f} s"
            + ("" if end or not np.isfinite(left) else f", ~{left:.0f} s left")
            + "   "
        )
        if end:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _run_nuts(density, starts, inverse_mass, num_warmup, num_draws, seed, progress: bool):
    chunk = _chunk_size(num_warmup, num_draws) if num_warmup else _chunk_size(num_draws)
    n_chains = starts.shape[0]
    keys = jax.random.split(jax.random.key(seed), n_chains)
    bar = _Progress(n_chains * (num_warmup + num_draws), "NUTS (warm-up, then draws)", progress)
    inverse_mass = jnp.asarray(inverse_mass)

    def chain(c: int):
        state = _nuts_init(density, jnp.asarray(starts[c]))
        dual = _DualAveraging.start(1.0)
        steps = jax.random.split(keys[c], num_warmup + num_draws)
        out = []
        for first in range(0, num_warmup + num_draws, chunk):
            adapt = first < num_warmup
            step = jnp.exp(dual.log_step_mean)
            state, dual, stats = _nuts_chunk(
                density, state, dual, steps[first : first + chunk], inverse_mass,
                jnp.asarray(adapt), step,
            )  # fmt: skip
            jax.block_until_ready(stats)
            if not adapt:
                out.append(jax.tree.map(np.asarray, stats))
            bar.add(chunk)
        return out, float(jnp.exp(dual.log_step_mean))

    workers = _workers(n_chains)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(chain, c) for c in range(n_chains)]
        shown = -1
        while not all(f.done() for f in futures):
            if bar.done != shown:  # a line per chunk done, not per poll
                shown = bar.done
                bar.write()
            time.sleep(0.2)
        results = [f.result() for f in futures]
    bar.write(end=True)
    stats = [jax.tree.map(lambda *x: np.concatenate(x), *r[0]) for r in results]
    positions, steps, divergent, acceptance = (np.stack(x) for x in zip(*stats, strict=True))
    return positions, steps, divergent, acceptance, np.array([r[1] for r in results])


def _laplace(density: LogPosterior, start: np.ndarray, basis: np.ndarray):
    """Newton from the fit to the mode of the log-posterior, and the inverse of its curvature
    there: (mode, covariance, note). Where the curvature is not positive definite (a posterior
    cut by a bound, or one the data barely determine) Newton stops at the last good point, and
    the covariance is the fit's (``basis``·basisᵀ) with a note saying so."""

    def gradient(t):
        return _value_and_grad(density, jnp.asarray(t))[1]

    u = start.copy()
    value, grad = (np.asarray(x) for x in _value_and_grad(density, jnp.asarray(u)))
    for _ in range(NEWTON_STEPS):
        h = -_fd_hessian(gradient, u, basis)
        if not _is_positive_definite(h):
            break
        step = np.linalg.solve(h, grad)
        for _ in range(20):  # backtracking: the posterior must not fall
            new_value, new_grad = (
                np.asarray(x) for x in _value_and_grad(density, jnp.asarray(u + step))
            )
            if np.isfinite(new_value) and new_value >= value - 1e-9 * abs(value):
                break
            step = step / 2
        else:
            break  # no step up from here: the mode, as far as Newton can tell
        u, value, grad = u + step, new_value, new_grad
        if float(step @ h @ step) < 1e-10:
            break
    h = -_fd_hessian(gradient, u, basis)
    if _is_positive_definite(h):
        covariance = np.linalg.inv(h)
        return u, 0.5 * (covariance + covariance.T), None
    note = (
        "the log-posterior's curvature at its mode is not positive definite (a bound cuts the "
        "posterior, or the data barely determine a parameter): the Laplace approximation uses "
        "the fit's covariance instead"
    )
    return u, basis @ basis.T, note


def _is_positive_definite(a: np.ndarray) -> bool:
    if not np.all(np.isfinite(a)):
        return False
    try:
        np.linalg.cholesky(0.5 * (a + a.T))
    except np.linalg.LinAlgError:
        return False
    return True


# --- the entry point ----------------------------------------------------------------------------


def _checked_sampling(method, num_chains, num_draws, num_warmup, seed) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    for name, value, least in (("num_chains", num_chains, 1), ("num_draws", num_draws, 4),
                               ("num_warmup", num_warmup, 0)):  # fmt: skip
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer ≥ {least}; got {value!r}.")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer; got {seed!r}.")


def _run_list(model, data, sigma, frame_mask) -> tuple[list, list, list, bool]:
    if isinstance(model, Sequence) and not isinstance(model, str):
        if data is not None:
            raise TypeError(
                "a joint posterior takes the data inside its runs: sample([(model_a, data_a), "
                "(model_b, data_b), ...]) without a second argument."
            )
        runs = list(model)
        n = len(runs)
        return (runs, _fit._per_run_argument(sigma, n, "sigma"),
                _fit._per_run_argument(frame_mask, n, "frame_mask"), True)  # fmt: skip
    return [(model, data)], [sigma], [frame_mask], False


def sample(
    model: HomodyneModel | Sequence[tuple[HomodyneModel, ArrayLike]],
    data: ArrayLike | None = None,
    *,
    sigma=None,
    init=None,
    spec: FitSpec = FitSpec(),
    options: FitOptions = FitOptions(),
    frame_mask=None,
    prior: Mapping[str, AbstractPrior] | None = None,
    method: str = "nuts",
    num_chains: int = 4,
    num_draws: int = 1000,
    num_warmup: int = 200,
    seed: int = 0,
    fit: FitResult | JointFitResult | None = None,
    adjust: bool = True,
    progress: bool = True,
) -> Posterior:
    """Draws from the posterior of the physical parameters given C2 data (SPEC §7).

    Takes what `homodyne.fit` takes (one run, or several as ``[(model, data), ...]``; sigma,
    init, spec, options, frame_mask) and starts from that fit (run here, or the one given as
    ``fit``, which must be of these same inputs).

    Likelihood: the fit's residuals (pairs t1 < t2 of the used frames, σ as the fit reports it:
    given, or estimated per angle so that its reduced χ² is 1) with contrast and offset of each
    bin integrated out exactly under flat priors (`homodyne._likelihood`). On measured C2, whose
    elements share frames, it is adjusted so that its curvature is that of the fit's error
    covariance (``adjust``, see `homodyne._sample`); the posterior is then as wide as the fit's
    errors say, not 10–40× narrower.

    Args:
        prior: ``{name: prior}`` for any sampled parameter (`homodyne.Uniform()`,
            `homodyne.LogUniform()`, `homodyne.Normal(mean, sd)`); in a joint fit ``"D_offset"``
            applies to every run's, ``"D_offset[run 1]"`` to one. Default: uniform within the
            fit's bounds, log-uniform for D0 and gamma_dot_t0. Every prior is truncated to the
            bounds (``FitSpec(bounds=...)``).
        method: ``"nuts"`` (default) or ``"laplace"`` (see `homodyne._sample`).
        num_chains, num_draws: chains and draws per chain kept (Laplace: independent draws,
            arranged the same way, num_chains × num_draws in all).
        num_warmup: NUTS steps per chain before the draws, adapting the step size (the metric is
            the Laplace covariance from the start).
        seed: of the draws and the starting points.
        fit: a fit of these inputs to start from (skips the fit).
        adjust: adjust the likelihood for correlated C2 errors (default). ``False``: take every
            element's error as independent (right for `homodyne.simulate_c2` data, too sharp on
            detector data).
        progress: a progress line on stderr while NUTS runs.

    Returns:
        A `Posterior`. A diagnostic that fails (R-hat > 1.01, bulk ESS < 400, divergences,
        k̂ > 0.7, a fit that did not converge or ended near a bound) is a warning and a line of
        ``posterior.warnings``.

    Raises:
        ValueError / TypeError: as `homodyne.fit` for its inputs; for a bad method or count, an
            unknown prior entry, or a curvature that is not positive definite (a parameter the
            data do not determine).
        ImportError: for ``method="nuts"`` without blackjax (``pip install "homodyne[sample]"``).
    """
    _checked_sampling(method, num_chains, num_draws, num_warmup, seed)
    if method == "nuts":
        try:
            import blackjax  # noqa: F401  # pyright: ignore[reportMissingImports]
        except ImportError:
            raise ImportError(
                'method="nuts" needs blackjax: pip install "homodyne[sample]" (or use '
                'method="laplace").'
            ) from None
    runs, sigmas, masks, joint = _run_list(model, data, sigma, frame_mask)
    expected = JointFitResult if joint else FitResult
    if fit is not None and not isinstance(fit, expected):
        raise TypeError(
            f"fit must be the {expected.__name__} of these inputs; got {type(fit).__name__}."
        )
    if fit is not None and init is None:  # the fit says the mode
        init = (fit.runs[0] if isinstance(fit, JointFitResult) else fit).params
    # what is sampled, its bounds and priors: checked before any fit runs
    setups = []
    for r, ((m, d), s, mask) in enumerate(zip(runs, sigmas, masks, strict=True)):
        try:
            setups.append(_fit._checked_inputs(m, d, s, init, spec, options, mask)[2])
        except (TypeError, ValueError) as error:
            raise type(error)(f"run {r}: {error}" if joint else str(error)) from None
    laminar_names = LaminarFlowParams.names if setups[0].laminar else StaticParams.names
    free_names = [n for n, f in zip(laminar_names, setups[0].free, strict=True) if f]
    names, index = _fit._joint_layout(free_names, spec.per_run, len(runs))
    transform = _fit._joint_transform(setups, index, len(names))
    lower, upper = np.asarray(transform.lower), np.asarray(transform.upper)
    priors = resolve_priors(tuple(names), prior, lower, upper)

    result: FitResult | JointFitResult
    if fit is not None:
        result = fit
    elif joint:
        result = _fit.fit(runs, sigma=sigma, init=init, spec=spec, options=options,
                           frame_mask=frame_mask)  # fmt: skip
    else:
        result = _fit.fit(runs[0][0], runs[0][1], sigma=sigma, init=init, spec=spec,
                          options=options, frame_mask=frame_mask)  # fmt: skip
    fits = result.runs if isinstance(result, JointFitResult) else (result,)
    fitted = result.names[: len(result.names) - sum(2 * _n_groups(f) for f in fits)]
    if len(fits) != len(runs) or tuple(fitted) != tuple(names):
        raise ValueError(
            f"fit has {len(fits)} runs and parameters {list(fitted)}; these inputs sample "
            f"{list(names)} over {len(runs)} runs: pass the fit of these same inputs."
        )

    built = []
    theta_hat = np.zeros(len(names))
    for (m, d), setup, f, ix in zip(runs, setups, fits, index, strict=True):
        values = np.asarray(f.params.to_array())
        theta_hat[np.array(ix)] = values[np.flatnonzero(setup.free)]
        s = jnp.asarray(f.sigma, float)
        s = (
            jnp.reshape(s, (-1, 1, 1))
            if s.ndim <= 1
            else jnp.reshape(s, (1,) * (3 - s.ndim) + s.shape)
        )
        built.append(
            _Run(
                model=m, data=as_data(jnp.reshape(jnp.asarray(d), (m.n_phi, m.n_frames, m.n_frames))),
                sigma=s, frames_used=jnp.asarray(f.frame_mask), contrast=jnp.asarray(f.contrast),
                offset=jnp.asarray(f.offset), values=jnp.asarray(values), free=setup.free,
                laminar=setup.laminar, shared=setup.shared,
            )
        )  # fmt: skip
    g = len(names)
    density = LogPosterior(
        tuple(built), jnp.asarray(lower), jnp.asarray(upper), jnp.asarray(theta_hat), jnp.eye(g),
        priors, index,
    )  # fmt: skip
    started = time.perf_counter()

    cov_independent = np.asarray(result.covariance_independent)[:g, :g]
    basis = _covariance_factor(cov_independent, "the fit's covariance")
    h_independent = -_fd_hessian(
        lambda t: _likelihood_grad(density, jnp.asarray(t)), theta_hat, basis
    )
    if adjust:
        cov_adjusted = np.asarray(result.covariance)[:g, :g]
        basis = _covariance_factor(
            cov_adjusted, "the fit's covariance for correlated errors (adjust=False skips it)"
        )
        r_i = _upper_cholesky(h_independent, "the likelihood's curvature at the fit")
        r_a = _upper_cholesky(np.linalg.inv(cov_adjusted), "the fit's error covariance")
        adjustment = np.linalg.solve(r_i, r_a)  # C = R_I⁻¹R_A: CᵀH_I C = Σ_A⁻¹
        density = eqx.tree_at(lambda d: d.adjustment, density, jnp.asarray(adjustment))

    # Laplace: Newton from the fit to the mode of the log-posterior, its curvature there
    def gradient(t):
        return _value_and_grad(density, jnp.asarray(t))[1]

    u, covariance, laplace_note = _laplace(density, theta_hat, basis)
    chol = np.linalg.cholesky(covariance)
    rng = np.random.default_rng(seed)

    if method == "laplace":
        z = rng.standard_normal((num_chains * num_draws, g))
        us = u + z @ chol.T
        log_p = _density_values(density, us)
        log_q = -0.5 * np.sum(z * z, axis=1)
        weights, khat, ess_is = psis(np.where(np.isfinite(log_p), log_p - log_q, -np.inf))
        positions = us.reshape(num_chains, num_draws, g)
        weights = weights.reshape(num_chains, num_draws)
        divergences = np.zeros(num_chains, int)
        leapfrog, step_sizes, acceptance = (
            np.nan,
            np.full(num_chains, np.nan),
            np.full(num_chains, np.nan),
        )
    else:
        starts = u + rng.standard_normal((num_chains, g)) @ chol.T
        # a start beyond a bound would have posterior 0, from which NUTS never moves
        margin = 1e-6 * (upper - lower)
        starts = np.clip(starts, lower + margin, upper - margin)
        positions, steps, divergent, accept, step_sizes = _run_nuts(
            density, starts, covariance, num_warmup, num_draws, seed, progress
        )
        weights = np.full((num_chains, num_draws), 1.0 / (num_chains * num_draws))
        divergences = divergent.sum(axis=1)
        leapfrog = float(np.mean(steps))
        acceptance = accept.mean(axis=1)
        khat, ess_is = np.nan, np.nan
    values = np.asarray(positions).reshape(num_chains, num_draws, g)
    r_hat = np.array([rhat(values[..., i]) for i in range(g)])
    bulk = np.array([ess_bulk(values[..., i]) for i in range(g)])
    tail = np.array([ess_tail(values[..., i]) for i in range(g)])
    found = diagnostic_warnings(tuple(names), r_hat, bulk, divergences, khat, method, result)
    found = found + ((laplace_note,) if laplace_note else ())
    for w in found:
        warnings.warn(f"homodyne.sample: {w}", stacklevel=2)
    return Posterior(
        values=jnp.asarray(values),
        weights=jnp.asarray(weights),
        rhat=jnp.asarray(r_hat),
        ess_bulk=jnp.asarray(bulk),
        ess_tail=jnp.asarray(tail),
        divergences=jnp.asarray(divergences),
        leapfrog_steps=jnp.asarray(leapfrog),
        step_size=jnp.asarray(step_sizes),
        acceptance=jnp.asarray(acceptance),
        khat=jnp.asarray(khat),
        ess_importance=jnp.asarray(ess_is),
        mode=jnp.asarray(u),
        adjustment=density.adjustment,
        fit=result,
        seconds=time.perf_counter() - started,
        names=tuple(names),
        method=method,
        prior=tuple(
            f"{n}: {p.describe(lo, hi)}"
            for n, p, lo, hi in zip(names, priors, lower, upper, strict=True)
        ),
        adjusted=adjust,
        warnings=found,
    )


def _n_groups(f: FitResult) -> int:
    """Contrast/offset groups of a run's fit: how many contrast entries its ``names`` hold."""
    return sum(1 for n in f.names if n.startswith("contrast"))


def _density_values(density: LogPosterior, us: np.ndarray) -> np.ndarray:
    """log p at many points, in equal chunks (one compiled map) spread over the CPU cores."""
    n, g = us.shape
    size = 64
    padded = np.concatenate([us, np.repeat(us[-1:], -n % size, axis=0)])
    chunks = padded.reshape(-1, size, g)
    with concurrent.futures.ThreadPoolExecutor(_workers(len(chunks))) as pool:
        out = list(pool.map(lambda c: np.asarray(_values(density, jnp.asarray(c))), chunks))
    return np.concatenate(out)[:n]
