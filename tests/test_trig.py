"""The vectorised sin/cos and sinc² against NumPy's libm (within a few ulp), and their derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from homodyne._trig import FAST_TRIG_LIMIT, sin_cos, sinc_and_derivative, sinc_squared

RNG = np.random.default_rng(7)


def ulp_error(got, want):
    return np.max(np.abs(np.asarray(got) - want) / np.spacing(np.abs(want)))


def samples():
    """Uniform over several ranges, and arguments within 1e-9 of multiples of π/2 (where a careless
    reduction loses all relative accuracy)."""
    out = [RNG.uniform(-hi, hi, 20_000) for hi in (1e-6, 1.0, 10.0, 1e3, 1e5, FAST_TRIG_LIMIT)]
    k = RNG.integers(1, 2**26, 20_000)
    out.append(k * (np.pi / 2) + RNG.normal(scale=1e-9, size=k.size))
    return np.concatenate(out)


X = samples()


def test_sin_cos_within_two_ulp():
    sin, cos = jax.jit(sin_cos)(jnp.asarray(X))
    assert ulp_error(sin, np.sin(X)) <= 2.0
    assert ulp_error(cos, np.cos(X)) <= 2.0


def test_sinc_squared_matches_numpy_and_the_spec_series():
    x = X[X != 0]
    got = jax.jit(sinc_squared)(jnp.asarray(x))
    want = (np.sin(x) / x) ** 2  # itself a few ulp off
    assert ulp_error(got, want) <= 8.0
    small = np.array([0.0, 1e-300, 1e-12, 3e-5, 9.9e-5])
    series = (1 - small**2 / 6 + small**4 / 120) ** 2  # SPEC's form below 1e-4
    np.testing.assert_allclose(sinc_squared(jnp.asarray(small)), series, rtol=2e-16)


def test_derivatives_under_jit_vmap_grad():
    x = np.concatenate([[0.0, 1e-7, 0.05, 0.0999, 0.1001, 1.3, np.pi], RNG.uniform(-50, 50, 50)])
    grad = jax.jit(jax.vmap(jax.grad(lambda v: sinc_squared(v))))(jnp.asarray(x))
    s = np.sinc(x / np.pi)
    with np.errstate(divide="ignore", invalid="ignore"):
        ds = np.where(np.abs(x) < 1e-3, -x / 3 + x**3 / 30, (np.cos(x) - s) / x)
    np.testing.assert_allclose(grad, 2 * s * ds, rtol=1e-12, atol=1e-15)
    value, derivative = sinc_and_derivative(jnp.asarray(x))
    np.testing.assert_allclose(value, s, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(derivative, ds, rtol=1e-12, atol=1e-15)
    d_sin, d_cos = jax.vmap(jax.jacfwd(sin_cos))(jnp.asarray(x))
    np.testing.assert_allclose(d_sin, np.cos(x), rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(d_cos, -np.sin(x), rtol=1e-15, atol=1e-16)


@pytest.mark.parametrize("x", [1e-3, 0.7, 12.0])
def test_second_derivative_of_sinc_squared_by_central_difference(x):
    first = jax.grad(sinc_squared)
    second = float(jax.grad(first)(x))
    h = 1e-5
    fd = (float(first(x + h)) - float(first(x - h))) / (2 * h)
    assert second == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_hessian_at_a_phase_next_to_zero():
    """At an angle 90° from φ0 the phase is ~1e-17. The mixed second derivative of a model that
    multiplies a decay in one parameter by sinc² in the other must then vanish (sinc² is stationary
    there), as central differences of the gradient show; autodiff through sinc's own r/x once
    gave 1e-6 here, from terms of order 1/x² that cancel only in exact arithmetic."""
    t = jnp.linspace(0.1, 1.3, 13)

    def f(v):
        phase = 171.9 * jnp.cos(jnp.deg2rad(v[1] - 94.0)) * t
        return jnp.sum((1.0 - jnp.exp(-1e-4 * v[0] * t) * sinc_squared(phase)) ** 2)

    v = jnp.array([1.2e4, 4.0])
    hessian = np.asarray(jax.jit(jax.hessian(f))(v))
    grad = jax.jit(jax.grad(f))
    h = 1e-4
    mixed = (float(grad(v.at[1].add(h))[0]) - float(grad(v.at[1].add(-h))[0])) / (2 * h)
    scale = np.sqrt(abs(hessian[0, 0] * hessian[1, 1]))
    assert abs(mixed) <= 1e-12 * scale
    assert abs(hessian[0, 1]) <= 1e-12 * scale and abs(hessian[1, 0]) <= 1e-12 * scale
