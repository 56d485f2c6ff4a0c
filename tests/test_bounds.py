"""The bounded reparametrisation used by the fit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import homodyne
from homodyne import DEFAULT_BOUNDS, HomodyneModel
from homodyne._bounds import BoundedTransform, log_scaled, resolve_bounds

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
    jacobian = jax.jit(jax.jacrev(transform.to_physical))  # compiled once for the three points
    hessian = jax.jit(jax.hessian(lambda v: jnp.sum(transform.to_physical(v))))
    for u in (jnp.zeros(7), jnp.full(7, 30.0), jnp.full(7, -30.0)):
        jac, hess = jacobian(u), hessian(u)
        assert np.all(np.isfinite(jac)) and np.all(np.isfinite(hess))


def test_invalid_bounds():
    with pytest.raises(ValueError, match="unknown parameter"):
        resolve_bounds(NAMES, {"gamma": (0, 1)})
    with pytest.raises(ValueError, match="finite with lower < upper"):
        resolve_bounds(NAMES, {"D0": (1e3, float("inf"))})


def test_default_bounds_scale_with_q_and_the_window():
    ref = homodyne.default_bounds(HomodyneModel(q=0.0054, dt=0.1, n_frames=1000))
    # at the reference experiment the SPEC §4 table is the least they cover
    for name, (lo, hi) in DEFAULT_BOUNDS.items():
        assert ref[name][0] <= lo and ref[name][1] >= hi, name
    for name in ("alpha", "beta", "phi0", "contrast", "offset"):
        assert ref[name] == DEFAULT_BOUNDS[name]
    # what the frames resolve, derived here: g1² = exp(−q²·D·τ) falls to e⁻³ within one frame at
    # the upper limit and by 0.1 % over the 99.9 s window at the lower one; the shear phase
    # q·L·γ̇·τ/2π reaches π within one frame at the upper limit
    q, L, dt, window = 0.0054, 2e6, 0.1, 999 * 0.1
    assert ref["D0"][1] == pytest.approx(3 / (q**2 * dt), rel=1e-12)
    assert ref["D0"][0] == pytest.approx(1e-3 / (q**2 * window), rel=1e-12)
    assert ref["D_offset"] == pytest.approx((-3 / (q**2 * dt), 3 / (q**2 * dt)), rel=1e-12)
    assert ref["gamma_dot_t0"][1] == 0.5  # at dt = 0.1 s the table's limit is the larger
    fast = homodyne.default_bounds(HomodyneModel(q=q, dt=1e-4, n_frames=1000))
    assert q * L * fast["gamma_dot_t0"][1] * 1e-4 / (2 * np.pi) == pytest.approx(np.pi, rel=1e-12)
    # q 10× smaller: every D limit 100× larger, every γ̇ limit 10× (as are the rates resolved)
    small = homodyne.default_bounds(HomodyneModel(q=0.00054, dt=0.1, n_frames=1000))
    for name, factor in [("D0", 100), ("D_offset", 100), ("gamma_dot_t0", 10)]:
        assert small[name] == pytest.approx(tuple(factor * v for v in ref[name]), rel=1e-12)
    # a slow detector resolves no faster decay than the table: the table's limits, scaled
    slow = homodyne.default_bounds(HomodyneModel(q=0.0015, dt=5.0, n_frames=100))
    assert slow["D0"][1] == pytest.approx(1e5 * (0.0054 / 0.0015) ** 2, rel=1e-12)
    assert slow["gamma_dot_t_offset"][1] == pytest.approx(0.1 * 0.0054 / 0.0015, rel=1e-12)
    # the detector-data case of SPEC §4: D0 = 4e5 at q ≈ 0.0015 lies well inside
    real = homodyne.default_bounds(HomodyneModel(q=0.0015, dt=0.1, n_frames=500))
    assert real["D0"][0] < 4e5 / 100 and real["D0"][1] > 4e5 * 10
    # log scales stay where the table has them
    lower, upper = resolve_bounds(NAMES, None, real)
    assert log_scaled(lower, upper)[:7] == (True, False, False, True, False, False, False)


def test_default_bounds_under_jit_match_and_differentiate():
    def d0_upper(q):
        return homodyne.default_bounds(HomodyneModel(q=q, dt=0.1, n_frames=50))["D0"][1]

    assert float(jax.jit(d0_upper)(0.002)) == pytest.approx(d0_upper(0.002), rel=1e-14)
    assert float(jax.grad(d0_upper)(0.002)) == pytest.approx(
        -2 * d0_upper(0.002) / 0.002, rel=1e-12
    )
