"""Pictures of a posterior (`homodyne.sample`): corner plot, traces, D(t) and γ̇(t) with credible
bands. Each takes a `Posterior` and a path (".png" appended) and returns the file written."""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from . import _kernels as k
from ._likelihood import conditional_scaling
from ._pairs import at_frames, g1_squared_on_pairs, profiles
from ._params import LaminarFlowParams
from ._plot import _bin_panels, _bin_title, _pyplot, _save
from ._posterior import _UNITS, Posterior
from ._precision import as_data
from ._result import JointFitResult

MAX_POINTS = 2000  # draws shown in a scatter panel or used for the bands (evenly thinned)
PREDICTIVE_DRAWS = 200  # draws whose g2 the predictive cuts show (each costs a pass over the data)


def _title(post: Posterior, what: str) -> str:
    state = "all diagnostics passed" if post.ok else "WARNING: " + "; ".join(post.warnings)
    return f"{what} ({post.method}, {post.num_chains} chains × {post.num_draws} draws)\n{state}"


def _thinned(post: Posterior) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(post.values).reshape(-1, len(post.names))
    w = np.asarray(post.weights).reshape(-1)
    step = max(1, x.shape[0] // MAX_POINTS)
    return x[::step], w[::step] / np.sum(w[::step])


def _label(name: str) -> str:
    unit = _UNITS.get(name.split("[run ")[0], "")
    return f"{name} [{unit}]" if unit else name


def plot_corner(post: Posterior, path: str | os.PathLike) -> pathlib.Path:
    """Every pair of sampled parameters: the draws (weighted histograms on the diagonal, points
    below it), the posterior mean (line) and the fit's estimate (×)."""
    plt = _pyplot()
    x, w = _thinned(post)
    g = len(post.names)
    fit = post.fit.runs[0] if isinstance(post.fit, JointFitResult) else post.fit
    estimate = {n: float(getattr(fit.params, n)) for n in fit.params.names}
    fig, axes = plt.subplots(g, g, figsize=(2.2 * g + 1, 2.2 * g + 1), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    mean = w @ x
    for i in range(g):
        for j in range(g):
            ax = axes[i][j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                ax.hist(x[:, i], bins=40, weights=w, color="C0", alpha=0.7)
                ax.axvline(mean[i], color="k", lw=1)
                ax.set_yticks([])
            else:
                ax.scatter(x[:, j], x[:, i], s=2, alpha=0.3, color="C0", rasterized=True)
            base_j = post.names[j].split("[run ")[0]
            if base_j in estimate:
                ax.axvline(estimate[base_j], color="C3", lw=0.8, ls=":")
            if i != j and post.names[i].split("[run ")[0] in estimate:
                ax.plot(estimate.get(base_j, np.nan), estimate[post.names[i].split("[run ")[0]],
                        "x", color="C3")  # fmt: skip
            if i == g - 1:
                ax.set_xlabel(_label(post.names[j]), fontsize=8)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(_label(post.names[i]), fontsize=8)
            elif j > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=7)
    fig.suptitle(_title(post, "posterior (red: least-squares fit)"), fontsize=10,
                 color="black" if post.ok else "#b00020")  # fmt: skip
    return _save(plt, fig, path)


def plot_traces(post: Posterior, path: str | os.PathLike) -> pathlib.Path:
    """Each parameter's draws against the draw number, one line per chain, with R-hat and the
    bulk ESS: chains that wander apart or stick show here first."""
    plt = _pyplot()
    g = len(post.names)
    values = np.asarray(post.values)
    fig, axes = plt.subplots(g, 1, figsize=(9, 1.6 * g + 0.8), squeeze=False,
                             constrained_layout=True, sharex=True)  # fmt: skip
    for i, name in enumerate(post.names):
        ax = axes[i][0]
        for c in range(values.shape[0]):
            ax.plot(values[c, :, i], lw=0.5, alpha=0.8)
        ax.set_ylabel(name, fontsize=8)
        ax.set_title(
            f"R-hat {float(post.rhat[i]):.3f}, bulk ESS {float(post.ess_bulk[i]):.0f}",
            fontsize=8, loc="right",
        )  # fmt: skip
        ax.tick_params(labelsize=7)
    axes[-1][0].set_xlabel("draw")
    fig.suptitle(_title(post, "traces"), fontsize=10, color="black" if post.ok else "#b00020")
    return _save(plt, fig, path)


def rate_draws(post: Posterior, run: int = 0) -> dict[str, np.ndarray]:
    """D(t) [Å²/s] (and γ̇(t) [1/s]) of (thinned) draws on run ``run``'s frame times:
    ``{"t": (N,), "D": (S, N), "gamma_dot": (S, N)}``."""
    draws = post.draws
    params = draws[run] if isinstance(draws, tuple) else draws
    fit = post.fit.runs[run] if isinstance(post.fit, JointFitResult) else post.fit
    t = k.floored_times(fit.model.t)
    step = max(1, post.num_chains * post.num_draws // MAX_POINTS)
    flat = jax.tree.map(lambda v: jnp.reshape(v, (-1,))[::step], params)

    def one(p):
        d = k.power_law_rate(t, p.D0, p.alpha, p.D_offset)
        if isinstance(p, LaminarFlowParams):
            return d, k.power_law_rate(t, p.gamma_dot_t0, p.beta, p.gamma_dot_t_offset)
        return (d,)

    rates = jax.vmap(one)(flat)
    out = {"t": np.asarray(t), "D": np.asarray(rates[0])}
    if len(rates) > 1:
        out["gamma_dot"] = np.asarray(rates[1])
    return out


def plot_posterior_rates(post: Posterior, path: str | os.PathLike, run: int = 0) -> pathlib.Path:
    """D(t) and, for laminar flow, γ̇(t): the posterior median with 68 % and 95 % credible bands
    (pointwise quantiles of the draws' curves), and the fit's curve."""
    plt = _pyplot()
    rates = rate_draws(post, run)
    t = rates["t"]
    fit = post.fit.runs[run] if isinstance(post.fit, JointFitResult) else post.fit
    p = fit.params
    fitted = {"D": np.asarray(k.power_law_rate(jnp.asarray(t), p.D0, p.alpha, p.D_offset))}
    if isinstance(p, LaminarFlowParams):
        fitted["gamma_dot"] = np.asarray(
            k.power_law_rate(jnp.asarray(t), p.gamma_dot_t0, p.beta, p.gamma_dot_t_offset)
        )
    panels = [("D", "D(t) [Å²/s]", "C0")] + (
        [("gamma_dot", "γ̇(t) [1/s]", "C1")] if "gamma_dot" in rates else []
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.2), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    for ax, (key, label, color) in zip(axes[0], panels, strict=True):
        q = np.quantile(rates[key], [0.025, 0.16, 0.5, 0.84, 0.975], axis=0)
        ax.fill_between(t, q[0], q[4], color=color, alpha=0.2, label="95 %")
        ax.fill_between(t, q[1], q[3], color=color, alpha=0.4, label="68 %")
        ax.plot(t, q[2], color=color, label="posterior median")
        ax.plot(t, fitted[key], color="k", ls=":", lw=1, label="least-squares fit")
        if np.all(q[0] > 0) and np.all(t > 0):
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("sample age t [s]")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(_title(post, "rates with credible bands"), fontsize=10,
                 color="black" if post.ok else "#b00020")  # fmt: skip
    return _save(plt, fig, path)


def predictive_cuts(
    post: Posterior, data, lags, run: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """g2(t, t + lag) of up to PREDICTIVE_DRAWS (evenly thinned) posterior draws of run ``run``,
    each with its own least-squares contrast and offset per bin (the conditional posterior's
    centre: contrast and offset are integrated out, not sampled), at each lag of ``lags``
    (frames): (S, n_phi, P) over the pairs of every lag in turn, and the first frames of each
    lag's pairs."""
    fit = post.fit.runs[run] if isinstance(post.fit, JointFitResult) else post.fit
    draws = post.draws
    params = draws[run] if isinstance(draws, tuple) else draws
    model = fit.model
    n, n_phi = model.n_frames, model.n_phi
    step = max(1, post.num_chains * post.num_draws // PREDICTIVE_DRAWS)
    flat = jax.tree.map(lambda v: jnp.reshape(v, (-1,))[::step], params)
    firsts = [np.arange(n - lag) for lag in lags]
    rows = jnp.asarray(np.concatenate(firsts))
    cols = jnp.asarray(np.concatenate([f + lag for f, lag in zip(firsts, lags, strict=True)]))
    values = as_data(jnp.reshape(jnp.asarray(data), (n_phi, n, n)))
    sigma = jnp.asarray(fit.sigma, float)
    sigma = jnp.reshape(sigma, (-1, 1, 1)) if sigma.ndim <= 1 else sigma
    shared = "contrast" in fit.names

    def one(p):
        c, b = conditional_scaling(
            model, p, values, sigma, fit.contrast, fit.offset, fit.frame_mask, shared
        )
        prof = profiles(model.t, model.phi, model.sinc_prefactor, p)
        a = model.wavevector_q_squared_half_dt
        x = g1_squared_on_pairs(a, n_phi, at_frames(prof, rows), at_frames(prof, cols))
        return b[:, None] + c[:, None] * x

    return np.asarray(jax.jit(lambda f: jax.lax.map(one, f))(flat)), firsts


def plot_predictive_cuts(
    post: Posterior, data, path: str | os.PathLike, lags=None, run: int = 0
) -> pathlib.Path:
    """g2(t, t + lag) against t for a few fixed lags, per bin: the data as points and the
    posterior's g2 (median and 95 % band over draws, `predictive_cuts`) as lines and bands."""
    plt = _pyplot()
    fit = post.fit.runs[run] if isinstance(post.fit, JointFitResult) else post.fit
    t = np.asarray(fit.model.t)
    n = t.size
    if lags is None:
        lags = sorted({max(1, round(f * (n - 1))) for f in (0.01, 0.05, 0.2, 0.5)})
    curves, firsts = predictive_cuts(post, data, lags, run)
    values = np.asarray(data, dtype=float).reshape(fit.model.n_phi, n, n)
    used = np.asarray(fit.frame_mask)
    fig, axes = _bin_panels(plt, fit.model.n_phi, 3.6)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dt = float(fit.model.dt)
    for i, ax in enumerate(axes):
        start = 0
        for j, (lag, first) in enumerate(zip(lags, firsts, strict=True)):
            color = colors[j % len(colors)]
            piece = curves[:, i, start : start + first.size]
            start += first.size
            keep = used[first] & used[first + lag]
            ax.plot(t[first][keep], values[i, first, first + lag][keep], ".", ms=2, color=color,
                    alpha=0.5)  # fmt: skip
            low, mid, high = np.quantile(piece, [0.025, 0.5, 0.975], axis=0)
            ax.fill_between(t[first], low, high, color=color, alpha=0.3)
            ax.plot(t[first], mid, "-", color=color, lw=1, label=f"lag {lag * dt:.3g} s")
        ax.set_xlabel("sample age t₁ [s]")
        ax.set_ylabel("g2(t₁, t₁ + lag)")
        ax.set_title(_bin_title(fit, i))
        ax.legend(fontsize=8)
    fig.suptitle(_title(post, "g2 at fixed lags: data (points), posterior median and 95 % band"),
                 fontsize=10, color="black" if post.ok else "#b00020")  # fmt: skip
    return _save(plt, fig, path)
