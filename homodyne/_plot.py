"""Pictures of a fit (PNG, matplotlib): C2 heatmaps, g2 cuts at fixed lags, D(t) and γ̇(t).

Needs the optional matplotlib (``pip install 'homodyne[plot]'``); uses the non-interactive Agg
backend, so it works on a headless beamline computer.
"""

import os
import pathlib
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _kernels as k
from ._params import LaminarFlowParams
from ._result import FitResult, bound_flags, full_grid_too_large, round_to_error


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'homodyne[plot]'") from error
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def status_lines(result: FitResult) -> tuple[str, bool]:
    """The fit's status for a figure: "converged after 12 steps, reduced χ² 1.01" and any
    warning (not converged, parameters on or near a bound), and whether all is well."""
    text = (
        f"{'converged' if bool(result.converged) else 'NOT CONVERGED'} after "
        f"{int(result.n_steps)} steps, reduced χ² = {float(result.reduced_chi2):.3g}"
    )
    flagged = [
        f"{n} {f}" for n, f in zip(result.params.names, bound_flags(result), strict=True) if f
    ]
    if flagged:
        text += "\nWARNING: " + "; ".join(flagged) + " (widen the bounds and fit again)"
    return text, bool(result.converged) and not flagged


def _stamp(fig, result: FitResult, title: str) -> None:
    """Title the figure with what it shows and the fit's status (red when something is wrong)."""
    status, fine = status_lines(result)
    fig.suptitle(f"{title}\n{status}", color="black" if fine else "#b00020", fontsize=10)


def _q_text(result: FitResult) -> str:
    """ "q = 0.0054 Å⁻¹" for one ring, "3 q rings, 0.001–0.0025 Å⁻¹" for q per bin."""
    q = np.asarray(result.model.q)
    if q.ndim == 0:
        return f"q = {float(q):.4g} Å⁻¹"
    rings = np.unique(q)
    return f"{rings.size} q rings, {rings[0]:.4g}–{rings[-1]:.4g} Å⁻¹"


def _bin_title(result: FitResult, i: int) -> str:
    phi = float(np.asarray(result.model.phi)[i])
    if np.ndim(result.model.q) == 0:
        return f"φ = {phi:.1f}°"
    return f"q = {float(result.model.q_per_bin[i]):.4g} Å⁻¹, φ = {phi:.1f}°"


def _bin_panels(plt, n_bins: int, height: float):
    """A figure with one panel per bin, 3 to a row (unused panels hidden): (fig, [axes])."""
    cols = min(3, n_bins)
    rows = -(-n_bins // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5 * cols, height * rows + 0.6), squeeze=False, constrained_layout=True
    )
    flat = [axes[i // cols][i % cols] for i in range(rows * cols)]
    for ax in flat[n_bins:]:
        ax.set_visible(False)
    return fig, flat[:n_bins]


def _save(plt, fig, path: str | os.PathLike) -> pathlib.Path:
    target = pathlib.Path(path).with_suffix(".png")
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def file_tag(q: float, phi: float) -> str:
    """The q and φ of a bin as file-name text: ``q0.0054_phi45.0``."""
    return f"q{q:.4g}_phi{phi:.1f}"


def plot_c2(result: FitResult, data, path: str | os.PathLike) -> list[pathlib.Path]:
    """Per angle: measured C2, fitted g2 and normalised residual (data − fit)/σ as heatmaps on the
    sample's age (seconds), the diagonal (shot-noise excess, not fitted) masked, with labelled
    colour bars and the fit's status. Writes ``<path>_q<q>_phi<φ>.png`` per angle; returns the
    paths."""
    plt = _pyplot()
    data = np.array(data, dtype=float)
    fit = np.array(result.fitted_g2())
    residual = np.array(result.residuals(data))
    diagonal = np.eye(data.shape[-1], dtype=bool)
    for image in (data, fit, residual):
        image[..., diagonal] = np.nan  # not part of the fit: shown blank
    t = np.asarray(result.model.t)
    half = (
        (t[1] - t[0]) / 2 if t.size > 1 else float(result.model.dt) / 2
    )  # pixel centres on the frame times
    extent = (t[0] - half, t[-1] + half, t[0] - half, t[-1] + half)
    base = pathlib.Path(path)
    paths = []
    mask = np.asarray(result.frame_mask)
    used = mask[:, None] & mask[None, :]  # residuals are NaN elsewhere
    for i, phi in enumerate(np.asarray(result.model.phi)):
        off = ~np.eye(t.size, dtype=bool)
        lo, hi = np.nanpercentile(data[i][off & used], [1, 99])  # excluded frames: NaN or 0
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), constrained_layout=True)
        panels = [
            ("data", data[i], "viridis", (lo, hi), "C2"),
            ("fit", fit[i], "viridis", (lo, hi), "g2"),
        ]
        bound = max(float(np.nanpercentile(np.abs(residual[i][off & used]), 99)), 1e-12)
        panels.append(("residual", residual[i], "RdBu_r", (-bound, bound), "(data − fit)/σ"))
        for ax, (title, image, cmap, (vmin, vmax), label) in zip(axes, panels, strict=True):
            shown = ax.imshow(
                image,
                origin="lower",
                extent=extent,
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                interpolation="nearest",
            )
            ax.set_xlabel("sample age t₂ [s]")
            ax.set_ylabel("sample age t₁ [s]")
            ax.set_title(title)
            fig.colorbar(shown, ax=ax, shrink=0.85, label=label)
        q = float(result.model.q_per_bin[i])
        _stamp(fig, result, f"C2 at q = {q:.4g} Å⁻¹, φ = {phi:.1f}° (diagonal not fitted: blank)")
        target = base.with_name(f"{base.name}_{file_tag(q, float(phi))}.png")
        fig.savefig(target, dpi=110)
        plt.close(fig)
        paths.append(target)
    return paths


