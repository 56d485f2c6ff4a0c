"""This checkout against an earlier revision of homodyne, in one process, alternating call by call.

The earlier revision's ``homodyne/`` is taken with ``git archive`` into a temporary folder and
imported as ``homodyne_base`` (the package imports itself relatively), so both run on the same
machine, in the same process, seconds apart: load from elsewhere hits both alike. For each size it
reports compile time (first call minus a later one) and run time (median over rounds; each round
calls the base and this checkout in turn) with the median of the per-round ratios, for

- g2 (`jax_backend.compute_g2_scaled`), χ² and its gradient (`compute_chi_squared`,
  `gradient_chi2`, σ as an array like the data, as the old package's documentation shows, and as
  a scalar);
- one Levenberg–Marquardt step of a fit (`jax.jacfwd` of the compressed residuals, as optimistix
  linearises them);
- a laminar fit from a start 30 % off (first call with compilation, then refits).

Run:  python benchmarks/compare.py --base REV [--quick] [--rounds 7] [--calls g2 chi2 ...]
      (writes benchmarks/results/compare.json)
"""

import argparse
import importlib
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from _machine import save_results

TRUTH = np.array([1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0])
SIZES = [(3, 1000), (23, 1000)]
QUICK = [(3, 200), (23, 100)]


def base_package(rev: str, folder: pathlib.Path):
    """homodyne as of ``rev``, imported as ``homodyne_base``."""
    root = pathlib.Path(__file__).resolve().parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "homodyne"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    (folder / "homodyne").rename(folder / "homodyne_base")
    sys.path.insert(0, str(folder))
    return importlib.import_module("homodyne_base")


def timed(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def fit_call(hd, model, data, init):
    """A fit from ``init`` (the same call in every revision so far)."""
    return lambda: hd.fit(model, data, sigma=1e-3, init=init).chi2


def step_call(hd, model, data, init):
    """One solver step (value and Jacobian of the compressed residuals) at ``init``."""
    problem_module = importlib.import_module(f"{hd.__name__}._problem")
    bounds_module = importlib.import_module(f"{hd.__name__}._bounds")
    names = hd.LaminarFlowParams.names
    lower, upper = bounds_module.resolve_bounds(names, None)
    transform = bounds_module.BoundedTransform(lower[:-2], upper[:-2])
    import jax.numpy as jnp

    problem = problem_module.tiled_problem(
        model,
        jnp.asarray(data),
        jnp.full((1, 1, 1), 1e-3),
        transform=transform,
        lin_lower=jnp.asarray(lower[-2:]),
        lin_upper=jnp.asarray(upper[-2:]),
        fixed_values=init.to_array(),
        free=(True,) * len(names),
        laminar=True,
        shared=False,
    )
    u0 = transform.to_internal(init.to_array())
    step = jax.jit(jax.jacfwd(problem_module.compressed_residuals))  # value and Jacobian
    return lambda: step(u0, problem)


def calls(hd, n_phi: int, n: int, data, sigma) -> dict:
    jb = importlib.import_module(f"{hd.__name__}.core.jax_backend")
    phi = np.linspace(0.0, 180.0, n_phi, endpoint=False)
    t = 0.1 * np.arange(n) + 0.1
    args = (t, t, phi, 0.0054, 2e6, 0.3, 1.0, 0.1)
    x = TRUTH * 1.05
    model = hd.HomodyneModel(q=0.0054, dt=0.1, t=t, phi=phi, L=2e6)
    init = hd.LaminarFlowParams.from_array(TRUTH * 1.3)
    out = {
        "g2": lambda: jb.compute_g2_scaled(x, *args),
        "chi2 (σ array)": lambda: jb.compute_chi_squared(x, data, sigma, *args),
        "chi2 (σ scalar)": lambda: jb.compute_chi_squared(x, data, 1e-3, *args),
        "gradient (σ array)": lambda: jb.gradient_chi2(x, data, sigma, *args),
        "gradient (σ scalar)": lambda: jb.gradient_chi2(x, data, 1e-3, *args),
        "LM step": step_call(hd, model, data, init),
    }
    if n_phi <= 3 or n <= 1000:
        out["fit"] = fit_call(hd, model, data, init)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare with")
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--calls", nargs="+", help="only these calls (names as printed, e.g. 'LM step' fit)"
    )
    args = parser.parse_args()
    import homodyne

    with tempfile.TemporaryDirectory() as folder:
        base = base_package(args.base, pathlib.Path(folder))
        rows = []
        print(f"base = {args.base}; this checkout = {pathlib.Path(homodyne.__file__).parent}")
        print(
            f"{'size':>9} {'call':<20} {'compile base':>12} {'this':>8} "
            f"{'run base':>10} {'this':>10} {'this/base':>9}"
        )
        for n_phi, n in QUICK if args.quick else SIZES:
            phi = np.linspace(0.0, 180.0, n_phi, endpoint=False)
            model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=phi, time_origin=0.1)
            clean = np.asarray(model.g2(homodyne.LaminarFlowParams.from_array(TRUTH), 0.3, 1.0))
            noise = np.triu(np.random.default_rng(0).normal(scale=1e-3, size=clean.shape), 1)
            data = jax.device_put(clean + noise + np.swapaxes(noise, 1, 2))
            sigma = jax.device_put(np.full(clean.shape, 1e-3))
            fns = {
                "base": calls(base, n_phi, n, data, sigma),
                "this": calls(homodyne, n_phi, n, data, sigma),
            }
            for name in fns["this"]:
                if args.calls and not any(name.startswith(c) for c in args.calls):
                    continue
                compile_s, times = {}, {"base": [], "this": []}
                for side in ("base", "this"):
                    first = timed(fns[side][name])
                    compile_s[side] = first - timed(fns[side][name])
                rounds = args.rounds if name != "fit" else max(3, args.rounds // 2)
                for _ in range(rounds):
                    for side in ("base", "this"):
                        times[side].append(timed(fns[side][name]))
                ratios = [b / a for a, b in zip(times["base"], times["this"], strict=True)]
                row = {
                    "n_phi": n_phi,
                    "n_frames": n,
                    "call": name,
                    "compile_base_s": compile_s["base"],
                    "compile_this_s": compile_s["this"],
                    "run_base_s": statistics.median(times["base"]),
                    "run_this_s": statistics.median(times["this"]),
                    "ratio_median": statistics.median(ratios),
                    "ratio_range": [min(ratios), max(ratios)],
                }
                rows.append(row)
                print(
                    f"{f'{n_phi}×{n}':>9} {name:<20} {compile_s['base']:>11.2f}s "
                    f"{compile_s['this']:>7.2f}s {1e3 * row['run_base_s']:>8.1f}ms "
                    f"{1e3 * row['run_this_s']:>8.1f}ms {row['ratio_median']:>9.3f}",
                    flush=True,
                )
        save_results("compare", [{"base": args.base}, *rows], args.quick)


if __name__ == "__main__":
    main()
