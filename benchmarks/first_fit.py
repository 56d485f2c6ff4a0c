"""The first fit of a fresh process: its time, its refit's, and how many XLA compilations each triggers.

A laminar-flow fit (3 angles × 1000 frames unless given) from a start 30 % off, σ given, in a fresh
process per round, as the command line runs it; then a refit of new data of the same shape. With
``--automatic-start`` the fits get no ``init`` (the automatic start, as `homodyne fit` without
``--init`` runs it). The compilations are counted with `jax.monitoring` (one backend-compile
event per XLA compilation). With ``--baseline DIR`` (a source tree of another version, e.g.
``git archive <commit> | tar -x``) the rounds alternate between that tree and this one, so load
from elsewhere hits both alike.

Run:  python benchmarks/first_fit.py [--rounds 3] [--shape 3 1000] [--automatic-start]
      [--baseline DIR]
(writes benchmarks/results/first_fit.json, or first_fit_automatic.json)
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

from _machine import save_results

HERE = pathlib.Path(__file__).resolve().parent


def run_case(n_phi: int, n: int, automatic: bool) -> dict:
    import jax
    import numpy as np

    import homodyne

    compiles: list[float] = []

    def listen(name, seconds, **_):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(listen)
    phi = np.linspace(0.0, 90.0, n_phi)
    model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=phi, t0=1.0)
    truth = homodyne.LaminarFlowParams(1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0)
    perturb = np.array([1.3, 0.7, 1.3, 0.7, 1.3, 0.7, 1.3])
    init = homodyne.LaminarFlowParams.from_array(np.asarray(truth.to_array()) * perturb)
    clean = np.asarray(model.g2(truth, 0.3, 1.0))

    def data(seed):
        noise = np.triu(np.random.default_rng(seed).normal(scale=3e-3, size=clean.shape))
        return clean + noise + np.swapaxes(np.triu(noise, 1), 1, 2)

    first_data, second_data = data(1), data(2)
    how = {"spec": homodyne.FitSpec(mode="laminar")} if automatic else {"init": init}
    row = {}
    for name, d in (("first", first_data), ("refit", second_data)):
        compiles.clear()
        start = time.perf_counter()
        result = homodyne.fit(model, d, sigma=3e-3, **how)
        jax.block_until_ready(result.params)
        row[f"{name}_s"] = time.perf_counter() - start
        row[f"{name}_compilations"] = len(compiles)
        row[f"{name}_compile_s"] = sum(compiles)
        row[f"{name}_steps"] = int(result.n_steps)
        row[f"{name}_D0"] = float(result.params.D0)
        row["converged"] = row.get("converged", True) and bool(result.converged)
    return {"n_phi": n_phi, "n_frames": n, "automatic_start": automatic, **row}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=2, default=(3, 1000), metavar=("N_PHI", "N"))
    parser.add_argument("--automatic-start", action="store_true", help="fit without init")
    parser.add_argument("--baseline", help="source tree of the version to alternate with")
    parser.add_argument("--run-one", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        n_phi, n, automatic = args.run_one
        print(json.dumps(run_case(n_phi, n, bool(automatic))))
        return
    trees = {"this": str(HERE.parent)}
    if args.baseline:
        trees = {"baseline": str(pathlib.Path(args.baseline).resolve()), **trees}
    rows = []
    for r in range(args.rounds):
        for label, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": tree}
            shape = (*args.shape, int(args.automatic_start))
            cmd = [sys.executable, __file__, "--run-one", *map(str, shape)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE)
            if out.returncode != 0:
                raise SystemExit(f"{label}: {out.stderr.strip().splitlines()[-1]}")
            row = {"tree": label, "round": r, **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(
                f"{label:<8} round {r}: first {row['first_s']:6.2f} s "
                f"({row['first_compilations']} compilations, {row['first_compile_s']:.2f} s)   "
                f"refit {row['refit_s']:6.2f} s ({row['refit_compilations']} compilations)   "
                f"steps {row['first_steps']}/{row['refit_steps']}",
                flush=True,
            )
    for label in trees:
        mine = [row for row in rows if row["tree"] == label]
        print(
            f"{label:<8} median first {statistics.median(r['first_s'] for r in mine):.2f} s, "
            f"refit {statistics.median(r['refit_s'] for r in mine):.2f} s"
        )
    save_results("first_fit_automatic" if args.automatic_start else "first_fit", rows, quick=False)


if __name__ == "__main__":
    main()
