"""The posterior (`homodyne.sample`): time to a checked posterior, cost of one log-likelihood
gradient, leapfrog steps per draw, memory. Every case runs in a fresh process (compilation
included, as a user's first call pays it).

Cases (laminar flow as in benchmarks/fit.py: φ = 0…90°, Gaussian noise 3e-3, start +30 %/−30 %):
- ``laplace``: fit, then ``method="laplace"`` with its importance-sampling check (4 × 1000 draws);
- ``nuts``: fit, then NUTS, 4 chains × 1000 draws after 200 warm-up steps;
- ``gradient``: one value and gradient of the log-posterior, compiled (median of 7), and one value;
  the cores one gradient keeps busy and the throughput of two threads against one;
- ``geometry``: the log-posterior along the Laplace axes against a Gaussian, and a short NUTS run
  with the leapfrog steps of warm-up and draws counted apart (see `geometry`).

Run:  python benchmarks/posterior.py [--quick] [--cases laplace:3:1000 nuts:3:1000 nuts:23:1000]
      [geometry:23:1000 gradient:23:1000]
      (writes benchmarks/results/posterior.json; rows of cases not run are kept)
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import threading
import time

from _machine import save_results

CASES = ["gradient:3:1000", "gradient:23:1000", "laplace:3:1000", "nuts:3:1000"]
QUICK = ["gradient:3:200", "laplace:3:200"]


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def problem(n_phi: int, n: int):
    import numpy as np

    import homodyne

    phi = np.linspace(0.0, 90.0, n_phi)
    model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=phi, time_origin=1.0)
    truth = homodyne.LaminarFlowParams(1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0)
    clean = np.asarray(model.g2(truth, 0.3, 1.0))
    noise = np.triu(np.random.default_rng(1).normal(scale=3e-3, size=clean.shape))
    data = clean + noise + np.swapaxes(np.triu(noise, 1), 1, 2)
    init = homodyne.LaminarFlowParams.from_array(
        np.asarray(truth.to_array()) * np.array([1.3, 0.7, 1.3, 0.7, 1.3, 0.7, 1.3])
    )
    return model, data, init


def run_case(kind: str, n_phi: int, n: int) -> dict:
    import warnings

    import jax
    import jax.numpy as jnp
    import numpy as np

    import homodyne
    from homodyne import _sample

    model, data, init = problem(n_phi, n)
    row: dict = {"case": kind, "n_phi": n_phi, "n_frames": n}
    start = time.perf_counter()
    if kind == "gradient":
        fit = homodyne.fit(model, data, sigma=3e-3, init=init)
        # the log-posterior the samplers use, built as `sample` builds it (no draws)
        captured = {}
        original = _sample._density_values

        def spy(density, us):
            captured["density"] = density
            return original(density, us[:1])

        _sample._density_values = spy
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            homodyne.sample(
                model, data, sigma=3e-3, fit=fit, method="laplace", num_chains=1, num_draws=4
            )
        density = captured["density"]
        theta = jnp.asarray(np.asarray(density.center))
        value_grad = _sample._value_and_grad
        value = jax.jit(lambda d, t: d(t))
        jax.block_until_ready(value_grad(density, theta))
        jax.block_until_ready(value(density, theta))
        for name, fn in (("value_grad_ms", value_grad), ("value_ms", value)):
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(density, theta))
                times.append(1e3 * (time.perf_counter() - t0))
            row[name] = float(np.median(times))

        # how many cores one gradient keeps busy (XLA splits a large pass itself), and what two
        # threads (as NUTS runs its chains) add to the throughput
        def five():
            for i in range(5):
                jax.block_until_ready(value_grad(density, theta * (1 + 1e-9 * i)))

        five()  # the first call also compiles the eager perturbations of theta
        cpu0, t0 = time.process_time(), time.perf_counter()
        five()
        serial = (time.perf_counter() - t0) / 5
        row["value_grad_cores_busy"] = (time.process_time() - cpu0) / 5 / serial
        threads = [threading.Thread(target=five) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        row["two_thread_throughput"] = serial / ((time.perf_counter() - t0) / 10)
        row["peak_gb"] = peak_gb()
        return row
    if kind == "geometry":
        return geometry(row, model, data, init, start)
    post = homodyne.sample(
        model, data, sigma=3e-3, init=init, method=kind, num_chains=4, num_draws=1000,
        num_warmup=200, progress=False,
    )  # fmt: skip
    row["total_s"] = time.perf_counter() - start
    row["sampling_s"] = post.seconds
    row["fit_converged"] = bool(post.fit.converged)
    row["max_rhat"] = float(np.nanmax(np.asarray(post.rhat)))
    row["min_ess_bulk"] = float(np.nanmin(np.asarray(post.ess_bulk)))
    row["min_ess_tail"] = float(np.nanmin(np.asarray(post.ess_tail)))
    row["divergences"] = int(np.sum(np.asarray(post.divergences)))
    row["leapfrog_per_draw"] = float(post.leapfrog_steps)
    row["step_size"] = [float(x) for x in np.asarray(post.step_size)]
    row["acceptance"] = [float(x) for x in np.asarray(post.acceptance)]
    row["khat"] = float(post.khat)
    row["ess_importance"] = float(post.ess_importance)
    row["warnings"] = list(post.warnings)
    fit_sd = np.sqrt(np.diagonal(np.asarray(post.fit.covariance)))[: len(post.names)]
    row["sd_over_fit_error"] = [
        float(s["sd"] / e) for s, e in zip(post.summary().values(), fit_sd, strict=True)
    ]
    row["peak_gb"] = peak_gb()
    return row


def geometry(row: dict, model, data, init, start: float) -> dict:
    """How Gaussian the sampled log-posterior is around its mode, and what NUTS spends where: the
    log-density along the Laplace covariance's principal axes at ±1.5 and ±3 standard deviations
    against the quadratic (ratio 1 = Gaussian), then 2 chains × (100 warm-up steps + 50 draws)
    with the leapfrog steps of warm-up and draws counted apart."""
    import warnings

    import jax.numpy as jnp
    import numpy as np

    import homodyne
    from homodyne import _sample

    fit = homodyne.fit(model, data, sigma=3e-3, init=init)
    seen: dict = {"warm-up": 0, "draws": 0}
    laplace, chunk = _sample._laplace, _sample._nuts_chunk

    def spy_laplace(density, u, basis):
        out = laplace(density, u, basis)
        seen.update(density=density, mode=out[0], covariance=out[1])
        return out

    def spy_chunk(density, state, dual, keys, inverse_mass, adapt, step_size):
        out = chunk(density, state, dual, keys, inverse_mass, adapt, step_size)
        seen["warm-up" if bool(adapt) else "draws"] += int(np.sum(np.asarray(out[2][1])))
        return out

    _sample._laplace, _sample._nuts_chunk = spy_laplace, spy_chunk
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 × 50 draws: ESS below 400 is expected
        post = homodyne.sample(model, data, sigma=3e-3, fit=fit, num_chains=2, num_warmup=100,
                               num_draws=50, progress=False)  # fmt: skip
    density, mode = seen["density"], seen["mode"]
    eigenvalues, vectors = np.linalg.eigh(seen["covariance"])
    top = float(density(jnp.asarray(mode)))
    ratios = []
    for i in range(len(eigenvalues)):
        axis = vectors[:, i] * np.sqrt(eigenvalues[i])
        ratios.append(
            [(float(density(jnp.asarray(mode + k * axis))) - top) / (-0.5 * k * k)
             for k in (-3.0, -1.5, 1.5, 3.0)]
        )  # fmt: skip
    row["total_s"] = time.perf_counter() - start
    row["quadratic_ratio_min"] = float(np.min(ratios))
    row["quadratic_ratio_max"] = float(np.max(ratios))
    row["leapfrog_per_warmup_step"] = seen["warm-up"] / 200
    row["leapfrog_per_draw"] = float(post.leapfrog_steps)
    row["step_size"] = [float(x) for x in np.asarray(post.step_size)]
    row["peak_gb"] = peak_gb()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", nargs="*")
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        kind, n_phi, n = args.case
        print(json.dumps(run_case(kind, int(n_phi), int(n))))
        return
    cases = args.cases or (QUICK if args.quick else CASES)
    rows = []
    print(
        f"{'case':>9} {'bins × frames':>14} {'total s':>8} {'grad ms':>8} {'value ms':>9} "
        f"{'cores':>6} {'2 thr ×':>7} {'leapfrog':>9} {'warm-up':>8} {'max R̂':>7} {'min ESS':>8} "
        f"{'div':>4} {'k̂':>5} {'peak GB':>8}"
    )
    for case in cases:
        kind, n_phi, n = case.split(":")
        out = subprocess.run(
            [sys.executable, __file__, "--case", kind, n_phi, n],
            capture_output=True, text=True, check=False, env={**os.environ},
        )  # fmt: skip
        if out.returncode != 0:
            print(f"{case}: failed ({out.returncode})\n{out.stderr[-2000:]}")
            rows.append({"case": case, "failed": True})
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)

        def f(key, fmt, row=row):
            value = row.get(key)
            return format(value, fmt) if isinstance(value, float | int) else "–"

        print(
            f"{kind:>9} {f'{n_phi} × {n}':>14} {f('total_s', '.1f'):>8} "
            f"{f('value_grad_ms', '.1f'):>8} {f('value_ms', '.1f'):>9} "
            f"{f('value_grad_cores_busy', '.2f'):>6} {f('two_thread_throughput', '.2f'):>7} "
            f"{f('leapfrog_per_draw', '.1f'):>9} {f('leapfrog_per_warmup_step', '.1f'):>8} "
            f"{f('max_rhat', '.3f'):>7} "
            f"{f('min_ess_bulk', '.0f'):>8} {f('divergences', 'd'):>4} {f('khat', '.2f'):>5} "
            f"{f('peak_gb', '.2f'):>8}",
            flush=True,
        )
    # rows of cases not run this time stay (a 23 × 1000 NUTS run is long: it can be run alone)
    previous = pathlib.Path(__file__).parent / "results" / "posterior.json"
    if previous.exists() and not args.quick:
        ran = {(r.get("case"), r.get("n_phi"), r.get("n_frames")) for r in rows}
        kept = [
            r for r in json.loads(previous.read_text()).get("rows", [])
            if (r.get("case"), r.get("n_phi"), r.get("n_frames")) not in ran
        ]  # fmt: skip
        rows = kept + rows
    save_results("posterior", rows, args.quick)


if __name__ == "__main__":
    main()
