"""The frame-level simulator (SPEC §6) and the error covariance for correlated C2 errors: checked
against NumPy re-derivations (the model's g1 from `numpy_reference`, brute-force jackknife refits)
and against the seed-to-seed scatter of fits to simulated detector data."""

import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

import homodyne
from homodyne import FitSpec, HomodyneModel, LaminarFlowParams, StaticParams
from homodyne._covariance import window_jackknife
from homodyne._fit import _angle_embedding, _build, _correlated_covariance

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


def test_window_jackknife_is_brute_force_leave_window_out_refits():
    # A linear least-squares problem on pairs (i, j) of 12 frames in 4 blocks and 2 angles, with 2
    # shared parameters and an intercept and slope per angle (as contrast and offset): for a linear
    # model one Newton step is the exact refit, so the jackknife is brute force in NumPy.
    rng = np.random.default_rng(0)
    n, n_blocks, f, n_phi, width = 12, 4, 2, 2, 3
    i, j = np.triu_indices(n, 1)
    block = np.arange(n) * n_blocks // n
    cell_i, cell_j = block[i], block[j]
    k_dim = f + 2 * n_phi
    rows, angle = [], []
    for k in range(n_phi):
        x = np.zeros((i.size, k_dim))
        x[:, :f] = rng.normal(size=(i.size, f))
        x[:, f + k] = rng.uniform(size=i.size)  # "contrast" column of angle k
        x[:, f + n_phi + k] = 1.0  # "offset" column of angle k
        rows.append(x)
        angle.append(np.full(i.size, k))
    design, angle = np.concatenate(rows), np.concatenate(angle)
    ci, cj = np.tile(cell_i, n_phi), np.tile(cell_j, n_phi)
    y = design @ rng.normal(size=k_dim) + rng.normal(size=design.shape[0])
    fit_all = np.linalg.lstsq(design, y, rcond=None)[0]
    expected = np.zeros((k_dim, k_dim))
    for k in range(n_phi):
        for a in range(-(width - 1), n_blocks):  # every window position that overlaps the grid
            for b in range(-(width - 1), n_blocks):
                out = (angle == k) & (ci >= a) & (ci < a + width) & (cj >= b) & (cj < b + width)
                if out.any():
                    refit = np.linalg.lstsq(design[~out], y[~out], rcond=None)[0]
                    expected += np.outer(fit_all - refit, fit_all - refit)
    expected /= width**2
    # the squares' sums, per angle over [shared, slope_k, intercept_k]
    r = y - design @ fit_all
    index = np.array([[*range(f), f + k, f + n_phi + k] for k in range(n_phi)])
    score = np.zeros((n_blocks, n_blocks, n_phi, f + 2))
    info = np.zeros((n_blocks, n_blocks, n_phi, f + 2, f + 2))
    for row in range(design.shape[0]):
        k = angle[row]
        v = design[row, index[k]]
        score[ci[row], cj[row], k] += v * r[row]
        info[ci[row], cj[row], k] += np.outer(v, v)
    embed = np.eye(k_dim)[:, index].transpose(1, 0, 2)
    cov = window_jackknife(
        jnp.asarray(score), jnp.asarray(info), jnp.asarray(design.T @ design),
        jnp.asarray(embed), width,
    )  # fmt: skip
    np.testing.assert_allclose(cov, expected, rtol=1e-9, atol=1e-12 * np.max(expected))


def test_block_sums_add_up_to_the_gradient_and_information():
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=20, phi=[0.0, 50.0, 100.0])
    truth = LaminarFlowParams(1.5e4, -0.4, 20.0, 2e-3, 0.3, 1e-4, 3.0)
    rng = np.random.default_rng(1)
    noise = np.triu(rng.normal(scale=2e-3, size=(3, 20, 20)), 1)
    data = np.asarray(model.g2(truth, 0.3, 1.0)) + noise + np.swapaxes(noise, 1, 2)
    problem, _ = _build(model, data, 2e-3, truth, FitSpec())
    theta = jnp.asarray(truth.to_array() * 1.05)  # away from the minimum: the gradient is not 0
    contrast, offset = problem.scaling(theta)
    h, g, _ = problem.information(theta, contrast, offset)
    block_of = jnp.asarray(np.arange(20) * 5 // 20, dtype=jnp.int32)
    score, info, chi2_k = problem.block_scores(theta, contrast, offset, block_of, 5)
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
    score_moved = problem_moved.block_scores(theta, contrast, offset, block_of, 5)[0]
    np.testing.assert_allclose(score_moved[:, :, 0], score[:, :, 0], rtol=1e-12, atol=1e-12)
    assert not np.allclose(score_moved[:, :, 1], score[:, :, 1])
    # χ² per angle, in NumPy from the model on the full grid
    g2 = np.asarray(model.g2(LaminarFlowParams.from_array(theta), contrast, offset))
    iu = np.triu_indices(20, 1)
    expected = np.sum(((data - g2) / 2e-3)[:, iu[0], iu[1]] ** 2, axis=1)
    np.testing.assert_allclose(chi2_k, expected, rtol=1e-9)
    # a contrast clipped to its bound is held: the jackknife gives it no variance, the others keep theirs
    held = contrast.at[1].set(float(problem.lin_lower[0]))
    h_held = problem.information(theta, held, offset)[0]
    score_h, info_h, _ = problem.block_scores(theta, held, offset, block_of, 5)
    cov = np.asarray(
        _correlated_covariance(
            sum(problem.free),
            problem.linear_free(held, offset),
            h_held,
            score_h,
            info_h,
            _angle_embedding(problem),
        )
    )
    var = np.diag(cov)
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
