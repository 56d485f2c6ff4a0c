"""`FitResult`: what a fit returns (an immutable module; batched leaves after `fit_many`)."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from ._bounds import log_scaled
from ._covariance import ERROR_WINDOW
from ._model import HomodyneModel
from ._params import Params
from ._precision import as_float64

#: `FitResult.fitted_g2` and `FitResult.residuals` build full (n_phi, N, N) float64 grids;
#: above this many values (2 GB each) saved results and plots leave them out
#: (`full_grid_too_large`) instead of running out of memory
FULL_GRID_LIMIT = 250_000_000


class FitStatus(eqx.Enumeration):
    """Whether the inputs of a fit were usable (`FitResult.status`).

    Values that `homodyne.fit` does not check in NumPy before the compiled fit runs (data and σ
    given as JAX arrays, σ estimated from the data; every dataset of `homodyne.fit_many`) are
    checked inside it. `homodyne.fit` raises ``ValueError`` with the
    message when it can see the status (its inputs are not traced); under ``jax.jit``,
    ``jax.vmap`` or ``jax.grad``, and per dataset in `homodyne.fit_many`, the status is reported
    here instead, the estimates are NaN and ``converged`` is False.
    """

    ok = ""
    nonfinite_data = (
        "data contains NaN or infinite values: exclude their frames with frame_mask=, or repair "
        "them before fitting."
    )
    invalid_sigma = "sigma must be finite and > 0 everywhere (it divides the residuals)."
    noise_not_estimated = (
        "could not estimate the noise from the data (identical neighbouring values, or too few "
        "runs of 3 used frames): pass sigma explicitly (command line: --sigma)."
    )
    too_few_frames = (
        "the frame mask leaves too few frames (at least 3, and more pairs t1 < t2 than unknowns): "
        "exclude fewer frames, fix parameters, or use FitSpec(scaling='shared')."
    )


class FitResult(eqx.Module):
    """Estimates, uncertainties and diagnostics of one least-squares fit of g2 to C2 data.

    Attributes:
        params: best-fit physical parameters (`StaticParams` or `LaminarFlowParams`).
        errors: their standard errors, same type (0 for parameters held fixed), from
            ``covariance``: they account for the correlated errors of measured C2 elements.
            ``inf`` where the data do not determine a parameter (it has a share in a direction
            the information does not resolve in float64, `homodyne._covariance.inverse_and_blind`);
            its covariances with the others are then NaN.
        errors_independent: the standard errors if every C2 element's error were independent,
            from ``covariance_independent`` (10–40× too small on detector data; SPEC §6).
        contrast, offset: best-fit scaling per angle, (n_phi,) (equal entries when shared).
        contrast_error, offset_error: their standard errors, (n_phi,).
        names: the labels of ``covariance``'s rows: the free physical parameters, then contrast
            and offset (per angle: ``contrast[k]``; shared: ``contrast``).
        covariance: covariance of the free parameters, (K, K). C2 elements that share frames, or
            frames within the correlation time, have correlated errors (SPEC §6), so the pairs
            are grouped into squares of the two-time grid as wide as the fitted g1² takes to fall
            to 0.05 (``error_blocks`` blocks of frames per side), and the covariance of all
            fitted parameters is a sandwich whose middle sums the scores of every window of
            3 × 3 squares of one angle, each scaled up for its leverage (how much the fit
            follows that window: `homodyne._covariance.window_covariance`). It needs no σ: its
            scale comes from the residuals.
        covariance_independent: (JᵀJ)⁻¹ at the solution (times the reduced χ² when σ was
            estimated from the data): right only if every element's error is independent, as in
            `homodyne.simulate_c2`.
        error_blocks: blocks of frames per side of the two-time grid for ``covariance``.
        n_clusters: angles × squares holding pairs that ``covariance`` rests on.
        correlation_resolved: whether the window holds at least 8 correlation times of the
            fitted dynamics, so that each block of frames is as wide as frames stay correlated.
            If not (slow dynamics, short windows), the blocks are the finest (min(N, 64) equal
            runs of frames): the errors are right
            for independent element errors (like `homodyne.simulate_c2`'s) but too small for
            detector data, and the summary says so.
        chi2: Σ r² over the residuals r = (data − g2)/σ of every angle and pair t1 < t2 (of
            used frames, with a frame mask; σ as reported in ``sigma``).
        dof: number of residuals (pairs of used frames × angles) minus number of free parameters.
        reduced_chi2: chi2 / dof.
        n_steps: solver steps taken (summed over both starts of an automatic start).
        result: optimistix's result code (``optx.RESULTS.successful`` when tolerances were met;
            ``optx.RESULTS.nonfinite`` when ``status`` is not ok).
        status: whether the inputs were usable (`FitStatus`; ``FitStatus.ok`` when they were).
        converged: the solver met its tolerances *and* the point is a minimum: the χ² decrease a
            Gauss–Newton step still predicts (``decrement``, in units of the reduced χ²) is below
            0.01, so no parameter is more than ~0.1 standard errors from the minimum. A fit that
            stops where it started with a large gradient is not converged.
        decrement: that predicted decrease, gᵀH⁻¹g / max(1, reduced χ²).
        at_bound: which physical parameters ended within 1e-4 of their range from a bound. A
            parameter on a bound counts as converged only if χ² rises going inward, and a fit with
            every physical parameter on a bound is not converged.
        near_bound: which physical parameters ended on or within 1 % of their range from a bound
            (on the log scale for D0 and gamma_dot_t0; 5 % when the fit did not converge, as it
            may have been on its way there): the bound may have stopped them, and
            their errors do not describe the other side. The summary, the command line and the
            plots name them; widen the bounds (``FitSpec(bounds=...)``, ``--bounds``) and fit
            again.
        bounds_lower, bounds_upper: the bounds of the physical parameters, (P,) (NaN for those
            held fixed): the SPEC §4 defaults scaled to the experiment (`homodyne.default_bounds`)
            updated by ``FitSpec.bounds``.
        sigma: the noise level, as given, or per angle (n_phi,) when estimated: then the RMS of
            each angle's residuals (over its share of the degrees of freedom), so that
            ``reduced_chi2`` is 1. (The fit itself weighs the angles by a first estimate from
            second differences along lines of equal lag, which noise shared by neighbouring
            frames makes 5–30 % low on detector data.)
        frame_mask: the frames used, (N,) bool (all True without a mask); every pair touching a
            False frame was left out of the fit.
        sigma_estimated: True when σ was estimated from the data (static).
        model: the model that was fitted (for `fitted_g2`).
    """

    params: Params
    errors: Params
    contrast: Float[Array, " n_phi"]
    offset: Float[Array, " n_phi"]
    contrast_error: Float[Array, " n_phi"]
    offset_error: Float[Array, " n_phi"]
    covariance: Float[Array, "K K"]
    errors_independent: Params
    covariance_independent: Float[Array, "K K"]
    error_blocks: Int[Array, ""]
    n_clusters: Int[Array, ""]
    correlation_resolved: Bool[Array, ""]
    chi2: Float[Array, ""]
    dof: Int[Array, ""]
    reduced_chi2: Float[Array, ""]
    n_steps: Int[Array, ""]
    result: optx.RESULTS
    status: FitStatus
    converged: Bool[Array, ""]
    decrement: Float[Array, ""]
    at_bound: Bool[Array, " P"]
    near_bound: Bool[Array, " P"]
    bounds_lower: Float[Array, " P"]
    bounds_upper: Float[Array, " P"]
    sigma: Float[Array, "..."]
    frame_mask: Bool[Array, " N"]
    model: HomodyneModel
    names: tuple[str, ...] = eqx.field(static=True)
    sigma_estimated: bool = eqx.field(static=True)

    @property
    def correlation(self) -> Float[Array, "K K"]:
        """Correlation matrix of the free parameters (same order as ``names``)."""
        s = jnp.sqrt(jnp.diagonal(self.covariance, axis1=-2, axis2=-1))
        return self.covariance / (s[..., :, None] * s[..., None, :])

    def fitted_g2(self) -> Float[Array, "n_phi n_t n_t"]:
        """The best-fit g2, (n_phi, N, N)."""
        return self.model.g2(self.params, self.contrast, self.offset)

    def residuals(self, data) -> Float[Array, "n_phi n_t n_t"]:
        """(data − g2)/σ on the full grid, (n_phi, N, N) (the diagonal, excluded from the fit, too);
        NaN on the rows and columns of excluded frames (``frame_mask``)."""
        # float32 maps as loaded go in as they are: the difference is taken in float64
        return _residuals(self, as_float64(data))

    def __str__(self) -> str:
        return format_result(self)


@eqx.filter_jit  # one compilation (eagerly, each of its operations would compile alone)
def _residuals(result: FitResult, data: Float[Array, "n_phi n_t n_t"]):
    sigma = jnp.asarray(result.sigma)
    if sigma.ndim == 1:  # one value per angle (given or estimated)
        sigma = sigma[:, None, None]
    used = result.frame_mask[:, None] & result.frame_mask[None, :]
    return jnp.where(used, (data - result.fitted_g2()) / sigma, jnp.nan)


def _fmt(x: float, digits: int = 6) -> str:
    return f"{x:.{digits}g}" if np.isfinite(x) else str(x)


def round_to_error(value: float, error: float) -> tuple[str, str]:
    """``value`` and ``error`` as text, the error to two significant digits and the value to the
    same last digit: (10648.4, 337.8) → ("10650", "340"); (1.0590e7, 4.28e5) →
    ("1.059e+07", "4.3e+05"). Scientific notation outside 1e-3 ≤ |x| < 1e6. An error that is 0
    (held fixed), inf or NaN leaves the value at 6 significant digits."""
    if not (np.isfinite(value) and np.isfinite(error) and error > 0):
        return _fmt(value), ("0" if error == 0 else str(error))
    last = int(np.floor(np.log10(error))) - 1  # the power of ten of the last digit shown
    value, error = round(value, -last), round(error, -last)
    if 1e-3 <= max(abs(value), error) < 1e6:  # one notation for both
        return f"{value:.{max(-last, 0)}f}", f"{error:.{max(-last, 0)}f}"

    def scientific(x: float) -> str:
        if x == 0:
            return "0"
        exponent = int(np.floor(np.log10(abs(x))))
        return f"{x:.{max(exponent - last, 0)}e}"

    return scientific(value), scientific(error)


def _excluded_line(r: FitResult) -> list[str]:
    mask = np.asarray(r.frame_mask)
    k = int(mask.size - np.sum(mask))
    if not k:
        return []
    return [
        f"  frames: {k} of {mask.size} excluded (frame mask; their pairs are left out of the fit)"
    ]


def bound_flags(r: FitResult) -> list[str]:
    """Per physical parameter: "" or where it ended, e.g. "AT upper bound 1e+05" or
    "near lower bound 100" (one fit, not a batch)."""
    at, near = np.asarray(r.at_bound), np.asarray(r.near_bound)
    lower, upper = np.asarray(r.bounds_lower), np.asarray(r.bounds_upper)
    flags = []
    for i, name in enumerate(r.params.names):
        if not near[i]:
            flags.append("")
            continue
        v, lo, hi = float(getattr(r.params, name)), lower[i], upper[i]
        if log_scaled([lo], [hi])[0]:  # the side is judged on the solver's scale
            v, lo_s, hi_s = np.log(max(v, 1e-300)), np.log(lo), np.log(hi)
        else:
            lo_s, hi_s = lo, hi
        side, bound = ("lower", lo) if v - lo_s < hi_s - v else ("upper", hi)
        flags.append(f"{'AT' if at[i] else 'near'} {side} bound {bound:.3g}")
    return flags


def bounded_parameters(r: FitResult) -> list[str]:
    """The parameters on or near a bound, each with where: ["D0 (AT upper bound 1e+05)", …]."""
    return [f"{n} ({f})" for n, f in zip(r.params.names, bound_flags(r), strict=True) if f]


def bound_warning(r: FitResult) -> list[str]:
    """The summary's warning line naming the parameters on or near a bound (none: [])."""
    named = bounded_parameters(r)
    if not named:
        return []
    return [
        f"  WARNING: {', '.join(named)}: the bound may have stopped the fit; widen it "
        "(FitSpec(bounds={name: (lower, upper)}), command line --bounds NAME=LO:HI) and fit again"
    ]


