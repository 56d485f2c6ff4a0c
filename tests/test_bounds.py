"""The bounded reparametrisation used by the fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from homodyne import DEFAULT_BOUNDS
from homodyne._bounds import BoundedTransform, resolve_bounds

NAMES = ("D0", "alpha", "D_offset", "gamma_dot_t0", "beta", "gamma_dot_t_offset", "phi0")


def test_defaults_are_spec_section_4():
    assert DEFAULT_BOUNDS["D0"] == (1e2, 1e5) and DEFAULT_BOUNDS["gamma_dot_t0"] == (1e-6, 0.5)
    assert DEFAULT_BOUNDS["contrast"] == (0.0, 1.0) and DEFAULT_BOUNDS["offset"] == (0.5, 1.5)
    lower, upper = resolve_bounds(NAMES, {"alpha": (-1.0, 1.0)})
    assert lower.size == 9 and (lower[1], upper[1]) == (-1.0, 1.0) and upper[0] == 1e5


def test_defaults_are_read_only():
    with pytest.raises(TypeError):
        DEFAULT_BOUNDS["D0"] = (1.0, 2.0)  # type: ignore[index]
    with pytest.raises(TypeError):
        del DEFAULT_BOUNDS["alpha"]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        DEFAULT_BOUNDS["D0"][0] = 1.0  # type: ignore[index]
    assert all(type(pair) is tuple for pair in DEFAULT_BOUNDS.values())
    assert DEFAULT_BOUNDS["D0"] == (1e2, 1e5)


def test_round_trip_log_scale_and_bounds_respected():
    lower, upper = resolve_bounds(NAMES, None)
    transform = BoundedTransform(lower[:7], upper[:7])
    assert transform.log_scale == (True, False, False, True, False, False, False)
    p = jnp.array([1.5e4, -0.4, 20.0, 2e-3, 0.3, 1e-4, 3.0])
    np.testing.assert_allclose(transform.to_physical(transform.to_internal(p)), p, rtol=1e-12)
    # equal steps in u are equal ratios for D0 and gamma_dot_t0: a scale-free O(1) coordinate
    u = transform.to_internal(p)
    ratio = transform.to_physical(u + 0.01) / p
    assert float(ratio[0]) == pytest.approx(
        float(jnp.exp(0.01 * np.log(1e3) * 0.25 * 0.99)), rel=0.1
    )
    for extreme in (-1e3, -40.0, 40.0, 1e3):
        x = transform.to_physical(jnp.full(7, extreme))
        assert np.all(np.asarray(x) >= lower[:7]) and np.all(np.asarray(x) <= upper[:7])


def test_gradients_are_finite_everywhere():
    lower, upper = resolve_bounds(NAMES, None)
    transform = BoundedTransform(lower[:7], upper[:7])
    for u in (jnp.zeros(7), jnp.full(7, 30.0), jnp.full(7, -30.0)):
        jac = jax.jacrev(transform.to_physical)(u)
        hess = jax.hessian(lambda v: jnp.sum(transform.to_physical(v)))(u)
        assert np.all(np.isfinite(jac)) and np.all(np.isfinite(hess))


def test_invalid_bounds():
    with pytest.raises(ValueError, match="unknown parameter"):
        resolve_bounds(NAMES, {"gamma": (0, 1)})
    with pytest.raises(ValueError, match="finite with lower < upper"):
        resolve_bounds(NAMES, {"D0": (1e3, float("inf"))})
