"""Typed model parameters: static (3) and laminar flow (7), and the flat arrays of SPEC §2."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._precision import as_float64
from ._validate import is_traced

Value = Float[Array, "*batch"]


class AbstractParams(eqx.Module):
    """Physical parameters of one mode of the model.

    Fields are float64 arrays: scalars for one parameter set, or arrays of a common shape for a batch
    (as produced by ``from_array`` on a ``(B, P)`` array or by ``jax.vmap``).
    """

    names: eqx.AbstractClassVar[tuple[str, ...]]
    units: eqx.AbstractClassVar[tuple[str, ...]]

    def to_array(self) -> Float[Array, "*batch P"]:
        """The documented flat parameter array (last axis in SPEC order)."""
        return jnp.stack([getattr(self, name) for name in self.names], axis=-1)

    @classmethod
    def from_array(cls, values: ArrayLike):
        """Build from a flat array whose last axis holds the parameters in SPEC order.

        Raises:
            ValueError: if the last axis does not have exactly ``len(cls.names)`` entries.
        """
        values = as_float64(values)
        if values.ndim == 0 or values.shape[-1] != len(cls.names):
            raise ValueError(
                f"{cls.__name__} needs {len(cls.names)} values {cls.names} on the last axis; "
                f"got an array of shape {values.shape}."
            )
        return cls(*(values[..., i] for i in range(len(cls.names))))  # pyright: ignore[reportArgumentType]

    @property
    def is_laminar_flow(self) -> bool:
        return len(self.names) == 7

    def __repr__(self) -> str:
        """The values, e.g. ``StaticParams(D0=12000.0, alpha=-0.5, D_offset=50.0)``; for a batch
        its shape; inside ``jax.jit`` (traced values) equinox's summary of the fields."""
        leaves = [getattr(self, name) for name in self.names]
        if is_traced(*leaves):
            return super().__repr__()
        shapes = {np.shape(x) for x in leaves}
        if shapes == {()}:
            body = ", ".join(f"{n}={float(x)!r}" for n, x in zip(self.names, leaves, strict=True))
        else:
            body = ", ".join(
                f"{n}={np.array2string(np.asarray(x), precision=6, threshold=8)}"
                for n, x in zip(self.names, leaves, strict=True)
            )
        return f"{type(self).__name__}({body})"


class StaticParams(AbstractParams):
    """Time-dependent diffusion only: D(t) = D0·t^alpha + D_offset.

    Attributes:
        D0: diffusion amplitude [Å²/s^(1+alpha)].
        alpha: diffusion exponent [dimensionless].
        D_offset: constant diffusion [Å²/s].
    """

    D0: Value = eqx.field(converter=as_float64)
    alpha: Value = eqx.field(converter=as_float64)
    D_offset: Value = eqx.field(converter=as_float64)

    names: ClassVar[tuple[str, ...]] = ("D0", "alpha", "D_offset")
    units: ClassVar[tuple[str, ...]] = ("Å²/s^(1+α)", "", "Å²/s")


class LaminarFlowParams(AbstractParams):
    """Diffusion plus laminar shear: gamma_dot(t) = gamma_dot_t0·t^beta + gamma_dot_t_offset.

    Attributes:
        D0: diffusion amplitude [Å²/s^(1+alpha)].
        alpha: diffusion exponent.
        D_offset: constant diffusion [Å²/s].
        gamma_dot_t0: shear-rate amplitude [s^-(1+beta)].
        beta: shear-rate exponent.
        gamma_dot_t_offset: constant shear rate [1/s].
        phi0: flow direction [degrees], measured like the detector angles.
    """

    D0: Value = eqx.field(converter=as_float64)
    alpha: Value = eqx.field(converter=as_float64)
    D_offset: Value = eqx.field(converter=as_float64)
    gamma_dot_t0: Value = eqx.field(converter=as_float64)
    beta: Value = eqx.field(converter=as_float64)
    gamma_dot_t_offset: Value = eqx.field(converter=as_float64)
    phi0: Value = eqx.field(converter=as_float64)

    names: ClassVar[tuple[str, ...]] = (
        "D0",
        "alpha",
        "D_offset",
        "gamma_dot_t0",
        "beta",
        "gamma_dot_t_offset",
        "phi0",
    )
    units: ClassVar[tuple[str, ...]] = ("Å²/s^(1+α)", "", "Å²/s", "s^-(1+β)", "", "1/s", "deg")

    def diffusion_part(self) -> StaticParams:
        """The three diffusion parameters as `StaticParams`."""
        return StaticParams(self.D0, self.alpha, self.D_offset)


Params = StaticParams | LaminarFlowParams


def params_from_array(values: ArrayLike) -> Params:
    """`StaticParams` for 3 values, `LaminarFlowParams` for 7 (last axis); otherwise ``ValueError``."""
    values = as_float64(values)
    n = values.shape[-1] if values.ndim else 0
    if n == 3:
        return StaticParams.from_array(values)
    if n == 7:
        return LaminarFlowParams.from_array(values)
    raise ValueError(
        "params must hold 3 values (static: D0, alpha, D_offset) or 7 (laminar flow: D0, alpha, "
        "D_offset, gamma_dot_t0, beta, gamma_dot_t_offset, phi0) on the last axis; got shape "
        f"{values.shape}."
    )
