"""χ² in symmetric tiles against the dense sum over the full model array."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from homodyne import HomodyneModel, LaminarFlowParams, StaticParams
from homodyne import _chi2 as chi2_module

PARAMS = LaminarFlowParams(1.2e4, -0.5, 50.0, 2e-2, 0.4, 2e-3, 4.0)


def setup(static=False):
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=13, phi=[0.0, 50.0], L=2e6, t0=0.5)
    p = StaticParams(1.2e4, -0.5, 50.0) if static else PARAMS
    g2 = np.asarray(model.g2(p, np.array([0.3, 0.25]), np.array([1.0, 1.01])))
    data = g2 + np.random.default_rng(3).normal(scale=1e-3, size=g2.shape)
    return model, p, g2, data


def blocked(model, p, data, sigma):
    return chi2_module.chi2_in_tiles(
        model.wavevector_q_squared_half_dt,
        model.sinc_prefactor,
        model.t,
        model.phi,
        p,
        jnp.array([0.3, 0.25]),
        jnp.array([1.0, 1.01]),
        jnp.asarray(data),
        jnp.asarray(sigma),
    )


# tile sides 3 (5 blocks, the last shifted back), 7 (2 blocks, overlapping), 13 (one tile)
@pytest.mark.parametrize("side", [3, 7, 13])
@pytest.mark.parametrize("sigma_shape", ["scalar", "per_angle", "per_column", "grid", "full"])
def test_tiles_sum_to_the_dense_chi2(monkeypatch, side, sigma_shape):
    """Asymmetric data and σ: the tiles below the diagonal are read, not assumed."""
    monkeypatch.setattr(chi2_module, "TILE_ELEMENTS", 2 * side * side)
    for static in (False, True):
        model, p, g2, data = setup(static)
        sigma = {
            "scalar": 2e-3,
            "per_angle": np.array([1e-3, 3e-3])[:, None, None],
            "per_column": np.linspace(1e-3, 2e-3, 13),  # broadcasts along t2
            "grid": np.random.default_rng(5).uniform(1e-3, 2e-3, (13, 13)),
            "full": np.random.default_rng(4).uniform(1e-3, 2e-3, data.shape),
        }[sigma_shape]
        want = np.sum(((data - g2) / sigma) ** 2)
        got = jax.jit(blocked)(model, p, data, sigma)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_gradient_matches_central_differences(monkeypatch):
    monkeypatch.setattr(chi2_module, "TILE_ELEMENTS", 2 * 7 * 7)
    model, _, _, data = setup()
    data = data + 0.05  # away from the minimum, so that every component is sizeable

    def f(x):
        return blocked(model, LaminarFlowParams.from_array(x), data, 1e-3)

    x = PARAMS.to_array()
    grad = jax.jit(jax.grad(f))(x)
    for i in range(7):
        h = 1e-6 * max(abs(float(x[i])), 1e-2)
        e = np.zeros(7)
        e[i] = h
        fd = (float(f(x + e)) - float(f(x - e))) / (2 * h)
        assert float(grad[i]) == pytest.approx(fd, rel=1e-5, abs=1e-6 * abs(float(f(x))))
