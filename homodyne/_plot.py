"""Pictures of a fit (PNG, matplotlib): C2 heatmaps, g2 cuts at fixed lags, D(t) and γ̇(t).

Needs the optional matplotlib (``pip install 'homodyne[plot]'``); uses the non-interactive Agg
backend, so it works on a headless beamline computer.
"""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from . import _kernels as k
from ._params import LaminarFlowParams
from ._result import FitResult


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'homodyne[plot]'") from error
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_c2(result: FitResult, data, path: str | os.PathLike) -> list[pathlib.Path]:
    """Per angle: measured C2, fitted g2 and normalised residual (data − fit)/σ as heatmaps with
    time axes in seconds. Writes ``<path>_phi<k>.png`` for angle k; returns the paths."""
    plt = _pyplot()
    data = np.asarray(data)
    fit = np.asarray(result.fitted_g2())
    residual = np.asarray(result.residuals(data))
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
            ("data C2", data[i], "viridis", (lo, hi)),
            ("fit g2", fit[i], "viridis", (lo, hi)),
        ]
        bound = max(float(np.percentile(np.abs(residual[i][off & used]), 99)), 1e-12)
        panels.append(("residual (data − fit)/σ", residual[i], "RdBu_r", (-bound, bound)))
        for ax, (title, image, cmap, (vmin, vmax)) in zip(axes, panels, strict=True):
            shown = ax.imshow(
                image,
                origin="lower",
                extent=extent,
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                interpolation="nearest",
            )
            ax.set_xlabel("t₂ [s]")
            ax.set_ylabel("t₁ [s]")
            ax.set_title(title)
            fig.colorbar(shown, ax=ax, shrink=0.85)
        fig.suptitle(f"q = {float(result.model.q):.4g} Å⁻¹, φ = {phi:g}°")
        target = base.with_name(f"{base.name}_phi{i}.png")
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
    phis = np.asarray(result.model.phi)
    cols = min(3, phis.size)
    rows = -(-phis.size // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False, constrained_layout=True
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dt = float(result.model.dt)
    for i, phi in enumerate(phis):
        ax = axes[i // cols][i % cols]
        for j, lag in enumerate(lags):
            idx = np.arange(n - lag)
            color = colors[j % len(colors)]
            ax.plot(t[idx], data[i, idx, idx + lag], ".", ms=2, color=color, alpha=0.5)
            ax.plot(t[idx], fit[i, idx, idx + lag], "-", color=color, label=f"lag {lag * dt:.3g} s")
        ax.set_xlabel("t₁ [s]")
        ax.set_ylabel("g2(t₁, t₁ + lag)")
        ax.set_title(f"φ = {phi:g}°")
        ax.legend(fontsize=8)
    for j in range(phis.size, rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    target = pathlib.Path(path).with_suffix(".png")
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def rate_bands(result: FitResult) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """D(t) [Å²/s] (and γ̇(t) [1/s]) on the frame times with their 1σ uncertainty, propagated
    linearly from the covariance of the free parameters (delta method)."""
    t = k.floored_times(result.model.t)
    theta = result.params.to_array()
    free_names = [n for n in result.names if n in result.params.names]
    index = np.array([result.params.names.index(n) for n in free_names], dtype=int)
    cov = jnp.asarray(result.covariance)[: index.size, : index.size]

    def rates(x):
        p = type(result.params).from_array(theta.at[index].set(x))
        d = k.power_law_rate(t, p.D0, p.alpha, p.D_offset)
        if isinstance(p, LaminarFlowParams):
            return d, k.power_law_rate(t, p.gamma_dot_t0, p.beta, p.gamma_dot_t_offset)
        return (d,)

    values = rates(theta[index])
    jacobians = jax.jacfwd(rates)(theta[index])
    out = {}
    for name, value, jac in zip(("D", "gamma_dot"), values, jacobians, strict=False):
        sd = jnp.sqrt(jnp.maximum(jnp.einsum("ti,ij,tj->t", jac, cov, jac), 0.0))
        out[name] = (np.asarray(value), np.asarray(sd))
    return out


def plot_rates(result: FitResult, path: str | os.PathLike) -> pathlib.Path:
    """D(t) and, for laminar flow, γ̇(t) with 1σ bands."""
    plt = _pyplot()
    bands = rate_bands(result)
    t = np.asarray(result.model.t)
    fig, axes = plt.subplots(
        1, len(bands), figsize=(6 * len(bands), 4), squeeze=False, constrained_layout=True
    )
    labels = {"D": ("D(t) [Å²/s]", "C0"), "gamma_dot": ("γ̇(t) [1/s]", "C1")}
    for ax, (name, (value, sd)) in zip(axes[0], bands.items(), strict=True):
        label, color = labels[name]
        ax.plot(t, value, color=color)
        ax.fill_between(t, value - sd, value + sd, color=color, alpha=0.3, label="±1σ")
        ax.set_xlabel("t [s]")
        ax.set_ylabel(label)
        ax.legend()
    target = pathlib.Path(path).with_suffix(".png")
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def plot_fit(
    result: FitResult, data, directory: str | os.PathLike, name: str = "fit"
) -> list[pathlib.Path]:
    """All pictures of a fit into ``directory``: C2 heatmaps per angle, g2 cuts, rates."""
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = plot_c2(result, data, out / f"{name}_c2")
    paths.append(plot_g2_cuts(result, data, out / f"{name}_g2_cuts"))
    paths.append(plot_rates(result, out / f"{name}_rates"))
    return paths
