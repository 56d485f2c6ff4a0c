"""Posterior widths on detector-like data (issue 14, point 4): frame-level realisations
(`homodyne.simulate_frames`: speckle, Poisson counts, the correlator's normalisation) of one static
experiment, each fitted and sampled (`method="laplace"`), adjusted for correlated C2 errors (the
default) and not. For each parameter: the median posterior standard deviation over the seed-to-seed
standard deviation of the posterior means (1 = honest), the same for the fit's reported errors,
and the fraction of posteriors whose mean ± sd holds the truth.

Setting (as tests/test_sample.py's slow test): q = 0.01 Å⁻¹, dt = 0.1 s, 200 frames, six φ
sectors 0–150°, 2000 pixels, M = 5 speckle modes, 5 photons per pixel and frame; D0 = 2e4,
alpha = −0.5, D_offset = 5e3 (about 2 minutes at 50 seeds on 2 cores).

Run:  python benchmarks/posterior_widths.py [--seeds 50]
      (writes benchmarks/results/posterior_widths.json)
"""

import argparse
import time
import warnings

import numpy as np
from _machine import save_results

import homodyne
from homodyne import FitSpec, HomodyneModel, StaticParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    args = parser.parse_args()
    model = HomodyneModel(
        q=0.01, dt=0.1, n_frames=200, phi=list(np.linspace(0, 150, 6)), time_origin=0.1
    )
    truth = StaticParams(2e4, -0.5, 5e3)
    means, sds, plain_sds, fit_values, fit_errors = [], [], [], [], []
    started = time.perf_counter()
    for seed in range(args.seeds):
        c2 = homodyne.simulate_frames(model, truth, pixels=2000, modes=5, counts=5.0, seed=seed)
        fit = homodyne.fit(model, c2, init=truth, spec=FitSpec(mode="static"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            common = dict(fit=fit, method="laplace", num_chains=2, num_draws=500, seed=seed)
            post = homodyne.sample(model, c2, **common)
            plain = homodyne.sample(model, c2, adjust=False, **common)
        summary = post.summary()
        means.append([summary[n]["mean"] for n in post.names])
        sds.append([summary[n]["sd"] for n in post.names])
        plain_sds.append([s["sd"] for s in plain.summary().values()])
        fit_values.append(np.asarray(fit.params.to_array()))
        fit_errors.append(np.asarray(fit.errors.to_array()))
    names = list(StaticParams.names)
    spread = np.std(means, axis=0, ddof=1)
    rows = []
    print(f"{args.seeds} seeds, {time.perf_counter() - started:.0f} s")
    print(
        f"{'parameter':>10} {'posterior':>10} {'unadjusted':>11} {'fit errors':>11} {'1σ holds':>9}"
    )
    for i, name in enumerate(names):
        row = {
            "parameter": name,
            "seeds": args.seeds,
            "posterior_sd_over_spread": float(np.median(np.asarray(sds)[:, i]) / spread[i]),
            "unadjusted_sd_over_spread": float(np.median(np.asarray(plain_sds)[:, i]) / spread[i]),
            "fit_error_over_fit_spread": float(
                np.median(np.asarray(fit_errors)[:, i])
                / np.std(np.asarray(fit_values)[:, i], ddof=1)
            ),
            "posterior_1sd_coverage": float(
                np.mean(
                    np.abs(np.asarray(means)[:, i] - truth.to_array()[i]) < np.asarray(sds)[:, i]
                )
            ),
        }
        rows.append(row)
        print(
            f"{name:>10} {row['posterior_sd_over_spread']:>10.2f} "
            f"{row['unadjusted_sd_over_spread']:>11.2f} {row['fit_error_over_fit_spread']:>11.2f} "
            f"{row['posterior_1sd_coverage']:>9.0%}"
        )
    save_results("posterior_widths", rows, quick=False)


if __name__ == "__main__":
    main()
