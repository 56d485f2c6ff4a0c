"""χ² in symmetric tiles against the dense sum over the full model array."""

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from homodyne import HomodyneModel, LaminarFlowParams, StaticParams
from homodyne import _chi2 as chi2_module
from homodyne import _kernels as k

PARAMS = LaminarFlowParams(1.2e4, -0.5, 50.0, 2e-2, 0.4, 2e-3, 4.0)


def setup(static=False):
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=13, phi=[0.0, 50.0], L=2e6, time_origin=0.5)
    p = StaticParams(1.2e4, -0.5, 50.0) if static else PARAMS
    g2 = np.asarray(model.g2(p, np.array([0.3, 0.25]), np.array([1.0, 1.01])))
    data = g2 + np.random.default_rng(3).normal(scale=1e-3, size=g2.shape)
    return model, p, g2, data


def blocked(model, p, data, sigma, tile_elements=None):
    return chi2_module.chi2_in_tiles(
        model.wavevector_q_squared_half_dt,
        model.sinc_prefactor,
        model.t,
        model.phi,
        p,
        jnp.array([0.3, 0.25]),
        jnp.array([1.0, 1.01]),
        jnp.asarray(data),
        jnp.asarray(sigma),
        tile_elements,
    )


# tile sides 3 (5 blocks, the last shifted back), 7 (2 blocks, overlapping), 13 (one tile)
@pytest.mark.parametrize("side", [3, 7, 13])
@pytest.mark.parametrize("sigma_shape", ["scalar", "per_angle", "per_column", "grid", "full"])
def test_tiles_sum_to_the_dense_chi2(side, sigma_shape):
    """Asymmetric data and σ: the tiles below the diagonal are read, not assumed."""
    for static in (False, True):
        model, p, g2, data = setup(static)
        sigma = {
            "scalar": 2e-3,
            "per_angle": np.array([1e-3, 3e-3])[:, None, None],
            "per_column": np.linspace(1e-3, 2e-3, 13),  # broadcasts along t2
            "grid": np.random.default_rng(5).uniform(1e-3, 2e-3, (13, 13)),
            "full": np.random.default_rng(4).uniform(1e-3, 2e-3, data.shape),
        }[sigma_shape]
        want = np.sum(((data - g2) / sigma) ** 2)
        got = jax.jit(blocked, static_argnums=4)(model, p, data, sigma, 2 * side * side)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_gradient_matches_central_differences():
    model, _, _, data = setup()
    data = data + 0.05  # away from the minimum, so that every component is sizeable

    @jax.jit
    def f(x):
        return blocked(model, LaminarFlowParams.from_array(x), data, 1e-3, 2 * 7 * 7)

    x = PARAMS.to_array()
    grad = jax.jit(jax.grad(f))(x)
    for i in range(7):
        h = 1e-6 * max(abs(float(x[i])), 1e-2)
        e = np.zeros(7)
        e[i] = h
        fd = (float(f(x + e)) - float(f(x - e))) / (2 * h)
        assert float(grad[i]) == pytest.approx(fd, rel=1e-5, abs=1e-6 * abs(float(f(x))))


# --- the shear factor by angle addition -------------------------------------------------------


def test_phase_tables_are_those_of_the_exact_product():
    """sin/cos of κ·C as real numbers (not of fl(κ·C)), to an ulp, for phases up to 1e7."""
    kappa = np.array([3.0e-3, -0.77, 171.678, -3183.1, 1234.5678])
    c_g = np.concatenate([[0.0], np.cumsum(np.random.default_rng(0).uniform(0, 700, 15))])
    sin, cos = jax.jit(chi2_module.phase_tables)(jnp.asarray(kappa), jnp.asarray(c_g))
    mpmath.mp.prec = 200
    worst = 0.0
    for a, k_ in enumerate(kappa):
        for i, c in enumerate(c_g):
            theta = mpmath.mpf(float(k_)) * mpmath.mpf(float(c))  # exact in 200 bits
            worst = max(worst, abs(float(sin[a, i]) - float(mpmath.sin(theta))))
            worst = max(worst, abs(float(cos[a, i]) - float(mpmath.cos(theta))))
    assert worst <= 3e-16
    assert np.max(np.abs(kappa[:, None] * c_g[None, :])) > 1e7