def undetermined_warning(r: FitResult) -> list[str]:
    """The summary's warning line naming the free parameters the data do not determine (an
    infinite std error; none: [])."""
    named = [n for n in r.params.names if n in r.names and np.isinf(float(getattr(r.errors, n)))]
    if not named:
        return []
    return [
        f"  WARNING: the data do not determine {', '.join(named)} (std error inf): hold them "
        "(FitSpec(fixed={name: value}), command line --fixed NAME=V) or fit data that "
        "depend on them"
    ]


_TABLE_HEADER = f"  {'parameter':<20}{'value':>14}{'std error':>14}{'if indep.':>12}  {'unit':<12}"


def _parameter_row(r: FitResult, name: str, label: str, unit: str, flag: str) -> str:
    """One line of the parameter table: value rounded to its error, the error, the error if
    elements were independent, the unit and where it ended against its bounds."""
    value, error = float(getattr(r.params, name)), float(getattr(r.errors, name))
    naive = float(getattr(r.errors_independent, name))
    value_text, error_text = round_to_error(value, error)
    if error == 0:
        error_text = "fixed"
    naive_text = round_to_error(naive, naive)[1]
    return f"  {label:<20}{value_text:>14}{error_text:>14}{naive_text:>12}  {unit:<12}" + (
        f"  {flag}" if flag else ""
    )


