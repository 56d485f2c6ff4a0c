"""Maps kept in float32, as files store them: the fit's arithmetic is float64 all the same, and
the noise estimate of long series uses a fixed number of frames."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import homodyne
from homodyne import FitSpec, HomodyneModel, StaticParams
from homodyne._fit import _build
from homodyne._start import NOISE_FRAMES, noise_per_angle

# compiled, as in a fit (eagerly, each of its operations would compile alone)
noise_per_angle = jax.jit(noise_per_angle)


@eqx.filter_jit  # compiled as in a fit (eagerly, each small operation would compile alone)
def _sums(problem, theta):
    contrast, offset = problem.scaling(theta)
    return (contrast, offset, *problem.information(theta, contrast, offset))


def test_float32_maps_give_the_sums_of_their_float64_values():
    # what every step of a fit sums over the tiles, and the noise estimate, from float32 maps
    # kept float32 and from their float64 copy: the same numbers (each tile is promoted exactly)
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=20, phi=[0.0, 90.0], time_origin=1.0)
    truth = StaticParams(2e4, -0.5, 1e3)
    single = homodyne.simulate_c2(model, truth, noise=2e-3, seed=5).astype(np.float32)
    double = single.astype(np.float64)
    spec = FitSpec(mode="static")
    sums = []
    for data in (single, double):
        problem, _ = _build(model, data, 2e-3, truth, spec)
        theta = jnp.asarray(truth.to_array())
        sums.append(_sums(problem, theta))
        assert problem.data.dtype == data.dtype  # float32 tiles: half the memory
    for a, b in zip(*sums, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(
        np.asarray(noise_per_angle(jnp.asarray(single))),
        np.asarray(noise_per_angle(jnp.asarray(double))),
    )


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
