"""One Levenberg–Marquardt step of a fit: time and memory, one subprocess per size.

A step of `homodyne.fit` evaluates the compressed residuals and their Jacobian at a trial point:
contrast/offset by weighted least squares (one pass over the tiles of pairs), then χ², JᵀJ and Jᵀr
of the 7 physical parameters with per-angle contrast/offset eliminated (a second pass). This script
times exactly that (`jax.jacfwd` of `compressed_residuals`, as optimistix linearises it), after
compilation. Memory: XLA's own account of the compiled step (temporary buffers; arguments = the
tiled data, σ and indices), the resident memory before the steps, its largest increase during them
(sampled every 2 ms; XLA reuses the buffers of the first call, so this is usually 0), and the
process's peak, which includes simulating the data on the full (n_phi, N, N) grid.

Run:  python benchmarks/step.py [--quick]     (writes benchmarks/results/step.json)
"""

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

from _machine import save_results

SIZES = [(3, 1000), (23, 500), (23, 1000), (23, 2000)]
QUICK = [(3, 200), (23, 200)]


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024**3


def run_case(n_phi: int, n: int) -> dict:
    import jax
    import numpy as np

    import homodyne
    from homodyne._fit import _build
    from homodyne._problem import compressed_residuals

    phi = np.linspace(0.0, 90.0, n_phi)
    model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=phi, time_origin=1.0)
    truth = homodyne.LaminarFlowParams(1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0)
    init = homodyne.LaminarFlowParams.from_array(np.asarray(truth.to_array()) * 1.3)
    data = np.array(model.g2(truth, 0.3, 1.0))
    data += np.random.default_rng(0).normal(scale=3e-3, size=data.shape)
    problem, u0, *_ = _build(model, data, 3e-3, init)
    del data
    step = jax.jit(jax.jacfwd(compressed_residuals))
    memory = step.lower(u0, problem).compile().memory_analysis()
    start = time.perf_counter()
    jax.block_until_ready(step(u0, problem))
    compile_s = time.perf_counter() - start
    gc.collect()
    baseline = rss_gb()
    peak = [baseline]
    running = True

    def sample():
        while running:
            peak[0] = max(peak[0], rss_gb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    times = []
    for i in range(3):
        start = time.perf_counter()
        jax.block_until_ready(step(u0 + 0.01 * i, problem))
        times.append(time.perf_counter() - start)
    running = False
    sampler.join()
    return {
        "n_phi": n_phi,
        "n_frames": n,
        "residuals": n_phi * n * (n - 1) // 2,
        "tiles": list(problem.data.shape),
        "step_s": statistics.median(times),
        "first_call_s": compile_s,
        "resident_before_gb": baseline,
        "step_peak_increase_gb": peak[0] - baseline,
        "xla_temp_gb": memory.temp_size_in_bytes / 1024**3,
        "xla_arguments_gb": memory.argument_size_in_bytes / 1024**3,
        "process_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    parser.add_argument("--run-one", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one:
        print(json.dumps(run_case(*args.run_one)))
        return
    rows = []
    print(
        f"{'n_phi × N':>10} {'residuals':>10} {'step [s]':>9} {'XLA temp [GB]':>14} "
        f"{'arguments [GB]':>15} {'resident [GB]':>14} {'+ in step':>10} {'process peak':>13}"
    )
    for n_phi, n in QUICK if args.quick else SIZES:
        cmd = [sys.executable, __file__, "--run-one", str(n_phi), str(n)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"n_phi": n_phi, "n_frames": n, "error": out.stderr.strip()[-500:]})
            print(f"{n_phi} × {n}: failed")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(
            f"{f'{n_phi} × {n}':>10} {r['residuals']:>10.3g} {r['step_s']:>9.3f} "
            f"{r['xla_temp_gb']:>14.3f} {r['xla_arguments_gb']:>15.3f} "
            f"{r['resident_before_gb']:>14.2f} {r['step_peak_increase_gb']:>10.3f} "
            f"{r['process_peak_gb']:>13.2f}"
        )
    save_results("step", rows, args.quick)


if __name__ == "__main__":
    main()