def plot_g2_cuts(result: FitResult, data, path: str | os.PathLike, lags=None) -> pathlib.Path:
    """g2(t, t + lag) against t for a few fixed lags: data as points, fit as lines, per angle."""
    plt = _pyplot()
    data = np.asarray(data)
    fit = np.asarray(result.fitted_g2())
    t = np.asarray(result.model.t)
    n = t.size
    if lags is None:
        lags = sorted({max(1, round(f * (n - 1))) for f in (0.01, 0.05, 0.2, 0.5)})
    fig, axes = _bin_panels(plt, result.model.n_phi, 3.6)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dt = float(result.model.dt)
    for i, ax in enumerate(axes):
        for j, lag in enumerate(lags):
            idx = np.arange(n - lag)
            color = colors[j % len(colors)]
            ax.plot(t[idx], data[i, idx, idx + lag], ".", ms=2, color=color, alpha=0.5)
            ax.plot(t[idx], fit[i, idx, idx + lag], "-", color=color, label=f"lag {lag * dt:.3g} s")
        ax.set_xlabel("sample age t₁ [s]")
        ax.set_ylabel("g2(t₁, t₁ + lag)")
        ax.set_title(_bin_title(result, i))
        ax.legend(fontsize=8)
    _stamp(fig, result, f"g2 at fixed lags against age, {_q_text(result)}"
           " (points: data, lines: fit)")  # fmt: skip
    return _save(plt, fig, path)


