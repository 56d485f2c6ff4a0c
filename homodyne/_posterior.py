"""`Posterior`: draws of the physical parameters from `homodyne.sample`, with their diagnostics."""

from typing import final

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._diagnostics import ESS_LIMIT, KHAT_LIMIT, RHAT_LIMIT
from ._params import LaminarFlowParams, Params, StaticParams
from ._result import FitResult, JointFitResult, round_to_error

_UNITS = dict(zip(LaminarFlowParams.names, LaminarFlowParams.units, strict=True))


@final
class Posterior(eqx.Module):
    """Draws from the posterior of the physical parameters (contrast and offset integrated out)
    and how far they can be trusted.

    Attributes:
        names: the sampled parameters (the fit's free physical parameters; in a joint fit a
            per-run one is ``"D_offset[run 1]"``).
        values: the draws, (chains, draws, G), in physical units, in the order of ``names``.
        weights: importance weights of the draws, (chains, draws), summing to 1: Pareto-smoothed
            p/q for ``method="laplace"`` (use them for expectations under the posterior itself),
            equal for NUTS.
        rhat, ess_bulk, ess_tail: per parameter (G,): rank-normalised split R̂ and the bulk and
            tail effective sample sizes (`homodyne._diagnostics`).
        divergences: divergent NUTS transitions per chain (chains,) (0 for Laplace).
        leapfrog_steps: mean leapfrog steps (log-likelihood gradients) per draw (NUTS).
        step_size: the adapted NUTS step size of each chain (chains,) (in units of the metric).
        acceptance: mean acceptance statistic of each chain (chains,).
        khat: Pareto k̂ of the importance weights of the Laplace approximation (NaN for NUTS;
            above 0.7 the approximation is not to be trusted).
        ess_importance: the importance-sampling ESS 1/Σw² of those weights (Laplace).
        mode: the posterior mode found by Newton's method (G,), physical units.
        adjustment: the curvature adjustment C (G, G) of the likelihood in the sampler's
            coordinates (identity with ``adjust=False``; see `homodyne.sample`).
        fit: the least-squares fit the sampler started from (`FitResult` or `JointFitResult`).
        seconds: wall time of the sampling (fit excluded), s.
        method: ``"nuts"`` or ``"laplace"``.
        prior: a line per parameter saying its prior, e.g. ``"D0: log-uniform on [100, 1e+05]"``.
        adjusted: whether the likelihood was adjusted for correlated C2 errors.
        warnings: the diagnostics that failed, in words (empty when all passed); each was also
            issued as a Python warning.
    """

    values: Float[Array, "chains draws G"]
    weights: Float[Array, "chains draws"]
    rhat: Float[Array, " G"]
    ess_bulk: Float[Array, " G"]
    ess_tail: Float[Array, " G"]
    divergences: Int[Array, " chains"]
    leapfrog_steps: Float[Array, ""]
    step_size: Float[Array, " chains"]
    acceptance: Float[Array, " chains"]
    khat: Float[Array, ""]
    ess_importance: Float[Array, ""]
    mode: Float[Array, " G"]
    adjustment: Float[Array, "G G"]
    fit: FitResult | JointFitResult
    seconds: float
    names: tuple[str, ...] = eqx.field(static=True)
    method: str = eqx.field(static=True)
    prior: tuple[str, ...] = eqx.field(static=True)
    adjusted: bool = eqx.field(static=True)
    warnings: tuple[str, ...] = eqx.field(static=True)

    @property
    def ok(self) -> bool:
        """Whether every diagnostic passed."""
        return not self.warnings

    @property
    def num_chains(self) -> int:
        return int(self.values.shape[0])

    @property
    def num_draws(self) -> int:
        return int(self.values.shape[1])

    def __getitem__(self, name: str) -> Float[Array, "chains draws"]:
        """The draws of one parameter, (chains, draws)."""
        if name not in self.names:
            raise KeyError(
                f"{name!r} was not sampled; the sampled parameters are {list(self.names)}."
            )
        return self.values[..., self.names.index(name)]

    @property
    def draws(self) -> Params | tuple[Params, ...]:
        """The draws as typed parameters (`StaticParams` or `LaminarFlowParams`), each field
        (chains, draws); held parameters repeat their value. One run: one; a joint fit: one
        per run (shared parameters are the same draws in each)."""
        runs = self.fit.runs if isinstance(self.fit, JointFitResult) else (self.fit,)
        out = []
        for r, run in enumerate(runs):
            cls = LaminarFlowParams if run.params.is_laminar_flow else StaticParams
            fields = []
            for name in cls.names:
                label = f"{name}[run {r}]" if f"{name}[run {r}]" in self.names else name
                if label in self.names:
                    fields.append(self[label])
                else:
                    fields.append(jnp.full(self.values.shape[:2], getattr(run.params, name)))
            out.append(cls(*fields))
        return out[0] if len(out) == 1 else tuple(out)

    @property
    def covariance(self) -> Float[Array, "G G"]:
        """Posterior covariance of the sampled parameters from the (weighted) draws."""
        x = np.asarray(self.values).reshape(-1, len(self.names))
        w = np.asarray(self.weights).reshape(-1)
        mean = w @ x
        return jnp.asarray(((x - mean) * w[:, None]).T @ (x - mean))

    def summary(self) -> dict[str, dict[str, float]]:
        """Per parameter: mean, sd, median, the 2.5 % and 97.5 % quantiles (weighted by
        ``weights``), R̂, bulk and tail ESS."""
        x = np.asarray(self.values).reshape(-1, len(self.names))
        w = np.asarray(self.weights).reshape(-1)
        out = {}
        for i, name in enumerate(self.names):
            order = np.argsort(x[:, i])
            cdf = np.cumsum(w[order])
            q = np.interp([0.025, 0.5, 0.975], cdf - 0.5 * w[order], x[order, i])
            mean = float(w @ x[:, i])
            out[name] = {
                "mean": mean,
                "sd": float(np.sqrt(w @ (x[:, i] - mean) ** 2)),
                "median": float(q[1]),
                "q2.5": float(q[0]),
                "q97.5": float(q[2]),
                "rhat": float(self.rhat[i]),
                "ess_bulk": float(self.ess_bulk[i]),
                "ess_tail": float(self.ess_tail[i]),
            }
        return out

    def print(self) -> None:
        print(self)

    def __str__(self) -> str:
        return format_posterior(self)

    def to_arviz(self):
        """The draws as an ArviZ ``InferenceData``: its posterior group holds one variable per
        parameter, (chain, draw), and its attributes the method, prior and adjustment. (The
        Laplace draws are the Gaussian's, unweighted: ``weights`` are not carried over.) Needs
        ArviZ (``pip install "homodyne[sample]"``)."""
        try:
            import arviz as az  # pyright: ignore[reportMissingImports]
        except ImportError:
            raise ImportError(
                "Posterior.to_arviz needs ArviZ: pip install arviz (or homodyne[sample])."
            ) from None
        posterior = {name: np.asarray(self[name]) for name in self.names}
        attrs = {"method": self.method, "prior": list(self.prior), "adjusted": self.adjusted}
        return az.from_dict(posterior=posterior, attrs=attrs)


