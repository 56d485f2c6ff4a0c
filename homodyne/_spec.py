"""`FitSpec`: what a fit determines (mode, bounds, held parameters, contrast/offset per bin or shared).

How the solver gets there (solver, tolerances, steps, progress) is `FitOptions`, a separate module,
so that one spec can be fitted with several solvers and one set of options serves many specs.
"""

from collections.abc import Mapping, Sequence
from typing import Literal, final

import equinox as eqx
import numpy as np

from ._bounds import DEFAULT_BOUNDS, resolve_bounds
from ._params import LaminarFlowParams, StaticParams

MODES = ("static", "laminar")
SCALINGS = ("per_angle", "shared")


@final
class FitSpec(eqx.Module):
    """What is fitted: the model's mode, the bounds, parameters held fixed, and the scaling.

    Build it once and pass it to `homodyne.fit` or `homodyne.fit_many`::

        spec = homodyne.FitSpec(mode="laminar", bounds={"D0": (1e3, 1e5)}, fixed={"D_offset": 0.0})
        result = homodyne.fit(model, data, spec=spec)

    Args:
        mode: ``"static"`` (D0, alpha, D_offset) or ``"laminar"`` (the 7 parameters of laminar
            flow); ``None``: the type of ``init`` if one is given, else static for a model with one
            angle (one angle cannot separate shear from the direction of diffusion). With several
            angles and no ``init`` the mode is never guessed: the fit raises ``ValueError``
            asking for it.
        bounds: overrides of the default bounds, ``{"D0": (1e3, 1e5), ...}``, in physical units;
            each finite with lower < upper. The defaults are the SPEC §4 table
            (`homodyne.DEFAULT_BOUNDS`) scaled to the fitted model's q, L, frame step and window
            (`homodyne.default_bounds`).
            Bounds are respected through a smooth reparametrisation, never by clipping the solver's
            values.
        fixed: physical parameters held constant: names (held at ``init``'s values; then ``init``
            is required) or ``{name: value}`` (a value of ``None`` also means ``init``'s value).
            Fixed values need not lie within the bounds.
        scaling: ``"per_angle"`` (default: one contrast and offset per bin) or ``"shared"`` (one
            of each for all bins).
        per_run: in a joint fit of several runs (``homodyne.fit([(model_a, data_a), ...])``), the
            physical parameters fitted separately for each run, e.g. ``("D_offset",)``; the
            others are shared by every run. Default: all shared. A fit of one run refuses it
            (``ValueError``).

    Attributes:
        mode, scaling: as given.
        bounds: ``((name, (lower, upper)), ...)``, in the order of `DEFAULT_BOUNDS` (immutable and
            hashable: two specs with the same bounds compare equal).
        fixed: ``((name, value or None), ...)``, in the order of the laminar parameters.
        per_run: the names, in the order of the laminar parameters.

    Raises:
        ValueError: for an unknown mode or scaling, bounds or fixed values of unknown parameters,
            bounds that are not finite with lower < upper, non-finite fixed values, or (with the
            mode given) bounds, fixed values or per-run names of parameters that the mode does
            not have, or a parameter both fixed and per run.
    """

    mode: Literal["static", "laminar"] | None = eqx.field(static=True)
    bounds: tuple[tuple[str, tuple[float, float]], ...] = eqx.field(static=True)
    fixed: tuple[tuple[str, float | None], ...] = eqx.field(static=True)
    scaling: Literal["per_angle", "shared"] = eqx.field(static=True)
    per_run: tuple[str, ...] = eqx.field(static=True)

    def __init__(
        self,
        mode: Literal["static", "laminar"] | None = None,
        bounds: Mapping[str, tuple[float, float]] | None = None,
        fixed: Sequence[str] | Mapping[str, float | None] = (),
        scaling: Literal["per_angle", "shared"] = "per_angle",
        per_run: Sequence[str] = (),
    ):
        if mode is not None and mode not in MODES:
            raise ValueError(
                f"mode must be 'static', 'laminar' or None (decided by init and the number of "
                f"angles); got {mode!r}."
            )
        if scaling not in SCALINGS:
            raise ValueError(
                f"scaling must be 'per_angle' (one contrast and offset per bin) or 'shared'; "
                f"got {scaling!r}."
            )
        self.mode = mode
        self.scaling = scaling
        self.bounds = _bounds(bounds)
        self.fixed = _fixed(fixed)
        self.per_run = _per_run(per_run, self.fixed)

    def __check_init__(self):
        if self.mode is not None:
            check_applies(self, self.mode == "laminar", f"mode={self.mode!r}")


