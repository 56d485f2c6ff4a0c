"""HomodyneModel and the typed parameters: exact values, properties, derivatives, transforms."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from conftest import assert_spec_close
from helpers import CASE_IDS, CASES, Case, central_difference

import homodyne
from homodyne import HomodyneModel, LaminarFlowParams, StaticParams


def model_of(case) -> HomodyneModel:
    return HomodyneModel(q=case.q, dt=case.dt, t=case.t, phi=case.phi, L=case.L)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_model_matches_numpy_oracle(case):
    model = model_of(case)
    p = homodyne.params_from_array(case.params)
    args = (case.params, case.t)
    assert_spec_close(model.g1_diffusion(p), ref.g1_diffusion(*args, case.q, case.dt))
    assert_spec_close(model.g1_shear(p), ref.g1_shear(*args, case.phi, case.q, case.L, case.dt))
    assert_spec_close(model.g1(p), ref.g1_total(*args, case.phi, case.q, case.L, case.dt))
    g2 = model.g2(p, case.contrast, case.offset)
    assert g2.shape == (case.phi.size, case.t.size, case.t.size) and g2.dtype == jnp.float64
    expected = ref.g2(*args, case.phi, case.q, case.L, case.contrast, case.offset, case.dt)
    assert_spec_close(g2, expected)
    d_rate, g_rate = model.rates(p)
    ref_d, ref_g = ref.rates(case.params, case.t)
    assert_spec_close(d_rate, ref_d)
    if ref_g is None:
        assert g_rate is None
    else:
        assert_spec_close(g_rate, ref_g)


def test_cases_cover_what_they_claim():
    # guard the test problems themselves: floors, clip and sinc zeros are really reached
    floored = CASES[3]
    d, g = ref.rates(floored.params, floored.t)
    assert np.any(d == 1e-10) and g is not None and np.any(g == 1e-10)
    deep = CASES[4]
    assert np.any(ref.g1_total(deep.params, deep.t, deep.phi, deep.q, deep.L, deep.dt) == 1e-10)
    shear = CASES[2]
    g1s = ref.g1_shear(shear.params, shear.t, shear.phi, shear.q, shear.L, shear.dt)
    assert g1s.min() < 1e-3  # passes next to zeros of sinc


def test_seed_example_through_the_model(seed_example):
    inp, out = seed_example["inputs"], seed_example["outputs"]
    t = np.linspace(inp["t"]["first"], inp["t"]["last"], inp["t"]["n"])
    model = HomodyneModel(q=inp["q"], dt=inp["dt"], t=t, phi=inp["phi_deg"], L=inp["L"])
    assert float(model.wavevector_q_squared_half_dt) == pytest.approx(
        inp["derived_wavevector_q_squared_half_dt"], rel=1e-15
    )
    assert float(model.sinc_prefactor) == pytest.approx(inp["derived_sinc_prefactor"], rel=1e-15)
    p = LaminarFlowParams.from_array(inp["params"])
    g2 = np.asarray(model.g2(p, inp["contrast"], inp["offset"]))[0]
    for key, value in out["compute_g2_scaled"]["samples_per_phi"][0].items():
        i, j = map(int, key.strip("[]").split(","))
        assert_spec_close(g2[i, j], value)
    assert_spec_close(g2.min(), out["compute_g2_scaled"]["min"])
    assert_spec_close(np.diag(g2), out["compute_g2_scaled"]["diag_min"])
    g1d = np.asarray(model.g1_diffusion(p))
    assert_spec_close(g1d[0, 99], out["compute_g1_diffusion"]["samples"]["[0,99]"])


# --- properties --------------------------------------------------------------------------------


def test_symmetry_diagonal_and_static_shear():
    case = CASES[2]
    model = model_of(case)
    p = homodyne.params_from_array(case.params)
    g2 = model.g2(p, case.contrast, case.offset)
    assert np.array_equal(g2, jnp.swapaxes(g2, 1, 2))  # exactly symmetric
    # diagonal: M_ii = 1e-6 exactly, so g1_ii = exp(−½q²Δ·1e-6)·sinc²(s·cos·1e-6) (series branch)
    a, s = 0.5 * case.q**2 * case.dt, case.q * case.L * case.dt / (2 * np.pi)
    x = s * np.cos(np.deg2rad(case.params[6] - case.phi)) * 1e-6
    diag = np.exp(-a * 1e-6) * (1 - x**2 / 6 + x**4 / 120) ** 2
    expected = case.offset + case.contrast * diag**2
    for k in range(case.phi.size):
        assert_spec_close(np.diag(np.asarray(g2[k])), np.full(case.t.size, expected[k]))
    static = StaticParams(*case.params[:3])
    assert np.array_equal(model.g1_shear(static), np.ones(g2.shape))
    assert np.array_equal(model.g1(static)[0], model.g1_diffusion(static))


def test_sinc_zero_and_perpendicular_angle():
    # constant γ̇ with s·γ̇ = π: adjacent frames sit on the first zero of sinc at φ = φ0, and the
    # shear factor is 1 (to 1e-30) perpendicular to the flow.
    q, L, dt = 0.01, 2e6, 1e-3
    s = q * L * dt / (2 * np.pi)
    p = LaminarFlowParams(1e-3, 0.0, 0.0, np.pi / s, 0.0, 0.0, 20.0)
    model = HomodyneModel(q=q, dt=dt, n_frames=5, phi=[20.0, 110.0], L=L)
    shear = np.asarray(model.g1_shear(p))
    i = np.arange(5)
    assert np.all(shear[0][np.abs(i[:, None] - i[None, :]) == 1] < 1e-20)
    assert np.all(shear[0][np.abs(i[:, None] - i[None, :]) == 2] < 1e-20)
    assert np.all(np.abs(shear[1] - 1.0) < 1e-12)


def test_contrast_and_offset_scale_g1_squared():
    case = CASES[3]
    model = model_of(case)
    p = homodyne.params_from_array(case.params)
    g1 = np.asarray(model.g1(p))
    contrast, offset = np.array([0.1, 0.5, 0.9]), np.array([0.9, 1.0, 1.2])
    g2 = np.asarray(model.g2(p, contrast, offset))
    np.testing.assert_allclose(g2, offset[:, None, None] + contrast[:, None, None] * g1**2, 1e-15)
    assert np.array_equal(model.g2(p, 0.3, 1.1), model(p, 0.3, 1.1))
    # scalar contrast is broadcast to every angle
    assert np.array_equal(model.g2(p, 0.3, 1.1), model.g2(p, [0.3] * 3, [1.1] * 3))


def test_n_frames_and_time_origin():
    a = HomodyneModel(q=0.01, dt=0.1, n_frames=6, time_origin=2.0)
    np.testing.assert_allclose(a.t, 2.0 + 0.1 * np.arange(6), rtol=1e-15)
    b = HomodyneModel(q=0.01, dt=0.1, t=2.0 + 0.1 * np.arange(6))
    p = StaticParams(1e4, -0.5, 0.0)
    np.testing.assert_allclose(a.g2(p, 0.3, 1.0), b.g2(p, 0.3, 1.0), rtol=1e-14)
    one = HomodyneModel(q=0.01, dt=0.1, n_frames=1)  # single frame: time floor 1e-8
    assert_spec_close(one.g1_diffusion(p), ref.g1_diffusion((1e4, -0.5, 0.0), [0.0], 0.01, 0.1))
    # t0 is time_origin's deprecated name; a time origin with explicit times is not ignored silently
    with pytest.warns(DeprecationWarning, match="use time_origin"):
        old = HomodyneModel(q=0.01, dt=0.1, n_frames=6, t0=2.0)
    np.testing.assert_array_equal(old.t, a.t)
    with pytest.raises(ValueError, match="time_origin goes with n_frames"):
        HomodyneModel(q=0.01, dt=0.1, t=b.t, time_origin=1.0)
    with pytest.raises(ValueError, match="time_origin only"):
        HomodyneModel(q=0.01, dt=0.1, n_frames=6, time_origin=1.0, t0=2.0)


# --- parameters --------------------------------------------------------------------------------


def test_params_round_trip_and_errors():
    flat = np.arange(1.0, 8.0)
    p = homodyne.params_from_array(flat)
    assert isinstance(p, LaminarFlowParams) and np.array_equal(p.to_array(), flat)
    assert p.to_array().dtype == jnp.float64
    assert np.array_equal(p.diffusion_part().to_array(), flat[:3])
    s = homodyne.params_from_array(flat[:3])
    assert isinstance(s, StaticParams) and not s.is_laminar_flow and p.is_laminar_flow
    batch = homodyne.params_from_array(np.ones((4, 7)))
    assert batch.D0.shape == (4,) and batch.to_array().shape == (4, 7)
    for bad in (np.ones(4), np.ones(0), 1.0, np.ones((2, 5))):
        with pytest.raises(ValueError, match="3 values"):
            homodyne.params_from_array(bad)
    with pytest.raises(ValueError, match="needs 3 values"):
        StaticParams.from_array(flat)
    with pytest.raises(ValueError, match="3 values"):
        HomodyneModel(q=0.01, dt=0.1, n_frames=3).g2(np.ones(5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(q=0.0, dt=0.1, n_frames=3), "q must be finite and > 0"),
        (dict(q=-0.01, dt=0.1, n_frames=3), "q must be"),
        (dict(q=0.01, dt=None, n_frames=3), "dt is required"),
        (dict(q=0.01, dt=0.0, n_frames=3), "must come from the experiment's configuration"),
        (dict(q=0.01, dt=float("nan"), n_frames=3), "dt must be finite"),
        (dict(q=0.01, dt=-1.0, n_frames=3), "dt must be finite"),
        (dict(q=0.01, dt=0.1, n_frames=3, L=0.0), "L must be"),
        (dict(q=0.01, dt=0.1), "exactly one of t"),
        (dict(q=0.01, dt=0.1, n_frames=3, t=[0.0, 1.0]), "exactly one of t"),
        (dict(q=0.01, dt=0.1, n_frames=0), "n_frames must be a positive integer"),
        (dict(q=0.01, dt=0.1, t=[[0.0, 1.0]]), "1-D vector"),
        (dict(q=0.01, dt=0.1, t=[0.0, np.nan]), "NaN or infinite"),
        (dict(q=0.01, dt=0.1, n_frames=3, phi=[]), "phi is empty"),
        (dict(q=[0.01, 0.02], dt=0.1, n_frames=3), "q must be a scalar"),
    ],
)
def test_model_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HomodyneModel(**kwargs)


def test_n_frames_types_and_batched_params():
    assert HomodyneModel(q=0.01, dt=0.1, n_frames=np.int64(4)).n_frames == 4
    with pytest.raises(ValueError, match="positive integer"):
        HomodyneModel(q=0.01, dt=0.1, n_frames=True)
    with pytest.raises(ValueError, match="positive integer"):
        HomodyneModel(q=0.01, dt=0.1, n_frames=4.0)  # type: ignore[arg-type]
    model = HomodyneModel(q=0.01, dt=0.1, n_frames=4)
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        model.g2(StaticParams.from_array(np.ones((2, 3))))


def test_model_rejects_bad_contrast_shape():
    model = HomodyneModel(q=0.01, dt=0.1, n_frames=3, phi=[0.0, 90.0])
    with pytest.raises(ValueError, match="one value per angle"):
        model.g2(StaticParams(1e4, 0.0, 0.0), contrast=[0.1, 0.2, 0.3])


# --- derivatives -------------------------------------------------------------------------------

# moderate decay and a shear phase up to ~5 rad: every parameter matters, and finite differences
# are not drowned by the fast oscillation of a strong-shear case.
DERIV_CASE = Case(
    "derivatives",
    (1.0e4, -0.4, 5.0, 1.2e-3, -0.4, 1e-4, 12.0),
    np.arange(30) * 0.1,
    np.array([0.0, 30.0, 78.0, 135.0]),
    0.0054,
    2e6,
    0.1,
)


def smooth_weights(case, seed):
    """Random weights, zero where g1 is within reach of its floor: there the straight-through
    derivative (deliberately) differs from finite differences of the floored value."""
    g1 = ref.g1_total(case.params, case.t, case.phi, case.q, case.L, case.dt)
    noise = np.random.default_rng(seed).normal(size=g1.shape)
    return jnp.asarray(noise * (g1 > 1e-7))


def _weighted_g2(flat, model, weights):
    return jnp.sum(weights * model.g2(homodyne.params_from_array(flat), 0.4, 1.0))


@pytest.mark.parametrize("mode", ["static", "laminar"])
def test_parameter_gradient_matches_central_differences(mode):
    case = DERIV_CASE
    model = model_of(case)
    flat = np.array(case.params[:3] if mode == "static" else case.params)
    weights = smooth_weights(case, 1)
    f = jax.jit(_weighted_g2)
    grad = np.asarray(jax.grad(_weighted_g2)(jnp.asarray(flat), model, weights))
    for i in range(flat.size):

        def along(x, i=i):
            shifted = flat.copy()
            shifted[i] = x
            return float(f(shifted, model, weights))

        fd = central_difference(along, flat[i], 1e-3 * max(abs(flat[i]), 1e-2))
        assert grad[i] == pytest.approx(fd, rel=1e-6, abs=1e-12), i


def test_model_field_gradient_matches_central_differences():
    case = DERIV_CASE
    model = model_of(case)
    p = homodyne.params_from_array(case.params)

    weights = smooth_weights(case, 2)

    def loss(m):
        return jnp.sum(weights * m.g1(p))

    grads = eqx.filter_grad(loss)(model)
    for name in ("q", "L", "dt"):
        value = float(getattr(model, name))

        def along(x, n=name):
            return float(loss(eqx.tree_at(lambda m: getattr(m, n), model, jnp.asarray(x))))

        fd = central_difference(along, value, 1e-5 * value)
        assert float(getattr(grads, name)) == pytest.approx(fd, rel=1e-6), name
    # the angles are leaves too
    for k in range(case.phi.size):

        def turn(x, k=k):
            return float(loss(eqx.tree_at(lambda m: m.phi, model, model.phi.at[k].set(x))))

        fd = central_difference(turn, case.phi[k], 1e-3)
        assert float(grads.phi[k]) == pytest.approx(fd, rel=1e-6, abs=1e-10), k
    # and a model built inside the differentiated function gives the same dq
    dq = jax.grad(lambda q: loss(HomodyneModel(q=q, dt=case.dt, t=case.t, phi=case.phi)))
    assert float(dq(case.q)) == pytest.approx(float(grads.q), rel=1e-12)


def test_floors_pass_the_unfloored_derivative():
    # D(t) = D0 + D_offset with D_offset ≪ 0: every rate is floored at 1e-10, so the value does
    # not depend on D_offset, but the straight-through derivative does. Independent derivation:
    # C_i = Σ trapezoid of the floored rate = 1e-10·i, dC_i/dD_offset = i (unfloored),
    # M_ij = sqrt((C_i − C_j)² + 1e-12), g1 = exp(−a·M), dg1/dD_offset = −a·g1·(C_i−C_j)(i−j)/M_ij.
    q, dt, n = 0.05, 1.0, 8
    model = HomodyneModel(q=q, dt=dt, n_frames=n, time_origin=1.0)
    p = StaticParams(10.0, 0.0, -1e3)
    grad = jax.jacfwd(lambda d: model.g1_diffusion(StaticParams(10.0, 0.0, d)))(p.D_offset)
    i = np.arange(n, dtype=float)
    c = 1e-10 * i
    m = np.sqrt((c[:, None] - c[None, :]) ** 2 + 1e-12)
    a = 0.5 * q**2 * dt
    g1 = np.exp(-a * m)
    expected = -a * g1 * (c[:, None] - c[None, :]) * (i[:, None] - i[None, :]) / m
    assert np.any(np.asarray(grad) != 0)
    np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-30)
    # finite differences of the value see a flat function: the floor really is active
    flat = model.g1_diffusion(StaticParams(10.0, 0.0, -1e3 + 1.0))
    assert np.array_equal(flat, model.g1_diffusion(p))


def test_g1_floor_passes_the_unfloored_derivative():
    # exp(−a·M) = e^−30 < 1e-10 at the far corner: g1 is floored there, its D0-derivative is not 0
    model = HomodyneModel(q=0.1, dt=1.0, n_frames=4)
    d0 = jnp.asarray(2000.0)

    def corner(d):
        return model.g1(StaticParams(d, 0.0, 0.0))[0, 0, 3]

    assert float(corner(d0)) == 1e-10
    a, m = 0.5 * 0.1**2, 3 * 2000.0
    expected = -a * 3 * np.exp(-a * m)  # d/dD0 exp(−a·D0·3)
    assert float(jax.grad(corner)(d0)) == pytest.approx(expected, rel=1e-9)


# --- transforms and compilation ----------------------------------------------------------------


def test_jit_vmap_grad_hessian_over_parameters():
    case = CASES[1]
    model = model_of(case)
    batch = StaticParams.from_array(np.array([case.params, [1e4, -0.5, 0.0], [3e4, 0.2, 5.0]]))
    out = jax.vmap(lambda p: model.g2(p, 0.4, 1.0))(batch)
    for b in range(3):
        single = StaticParams.from_array(batch.to_array()[b])
        np.testing.assert_allclose(out[b], model.g2(single, 0.4, 1.0), rtol=1e-14)
    jitted = jax.jit(jax.vmap(lambda p: model.g2(p, 0.4, 1.0)))(batch)
    np.testing.assert_allclose(jitted, out, rtol=1e-14)
    p0 = StaticParams(*case.params)
    hess = jax.hessian(lambda x: jnp.sum(model.g1(StaticParams.from_array(x))))(p0.to_array())
    assert hess.shape == (3, 3) and np.allclose(hess, hess.T, rtol=1e-10)
    grad = eqx.filter_grad(lambda p: jnp.sum(model.g2(p, 0.4, 1.0)))(p0)
    assert isinstance(grad, StaticParams) and np.isfinite(grad.to_array()).all()


def test_new_values_do_not_recompile():
    p = LaminarFlowParams(1e4, -0.3, 2.0, 1e-3, 0.1, 0.0, 3.0)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def evaluate(model, params, contrast, offset):
        return model.g2(params, contrast, offset)

    base = HomodyneModel(q=0.0054, dt=0.1, n_frames=9, phi=[0.0, 45.0])
    variants = [
        base,
        HomodyneModel(q=0.007, dt=0.1, n_frames=9, phi=[0.0, 45.0]),
        HomodyneModel(q=0.0054, dt=0.05, n_frames=9, phi=[0.0, 45.0]),
        HomodyneModel(q=0.0054, dt=0.1, n_frames=9, phi=[10.0, 80.0], L=1e6),
        HomodyneModel(q=0.0054, dt=0.1, n_frames=9, time_origin=100.0, phi=[0.0, 45.0]),
    ]
    results = []
    for i, model in enumerate(variants):
        contrast = jnp.asarray([0.2 + 0.01 * i, 0.3])
        results.append(evaluate(model, p, contrast, jnp.asarray([1.0, 1.0])))
    new_params = LaminarFlowParams(2e4, 0.3, 0.0, 2e-3, -0.1, 1e-4, -3.0)
    evaluate(base, new_params, jnp.asarray([0.3, 0.3]), jnp.asarray([1.0, 1.0]))
    # the values really changed (the cache was not serving a stale result)
    assert len({float(r[0, 0, 8]) for r in results}) == len(results)


def test_rates_under_jit_and_grad():
    model = HomodyneModel(q=0.01, dt=0.1, n_frames=6, time_origin=1.0)
    p = LaminarFlowParams(1e4, -0.5, 10.0, 1e-3, 0.5, 1e-4, 0.0)
    d, g = eqx.filter_jit(model.rates)(p)  # jax.jit cannot hash a bound method's arrays
    t = 1.0 + 0.1 * np.arange(6)
    np.testing.assert_allclose(d, 1e4 * t**-0.5 + 10.0, rtol=1e-14)
    np.testing.assert_allclose(g, 1e-3 * t**0.5 + 1e-4, rtol=1e-14)
    dd = jax.grad(lambda a: jnp.sum(model.rates(eqx.tree_at(lambda q: q.alpha, p, a))[0]))(p.alpha)
    assert float(dd) == pytest.approx(float(np.sum(1e4 * t**-0.5 * np.log(t))), rel=1e-12)
