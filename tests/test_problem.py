"""The tiled least-squares problem against dense computations on the full (n_phi, N, N) grid.

The oracle here is the model's own full-grid g1 (itself checked against the NumPy reference in
test_kernels) with plain `jax.jacfwd` and dense linear algebra: none of the tiling, the
hand-written pair Jacobian, the Schur elimination or the compression is shared with it.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from helpers import CASE_IDS, CASES, Case

from homodyne import FitSpec, HomodyneModel, LaminarFlowParams, StaticParams
from homodyne import _pairs as pairs_module
from homodyne import _problem as problem_module
from homodyne._fit import _build
from homodyne._problem import compressed_residuals, reduced_normal_equations, retiled

# well determined contrast and offset (the kernel CASES probe regimes, where some are not)
FIT_CASE = Case(
    "fit_like",
    (1.2e4, -0.5, 50.0, 3e-4, 0.4, 2e-5, 4.0),
    1.0 + np.arange(40) * 0.1,
    np.array([0.0, 45.0, 90.0]),
    0.0054,
    2e6,
    0.1,
)


def problem_for(case, static=False, scaling="per_angle", tile_elements=None):
    model = HomodyneModel(q=case.q, L=case.L, dt=case.dt, t=case.t, phi=case.phi)
    cls = StaticParams if static else LaminarFlowParams
    params = cls.from_array(np.asarray(case.params[: len(cls.names)]))
    g2 = np.asarray(model.g2(params, 0.3, 1.0))
    rng = np.random.default_rng(0)
    noise = np.triu(rng.normal(scale=1e-3, size=g2.shape), 1)
    data = g2 + noise + np.swapaxes(noise, 1, 2)
    sigma = 1e-3 * (1 + rng.uniform(size=g2.shape))
    sigma = (sigma + np.swapaxes(sigma, 1, 2)) / 2
    # the regimes probed lie outside the default bounds of their experiments
    wide = {"D0": (1.0, 1e6), "D_offset": (-1e5, 1e5), "gamma_dot_t0": (1e-6, 10.0),
            "gamma_dot_t_offset": (-0.1, 0.1), "phi0": (-180.0, 180.0)}  # fmt: skip
    bounds = {n: wide[n] for n in cls.names if n in wide}
    problem, *_ = _build(model, data, sigma, params, FitSpec(bounds=bounds, scaling=scaling))
    if tile_elements is not None:  # the same problem in smaller tiles
        problem = retiled(problem, model, jnp.asarray(data), jnp.asarray(sigma), tile_elements)
    return model, problem, params, data, sigma


def dense(model, params, data, sigma):
    """Upper-triangle pairs of the full-grid model: g1² as a function of the free parameters."""
    n = model.n_frames
    rows, cols = np.triu_indices(n, 1)
    cls = type(params)

    def basis(theta):
        return (model.g1(cls.from_array(theta)) ** 2)[:, rows, cols]

    return basis, data[:, rows, cols], 1.0 / sigma[:, rows, cols]


# compiled once per shape: run eagerly, each of the many small operations is dispatched alone
_pairs_jit = jax.jit(pairs_module.g1_squared_and_jacobian_on_pairs, static_argnums=1)
_basis_jit = jax.jit(problem_module._basis, static_argnums=0)


@eqx.filter_jit
def _profiles_and_jacobian(problem, theta):
    return problem.profiles(theta), jax.jacfwd(problem.profiles)(theta)


# several q rings in one model: q per bin (the strong-shear physics on four bins of three rings)
PER_BIN = Case(
    "q_per_bin",
    (1.0e4, -0.4, 5.0, 0.8, -0.4, 0.05, 12.0),
    np.arange(30) * 0.1,
    np.array([0.0, 78.0, 30.0, 135.0]),
    np.array([0.0040, 0.0040, 0.0054, 0.0090]),  # type: ignore[arg-type]
    2e6,
    0.1,
)


def test_q_per_bin_is_each_ring_on_its_own():
    # independent: the NumPy transcription of SPEC §2, one bin at a time with its own q
    model = HomodyneModel(q=PER_BIN.q, L=PER_BIN.L, dt=PER_BIN.dt, t=PER_BIN.t, phi=PER_BIN.phi)
    params = LaminarFlowParams.from_array(np.asarray(PER_BIN.params))
    contrast, offset = np.array([0.2, 0.3, 0.4, 0.5]), np.array([1.0, 1.01, 0.99, 1.02])
    got = np.asarray(model.g2(params, contrast, offset))
    for k in range(4):
        want = ref.g2(PER_BIN.params, PER_BIN.t, PER_BIN.phi[k:k + 1], PER_BIN.q[k], PER_BIN.L,
                      contrast[k], offset[k], PER_BIN.dt)  # fmt: skip
        np.testing.assert_allclose(got[k], want[0], rtol=1e-12, atol=1e-13)
    assert model.g1_diffusion(params).shape == (4, 30, 30)
    np.testing.assert_array_equal(model.q_per_bin, PER_BIN.q)
    with pytest.raises(ValueError, match="one value per bin"):
        HomodyneModel(q=[0.004, 0.005], dt=0.1, n_frames=5, phi=[0.0, 10.0, 20.0])
    with pytest.raises(ValueError, match="finite and > 0 in every bin"):
        HomodyneModel(q=[0.004, -0.005], dt=0.1, n_frames=5, phi=[0.0, 10.0])


@pytest.mark.parametrize("case", [*CASES, PER_BIN], ids=[*CASE_IDS, PER_BIN.name])
def test_pair_values_and_jacobian_match_the_full_grid(case):
    for static in (True,) if len(case.params) == 3 else (True, False):
        model, problem, params, data, sigma = problem_for(case, static)
        basis, _, _ = dense(model, params, data, sigma)
        theta = params.to_array()
        want_x = jax.jit(basis)(theta)
        want_dx = jax.jit(jax.jacfwd(basis))(theta)  # (n_phi, n_pairs, P)
        prof, prof_jac = _profiles_and_jacobian(problem, theta)
        n_pairs = want_x.shape[1]
        got_x, got_dx = [], []
        a = model.wavevector_q_squared_half_dt
        gather = jax.jit(pairs_module.at_frames)
        for rows, cols in zip(problem.rows, problem.cols, strict=True):
            x, dx = _pairs_jit(
                a, model.n_phi, gather(prof, rows), gather(prof, cols),
                gather(prof_jac, rows), gather(prof_jac, cols),
            )  # fmt: skip
            got_x.append(x)
            got_dx.append(dx)
        # the tiles' slots in the order of np.triu_indices (the padding, weight 0, left out)
        i, j = np.ravel(problem.rows), np.ravel(problem.cols)
        slot = np.flatnonzero(np.asarray(problem.weight)[:, :, 0].ravel() > 0)  # (n_tiles, T, ·)
        n = model.n_frames
        order = slot[np.argsort(i[slot] * (2 * n - i[slot] - 1) // 2 + j[slot] - i[slot] - 1)]
        assert order.size == n_pairs
        got_x = np.concatenate(got_x, axis=1)[:, order]
        got_dx = np.concatenate(got_dx, axis=2)[:, :, order]
        # the same operations as the full-grid kernels; XLA may vectorise sin differently, which
        # shows only in the last bits near zeros of sinc
        np.testing.assert_allclose(got_x, want_x, rtol=1e-12, atol=1e-20)
        x_only = np.concatenate(
            [
                _basis_jit(model.n_phi, a, prof, r, c)
                for r, c in zip(problem.rows, problem.cols, strict=True)
            ],
            1,
        )[:, order]
        np.testing.assert_allclose(x_only, want_x, rtol=1e-12, atol=1e-20)
        # jacfwd differentiates sin(Φ)/Φ as cos/Φ − sin/Φ², which cancels for small Φ (relative
        # error ~eps/Φ², 1e-8 near Φ = 1e-4); the pair Jacobian uses the series there instead
        scale = np.max(np.abs(want_dx), axis=(0, 1)) + 1e-300
        np.testing.assert_allclose(
            np.moveaxis(got_dx, 1, 2) / scale, np.asarray(want_dx) / scale, rtol=0, atol=1e-10
        )


def test_sinc_derivative_is_accurate_through_the_series_switch():
    """d sinc/dΦ on both sides of the switch against mpmath-free exact values: the series of
    (Φ cos Φ − sin Φ)/Φ² summed to convergence in exact rational steps."""
    from fractions import Fraction

    def exact(phi: float) -> float:
        x, total, term, n = Fraction(phi), Fraction(0), None, 1
        # d/dΦ Σ (−1)^n Φ^{2n}/(2n+1)! = Σ (−1)^n 2n Φ^{2n−1}/(2n+1)!
        fact = Fraction(6)  # (2n+1)! for n = 1
        while True:
            term = (-1) ** n * 2 * n * x ** (2 * n - 1) / fact
            total += term
            if abs(term) < Fraction(1, 10**40):
                return float(total)
            n += 1
            fact *= (2 * n) * (2 * n + 1)

    phis = np.array([1e-6, 3e-5, 0.01, 0.0999, 0.1001, 0.5, 2.0])
    at = (jnp.zeros(1), jnp.zeros(1), jnp.asarray(phis))
    at_j = (jnp.zeros(1), jnp.ones(1), jnp.asarray(phis))  # M^γ = 1: Φ = factor
    zeros = (jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.zeros((phis.size, 1)))
    dfactor = (jnp.zeros((1, 1)), jnp.zeros((1, 1)), jnp.ones((phis.size, 1)))
    x, dx = pairs_module.g1_squared_and_jacobian_on_pairs(
        jnp.asarray(0.0), phis.size, at, at_j, dfactor, zeros
    )
    m = np.sqrt(1 + 1e-12)  # M^γ of the pair (SPEC's ε under the root)
    s = np.sinc(phis * m / np.pi)  # numpy's sinc is normalised
    want = 4 * s**3 * np.array([exact(p * m) for p in phis]) * m  # ∂ sinc⁴(factor·M)/∂factor
    np.testing.assert_allclose(np.asarray(x)[:, 0], s**4, rtol=1e-14)
    np.testing.assert_allclose(np.asarray(dx)[:, 0, 0], want, rtol=1e-13, atol=1e-300)


def test_the_cases_exercise_the_special_branches():
    """The pair Jacobian has branches for the sinc series, the g1 floor and the exponent clip;
    make sure the cases above reach them."""
    reached = {"series": False, "floor": False, "clip": False}
    for case in CASES:
        model, problem, params, _, _ = problem_for(case, static=len(case.params) == 3)
        a = float(model.wavevector_q_squared_half_dt)
        c_d, c_g, factor = eqx.filter_jit(type(problem).profiles)(problem, params.to_array())
        rows, cols = np.triu_indices(model.n_frames, 1)
        m_d = np.sqrt((c_d[rows] - c_d[cols]) ** 2 + 1e-12)
        if c_g is not None:
            m_g = np.sqrt((c_g[rows] - c_g[cols]) ** 2 + 1e-12)
            phase = np.asarray(factor)[:, None] * m_g[None, :]
            reached["series"] |= bool(np.any(np.abs(phase) < 1e-4))
        reached["clip"] |= bool(np.any(-a * m_d < -700))
        reached["floor"] |= bool(np.any(np.exp(np.maximum(-a * m_d, -700)) < 1e-10))
    assert all(reached.values()), reached


@pytest.mark.parametrize(
    "scaling, case", [("per_angle", CASES[2]), ("shared", CASES[2]), ("per_angle", PER_BIN)]
)
def test_information_equals_the_dense_jacobian(scaling, case):
    """JᵀJ, Jᵀr, χ² over [physical, contrast, offset], with tiles of a few hundred pairs so that
    several tiles and a padded last tile are summed (strong shear, 30 frames: 435 pairs; on one
    ring of 6 angles, and on 4 bins of 3 rings)."""
    model, problem, params, data, sigma = problem_for(case, False, scaling, 600)
    assert problem.rows.shape[0] > 1 and problem.rows.size > 435
    basis, d, w = dense(model, params, data, sigma)
    theta = params.to_array() * 1.05
    n_phi = model.n_phi
    contrast = jnp.linspace(0.25, 0.35, n_phi) if scaling == "per_angle" else jnp.full(n_phi, 0.3)
    offset = jnp.linspace(0.99, 1.01, n_phi) if scaling == "per_angle" else jnp.full(n_phi, 1.0)

    def residuals(p):
        th, c, b = p[:7], p[7 : 7 + n_lin], p[7 + n_lin :]
        if scaling == "shared":
            c, b = jnp.full(n_phi, c[0]), jnp.full(n_phi, b[0])
        return ((d - b[:, None] - c[:, None] * basis(th)) * w).ravel()

    n_lin = n_phi if scaling == "per_angle" else 1
    p0 = jnp.concatenate([theta, contrast[:n_lin], offset[:n_lin]])
    jac, r = jax.jit(lambda p: (jax.jacfwd(residuals)(p), residuals(p)))(p0)
    h, g, chi2 = eqx.filter_jit(type(problem).information)(problem, theta, contrast, offset)
    np.testing.assert_allclose(chi2, np.sum(r**2), rtol=1e-12)
    scale = np.sqrt(np.diag(jac.T @ jac))
    np.testing.assert_allclose(
        h / np.outer(scale, scale), jac.T @ jac / np.outer(scale, scale), atol=1e-10
    )
    np.testing.assert_allclose(g / scale, jac.T @ r / scale, atol=1e-9 * np.sqrt(chi2))


@pytest.mark.slow  # 18–24 s of compilation; test_information_equals_the_dense_jacobian covers the sums
def test_reduced_equations_are_the_projected_gauss_newton_system():
    """Contrast and offset eliminated: the gradient is that of ½χ² at optimal scaling (compared with
    a central difference of the dense projected χ²), the matrix is Kaufman's J_θᵀ(I − P)J_θ."""
    model, problem, params, data, sigma = problem_for(FIT_CASE, False, "per_angle", 600)
    basis, d, w = dense(model, params, data, sigma)
    u = problem.transform.to_internal(params.to_array() * 1.1)
    assert bool(jnp.all(problem.linear_free(*problem.scaling(problem.physical(u)))))

    def projected(u):
        x = basis(problem.physical(u))
        chi2, cols = 0.0, []
        for k in range(model.n_phi):  # ordinary weighted least squares per angle, dense
            a = jnp.stack([w[k] * x[k], w[k]], 1)
            coef = jnp.linalg.lstsq(a, w[k] * d[k])[0]
            chi2 = chi2 + jnp.sum((w[k] * d[k] - a @ coef) ** 2)
            cols.append(a)
        return chi2, cols

    h, g, chi2 = reduced_normal_equations(problem, u)
    np.testing.assert_allclose(chi2, projected(u)[0], rtol=1e-10)
    eye = np.eye(u.size)
    fd = np.array([(projected(u + 1e-6 * e)[0] - projected(u - 1e-6 * e)[0]) / 4e-6 for e in eye])
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6 * np.max(np.abs(fd)))
    # Kaufman: per angle, project the weighted Jacobian off the span of [w·x, w]
    jac = jax.jacfwd(lambda v: basis(problem.physical(v)))(u)  # (n_phi, n_pairs, F)
    _, cols = projected(u)
    c, _ = problem.scaling(problem.physical(u))
    want = np.zeros((u.size, u.size))
    for k in range(model.n_phi):
        jk = -c[k] * w[k][:, None] * jac[k]
        q, _ = np.linalg.qr(np.asarray(cols[k]))
        jk = jk - q @ (q.T @ jk)
        want += jk.T @ jk
    scale = np.sqrt(np.diag(want))
    np.testing.assert_allclose(h / np.outer(scale, scale), want / np.outer(scale, scale), atol=1e-9)


