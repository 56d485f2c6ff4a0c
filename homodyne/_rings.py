"""Whether the q rings of a joint fit agree: each ring fitted alone beside the joint fit.

A joint fit over several q rings (a model with q per bin) assumes that the rings share D(t) and
γ̇(t). Whether they do is what a scientist wants to see next: for diffusion the relaxation rate
Γ = q²·D of g1² grows as q², so the rates of the rings fitted alone lie on the joint fit's q² line,
and the slope of log Γ against log q is 2.
"""

from typing import final

import equinox as eqx
import numpy as np
from jaxtyping import ArrayLike

from ._fit import fit
from ._model import HomodyneModel
from ._options import FitOptions
from ._plot import rate_bands
from ._result import FitResult, round_to_error
from ._spec import FitSpec


@final
class RingConsistency(eqx.Module):
    """Each q ring of a joint fit fitted alone, beside the joint fit (`ring_consistency`).

    Attributes:
        q: the rings' wavevectors [1/Å], (R,), increasing.
        age: the sample age [s] at which the rates are compared: the middle of the window.
        joint: the joint fit.
        ring_fits: each ring's own `FitResult` (its bins only), in the order of ``q``.
        rate, rate_error: each ring's relaxation rate Γ_r = q_r²·D_r(age) [1/s] and its standard
            error (delta method with the ring fit's covariance), (R,).
        joint_rate, joint_rate_error: the joint fit's q_r²·D(age) at each ring, (R,).
        d_ring, d_ring_error: each ring's D(age) [Å²/s] and error, (R,); ``d_joint``,
            ``d_joint_error``: the joint fit's.
        slope, slope_error: the exponent n of Γ ∝ q^n from a weighted straight line through
            (log q_r, log Γ_r); 2 for diffusion. Its error propagates the rings' errors, and with
            more than 2 rings is widened by their scatter about the line if that is larger.
        chi2: Σ ((Γ_r − q_r²·D_joint(age)) / σ_r)², the rings' rates against the joint q² line,
            with R degrees of freedom if the rings share D(t) (the joint fit's own error, far
            smaller than a ring's, is left out).
        converged: whether every ring fit converged.
    """

    q: np.ndarray
    age: float
    joint: FitResult
    ring_fits: tuple[FitResult, ...]
    rate: np.ndarray
    rate_error: np.ndarray
    joint_rate: np.ndarray
    joint_rate_error: np.ndarray
    d_ring: np.ndarray
    d_ring_error: np.ndarray
    d_joint: float
    d_joint_error: float
    slope: float
    slope_error: float
    chi2: float
    converged: bool

    def __str__(self) -> str:
        lines = [
            f"consistency of {self.q.size} q rings with the joint fit (each ring fitted alone; "
            f"rates at the mid-window age t = {self.age:.4g} s):",
            f"  {'q [1/Å]':>10}{'D(t) alone [Å²/s]':>26}{'Γ = q²D alone [1/s]':>26}"
            f"{'Γ joint [1/s]':>16}{'(alone − joint)/σ':>20}",
        ]
        for r in range(self.q.size):
            d = " ± ".join(round_to_error(self.d_ring[r], self.d_ring_error[r]))
            g = " ± ".join(round_to_error(self.rate[r], self.rate_error[r]))
            z = (self.rate[r] - self.joint_rate[r]) / self.rate_error[r]
            lines.append(f"  {self.q[r]:>10.4g}{d:>26}{g:>26}{self.joint_rate[r]:>16.4g}{z:>20.2f}")
        joint = " ± ".join(round_to_error(self.d_joint, self.d_joint_error))
        lines.append(f"  joint D(t) = {joint} Å²/s")
        if np.isfinite(self.slope):
            n = " ± ".join(round_to_error(self.slope, self.slope_error))
            lines.append(f"  Γ ∝ q^n: n = {n} (n = 2 for diffusion)")
        lines.append(
            f"  χ² of the rings' rates against the joint q² line: {self.chi2:.3g} for "
            f"{self.q.size} rings (≈ {self.q.size} if they share D(t))"
        )
        if not self.converged:
            lines.append("  WARNING: a ring fit did not converge (see ring_fits)")
        return "\n".join(lines)


