"""The documented functional API of homodyne (SPEC §3.2).

Thin wrappers over the same kernels as `homodyne.HomodyneModel`. Each function checks its arguments
(raising ``ValueError`` with what to fix), converts them to float64 arrays and calls one jitted
function, so new values of q, L, dt, the prefactors, contrast, offset or the angles never recompile.

Common arguments:
    params: (P,) with P = 3 (static: D0 [Å²/s^(1+α)], alpha, D_offset [Å²/s]) or 7 (laminar flow:
        + gamma_dot_t0 [s^-(1+β)], beta, gamma_dot_t_offset [1/s], phi0 [deg]).
    t1, t2: frame times [s]: the same 1-D vector twice, or its ``indexing="ij"`` meshgrid. The result
        is always the full (N, N) matrix. An "xy" meshgrid or a t2 on another time axis is a
        ``ValueError``. The time values set where the rates are evaluated; dt sets the step.
    phi: detector angle(s) [degrees], scalar or any shape (flattened to n_phi).
    q: wavevector [1/Å]. L: stator–rotor gap [Å].
    contrast, offset: scalars or one per angle.
    dt: frame step [s], required: from configuration, never estimated from the data.
    data, sigma (χ² functions): (n_phi, N, N) or anything that broadcasts to it; σ must be > 0
        everywhere. σ given as a Python number or a NumPy array is checked before the call
        (``ValueError``). σ given as a JAX array is checked inside the compiled function instead
        (checking it here would cost a pass over it on the device and a wait for the result on
        every call): where any entry is ≤ 0 or NaN, every entry of the result (χ², its gradient
        or Hessian, each χ² of a batch) is NaN.

Everything works with NumPy or JAX inputs and under jax.jit, jax.vmap and jax.grad.
"""

import math
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .. import _model as m
from .._chi2 import chi2_in_tiles
from .._params import params_from_array
from .._precision import as_float64, float64_enabled
from .._sharding import spread
from .._validate import angles, frame_step, per_angle, positive_scalar, time_axis
from ._meshgrid_cache import CACHE

__all__ = [
    "batch_chi_squared",
    "clear_meshgrid_cache",
    "compute_chi_squared",
    "compute_g1_diffusion",
    "compute_g1_shear",
    "compute_g1_total",
    "compute_g2_scaled",
    "compute_g2_scaled_with_factors",
    "get_cache_stats",
    "get_cached_meshgrid",
    "get_device_info",
    "get_performance_summary",
    "gradient_chi2",
    "gradient_g2",
    "hessian_chi2",
    "hessian_g2",
    "jax_available",
    "numpy_gradients_available",
    "reset_cache_stats",
    "validate_backend",
    "vectorized_g2_computation",
]

jax_available: bool = True
"""JAX is a hard dependency of homodyne, so this is always True."""

numpy_gradients_available: bool = False
"""homodyne has no NumPy finite-difference fallback: all derivatives are exact, by JAX."""

# --- argument handling --------------------------------------------------------------------------


def _params(params: ArrayLike, batched: bool = False) -> Float[Array, "*B P"]:
    p = as_float64(params)
    want = 2 if batched else 1
    if p.ndim != want or p.shape[-1] not in (3, 7):
        shape = "(B, 3) or (B, 7)" if batched else "(3,) or (7,)"
        raise ValueError(
            f"params must have shape {shape}: 3 values for static (D0, alpha, D_offset) or 7 for "
            "laminar flow (D0, alpha, D_offset, gamma_dot_t0, beta, gamma_dot_t_offset, phi0); "
            f"got shape {p.shape}."
        )
    return p


def _factors(q, L, dt) -> tuple[Float[Array, ""], Float[Array, ""]]:
    q = positive_scalar(q, "q", "Give the scattering wavevector in 1/Å.")
    L = positive_scalar(L, "L", "Give the stator-rotor gap in Å.")
    dt = frame_step(dt)
    return 0.5 * q**2 * dt, q * L * dt / (2 * math.pi)


class Problem(eqx.Module):
    """Everything but the parameters, as arrays (so new values reuse compiled code)."""

    t: Float[Array, " n_t"]
    phi: Float[Array, " n_phi"]
    a: Float[Array, ""]  # ½q²Δ
    s: Float[Array, ""]  # qLΔ/2π
    contrast: Float[Array, " n_phi"]
    offset: Float[Array, " n_phi"]