def format_posterior(p: Posterior) -> str:
    fit = p.fit
    runs = fit.runs if isinstance(fit, JointFitResult) else (fit,)
    laminar = runs[0].params.is_laminar_flow
    head = (
        f"homodyne posterior ({'laminar flow' if laminar else 'static'}, {p.method}): "
        f"{p.num_chains} chains × {p.num_draws} draws in {p.seconds:.1f} s"
    )
    lines = [head]
    if p.method == "nuts":
        lines.append(
            f"  NUTS: {float(p.leapfrog_steps):.1f} leapfrog steps per draw, step size "
            f"{', '.join(f'{float(s):.3g}' for s in np.asarray(p.step_size))}, divergences "
            f"{int(np.sum(np.asarray(p.divergences)))}"
        )
    else:
        lines.append(
            f"  Laplace at the posterior mode, checked by importance sampling: Pareto k̂ = "
            f"{float(p.khat):.2f} (≤ {KHAT_LIMIT} to trust), importance ESS = "
            f"{float(p.ess_importance):.0f}"
        )
    lines.append(
        "  likelihood: contrast and offset integrated out per bin; "
        + (
            "adjusted for correlated C2 errors (its curvature matches the fit's error covariance)"
            if p.adjusted
            else "C2 elements taken as independent (adjust=False)"
        )
    )
    lines.append("  prior: " + "; ".join(p.prior))
    for w in p.warnings:
        lines.append(f"  WARNING: {w}")
    lines += [
        "",
        f"  {'parameter':<20}{'mean':>13}{'sd':>11}{'2.5%':>13}{'97.5%':>13}{'R-hat':>8}"
        f"{'ESS bulk':>10}{'ESS tail':>10}  unit",
    ]
    for name, s in p.summary().items():
        mean, sd = round_to_error(s["mean"], s["sd"])
        lo, _ = round_to_error(s["q2.5"], s["sd"])
        hi, _ = round_to_error(s["q97.5"], s["sd"])
        unit = _UNITS.get(name.split("[run ")[0], "")
        lines.append(
            f"  {name:<20}{mean:>13}{sd:>11}{lo:>13}{hi:>13}{s['rhat']:>8.3f}"
            f"{s['ess_bulk']:>10.0f}{s['ess_tail']:>10.0f}  {unit}"
        )
    return "\n".join(lines)


