"""Pictures of a fit, and the uncertainty bands of D(t) and γ̇(t)."""

import json

import equinox as eqx
import jax.numpy as jnp
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
        "run_c2_q0.0054_phi0.0.png",
        "run_c2_q0.0054_phi45.0.png",
        "run_g2_aged.png",
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


def test_aged_g2_averages_runs_of_start_frames():
    # independent: a C2 whose element (i, j) is 1000·i + j, so every average is known by hand
    n = 40
    c2 = (1000.0 * np.arange(n)[:, None] + np.arange(n)[None, :])[None]
    starts, lags, aged = hio.aged_g2(c2, ages=3, width=0.05)  # runs of 2 start frames
    assert starts.tolist() == [0, 18, 36] and lags.tolist() == list(range(1, n))
    # from start frames a and a + 1 at lag τ: mean of 1000·a + a + τ and 1000·(a + 1) + a + 1 + τ
    for k, a in enumerate(starts):
        for tau in (1, 2):
            assert aged[0, k, tau - 1] == pytest.approx(1001 * a + 500.5 + tau)
    # the last run reaches lag 3 from frame 36 and 2 from frame 37: lag 3 has one pair, 4 none
    assert aged[0, 2, 2] == pytest.approx(1000 * 36 + 39)
    assert np.isnan(aged[0, 2, 3])


def test_figures_carry_the_fit_status(fitted, tmp_path):
    result, _ = fitted
    text, fine = homodyne._plot.status_lines(result)
    assert fine and text.startswith(f"converged after {int(result.n_steps)} steps")
    stuck = eqx.tree_at(lambda r: (r.converged, r.near_bound, r.at_bound), result,
                        (jnp.asarray(False), jnp.arange(7) == 0, jnp.arange(7) == 0))  # fmt: skip
    text, fine = homodyne._plot.status_lines(stuck)
    assert not fine and text.startswith("NOT CONVERGED") and "WARNING: D0 AT" in text


def test_full_grids_too_large_are_left_out(fitted, tmp_path):
    # the same fit on a model of 2 bins × 12,000 frames: each full grid would take 2.3 GB
    result, data = fitted
    big = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=12_000, phi=[0.0, 45.0])
    result = eqx.tree_at(lambda r: r.model, result, big)
    with pytest.warns(UserWarning, match="need 2 bins × 12000² frame pairs: .* 2 GB in float64"):
        paths = hio.plot_fit(result, data, tmp_path, name="big")
    assert [p.name for p in paths] == ["big_rates.png"]
    with pytest.warns(UserWarning, match="stores no data, fit or residual grids: 2 bins"):
        json_path, npz_path = hio.save_fit(result, tmp_path, data=data, name="big")
    assert json.loads(json_path.read_text())["grids"].startswith("not stored: 2 bins × 12000²")
    assert "data" not in np.load(npz_path).files and "t" in np.load(npz_path).files