def format_result(r: FitResult) -> str:
    if np.ndim(r.chi2) != 0:
        return f"FitResult of a batch of {np.shape(r.chi2)[0]} fits (index it with jax.tree.map)."
    status = "converged" if bool(r.converged) else "NOT converged"
    code = FitStatus[r.status] or optx.RESULTS[r.result]
    lines = [
        f"homodyne fit ({'laminar flow' if r.params.is_laminar_flow else 'static'}): {status}"
        f" after {int(r.n_steps)} steps ({code or 'successful'})",
        f"  chi2 = {float(r.chi2):.6g}, dof = {int(r.dof)}, reduced chi2 = {float(r.reduced_chi2):.4f}",
        "  sigma: "
        + ("estimated per angle from the fit's residuals (so reduced chi2 = 1)"
           if r.sigma_estimated else "as given"),
        *_excluded_line(r),
        f"  std errors: for correlated C2 errors (scores summed over windows of {ERROR_WINDOW} × {ERROR_WINDOW} squares of"
        f" the two-time grid, {int(r.error_blocks)} blocks of frames per side, {int(r.n_clusters)}"
        " squares × angles)",
        *bound_warning(r),
        *undetermined_warning(r),
        *(["  WARNING: the window holds fewer than 8 correlation times of the fitted dynamics: the"
           " squares are narrower than frames stay correlated, and on detector data the std"
           " errors are too small"] if not bool(r.correlation_resolved) else []),
        "  'if indep.': the errors if every C2 element's error were independent (too small on"
        " detector data)",
        "",
        _TABLE_HEADER,
    ]  # fmt: skip
    flags = bound_flags(r)
    for i, (name, unit) in enumerate(zip(r.params.names, r.params.units, strict=True)):
        lines.append(_parameter_row(r, name, name, unit, flags[i]))
    phi = np.asarray(r.model.phi)
    rings = np.ndim(r.model.q) == 1  # q per bin: say which ring each bin is on
    q = np.asarray(r.model.q_per_bin)
    for k in range(phi.size):
        c, ce = float(r.contrast[k]), float(r.contrast_error[k])
        b, be = float(r.offset[k]), float(r.offset_error[k])
        (c_text, ce_text), (b_text, be_text) = round_to_error(c, ce), round_to_error(b, be)
        lines.append(
            f"  contrast/offset at {f'q = {q[k]:.4g} 1/Å, ' if rings else ''}φ = {phi[k]:.1f}°: "
            f"{c_text} ± {ce_text}, {b_text} ± {be_text}"
        )
    return "\n".join(lines)