def _problem(t1, t2, phi, a, s, contrast: ArrayLike = 1.0, offset: ArrayLike = 1.0) -> Problem:
    t = time_axis(t1, t2)
    phi = angles(phi)
    n_phi = phi.shape[0]
    return Problem(
        t, phi, a, s, per_angle(contrast, n_phi, "contrast"), per_angle(offset, n_phi, "offset")
    )


def _data_and_sigma(data, sigma, shape) -> tuple[Float[Array, "..."], Float[Array, "..."], bool]:
    """Data and σ as float64 (float64 JAX arrays as they are: no copy), their shapes checked
    against the model's, and whether σ > 0 is left to the compiled function (JAX arrays, whose
    values would cost a pass on the device and a wait for it here; see the module docstring)."""
    d, s = as_float64(data), as_float64(sigma)
    for name, x in (("data", d), ("sigma", s)):
        try:
            if jnp.broadcast_shapes(x.shape, shape) != shape:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{name} of shape {x.shape} does not match the model's (n_phi, N, N) = {shape}."
            ) from None
    if isinstance(sigma, jax.Array):
        return d, s, True
    if not np.min(np.asarray(sigma, dtype=np.float64)) > 0:  # NaN fails too
        raise ValueError("sigma must be > 0 everywhere (it divides the residuals).")
    return d, s, False


def _chi2_inputs(data, sigma, t1, t2, phi, q, L, contrast, offset, dt):
    """Checked data, σ and problem for the χ² functions, and whether σ is checked when they run."""
    a, s = _factors(q, L, dt)
    pb = _problem(t1, t2, phi, a, s, contrast, offset)
    n_t = pb.t.shape[0]
    d, sg, check = _data_and_sigma(data, sigma, (pb.phi.shape[0], n_t, n_t))
    return d, sg, pb, check


# --- jitted cores: pure functions of arrays ----------------------------------------------------


def _g2(params, pb: Problem):
    p = params_from_array(params)
    return spread(m.g2_scaled(pb.a, pb.s, pb.t, pb.phi, p, pb.contrast, pb.offset))


def _chi2(params, data, sigma, pb: Problem):
    # in blocks of rows: never forms g2, and runs faster than a fused reduction (see _chi2.py)
    p = params_from_array(params)
    return chi2_in_tiles(pb.a, pb.s, pb.t, pb.phi, p, pb.contrast, pb.offset, data, sigma)


def _g2_sum(params, pb: Problem):
    return jnp.sum(_g2(params, pb))


_g2_jit = eqx.filter_jit(_g2)
_g2_batch_jit = eqx.filter_jit(jax.vmap(_g2, in_axes=(0, None)))


def _chi2_batch(params_batch, data, sigma, pb: Problem):
    # one χ² after another: under vmap each tile's choice of method (a switch) would become a
    # select that runs all of them (1.7–3.2× slower, measured)
    return jax.lax.map(lambda params: _chi2(params, data, sigma, pb), params_batch)


def _sigma_checked(fn):
    """``fn(params, data, sigma, pb)`` compiled, with a static last argument ``check``: when True,
    every entry of the result is NaN unless σ > 0 everywhere (σ given as a JAX array)."""

    def checked(params, data, sigma, pb: Problem, check: bool):
        out = fn(params, data, sigma, pb)
        # min(σ) > 0 is false for NaN too; a min reduction runs about twice as fast as all(σ > 0)
        return jnp.where(jnp.min(sigma) > 0, out, jnp.nan) if check else out

    checked.__name__ = checked.__qualname__ = getattr(fn, "__name__", "checked")  # in JAX's logs
    return eqx.filter_jit(checked)


_chi2_jit = _sigma_checked(_chi2)
_chi2_batch_jit = _sigma_checked(_chi2_batch)
_g2_sum_grad_jit = eqx.filter_jit(jax.grad(_g2_sum))
_g2_hessian_jit = eqx.filter_jit(jax.hessian(_g2))
_chi2_grad_jit = _sigma_checked(jax.grad(_chi2))
_chi2_hessian_jit = _sigma_checked(jax.hessian(_chi2))


@eqx.filter_jit
def _g1_diffusion_jit(params, t, a):
    return spread(m.g1_diffusion(a, t, params_from_array(params)))


@eqx.filter_jit
def _g1_shear_jit(params, t, phi, s):
    return spread(m.g1_shear(s, t, phi, params_from_array(params)))


