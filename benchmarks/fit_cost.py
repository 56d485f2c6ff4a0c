"""A fit's cost with the error covariance of issue 12 against an earlier revision.

    python benchmarks/fit_cost.py --baseline DIR [--size 23x1000] [--rounds 3] [--refits 3]

DIR is a checkout of the earlier revision (e.g. ``git worktree add /tmp/base REV``). Each round
runs, in fresh processes and in turn, this checkout and the baseline: a laminar fit from a start
10 % off the truth with σ given (compile and first call), then ``--refits`` refits of the same data
(compiled). Prints the medians and the per-round ratios (ours/baseline) and writes
benchmarks/results/fit_cost.json.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

INNER = r"""
import json, sys, time
import numpy as np
import homodyne
from homodyne import HomodyneModel, LaminarFlowParams
n_phi, n, refits = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
model = HomodyneModel(q=0.0054, L=2e6, dt=0.1, n_frames=n, phi=list(np.linspace(0, 150, n_phi)),
                      time_origin=1.0)
truth = LaminarFlowParams(1.5e4, -0.4, 20.0, 2e-3, 0.3, 1e-4, 3.0)
clean = np.asarray(model.g2(truth, 0.3, 1.0))
noise = np.triu(np.random.default_rng(0).normal(scale=2e-3, size=clean.shape), 1)
data = clean + noise + np.swapaxes(noise, 1, 2)
init = LaminarFlowParams.from_array(truth.to_array() * 1.1)

def once():
    start = time.perf_counter()
    r = homodyne.fit(model, data, sigma=2e-3, init=init)
    r.chi2.block_until_ready()
    return time.perf_counter() - start, int(r.n_steps)

first, steps = once()
times = [once()[0] for _ in range(refits)]
print(json.dumps({"first": first, "refit": float(np.median(times)), "steps": steps}))
"""


def run(root: pathlib.Path, n_phi: int, n: int, refits: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), HOMODYNE_NO_COMPILE_CACHE="1")
    out = subprocess.run(
        [sys.executable, "-c", INNER, str(n_phi), str(n), str(refits)],
        env=env, capture_output=True, text=True, check=True, cwd=root,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, type=pathlib.Path)
    parser.add_argument("--size", default="23x1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--refits", type=int, default=3)
    args = parser.parse_args()
    n_phi, n = (int(x) for x in args.size.split("x"))
    ours_root = pathlib.Path(__file__).resolve().parent.parent
    rows = []
    for k in range(args.rounds):
        pair = {}
        for label, root in (("ours", ours_root), ("baseline", args.baseline.resolve())):
            pair[label] = run(root, n_phi, n, args.refits)
        rows.append(pair)
        print(
            f"round {k + 1}: first {pair['ours']['first']:.2f} s vs {pair['baseline']['first']:.2f}"
            f" s, refit {pair['ours']['refit']:.2f} s vs {pair['baseline']['refit']:.2f} s "
            f"(steps {pair['ours']['steps']} / {pair['baseline']['steps']})",
            flush=True,
        )
    summary = {}
    for key in ("first", "refit"):
        ours = [r["ours"][key] for r in rows]
        base = [r["baseline"][key] for r in rows]
        ratios = [a / b for a, b in zip(ours, base, strict=True)]
        summary[key] = {
            "ours_median_s": float(np.median(ours)),
            "baseline_median_s": float(np.median(base)),
            "ratio_median": float(np.median(ratios)),
            "ratio_range": [float(min(ratios)), float(max(ratios))],
        }
    print(f"\n{'n_phi × N':<12}{'call':<10}{'ours':>9}{'baseline':>10}{'ratio':>8}  range")
    for key, s in summary.items():
        print(
            f"{args.size:<12}{key:<10}{s['ours_median_s']:>8.2f}s{s['baseline_median_s']:>9.2f}s"
            f"{s['ratio_median']:>8.2f}  {s['ratio_range'][0]:.2f}–{s['ratio_range'][1]:.2f}"
        )
    path = ours_root / "benchmarks" / "results" / "fit_cost.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"size": args.size, "rounds": rows, "summary": summary}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
