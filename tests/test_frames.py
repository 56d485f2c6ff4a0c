"""The frame-level simulator (SPEC §6) and the error covariance for correlated C2 errors: checked
against NumPy re-derivations (the model's g1 from `numpy_reference`, brute-force jackknife refits)
and against the seed-to-seed scatter of fits to simulated detector data."""

import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest

import homodyne
from homodyne import FitSpec, HomodyneModel, LaminarFlowParams, StaticParams
from homodyne._covariance import clustered_covariance
from homodyne._fit import _build

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


def test_clustered_covariance_is_the_jackknife_over_squares_of_the_grid():
    # A linear least-squares problem whose rows are pairs (i, j) of 12 frames in 4 blocks: for a
    # linear model one Newton step is the exact refit, so the jackknife is brute force in NumPy.
    rng = np.random.default_rng(0)
    n, n_blocks, f = 12, 4, 3
    i, j = np.triu_indices(n, 1)
    design = rng.normal(size=(i.size, f))
    y = design @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=i.size)
    fit_all = np.linalg.lstsq(design, y, rcond=None)[0]
    block = np.arange(n) * n_blocks // n
    cell = block[i] * n_blocks + block[j]
    r = y - design @ fit_all
    score = np.zeros((n_blocks**2, f))
    info = np.zeros((n_blocks**2, f, f))
    np.add.at(score, cell, design * r[:, None])
    np.add.at(info, cell, design[:, :, None] * design[:, None, :])
    shifts = np.zeros((n_blocks, n_blocks, f))
    for c in np.unique(cell):
        keep = cell != c
        refit = np.linalg.lstsq(design[keep], y[keep], rcond=None)[0]
        shifts[c // n_blocks, c % n_blocks] = fit_all - refit
    weights = {-1: 0.5, 0: 1.0, 1: 0.5}
    expected = np.zeros((f, f))
    for a in range(n_blocks):
        for b in range(n_blocks):
            for da, wa in weights.items():
                for db, wb in weights.items():
                    if 0 <= a + da < n_blocks and 0 <= b + db < n_blocks:
                        expected += wa * wb * np.outer(shifts[a, b], shifts[a + da, b + db])
    n_clusters = n_blocks * (n_blocks + 1) // 2
    expected *= (n_clusters - 1) / n_clusters
    cov, clusters = clustered_covariance(
        jnp.asarray(score.reshape(n_blocks, n_blocks, 1, f)),  # one angle
        jnp.asarray(info.reshape(n_blocks, n_blocks, f, f)),
        jnp.zeros((n_blocks, n_blocks, 0)),
        jnp.zeros((0, 0)),
        jnp.zeros((0, f)),
    )
    assert int(clusters) == n_clusters
    np.testing.assert_allclose(cov, expected, rtol=1e-9)


def test_cluster_sums_add_up_to_the_profiled_gradient_and_information():
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=20, phi=[0.0, 50.0, 100.0])
    truth = LaminarFlowParams(1.5e4, -0.4, 20.0, 2e-3, 0.3, 1e-4, 3.0)
    rng = np.random.default_rng(1)
    noise = np.triu(rng.normal(scale=2e-3, size=(3, 20, 20)), 1)
    data = np.asarray(model.g2(truth, 0.3, 1.0)) + noise + np.swapaxes(noise, 1, 2)
    problem, _ = _build(model, data, 2e-3, truth, FitSpec())
    theta = jnp.asarray(truth.to_array() * 1.05)  # away from the minimum: the gradient is not 0
    contrast, offset = problem.scaling(theta)
    h, g, _ = problem.information(theta, contrast, offset)
    h_ll_inv = np.linalg.inv(np.asarray(h[7:, 7:]))
    projection = h_ll_inv @ np.asarray(h[7:, :7])
    block_of = jnp.asarray(np.arange(20) * 5 // 20, dtype=jnp.int32)
    score, info, lin, chi2_k = problem.block_scores(
        theta, contrast, offset, jnp.asarray(projection), block_of, 5
    )
    h, g = np.asarray(h), np.asarray(g)
    assert score.shape == (5, 5, 3, 7)  # per angle
    np.testing.assert_allclose(
        np.sum(score, (0, 1, 2)), g[:7] - h[:7, 7:] @ h_ll_inv @ g[7:], rtol=1e-8, atol=1e-8
    )
    np.testing.assert_allclose(
        np.sum(info, (0, 1)), h[:7, :7] - h[:7, 7:] @ projection, rtol=1e-8, atol=1e-6
    )
    np.testing.assert_allclose(np.sum(lin, (0, 1)), g[7:], rtol=1e-8, atol=1e-8)
    # nothing below the diagonal of blocks: pairs i < j sit in blocks (a, b) with a ≤ b
    assert np.all(np.asarray(score)[np.tril_indices(5, -1)] == 0)
    # one angle's scores are that angle's alone: the same sums with the other angles' data moved
    moved = data.copy()
    moved[1:] += 0.01
    problem_moved, _ = _build(model, moved, 2e-3, truth, FitSpec())
    score_moved = problem_moved.block_scores(
        theta, contrast, offset, jnp.asarray(projection), block_of, 5
    )[0]
    np.testing.assert_allclose(score_moved[:, :, 0], score[:, :, 0], rtol=1e-12, atol=1e-12)
    assert not np.allclose(score_moved[:, :, 1], score[:, :, 1])
    # χ² per angle, in NumPy from the model on the full grid
    g2 = np.asarray(model.g2(LaminarFlowParams.from_array(theta), contrast, offset))
    iu = np.triu_indices(20, 1)
    expected = np.sum(((data - g2) / 2e-3)[:, iu[0], iu[1]] ** 2, axis=1)
    np.testing.assert_allclose(chi2_k, expected, rtol=1e-9)


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
    # within the measured range of the seed-to-seed scatter (median σ/sd in [0.6, 2.0]) and cover
    # the truth within 2σ in ≥ 80 % of 50 fits, where (JᵀJ)⁻¹ is several times too small. A guard
    # against regressions: issue 12's targets (±7 points of 68 %/95 %, σ/sd in [0.8, 1.25]) are
    # not all met yet; benchmarks/coverage.py measures them.
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
    assert np.all((ratio > 0.6) & (ratio < 2.0)), ratio
    assert np.all(np.median(naive, 0) / scatter < 0.5)
    z = (est - np.asarray(truth.to_array())) / err
    assert np.all(np.mean(np.abs(z) < 2, axis=0) >= 0.8), np.mean(np.abs(z) < 2, axis=0)
