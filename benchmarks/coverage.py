"""Coverage of the fit's error bars on frame-level simulated detector data (issue 12, SPEC §6).

For each setting (static or laminar flow, mean count per pixel and frame, speckle modes M), fits
many independent realisations of the same experiment (`homodyne.simulate_frames`: speckle,
Poisson counts, the correlator's normalisation) and compares, for every physical parameter and for
D(t) at mid-window, the reported standard errors with the seed-to-seed scatter of the estimates:
the fraction of fits with the truth within 1σ and 2σ (target 68 % and 95 %, ±7 points) and the
median ratio of reported σ to the standard deviation of the estimates (target 0.8–1.25), beside
the same numbers for the independent-element errors (JᵀJ)⁻¹.

    python benchmarks/coverage.py [--seeds 50] [--quick] [--out FILE]
    python benchmarks/coverage.py --leverage [--seeds 40]

Prints a table and writes benchmarks/results/coverage.json (or FILE).

``--leverage`` measures instead the settings where a few windows of the two-time grid carry a
parameter (slow dynamics: 12–14 blocks per side, window leverages up to 0.99), which decide the
error covariance's leverage correction (`homodyne._covariance.window_covariance`): laminar flow at
3 angles × 400 frames, q = 0.0054 Å⁻¹ (benchmarks/fit.py's truth), with independent Gaussian
element errors (`simulate_c2`) and with frame-level detector data (`simulate_frames`, M = 5,
μ = 5); it writes benchmarks/results/coverage_leverage.json.
"""

import argparse
import json
import pathlib
import platform
import time

import jax
import numpy as np

import homodyne
from homodyne import FitSpec, HomodyneModel, LaminarFlowParams, StaticParams

PHI = list(np.linspace(0.0, 150.0, 6))  # six φ sectors of a ring
STATIC = StaticParams(2e4, -0.5, 5e3)
LAMINAR = LaminarFlowParams(2e4, -0.5, 5e3, 5e-4, 0.3, 1e-4, 4.0)


SLOW = LaminarFlowParams(1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0)  # benchmarks/fit.py's truth


def settings(quick: bool):
    modes_counts = [(5, 5.0), (5, 1.0), (10, 5.0), (10, 1.0)]
    for mode in ("static", "laminar"):
        for modes, counts in modes_counts[: 2 if quick else 4]:
            yield mode, modes, counts


def d_mid(theta, t_mid):
    return theta[0] * t_mid ** theta[1] + theta[2]


def d_mid_error(theta, cov, t_mid):
    grad = np.array([t_mid ** theta[1], theta[0] * t_mid ** theta[1] * np.log(t_mid), 1.0])
    # ≥ 0 in exact arithmetic; a degenerate fit (α → 0: D0 and D_offset errors ~1e8 that cancel)
    # can round below 0, and is then given 0 (the truth outside any σ)
    return float(np.sqrt(max(grad @ cov[:3, :3] @ grad, 0.0)))


