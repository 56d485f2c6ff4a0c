"""The posterior (`homodyne.sample`): the integrated likelihood against NumPy and a numerical
integral, the diagnostics against known values, NUTS against a grid posterior, the Laplace
approximation against the fit's widths."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import COMPILE_CACHE
from numpy_reference import g2 as numpy_g2

import homodyne
from homodyne import FitSpec, HomodyneModel, LaminarFlowParams, StaticParams
from homodyne import io as hio
from homodyne._diagnostics import _normal_quantile, ess_bulk, psis, rhat
from homodyne._likelihood import log_likelihood


def symmetric_noise(shape, scale, seed):
    draw = np.triu(np.random.default_rng(seed).normal(scale=scale, size=shape))
    return draw + np.swapaxes(np.triu(draw, 1), -1, -2)


def numpy_log_likelihood(model, params, data, sigma, used, shared=False):
    """−½χ²_min − ½ log det A per group, written out: least squares for contrast and offset by
    NumPy, over the pairs t1 < t2 of used frames."""
    t, phi, n = np.asarray(model.t), np.asarray(model.phi), model.n_frames
    q = np.broadcast_to(np.asarray(model.q, float), phi.shape)
    x = np.stack(
        [numpy_g2(params, t, phi[k : k + 1], q[k], 2e6, 1.0, 0.0, float(model.dt))[0]
         for k in range(phi.size)]
    )  # fmt: skip
    iu = np.triu_indices(n, 1)
    keep = used[iu[0]] & used[iu[1]]
    groups = [list(range(phi.size))] if shared else [[k] for k in range(phi.size)]
    total = 0.0
    for group in groups:
        xx = np.concatenate([x[k][iu][keep] for k in group]) / sigma
        dd = np.concatenate([data[k][iu][keep] for k in group]) / sigma
        a = np.stack([xx, np.ones_like(xx) / sigma], axis=1)
        solution = np.linalg.lstsq(a, dd, rcond=None)[0]
        total += -0.5 * np.sum((dd - a @ solution) ** 2) - 0.5 * np.log(np.linalg.det(a.T @ a))
    return total


@pytest.mark.parametrize("shared", [False, True])
def test_integrated_likelihood_is_the_numpy_marginal(shared):
    # q per bin (two rings), an excluded frame holding NaN, laminar flow
    model = HomodyneModel(q=[0.0054, 0.0061], dt=0.1, n_frames=30, phi=[0.0, 60.0], time_origin=1.0)
    truth = LaminarFlowParams(2e4, -0.3, 500.0, 3e-3, 0.1, 1e-4, 5.0)
    sigma = 2e-3
    data = np.asarray(model.g2(truth, 0.3, 1.0)) + symmetric_noise((2, 30, 30), sigma, 0)
    used = np.ones(30, bool)
    used[11] = False
    data[:, 11, :] = np.nan
    data[:, :, 11] = np.nan

    @jax.jit
    def ours(p):
        return log_likelihood(
            model, p, jnp.asarray(data), jnp.full((1, 1, 1), sigma), jnp.full(2, 0.29),
            jnp.full(2, 1.01), frames_used=jnp.asarray(used), shared=shared,
        )  # fmt: skip

    other = LaminarFlowParams(2.1e4, -0.29, 520.0, 3.1e-3, 0.12, 1.1e-4, 5.5)
    for p in (truth, other):  # differences: the constant is not part of either
        expected = numpy_log_likelihood(model, np.asarray(p.to_array()), data, sigma, used, shared)
        reference = numpy_log_likelihood(
            model, np.asarray(truth.to_array()), data, sigma, used, shared
        )
        got = float(ours(p) - ours(truth))
        assert got == pytest.approx(expected - reference, rel=1e-9, abs=1e-6)

    # the gradient (two passes, envelope theorem) against central differences of the value
    grad = np.asarray(jax.grad(ours)(other).to_array())
    x = np.asarray(other.to_array())
    for i in range(7):
        h = 1e-6 * abs(x[i])
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        fd = (
            float(ours(LaminarFlowParams.from_array(up)))
            - float(ours(LaminarFlowParams.from_array(down)))
        ) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=2e-5, abs=1e-6 * abs(fd) + 1e-9)


def test_contrast_and_offset_integrate_out_as_stated():
    # ∫∫ exp(−½χ²(c, b)) dc db by a fine grid, against the closed form the likelihood uses:
    # the log of the integral changes between two D0 values as log L does
    model = HomodyneModel(q=0.0054, dt=0.5, n_frames=8, phi=[0.0], time_origin=1.0)
    sigma = 0.02
    data = np.asarray(model.g2(StaticParams(1e4, 0.0, 0.0), 0.3, 1.0)) + symmetric_noise(
        (1, 8, 8), sigma, 3
    )
    iu = np.triu_indices(8, 1)

    def by_grid(d0):
        x = np.asarray(model.g2(StaticParams(d0, 0.0, 0.0), 1.0, 0.0))[0][iu]
        d = data[0][iu]
        c = np.linspace(-0.5, 1.1, 801)[:, None, None]
        b = np.linspace(0.8, 1.2, 801)[None, :, None]
        chi2 = np.sum(((d - b - c * x) / sigma) ** 2, axis=-1)
        cell = (c[1, 0, 0] - c[0, 0, 0]) * (b[0, 1, 0] - b[0, 0, 0])
        top = chi2.min()
        return -0.5 * top + np.log(np.sum(np.exp(-0.5 * (chi2 - top))) * cell)

    @jax.jit  # one compilation (eagerly, each of its many small operations would compile alone)
    def compiled(d0):
        return log_likelihood(model, StaticParams(d0, 0.0, 0.0), jnp.asarray(data),
                              jnp.full((1, 1, 1), sigma), jnp.full(1, 0.3), jnp.ones(1))  # fmt: skip

    def ours(d0):
        return float(compiled(jnp.asarray(d0)))

    assert ours(1.3e4) - ours(1e4) == pytest.approx(by_grid(1.3e4) - by_grid(1e4), abs=1e-6)


def test_diagnostics_against_known_values():
    rng = np.random.default_rng(0)
    # Φ⁻¹ against erfc
    p = np.array([1e-12, 1e-4, 0.02, 0.3, 0.5, 0.9, 1 - 1e-9])
    z = _normal_quantile(p)
    assert np.allclose([0.5 * math.erfc(-v / math.sqrt(2)) for v in z], p, rtol=1e-12, atol=1e-300)
    # AR(1) chains: ESS = S (1 − ρ)/(1 + ρ); averaged over seeds, within 10 %
    rho, m, n = 0.8, 4, 2000
    ratios = []
    for _ in range(8):
        x = np.zeros((m, n))
        e = rng.normal(size=(m, n))
        for t in range(1, n):
            x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * e[:, t]
        ratios.append(ess_bulk(x) / (m * n * (1 - rho) / (1 + rho)))
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.1)
    # R-hat: 1 for independent chains, above 1.01 when one chain sits 0.5 sd away
    y = rng.normal(size=(4, 1000))
    assert rhat(y) < 1.01
    y[0] += 0.5
    assert rhat(y) > 1.01
    # PSIS: Gaussian proposal N(0, 1) for a target N(0, s²) has weights with tail index
    # k = 1 − 1/s² (s = 1.5: 0.56, s = 2: 0.75); a proposal as wide as the target: k ≤ 0
    for s, k in ((1.5, 1 - 1 / 1.5**2), (2.0, 0.75)):
        estimates = []
        for _ in range(10):
            x = rng.normal(size=4000)
            estimates.append(psis(0.5 * x * x * (1 - 1 / s**2))[1])
        assert np.mean(estimates) == pytest.approx(k, abs=0.08)
    x = rng.normal(size=4000)
    w, k_hat, ess = psis(-0.5 * (x / 0.8) ** 2 + 0.5 * x * x)  # target narrower: bounded weights
    assert k_hat < 0.3 and ess > 2000 and w.sum() == pytest.approx(1.0)


# --- sampling: one small static problem shared by the tests below (compiled once) ----------------

N_FRAMES, SIGMA = 16, 0.01
SMALL = HomodyneModel(q=0.0054, dt=0.5, n_frames=N_FRAMES, phi=[0.0], time_origin=1.0)
SMALL_TRUTH = StaticParams(1.5e4, -0.4, 0.0)
SMALL_SPEC = FitSpec(mode="static", fixed={"D_offset": 0.0}, bounds={"D0": (2e3, 1e5)})


@pytest.fixture(scope="module")
def small_data():
    clean = np.asarray(SMALL.g2(SMALL_TRUTH, 0.3, 1.0))
    return clean + symmetric_noise(clean.shape, SIGMA, 7)


@pytest.fixture(scope="module")
def grid_posterior(small_data):
    """The posterior of (D0, alpha) on a fine grid, in NumPy: the likelihood written out
    (`numpy_log_likelihood`), prior 1/D0 on the bounds and flat in alpha."""
    data = small_data
    d0 = np.linspace(2e3, 6e4, 160)
    alpha = np.linspace(-1.5, 0.8, 160)
    used = np.ones(N_FRAMES, bool)
    log_p = np.array(
        [[numpy_log_likelihood(SMALL, [a, b, 0.0], data, SIGMA, used) - np.log(a) for b in alpha]
         for a in d0]
    )  # fmt: skip
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    return d0, alpha, p


def test_nuts_agrees_with_a_grid_posterior(small_data, grid_posterior, tmp_path):
    d0, alpha, p = grid_posterior
    assert p[0].sum() + p[-1].sum() + p[:, 0].sum() + p[:, -1].sum() < 1e-6  # the grid holds it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ESS of 2 × 400 draws may be below 400
        post = homodyne.sample(
            SMALL, small_data, sigma=SIGMA, init=SMALL_TRUTH, spec=SMALL_SPEC, adjust=False,
            num_chains=2, num_draws=400, num_warmup=100, seed=1, progress=False,
        )  # fmt: skip
    assert post.names == ("D0", "alpha") and post.values.shape == (2, 400, 2)
    assert int(np.sum(post.divergences)) == 0
    summary = post.summary()
    for i, (name, axis) in enumerate((("D0", d0), ("alpha", alpha))):
        marginal = p.sum(axis=1 - i)
        mean = np.sum(marginal * axis)
        sd = np.sqrt(np.sum(marginal * (axis - mean) ** 2))
        ess = float(post.ess_bulk[i])
        # the mean within 4 Monte Carlo errors, the sd within 15 %
        assert abs(summary[name]["mean"] - mean) < 4 * sd / np.sqrt(ess), name
        assert summary[name]["sd"] == pytest.approx(sd, rel=0.15), name
    assert float(post.leapfrog_steps) > 1 and np.all(np.asarray(post.rhat) < 1.05)
    # what users see
    text = str(post)
    assert "NUTS" in text and "D0" in text and "log-uniform" in text and "independent" in text
    draws = post.draws
    assert isinstance(draws, StaticParams) and draws.D0.shape == (2, 400)
    assert np.all(np.asarray(draws.D_offset) == 0.0)  # held
    assert np.array_equal(np.asarray(post["alpha"]), np.asarray(draws.alpha))
    # saved beside the fit and read back; the pictures
    json_path, _ = hio.save_posterior(post, tmp_path)
    back = hio.load_posterior(json_path)
    assert back.names == post.names and np.array_equal(back.values, np.asarray(post.values))
    assert back.summary["D0"]["mean"] == pytest.approx(summary["D0"]["mean"], rel=1e-12)
    assert back.method == "nuts" and not back.adjusted and back.prior == post.prior
    with warnings.catch_warnings():  # arviz 0.23 announces a refactor on import (FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        idata = post.to_arviz()
    assert np.array_equal(np.asarray(idata.posterior["D0"]), np.asarray(post["D0"]))
    for plot in (hio.plot_corner, hio.plot_traces, hio.plot_posterior_rates):
        picture = plot(post, tmp_path / plot.__name__)
        assert picture.exists() and picture.stat().st_size > 10_000
    # predictive cuts: every draw's g2 with its best contrast and offset, against NumPy's
    curves, firsts = hio.predictive_cuts(post, small_data, [1, 5])
    p = StaticParams(float(post["D0"][0, 0]), float(post["alpha"][0, 0]), 0.0)
    x = numpy_g2(np.asarray(p.to_array()), np.asarray(SMALL.t), [0.0], 0.0054, 2e6, 1.0, 0.0, 0.5)[
        0
    ]
    iu = np.triu_indices(N_FRAMES, 1)
    c, b = np.linalg.lstsq(
        np.stack([x[iu], np.ones(iu[0].size)], 1), small_data[0][iu], rcond=None
    )[0]
    expected = np.concatenate(
        [b + c * x[f, f + lag] for f, lag in zip(firsts, [1, 5], strict=True)]
    )
    assert curves.shape == (200, 1, expected.size)  # 800 draws thinned to every 4th
    assert np.allclose(curves[0, 0], expected, rtol=1e-10, atol=1e-12)
    picture = hio.plot_predictive_cuts(post, small_data, tmp_path / "cuts")
    assert picture.stat().st_size > 10_000


def test_laplace_widths_are_the_fits_and_importance_sampling_checks_them(
    small_data, grid_posterior
):
    fit = homodyne.fit(SMALL, small_data, sigma=SIGMA, init=SMALL_TRUTH, spec=SMALL_SPEC)
    common = dict(sigma=SIGMA, init=SMALL_TRUTH, spec=SMALL_SPEC, fit=fit, method="laplace",
                  num_chains=2, num_draws=1000, progress=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plain = homodyne.sample(SMALL, small_data, adjust=False, **common)
        adjusted = homodyne.sample(SMALL, small_data, **common)
    # the Gaussian's covariance is the fit's: (JᵀJ)⁻¹ without adjustment, the error covariance's with it
    # (up to the prior's curvature and the log det A term: a few per cent here)
    for post, cov in ((plain, fit.covariance_independent), (adjusted, fit.covariance)):
        draws = np.asarray(post.values).reshape(-1, 2)
        assert np.std(draws, axis=0) == pytest.approx(np.sqrt(np.diagonal(cov)[:2]), rel=0.1)
    assert plain.method == "laplace" and np.isfinite(float(plain.khat))
    # reweighted by PSIS, the Laplace draws give the grid posterior's moments
    d0, _, p = grid_posterior
    mean_d0 = np.sum(p.sum(axis=1) * d0)
    w = np.asarray(plain.weights).ravel()
    assert w.sum() == pytest.approx(1.0)
    assert float(w @ np.asarray(plain["D0"]).ravel()) == pytest.approx(mean_d0, rel=0.02)


def test_joint_posterior_of_two_runs_is_the_numpy_one(small_data):
    # two runs of one sample (ages 1 s and 9 s) sharing D0, each with its own alpha: the joint
    # Laplace posterior's mode and covariance against the NumPy log-posterior of the two runs
    # (their integrated likelihoods summed, prior 1/D0, flat in alpha), differentiated by
    # central differences
    older = HomodyneModel(q=0.0054, dt=0.5, n_frames=N_FRAMES, phi=[0.0], time_origin=9.0)
    older_data = np.asarray(older.g2(SMALL_TRUTH, 0.3, 1.0)) + symmetric_noise(
        (1, N_FRAMES, N_FRAMES), SIGMA, 8
    )
    runs = [(SMALL, small_data), (older, older_data)]
    spec = FitSpec(mode="static", fixed={"D_offset": 0.0}, bounds={"D0": (2e3, 1e5)},
                   per_run=("alpha",))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        post = homodyne.sample(runs, sigma=[SIGMA, SIGMA], init=SMALL_TRUTH, spec=spec,
                               method="laplace", adjust=False, num_chains=2, num_draws=2000,
                               seed=2)  # fmt: skip
    assert post.names == ("D0", "alpha[run 0]", "alpha[run 1]")
    used = np.ones(N_FRAMES, bool)

    def log_p(v):
        d0, a0, a1 = v
        return (
            numpy_log_likelihood(SMALL, [d0, a0, 0.0], small_data, SIGMA, used)
            + numpy_log_likelihood(older, [d0, a1, 0.0], older_data, SIGMA, used)
            - np.log(d0)
        )

    mode = np.asarray(post.mode)
    cov = np.cov(np.asarray(post.values).reshape(-1, 3).T)
    basis = np.linalg.cholesky(cov)  # steps along the posterior's own axes
    step = 1e-2
    g = np.array([(log_p(mode + step * b) - log_p(mode - step * b)) / (2 * step) for b in basis.T])
    assert np.all(np.abs(g) < 1e-3), g  # the mode: no slope on the scale of a standard deviation
    h = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            e_i, e_j = step * basis[:, i], step * basis[:, j]
            h[i, j] = (
                log_p(mode + e_i + e_j) - log_p(mode + e_i - e_j)
                - log_p(mode - e_i + e_j) + log_p(mode - e_i - e_j)
            ) / (4 * step * step)  # fmt: skip
    numpy_cov = basis @ np.linalg.inv(-h) @ basis.T
    # 4000 Gaussian draws: standard deviations to ~1.1 %, correlations to ~0.02
    sd, numpy_sd = np.sqrt(np.diagonal(cov)), np.sqrt(np.diagonal(numpy_cov))
    assert sd == pytest.approx(numpy_sd, rel=0.05)
    corr = cov / np.outer(sd, sd)
    numpy_corr = numpy_cov / np.outer(numpy_sd, numpy_sd)
    assert np.all(np.abs(corr - numpy_corr) < 0.06), (corr, numpy_corr)
    assert abs(numpy_corr[1, 2]) > 0.1  # the shared D0 couples the two runs' alphas
    assert float(post.khat) < 0.7


def test_bad_inputs_say_what_to_do(small_data):
    args = dict(sigma=SIGMA, init=SMALL_TRUTH, spec=SMALL_SPEC, progress=False)
    with pytest.raises(ValueError, match="method must be one of"):
        homodyne.sample(SMALL, small_data, method="mh", **args)
    with pytest.raises(ValueError, match="num_draws must be an integer"):
        homodyne.sample(SMALL, small_data, num_draws=0, **args)
    with pytest.raises(ValueError, match="prior for 'D_offset', which is not sampled"):
        homodyne.sample(SMALL, small_data, prior={"D_offset": homodyne.Uniform()}, **args)
    with pytest.raises(TypeError, match=r"homodyne\.Normal"):
        homodyne.sample(SMALL, small_data, prior={"alpha": (0.0, 1.0)}, **args)
    with pytest.raises(ValueError, match="log-uniform prior on alpha needs bounds > 0"):
        homodyne.sample(SMALL, small_data, prior={"alpha": homodyne.LogUniform()}, **args)
    with pytest.raises(ValueError, match="sd > 0"):
        homodyne.Normal(0.0, -1.0)
    with pytest.raises(TypeError, match="fit must be the FitResult"):
        homodyne.sample(SMALL, small_data, fit="a fit", **args)


@pytest.mark.slow  # 15 s; the fast suite is at its 10-minute limit (the fit's CLI paths stay fast)
def test_command_line_sample(tmp_path, capsys, monkeypatch):
    # `homodyne sample FILE`: the fit's options and output, then the posterior's summary, draws
    # and plots beside them; run in this process (main()), as a user would from a shell. The
    # Laplace method here (NUTS's compilation is paid by the test above, on another shape)
    from homodyne._cli import main

    clean = np.asarray(SMALL.g2(SMALL_TRUTH, 0.3, 1.0))
    path = hio.write_aps_file(tmp_path / "c2.h5", clean + symmetric_noise(clean.shape, SIGMA, 5),
                              q=[0.0054], phi=[0.0], frame_time=0.5)  # fmt: skip
    monkeypatch.setenv("HOMODYNE_COMPILE_CACHE_DIR", COMPILE_CACHE)
    res = tmp_path / "res"
    code = main(["sample", str(path), "--time-origin", "1", "--sigma", str(SIGMA), "--fixed",
                 "D_offset=0", "--init", "D0=15000", "alpha=-0.4", "D_offset=0", "--chains", "2",
                 "--draws", "200", "--method", "laplace", "--out", str(res)])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "homodyne fit (static): converged" in out.out
    assert "homodyne posterior (static, laplace): 2 chains × 200 draws" in out.out
    saved = hio.load_posterior(res / "posterior.json")
    assert saved.values.shape == (2, 200, 2) and saved.names == ("D0", "alpha")
    assert (res / "fit.json").exists() and (res / "posterior_corner.png").exists()
    assert (res / "posterior_traces.png").exists() and (res / "posterior_rates.png").exists()
    assert (res / "posterior_g2_cuts.png").exists()
    code = main(["sample", str(path), "--draws", "2", "--out", str(tmp_path / "other")])
    assert code != 0
    assert (
        capsys.readouterr().err.strip() == "homodyne: error: --draws must be an integer ≥ 4; got 2."
    )


@pytest.mark.slow  # 30 frame-level simulations, a fit and a Laplace posterior each (~2 min)
def test_posterior_widths_on_frame_level_data():
    # Detector-like data (speckle, Poisson counts, the correlator's normalisation; the setting of
    # test_frames' coverage test): the adjusted posterior's standard deviations against the
    # seed-to-seed spread of the posterior means, where the unadjusted likelihood's are several
    # times too small. Measured at 50 seeds (2026-12-07, the leverage-scaled error covariance):
    # median ratios 1.10, 1.27, 1.17 (D0, alpha, D_offset; the fit's own errors against its
    # spread: 1.12, 1.32, 1.25; the unadjusted likelihood's 0.14, 0.21, 0.17). With the window
    # jackknife before it, at 30 seeds: 1.03, 1.46, 1.31. The posterior is as wide as the fit's
    # errors; alpha's 1.27 is within the ±10 % that 50 seeds resolve of issue 14's [0.8, 1.25],
    # not shown inside it. A guard against regressions: the fit's own range.
    model = HomodyneModel(
        q=0.01, dt=0.1, n_frames=200, phi=list(np.linspace(0, 150, 6)), time_origin=0.1
    )
    truth = StaticParams(2e4, -0.5, 5e3)
    means, sds, naive = [], [], []
    for seed in range(30):
        c2 = homodyne.simulate_frames(model, truth, pixels=2000, modes=5, counts=5.0, seed=seed)
        fit = homodyne.fit(model, c2, init=truth, spec=FitSpec(mode="static"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            args = dict(fit=fit, method="laplace", num_chains=2, num_draws=500, seed=seed)
            post = homodyne.sample(model, c2, **args)
            plain = homodyne.sample(model, c2, adjust=False, **args)
        summary = post.summary()
        means.append([summary[n]["mean"] for n in post.names])
        sds.append([summary[n]["sd"] for n in post.names])
        naive.append([s["sd"] for s in plain.summary().values()])
    spread = np.std(means, axis=0, ddof=1)
    ratio = np.median(sds, axis=0) / spread
    assert np.all((ratio > 0.7) & (ratio < 1.5)), ratio
    assert np.all(np.median(naive, axis=0) / spread < 0.5)


@pytest.mark.slow  # 100 replications of NUTS on a small problem (~8 min)
def test_simulation_based_calibration():
    # Talts et al. (2018): truths drawn from the prior, data simulated from each, and the rank of
    # the truth among (thinned) posterior draws is uniform if the sampler draws from the
    # posterior. Contrast and offset are fixed in the simulations (their flat priors are
    # improper); the data determine them far more tightly than the physical parameters.
    rng = np.random.default_rng(2024)
    spec = FitSpec(
        mode="static", fixed={"D_offset": 0.0}, bounds={"D0": (5e3, 3e4), "alpha": (-1.0, 0.5)}
    )
    ranks = []
    for r in range(100):
        d0 = float(np.exp(rng.uniform(np.log(5e3), np.log(3e4))))  # the default: log-uniform
        alpha = float(rng.uniform(-1.0, 0.5))
        truth = StaticParams(d0, alpha, 0.0)
        data = np.asarray(SMALL.g2(truth, 0.3, 1.0)) + symmetric_noise(
            (1, N_FRAMES, N_FRAMES), SIGMA, 100 + r
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            post = homodyne.sample(
                SMALL, data, sigma=SIGMA, spec=spec, adjust=False, num_chains=2,
                num_draws=400, num_warmup=100, seed=r, progress=False,
            )  # fmt: skip
        draws = np.asarray(post.values)[:, ::4].reshape(-1, 2)  # 200 draws, thinned
        ranks.append([np.sum(draws[:, 0] < d0), np.sum(draws[:, 1] < alpha)])
    ranks = np.array(ranks)
    for i in range(2):  # 10 bins of the ranks 0…200: χ² with 9 dof, p > 0.001
        counts = np.histogram(ranks[:, i], bins=10, range=(0, 201))[0]
        chi2 = np.sum((counts - 10.0) ** 2 / 10.0)
        assert chi2 < 27.88, (i, counts)