def check_applies(spec: FitSpec, laminar: bool, why: str) -> None:
    """``ValueError`` if ``spec`` bounds or fixes a parameter that a fit in this mode does not have
    (it would be silently ignored). ``why`` says where the mode came from."""
    names = parameter_names(laminar)
    mode = ("static", "laminar")[laminar]
    other = ("laminar", "static")[laminar]
    fixed = [n for n, _ in spec.fixed if n not in names]
    if fixed:
        raise ValueError(
            f"cannot fix {fixed}: a {mode} fit ({why}) has the parameters {names}. Remove them "
            f"from fixed, or fit mode='{other}'."
        )
    per_run = [n for n in spec.per_run if n not in names]
    if per_run:
        raise ValueError(
            f"cannot fit {per_run} per run: a {mode} fit ({why}) has the parameters {names}. "
            f"Remove them from per_run, or fit mode='{other}'."
        )
    bounded = [n for n, _ in spec.bounds if n not in (*names, "contrast", "offset")]
    if bounded:
        raise ValueError(
            f"bounds of {bounded} do not apply to a {mode} fit ({why}), whose parameters are "
            f"{names}. Remove them, or fit mode='{other}'."
        )


def parameter_names(laminar: bool) -> tuple[str, ...]:
    return (LaminarFlowParams if laminar else StaticParams).names


def _bounds(bounds) -> tuple[tuple[str, tuple[float, float]], ...]:
    if bounds is None:
        return ()
    if not isinstance(bounds, Mapping):
        raise TypeError(
            f"bounds must be a mapping {{name: (lower, upper)}}; got {type(bounds).__name__}."
        )
    # resolve_bounds checks names and values (ValueError with what to fix)
    resolve_bounds(LaminarFlowParams.names, bounds)
    return tuple(
        (name, (float(bounds[name][0]), float(bounds[name][1])))
        for name in DEFAULT_BOUNDS
        if name in bounds
    )


def _fixed(fixed) -> tuple[tuple[str, float | None], ...]:
    if isinstance(fixed, str):
        fixed = (fixed,)
    if isinstance(fixed, Mapping):
        given = dict(fixed)
    elif isinstance(fixed, Sequence):
        given = dict.fromkeys(fixed)
    else:
        raise TypeError(
            "fixed must be a sequence of parameter names (held at init) or a mapping "
            f"{{name: value}}; got {type(fixed).__name__}."
        )
    names = LaminarFlowParams.names
    unknown = [n for n in given if n not in names]
    if unknown:
        raise ValueError(f"cannot fix {unknown}: the physical parameters are {names}.")
    out = []
    for name in names:
        if name not in given:
            continue
        value = given[name]
        if value is not None:
            try:
                value = float(value)
            except TypeError:
                raise TypeError(
                    f"the fixed value of {name} must be a number (or None for init's value); "
                    f"got {type(value).__name__}."
                ) from None
            if not np.isfinite(value):
                raise ValueError(f"the fixed value of {name} must be finite; got {value}.")
        out.append((name, value))
    return tuple(out)


def _per_run(per_run, fixed) -> tuple[str, ...]:
    if isinstance(per_run, str):
        per_run = (per_run,)
    if not isinstance(per_run, Sequence):
        raise TypeError(
            f"per_run must be a sequence of parameter names; got {type(per_run).__name__}."
        )
    names = LaminarFlowParams.names
    unknown = [n for n in per_run if n not in names]
    if unknown:
        raise ValueError(f"cannot fit {unknown} per run: the physical parameters are {names}.")
    held = [n for n, _ in fixed if n in per_run]
    if held:
        raise ValueError(f"{held} cannot be both fixed and fitted per run: remove them from one.")
    return tuple(n for n in names if n in per_run)
