"""End-to-end fit times: compile and run separately, peak memory, one subprocess per case.

Each case simulates laminar-flow (or static) data with Gaussian noise, then fits it from a start
perturbed by 30 % (``-auto``: from the automatic start, without ``init``). The first call compiles
and runs; the second fits new data of the same shape, so it runs without compiling. Peak memory is
the case's process maximum resident set size.

Run:  python benchmarks/fit.py [--quick] [--cases NAME ...]   (writes benchmarks/results/fit.json)
"""

import argparse
import json
import resource
import subprocess
import sys
import time

from _machine import save_results

CASES = {
    "laminar-3x500": ("laminar", 3, 500),
    "laminar-3x1000": ("laminar", 3, 1000),
    "laminar-23x1000": ("laminar", 23, 1000),
    "laminar-23x2000": ("laminar", 23, 2000),
    "laminar-23x1000-auto": ("laminar-auto", 23, 1000),
    "static-1x1000": ("static", 1, 1000),
}
QUICK = {"laminar-3x200": ("laminar", 3, 200), "static-1x200": ("static", 1, 200)}


def run_case(mode: str, n_phi: int, n: int) -> dict:
    import jax
    import numpy as np

    import homodyne

    phi = np.linspace(0.0, 90.0, n_phi)
    model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=phi, time_origin=1.0)
    automatic = mode.endswith("-auto")
    mode = mode.removesuffix("-auto")
    if mode == "laminar":
        truth = homodyne.LaminarFlowParams(1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0)
        perturb = np.array([1.3, 0.7, 1.3, 0.7, 1.3, 0.7, 1.3])
    else:
        truth = homodyne.StaticParams(1.2e4, -0.5, 50.0)
        perturb = np.array([1.3, 0.7, 1.3])
    init = type(truth).from_array(np.asarray(truth.to_array()) * perturb)
    clean = np.asarray(model.g2(truth, 0.3, 1.0))

    def data(seed):
        noise = np.triu(np.random.default_rng(seed).normal(scale=3e-3, size=clean.shape))
        return clean + noise + np.swapaxes(np.triu(noise, 1), 1, 2)

    first_data, second_data = data(1), data(2)
    start = time.perf_counter()
    if automatic:
        init = None  # the automatic start
    first = homodyne.fit(model, first_data, sigma=3e-3, init=init)
    jax.block_until_ready(first.params)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = homodyne.fit(model, second_data, sigma=3e-3, init=init)
    jax.block_until_ready(second.params)
    second_s = time.perf_counter() - start
    z = (np.asarray(second.params.to_array()) - np.asarray(truth.to_array())) / np.asarray(
        second.errors.to_array()
    )
    return {
        "mode": mode,
        "automatic_start": automatic,
        "n_phi": n_phi,
        "n_frames": n,
        "residuals": n_phi * n * (n - 1) // 2,
        "first_fit_s": first_s,
        "fit_s": second_s,
        "compile_s_estimate": first_s - second_s,
        "steps": int(second.n_steps),
        "converged": bool(first.converged) and bool(second.converged),
        "max_abs_z": float(np.max(np.abs(z))),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small cases only (smoke test)")
    parser.add_argument("--cases", nargs="*", help=f"subset of {sorted(CASES)}")
    parser.add_argument("--run-one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        mode, n_phi, n = args.run_one
        print(json.dumps(run_case(mode, int(n_phi), int(n))))
        return
    table = QUICK if args.quick else {k: CASES[k] for k in (args.cases or CASES)}
    rows = []
    for name, (mode, n_phi, n) in table.items():
        cmd = [sys.executable, __file__, "--run-one", mode, str(n_phi), str(n)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"case": name, "error": out.stderr.strip().splitlines()[-1]})
            print(f"{name}: failed: {rows[-1]['error']}")
            continue
        rows.append({"case": name, **json.loads(out.stdout.strip().splitlines()[-1])})
        r = rows[-1]
        print(
            f"{name:<16} first {r['first_fit_s']:7.2f} s   refit {r['fit_s']:7.2f} s   "
            f"compile ≈ {r['compile_s_estimate']:5.2f} s   steps {r['steps']:3d}   "
            f"peak {r['peak_rss_gb']:5.2f} GB   converged {r['converged']}   max|z| {r['max_abs_z']:.2f}"
        )
    save_results("fit", rows, args.quick)


if __name__ == "__main__":
    main()
