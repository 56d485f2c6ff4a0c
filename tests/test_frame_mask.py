"""Bad frames: ``fit(..., frame_mask=...)`` leaves out every pair that touches an excluded frame.

The oracles are NumPy: χ², its minimum (a Gauss–Newton step from a finite-difference Jacobian of
`numpy_reference.g2` over the used pairs only), the pair count and a loop over the second
differences of the noise estimate. Small grids keep compilation cheap.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from helpers import traces

import homodyne
from homodyne import FitSpec, FitStatus, HomodyneModel, StaticParams
from homodyne._fit import _build
from homodyne._problem import subsampled
from homodyne._start import noise_per_angle

# compiled, as in a fit (eagerly, each of its operations would compile alone)
noise_per_angle = jax.jit(noise_per_angle)

SIGMA = 2e-3
TRUTH = StaticParams(8.0e3, 0.6, 5.0)
STATIC = FitSpec(mode="static")


def synthetic(model, seed, sigma=SIGMA):
    """Model + Gaussian noise on each pair t1 ≤ t2, mirrored: a symmetric C2."""
    clean = np.asarray(model.g2(TRUTH, 0.3, 1.0))
    noise = np.triu(np.random.default_rng(seed).normal(scale=sigma, size=clean.shape))
    return clean + noise + np.swapaxes(np.triu(noise, 1), -1, -2)


def spoil(data, frames, value):
    """The rows and columns of ``frames`` set to ``value`` (NaN, garbage)."""
    out = data.copy()
    out[..., frames, :] = value
    out[..., :, frames] = value
    return out


def mask_without(n, frames):
    mask = np.ones(n, bool)
    mask[list(frames)] = False
    return mask


def used_pairs(mask):
    """(rows, cols) of the pairs i < j of used frames (NumPy)."""
    rows, cols = np.triu_indices(mask.size, 1)
    keep = mask[rows] & mask[cols]
    return rows[keep], cols[keep]


def test_chi2_dof_and_minimum_over_the_used_pairs_only():
    n, bad = 22, [0, 7, 8, 15]
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=[0.0, 60.0])
    mask = mask_without(n, bad)
    data = spoil(synthetic(model, seed=1), bad, np.nan)
    result = homodyne.fit(model, data, sigma=SIGMA, init=TRUTH, spec=STATIC, frame_mask=mask)
    assert bool(result.converged)
    np.testing.assert_array_equal(result.frame_mask, mask)
    m = n - len(bad)
    assert int(result.dof) == 2 * m * (m - 1) // 2 - 3 - 4  # pairs of used frames − unknowns
    assert "4 of 22 excluded" in str(result)

    rows, cols = used_pairs(mask)
    t, phi = np.asarray(model.t), np.asarray(model.phi)

    def residuals(x):  # x = [D0, alpha, D_offset, contrast (2), offset (2)]
        g2 = ref.g2(x[:3], t, phi, 0.0054, 2e6, x[3:5], x[5:7], 0.1)
        return ((data - g2) / SIGMA)[:, rows, cols].ravel()

    x0 = np.concatenate(
        [result.params.to_array(), np.asarray(result.contrast), np.asarray(result.offset)]
    )
    r0 = residuals(x0)
    assert float(result.chi2) == pytest.approx(np.sum(r0**2), rel=1e-10)
    assert float(result.reduced_chi2) == pytest.approx(np.sum(r0**2) / int(result.dof), rel=1e-10)
    # the minimum: a Gauss–Newton step from there moves no parameter by 1e-3 standard errors
    steps = 1e-6 * np.maximum(np.abs(x0), np.array([1e3, 1, 10, 1, 1, 1, 1]))
    jac = np.stack(
        [
            (residuals(x0 + e) - residuals(x0 - e)) / (2 * h)
            for e, h in zip(np.diag(steps), steps, strict=True)
        ],
        axis=1,
    )
    step = np.linalg.lstsq(jac, -r0, rcond=None)[0]
    errors = np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)))
    assert np.all(np.abs(step) < 1e-3 * errors), step / errors
    # residuals() keeps the full grid, NaN on the rows and columns of excluded frames
    res = np.asarray(result.residuals(data))
    assert res.shape == (2, n, n) and np.all(np.isnan(res[:, bad, :]))
    np.testing.assert_allclose(res[:, rows, cols].ravel(), r0, rtol=1e-9, atol=1e-9)


def test_masked_frames_may_hold_nan_or_garbage():
    # automatic start and estimated σ: every use of the data (noise, start, fit) ignores them
    n, bad = 30, [4, 17, 18]
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=[0.0, 45.0])
    mask = mask_without(n, bad)
    clean = synthetic(model, seed=2)
    fits = [
        homodyne.fit(model, spoil(clean, bad, value), spec=STATIC, frame_mask=mask)
        for value in (None, np.nan, 1e6)
    ]  # None: the clean data themselves
    for other in fits[1:]:
        np.testing.assert_array_equal(other.params.to_array(), fits[0].params.to_array())
        np.testing.assert_array_equal(other.sigma, fits[0].sigma)
        assert float(other.chi2) == float(fits[0].chi2)
    assert bool(fits[0].converged)
    # JAX-array data are checked inside the compiled fit, with the same outcome
    on_device = homodyne.fit(
        model, jnp.asarray(spoil(clean, bad, np.nan)), spec=STATIC, frame_mask=mask
    )
    np.testing.assert_array_equal(on_device.params.to_array(), fits[0].params.to_array())
    # NaN elsewhere is still an error, located at a used pair
    data = spoil(clean, bad, np.nan)
    data[1, 5, 9] = np.inf
    for given in (data, jnp.asarray(data)):
        with pytest.raises(ValueError, match="angle 1, t1 index 5, t2 index 9"):
            homodyne.fit(model, given, spec=STATIC, frame_mask=mask)


def test_noise_estimate_ignores_excluded_frames():
    n, bad = 20, [3, 11]
    rng = np.random.default_rng(3)
    data = 1.0 + rng.normal(scale=1e-3, size=(2, n, n))
    mask = mask_without(n, bad)
    estimate = np.asarray(noise_per_angle(jnp.asarray(data), jnp.asarray(mask)))
    garbage = np.asarray(noise_per_angle(jnp.asarray(spoil(data, bad, 1e6)), jnp.asarray(mask)))
    np.testing.assert_array_equal(garbage, estimate)
    # NumPy: the MAD of the second differences whose six frames are all used
    for k in range(2):
        diffs = [
            data[k, i, j] - 2 * data[k, i + 1, j + 1] + data[k, i + 2, j + 2]
            for i in range(n - 2)
            for j in range(i + 1, n - 2)
            if mask[[i, i + 1, i + 2, j, j + 1, j + 2]].all()
        ]
        mad = np.median(np.abs(diffs - np.median(diffs)))
        assert estimate[k] == pytest.approx(1.4826 * mad / np.sqrt(6), rel=1e-12)


def test_problem_weights_and_subsample_follow_the_mask():
    n, bad = 24, [2, 9, 10]
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=[0.0, 45.0])
    mask = mask_without(n, bad)
    data = spoil(synthetic(model, seed=4), bad, np.nan)
    problem, _ = _build(model, data, SIGMA, TRUTH, STATIC, frame_mask=mask)

    def check(problem, mask):
        rows, cols = np.asarray(problem.rows), np.asarray(problem.cols)
        tiled = np.asarray(problem.data)
        # σ per angle: the tiles (n_tiles, T, 1) hold which pairs are used, 1/σ is per angle
        weight = np.asarray(problem.weight) * np.asarray(problem.angle_weight)
        weight = np.swapaxes(weight, 1, 2)  # (n_tiles, n_phi, T)
        assert np.all(np.isfinite(tiled))
        used = (weight > 0).any(axis=1)  # per pair, over the angles
        expected = np.zeros_like(used)
        r, c = used_pairs(mask)
        pairs = set(zip(r.tolist(), c.tolist(), strict=True))
        for index in np.ndindex(rows.shape):
            expected[index] = (int(rows[index]), int(cols[index])) in pairs
        np.testing.assert_array_equal(used, expected)
        np.testing.assert_array_equal(weight[used[:, None, :].repeat(2, 1)], 1 / SIGMA)
        assert int(problem.n_residuals) == 2 * len(pairs)

    check(problem, mask)
    sub = eqx.filter_jit(subsampled)(
        problem, jnp.asarray(np.nan_to_num(data)), jnp.asarray(SIGMA), 8
    )
    check(sub, mask[::3])  # 24 frames → every 3rd


def test_a_new_mask_does_not_recompile_and_traced_masks_report_status():
    n = 17  # a shape of its own
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=[0.0, 30.0])
    data = synthetic(model, seed=5)
    eager = {}
    with traces() as traced:
        for bad in ([1], [5, 6], [16, 0, 8]):
            mask = mask_without(n, bad)
            eager[tuple(bad)] = homodyne.fit(
                model, data, sigma=SIGMA, init=TRUTH, spec=STATIC, frame_mask=mask
            )
        homodyne.fit(
            model, data, sigma=SIGMA, init=TRUTH, spec=STATIC, frame_mask=jnp.asarray(mask)
        )
    assert traced["_solve"] == 1, traced
    # under jit the mask's values are seen only inside the fit: a status, not an exception
    jitted = jax.jit(
        lambda m: homodyne.fit(model, data, sigma=SIGMA, init=TRUTH, spec=STATIC, frame_mask=m)
    )
    inside = jitted(jnp.asarray(mask_without(n, [5, 6])))
    np.testing.assert_allclose(
        inside.params.to_array(), eager[(5, 6)].params.to_array(), rtol=1e-12
    )
    assert int(inside.dof) == int(eager[(5, 6)].dof)
    few = jitted(jnp.asarray(mask_without(n, range(2, n))))  # 2 frames left
    assert FitStatus[few.status] == FitStatus[FitStatus.too_few_frames]
    assert not bool(few.converged) and np.isnan(float(few.params.D0))


def test_fit_many_takes_one_mask_or_one_per_dataset():
    n = 16
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=0.0)
    data = np.stack([synthetic(model, seed=s) for s in (6, 7)])
    masks = np.stack([mask_without(n, [3]), mask_without(n, [10, 11])])
    data[0] = spoil(data[0], [3], np.nan)
    batch = homodyne.fit_many(model, data, sigma=SIGMA, init=TRUTH, spec=STATIC, frame_mask=masks)
    np.testing.assert_array_equal(batch.frame_mask, masks)
    for b in range(2):
        single = homodyne.fit(
            model, data[b], sigma=SIGMA, init=TRUTH, spec=STATIC, frame_mask=masks[b]
        )
        np.testing.assert_allclose(batch.params.to_array()[b], single.params.to_array(), rtol=1e-8)
        assert int(batch.dof[b]) == int(single.dof)
    with pytest.raises(ValueError, match="frame_mask holds 3 masks; data has 2"):
        homodyne.fit_many(model, data, sigma=SIGMA, frame_mask=np.ones((3, n), bool))


def test_bad_masks_are_refused_with_clear_messages():
    n = 10
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=[0.0, 90.0])
    data = np.ones((2, n, n))
    fit = lambda mask, **kw: homodyne.fit(  # noqa: E731
        model, data, sigma=1.0, init=TRUTH, spec=STATIC, frame_mask=mask, **kw
    )
    with pytest.raises(TypeError, match="boolean array"):
        fit(np.ones(n, int))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        fit(np.ones(n + 1, bool))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        fit(np.ones((2, n), bool))  # a batch of masks is for fit_many
    with pytest.raises(ValueError, match="leaves 2 of 10 frames; a fit needs at least 3"):
        fit(mask_without(n, range(2, n)))
    # 3 frames, 2 angles: 6 residuals against 3 parameters + 2 × (contrast, offset)
    with pytest.raises(ValueError, match="6 pairs t1 < t2 of used frames cannot determine 7"):
        fit(mask_without(n, range(3, n)))
    with pytest.raises(ValueError, match="runs of 3 consecutive used frames"):
        homodyne.fit(model, data, spec=STATIC, frame_mask=mask_without(n, [2, 5, 8]))