@functools.partial(jax.jit, static_argnums=(2, 3, 4))  # one compilation, not one per operation
def _tile_inputs(kappa, c_g, r0, c0, size):
    sin, cos = chi2_module.phase_tables(jnp.asarray(kappa), jnp.asarray(c_g))
    frames = (jnp.zeros_like(jnp.asarray(c_g)), jnp.asarray(c_g), sin, cos)
    rows = tuple(f[..., r0 : r0 + size] for f in frames)
    cols = tuple(f[..., c0 : c0 + size] for f in frames)
    return rows, cols


def _mp_sinc_and_derivative(phase):
    x = mpmath.mpf(phase)
    if x == 0:
        return 1.0, 0.0
    return float(mpmath.sin(x) / x), float((mpmath.cos(x) - mpmath.sin(x) / x) / x)


@pytest.mark.parametrize(
    "label, kappa, step, r0, c0, expected",
    [
        ("far tile", [171.7, -88.0, 30.0], 2e-3, 0, 40, 0),
        ("diagonal tile", [171.7, -88.0, 30.0], 2e-3, 8, 8, 1),
        ("an angle with κ ≈ 0", [171.7, 1e-14], 2e-3, 0, 40, 1),
        ("κ beyond 1000 next to the diagonal", [3183.1, -2500.0], 1e-6, 8, 8, 2),
        ("κ beyond 1000, pairs far apart", [3183.1, -2500.0], 2e-3, 0, 40, 0),
    ],
)
def test_each_method_is_exact_where_it_is_chosen(label, kappa, step, r0, c0, expected):
    """sinc Φ and sinc' Φ against 200-bit arithmetic at Φ = κ·M (M as in SPEC §2.3), within the
    SPEC's tolerance for g2 (1e-12 relative, 1e-13 absolute); and the tile's branch is the one
    designed for it."""
    size = 16
    rng = np.random.default_rng(1)
    c_g = np.concatenate([[0.0], np.cumsum(step * rng.uniform(0.5, 1.5, 63))])
    kappa = np.asarray(kappa)
    rows, cols = _tile_inputs(kappa, c_g, r0, c0, size)
    branch = int(
        chi2_module._branch((None, np.min(np.abs(kappa)), np.max(np.abs(kappa))), rows[1], cols[1])
    )
    assert branch == expected, label
    method = chi2_module.METHODS[branch]
    sinc, dsinc, _, m_g = jax.jit(chi2_module._shear_on_tile, static_argnums=3)(
        jnp.asarray(kappa), rows, cols, method
    )
    mpmath.mp.prec = 200
    for a, k_ in enumerate(kappa):
        for i in range(size):
            for j in range(size):
                phase = mpmath.mpf(float(k_)) * mpmath.mpf(float(m_g[i, j]))
                want, dwant = _mp_sinc_and_derivative(phase)
                assert abs(float(sinc[a, i, j]) - want) <= 1e-12 * abs(want) + 1e-13, label
                assert abs(float(dsinc[a, i, j]) - dwant) <= 1e-11 * abs(dwant) + 1e-12, label


# --- derivatives: the one-pass rule against autodiff of the dense χ² ---------------------------


def dense_chi2(a, s, t, phi, x, contrast, offset, data, sigma, static):
    """Σ((data − g2)/σ)² on the full grid, with every derivative by autodiff of the kernels."""
    g1_d = k.g1_diffusion_from_integral(a, k.rate_integral(t, x[0], x[1], x[2]))
    if static:
        g1_s = jnp.ones((phi.shape[0], *g1_d.shape))
    else:
        g1_s = k.g1_shear_from_integral(s, x[6], phi, k.rate_integral(t, x[3], x[4], x[5]))
    g2 = k.g2_from_g1(k.combine_g1(g1_d, g1_s), contrast, offset)
    return jnp.sum(((data - g2) / sigma) ** 2)


