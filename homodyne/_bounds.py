"""Parameter bounds and the smooth map between bounded physical values and free solver coordinates.

optimistix has no bounds, and Levenberg–Marquardt damps every direction alike, so the solver works in
coordinates u ∈ ℝ that are O(1) for every parameter: p = lo + (hi − lo)·sigmoid(u), or, for a
positive range spanning more than two decades (D0, gamma_dot_t0), log p = log lo + (log hi −
log lo)·sigmoid(u). D0 ~ 1e4 and γ̇0 ~ 1e-3 are then equally easy, and no value leaves its bounds.
"""

import types
from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

#: SPEC §4 default bounds (lower, upper) in physical units. Read-only: override bounds per fit
#: (``fit(..., bounds={"D0": (1e3, 1e5)})``), never here for everyone.
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


def resolve_bounds(
    names: tuple[str, ...], overrides: Mapping[str, tuple[float, float]] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds for ``names``: SPEC defaults updated by ``overrides``.

    Raises:
        ValueError: for an unknown name, or bounds that are not finite with lower < upper.
    """
    table = dict(DEFAULT_BOUNDS)
    for name, pair in (overrides or {}).items():
        if name not in table:
            raise ValueError(f"bounds for unknown parameter {name!r}; known: {sorted(table)}.")
        table[name] = pair
    lower, upper = [], []
    for name in (*names, "contrast", "offset"):
        lo, hi = (float(v) for v in table[name])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(
                f"bounds of {name} must be finite with lower < upper; got ({lo}, {hi})."
            )
        lower.append(lo)
        upper.append(hi)
    return np.array(lower), np.array(upper)


class BoundedTransform(eqx.Module):
    """Smooth bijection between bounded physical values and unbounded solver coordinates."""

    lower: Float[Array, " P"]
    upper: Float[Array, " P"]
    log_scale: tuple[bool, ...] = eqx.field(static=True)  # which parameters map logarithmically

    def __init__(self, lower, upper):
        lower, upper = np.asarray(lower, float), np.asarray(upper, float)
        self.lower, self.upper = jnp.asarray(lower), jnp.asarray(upper)
        wide = (lower > 0) & (upper / np.where(lower > 0, lower, 1.0) > 100.0)
        self.log_scale = tuple(bool(v) for v in wide)

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
