"""Parameter bounds that fit the experiment, and the smooth map between bounded physical values and
free solver coordinates.

What the data constrain is the decay rate q²·D and the shear phase rate q·L·γ̇ (SPEC §4), so the
default limits of D0, D_offset scale as 1/q² and those of γ̇0, γ̇_offset as 1/(q·L), and they widen
to every rate the frames resolve (`default_bounds`).

optimistix has no bounds, and Levenberg–Marquardt damps every direction alike, so the solver works in
coordinates u ∈ ℝ that are O(1) for every parameter: p = lo + (hi − lo)·sigmoid(u), or, for a
positive range spanning more than two decades (D0, gamma_dot_t0), log p = log lo + (log hi −
log lo)·sigmoid(u). D0 ~ 1e4 and γ̇0 ~ 1e-3 are then equally easy, and no value leaves its bounds.
"""

import math
import types
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._validate import is_traced

#: SPEC §4 bounds (lower, upper) in physical units at the reference experiment
#: (q = `REFERENCE_Q`, L = `REFERENCE_L`); a fit's defaults are these scaled to its experiment
#: (`default_bounds`). Read-only: override bounds per fit (``FitSpec(bounds={"D0": (1e3, 1e5)})``),
#: never here for everyone.
DEFAULT_BOUNDS: Mapping[str, tuple[float, float]] = types.MappingProxyType(
    {
        "D0": (1e2, 1e5),
        "alpha": (-2.0, 2.0),
        "D_offset": (-1e5, 1e5),
        "gamma_dot_t0": (1e-6, 0.5),
        "beta": (-2.0, 2.0),
        "gamma_dot_t_offset": (-0.1, 0.1),
        "phi0": (-10.0, 10.0),
        "contrast": (0.0, 1.0),
        "offset": (0.5, 1.5),
    }
)


REFERENCE_Q = 0.0054  # [1/Å] where `DEFAULT_BOUNDS` holds as written (SPEC §4)
REFERENCE_L = 2e6  # [Å] the default stator–rotor gap
FASTEST_DECAY_PER_FRAME = 3.0  # q²·D·Δ: g1² falls to e⁻³ within one frame step
SLOWEST_DECAY_PER_WINDOW = 1e-3  # q²·D·T: g1² falls by 0.1 % over the window
FASTEST_PHASE_PER_FRAME = math.pi  # the shear phase Φ reaches sinc's first zero in one frame
SLOWEST_PHASE_PER_WINDOW = 0.01  # Φ over the window: sinc² falls by 3e-5


def default_bounds(model) -> dict[str, tuple]:
    """The default bounds of a fit of ``model`` (SPEC §4): `DEFAULT_BOUNDS` scaled to its experiment.

    The data constrain the decay rate Γ = q²·D [1/s] and the shear phase rate q·L·γ̇/2π [1/s],
    not D or γ̇ alone. So the limits of D0 and D_offset are those of the table times
    (`REFERENCE_Q`/q)², those of gamma_dot_t0 and gamma_dot_t_offset times
    `REFERENCE_Q`·`REFERENCE_L`/(q·L), and each range is widened, never narrowed, to every rate
    the frames resolve: from a decay of 0.1 % over the window T (first to last frame time) to one
    of e⁻³ within one frame step Δ (|D| up to 3/(q²Δ)); from a shear phase of 0.01 rad over the
    window to π within one frame (|γ̇| up to 2π²/(q·L·Δ)). D0 and gamma_dot_t0 are the rates at
    t = 1 s (D(t) = D0·t^α): for a sample much older or younger than 1 s with a large |α|, give
    bounds (``FitSpec(bounds=...)``). alpha, beta, phi0, contrast and offset keep the table's.

    With q per bin (several rings), each range is the union of the bins' ranges.

    Args:
        model: a `HomodyneModel` (its q, L, dt and frame times).

    Returns:
        ``{name: (lower, upper)}`` for every name of `DEFAULT_BOUNDS`: Python floats, or JAX
        scalars where the model's values are traced (inside ``jax.jit`` or ``jax.grad``).
    """
    q, length, dt, t = model.q, model.L, model.dt, model.t
    xp = jnp if is_traced(q, length, dt, t) else np
    q, length, dt = (xp.asarray(v, dtype=np.float64) for v in (q, length, dt))
    span = xp.maximum(xp.asarray(t)[-1] - xp.asarray(t)[0], dt)  # one frame: the step
    s_diffusion = (REFERENCE_Q / q) ** 2
    s_shear = REFERENCE_Q * REFERENCE_L / (q * length)
    d_fast = FASTEST_DECAY_PER_FRAME / (q**2 * dt)
    d_slow = SLOWEST_DECAY_PER_WINDOW / (q**2 * span)
    # Φ = q·L/(2π)·∫γ̇ dt, so a phase φ over a time τ takes |γ̇| = 2π·φ/(q·L·τ)
    g_fast = 2 * math.pi * FASTEST_PHASE_PER_FRAME / (q * length * dt)
    g_slow = 2 * math.pi * SLOWEST_PHASE_PER_WINDOW / (q * length * span)
    table = dict(DEFAULT_BOUNDS)

    def widened(name, scale, slow, fast):
        # with q per bin, the union of the bins' ranges: every ring's rates are resolved
        lo, hi = table[name]
        if lo > 0:  # a positive rate: down to the slowest resolved
            lo = xp.min(xp.minimum(lo * scale, slow))
        else:
            lo = -xp.max(xp.maximum(-lo * scale, fast))
        return lo, xp.max(xp.maximum(hi * scale, fast))

    out: dict[str, tuple] = dict(table)
    out["D0"] = widened("D0", s_diffusion, d_slow, d_fast)
    out["D_offset"] = widened("D_offset", s_diffusion, d_slow, d_fast)
    out["gamma_dot_t0"] = widened("gamma_dot_t0", s_shear, g_slow, g_fast)
    out["gamma_dot_t_offset"] = widened("gamma_dot_t_offset", s_shear, g_slow, g_fast)
    if xp is np:
        out = {name: (float(lo), float(hi)) for name, (lo, hi) in out.items()}
    return out