@pytest.mark.slow  # 18–24 s of compilation; test_information_equals_the_dense_jacobian covers the sums
def test_compressed_residuals_carry_chi2_and_the_gauss_newton_model():
    _, problem, params, _, _ = problem_for(FIT_CASE)
    u = problem.transform.to_internal(params.to_array() * 0.9)
    h, g, chi2 = reduced_normal_equations(problem, u)
    r = compressed_residuals(u, problem)
    assert r.shape == (u.size + 1,)
    np.testing.assert_allclose(np.sum(r**2), chi2, rtol=1e-12)
    jac = jax.jacfwd(compressed_residuals)(u, problem)
    np.testing.assert_allclose(jac[-1], 0.0)
    np.testing.assert_allclose(jac.T @ jac, h, rtol=1e-9, atol=1e-9 * np.max(np.abs(h)))
    np.testing.assert_allclose(jac.T @ r, g, rtol=1e-9, atol=1e-9 * np.max(np.abs(g)))
    # reverse mode (used by minimisers) gives the same gradient
    grad = jax.grad(lambda v: 0.5 * jnp.sum(compressed_residuals(v, problem) ** 2))(u)
    np.testing.assert_allclose(grad, g, rtol=1e-9, atol=1e-9 * np.max(np.abs(g)))


