"""Forward-model speed: g2 through HomodyneModel and the functional API, against the floor.

The floor for g2 is the time to produce a fresh float64 array of the same shape (a jitted
``jnp.full``); for χ² and its gradient (`jax_backend.compute_chi_squared`, `gradient_chi2`) it is
the time to read the data once (a jitted sum of squares). The machine is shared and noisy, so every
round calls the floors and the functions in turn, and a ratio is the median over the rounds of
the ratio within a round. Compile time (first call) and run time (median of the rounds) are
separate.

Run:  python benchmarks/kernels.py [--quick]     (writes benchmarks/results/kernels.json)
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import save_results

import homodyne
from homodyne.core import jax_backend as jb

READ = jax.jit(lambda d: jnp.sum(d * d))
PARAMS = np.array([1.0e4, -0.3, 10.0, 2.0e-3, 0.2, 1.0e-4, 5.0])


def first_call(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def rounds(fns: dict, repeats: int) -> dict:
    """Run times of each function in ``fns``, called in turn in every round: a floor and what is
    compared with it are measured seconds apart, so load from elsewhere hits both alike."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(times: dict, name: str, floor: str) -> float:
    """The median over rounds of time / floor time in the same round."""
    return statistics.median(t / f for t, f in zip(times[name], times[floor], strict=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    args = parser.parse_args()
    sizes = [(1, 200), (3, 500)] if args.quick else [(1, 1000), (3, 1000), (23, 500), (23, 1000)]
    repeats = 3 if args.quick else 9

    rows = []
    for n_phi, n in sizes:
        phi = np.linspace(0.0, 180.0, n_phi, endpoint=False)
        model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=phi)
        p = homodyne.LaminarFlowParams.from_array(PARAMS)
        t = np.asarray(model.t)
        fill = jax.jit(lambda v, shape=(n_phi, n, n): jnp.full(shape, v))
        fns = {
            "fresh": lambda fill=fill: fill(1.0),
            "model": lambda m=model, p=p: m.g2(p, 0.3, 1.0),
            "api": lambda t=t, phi=phi: jb.compute_g2_scaled(
                PARAMS, t, t, phi, 0.0054, 2e6, 0.3, 1.0, 0.1
            ),
        }
        first = {name: first_call(fn) for name, fn in fns.items()}  # compile time included
        data = jnp.asarray(
            np.asarray(model.g2(p, 0.3, 1.0))
            + np.random.default_rng(0).normal(scale=1e-3, size=(n_phi, n, n))
        )
        chi2_args = (t, t, phi, 0.0054, 2e6, 0.3, 1.0, 0.1)
        more = {
            "read": lambda d=data: READ(d),
            "chi2": lambda d=data, a=chi2_args: jb.compute_chi_squared(PARAMS, d, 1e-3, *a),
            "grad": lambda d=data, a=chi2_args: jb.gradient_chi2(PARAMS, d, 1e-3, *a),
        }
        first |= {name: first_call(fn) for name, fn in more.items()}
        fns |= more
        times = rounds(fns, repeats)
        run = {name: statistics.median(v) for name, v in times.items()}
        elements = n_phi * n * n
        rows.append(
            {
                "n_phi": n_phi,
                "n_frames": n,
                "elements": elements,
                "rounds": repeats,
                "fresh_array_s": run["fresh"],
                "model_g2_first_call_s": first["model"],
                "model_g2_s": run["model"],
                "model_g2_over_fresh_array": median_ratio(times, "model", "fresh"),
                "model_M_elements_per_s": elements / run["model"] / 1e6,
                "api_g2_first_call_s": first["api"],
                "api_g2_s": run["api"],
                "api_g2_over_fresh_array": median_ratio(times, "api", "fresh"),
                "read_once_s": run["read"],
                "chi2_first_call_s": first["chi2"],
                "chi2_s": run["chi2"],
                "chi2_over_read": median_ratio(times, "chi2", "read"),
                "chi2_gradient_first_call_s": first["grad"],
                "chi2_gradient_s": run["grad"],
                "chi2_gradient_over_read": median_ratio(times, "grad", "read"),
            }
        )

    header = f"{'n_phi':>5} {'N':>5} {'fresh [ms]':>10} {'model [ms]':>10} {'×floor':>7} "
    header += f"{'Melem/s':>8} {'compile [s]':>11} {'api [ms]':>9} {'×floor':>7} "
    header += f"{'read [ms]':>9} {'χ² [ms]':>8} {'×read':>6} {'∇χ² [ms]':>9} {'×read':>6}"
    print(header)
    for r in rows:
        print(
            f"{r['n_phi']:>5} {r['n_frames']:>5} {1e3 * r['fresh_array_s']:>10.1f} "
            f"{1e3 * r['model_g2_s']:>10.1f} {r['model_g2_over_fresh_array']:>7.2f} "
            f"{r['model_M_elements_per_s']:>8.0f} {r['model_g2_first_call_s']:>11.2f} "
            f"{1e3 * r['api_g2_s']:>9.1f} {r['api_g2_over_fresh_array']:>7.2f} "
            f"{1e3 * r['read_once_s']:>9.1f} {1e3 * r['chi2_s']:>8.1f} {r['chi2_over_read']:>6.2f} "
            f"{1e3 * r['chi2_gradient_s']:>9.1f} {r['chi2_gradient_over_read']:>6.2f}"
        )
    save_results("kernels", rows, args.quick)


if __name__ == "__main__":
    main()
