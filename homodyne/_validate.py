"""Argument checks shared by `HomodyneModel` and `homodyne.core.jax_backend`.

Concrete values are checked in Python and raise ``ValueError`` with a message that says what to do.
Values traced by a surrounding ``jax.jit`` cannot be inspected at trace time; where a wrong value would
give a silently wrong answer they are checked at run time with ``eqx.error_if`` instead.
"""

import math
import warnings
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, ArrayLike, Float

from ._precision import as_float64


def is_traced(*values) -> bool:
    """Whether any value is traced by a surrounding jit/vmap/grad (so not inspectable now)."""
    return any(isinstance(x, Tracer) for x in values)


def _all_finite(x) -> bool:
    """Whether a concrete vector is finite, checked in NumPy (a host read of a few numbers): an eager
    jnp check would dispatch device work, and compile it for every new shape."""
    return bool(np.isfinite(np.asarray(x)).all())


def warn_if_low_precision(value, name: str) -> None:
    """Warn when a concrete input carries less than float64 precision: homodyne computes in
    float64, but a float32 value is already rounded (dt = float32(0.1) is 0.10000000149)."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not is_traced(value) and jnp.issubdtype(dtype, jnp.floating):
        if jnp.finfo(dtype).bits < 64:
            warnings.warn(
                f"{name} is {dtype}: it is computed in float64, but its value already carries "
                f"{dtype} rounding. Pass float64 values for full precision.",
                stacklevel=3,
            )


def positive_scalar(value, name: str, hint: str = "") -> Float[Array, ""]:
    """``value`` as a float64 scalar; ``ValueError`` if it is None, not scalar, ≤ 0 or not finite."""
    if value is None:
        raise ValueError(f"{name} is required and was None. {hint}".strip())
    warn_if_low_precision(value, name)
    x = as_float64(value)
    if x.ndim != 0:
        raise ValueError(
            f"{name} must be a scalar; got an array of shape {x.shape}. {hint}".strip()
        )
    if is_traced(x):
        return eqx.error_if(x, ~(jnp.isfinite(x) & (x > 0)), f"{name} must be finite and > 0.")
    v = float(x)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0; got {v}. {hint}".strip())
    return x


def wavevectors(value, n_phi: int) -> Float[Array, "*bins"]:
    """q [1/Å]: a scalar (one ring: every bin at the same q), or one value per bin, (n_phi,) (a
    scalar is kept a scalar, so one-ring models keep their shapes); ``ValueError`` for anything
    else or for values that are not finite and > 0."""
    hint = "Give the scattering wavevector in 1/Å: a scalar, or one per bin (angle)."
    if value is None or np.ndim(value) == 0:
        return positive_scalar(value, "q", hint)
    warn_if_low_precision(value, "q")
    x = as_float64(value)
    if x.ndim != 1 or x.shape[0] != n_phi:
        raise ValueError(
            f"q must be a scalar or hold one value per bin ({n_phi} angles given); got shape "
            f"{x.shape}. {hint}"
        )
    if is_traced(x):
        return eqx.error_if(x, ~jnp.all(jnp.isfinite(x) & (x > 0)), "q must be finite and > 0.")
    if not np.all(np.isfinite(np.asarray(x)) & (np.asarray(x) > 0)):
        raise ValueError(f"q must be finite and > 0 in every bin; got {np.asarray(x)}.")
    return x


DT_HINT = (
    "dt is the frame time (detector frame time × stride × averaging) and must come from the "
    "experiment's configuration; it is never estimated from the time grid."
)


def frame_step(dt) -> Float[Array, ""]:
    """The configured frame step dt [s]: a finite scalar > 0, else ``ValueError``."""
    return positive_scalar(dt, "dt", DT_HINT)


def time_vector(t: ArrayLike | Sequence[float], name: str = "t") -> Float[Array, " n_t"]:
    """A 1-D, non-empty, finite time vector [s] as float64."""
    warn_if_low_precision(t, name)
    x = as_float64(t)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D vector of frame times; got shape {x.shape}."
        )
    if not is_traced(x) and not _all_finite(x):
        raise ValueError(f"{name} contains NaN or infinite times.")
    return x


def angles(phi: ArrayLike | Sequence[float]) -> Float[Array, " n_phi"]:
    """Detector angles [degrees], any shape, flattened to 1-D; must be finite and non-empty."""
    if is_traced(*jax.tree.leaves(phi)):
        x = jnp.ravel(as_float64(phi))
    else:  # in NumPy: an eager reshape would compile for every new number of angles
        x = as_float64(np.ravel(np.asarray(phi, dtype=np.float64)))
    if x.shape[0] == 0:
        raise ValueError("phi is empty: give at least one angle (degrees).")
    if not is_traced(x) and not _all_finite(x):
        raise ValueError("phi contains NaN or infinite angles.")
    return x


def per_angle(value: ArrayLike, n_phi: int, name: str) -> Float[Array, " n_phi"]:
    """A scalar or a length-n_phi vector (contrast, offset) as a float64 vector of length n_phi."""
    x = as_float64(value)
    if x.ndim == 0 or x.size == 1:
        return jnp.broadcast_to(jnp.reshape(x, ()), (n_phi,))
    if x.size != n_phi:
        raise ValueError(
            f"{name} must be a scalar or hold one value per angle ({n_phi}); got shape {x.shape}."
        )
    return jnp.reshape(x, (n_phi,))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    return bool(np.all(np.abs(a - b) <= 1e-12 * scale))


def time_axis(t1: ArrayLike, t2: ArrayLike) -> Float[Array, " n_t"]:
    """The shared time vector of (t1, t2): both 1-D and equal, or both the ij meshgrid of one vector.

    Raises ``ValueError`` for an "xy" meshgrid, for t2 on another time axis than t1, and for any
    other shape. Under a surrounding jit the value checks run with ``eqx.error_if``.
    """
    a, b = as_float64(t1), as_float64(t2)
    if a.ndim == 1 and b.ndim == 1:
        if a.shape != b.shape:
            raise ValueError(
                f"t1 and t2 must be the same time vector; got lengths {a.shape[0]} and {b.shape[0]}."
            )
        t = time_vector(a, "t1")
        if is_traced(a, b):
            return eqx.error_if(t, jnp.any(a != b), "t2 is not the same time axis as t1.")
        if not _same(np.asarray(a), np.asarray(b)):
            raise ValueError(
                "t2 is not the same time axis as t1: two-time correlations are defined on one frame "
                "grid, t1 = t2 = τ. Pass the same vector (or its ij meshgrid) twice."
            )
        return t
    if a.ndim == 2 and b.ndim == 2:
        n = a.shape[0]
        if a.shape != (n, n) or b.shape != (n, n):
            raise ValueError(
                f"2-D t1, t2 must be square ij meshgrids of one time vector; got {a.shape}, {b.shape}."
            )
        t = time_vector(a[:, 0], "t1")
        if is_traced(a, b):
            bad = jnp.any(a != t[:, None]) | jnp.any(b != t[None, :])
            return eqx.error_if(
                t, bad, "t1, t2 are not the ij meshgrid of one time vector (is it 'xy'-indexed?)."
            )
        an, bn, tn = np.asarray(a), np.asarray(b), np.asarray(t)
        if not (
            _same(an, np.broadcast_to(tn[:, None], an.shape))
            and _same(bn, np.broadcast_to(tn[None, :], bn.shape))
        ):
            if n > 1 and _same(an, np.broadcast_to(an[0][None, :], an.shape)):
                raise ValueError(
                    "t1, t2 look like an 'xy'-indexed meshgrid (t1 varies along the second axis). "
                    "Build them with jnp.meshgrid(t, t, indexing='ij'), or pass the 1-D vector t."
                )
            raise ValueError(
                "t1, t2 are not the ij meshgrid of one time vector (t1[i, j] = t2[j, i] = t[i]). "
                "Build them with jnp.meshgrid(t, t, indexing='ij'), or pass the 1-D vector t."
            )
        return t
    raise ValueError(
        "t1 and t2 must both be 1-D time vectors or both 2-D ij meshgrids; got shapes "
        f"{a.shape} and {b.shape}."
    )
