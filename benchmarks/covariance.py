"""The error covariance for correlated C2 errors (`homodyne._covariance.window_covariance`) alone:
its compilation and its compiled time, against another version of the code.

Synthetic per-square sums like a fit's at 23 angles (7 physical parameters, so 9 per angle with
contrast and offset) and ``--blocks`` blocks of frames per side: random scores and information per
square, decaying away from the diagonal. Each round runs, in a fresh process per tree and in turn,
this tree and ``--baseline DIR`` (a source tree of another version, e.g. ``git archive <commit> |
tar -x -C DIR``): the first call (compilation included) and the median of 5 compiled calls. The two
trees' standard errors are compared on the same inputs.

Run:  python benchmarks/covariance.py --baseline DIR [--rounds 3] [--blocks 64]
(writes benchmarks/results/covariance.json)
"""

import argparse
import inspect
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from _machine import save_results

HERE = pathlib.Path(__file__).resolve().parent
N_PHI, N_PHYSICAL, WIDTH = 23, 7, 3


def run_one(n_blocks: int, out: str) -> None:
    """One process: time `window_covariance` on the synthetic sums, save its standard errors."""
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    import homodyne  # noqa: F401  (float64)
    from homodyne._covariance import window_covariance

    rng = np.random.default_rng(0)
    m, n = N_PHYSICAL + 2, n_blocks
    k_dim = N_PHYSICAL + 2 * N_PHI
    x = rng.normal(size=(n, n, N_PHI, 20, m))
    x *= np.exp(-0.1 * np.abs(np.subtract.outer(np.arange(n), np.arange(n))))[..., None, None, None]
    x *= np.triu(np.ones((n, n)))[..., None, None, None]  # squares below the diagonal are empty
    r = rng.normal(size=(n, n, N_PHI, 20))
    score = np.einsum("abkpm,abkp->abkm", x, r)
    info = np.einsum("abkpm,abkpn->abkmn", x, x)
    embed = np.zeros((N_PHI, k_dim, m))
    for k in range(N_PHI):
        embed[k, :N_PHYSICAL, :N_PHYSICAL] = np.eye(N_PHYSICAL)
        embed[k, N_PHYSICAL + k, N_PHYSICAL] = 1.0
        embed[k, N_PHYSICAL + N_PHI + k, N_PHYSICAL + 1] = 1.0
    h = np.einsum("kam,kmn,kbn->ab", embed, info.sum(axis=(0, 1)), embed)
    args = [jnp.asarray(v) for v in (score, info, h, embed)]
    # this tree's takes H⁻¹ (the fit inverts H once for it and for the undetermined parameters),
    # older ones H: either way the inversion is timed with it
    if "h_inverse" in inspect.signature(window_covariance).parameters:
        from homodyne._covariance import inverse

        def fn(s, i, h, e):
            return window_covariance(s, i, inverse(h), e, WIDTH)

        fn = jax.jit(fn)
    else:
        fn = jax.jit(lambda *a: window_covariance(*a, WIDTH))
    start = time.perf_counter()
    cov = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    steady = statistics.median(times)
    result = {"first_s": first, "compiled_s": steady, "compile_s": first - steady}
    result["errors"] = np.sqrt(np.diag(np.asarray(cov))).tolist()
    pathlib.Path(out).write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="source tree of the other version")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=64, help="blocks of frames per side")
    parser.add_argument("--run-one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        run_one(int(args.run_one[0]), args.run_one[1])
        return
    trees = {"this": str(HERE.parent), "baseline": str(pathlib.Path(args.baseline).resolve())}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                out = os.path.join(tmp, f"{name}_{r}.json")
                env = {**os.environ, "PYTHONPATH": trees[name]}
                cmd = [sys.executable, __file__, "--baseline", args.baseline, "--run-one"]
                subprocess.run([*cmd, str(args.blocks), out], check=True, env=env)
                runs[name].append(json.loads(pathlib.Path(out).read_text()))
                last = runs[name][-1]
                print(f"round {r + 1}  {name:8s}  first call {last['first_s']:.2f} s, "
                      f"compiled {1e3 * last['compiled_s']:.0f} ms")  # fmt: skip
    rows = []
    print(f"\n{N_PHI} angles, {args.blocks} blocks per side; medians over {args.rounds} rounds")
    print(f"{'':9s} | {'first call':>10s} | {'compilation':>11s} | {'compiled':>9s}")
    for name, results in runs.items():
        row = {
            key: statistics.median(x[key] for x in results) for key in results[0] if key != "errors"
        }
        rows.append({"tree": name, "path": trees[name], "blocks": args.blocks, **row,
                     "rounds": [{k: v for k, v in x.items() if k != "errors"} for x in results]})  # fmt: skip
        print(f"{name:9s} | {row['first_s']:9.2f}s | {row['compile_s']:10.2f}s | "
              f"{1e3 * row['compiled_s']:7.0f}ms")  # fmt: skip
    a, b = runs["this"][0]["errors"], runs["baseline"][0]["errors"]
    worst = max(abs(x / y - 1) for x, y in zip(a, b, strict=True))
    print(f"standard errors: largest relative difference {worst:.1e}")
    rows.append({"largest_relative_difference_of_errors": worst})
    save_results("covariance", rows, quick=False)


if __name__ == "__main__":
    main()