class JointFitResult(eqx.Module):
    """One fit of several runs (each its own model: time axis, sample ages, q, angles) that share
    the physical parameters, except those fitted per run (`FitSpec.per_run`).

    ``runs[r]`` is run r's `FitResult`: its parameters (the shared values and its own), their
    errors from the joint covariance, the contrast and offset of its bins, its χ² and its plots
    (``homodyne.io`` takes it like any fit). Its ``dof`` counts the run's pairs minus the unknowns
    a fit of that run alone would have; the joint fit's own are here.

    Attributes:
        runs: one `FitResult` per run, in the order given.
        names: the labels of ``covariance``'s rows: the joint physical parameters (a per-run one
            as ``"D_offset[run 1]"``), then each run's contrast and offset
            (``"contrast[0] (run 1)"``).
        covariance: covariance of all of them, (K, K), for correlated C2 errors (as
            `FitResult.covariance`; runs are independent clusters).
        covariance_independent: (JᵀJ)⁻¹, as `FitResult.covariance_independent`.
        chi2, dof, reduced_chi2: over every run (dof: all residuals minus all unknowns).
        n_steps, result, converged, decrement: of the joint solve (as in `FitResult`).
        status: the first run's status that is not ok (then every estimate is NaN), else ok.
        sigma_estimated: True when σ was estimated from each run's data.
    """

    runs: tuple[FitResult, ...]
    covariance: Float[Array, "K K"]
    covariance_independent: Float[Array, "K K"]
    chi2: Float[Array, ""]
    dof: Int[Array, ""]
    reduced_chi2: Float[Array, ""]
    n_steps: Int[Array, ""]
    result: optx.RESULTS
    status: FitStatus
    converged: Bool[Array, ""]
    decrement: Float[Array, ""]
    names: tuple[str, ...] = eqx.field(static=True)
    sigma_estimated: bool = eqx.field(static=True)

    @property
    def per_run(self) -> tuple[str, ...]:
        """The physical parameters fitted per run."""
        return tuple(n[: -len("[run 0]")] for n in self.names if n.endswith("[run 0]"))

    def __str__(self) -> str:
        return format_joint(self)