@eqx.filter_jit
def _g1_total_jit(params, t, phi, a, s):
    return spread(m.g1_total(a, s, t, phi, params_from_array(params)))


# --- the documented API ------------------------------------------------------------------------


def compute_g1_diffusion(
    params: ArrayLike, t1: ArrayLike, t2: ArrayLike, q: ArrayLike, dt: ArrayLike | None = None
) -> Float[Array, "N N"]:
    """Diffusion factor exp(clip(−½q²Δ·M^D, −700, 0)), shape (N, N).

    Uses the first three parameters of either mode. ``dt`` [s] is required (ValueError if missing).
    """
    p = _params(params)
    dt = frame_step(dt)
    q = positive_scalar(q, "q", "Give the scattering wavevector in 1/Å.")
    return _g1_diffusion_jit(p, time_axis(t1, t2), 0.5 * q**2 * dt)


def compute_g1_shear(
    params: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    dt: ArrayLike,
) -> Float[Array, "n_phi N N"]:
    """Shear factor sinc²(qLΔ/2π · cos(φ0 − φ) · M^γ), shape (n_phi, N, N); ones for 3 params."""
    p = _params(params)
    _, s = _factors(q, L, dt)
    return _g1_shear_jit(p, time_axis(t1, t2), angles(phi), s)


def compute_g1_total(
    params: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    dt: ArrayLike,
) -> Float[Array, "n_phi N N"]:
    """g1 = g1_diffusion · g1_shear, floored at 1e-10, shape (n_phi, N, N)."""
    p = _params(params)
    a, s = _factors(q, L, dt)
    return _g1_total_jit(p, time_axis(t1, t2), angles(phi), a, s)


def compute_g2_scaled(
    params: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: ArrayLike,
) -> Float[Array, "n_phi N N"]:
    """g2 = offset + contrast · g1², shape (n_phi, N, N)."""
    a, s = _factors(q, L, dt)
    return _g2_jit(_params(params), _problem(t1, t2, phi, a, s, contrast, offset))


def compute_g2_scaled_with_factors(
    params: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    wavevector_q_squared_half_dt: ArrayLike,
    sinc_prefactor: ArrayLike,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: ArrayLike,
) -> Float[Array, "n_phi N N"]:
    """g2 from precomputed prefactors ½q²Δ [s/Å²] and qLΔ/2π [s], shape (n_phi, N, N).

    ``dt`` is checked (it must come from configuration) but does not enter again: the prefactors
    already carry it.
    """
    frame_step(dt)
    a = positive_scalar(
        wavevector_q_squared_half_dt, "wavevector_q_squared_half_dt", "It is ½q²dt."
    )
    s = positive_scalar(sinc_prefactor, "sinc_prefactor", "It is q·L·dt/(2π).")
    return _g2_jit(_params(params), _problem(t1, t2, phi, a, s, contrast, offset))


def compute_chi_squared(
    params: ArrayLike,
    data: ArrayLike,
    sigma: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: ArrayLike,
) -> Float[Array, ""]:
    """χ² = Σ((data − g2)/σ)² over every angle and (t1, t2) pair (diagonal included).

    ``data`` is (n_phi, N, N) (or broadcastable to it); ``sigma`` a scalar or broadcastable, > 0
    (a JAX-array σ with an entry ≤ 0 gives NaN: see the module docstring).
    """
    d, sg, pb, check = _chi2_inputs(data, sigma, t1, t2, phi, q, L, contrast, offset, dt)
    return _chi2_jit(_params(params), d, sg, pb, check)


def vectorized_g2_computation(
    params_batch: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: ArrayLike | None = None,
) -> Float[Array, "B n_phi N N"]:
    """g2 for each row of ``params_batch`` (B, P), shape (B, n_phi, N, N). ``dt`` is required."""
    a, s = _factors(q, L, dt)
    return _g2_batch_jit(_params(params_batch, True), _problem(t1, t2, phi, a, s, contrast, offset))


def batch_chi_squared(
    params_batch: ArrayLike,
    data: ArrayLike,
    sigma: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: ArrayLike | None = None,
) -> Float[Array, " B"]:
    """χ² for each row of ``params_batch`` (B, P), shape (B,). ``dt`` is required."""
    d, sg, pb, check = _chi2_inputs(data, sigma, t1, t2, phi, q, L, contrast, offset, dt)
    return _chi2_batch_jit(_params(params_batch, True), d, sg, pb, check)