def tiled_chi2(a, s, t, phi, x, contrast, offset, data, sigma, static, tile_elements=None):
    p = StaticParams.from_array(x[:3]) if static else LaminarFlowParams.from_array(x)
    return chi2_module.chi2_in_tiles(a, s, t, phi, p, contrast, offset, data, sigma, tile_elements)


def derivative_problem(static, regions=False):
    """Asymmetric data off the model; with ``regions``, pairs reach the exponent clip and the g1
    floor, and one angle sits at φ0 + 90° (Φ ≈ 0: the Taylor series)."""
    n = 13
    t = jnp.linspace(0.1, 1.3, n)
    phi = jnp.array([0.0, 50.0, 94.0]) if regions else jnp.array([0.0, 50.0])
    # with regions, D grows 170-fold along the run: g1_diff spans 1 to the clip
    x = jnp.array([1.2e4, 2.0 if regions else -0.5, 50.0, 2e-2, 0.4, 2e-3, 4.0])
    a = jnp.asarray(0.02 if regions else 0.5 * 0.0054**2 * 0.1)
    s = jnp.asarray(0.0054 * 2e6 * 0.1 / (2 * np.pi))
    contrast = jnp.linspace(0.25, 0.3, phi.shape[0])
    offset = jnp.linspace(1.0, 1.01, phi.shape[0])
    rng = np.random.default_rng(7)
    data = jnp.asarray(1.1 + rng.normal(scale=0.05, size=(phi.shape[0], n, n)))
    sigma = jnp.asarray(rng.uniform(1e-3, 2e-3, (phi.shape[0], n, n)))
    return a, s, t, phi, x, contrast, offset, data, sigma, static


def test_derivative_regions_are_reached():
    a, s, t, phi, x, *_ = derivative_problem(False, regions=True)
    m_d = k.rate_integral(t, x[0], x[1], x[2])
    assert float(jnp.max(a * m_d)) > 700  # the clip
    g1_d = k.g1_diffusion_from_integral(a, m_d)
    assert float(jnp.min(g1_d)) < k.G1_FLOOR < float(jnp.max(g1_d[g1_d < 1]))  # the floor
    kappa = s * jnp.cos(jnp.deg2rad(x[6] - phi))
    assert float(jnp.min(jnp.abs(kappa))) * float(jnp.max(k.rate_integral(t, *x[3:6]))) < 0.1


ARGS = (0, 1, 3, 4, 5, 6, 7, 8)  # a, s, φ, parameters, contrast, offset, data, σ


@pytest.mark.parametrize("side", [3, 7, 13])
@pytest.mark.parametrize("static, regions", [(False, False), (True, False), (False, True)])
def test_gradient_with_respect_to_everything_matches_dense_autodiff(side, static, regions):
    problem = derivative_problem(static, regions)
    tiled = functools.partial(tiled_chi2, tile_elements=3 * side * side)
    got = jax.jit(jax.grad(tiled, argnums=ARGS), static_argnums=9)(*problem)
    want = jax.jit(jax.grad(dense_chi2, argnums=ARGS), static_argnums=9)(*problem)
    np.testing.assert_allclose(
        float(jax.jit(tiled, static_argnums=9)(*problem)),
        float(jax.jit(dense_chi2, static_argnums=9)(*problem)),
        rtol=1e-12,
    )
    names = ["a", "s", "phi", "params", "contrast", "offset", "data", "sigma"]
    for name, g, w in zip(names, got, want, strict=True):
        if static and name in ("s", "phi"):
            continue  # static χ² does not depend on them
        g, w = np.asarray(g), np.asarray(w)
        if static and name == "params":
            g, w = g[:3], w[:3]
        scale = np.max(np.abs(w))
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11 * scale, err_msg=name)


