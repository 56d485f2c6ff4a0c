"""Joint fits of several runs, each with its own time axis (`homodyne.fit([(model, data), ...])`),
checked against NumPy least squares and against the one-run fit of the same bins."""

import json

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import traces
from numpy_reference import g2 as numpy_g2

import homodyne
from homodyne import FitSpec, HomodyneModel, StaticParams
from homodyne import io as hio

SIGMA = 2e-3


def synthetic(model, truth, seed, contrast=0.3, offset=1.0):
    """Model + Gaussian noise on each pair t1 ≤ t2, mirrored: a symmetric C2."""
    clean = np.asarray(model.g2(truth, contrast, offset))
    noise = np.triu(np.random.default_rng(seed).normal(scale=SIGMA, size=clean.shape))
    return clean + noise + np.swapaxes(np.triu(noise, 1), -1, -2)


def test_joint_fit_is_the_numpy_least_squares_minimum(tmp_path):
    # Two runs: other frame steps, sample ages, q and bins; D_offset differs between them.
    run_a = HomodyneModel(q=0.0054, dt=0.1, n_frames=14, phi=[0.0, 90.0], time_origin=1.0)
    run_b = HomodyneModel(q=0.0070, dt=0.25, n_frames=12, phi=[30.0], time_origin=10.0)
    truth_a, truth_b = StaticParams(2e4, -0.5, 1e3), StaticParams(2e4, -0.5, 4e3)
    data_a = synthetic(run_a, truth_a, seed=1, contrast=np.array([0.3, 0.25]))
    data_b = synthetic(run_b, truth_b, seed=2, contrast=0.2, offset=1.01)
    spec = FitSpec(mode="static", per_run=("D_offset",))
    joint = homodyne.fit(
        [(run_a, data_a), (run_b, data_b)], sigma=[SIGMA, SIGMA], spec=spec, init=truth_a
    )
    assert isinstance(joint, homodyne.JointFitResult) and bool(joint.converged)
    assert joint.names == (
        "D0", "alpha", "D_offset[run 0]", "D_offset[run 1]",
        "contrast[0] (run 0)", "contrast[1] (run 0)", "offset[0] (run 0)", "offset[1] (run 0)",
        "contrast[0] (run 1)", "offset[0] (run 1)",
    )  # fmt: skip
    a, b = joint.runs
    assert float(a.params.D0) == float(b.params.D0) and float(a.params.alpha) == float(
        b.params.alpha
    )

    # the same fit written out in NumPy: the residuals of both runs over pairs t1 < t2, as a
    # function of [D0, alpha, D_offset_a, D_offset_b, contrast_a (2), offset_a (2), c_b, b_b]
    def residuals(p):
        out = []
        for model, data, d_offset, c, o in (
            (run_a, data_a, p[2], p[4:6], p[6:8]),
            (run_b, data_b, p[3], p[8:9], p[9:10]),
        ):
            t, phi = np.asarray(model.t), np.asarray(model.phi)
            g2 = numpy_g2(
                [p[0], p[1], d_offset], t, phi, float(model.q), 2e6, c, o, float(model.dt)
            )
            iu = np.triu_indices(t.size, 1)
            out.append(((data - g2) / SIGMA)[:, iu[0], iu[1]].ravel())
        return np.concatenate(out)

    p = np.array(
        [float(a.params.D0), float(a.params.alpha), float(a.params.D_offset),
         float(b.params.D_offset), *np.asarray(a.contrast), *np.asarray(a.offset),
         float(b.contrast[0]), float(b.offset[0])]
    )  # fmt: skip
    r = residuals(p)
    step = 1e-6 * np.maximum(np.abs(p), 1.0)
    jac = np.stack(
        [
            (residuals(p + s * e) - residuals(p - s * e)) / (2 * s)
            for s, e in zip(step, np.eye(10), strict=True)
        ],
        axis=1,
    )
    np.testing.assert_allclose(float(joint.chi2), np.sum(r * r), rtol=1e-9)
    assert int(joint.dof) == r.size - 10
    # a minimum of the NumPy χ²: the Gauss–Newton step is tiny against every standard error
    cov = np.linalg.inv(jac.T @ jac)
    newton = -cov @ jac.T @ r
    assert np.all(np.abs(newton) < 1e-3 * np.sqrt(np.diag(cov)))
    # the independent-element covariance is (JᵀJ)⁻¹ of all the runs' residuals together
    np.testing.assert_allclose(np.asarray(joint.covariance_independent), cov, rtol=1e-4)
    # each run's view: its parameters' rows of the joint covariance
    np.testing.assert_allclose(float(b.errors_independent.D_offset), np.sqrt(cov[3, 3]), rtol=1e-4)
    np.testing.assert_allclose(float(b.contrast_error[0]), np.sqrt(joint.covariance[8, 8]))
    # the truth is recovered, D_offset per run
    z = (p[:4] - [2e4, -0.5, 1e3, 4e3]) / np.sqrt(np.diag(np.asarray(joint.covariance))[:4])
    assert np.all(np.abs(z) < 4), z
    text = str(joint)
    assert "joint fit of 2 runs" in text and "per run: D_offset" in text
    assert "D_offset[run 1]" in text and "t = 10–12.75 s" in text

    # saved: each run as a fit of its own (readable with load_fit), the joint covariance apart
    paths = hio.save_joint_fit(joint, tmp_path, data=[data_a, data_b])
    assert [p.name for p in paths] == [
        "fit_joint.json", "fit_run0.json", "fit_run0.npz", "fit_run1.json", "fit_run1.npz",
    ]  # fmt: skip
    saved = json.loads(paths[0].read_text())
    assert saved["covariance"]["names"] == list(joint.names) and saved["per_run"] == ["D_offset"]
    np.testing.assert_array_equal(saved["covariance"]["matrix"], np.asarray(joint.covariance))
    saved_b = hio.load_fit(paths[3])
    assert float(saved_b.params.D_offset) == float(b.params.D_offset)
    assert float(saved_b.errors.D0) == float(b.errors.D0)

    # new q values and sample ages (same shapes) reuse the compiled joint fit
    other_a = eqx.tree_at(
        lambda m: (m.q, m.t), run_a, (jnp.asarray(np.float64(0.006)), run_a.t + 1.0)
    )
    with traces() as traced:
        homodyne.fit(
            [(other_a, data_a), (run_b, data_b)], sigma=[SIGMA, SIGMA], spec=spec, init=truth_a
        )
    assert traced["_solve_runs"] == 0, traced