def test_compressed_residuals_differentiate_in_the_data():
    """The data tangent is that of the value as computed: compare with a central difference."""
    _, problem, params, _, _ = problem_for(FIT_CASE)
    u = problem.transform.to_internal(params.to_array() * 0.9)
    direction = jnp.asarray(np.random.default_rng(1).normal(size=problem.data.shape))

    def f(eps):
        moved = eqx.tree_at(lambda p: p.data, problem, problem.data + eps * direction)
        return compressed_residuals(u, moved)

    # compiled (run eagerly, each of the pass's many small operations would compile alone)
    _, tangent = jax.jit(lambda: jax.jvp(f, (0.0,), (1.0,)))()
    f = jax.jit(f)
    fd = (f(1e-6) - f(-1e-6)) / 2e-6
    np.testing.assert_allclose(tangent, fd, rtol=1e-5, atol=1e-6 * np.max(np.abs(fd)))


def test_clipped_contrast_stays_fixed_in_the_elimination():
    """Where a contrast is clipped to its bound, the offset alone is eliminated for that angle: the
    reduced gradient is still the derivative of the projected χ² (dense oracle with clipping)."""
    model, problem, params, data, sigma = problem_for(CASES[2])  # contrast unresolvable on most
    basis, d, w = dense(model, params, data, sigma)
    u = problem.transform.to_internal(params.to_array())
    contrast, offset = problem.scaling(problem.physical(u))
    free = np.asarray(problem.linear_free(contrast, offset))
    n_phi = model.n_phi
    assert not free[:n_phi].all() and free[n_phi:].all()  # some contrasts clipped, offsets free

    def projected(u):
        x = basis(problem.physical(u))
        total = 0.0
        for k in range(n_phi):
            w2 = w[k] ** 2
            xm, dm = jnp.sum(w2 * x[k]) / jnp.sum(w2), jnp.sum(w2 * d[k]) / jnp.sum(w2)
            c = jnp.sum(w2 * (x[k] - xm) * (d[k] - dm)) / jnp.sum(w2 * (x[k] - xm) ** 2)
            c = jnp.clip(c, 0.0, 1.0)
            total = total + jnp.sum(w2 * (d[k] - (dm - c * xm) - c * x[k]) ** 2)
        return total

    _, g, chi2 = eqx.filter_jit(reduced_normal_equations)(problem, u)
    projected = jax.jit(projected)
    np.testing.assert_allclose(chi2, projected(u), rtol=1e-10)
    fd = np.array([(projected(u + 1e-6 * e) - projected(u - 1e-6 * e)) / 4e-6 for e in np.eye(7)])
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6 * np.max(np.abs(fd)))