def gradient_g2(
    params: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: ArrayLike,
) -> Float[Array, " P"]:
    """Gradient of Σ g2 (over all angles and pairs) with respect to params, shape (P,)."""
    a, s = _factors(q, L, dt)
    return _g2_sum_grad_jit(_params(params), _problem(t1, t2, phi, a, s, contrast, offset))


def hessian_g2(
    params: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: ArrayLike,
) -> Float[Array, "n_phi N N P P"]:
    """Hessian of every g2 element with respect to params, shape (n_phi, N, N, P, P).

    Its size grows as n_phi·N²·P²: meant for small grids (use `hessian_chi2` for fits).
    """
    a, s = _factors(q, L, dt)
    return _g2_hessian_jit(_params(params), _problem(t1, t2, phi, a, s, contrast, offset))


def gradient_chi2(
    params: ArrayLike,
    data: ArrayLike,
    sigma: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: ArrayLike,
) -> Float[Array, " P"]:
    """Gradient of `compute_chi_squared` with respect to params, shape (P,)."""
    d, sg, pb, check = _chi2_inputs(data, sigma, t1, t2, phi, q, L, contrast, offset, dt)
    return _chi2_grad_jit(_params(params), d, sg, pb, check)


def hessian_chi2(
    params: ArrayLike,
    data: ArrayLike,
    sigma: ArrayLike,
    t1: ArrayLike,
    t2: ArrayLike,
    phi: ArrayLike,
    q: ArrayLike,
    L: ArrayLike,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: ArrayLike,
) -> Float[Array, "P P"]:
    """Hessian of `compute_chi_squared` with respect to params, shape (P, P)."""
    d, sg, pb, check = _chi2_inputs(data, sigma, t1, t2, phi, q, L, contrast, offset, dt)
    return _chi2_hessian_jit(_params(params), d, sg, pb, check)


# --- meshgrid cache ----------------------------------------------------------------------------


def get_cached_meshgrid(t1: ArrayLike, t2: ArrayLike) -> tuple[Array, Array]:
    """``jnp.meshgrid(t1, t2, indexing="ij")`` of two 1-D vectors, from an LRU cache.

    The cache holds at most 64 entries keyed by the vectors' contents (different grids never share an
    entry). Grids of more than 2**20 elements, and traced values inside jit, are built but not kept
    (counted in ``skipped_large`` / ``skipped_traced``).
    """
    return CACHE.get(t1, t2)


def clear_meshgrid_cache() -> None:
    """Empty the meshgrid cache (the statistics are kept; see `reset_cache_stats`)."""
    CACHE.clear()


def get_cache_stats() -> dict:
    """hits, misses, evictions, skipped_large, skipped_traced, hit_rate = hits/(hits+misses)
    (0.0 before any lookup) and cache_size (entries held)."""
    return CACHE.stats()


def reset_cache_stats() -> None:
    """Zero the cache counters (the entries are kept; see `clear_meshgrid_cache`)."""
    CACHE.reset_stats()


# --- diagnostics -------------------------------------------------------------------------------


