"""The frame-level simulator (SPEC §6) and the error covariance for correlated C2 errors: checked
against NumPy re-derivations (the model's g1 from `numpy_reference`, the error covariance in the space of the data)
and against the seed-to-seed scatter of fits to simulated detector data."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

import homodyne
from homodyne import FitSpec, HomodyneModel, LaminarFlowParams, StaticParams
from homodyne._covariance import inverse, inverse_and_blind, window_covariance
from homodyne._fit import _angle_embedding, _build, _correlated_covariance

# compiled, as the fit runs them (run eagerly, each of their many small operations compiles alone)
inverse, inverse_and_blind, window_covariance, _correlated_covariance = map(
    eqx.filter_jit, (inverse, inverse_and_blind, window_covariance, _correlated_covariance)
)
_scaling = eqx.filter_jit(lambda problem, theta: problem.scaling(theta))
_information = eqx.filter_jit(lambda problem, *args: problem.information(*args))
_block_scores = eqx.filter_jit(lambda problem, *args: problem.block_scores(*args))

LAMINAR = LaminarFlowParams(8e4, -0.3, 5e3, 0.02, 0.2, 5e-3, 10.0)


def test_mean_c2_is_the_model_g2_and_the_diagonal_carries_the_shot_noise():
    model = HomodyneModel(q=0.01, L=2e6, dt=0.1, n_frames=24, phi=[0.0, 60.0], time_origin=1.0)
    modes, counts, seeds = 4, 2.0, 60
    runs = np.array(
        [
            homodyne.simulate_frames(model, LAMINAR, pixels=400, modes=modes, counts=counts, seed=s)
            for s in range(seeds)
        ]
    )
    assert runs.shape == (seeds, 2, 24, 24)
    np.testing.assert_allclose(runs, np.swapaxes(runs, -1, -2))
    t, phi = np.asarray(model.t), np.asarray(model.phi)
    g1 = ref.g1_total(LAMINAR.to_array(), t, phi, 0.01, 2e6, 0.1)  # NumPy, not the model
    expected = 1 + g1**2 / modes  # Siegert with M modes: contrast 1/M
    assert np.ptp(g1**2) > 0.5  # the window spans the decay and the shear's sinc²
    mean, error = runs.mean(0), runs.std(0, ddof=1) / np.sqrt(seeds)
    iu = np.triu_indices(24, 1)
    z = ((mean - expected) / error)[:, iu[0], iu[1]]
    assert 0.8 < np.sqrt(np.mean(z**2)) < 1.2, np.sqrt(np.mean(z**2))
    assert abs(np.mean(z)) < 0.2
    # the diagonal: ⟨x²⟩ = 1 + 1/M + 1/μ (shot noise)
    diag = np.diagonal(mean, axis1=-2, axis2=-1)
    diag_error = np.diagonal(error, axis1=-2, axis2=-1)
    excess = diag - (1 + 1 / modes)
    assert abs(np.mean(excess) - 1 / counts) < 3 * np.sqrt(np.mean(diag_error**2) / excess.size)


def test_simulator_argument_errors():
    model = HomodyneModel(q=0.01, dt=0.1, n_frames=8, phi=0.0)
    p = StaticParams(1e3, 0.0, 0.0)
    for kwargs, match in [
        ({"pixels": 1}, "pixels"),
        ({"modes": 0}, "modes"),
        ({"modes": 2.5}, "modes"),
        ({"counts": 0.0}, "counts"),
        ({"counts": float("nan")}, "counts"),
        ({"pixels": 10, "static_bins": 6}, "static bin"),
    ]:
        with pytest.raises(ValueError, match=match):
            homodyne.simulate_frames(model, p, **kwargs)
    with pytest.raises(TypeError, match="HomodyneModel"):
        homodyne.simulate_frames("model", p)  # pyright: ignore[reportArgumentType]


def test_inverse_of_an_information_matrix():
    # the fit's K × K inverse (no LAPACK): against NumPy on an information matrix with two
    # parameters correlated to 1 − 5e-9 and units 7 decades apart, in units of the standard errors;
    # a direction nothing informs gets a huge, finite variance and leaves the others exact
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 9))
    x[:, 1] = x[:, 0] + 1e-4 * x[:, 1]
    units = np.logspace(-3, 4, 9)
    h = x.T @ x * np.outer(units, units)
    expected = np.linalg.inv(x.T @ x) / np.outer(units, units)
    sd = np.sqrt(np.diag(expected))
    got, blind = map(np.asarray, inverse_and_blind(jnp.asarray(h)))
    np.testing.assert_allclose(got / np.outer(sd, sd), expected / np.outer(sd, sd), atol=1e-6)
    assert not blind.any()
    padded = np.zeros((10, 10))  # a parameter nothing depends on
    padded[1:, 1:] = h
    got, blind = map(np.asarray, inverse_and_blind(jnp.asarray(padded)))
    assert np.all(np.isfinite(got)) and got[0, 0] > 1e10
    assert blind.tolist() == [True] + [False] * 9
    np.testing.assert_allclose(
        got[1:, 1:] / np.outer(sd, sd), expected / np.outer(sd, sd), atol=1e-6
    )
    # three columns dependent (x2 = x0 + 0.01·x1): all three are blind, even x1, whose share in
    # the blind direction is 0.01 (its variance alone would be only 1e8 times its own)
    x = rng.normal(size=(300, 5))
    x[:, 2] = x[:, 0] + 0.01 * x[:, 1]
    _, blind = inverse_and_blind(jnp.asarray(x.T @ x * np.outer(units[:5], units[:5])))
    assert np.asarray(blind).tolist() == [True, True, True, False, False]


def _linear_pair_problem(rng, n, n_blocks, f, n_phi, concentrated=False):
    """A linear least-squares problem on the pairs (i, j) of ``n`` frames in ``n_blocks`` blocks and
    ``n_phi`` angles: ``f`` shared parameters and a slope and intercept per angle (as contrast and
    offset). ``concentrated``: the first shared parameter is informed by the pairs of the first
    block alone (a high-leverage window)."""
    i, j = np.triu_indices(n, 1)
    block = np.arange(n) * n_blocks // n
    k_dim = f + 2 * n_phi
    rows, angle = [], []
    for k in range(n_phi):
        x = np.zeros((i.size, k_dim))
        x[:, :f] = rng.normal(size=(i.size, f))
        if concentrated:
            x[:, 0] *= (block[i] == 0) & (block[j] == 0)
        x[:, f + k] = rng.uniform(size=i.size)  # "contrast" column of angle k
        x[:, f + n_phi + k] = 1.0  # "offset" column of angle k
        rows.append(x)
        angle.append(np.full(i.size, k))
    design, angle = np.concatenate(rows), np.concatenate(angle)
    cells = np.tile(block[i], n_phi), np.tile(block[j], n_phi)
    index = np.array([[*range(f), f + k, f + n_phi + k] for k in range(n_phi)])
    embed = np.eye(k_dim)[:, index].transpose(1, 0, 2)
    return design, angle, cells, index, embed


def _square_sums(design, angle, cells, index, n_blocks, residuals):
    """Per square and angle, the score and information over [shared, slope_k, intercept_k]."""
    (ci, cj), m = cells, index.shape[1]
    score = np.zeros((*residuals.shape[:-1], n_blocks, n_blocks, index.shape[0], m))
    info = np.zeros((n_blocks, n_blocks, index.shape[0], m, m))
    for row in range(design.shape[0]):
        v = design[row, index[angle[row]]]
        score[..., ci[row], cj[row], angle[row], :] += residuals[..., row, None] * v
        info[ci[row], cj[row], angle[row]] += np.outer(v, v)
    return score, info


def _leverage_factor(x):
    """f(x) = x^(−1/2) · 2/(1 + x) of the eigenvalues x = 1 − λ (`window_covariance`)."""
    return x**-0.5 * 2 / (1 + x)


@pytest.mark.parametrize("collinear", [False, True])
def test_window_covariance_is_the_leverage_corrected_sandwich_in_data_space(collinear):
    # Brute force in NumPy, in the space of the data: for every window W of 3 × 3 squares of one
    # angle, the residuals e_W scaled by f(I − P_WW), P the hat matrix X(XᵀX)⁻¹Xᵀ, by an
    # eigendecomposition; d_W = (XᵀX)⁻¹X_Wᵀ f(I − P_WW) e_W and V = Σ_W d_W d_Wᵀ / 9. The code
    # works in parameter space, per angle, on the non-symmetric I − H_W G by matrix products; it
    # shifts the leverage by 1e-6 (a window that alone informs a direction gets a large, finite
    # factor), hence rtol 1e-4.
    rng = np.random.default_rng(0)
    n, n_blocks, f, n_phi, width = 12, 4, 2, 2, 3
    design, angle, (ci, cj), index, embed = _linear_pair_problem(rng, n, n_blocks, f, n_phi)
    if collinear:  # as D0 and D_offset can be: the shared columns correlated to 1 − 1e-6
        design[:, 1] = design[:, 0] + 1e-3 * design[:, 1]
    y = design @ rng.normal(size=design.shape[1]) + rng.normal(size=design.shape[0])
    h_inverse = np.linalg.inv(design.T @ design)
    r = y - design @ h_inverse @ design.T @ y
    expected = np.zeros_like(h_inverse)
    for k in range(n_phi):
        for a in range(-(width - 1), n_blocks):  # every window position that overlaps the grid
            for b in range(-(width - 1), n_blocks):
                w = (angle == k) & (ci >= a) & (ci < a + width) & (cj >= b) & (cj < b + width)
                if w.any():
                    x_w = design[w]
                    lam, vec = np.linalg.eigh(np.eye(w.sum()) - x_w @ h_inverse @ x_w.T)
                    d = h_inverse @ x_w.T @ (vec * _leverage_factor(lam)) @ vec.T @ r[w]
                    expected += np.outer(d, d)
    expected /= width**2
    score, info = _square_sums(design, angle, (ci, cj), index, n_blocks, r)
    # the columns in units u: 1e4 and 1e-3 times the others' where collinear (D0 ~ 1e4 and
    # γ̇0 ~ 1e-3 in one fit); the covariance in those units is expected / (u uᵀ)
    u = np.ones(design.shape[1])
    if collinear:
        u[:f] = [1e4, 1e-3]
    cov = window_covariance(
        jnp.asarray(score * u[index]),
        jnp.asarray(info * np.einsum("km,kn->kmn", u[index], u[index])),
        inverse(jnp.asarray(design.T @ design * np.outer(u, u))),
        jnp.asarray(embed),
        width,
    )
    sd = np.sqrt(np.diag(expected))  # compared in units of the standard errors
    np.testing.assert_allclose(
        cov * np.outer(u / sd, u / sd), expected / np.outer(sd, sd), rtol=1e-4, atol=1e-7
    )


def test_window_covariance_has_its_expected_value_for_independent_errors():
    # A parameter informed by one block's pairs alone (leverage near 1 in the windows that hold
    # it), independent unit errors, 400 noise draws: the mean of the covariance is the expectation
    # computed exactly in NumPy from the hat matrix, and that lies between the truth (XᵀX)⁻¹ and
    # 4× it, the most that the leverage correction f(x)²·x allows (x = 1 − λ; CR2 would give 1×,
    # a jackknife 1/x: unbounded).
    rng = np.random.default_rng(3)
    n, n_blocks, f, n_phi, width, draws = 24, 8, 2, 2, 3, 400
    design, angle, (ci, cj), index, embed = _linear_pair_problem(
        rng, n, n_blocks, f, n_phi, concentrated=True
    )
    h = design.T @ design
    h_inverse = np.linalg.inv(h)
    noise = rng.normal(size=(draws, design.shape[0]))
    r = noise - noise @ (design @ h_inverse @ design.T)  # residuals (the hat matrix is symmetric)
    score, info = _square_sums(design, angle, (ci, cj), index, n_blocks, r)
    h_inv = inverse(jnp.asarray(h))
    covs = jax.jit(jax.vmap(lambda s: window_covariance(s, info, h_inv, embed, width)))(
        jnp.asarray(score)
    )
    ratio = np.diagonal(np.mean(np.asarray(covs), 0)) / np.diag(h_inverse)
    # E[V] = H⁻¹ Σ_W X_Wᵀ f(I − P_WW)(I − P)_WW f(I − P_WW) X_W H⁻¹ / 9 for unit independent errors
    residual_maker = np.eye(design.shape[0]) - design @ h_inverse @ design.T
    exact = np.zeros_like(h_inverse)
    for k in range(n_phi):
        for a in range(-(width - 1), n_blocks):
            for b in range(-(width - 1), n_blocks):
                w = (angle == k) & (ci >= a) & (ci < a + width) & (cj >= b) & (cj < b + width)
                if w.any():
                    lam, vec = np.linalg.eigh(residual_maker[np.ix_(w, w)])
                    t = design[w].T @ (vec * _leverage_factor(lam)) @ vec.T
                    exact += t @ residual_maker[np.ix_(w, w)] @ t.T / width**2
    exact = np.diag(h_inverse @ exact @ h_inverse) / np.diag(h_inverse)
    np.testing.assert_allclose(ratio, exact, rtol=0.15)
    assert np.all((exact >= 1.0) & (exact <= 4.0))


def test_block_sums_add_up_to_the_gradient_and_information():
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=20, phi=[0.0, 50.0, 100.0])
    truth = LaminarFlowParams(1.5e4, -0.4, 20.0, 2e-3, 0.3, 1e-4, 3.0)
    rng = np.random.default_rng(1)
    noise = np.triu(rng.normal(scale=2e-3, size=(3, 20, 20)), 1)
    data = np.asarray(model.g2(truth, 0.3, 1.0)) + noise + np.swapaxes(noise, 1, 2)
    problem, _ = _build(model, data, 2e-3, truth, FitSpec())
    theta = jnp.asarray(truth.to_array() * 1.05)  # away from the minimum: the gradient is not 0
    contrast, offset = _scaling(problem, theta)
    h, g, _ = _information(problem, theta, contrast, offset)
    block_of = jnp.asarray(np.arange(20) * 5 // 20, dtype=jnp.int32)
    score, info, chi2_k = _block_scores(problem, theta, contrast, offset, block_of, 5)
    h, g = np.asarray(h), np.asarray(g)
    assert score.shape == (5, 5, 3, 9) and info.shape == (5, 5, 3, 9, 9)  # per angle
    # angle k's [θ, contrast_k, offset_k] placed among [θ, contrast, offset], summed over squares
    index = np.array([[*range(7), 7 + k, 10 + k] for k in range(3)])
    total_g, total_h = np.zeros(13), np.zeros((13, 13))
    for k in range(3):
        total_g[index[k]] += np.sum(score[:, :, k], (0, 1))
        total_h[np.ix_(index[k], index[k])] += np.sum(info[:, :, k], (0, 1))
    np.testing.assert_allclose(total_g, g, rtol=1e-8, atol=1e-8 * np.max(np.abs(g)))
    np.testing.assert_allclose(total_h, h, rtol=1e-8, atol=1e-10 * np.max(np.abs(h)))
    # nothing below the diagonal of blocks: pairs i < j sit in blocks (a, b) with a ≤ b
    assert np.all(np.asarray(score)[np.tril_indices(5, -1)] == 0)
    # one angle's scores are that angle's alone: the same sums with the other angles' data moved
    moved = data.copy()
    moved[1:] += 0.01
    problem_moved, _ = _build(model, moved, 2e-3, truth, FitSpec())
    score_moved = _block_scores(problem_moved, theta, contrast, offset, block_of, 5)[0]
    np.testing.assert_allclose(score_moved[:, :, 0], score[:, :, 0], rtol=1e-12, atol=1e-12)
    assert not np.allclose(score_moved[:, :, 1], score[:, :, 1])
    # χ² per angle, in NumPy from the model on the full grid
    g2 = np.asarray(model.g2(LaminarFlowParams.from_array(theta), contrast, offset))
    iu = np.triu_indices(20, 1)
    expected = np.sum(((data - g2) / 2e-3)[:, iu[0], iu[1]] ** 2, axis=1)
    np.testing.assert_allclose(chi2_k, expected, rtol=1e-9)
    # a contrast clipped to its bound is held: the error covariance gives it no variance, the others keep theirs
    held = contrast.at[1].set(float(problem.lin_lower[0]))
    h_held = _information(problem, theta, held, offset)[0]
    score_h, info_h, _ = _block_scores(problem, theta, held, offset, block_of, 5)
    cov, blind = _correlated_covariance(
        sum(problem.free),
        problem.linear_free(held, offset),
        h_held,
        score_h,
        info_h,
        _angle_embedding(problem),
    )
    assert not np.any(blind)
    var = np.diag(np.asarray(cov))
    assert abs(var[8]) < 1e-12 * min(var[7], var[9]) and np.all(var[np.arange(13) != 8] > 0)


def test_errors_account_for_correlated_detector_noise():
    # Detector-like data (speckle, Poisson counts, the correlator's normalisation), 12 fits: the errors
    # from (JᵀJ)⁻¹ are several times smaller than the seed-to-seed scatter of the estimates; the
    # reported ones are not. (The full coverage table: benchmarks/coverage.py.)
    model = HomodyneModel(q=0.01, dt=0.1, n_frames=200, phi=[0.0, 90.0], time_origin=0.1)
    truth = StaticParams(2e4, -0.5, 5e3)
    fits = [
        homodyne.fit(
            model,
            homodyne.simulate_frames(model, truth, pixels=2000, modes=5, counts=5.0, seed=s),
            init=truth,
            spec=FitSpec(mode="static"),
        )
        for s in range(12)
    ]
    assert all(bool(r.converged) and bool(r.correlation_resolved) for r in fits)
    est = np.array([r.params.to_array() for r in fits])
    err = np.array([r.errors.to_array() for r in fits])
    naive = np.array([r.errors_independent.to_array() for r in fits])
    scatter = 1.4826 * np.median(np.abs(est - np.median(est, 0)), 0)  # robust: 12 seeds
    assert np.all(np.median(naive, 0) < 0.4 * scatter)  # the independent-element errors
    assert np.all(np.median(err, 0) > 0.5 * scatter)
    assert np.all(np.median(err, 0) < 1.6 * scatter)
    z = (est - truth.to_array()) / err
    assert np.mean(np.abs(z) < 2) >= 0.8


@pytest.mark.slow  # 50 fits per setting: about 3 minutes
@pytest.mark.parametrize("mode", ["static", "laminar"])
def test_coverage_on_frame_level_data(mode):
    # Six φ sectors, detector-like data: for every physical parameter the reported errors are
    # within the measured range of the seed-to-seed scatter (median σ/sd 0.80–1.33 measured; in
    # [0.7, 1.5] here) and cover the truth within 2σ in ≥ 85 % of 50 fits (92–100 % measured),
    # where (JᵀJ)⁻¹ is several times too small. A guard against regressions: issue 12's targets
    # (±7 points of 68 %/95 %, σ/sd in [0.8, 1.25]) are not all met yet; benchmarks/coverage.py
    # measures them.
    model = HomodyneModel(
        q=0.01, dt=0.1, n_frames=200, phi=list(np.linspace(0, 150, 6)), time_origin=0.1
    )
    truth = (
        StaticParams(2e4, -0.5, 5e3)
        if mode == "static"
        else LaminarFlowParams(2e4, -0.5, 5e3, 5e-4, 0.3, 1e-4, 4.0)
    )
    fits = [
        homodyne.fit(
            model,
            homodyne.simulate_frames(model, truth, pixels=2000, modes=5, counts=5.0, seed=s),
            init=truth,
            spec=FitSpec(mode=mode),
        )
        for s in range(50)
    ]
    assert np.mean([bool(r.converged) for r in fits]) >= 0.95
    est = np.array([r.params.to_array() for r in fits])
    err = np.array([r.errors.to_array() for r in fits])
    naive = np.array([r.errors_independent.to_array() for r in fits])
    scatter = est.std(0, ddof=1)
    ratio = np.median(err, 0) / scatter
    assert np.all((ratio > 0.7) & (ratio < 1.5)), ratio
    assert np.all(np.median(naive, 0) / scatter < 0.5)
    z = (est - np.asarray(truth.to_array())) / err
    assert np.all(np.mean(np.abs(z) < 2, axis=0) >= 0.85), np.mean(np.abs(z) < 2, axis=0)