def test_runs_on_one_time_axis_fit_as_the_bins_of_one_run():
    # Two runs on the same time axis, one bin each, fitted jointly, are the two bins of one run:
    # the same estimates, χ², estimated σ and (error covariance) errors, by another path through the code.
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=24, phi=[0.0], time_origin=1.0)
    both = HomodyneModel(q=0.0054, dt=0.1, n_frames=24, phi=[0.0, 0.0], time_origin=1.0)
    truth = StaticParams(2e4, -0.5, 1e3)
    data_a = synthetic(model, truth, seed=3)[0]
    data_b = synthetic(model, truth, seed=4, contrast=0.25)[0]
    spec = FitSpec(mode="static")
    joint = homodyne.fit([(model, data_a), (model, data_b)], spec=spec, init=truth)
    one = homodyne.fit(both, np.stack([data_a, data_b]), spec=spec, init=truth)
    for name in truth.names:
        for run in joint.runs:
            assert float(getattr(run.params, name)) == pytest.approx(
                float(getattr(one.params, name)), rel=1e-7
            )
            assert float(getattr(run.errors, name)) == pytest.approx(
                float(getattr(one.errors, name)), rel=1e-5
            )
    assert float(joint.chi2) == pytest.approx(float(one.chi2), rel=1e-9)
    assert int(joint.dof) == int(one.dof)
    sigma = np.concatenate([np.asarray(run.sigma) for run in joint.runs])
    np.testing.assert_allclose(sigma, np.asarray(one.sigma), rtol=1e-6)
    # the joint covariance is the one-run covariance with contrast and offset reordered
    order = [0, 1, 2, 3, 5, 4, 6]  # one run: c0, c1, b0, b1; joint: c0, b0 (run 0), c1, b1
    np.testing.assert_allclose(
        np.asarray(joint.covariance),
        np.asarray(one.covariance)[np.ix_(order, order)],
        rtol=1e-5,
        atol=1e-12,
    )


def test_joint_fit_bad_input():
    model = HomodyneModel(q=0.0054, dt=0.1, n_frames=12, phi=[0.0])
    data = np.ones((12, 12))
    runs = [(model, data), (model, data)]
    with pytest.raises(TypeError, match="without a second argument"):
        homodyne.fit(runs, data)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="non-empty sequence of \\(model, data\\) pairs"):
        homodyne.fit([model, model])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="sigma has 1 entries; the joint fit has 2 runs"):
        homodyne.fit(runs, sigma=[1.0])
    with pytest.raises(ValueError, match="given for every run or for none"):
        homodyne.fit(runs, sigma=[1.0, None])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="one entry per run"):
        homodyne.fit(runs, sigma=np.ones(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run 1: data must have shape"):
        homodyne.fit([(model, data), (model, data[:5])], sigma=[1.0, 1.0])
    with pytest.raises(ValueError, match="run 0: say which model to fit"):
        two = HomodyneModel(q=0.0054, dt=0.1, n_frames=12, phi=[0.0, 90.0])
        homodyne.fit([(two, np.ones((2, 12, 12))), (model, data)], sigma=[1.0, 1.0])
    with pytest.raises(ValueError, match="cannot fit \\['D_offset_x'\\] per run"):
        FitSpec(per_run=("D_offset_x",))
    with pytest.raises(ValueError, match="both fixed and fitted per run"):
        FitSpec(fixed={"D_offset": 0.0}, per_run=("D_offset",))
    with pytest.raises(ValueError, match="cannot fit \\['beta'\\] per run: a static fit"):
        FitSpec(mode="static", per_run=("beta",))
    with pytest.raises(ValueError, match="applies to a joint fit of several runs"):
        homodyne.fit(model, data, spec=FitSpec(per_run=("D_offset",)))