def aged_g2(
    values: np.ndarray, ages: int = 4, width: float = 0.05
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """g2 against lag at a few sample ages: C2(t_a, t_a + τ) averaged over a run of start frames
    a (``width`` of the frames, at least 1) around each age, for every lag τ ≥ 1 frame that the
    run leaves inside the window (NaN entries, e.g. of excluded frames, left out).

    Args:
        values: (n_phi, N, N) C2 or g2.

    Returns:
        The first frame of each run, (A,); the lags in frames, (N − 1,); the averages,
        (n_phi, A, N − 1), NaN where no pair is left.
    """
    n = values.shape[-1]
    run = max(1, round(width * n))
    starts = np.unique(np.linspace(0, max(n - 2 * run, 0), ages).round().astype(int))
    lags = np.arange(1, n)
    out = np.full((values.shape[0], starts.size, lags.size), np.nan)
    for a, first in enumerate(starts):
        rows = np.arange(first, min(first + run, n))
        cols = rows[:, None] + lags[None, :]  # (run, lags)
        inside = cols < n
        picked = values[:, rows[:, None], np.where(inside, cols, 0)]
        picked = np.where(inside[None], picked, np.nan)
        with warnings.catch_warnings():  # a lag with no pair left is NaN: wanted
            warnings.simplefilter("ignore", RuntimeWarning)
            out[:, a] = np.nanmean(picked, axis=1)
    return starts, lags, out


def plot_aged_g2(result: FitResult, data, path: str | os.PathLike) -> pathlib.Path:
    """g2 against log lag at several sample ages (the "aged g2" of two-time analysis): data as
    points, the fit as lines, one panel per angle. For a sample that ages, the curves move."""
    plt = _pyplot()
    mask = np.asarray(result.frame_mask)
    data = np.where(mask[:, None] & mask[None, :], np.asarray(data, dtype=float), np.nan)
    fit = np.asarray(result.fitted_g2())
    starts, lags, measured = aged_g2(data)
    _, _, model = aged_g2(fit)
    t = np.asarray(result.model.t)
    dt = float(result.model.dt)
    fig, axes = _bin_panels(plt, result.model.n_phi, 3.8)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, starts.size))
    run = max(1, round(0.05 * t.size))  # as in aged_g2: each age is the middle of its run
    for i, ax in enumerate(axes):
        for a, first in enumerate(starts):
            label = f"{t[min(first + run // 2, t.size - 1)]:.3g} s"
            ax.plot(lags * dt, measured[i, a], "o", ms=2.5, color=colors[a], alpha=0.6)
            ax.plot(lags * dt, model[i, a], "-", color=colors[a], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("lag τ [s]")
        ax.set_ylabel("g2(t, t + τ)")
        ax.set_title(_bin_title(result, i))
        ax.legend(fontsize=8, title="sample age t", title_fontsize=8)
    _stamp(fig, result, f"aged g2, {_q_text(result)} (points: data, "
           "averaged over 5 % of the frames from each age; lines: fit)")  # fmt: skip
    return _save(plt, fig, path)


def rate_bands(result: FitResult) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """D(t) [Å²/s] (and γ̇(t) [1/s]) on the frame times with their 1σ uncertainty, propagated
    linearly from the covariance of the free parameters (delta method)."""
    free_names = [n for n in result.names if n in result.params.names]
    index = tuple(result.params.names.index(n) for n in free_names)
    cov = np.asarray(result.covariance)[: len(index), : len(index)]
    values, sds = _rate_bands(result.model.t, result.params, index, cov)
    return {
        name: (np.asarray(value), np.asarray(sd))
        for name, value, sd in zip(("D", "gamma_dot"), values, sds, strict=False)
    }


_floored_times = jax.jit(k.floored_times)


@eqx.filter_jit  # one compilation per shape (eagerly, each small operation would compile alone)
def _rate_bands(t, params, index: tuple[int, ...], cov):
    t = k.floored_times(t)
    theta, ix = params.to_array(), np.array(index, dtype=int)

    def rates(x):
        p = type(params).from_array(theta.at[ix].set(x))
        d = k.power_law_rate(t, p.D0, p.alpha, p.D_offset)
        if isinstance(p, LaminarFlowParams):
            return d, k.power_law_rate(t, p.gamma_dot_t0, p.beta, p.gamma_dot_t_offset)
        return (d,)

    values = rates(theta[ix])
    jacobians = jax.jacfwd(rates)(theta[ix])
    sds = tuple(
        jnp.sqrt(jnp.maximum(jnp.einsum("ti,ij,tj->t", jac, cov, jac), 0.0)) for jac in jacobians
    )
    return values, sds


def plot_rates(result: FitResult, path: str | os.PathLike) -> pathlib.Path:
    """D(t), the relaxation time 1/(q²·D(t)) of g1² and, for laminar flow, γ̇(t), each with its
    1σ band, on log–log axes (the time axis on the floored frame times; linear axes for a rate
    that is not positive everywhere)."""
    plt = _pyplot()
    bands = rate_bands(result)
    t = np.asarray(_floored_times(result.model.t))
    d, d_sd = bands["D"]
    panels = [("D(t) [Å²/s]", [("±1σ", "C0", d, d_sd)])]
    # τ = 1/(q²D): g1² = exp(−q²∫D) falls by e within τ; its band by the same delta method. One
    # curve per q ring: τ ∝ 1/q² is what a diffusive sample shows
    rings = np.unique(np.asarray(result.model.q_per_bin))
    taus = []
    for j, q in enumerate(rings):
        tau = 1.0 / (q**2 * d)
        taus.append((f"q = {q:.4g} Å⁻¹", f"C{2 + j}", tau, tau * d_sd / np.abs(d)))
    panels.append(("relaxation time 1/(q²D(t)) [s]", taus))
    if "gamma_dot" in bands:
        panels.append(("γ̇(t) [1/s]", [("±1σ", "C1", *bands["gamma_dot"])]))
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False, constrained_layout=True
    )
    for ax, (label, curves) in zip(axes[0], panels, strict=True):
        low, high = np.inf, 0.0
        for name, color, value, sd in curves:
            ax.plot(t, value, color=color)
            ax.fill_between(t, value - sd, value + sd, color=color, alpha=0.3, label=name)
            low, high = min(low, float(np.min(value))), max(high, float(np.max(value)))
        if low > 0 and np.all(t > 0):
            ax.set_xscale("log")
            ax.set_yscale("log")
            # a band reaching zero or below would stretch the log axis: keep it to the curves' span
            ax.set_ylim(low / 3, high * 3)
        ax.set_xlabel("sample age t [s]")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    _stamp(fig, result, f"rates, {_q_text(result)} (bands: ±1σ from the fit's covariance)")
    return _save(plt, fig, path)


