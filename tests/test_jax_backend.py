"""homodyne.core.jax_backend: the documented functional API (SPEC §3.2)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from conftest import assert_spec_close
from helpers import CASE_IDS, CASES, central_difference, traces

from homodyne.core import jax_backend as jb

PUBLIC = [
    "compute_g1_diffusion", "compute_g1_shear", "compute_g1_total", "compute_g2_scaled",
    "compute_g2_scaled_with_factors", "compute_chi_squared", "vectorized_g2_computation",
    "batch_chi_squared", "gradient_g2", "hessian_g2", "gradient_chi2", "hessian_chi2",
    "get_cached_meshgrid", "clear_meshgrid_cache", "get_cache_stats", "reset_cache_stats",
    "validate_backend", "get_device_info", "get_performance_summary", "jax_available",
    "numpy_gradients_available",
]  # fmt: skip


def test_every_documented_name_exists():
    assert sorted(jb.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert hasattr(jb, name), name
    assert jb.jax_available is True and isinstance(jb.numpy_gradients_available, bool)


# --- values ------------------------------------------------------------------------------------


def _sample(array, key):
    i, j = map(int, key.strip("[]").split(","))
    return array[i, j]


def test_seed_example(seed_example):
    inp, out = seed_example["inputs"], seed_example["outputs"]
    t = np.linspace(inp["t"]["first"], inp["t"]["last"], inp["t"]["n"])
    assert t[1] == pytest.approx(inp["t"]["second"], rel=1e-15)
    t1, t2 = jnp.meshgrid(t, t, indexing="ij")
    p, phi, q, L, dt = inp["params"], inp["phi_deg"], inp["q"], inp["L"], inp["dt"]
    c, b = inp["contrast"], inp["offset"]
    results = {
        "compute_g2_scaled": jb.compute_g2_scaled(p, t1, t2, phi, q, L, c, b, dt),
        "compute_g1_diffusion": jb.compute_g1_diffusion(p, t1, t2, q, dt),
        "compute_g1_shear": jb.compute_g1_shear(p, t1, t2, phi, q, L, dt),
        "compute_g1_total": jb.compute_g1_total(p, t1, t2, phi, q, L, dt),
    }
    for name, value in results.items():
        expected = out[name]
        value = np.asarray(value)
        assert list(value.shape) == expected["shape"], name
        assert value.dtype == np.float64
        assert_spec_close(value.min(), expected["min"])
        assert_spec_close(value.max(), expected["max"])
        planes = [value] if value.ndim == 2 else list(value)
        samples = [expected["samples"]] if value.ndim == 2 else expected["samples_per_phi"]
        for plane, sample in zip(planes, samples, strict=True):
            assert_spec_close(np.diag(plane).min(), expected["diag_min"])
            assert_spec_close(np.diag(plane).max(), expected["diag_max"])
            for key, v in sample.items():
                assert_spec_close(_sample(plane, key), v)
    # the same through the precomputed factors, from Python floats
    with_factors = jb.compute_g2_scaled_with_factors(
        p, t, t, phi, inp["derived_wavevector_q_squared_half_dt"],
        inp["derived_sinc_prefactor"], c, b, dt,
    )  # fmt: skip
    assert_spec_close(with_factors, results["compute_g2_scaled"])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_functions_match_numpy_oracle(case):
    p, t, phi = np.array(case.params), case.t, case.phi
    args = (case.q, case.L)
    assert_spec_close(
        jb.compute_g1_diffusion(p, t, t, case.q, case.dt), ref.g1_diffusion(p, t, case.q, case.dt)
    )
    assert_spec_close(
        jb.compute_g1_shear(p, t, t, phi, *args, case.dt), ref.g1_shear(p, t, phi, *args, case.dt)
    )
    assert_spec_close(
        jb.compute_g1_total(p, t, t, phi, *args, case.dt), ref.g1_total(p, t, phi, *args, case.dt)
    )
    g2 = jb.compute_g2_scaled(p, t, t, phi, *args, case.contrast, case.offset, case.dt)
    expected = ref.g2(p, t, phi, *args, case.contrast, case.offset, case.dt)
    assert_spec_close(g2, expected)
    data = expected + np.random.default_rng(3).normal(scale=1e-3, size=expected.shape)
    sigma = 1e-3 * (1 + np.random.default_rng(4).uniform(size=expected.shape))
    chi2 = jb.compute_chi_squared(
        p, data, sigma, t, t, phi, *args, case.contrast, case.offset, case.dt
    )
    want = ref.chi_squared(p, data, sigma, t, phi, *args, case.contrast, case.offset, case.dt)
    assert float(chi2) == pytest.approx(want, rel=1e-9)  # (data − g2) cancels ~1e-3 of g2
    # ij meshgrids give the same full matrix
    t1, t2 = np.meshgrid(t, t, indexing="ij")
    assert np.array_equal(jb.compute_g2_scaled(p, t1, t2, phi, *args, case.contrast, case.offset, case.dt), g2)  # fmt: skip


def test_g1_diffusion_uses_first_three_and_shear_is_one_for_static():
    case = CASES[2]
    p, t = np.array(case.params), case.t
    full = jb.compute_g1_diffusion(p, t, t, case.q, case.dt)
    assert np.array_equal(full, jb.compute_g1_diffusion(p[:3], t, t, case.q, case.dt))
    ones = jb.compute_g1_shear(p[:3], t, t, case.phi, case.q, case.L, case.dt)
    assert ones.shape == (case.phi.size, t.size, t.size) and np.all(ones == 1.0)


def test_batches_match_single_evaluations():
    case = CASES[3]
    t, phi = case.t, case.phi
    batch = np.array([case.params, np.array(case.params) * 1.1, np.array(case.params) * 0.9])
    common = (t, t, phi, case.q, case.L, case.contrast, case.offset)
    g2s = jb.vectorized_g2_computation(batch, *common, dt=case.dt)
    assert g2s.shape == (3, phi.size, t.size, t.size)
    data = np.asarray(g2s[0])
    chi2s = jb.batch_chi_squared(batch, data, 0.01, *common, dt=case.dt)
    for b in range(3):
        np.testing.assert_allclose(
            g2s[b], jb.compute_g2_scaled(batch[b], *common, case.dt), rtol=1e-14
        )
        single = jb.compute_chi_squared(batch[b], data, 0.01, *common, case.dt)
        assert float(chi2s[b]) == pytest.approx(float(single), rel=1e-12, abs=1e-20)
    # χ² uses its own evaluation of g2 (angle addition, `_chi2`): equal to g2 to a few ulp
    n = data.size
    assert float(chi2s[0]) <= n * (4e-16 * np.max(np.abs(data)) / 0.01) ** 2


# --- derivatives -------------------------------------------------------------------------------

GRAD_CASE = CASES[0]  # seed-like physics, 24 frames
# finite-difference steps on each parameter's own scale (D_offset = 0.1 next to D ~ 600 Å²/s)
STEPS = np.array([10.0, 1e-3, 1.0, 1e-6, 1e-3, 1e-5, 1e-2])


def _args(case):
    return (case.t, case.t, case.phi, case.q, case.L, case.contrast, case.offset, case.dt)


def test_gradient_g2_is_gradient_of_the_sum():
    case = GRAD_CASE
    p = np.array(case.params)
    grad = np.asarray(jb.gradient_g2(p, *_args(case)))
    assert grad.shape == (7,)
    for i in range(7):

        def along(x, i=i):
            q = p.copy()
            q[i] = x
            return float(jnp.sum(jb.compute_g2_scaled(q, *_args(case))))

        fd = central_difference(along, p[i], STEPS[i])
        assert grad[i] == pytest.approx(fd, rel=1e-6, abs=1e-10), i


def test_chi2_gradient_and_hessian_against_finite_differences():
    case = CASES[1]  # static: 3 parameters, two angles
    p = np.array(case.params)
    model = ref.g2(p, case.t, case.phi, case.q, case.L, case.contrast, case.offset, case.dt)
    data = model + np.random.default_rng(5).normal(scale=2e-3, size=model.shape)
    rest = (
        data,
        2e-3,
        case.t,
        case.t,
        case.phi,
        case.q,
        case.L,
        case.contrast,
        case.offset,
        case.dt,
    )
    grad = np.asarray(jb.gradient_chi2(p, *rest))
    hess = np.asarray(jb.hessian_chi2(p, *rest))
    assert grad.shape == (3,) and hess.shape == (3, 3)
    np.testing.assert_allclose(hess, hess.T, rtol=1e-10)
    steps = 1e-4 * np.maximum(np.abs(p), 1.0)
    for i in range(3):

        def chi2_along(x, i=i):
            q = p.copy()
            q[i] = x
            return float(jb.compute_chi_squared(q, *rest))

        def grad_along(x, i=i):
            q = p.copy()
            q[i] = x
            return np.asarray(jb.gradient_chi2(q, *rest))

        assert grad[i] == pytest.approx(central_difference(chi2_along, p[i], steps[i]), rel=1e-6)
        np.testing.assert_allclose(
            hess[:, i], central_difference(grad_along, p[i], steps[i]), rtol=1e-5,
            atol=1e-8 * np.abs(hess).max(),
        )  # fmt: skip


def test_hessian_g2_shape_and_values():
    case = CASES[1]
    t = case.t[:6]
    p = np.array(case.params)
    args = (t, t, case.phi, case.q, case.L, 0.4, 1.0, case.dt)
    hess = np.asarray(jb.hessian_g2(p, *args))
    assert hess.shape == (2, 6, 6, 3, 3)
    np.testing.assert_allclose(hess, np.swapaxes(hess, -1, -2), rtol=1e-10, atol=1e-300)
    # column for alpha against differences of the gradient of one element
    i, j = 0, 5
    grad_ij = jax.grad(lambda x: jb.compute_g2_scaled(x, *args)[1, i, j])

    def along(x):
        q = p.copy()
        q[1] = x
        return np.asarray(grad_ij(jnp.asarray(q)))

    np.testing.assert_allclose(
        hess[1, i, j, :, 1], central_difference(along, p[1], 1e-4), rtol=1e-6
    )


# --- transforms --------------------------------------------------------------------------------

T = np.linspace(0.0, 1.0, 9)
PHI = np.array([0.0, 60.0])
P7 = np.array([1.0e4, -0.3, 10.0, 2.0e-2, 0.2, 1.0e-3, 5.0])
DATA = np.full((2, 9, 9), 1.2)

CALLS = {
    "compute_g1_diffusion": lambda p: jb.compute_g1_diffusion(p, T, T, 0.0054, 0.1),
    "compute_g1_shear": lambda p: jb.compute_g1_shear(p, T, T, PHI, 0.0054, 2e6, 0.1),
    "compute_g1_total": lambda p: jb.compute_g1_total(p, T, T, PHI, 0.0054, 2e6, 0.1),
    "compute_g2_scaled": lambda p: jb.compute_g2_scaled(p, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1),
    "compute_g2_scaled_with_factors": lambda p: jb.compute_g2_scaled_with_factors(
        p, T, T, PHI, 1.4e-6, 171.9, 0.4, 1.0, 0.1
    ),
    "compute_chi_squared": lambda p: jb.compute_chi_squared(
        p, DATA, 0.1, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1
    ),
    "vectorized_g2_computation": lambda p: jb.vectorized_g2_computation(
        p[None], T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1
    )[0],
    "batch_chi_squared": lambda p: jb.batch_chi_squared(
        p[None], DATA, 0.1, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1
    )[0],
    "gradient_g2": lambda p: jb.gradient_g2(p, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1),
    "gradient_chi2": lambda p: jb.gradient_chi2(
        p, DATA, 0.1, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1
    ),
    "hessian_chi2": lambda p: jb.hessian_chi2(p, DATA, 0.1, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1),
    "hessian_g2": lambda p: jb.hessian_g2(p, T[:4], T[:4], 0.0, 0.0054, 2e6, 0.4, 1.0, 0.1),
}


@pytest.mark.parametrize(
    "name",
    # hessian_chi2 and gradient_chi2 under jit, vmap and grad compile for 45 s and 18 s: slow
    # (their values are checked by test_chi2.py's dense comparisons in the fast suite)
    [
        pytest.param(n, marks=pytest.mark.slow) if n in ("hessian_chi2", "gradient_chi2") else n
        for n in sorted(CALLS)
    ],
)
def test_jit_vmap_grad(name):
    call = CALLS[name]
    eager = np.asarray(call(P7))
    np.testing.assert_allclose(jax.jit(call)(P7), eager, rtol=1e-13)
    batch = np.stack([P7, P7 * 1.01])
    mapped = np.asarray(jax.vmap(call)(batch))
    np.testing.assert_allclose(mapped[0], eager, rtol=1e-13)
    np.testing.assert_allclose(mapped[1], np.asarray(call(batch[1])), rtol=1e-13)
    # a scalar loss of each output differentiates, and its gradient is checked along D0's direction
    loss = lambda p: jnp.sum(jnp.tanh(call(p)))  # noqa: E731
    grad = np.asarray(jax.grad(loss)(jnp.asarray(P7)))
    assert grad.shape == (7,) and np.all(np.isfinite(grad))
    direction = np.array([1e2, 1e-2, 1.0, 1e-4, 1e-2, 1e-5, 0.1])
    fd = central_difference(lambda s: float(loss(P7 + s * direction)), 0.0, 1e-2)
    assert float(grad @ direction) == pytest.approx(fd, rel=1e-5, abs=1e-12)


def test_works_inside_jit_with_traced_experiment_values():
    # q, L, dt, contrast and the times traced by a surrounding jit
    @jax.jit
    def f(q, L, dt, c, t):
        return jb.compute_g2_scaled(P7, t, t, PHI, q, L, c, 1.0, dt)

    np.testing.assert_allclose(
        f(0.0054, 2e6, 0.1, 0.4, T), CALLS["compute_g2_scaled"](P7), rtol=1e-14
    )
    # gradient with respect to q through the functional API, against finite differences
    dq = jax.grad(lambda q: jnp.sum(f(q, 2e6, 0.1, 0.4, T)))(0.0054)
    fd = central_difference(lambda q: float(jnp.sum(f(q, 2e6, 0.1, 0.4, T))), 0.0054, 1e-7)
    assert float(dq) == pytest.approx(fd, rel=1e-6)
    # a bad traced dt cannot raise at trace time; it is caught when the function runs
    with pytest.raises(Exception, match="dt must be finite and > 0"):
        jax.block_until_ready(f(0.0054, 2e6, -0.1, 0.4, T))


def test_new_scalar_values_do_not_recompile():
    t = np.linspace(0.0, 1.0, 7)  # a shape no other test compiles
    data = DATA[:, :7, :7]

    def evaluate(i, q, L, dt, c):
        p = P7 * (1 + 0.1 * i)
        jb.compute_g2_scaled(p, t, t, PHI, q, L, c, 1.0, dt)
        jb.compute_g2_scaled(p, t, t, PHI, jnp.asarray(q), jnp.asarray(L), jnp.asarray(c), 1.0, jnp.asarray(dt))  # fmt: skip
        jb.compute_g2_scaled_with_factors(p, t, t, [10.0 * i, 20.0], 1e-6 * (i + 1), 100.0 + i, c, 1.0, dt)  # fmt: skip
        jb.compute_chi_squared(p, data, 0.1, t, t, PHI, q, L, c, 1.0, dt)
        jb.compute_chi_squared(p, data, 0.1, t, t, PHI, q, L, jnp.asarray(c), 1.0, dt)

    with traces() as first:
        evaluate(0, 0.005, 2e6, 0.1, 0.3)
    # jax_backend's jitted cores, each traced once for Python and JAX scalars alike
    assert first["_g2"] == 1 and first["_chi2"] == 1, first
    with traces() as later:
        evaluate(1, 0.006, 1e6, 0.2, 0.4)
        evaluate(2, 0.007, 1.5e6, 0.05, 0.7)
    assert not later, later  # new values trace (so compile) nothing at all


# --- input rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("dt", [None, 0.0, -0.1, float("nan"), float("inf")])
@pytest.mark.parametrize(
    "call",
    [
        lambda dt: jb.compute_g1_diffusion(P7, T, T, 0.0054, dt),
        lambda dt: jb.compute_g1_diffusion(P7, T, T, 0.0054),
        lambda dt: jb.compute_g1_shear(P7, T, T, PHI, 0.0054, 2e6, dt),
        lambda dt: jb.compute_g1_total(P7, T, T, PHI, 0.0054, 2e6, dt),
        lambda dt: jb.compute_g2_scaled(P7, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, dt),
        lambda dt: jb.compute_g2_scaled_with_factors(P7, T, T, PHI, 1e-6, 1e2, 0.4, 1.0, dt),
        lambda dt: jb.compute_chi_squared(P7, DATA, 0.1, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, dt),
        lambda dt: jb.vectorized_g2_computation(P7[None], T, T, PHI, 0.0054, 2e6, 0.4, 1.0, dt),
        lambda dt: jb.vectorized_g2_computation(P7[None], T, T, PHI, 0.0054, 2e6, 0.4, 1.0),
        lambda dt: jb.batch_chi_squared(P7[None], DATA, 0.1, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, dt),
        lambda dt: jb.gradient_g2(P7, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, dt),
        lambda dt: jb.hessian_g2(P7, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, dt),
        lambda dt: jb.gradient_chi2(P7, DATA, 0.1, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, dt),
        lambda dt: jb.hessian_chi2(P7, DATA, 0.1, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, dt),
    ],
)
def test_bad_dt_is_a_value_error(call, dt):
    with pytest.raises(ValueError, match="configuration"):
        call(dt)


def test_time_grid_rules():
    g2 = lambda t1, t2: jb.compute_g2_scaled(P7, t1, t2, 0.0, 0.0054, 2e6, 0.4, 1.0, 0.1)  # noqa: E731
    x1, x2 = np.meshgrid(T, T, indexing="xy")
    with pytest.raises(ValueError, match="'xy'-indexed"):
        g2(x1, x2)
    with pytest.raises(ValueError, match="not the same time axis"):
        g2(T, T + 0.5)
    with pytest.raises(ValueError, match="same time vector"):
        g2(T, T[:5])
    with pytest.raises(ValueError, match="both be 1-D"):
        g2(T, np.meshgrid(T, T, indexing="ij")[1])
    i1, i2 = np.meshgrid(T, T, indexing="ij")
    with pytest.raises(ValueError, match="not the ij meshgrid"):
        g2(i1, i2 + 0.1)
    with pytest.raises(ValueError, match="not the ij meshgrid"):
        g2(i1, i1)  # t2 must vary along the second axis
    # the full (N, N) matrix for any N, including one and two frames
    for n in (1, 2, 3):
        assert g2(T[:n], T[:n]).shape == (1, n, n)
    # a time grid whose spacing differs from dt is allowed (dt sets the step, t where rates are)
    assert g2(T * 7.0, T * 7.0).shape == (1, 9, 9)
    # under jit an xy meshgrid is caught when the function runs
    with pytest.raises(Exception, match="ij meshgrid"):
        jax.block_until_ready(jax.jit(g2)(x1, x2))


def test_parameter_and_scaling_rules():
    g2 = lambda p, c=0.4, b=1.0: jb.compute_g2_scaled(p, T, T, PHI, 0.0054, 2e6, c, b, 0.1)  # noqa: E731
    for bad in (np.ones(4), np.ones(6), np.ones(0), np.ones((1, 7)), 1.0):
        with pytest.raises(ValueError, match="params must have shape"):
            g2(bad)
    with pytest.raises(ValueError, match="params must have shape"):
        jb.vectorized_g2_computation(P7, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1)
    with pytest.raises(ValueError, match="one value per angle"):
        g2(P7, c=[0.1, 0.2, 0.3])
    np.testing.assert_array_equal(g2(P7, c=[0.4, 0.4]), g2(P7))  # per-angle contrast
    with pytest.raises(ValueError, match="q must be"):
        jb.compute_g2_scaled(P7, T, T, PHI, -1.0, 2e6, 0.4, 1.0, 0.1)
    with pytest.raises(ValueError, match="does not match"):
        jb.compute_chi_squared(P7, DATA[:, :5], 0.1, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        jb.compute_chi_squared(P7, DATA, 0.0, T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1)

    with pytest.raises(ValueError, match="finite"):
        jb.compute_g2_scaled_with_factors(P7, T, T, PHI, np.nan, 1.0, 0.4, 1.0, 0.1)
    for a, s in ((0.0, 1.0), (-1.0, 1.0), (1e-6, 0.0)):
        with pytest.raises(ValueError, match="must be finite and > 0"):
            jb.compute_g2_scaled_with_factors(P7, T, T, PHI, a, s, 0.4, 1.0, 0.1)
    # phi of any shape is flattened; NumPy and JAX inputs agree
    grid = jb.compute_g2_scaled(P7, T, T, np.array([[0.0], [60.0]]), 0.0054, 2e6, 0.4, 1.0, 0.1)
    assert np.array_equal(grid, g2(jnp.asarray(P7)))


def test_sigma_rules_of_the_chi2_functions():
    args = (T, T, PHI, 0.0054, 2e6, 0.4, 1.0, 0.1)
    sigma = np.full(DATA.shape, 1e-3)
    bad = sigma.copy()
    bad[1, 2, 3] = -1e-3
    # NumPy σ: checked before the call
    for value in (bad, np.where(bad < 0, np.nan, bad)):
        with pytest.raises(ValueError, match="sigma must be > 0"):
            jb.compute_chi_squared(P7, DATA, value, *args)
        with pytest.raises(ValueError, match="sigma must be > 0"):
            jb.gradient_chi2(P7, DATA, value, *args)
    # JAX σ: checked inside the compiled function, every entry of the result NaN (documented)
    want = jb.compute_chi_squared(P7, DATA, sigma, *args)
    same = jb.compute_chi_squared(P7, DATA, jnp.asarray(sigma), *args)
    assert float(same) == pytest.approx(float(want), rel=1e-14)
    assert np.isnan(float(jb.compute_chi_squared(P7, DATA, jnp.asarray(bad), *args)))
    assert np.all(np.isnan(jb.gradient_chi2(P7, DATA, jnp.asarray(bad), *args)))
    assert np.all(np.isnan(jb.hessian_chi2(P7, DATA, jnp.asarray(bad), *args)))
    batch = jb.batch_chi_squared(np.stack([P7, P7]), DATA, jnp.asarray(bad), *args)
    assert batch.shape == (2,) and np.all(np.isnan(batch))
    # a weakly typed σ (jnp.full) is used as it is, not copied, and gives the same numbers
    weak = jnp.full(DATA.shape, 1e-3)
    assert weak.weak_type
    assert float(jb.compute_chi_squared(P7, DATA, weak, *args)) == pytest.approx(
        float(want), rel=1e-14
    )
    np.testing.assert_allclose(
        jb.gradient_chi2(P7, DATA, weak, *args),
        jb.gradient_chi2(P7, DATA, sigma, *args),
        rtol=1e-14,
    )


# --- meshgrid cache and diagnostics ------------------------------------------------------------


def test_meshgrid_cache():
    jb.clear_meshgrid_cache()
    jb.reset_cache_stats()
    assert jb.get_cache_stats() == {
        "hits": 0, "misses": 0, "evictions": 0, "skipped_large": 0, "skipped_traced": 0,
        "hit_rate": 0.0, "cache_size": 0,
    }  # fmt: skip
    a, b = jb.get_cached_meshgrid(T, T)
    ea, eb = np.meshgrid(T, T, indexing="ij")
    assert np.array_equal(a, ea) and np.array_equal(b, eb)
    a2, _ = jb.get_cached_meshgrid(T.copy(), T.copy())  # same contents: a hit
    assert a2 is a
    other = jb.get_cached_meshgrid(T + 1e-12, T)[0]  # contents differ in the last bits: no sharing
    assert not np.array_equal(other, a)
    stats = jb.get_cache_stats()
    assert (stats["hits"], stats["misses"], stats["cache_size"]) == (1, 2, 2)
    assert stats["hit_rate"] == pytest.approx(1 / 3)
    for i in range(70):  # LRU: at most 64 entries
        jb.get_cached_meshgrid(np.arange(3.0) + i, np.arange(2.0))
    stats = jb.get_cache_stats()
    assert stats["cache_size"] == 64 and stats["evictions"] == 72 - 64
    big = np.arange(1100.0)
    jb.get_cached_meshgrid(big, big)
    jax.jit(lambda t: jb.get_cached_meshgrid(t, t)[0])(T)
    stats = jb.get_cache_stats()
    assert stats["skipped_large"] == 1 and stats["skipped_traced"] == 1
    jb.clear_meshgrid_cache()
    assert jb.get_cache_stats()["cache_size"] == 0 and jb.get_cache_stats()["misses"] == 72
    jb.reset_cache_stats()
    assert jb.get_cache_stats()["misses"] == 0
    with pytest.raises(ValueError, match="1-D"):
        jb.get_cached_meshgrid(ea, eb)
    integers = jb.get_cached_meshgrid(np.arange(4), np.arange(4))[0]
    assert integers.dtype == jnp.float64


def test_diagnostics_report_real_facts():
    report = jb.validate_backend()
    assert report["ok"] is True
    for step in ("forward", "gradient", "hessian"):
        assert report[step]["ok"] is True and report[step]["seconds"] > 0
    assert report["gradient"]["finite_difference_relative_error"] < 1e-5
    info = jb.get_device_info()
    assert info["backend"] == jax.default_backend()
    assert info["device_count"] == len(jax.devices()) and info["float64_enabled"] is True
    assert info["jax_version"] == jax.__version__
    summary = jb.get_performance_summary()
    assert isinstance(summary["summary"], str) and summary["recommendations"]
    assert summary["g2_elements_per_second"] > 0
    assert set(summary["cache"]) >= {"hits", "misses", "hit_rate"}
