"""Pictures of a fit, and the uncertainty bands of D(t) and γ̇(t)."""

import matplotlib.image
import numpy as np
import pytest

import homodyne
from homodyne import io as hio


@pytest.fixture(scope="module")
def fitted():
    model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=24, phi=[0.0, 45.0], time_origin=0.5)
    truth = homodyne.LaminarFlowParams(1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0)
    data = homodyne.simulate_c2(model, truth, 0.3, 1.0, noise=2e-3, seed=5)
    return homodyne.fit(model, data, sigma=2e-3, init=truth), data


def test_plot_fit_writes_readable_pngs(fitted, tmp_path):
    result, data = fitted
    paths = hio.plot_fit(result, data, tmp_path, name="run")
    assert [p.name for p in paths] == [
        "run_c2_phi0.png",
        "run_c2_phi1.png",
        "run_g2_cuts.png",
        "run_rates.png",
    ]
    for p in paths:
        image = matplotlib.image.imread(p)
        assert image.shape[0] > 200 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_rate_bands_are_the_delta_method(fitted):
    result, _ = fitted
    bands = hio.rate_bands(result)
    d_model, g_model = result.model.rates(result.params)
    np.testing.assert_allclose(bands["D"][0], d_model, rtol=1e-14)
    np.testing.assert_allclose(bands["gamma_dot"][0], g_model, rtol=1e-14)
    # independent: finite-difference Jacobian of D(t) in NumPy, then sqrt(diag(J C Jᵀ))
    t = np.maximum(np.asarray(result.model.t), 0.05)
    theta = np.asarray(result.params.to_array())[:3]

    def d_of(x):
        return x[0] * t ** x[1] + x[2]

    steps = np.array([1.0, 1e-6, 1e-3])
    jac = np.stack(
        [
            (d_of(theta + e) - d_of(theta - e)) / (2 * h)
            for e, h in zip(np.diag(steps), steps, strict=True)
        ],
        1,
    )
    cov = np.asarray(result.covariance)[:3, :3]  # D0, alpha, D_offset lead the free parameters
    expected = np.sqrt(np.einsum("ti,ij,tj->t", jac, cov, jac))
    np.testing.assert_allclose(bands["D"][1], expected, rtol=1e-5)