def plot_fit(
    result: FitResult, data, directory: str | os.PathLike, name: str = "fit"
) -> list[pathlib.Path]:
    """All pictures of a fit into ``directory``: C2 heatmaps per angle
    (``<name>_c2_q<q>_phi<φ>.png``), aged g2 (``<name>_g2_aged.png``), g2 at fixed lags
    (``<name>_g2_cuts.png``) and the rates (``<name>_rates.png``). Above
    `homodyne._result.FULL_GRID_LIMIT` values (n_phi × N², e.g. 23 bins × 10,000 frames) only
    the rates, with a warning: the others build full (n_phi, N, N) grids."""
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    too_large = full_grid_too_large(result)
    if too_large:
        warnings.warn(
            f"plot_fit draws only the rates: the C2 heatmaps and g2 plots need {too_large}.",
            stacklevel=2,
        )
        return [plot_rates(result, out / f"{name}_rates")]
    paths = plot_c2(result, data, out / f"{name}_c2")
    paths.append(plot_aged_g2(result, data, out / f"{name}_g2_aged"))
    paths.append(plot_g2_cuts(result, data, out / f"{name}_g2_cuts"))
    paths.append(plot_rates(result, out / f"{name}_rates"))
    return paths


def plot_rings(consistency, path: str | os.PathLike) -> pathlib.Path:
    """The q rings of a joint fit (a `homodyne.RingConsistency`): each ring's relaxation rate
    Γ = q²·D at the mid-window age against q, with the joint fit's q² line (log–log: diffusion is
    a line of slope 2), and each ring's D(t) beside the joint D(t)."""
    plt = _pyplot()
    c = consistency
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    left.errorbar(c.q, c.rate, yerr=c.rate_error, fmt="o", color="C0", label="each ring alone")
    grid = np.geomspace(c.q[0] / 1.3, c.q[-1] * 1.3, 50)
    left.plot(grid, grid**2 * c.d_joint, "-", color="C1", label="joint fit: q²·D")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("q [Å⁻¹]")
    left.set_ylabel(f"relaxation rate Γ = q²D at t = {c.age:.3g} s [1/s]")
    if np.isfinite(c.slope):
        slope = " ± ".join(round_to_error(c.slope, c.slope_error))
        left.set_title(f"Γ ∝ q^n: n = {slope} (2 for diffusion)", fontsize=10)
    left.legend(fontsize=8)
    for j, ring in enumerate(c.ring_fits):
        t = np.asarray(_floored_times(ring.model.t))
        value, sd = rate_bands(ring)["D"]
        color = f"C{2 + j}"
        right.plot(t, value, color=color, label=f"q = {c.q[j]:.4g} Å⁻¹ alone")
        right.fill_between(t, value - sd, value + sd, color=color, alpha=0.2)
    t = np.asarray(_floored_times(c.joint.model.t))
    value, sd = rate_bands(c.joint)["D"]
    right.plot(t, value, "--", color="black", label="joint fit")
    right.fill_between(t, value - sd, value + sd, color="black", alpha=0.15)
    right.set_xlabel("sample age t [s]")
    right.set_ylabel("D(t) [Å²/s]")
    right.set_xscale("log")
    right.legend(fontsize=8)
    fine = c.converged and c.chi2 < 4 * c.q.size
    fig.suptitle(
        f"q rings against the joint fit: χ² = {c.chi2:.3g} for {c.q.size} rings"
        + ("" if c.converged else "\nWARNING: a ring fit did not converge"),
        color="black" if fine else "#b00020",
        fontsize=10,
    )
    return _save(plt, fig, path)
