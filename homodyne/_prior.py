"""Priors of the physical parameters for `homodyne.sample` (SPEC §7).

Every prior lives on the fit's bounds (`FitSpec.bounds`, default `homodyne.default_bounds`): outside
them the posterior is 0 (the sampler moves in the physical parameters themselves, where the
posterior is closest to Gaussian; a proposal beyond a bound is rejected). Within them the density is ``Uniform`` (the default),
``LogUniform`` (the default of D0 and gamma_dot_t0, rates that span decades) or ``Normal``
(truncated to the bounds). Contrast and offset have flat priors and are integrated out
(`homodyne._likelihood`).
"""

from collections.abc import Mapping
from typing import final

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

LOG_UNIFORM_BY_DEFAULT = ("D0", "gamma_dot_t0")


class AbstractPrior(eqx.Module):
    """A prior density of one physical parameter on its bounds (unnormalised)."""

    def log_density(self, x: Float[Array, "*s"]) -> Float[Array, "*s"]:
        raise NotImplementedError

    def describe(self, lower: float, upper: float) -> str:
        raise NotImplementedError


@final
class Uniform(AbstractPrior):
    """Flat in the parameter between its bounds."""

    def log_density(self, x):
        return jnp.zeros_like(x)

    def describe(self, lower, upper):
        return f"uniform on [{lower:.6g}, {upper:.6g}]"


@final
class LogUniform(AbstractPrior):
    """Flat in log(parameter) between its bounds (which must be > 0): density ∝ 1/x."""

    def log_density(self, x):
        return -jnp.log(x)

    def describe(self, lower, upper):
        return f"log-uniform on [{lower:.6g}, {upper:.6g}]"


@final
class Normal(AbstractPrior):
    """Gaussian with ``mean`` and standard deviation ``sd`` (physical units), truncated to the
    bounds."""

    mean: float = eqx.field(converter=float)
    sd: float = eqx.field(converter=float)

    def __check_init__(self):
        if not (np.isfinite(self.mean) and np.isfinite(self.sd) and self.sd > 0):
            raise ValueError(
                f"Normal needs a finite mean and sd > 0; got ({self.mean}, {self.sd})."
            )

    def log_density(self, x):
        z = (x - self.mean) / self.sd
        return -0.5 * z * z

    def describe(self, lower, upper):
        return f"normal({self.mean:.6g}, {self.sd:.6g}) on [{lower:.6g}, {upper:.6g}]"


def resolve_priors(
    names: tuple[str, ...],
    prior: Mapping[str, AbstractPrior] | None,
    lower: np.ndarray,
    upper: np.ndarray,
) -> tuple[AbstractPrior, ...]:
    """One prior per sampled parameter (``names``, a joint fit's labels such as
    ``"D_offset[run 1]"`` included): ``prior``'s entry for the name (or for its base name, which
    then applies to every run), else the default.

    Raises:
        ValueError: for an entry that names no sampled parameter, or a log-uniform prior on a
            range that is not > 0.
        TypeError: for an entry that is not a prior.
    """
    prior = dict(prior or {})
    bases = [n.split("[run ")[0] for n in names]
    for key, value in prior.items():
        if key not in names and key not in bases:
            raise ValueError(
                f"prior for {key!r}, which is not sampled; the sampled parameters are "
                f"{list(names)} (held parameters have no prior)."
            )
        if not isinstance(value, AbstractPrior):
            raise TypeError(
                f"the prior of {key} must be homodyne.Uniform(), homodyne.LogUniform() or "
                f"homodyne.Normal(mean, sd); got {value!r}."
            )
    out = []
    for name, base, lo, hi in zip(names, bases, lower, upper, strict=True):
        default = LogUniform() if base in LOG_UNIFORM_BY_DEFAULT and lo > 0 else Uniform()
        p = prior.get(name, prior.get(base, default))
        if isinstance(p, LogUniform) and not lo > 0:
            raise ValueError(
                f"a log-uniform prior on {name} needs bounds > 0; its bounds are ({lo}, {hi}): "
                "give FitSpec(bounds=...) or another prior."
            )
        out.append(p)
    return tuple(out)


def log_prior(
    priors: tuple[AbstractPrior, ...],
    lower: Float[Array, " G"],
    upper: Float[Array, " G"],
    theta: Float[Array, " G"],
) -> Float[Array, ""]:
    """Σ log p_i(θ_i) within the bounds, −inf outside them."""
    inside = jnp.all((theta >= lower) & (theta <= upper))
    # densities at the point moved into the bounds: finite values (and gradients) everywhere
    clipped = jnp.clip(theta, lower, upper)
    total = sum((p.log_density(clipped[i]) for i, p in enumerate(priors)), jnp.zeros(()))
    return jnp.where(inside, total, -jnp.inf)