def test_forward_mode_and_hessian_match_dense_autodiff():
    """Second derivatives differentiate the one-pass rule itself. Against dense autodiff with the
    clip, the floor and the Taylor series (an angle at φ0 + 90°) all reached."""
    problem = derivative_problem(False, True)[:9]
    tiled = functools.partial(tiled_chi2, tile_elements=3 * 5 * 5)
    x = problem[4]

    def f(x, fn):
        return fn(*problem[:4], x, *problem[5:], False)

    tangent = jnp.linspace(1.0, 2.0, 7) * x
    got = jax.jit(lambda x, v: jax.jvp(lambda x: f(x, tiled), (x,), (v,))[1])(x, tangent)
    want = jax.jit(lambda x, v: jax.jvp(lambda x: f(x, dense_chi2), (x,), (v,))[1])(x, tangent)
    assert float(got) == pytest.approx(float(want), rel=1e-10)
    h_got = np.asarray(jax.jit(jax.hessian(lambda x: f(x, tiled)))(x))
    h_want = np.asarray(jax.jit(jax.hessian(lambda x: f(x, dense_chi2)))(x))
    scale = np.sqrt(np.outer(*2 * [np.abs(np.diag(h_want))]))
    assert np.all(np.abs(h_got - h_want) <= 1e-8 * np.abs(h_want) + 1e-10 * scale)


def test_hessian_matches_differences_of_the_gradient():
    """With an angle at φ0 + 90° (Φ ≈ 0, the Taylor series): columns of the Hessian against
    central differences of the gradient."""
    problem = derivative_problem(False, True)
    x = problem[4]

    def f(x):
        return tiled_chi2(*problem[:4], x, *problem[5:], tile_elements=3 * 5 * 5)

    hessian = np.asarray(jax.jit(jax.hessian(f))(x))
    grad = jax.jit(jax.grad(f))
    scale = np.sqrt(np.outer(*2 * [np.abs(np.diag(hessian))]))
    for i in range(7):
        h = 1e-5 * abs(float(x[i]))
        e = jnp.zeros(7).at[i].set(h)
        column = (np.asarray(grad(x + e)) - np.asarray(grad(x - e))) / (2 * h)
        assert np.all(np.abs(hessian[:, i] - column) <= 1e-6 * np.abs(column) + 1e-7 * scale[:, i])


def test_large_kappa_uses_the_exact_branch_next_to_the_diagonal():
    """q = 0.1 Å⁻¹ and dt = 0.1 s give κ ≈ 3200: angle addition would lose digits next to the
    diagonal, so those tiles evaluate sinc from Φ; value and gradient still match the dense χ²."""
    a, _, t, phi, x, contrast, offset, data, sigma, static = derivative_problem(False)
    s = jnp.asarray(0.1 * 2e6 * 0.1 / (2 * np.pi))
    x = x.at[3].set(1e-6).at[5].set(1e-7)  # slow shear: small ΔC^γ next to the diagonal
    problem = (a, s, t, phi, x, contrast, offset, data, sigma, static)
    kappa = s * jnp.cos(jnp.deg2rad(x[6] - phi))
    assert float(jnp.max(jnp.abs(kappa))) > chi2_module.KAPPA_ANGLE_ADDITION
    tiled = functools.partial(tiled_chi2, tile_elements=2 * 4 * 4)
    both = jax.jit(lambda p: (tiled(*p[:9], False), dense_chi2(*p[:9], False)))(problem[:9])
    np.testing.assert_allclose(*both, rtol=1e-12)
    got = jax.jit(jax.grad(tiled, argnums=4), static_argnums=9)(*problem)
    want = jax.jit(jax.grad(dense_chi2, argnums=4), static_argnums=9)(*problem)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11 * np.max(np.abs(want)))