def resolve_bounds(
    names: tuple[str, ...],
    overrides: Mapping[str, tuple[float, float]] | None,
    table: Mapping[str, tuple] = DEFAULT_BOUNDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds for ``names`` and then contrast and offset: ``table`` (default: the
    reference `DEFAULT_BOUNDS`; a fit passes `default_bounds` of its model) updated by ``overrides``.
    NumPy arrays, or JAX arrays when ``table`` holds traced values.

    Raises:
        ValueError: for an unknown name, or bounds that are not finite with lower < upper.
    """
    table = dict(table)
    for name, pair in (overrides or {}).items():
        if name not in table:
            raise ValueError(f"bounds for unknown parameter {name!r}; known: {sorted(table)}.")
        table[name] = tuple(float(v) for v in pair)
    lower, upper = [], []
    for name in (*names, "contrast", "offset"):
        lo, hi = table[name]
        if not is_traced(lo, hi) and not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(
                f"bounds of {name} must be finite with lower < upper; got ({lo}, {hi})."
            )
        lower.append(lo)
        upper.append(hi)
    if is_traced(*lower, *upper):
        return jnp.stack([jnp.asarray(v, float) for v in lower]), jnp.stack(  # type: ignore[return-value]
            [jnp.asarray(v, float) for v in upper]
        )
    return np.array(lower, float), np.array(upper, float)


def log_scaled(lower, upper) -> tuple[bool, ...]:
    """Which ranges the solver sees on a log scale: positive and wider than two decades."""
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    wide = (lower > 0) & (upper / np.where(lower > 0, lower, 1.0) > 100.0)
    return tuple(bool(v) for v in wide)


class BoundedTransform(eqx.Module):
    """Smooth bijection between bounded physical values and unbounded solver coordinates."""

    lower: Float[Array, " P"]
    upper: Float[Array, " P"]
    log_scale: tuple[bool, ...] = eqx.field(static=True)  # which parameters map logarithmically

    def __init__(self, lower, upper, log_scale: tuple[bool, ...] | None = None):
        """``log_scale``: which parameters map logarithmically; default: `log_scaled` of the
        bounds (which must then be concrete)."""
        self.log_scale = log_scaled(lower, upper) if log_scale is None else tuple(log_scale)
        self.lower, self.upper = jnp.asarray(lower, float), jnp.asarray(upper, float)

    def _scaled(self, x):
        """x on the map's scale: log for the logarithmic parameters (their values are > 0)."""
        logs = np.array(self.log_scale, bool)
        return jnp.where(logs, jnp.log(jnp.where(logs, jnp.abs(x) + 1e-300, 1.0)), x)

    def _ends(self):
        return self._scaled(self.lower), self._scaled(self.upper)

    def to_physical(self, u: Float[Array, " P"]) -> Float[Array, " P"]:
        lo, hi = self._ends()
        x = lo + (hi - lo) * jax.nn.sigmoid(u)
        logs = np.array(self.log_scale, bool)
        # exp only where it is used: exp of a linear parameter can overflow, and inf·0 in the
        # backward pass of a where would turn its (unused) gradient into NaN
        x = jnp.where(logs, jnp.exp(jnp.where(logs, x, 0.0)), x)
        return jnp.clip(x, self.lower, self.upper)  # exp(log(hi)) may round one ulp past hi

    def to_internal(self, p: Float[Array, " P"], margin: float = 1e-6) -> Float[Array, " P"]:
        """Inverse map; values on or beyond a bound are first moved ``margin`` (of the range) inside."""
        s = jnp.clip(self.fraction(p), margin, 1 - margin)
        return jnp.log(s) - jnp.log1p(-s)

    def fraction(self, p: Float[Array, " P"]) -> Float[Array, " P"]:
        """Position of ``p`` in its range (0 at the lower bound, 1 at the upper), on the map's scale."""
        lo, hi = self._ends()
        return (self._scaled(p) - lo) / (hi - lo)
