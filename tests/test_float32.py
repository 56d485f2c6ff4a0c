"""Maps kept in float32, as files store them: the fit's arithmetic is float64 all the same, and
the noise estimate of long series uses a fixed number of frames."""

import jax.numpy as jnp
import numpy as np
import pytest

import homodyne
from homodyne import FitSpec, HomodyneModel, StaticParams
from homodyne._fit import _build
from homodyne._start import NOISE_FRAMES, noise_per_angle


def test_float32_maps_fit_as_their_float64_values():
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=20, phi=[0.0, 90.0], time_origin=1.0)
    truth = StaticParams(2e4, -0.5, 1e3)
    data = homodyne.simulate_c2(model, truth, noise=2e-3, seed=5).astype(np.float32)
    spec = FitSpec(mode="static")
    problem, _ = _build(model, data, None, truth, spec)
    assert problem.data.dtype == np.float32  # the tiles keep the maps' precision: half the memory
    single = homodyne.fit(model, data, init=truth, spec=spec)
    double = homodyne.fit(model, data.astype(np.float64), init=truth, spec=spec)
    # every tile is promoted exactly, so the fits are the same to rounding of float64 sums
    np.testing.assert_allclose(
        single.params.to_array(), double.params.to_array(), rtol=1e-10, atol=1e-10
    )
    np.testing.assert_allclose(single.errors.to_array(), double.errors.to_array(), rtol=1e-8)
    np.testing.assert_allclose(np.asarray(single.sigma), np.asarray(double.sigma), rtol=1e-10)


def test_noise_estimate_of_a_long_series_uses_evenly_spaced_frames():
    n, sigma = NOISE_FRAMES + 80, 1e-3
    rng = np.random.default_rng(7)
    data = (1.0 + rng.normal(scale=sigma, size=(1, n, n))).astype(np.float32)
    estimate = float(noise_per_angle(jnp.asarray(data))[0])
    # NumPy: the MAD of the second differences at every pair of NOISE_FRAMES evenly spaced frames
    frames = np.unique(np.linspace(0, n - 3, NOISE_FRAMES).round().astype(int))
    assert frames.size == NOISE_FRAMES
    i, j = (frames[k] for k in np.triu_indices(frames.size, 1))
    d = data[0].astype(np.float64)
    diffs = d[i, j] - 2 * d[i + 1, j + 1] + d[i + 2, j + 2]
    mad = np.median(np.abs(diffs - np.median(diffs)))
    assert estimate == pytest.approx(1.4826 * mad / np.sqrt(6), rel=1e-12)
    # half a million differences: within 1 % of the noise put in
    assert estimate == pytest.approx(sigma, rel=0.01)
