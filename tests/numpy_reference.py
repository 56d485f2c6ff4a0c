"""Independent NumPy oracle for the homodyne model.

Written directly from SPEC.md section 2 ("The model (exact numerical definition)"), in plain
float64 NumPy (no JAX, no SciPy), so that the test-suite can compare the JAX implementation against
a separate derivation. Angles are in degrees; ``dt`` enters only through the two prefactors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

RATE_FLOOR = 1e-10
G1_FLOOR = 1e-10
TIME_FLOOR_MIN = 1e-8
SMOOTH_ABS_EPS = 1e-12
SINC_SERIES_CUTOFF = 1e-4


def _floor(x: np.ndarray, floor: float) -> np.ndarray:
    """Value where x > floor, else floor."""
    return np.where(x > floor, x, floor)


def _check_params(params: Sequence[float]) -> np.ndarray:
    p = np.asarray(params, dtype=np.float64).ravel()
    if p.size not in (3, 7):
        raise ValueError(f"params must have 3 or 7 entries, got {p.size}")
    return p


def _per_angle(value: ArrayLike, n_phi: int) -> np.ndarray:
    """Scalar or length-n_phi contrast/offset, shaped (n_phi, 1, 1)."""
    v = np.asarray(value, dtype=np.float64).ravel()
    return np.broadcast_to(v, (n_phi,)).reshape(n_phi, 1, 1)


def time_floor(t: ArrayLike) -> np.ndarray:
    """Step 1: tau-tilde, the frame times floored at eps_t = max(|t1 - t0| / 2, 1e-8)."""
    t = np.asarray(t, dtype=np.float64).ravel()
    eps_t = TIME_FLOOR_MIN if t.size < 2 else max(abs(t[1] - t[0]) / 2.0, TIME_FLOOR_MIN)
    return _floor(t, eps_t)


def rates(params: Sequence[float], t: ArrayLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Step 2: (D_i, gammadot_i) on the grid, each floored at 1e-10; gammadot is None for 3 params."""
    p = _check_params(params)
    tau = time_floor(t)
    d = _floor(p[0] * tau ** p[1] + p[2], RATE_FLOOR)
    if p.size == 3:
        return d, None
    gdot = _floor(p[3] * tau ** p[4] + p[5], RATE_FLOOR)
    return d, gdot


def cumulative_steps(f: ArrayLike) -> np.ndarray:
    """Step 3: trapezoid cumulative integral in grid-step units, C_0 = 0 (explicit loop on purpose)."""
    f = np.asarray(f, dtype=np.float64).ravel()
    c = np.zeros(f.size, dtype=np.float64)
    running = 0.0
    for i in range(1, f.size):
        running += (f[i - 1] + f[i]) / 2.0
        c[i] = running
    return c


def pairwise(c: ArrayLike) -> np.ndarray:
    """Step 3: M_ij = sqrt((C_i - C_j)^2 + 1e-12), a smooth symmetric |C_i - C_j|."""
    c = np.asarray(c, dtype=np.float64).ravel()
    diff = c[:, None] - c[None, :]
    return np.sqrt(diff**2 + SMOOTH_ABS_EPS)


def sinc_unnormalised(x: ArrayLike) -> np.ndarray:
    """Step 6: sin(x)/x, with 1 - x^2/6 + x^4/120 where |x| < 1e-4."""
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < SINC_SERIES_CUTOFF
    safe_x = np.where(small, 1.0, x)
    series = 1.0 - x**2 / 6.0 + x**4 / 120.0
    return np.where(small, series, np.sin(safe_x) / safe_x)


def g1_diffusion(params: Sequence[float], t: ArrayLike, q: float, dt: float) -> np.ndarray:
    """Step 5: exp(clip(-0.5 q^2 dt * M^D, -700, 0)), shape (N, N). Uses params[:3] only."""
    p = _check_params(params)
    d, _ = rates(p[:3], t)
    prefactor = 0.5 * q**2 * dt
    return np.exp(np.clip(-prefactor * pairwise(cumulative_steps(d)), -700.0, 0.0))


def g1_shear(
    params: Sequence[float], t: ArrayLike, phi: ArrayLike, q: float, L: float, dt: float
) -> np.ndarray:
    """Step 6: sinc(Phi_kij)^2 with Phi = q L dt/(2 pi) cos(deg2rad(phi0 - phi_k)) M^gamma.

    Shape (n_phi, N, N); all ones for 3 (static) params.
    """
    p = _check_params(params)
    phi = np.asarray(phi, dtype=np.float64).ravel()
    n = np.asarray(t).size
    if p.size == 3:
        return np.ones((phi.size, n, n), dtype=np.float64)
    _, gdot = rates(p, t)
    m_gamma = pairwise(cumulative_steps(gdot))
    prefactor = q * L * dt / (2.0 * np.pi)
    cos_k = np.cos(np.deg2rad(p[6] - phi))
    phase = prefactor * cos_k[:, None, None] * m_gamma[None, :, :]
    return sinc_unnormalised(phase) ** 2


def g1_total(
    params: Sequence[float], t: ArrayLike, phi: ArrayLike, q: float, L: float, dt: float
) -> np.ndarray:
    """Step 7: g1_diff * g1_shear, floored at 1e-10. Shape (n_phi, N, N)."""
    product = g1_diffusion(params, t, q, dt)[None, :, :] * g1_shear(params, t, phi, q, L, dt)
    return _floor(product, G1_FLOOR)


def g2(
    params: Sequence[float],
    t: ArrayLike,
    phi: ArrayLike,
    q: float,
    L: float,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: float,
) -> np.ndarray:
    """Step 7: g2_kij = offset_k + contrast_k * g1_kij^2 (no clipping). Shape (n_phi, N, N)."""
    g1 = g1_total(params, t, phi, q, L, dt)
    n_phi = g1.shape[0]
    return _per_angle(offset, n_phi) + _per_angle(contrast, n_phi) * g1**2


def chi_squared(
    params: Sequence[float],
    data: ArrayLike,
    sigma: ArrayLike,
    t: ArrayLike,
    phi: ArrayLike,
    q: float,
    L: float,
    contrast: ArrayLike,
    offset: ArrayLike,
    dt: float,
) -> float:
    """sum(((data - g2) / sigma)^2) over all angles and grid points."""
    model = g2(params, t, phi, q, L, contrast, offset, dt)
    resid = (np.asarray(data, dtype=np.float64) - model) / np.asarray(sigma, dtype=np.float64)
    return float(np.sum(resid**2))