def format_joint(j: JointFitResult) -> str:
    """The joint summary: status and χ² of the whole fit, one table of the shared parameters and
    each run's own, then one line per run (its frames, ages, q and χ²)."""
    first = j.runs[0]
    status = "converged" if bool(j.converged) else "NOT converged"
    code = FitStatus[j.status] or optx.RESULTS[j.result]
    per_run = j.per_run
    free = [n for n in first.params.names if n in first.names]  # the others are held fixed
    lines = [
        f"homodyne joint fit of {len(j.runs)} runs "
        f"({'laminar flow' if first.params.is_laminar_flow else 'static'}): {status} after "
        f"{int(j.n_steps)} steps ({code or 'successful'})",
        f"  chi2 = {float(j.chi2):.6g}, dof = {int(j.dof)}, reduced chi2 = "
        f"{float(j.reduced_chi2):.4f}",
        "  sharing: "
        + ", ".join(n for n in free if n not in per_run)
        + (f"; per run: {', '.join(per_run)}" if per_run else " (every parameter)"),
        "  sigma: "
        + ("estimated per angle from the fit's residuals" if j.sigma_estimated else "as given"),
        "  std errors: for correlated C2 errors (scores summed over windows of the two-time"
        " grids; runs are independent)",
    ]
    for r, run in enumerate(j.runs):
        lines += [
            w.replace("  WARNING:", f"  WARNING (run {r}):")
            for w in bound_warning(run) + undetermined_warning(run)
        ]
    lines += ["", _TABLE_HEADER]
    flags = [bound_flags(run) for run in j.runs]
    for i, (name, unit) in enumerate(zip(first.params.names, first.params.units, strict=True)):
        if name not in per_run:
            lines.append(_parameter_row(first, name, name, unit, flags[0][i]))
            continue
        for r, run in enumerate(j.runs):
            lines.append(_parameter_row(run, name, f"{name}[run {r}]", unit, flags[r][i]))
    lines.append("")
    for r, run in enumerate(j.runs):
        t = np.asarray(run.model.t)
        q = np.unique(np.asarray(run.model.q_per_bin))
        q_text = f"{q[0]:.4g}" if q.size == 1 else f"{q.min():.4g}–{q.max():.4g}"
        c = np.asarray(run.contrast)
        c_text = f"{c.min():.3g}" + (
            f"–{c.max():.3g}" if f"{c.min():.3g}" != f"{c.max():.3g}" else ""
        )
        n_bins = np.size(run.model.phi)
        lines.append(
            f"  run {r}: {t.size} frames, t = {t[0]:.4g}–{t[-1]:.4g} s, q = {q_text} 1/Å, "
            f"{n_bins} bin{'s' if n_bins > 1 else ''}; chi2 = {float(run.chi2):.6g} "
            f"(reduced {float(run.reduced_chi2):.4f} as if alone), contrast {c_text}"
        )
    return "\n".join(lines)


def full_grid_too_large(result: FitResult) -> str:
    """ "" when the full (n_phi, N, N) grids of ``result`` (data, fit, residuals) are small
    enough to build beside each other, else a sentence saying why not and what to do."""
    n, n_phi = result.model.n_frames, result.model.n_phi
    values = n_phi * n * n
    if values <= FULL_GRID_LIMIT:
        return ""
    return (
        f"{n_phi} bins × {n}² frame pairs: each full grid (data, fit or residuals) takes "
        f"{values * 8 / 1e9:.0f} GB in float64; fit a window of frames or fewer bins to get them"
    )