def run(mode, modes, counts, seeds, n_frames, pixels, slow=False):
    """``slow``: the leverage settings (module docstring); ``modes`` 0 there means independent
    Gaussian element errors of standard deviation 3e-3 (`simulate_c2`) instead of frames."""
    if slow:
        model = HomodyneModel(q=0.0054, dt=0.1, n_frames=n_frames, phi=[0.0, 45.0, 90.0],
                              time_origin=1.0)  # fmt: skip
        truth = SLOW
    else:
        model = HomodyneModel(q=0.01, L=2e6, dt=0.1, n_frames=n_frames, phi=PHI, time_origin=0.1)
        truth = STATIC if mode == "static" else LAMINAR
    names = [*truth.names, "D(t_mid)"]
    t_mid = float(model.t[n_frames // 2])
    rows = []
    start = time.perf_counter()
    for s in range(seeds):
        if slow and modes == 0:
            c2 = homodyne.simulate_c2(model, truth, 0.3, 1.0, noise=3e-3, seed=s)
        else:
            c2 = homodyne.simulate_frames(
                model, truth, pixels=pixels, modes=modes, counts=counts, seed=s
            )
        r = homodyne.fit(
            model, c2, sigma=3e-3 if slow and modes == 0 else None, init=truth,
            spec=FitSpec(mode=mode),
        )  # fmt: skip
        theta = np.asarray(r.params.to_array())
        cov, naive = np.asarray(r.covariance), np.asarray(r.covariance_independent)
        rows.append(
            (
                np.append(theta, d_mid(theta, t_mid)),
                np.append(r.errors.to_array(), d_mid_error(theta, cov, t_mid)),
                np.append(r.errors_independent.to_array(), d_mid_error(theta, naive, t_mid)),
                bool(r.converged),
                int(r.n_clusters),
                bool(r.correlation_resolved),
            )
        )
    est, err, naive = (np.array([row[k] for row in rows]) for k in range(3))
    true = np.append(truth.to_array(), d_mid(np.asarray(truth.to_array()), t_mid))
    scatter = est.std(0, ddof=1)
    out = {
        "mode": mode, "modes": modes, "counts": counts, "seeds": seeds,
        "n_frames": n_frames, "pixels": pixels, "n_phi": len(PHI),
        "converged": float(np.mean([row[3] for row in rows])),
        "clusters": float(np.median([row[4] for row in rows])),
        "resolved": float(np.mean([row[5] for row in rows])),
        "seconds": time.perf_counter() - start, "parameters": {},
        "fits": {"names": names, "estimates": est.tolist(), "errors": err.tolist(),
                 "converged": [row[3] for row in rows]},
        "noise": "independent Gaussian" if slow and modes == 0 else "frames",
    }  # fmt: skip
    for i, name in enumerate(names):
        out["parameters"][name] = {
            label: coverage(est[:, i], e, true[i], scatter[i])
            for label, e in (("clustered", err[:, i]), ("independent", naive[:, i]))
        }
    return out


def coverage(est, err, true: float, scatter: float) -> dict:
    """Of fits with estimates ``est`` and errors ``err`` (one per fit): the fraction with the
    truth within 1σ and 2σ, the median error over the estimates' standard deviation, and over a
    scale that a few far-off fits do not move (1.4826 × the median absolute deviation, the
    standard deviation for Gaussian estimates)."""
    z = np.abs(est - true) / err
    robust = 1.4826 * np.median(np.abs(est - np.median(est)))
    return {
        "within_1": float(np.mean(z < 1)),
        "within_2": float(np.mean(z < 2)),
        "median_ratio": float(np.median(err) / scatter),
        "median_ratio_robust": float(np.median(err) / robust),
        "rms_z": float(np.sqrt(np.mean(z**2))),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--pixels", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="two settings of each mode")
    parser.add_argument(
        "--leverage", action="store_true", help="the slow-dynamics settings (see the docstring)"
    )
    parser.add_argument(
        "--out", type=pathlib.Path, help="default: benchmarks/results/coverage.json"
    )
    args = parser.parse_args()
    results = []
    print(
        f"{'setting':<26}{'parameter':<20}{'1σ':>6}{'2σ':>6}{'σ/sd':>7}{'rms z':>7}   "
        f"{'1σ indep':>9}{'2σ':>6}{'σ/sd':>7}{'rms z':>7}"
    )
    chosen = [("laminar", 0, 0.0), ("laminar", 5, 5.0)] if args.leverage else settings(args.quick)
    for mode, modes, counts in chosen:
        out = run(
            mode, modes, counts, args.seeds, 400 if args.leverage else args.frames, args.pixels,
            slow=args.leverage,
        )  # fmt: skip
        results.append(out)
        label = f"{mode} M={modes} μ={counts:g}" if modes else f"{mode} independent"
        for name, e in out["parameters"].items():
            c, n = e["clustered"], e["independent"]
            print(
                f"{label:<26}{name:<20}{c['within_1']:>6.2f}{c['within_2']:>6.2f}"
                f"{c['median_ratio']:>7.2f}{c['rms_z']:>7.2f}   {n['within_1']:>9.2f}"
                f"{n['within_2']:>6.2f}{n['median_ratio']:>7.3f}{n['rms_z']:>7.2f}"
            )
            label = ""
        print(
            f"{'':<26}converged {out['converged']:.2f}, clusters {out['clusters']:.0f}, "
            f"resolved {out['resolved']:.2f}, {out['seconds']:.0f} s",
            flush=True,
        )
    name = "coverage_leverage.json" if args.leverage else "coverage.json"
    path = args.out or pathlib.Path(__file__).parent / "results" / name
    path.parent.mkdir(exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "homodyne": homodyne.__version__,
    }
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
