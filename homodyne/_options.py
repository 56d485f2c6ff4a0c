"""`FitOptions`: how a fit is solved (solver, tolerances, step limit, errors, progress).

What is fitted is `FitSpec`. Every option either takes effect or is refused with a message that
says what to do instead: tolerances belong to the default solver (a custom solver carries its own),
and progress can be printed only by solvers that report their steps.
"""

import math
from typing import final

import equinox as eqx
import optimistix as optx

from ._problem import progress
from ._solver import FitSolver

DEFAULT_RTOL = 1e-8
DEFAULT_ATOL = 1e-8

Solver = optx.AbstractLeastSquaresSolver | optx.AbstractMinimiser


@final
class FitOptions(eqx.Module):
    """How a fit is solved. Pass it to `homodyne.fit` or `homodyne.fit_many`::

        options = homodyne.FitOptions(rtol=1e-10, atol=1e-10, verbose=True)
        result = homodyne.fit(model, data, options=options)

    Args:
        solver: any optimistix least-squares solver or minimiser (a minimiser minimises ½χ²).
            ``None`` (default): `homodyne.FitSolver` with ``rtol``/``atol``: Levenberg–Marquardt
            whose damping starts at the scale of the problem and which also stops once a
            Gauss–Newton step would gain less than 1e-6 in χ². Every solver works in bounded,
            O(1)-scaled coordinates on a compressed residual vector of length F + 1 with the
            Gauss–Newton model of the full one (see `homodyne._problem`).
        max_steps: solver step limit (≥ 1).
        rtol, atol: tolerances of the default solver, on steps in the scaled coordinates and on χ²
            (default 1e-8 each). A custom ``solver`` carries its own: giving both is an error.
        throw: raise if the solver fails (optimistix's error). By default a failure is reported in
            ``result.result`` and ``result.converged``, so that a batch of fits is not aborted by
            one bad dataset; with `fit_many`, ``throw=True`` also raises for unusable datasets
            (see ``FitResult.status``).
        verbose: show the solver's steps and χ² on one updating line of stderr (its last step
            count is the result's ``n_steps``). The default solver and optimistix's
            Gauss–Newton family (`optx.LevenbergMarquardt`, `optx.GaussNewton`, `optx.Dogleg`)
            report their steps; other solvers cannot (an error: use their own ``verbose``
            option instead). Not available with `fit_many`.

    Raises:
        TypeError: for a solver that is not an optimistix least-squares solver or minimiser.
        ValueError: for a step limit below 1, tolerances that are not finite and > 0, tolerances
            given together with a custom solver, or ``verbose`` with a solver that cannot report
            its steps.
    """

    solver: Solver | None = None
    max_steps: int = eqx.field(default=256, static=True)
    rtol: float | None = eqx.field(default=None, static=True)
    atol: float | None = eqx.field(default=None, static=True)
    throw: bool = eqx.field(default=False, static=True)
    verbose: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        if self.solver is not None and not isinstance(
            self.solver, optx.AbstractLeastSquaresSolver | optx.AbstractMinimiser
        ):
            raise TypeError(
                "solver must be an optimistix least-squares solver or minimiser (e.g. "
                f"optx.LevenbergMarquardt(rtol, atol)), or None; got {type(self.solver).__name__}."
            )
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise TypeError(f"max_steps must be an int; got {type(self.max_steps).__name__}.")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1; got {self.max_steps}.")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
        for name in ("throw", "verbose"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False; got {getattr(self, name)!r}.")
        if self.solver is not None and (self.rtol is not None or self.atol is not None):
            raise ValueError(
                "rtol and atol are the tolerances of the default solver; a custom solver "
                f"({type(self.solver).__name__}) carries its own. Set them on the solver (e.g. "
                "optx.LevenbergMarquardt(rtol=1e-10, atol=1e-10)), or drop solver to use the "
                "default one with these tolerances."
            )
        if self.verbose and self.solver is not None and not reports_progress(self.solver):
            raise ValueError(
                f"verbose=True cannot print the progress of {type(self.solver).__name__}: only "
                "solvers of optimistix's Gauss–Newton family (FitSolver, LevenbergMarquardt, "
                "GaussNewton, Dogleg) report their steps to homodyne. Use the solver's own "
                "verbose option instead (e.g. optx.BFGS(rtol, atol, verbose=True)) and leave "
                "FitOptions.verbose False."
            )

    def fit_solver(self) -> Solver:
        """The solver a fit runs: the given one (printing progress if ``verbose``), or the default
        `FitSolver` with these tolerances."""
        if self.solver is None:
            return FitSolver(
                rtol=DEFAULT_RTOL if self.rtol is None else self.rtol,
                atol=DEFAULT_ATOL if self.atol is None else self.atol,
                verbose=progress if self.verbose else False,
            )
        if self.verbose:
            return eqx.tree_at(lambda s: s.verbose, self.solver, progress)
        return self.solver


def reports_progress(solver) -> bool:
    """Whether ``solver`` passes its step count and loss to a ``verbose`` callable that homodyne can
    replace (optimistix's Gauss–Newton family, `FitSolver` included)."""
    return isinstance(solver, optx.AbstractGaussNewton)