def get_device_info() -> dict:
    """Facts about the JAX installation: backend, devices, float64 state and versions."""
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "devices": [str(d) for d in devices],
        "device_kinds": sorted({d.device_kind for d in devices}),
        "platforms": sorted({d.platform for d in devices}),
        "float64_enabled": float64_enabled(),
        "jax_version": jax.__version__,
        "jaxlib_version": _version("jaxlib"),
        "equinox_version": _version("equinox"),
        "optimistix_version": _version("optimistix"),
        "homodyne_version": _version("homodyne"),
        "cpu_count": os.cpu_count(),
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def validate_backend() -> dict:
    """Run a small laminar-flow problem through the forward model, its gradient and its Hessian.

    Returns a dict with ``ok`` (all checks passed), the backend and float64 state, and for each of
    ``forward``, ``gradient`` and ``hessian``: ``ok``, ``seconds`` (including compilation) and what
    was checked. The gradient is compared with central finite differences; the Hessian must be finite
    and symmetric. Nothing raises: failures are reported with their error message.
    """
    t = np.linspace(0.0, 1.0, 16)
    params = np.array([1.0e4, -0.3, 10.0, 2.0e-3, 0.2, 1.0e-4, 5.0])
    phi = np.array([0.0, 60.0])
    args = (t, t, phi, 0.0054, 2e6, 0.4, 1.0, 0.1)
    report: dict = {"backend": jax.default_backend(), "float64_enabled": float64_enabled()}

    def check(name, run):
        try:
            ok, seconds, detail = run()
            report[name] = {"ok": bool(ok), "seconds": seconds, **detail}
        except Exception as error:  # a diagnostic reports failures instead of raising them
            report[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}

    def forward():
        g2, seconds = _timed(lambda: compute_g2_scaled(params, *args))
        diag_expected = 1.0 + 0.4 * math.exp(-1e-6 * 0.5 * 0.0054**2 * 0.1 * 2)
        ok = (
            g2.shape == (2, 16, 16)
            and g2.dtype == jnp.float64
            and bool(jnp.all(jnp.isfinite(g2)))
            and bool(jnp.all(g2 == jnp.swapaxes(g2, 1, 2)))
            and bool(jnp.all(g2 <= diag_expected + 1e-12))
        )
        return ok, seconds, {"shape": list(g2.shape), "dtype": str(g2.dtype)}

    def gradient():
        grad, seconds = _timed(lambda: gradient_g2(params, *args))
        i, h = 1, 1e-5  # alpha: central finite difference of Σ g2
        step = np.zeros(7)
        step[i] = h
        up = float(jnp.sum(compute_g2_scaled(params + step, *args)))
        down = float(jnp.sum(compute_g2_scaled(params - step, *args)))
        fd = (up - down) / (2 * h)
        error = abs(float(grad[i]) - fd) / max(abs(fd), 1e-300)
        ok = bool(jnp.all(jnp.isfinite(grad))) and error < 1e-5
        return ok, seconds, {"finite_difference_relative_error": error}

    def hessian():
        data = np.ones((2, 16, 16))
        hess, seconds = _timed(lambda: hessian_chi2(params, data, 0.1, *args))
        asym = float(jnp.max(jnp.abs(hess - hess.T)) / jnp.max(jnp.abs(hess)))
        ok = hess.shape == (7, 7) and bool(jnp.all(jnp.isfinite(hess))) and asym < 1e-8
        return ok, seconds, {"relative_asymmetry": asym}

    check("forward", forward)
    check("gradient", gradient)
    check("hessian", hessian)
    report["ok"] = report["float64_enabled"] and all(
        report[name]["ok"] for name in ("forward", "gradient", "hessian")
    )
    return report


def get_performance_summary() -> dict:
    """A measured summary: device facts, cache statistics, the time of one g2 evaluation on a
    3 × 256 × 256 grid (after compilation) and recommendations that follow from these facts."""
    info = get_device_info()
    t = np.linspace(0.0, 25.5, 256)
    params = np.array([1.0e4, -0.3, 10.0, 2.0e-3, 0.2, 1.0e-4, 5.0])
    args = (params, t, t, np.array([0.0, 45.0, 90.0]), 0.0054, 2e6, 0.4, 1.0, 0.1)
    _, compile_and_run = _timed(lambda: compute_g2_scaled(*args))
    _, run = _timed(lambda: compute_g2_scaled(*args))
    rate = 3 * 256 * 256 / run
    cache = get_cache_stats()
    recommendations = []
    if info["backend"] == "cpu":
        recommendations.append(
            f"Running on CPU with {info['cpu_count']} cores; a GPU runs the same code unchanged."
        )
    if not info["float64_enabled"]:
        recommendations.append("Enable jax_enable_x64: homodyne refuses to compute in float32.")
    if cache["hits"] + cache["misses"] and cache["hit_rate"] < 0.5:
        recommendations.append(
            "Meshgrid cache hit rate below 50 %: pass 1-D time vectors instead of meshgrids."
        )
    recommendations.append(
        "Build a HomodyneModel once and reuse it (and jitted functions of it): new parameter, q, dt "
        "or angle values reuse the compiled code; only new shapes compile."
    )
    return {
        "summary": (
            f"{info['backend']} backend, {info['device_count']} device(s), float64 "
            f"{'on' if info['float64_enabled'] else 'off'}; g2 at {rate / 1e6:.1f} M elements/s "
            f"on 3×256×256."
        ),
        "device": info,
        "g2_3x256x256_seconds": {"first_call": compile_and_run, "compiled": run},
        "g2_elements_per_second": rate,
        "cache": cache,
        "recommendations": recommendations,
    }
