"""The pure kernels against SPEC §2, the independent NumPy oracle and analytic limits."""

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from conftest import assert_spec_close

from homodyne import _kernels as k
from homodyne import sinc, straight_through_floor


def test_straight_through_floor_value_and_derivatives():
    x = jnp.array([-3.0, 1e-12, 0.5, 2.0])
    assert np.array_equal(straight_through_floor(x, 1e-10), [1e-10, 1e-10, 0.5, 2.0])
    # value is floored, derivative is that of the identity: 1 everywhere, also below the floor
    grad = jax.grad(lambda v: jnp.sum(straight_through_floor(v**2, 1.0) * v))(x)
    xn = np.asarray(x)
    np.testing.assert_allclose(grad, np.maximum(xn**2, 1.0) + 2 * xn**2, rtol=1e-14)
    _, tangent = jax.jvp(lambda v: straight_through_floor(v, 0.0), (x,), (jnp.ones(4),))
    assert np.array_equal(tangent, np.ones(4))
    hess = jax.hessian(lambda v: straight_through_floor(v**3, 100.0))(jnp.array(1.5))
    assert float(hess) == pytest.approx(6 * 1.5)
    assert np.array_equal(jax.vmap(lambda v: straight_through_floor(v, 0.0))(x), [0, 1e-12, 0.5, 2])


def test_sinc_matches_oracle_on_both_branches():
    x = np.concatenate(
        [np.array([0.0, 1e-9, -3e-5, 9.99e-5, 1e-4, 1.0001e-4, -2e-4]), np.linspace(-20, 20, 401)]
    )
    assert_spec_close(sinc(jnp.asarray(x)), ref.sinc_unnormalised(x), atol=0)


def test_sinc_zeros_and_smooth_derivative():
    zeros = np.pi * np.arange(1, 6)
    assert np.all(np.abs(np.asarray(sinc(jnp.asarray(zeros)))) < 1e-15)
    # derivative through the series branch is finite and matches the analytic −x/3 near 0
    for x0 in (0.0, 5e-5, 3e-4, 2.0):
        g = float(jax.grad(sinc)(jnp.asarray(x0)))
        exact = -x0 / 3 if x0 < 1e-4 else (np.cos(x0) * x0 - np.sin(x0)) / x0**2
        assert g == pytest.approx(exact, rel=1e-6, abs=1e-15)


@pytest.mark.parametrize(
    "t",
    [np.linspace(0, 1, 7), np.array([2.0]), np.array([0.0, 1e-9, 3e-9]), 5.0 + np.arange(4)],
)
def test_time_floor(t):
    assert_spec_close(k.floored_times(jnp.asarray(t)), ref.time_floor(t), atol=0)


def test_cumulative_trapezoid_and_pairwise_integral():
    f = np.random.default_rng(0).uniform(0.1, 3.0, size=25)
    c = k.cumulative_trapezoid(jnp.asarray(f))
    assert_spec_close(c, ref.cumulative_steps(f))
    m = k.pairwise_integral(c)
    assert np.array_equal(m, m.T)  # exactly symmetric
    assert np.all(np.diag(np.asarray(m)) == 1e-6)
    assert_spec_close(m, ref.pairwise(np.asarray(ref.cumulative_steps(f))))


def test_constant_rate_gives_the_index_distance():
    # D = D0·t^0: the integral in grid steps is D0·|i − j| (plus the smoothing 1e-12 under the root)
    t = jnp.linspace(0.0, 2.0, 11)
    m = k.rate_integral(t, jnp.asarray(3.0), jnp.asarray(0.0), jnp.asarray(0.0))
    i = np.arange(11)
    expected = np.sqrt((3.0 * (i[:, None] - i[None, :])) ** 2 + 1e-12)
    assert_spec_close(m, expected, atol=0)


def test_diffusion_clip_and_shear_phase():
    m = jnp.array([1e-6, 1.0, 1e9])
    g = k.g1_diffusion_from_integral(jnp.asarray(0.5), m)
    np.testing.assert_allclose(g, [np.exp(-5e-7), np.exp(-0.5), np.exp(-700.0)], rtol=1e-15)
    phase = k.shear_phase(
        jnp.asarray(2.0), jnp.asarray(30.0), jnp.array([30.0, 120.0]), m[:2, None]
    )
    assert phase.shape == (2, 2, 1)
    np.testing.assert_allclose(phase[0, :, 0], 2.0 * np.asarray(m[:2]), rtol=1e-15)
    assert np.all(np.abs(np.asarray(phase[1])) < 1e-15)  # cos(90°) ≈ 6e-17


def test_public_kernels_under_jit_vmap_grad():
    x = jnp.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(jax.jit(sinc)(x), sinc(x), rtol=1e-15)
    np.testing.assert_allclose(jax.vmap(sinc)(x), sinc(x), rtol=1e-15)
    grads = jax.vmap(jax.grad(sinc))(x)
    h = 1e-6
    np.testing.assert_allclose(grads, (sinc(x + h) - sinc(x - h)) / (2 * h), rtol=1e-6, atol=1e-9)
    floored = jax.jit(jax.vmap(jax.grad(lambda v: straight_through_floor(v, 0.5) ** 2)))(x)
    np.testing.assert_allclose(floored, 2 * np.maximum(np.asarray(x), 0.5), rtol=1e-15)