def diagnostic_warnings(
    names: tuple[str, ...], rhat, ess_bulk, divergences, khat, method: str, fit
) -> tuple[str, ...]:
    """The diagnostics that failed, in words."""
    out = []
    rhat, ess_bulk = np.asarray(rhat), np.asarray(ess_bulk)
    bad = [f"{n} {r:.3f}" for n, r in zip(names, rhat, strict=True) if not r <= RHAT_LIMIT]
    if bad and method == "nuts":
        out.append(f"R-hat above {RHAT_LIMIT}: {', '.join(bad)}; draw more (num_draws)")
    low = [f"{n} {e:.0f}" for n, e in zip(names, ess_bulk, strict=True) if not e >= ESS_LIMIT]
    if low and method == "nuts":
        out.append(f"bulk ESS below {ESS_LIMIT}: {', '.join(low)}; draw more (num_draws)")
    n_div = int(np.sum(np.asarray(divergences)))
    if n_div:
        out.append(
            f"{n_div} divergent transitions: the posterior has regions the sampler cannot "
            "follow; its draws may be biased"
        )
    if method == "laplace" and not float(khat) <= KHAT_LIMIT:
        out.append(
            f"Pareto k̂ = {float(khat):.2f} > {KHAT_LIMIT}: the posterior is not close to the "
            "Laplace (Gaussian) approximation; use method='nuts'"
        )
    runs = fit.runs if isinstance(fit, JointFitResult) else (fit,)
    if not bool(np.asarray(fit.converged)):
        out.append("the fit it started from did not converge")
    at = [
        n for r in runs for n, a in zip(r.params.names, np.asarray(r.near_bound), strict=True) if a
    ]
    if at:
        out.append(
            f"{', '.join(sorted(set(at)))} on or near a bound: the prior's support cuts the "
            "posterior there; widen the bounds (FitSpec(bounds=...))"
        )
    if not all(bool(np.asarray(r.correlation_resolved)) for r in runs):
        out.append(
            "the window holds fewer than 8 correlation times: the error covariance the adjustment rests "
            "on cannot see the correlation, and on detector data the widths are too small"
        )
    return tuple(out)
