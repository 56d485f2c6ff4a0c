"""The fit's passes over the pairs at the solution, timed apart: the per-square pass of the error
covariance (`Problem.block_scores`, which also gives the information and gradient) against an
information pass (`Problem.information`, what the solver makes at every step).

    python benchmarks/passes.py [--size 23x1000] [--rounds 5]

One process, both compiled first, then timed in turn (alternating), each the best of 3 calls per
round. Prints the medians over rounds and writes benchmarks/results/passes.json.
"""

import argparse
import json
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import homodyne
from homodyne import FitSpec, HomodyneModel, LaminarFlowParams
from homodyne._fit import _build, _error_blocks


@eqx.filter_jit
def block_pass(problem, theta):
    contrast, offset = problem.scaling(theta)
    block_of, n_blocks, _ = _error_blocks(problem, theta)
    return problem.block_scores(theta, contrast, offset, block_of, n_blocks)


@eqx.filter_jit
def information_pass(problem, theta):
    contrast, offset = problem.scaling(theta)
    return problem.information(theta, contrast, offset)


def best_of(fn, problem, theta, calls=3):
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(problem, theta))
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", default="23x1000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n_phi, n = (int(x) for x in args.size.split("x"))
    model = HomodyneModel(q=0.0054, L=2e6, dt=0.1, n_frames=n,
                          phi=np.linspace(0, 150, n_phi), time_origin=1.0)  # fmt: skip
    truth = LaminarFlowParams(1.5e4, -0.4, 20.0, 2e-3, 0.3, 1e-4, 3.0)
    clean = np.asarray(model.g2(truth, 0.3, 1.0))
    noise = np.triu(np.random.default_rng(0).normal(scale=2e-3, size=clean.shape), 1)
    data = clean + noise + np.swapaxes(noise, 1, 2)
    problem = _build(model, data, 2e-3, truth, FitSpec())[0]
    theta = jnp.asarray(truth.to_array())
    passes = {"block_scores": block_pass, "information": information_pass}
    compile_s = {}
    for name, fn in passes.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(problem, theta))
        compile_s[name] = time.perf_counter() - start
    runs = {name: [] for name in passes}
    for _ in range(args.rounds):
        for name, fn in passes.items():
            runs[name].append(best_of(fn, problem, theta))
    print(f"{n_phi} × {n}, squares of {problem.side} × {problem.side} frames, {args.rounds} rounds")
    print(f"{'pass':<14}{'median':>9}{'range':>16}{'first call':>12}")
    for name, times in runs.items():
        print(f"{name:<14}{np.median(times):>8.3f}s{min(times):>8.3f}–{max(times):.3f}s"
              f"{compile_s[name]:>11.2f}s")  # fmt: skip
    out = pathlib.Path(__file__).parent / "results" / "passes.json"
    out.write_text(json.dumps({
        "size": args.size, "side": problem.side, "homodyne": homodyne.__version__,
        "seconds": runs, "first_call_s": compile_s,
    }, indent=1))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