def ring_consistency(
    joint: FitResult,
    data: ArrayLike,
    *,
    sigma: ArrayLike | None = None,
    options: FitOptions = FitOptions(),
) -> RingConsistency:
    """Fit each q ring of a joint fit alone and compare the rings with the joint fit.

    Every ring is fitted with the joint fit's mode, bounds, held parameters (at their joint
    values), scaling and frame mask, starting from the joint estimates. Its D(t) at the
    mid-window age and its relaxation rate Γ = q²·D are compared with the joint fit's; for
    diffusion the rates grow as q² (see `RingConsistency`).

    Args:
        joint: the `FitResult` of a model with q per bin (several rings).
        data: the data of that fit, (n_phi, N, N).
        sigma: the σ given to the joint fit (``None``: estimated per ring, as the joint fit did).
        options: how each ring is solved (`FitOptions`).

    Raises:
        ValueError: for a joint fit of one ring (nothing to compare), or data of another shape.
    """
    model = joint.model
    q_bins = np.asarray(model.q_per_bin)
    rings = np.unique(q_bins)
    if np.ndim(model.q) == 0 or rings.size < 2:
        raise ValueError(
            "ring_consistency compares the q rings of a joint fit; this fit has one ring."
        )
    data = np.asarray(data)
    if data.shape != (model.n_phi, model.n_frames, model.n_frames):
        raise ValueError(
            f"data must be the joint fit's, of shape {(model.n_phi, model.n_frames, model.n_frames)}"
            f"; got {data.shape}."
        )
    spec = _spec_of(joint)
    mask = np.asarray(joint.frame_mask)
    t = np.asarray(model.t)
    middle = t.size // 2
    d_joint, d_joint_sd = (v[middle] for v in rate_bands(joint)["D"])
    fits, d_ring, d_ring_sd = [], [], []
    for value in rings:
        bins = np.flatnonzero(q_bins == value)
        ring_model = HomodyneModel(
            q=float(value), dt=model.dt, t=model.t, phi=np.asarray(model.phi)[bins], L=model.L
        )
        ring_sigma = _ring_sigma(sigma, bins, model.n_phi)
        result = fit(
            ring_model,
            data[bins],
            sigma=ring_sigma,
            init=joint.params,
            spec=spec,
            options=options,
            frame_mask=None if mask.all() else mask,
        )
        value_d, sd_d = rate_bands(result)["D"]
        fits.append(result)
        d_ring.append(float(value_d[middle]))
        d_ring_sd.append(float(sd_d[middle]))
    d_ring, d_ring_sd = np.array(d_ring), np.array(d_ring_sd)
    rate, rate_sd = rings**2 * d_ring, rings**2 * d_ring_sd
    joint_rate, joint_rate_sd = rings**2 * float(d_joint), rings**2 * float(d_joint_sd)
    slope, slope_sd = _power_law_slope(rings, rate, rate_sd)
    return RingConsistency(
        q=rings,
        age=float(t[middle]),
        joint=joint,
        ring_fits=tuple(fits),
        rate=rate,
        rate_error=rate_sd,
        joint_rate=joint_rate,
        joint_rate_error=joint_rate_sd,
        d_ring=d_ring,
        d_ring_error=d_ring_sd,
        d_joint=float(d_joint),
        d_joint_error=float(d_joint_sd),
        slope=slope,
        slope_error=slope_sd,
        chi2=float(np.sum(((rate - joint_rate) / rate_sd) ** 2)),
        converged=all(bool(r.converged) for r in fits),
    )


def _spec_of(joint: FitResult) -> FitSpec:
    """The joint fit's spec, as far as a ring needs it: mode, resolved bounds of the free
    parameters, held parameters at their values, scaling."""
    p = joint.params
    free = [n for n in joint.names if n in p.names]
    lower, upper = np.asarray(joint.bounds_lower), np.asarray(joint.bounds_upper)
    bounds = {n: (float(lower[i]), float(upper[i])) for i, n in enumerate(p.names) if n in free}
    fixed = {n: float(getattr(p, n)) for n in p.names if n not in free}
    shared = "contrast" in joint.names
    return FitSpec(
        mode="laminar" if p.is_laminar_flow else "static",
        bounds=bounds,
        fixed=fixed,
        scaling="shared" if shared else "per_angle",
    )


def _ring_sigma(sigma, bins: np.ndarray, n_phi: int):
    if sigma is None or np.ndim(sigma) == 0:
        return sigma
    sigma = np.asarray(sigma)
    if sigma.shape[0] != n_phi:
        raise ValueError(
            f"sigma must be a scalar, one per bin or like the data; got {sigma.shape}."
        )
    return sigma[bins]


def _power_law_slope(q: np.ndarray, rate: np.ndarray, sd: np.ndarray) -> tuple[float, float]:
    """n and its standard error from weighted least squares of log Γ = log A + n·log q (weights
    from σ_log Γ = σ_Γ/Γ); the error scaled by the residual scatter when more than 2 rings."""
    if q.size < 2 or np.any(rate <= 0):
        return float("nan"), float("nan")
    x, y, w = np.log(q), np.log(rate), (rate / sd) ** 2
    design = np.stack([np.ones_like(x), x], axis=1)
    normal = design.T @ (w[:, None] * design)
    coef = np.linalg.solve(normal, design.T @ (w * y))
    variance = np.linalg.inv(normal)[1, 1]  # from the rings' own errors
    if q.size > 2:  # and no smaller than their scatter about the line says
        resid = y - design @ coef
        variance *= max(float(np.sum(w * resid**2)) / (q.size - 2), 1.0)
    return float(coef[1]), float(np.sqrt(variance))
