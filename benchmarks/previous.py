"""This package against the previous generation (homodyne 2.23.3 from PyPI), in the same run.

The previous package lives in its own virtual environment (it needs Python ≥ 3.12), e.g.

    /root/.pyenv/versions/3.12.1/bin/python -m venv /work/venv-prev
    /work/venv-prev/bin/pip install homodyne==2.23.3

Every timing runs in a fresh process of one package or the other (this script in its worker mode,
under that package's interpreter), and the two alternate: in every round each case runs once per
package, the order flipping from round to round, so that load from elsewhere on a shared machine
hits both alike. The table gives the min–max over rounds of each package's figure and of the
ratio previous / ours within a round (> 1: ours is faster).

Cases (23 angles × 1000 frames, float64, q = 0.0054 Å⁻¹, L = 2e6 Å, dt = 0.1 s, laminar flow,
angles spread over 0–180°, frames at t = 1 + 0.1·k s), all through `homodyne.core.jax_backend`,
whose names and signatures both packages share: `compute_g2_scaled`; `compute_chi_squared` and
`gradient_chi2` with σ as an array like the data (as the previous package documents) and as a
scalar. Steady state is the median of several calls after a warm-up, with the inputs as NumPy
arrays (as loaded from .npy; every call then copies them, 184 MB each, which both packages pay) and
again in the same process with the same inputs as JAX arrays; compilation is the first call in the
process minus the steady state. Last, a laminar-flow fit of 3 angles × 1000 frames from a start 30 % off
the truth, the first call in a fresh process (compilation included): ours `homodyne.fit`, the
previous package's documented NLSQ entry point `homodyne.optimization.fit_nlsq_jax(data, config)`
with a configuration made from its laminar-flow template (what `homodyne-config --mode
laminar_flow` writes), the experiment and the start filled in. Both fit the same synthetic data
(made by this package, saved as .npy) with σ given as an array like the data.

Run:  python benchmarks/previous.py [--previous-python PATH] [--rounds 3] [--quick]
      (PATH defaults to $HOMODYNE_PREVIOUS_PYTHON; writes benchmarks/results/previous.json)
      Without the previous package it says so and exits without measuring anything.

Duration: 12 minutes on the 2-core machine at a load average of 5 from elsewhere, most of it the
previous package's fits (1.5–2.5 min each there); `--fit-rounds 1` or `--cases` shorten it.
"""

import argparse
import importlib
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
MARK = "@@previous.py result "

Q, L, DT, T_FIRST, SIGMA = 0.0054, 2e6, 0.1, 1.0, 3e-3
CONTRAST, OFFSET = 0.3, 1.0
TRUTH = [1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0]
NAMES = ["D0", "alpha", "D_offset", "gamma_dot_t0", "beta", "gamma_dot_t_offset", "phi0"]
START = [v * f for v, f in zip(TRUTH, [1.3, 0.7, 1.3, 0.7, 1.3, 0.7, 1.3], strict=True)]

KERNEL_CASES = {
    "g2": "compute_g2_scaled",
    "chi2-array": "compute_chi_squared, σ array",
    "chi2-scalar": "compute_chi_squared, scalar σ",
    "grad-array": "gradient_chi2, σ array",
    "grad-scalar": "gradient_chi2, scalar σ",
}
FIT_CASE = "fit"
WORKAROUND = "jax.jit(jax.grad(compute_chi_squared), static_argnums=(6, 7, 10))"


# ---------------------------------------------------------------------------------------------
# Worker side: runs under either package's interpreter (stdlib, NumPy and JAX only at the top).
# ---------------------------------------------------------------------------------------------


def _import_package():
    """Import homodyne before JAX: the previous package turns on float64 (JAX_ENABLE_X64) only
    when it is imported first (an import sorter would put jax first, hence import_module)."""
    homodyne = importlib.import_module("homodyne")
    import jax

    return homodyne, jax


def _describe(homodyne, jax) -> dict:
    from importlib.metadata import version

    return {
        "homodyne_version": version("homodyne"),
        "homodyne_file": str(pathlib.Path(homodyne.__file__).parent),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "x64": bool(jax.config.jax_enable_x64),
        "devices": len(jax.devices()),
    }


def _time_calls(jax, fn, calls: int) -> dict:
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    jax.block_until_ready(fn())  # warm-up
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "first_call_s": first,
        "s": median,
        "calls_s": times,
        "compile_s": first - median,
        "out": out,
    }


def worker_prepare(directory: pathlib.Path, n_phi: int, n: int, fit_n_phi: int, fit_n: int):
    """Synthetic data made with this package: g2 at TRUTH plus symmetric Gaussian noise σ."""
    import numpy as np

    import homodyne

    for name, (k, frames, seed) in {"kernels": (n_phi, n, 0), "fit": (fit_n_phi, fit_n, 1)}.items():
        phi = np.linspace(0.0, 180.0, k, endpoint=False)
        model = homodyne.HomodyneModel(q=Q, dt=DT, n_frames=frames, phi=phi, L=L, t0=T_FIRST)
        clean = np.asarray(model.g2(homodyne.LaminarFlowParams(*TRUTH), CONTRAST, OFFSET))
        noise = np.triu(np.random.default_rng(seed).normal(scale=SIGMA, size=clean.shape))
        data = clean + noise + np.swapaxes(np.triu(noise, 1), 1, 2)
        np.save(directory / f"{name}_data.npy", data)
        np.save(directory / f"{name}_t.npy", np.asarray(model.t))
        np.save(directory / f"{name}_phi.npy", phi)
    return {"prepared": str(directory)}


def worker_kernel(case: str, directory: pathlib.Path, package: str, calls: int) -> dict:
    """One function of the functional API: first call and steady state with the inputs as NumPy
    arrays (as loaded from .npy), then steady state with the same inputs as JAX arrays."""
    homodyne, jax = _import_package()
    import numpy as np

    from homodyne.core import jax_backend as jb

    result = {"case": case, "package": package, **_describe(homodyne, jax)}
    data = np.load(directory / "kernels_data.npy")
    t = np.load(directory / "kernels_t.npy")
    phi = np.load(directory / "kernels_phi.npy")
    params = np.array(TRUTH)
    sigma = np.full(data.shape, SIGMA) if case.endswith("-array") else SIGMA
    inputs = (params, data, sigma, t, phi)

    def call(fn, params, data, sigma, t, phi):
        scalars = (Q, L, CONTRAST, OFFSET, DT)
        if case == "g2":
            return fn(params, t, t, phi, *scalars)
        return fn(params, data, sigma, t, t, phi, *scalars)

    fn = {"g2": jb.compute_g2_scaled, "chi2": jb.compute_chi_squared}.get(case.split("-")[0])
    if fn is None:
        try:
            timing = _time_calls(jax, lambda: call(jb.gradient_chi2, *inputs), calls)
            fn = jb.gradient_chi2
        except Exception as error:  # reported as it is, then the gradient timed another way
            message = " ".join(x.strip() for x in str(error).splitlines()[:3] if x.strip())
            result["exported_error"] = f"{type(error).__name__}: {message}"
            result["timed"] = WORKAROUND
            fn = jax.jit(jax.grad(jb.compute_chi_squared), static_argnums=(6, 7, 10))
    if fn is not jb.gradient_chi2:
        timing = _time_calls(jax, lambda: call(fn, *inputs), calls)
    out = np.asarray(timing.pop("out"))
    result["dtype"] = str(out.dtype)
    if case == "g2":
        n = out.shape[-1]
        middle = out[len(out) // 2, n // 3, n // 2]
        result["check"] = [out[0, 0, n // 10], out[-1, 1, -1], middle, out.sum()]
    else:
        result["check"] = list(np.atleast_1d(out))
    result["check"] = [float(v) for v in result["check"]]
    on_device = [v if np.ndim(v) == 0 else jax.numpy.asarray(v) for v in inputs]
    jax_timing = _time_calls(jax, lambda: call(fn, *on_device), calls)
    result["jax_inputs_s"] = jax_timing["s"]
    result["jax_inputs_calls_s"] = jax_timing["calls_s"]
    return result | timing


def worker_fit(directory: pathlib.Path, package: str) -> dict:
    homodyne, jax = _import_package()
    import numpy as np

    data = np.load(directory / "fit_data.npy")
    t = np.load(directory / "fit_t.npy")
    phi = np.load(directory / "fit_phi.npy")
    sigma = np.full(data.shape, SIGMA)
    result = {"case": FIT_CASE, "package": package, **_describe(homodyne, jax)}
    if package == "ours":
        model = homodyne.HomodyneModel(q=Q, dt=DT, t=t, phi=phi, L=L)
        init = homodyne.LaminarFlowParams(*START)
        start = time.perf_counter()
        fit = homodyne.fit(model, data, sigma=sigma, init=init)
        jax.block_until_ready(fit.params)
        result["fit_s"] = time.perf_counter() - start
        result["params"] = [float(v) for v in np.asarray(fit.params.to_array())]
        result["errors"] = [float(v) for v in np.asarray(fit.errors.to_array())]
        result["steps"] = int(fit.n_steps)
        result["converged"] = bool(fit.converged)
        result["reduced_chi2"] = float(fit.reduced_chi2)
        return result

    import yaml
    from homodyne.cli.config_generator import get_template_path
    from homodyne.config import ConfigManager
    from homodyne.optimization import fit_nlsq_jax

    # What `homodyne-config --mode laminar_flow --output config.yaml` writes, with the experiment
    # and the start filled in; every optimiser setting stays the template's.
    config = yaml.safe_load(get_template_path("laminar_flow").read_text())
    analyzer = config["analyzer_parameters"]
    analyzer.update(dt=DT, start_frame=1, end_frame=len(t))
    analyzer["scattering"]["wavevector_q"] = Q
    analyzer["geometry"]["stator_rotor_gap"] = L
    config["initial_parameters"]["values"] = START
    path = directory / f"previous_config_{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(config))
    xpcs = {  # the loader's format (load_xpcs_data)
        "phi_angles_list": phi,
        "c2_exp": data,
        "t1": t,
        "t2": t,
        "wavevector_q_list": np.array([Q]),
        "sigma": sigma,
    }
    start = time.perf_counter()
    fit = fit_nlsq_jax(xpcs, ConfigManager(str(path)))
    result["fit_s"] = time.perf_counter() - start
    physical = np.asarray(fit.parameters)[-len(TRUTH) :]
    errors = np.asarray(fit.uncertainties)[-len(TRUTH) :]
    result["params"] = [float(v) for v in physical]
    result["errors"] = [float(v) for v in errors]
    result["steps"] = int(fit.iterations)
    result["converged"] = str(fit.convergence_status)
    result["reduced_chi2"] = float(fit.reduced_chi_squared)
    return result


def worker(args) -> None:
    directory = pathlib.Path(args.dir)
    if args.worker == "prepare":
        out = worker_prepare(directory, args.n_phi, args.frames, args.fit_n_phi, args.fit_frames)
    elif args.worker == FIT_CASE:
        out = worker_fit(directory, args.package)
    else:
        out = worker_kernel(args.worker, directory, args.package, args.calls)
    print(MARK + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------
# Parent side.
# ---------------------------------------------------------------------------------------------


def run_worker(python: str, package: str, argv: list, timeout: float) -> dict:
    """One fresh process. Ours imports this repository's package (PYTHONPATH = the repository);
    the previous package's process sees no PYTHONPATH and runs outside the repository."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if package == "ours":
        env["PYTHONPATH"] = str(REPO)
    cmd = [python, str(HERE / "previous.py"), *argv, "--package", package]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :]) | {"process_s": wall}
    tail = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-3:]
    return {"error": f"exit code {proc.returncode}: " + " | ".join(tail)}


def previous_version(python: str | None) -> tuple[str | None, str]:
    """The previous package's version under ``python``, or None and why not."""
    if not python:
        return None, "no --previous-python given and HOMODYNE_PREVIOUS_PYTHON is not set"
    if not os.access(python, os.X_OK):
        return None, f"{python} is not an executable file"
    code = "from importlib.metadata import version; print(version('homodyne'))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    if proc.returncode != 0:
        return None, f"{python} has no homodyne installed ({proc.stderr.strip().splitlines()[-1]})"
    return proc.stdout.strip(), ""


def span(values: list, scale: float = 1.0, digits: int = 0, unit: str = "") -> str:
    if not values:
        return "–"
    lo, hi = min(values) * scale, max(values) * scale
    text = f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else ""
    text = text or f"{lo:.{digits}f}–{hi:.{digits}f}"
    return text + unit


def summarise(records: list, cases: list, fit_size: str) -> list:
    """One row per table line: each package's figures over the rounds and the per-round ratios."""
    by = {}
    for r in records:
        by.setdefault((r["case"], r["package"]), {})[r["round"]] = r
    rows = []

    def add(label, case, key, scale, digits, unit, note=""):
        ours, prev = by.get((case, "ours"), {}), by.get((case, "previous"), {})
        a = [ours[k][key] for k in sorted(ours) if key in ours[k]]
        b = [prev[k][key] for k in sorted(prev) if key in prev[k]]
        ratios = [
            prev[k][key] / ours[k][key] for k in ours if key in ours[k] and key in prev.get(k, {})
        ]
        errors = sorted({x["error"] for x in [*ours.values(), *prev.values()] if "error" in x})
        rows.append(
            {
                "call": label,
                "case": case,
                "figure": key,
                "ours_s": a,
                "previous_s": b,
                "ratio_previous_over_ours": ratios,
                "ours": span(a, scale, digits, unit),
                "previous": span(b, scale, digits, unit),
                "ratio": span(ratios, 1.0, 2 if ratios and max(ratios) < 1 else 1, "×"),
                "note": note,
                "errors": errors,
            }
        )

    for case in cases:
        if case == FIT_CASE:
            continue
        prev = by.get((case, "previous"), {}).values()
        note = next(
            (f"previous: {p['exported_error']}; timed {p['timed']}" for p in prev if "timed" in p),
            "",
        )
        add(KERNEL_CASES[case], case, "s", 1e3, 0, " ms", note)
        add(f"{KERNEL_CASES[case]}, JAX-array inputs", case, "jax_inputs_s", 1e3, 0, " ms")
    for case in cases:
        if case.startswith(("chi2", "grad")):
            add(f"compilation of {KERNEL_CASES[case]}", case, "compile_s", 1.0, 2, " s")
    if FIT_CASE in cases:
        label = f"laminar fit {fit_size} from +30 %, first call in a fresh process"
        add(label, FIT_CASE, "fit_s", 1.0, 1, " s")
    return rows


def agreement(records: list) -> list:
    """How far the previous package's values are from ours (same inputs, first round)."""
    lines = []
    first = {}
    for r in records:
        if "check" in r or "params" in r:
            first.setdefault((r["case"], r["package"]), r)
    for case in KERNEL_CASES:
        a, b = first.get((case, "ours")), first.get((case, "previous"))
        if a and b:
            rel = max(
                abs(x - y) / max(abs(x), 1e-300)
                for x, y in zip(a["check"], b["check"], strict=True)
            )
            lines.append(
                f"  {KERNEL_CASES[case]}: largest relative difference {rel:.1e} ({b['dtype']})"
            )
    for package in ("ours", "previous"):
        r = first.get((FIT_CASE, package))
        if r:
            values = ", ".join(f"{n} {v:.4g}" for n, v in zip(NAMES, r["params"], strict=True))
            z = max(
                abs(v - t) / e if e > 0 else float("inf")
                for v, t, e in zip(r["params"], TRUTH, r["errors"], strict=True)
            )
            lines.append(
                f"  fit, {package}: {values}; {r['steps']} steps, converged {r['converged']}, "
                f"reduced χ² {r['reduced_chi2']:.4f}, max |estimate − truth| / error {z:.1f}"
            )
            if all(abs(v - s) <= 1e-9 * abs(s) for v, s in zip(r["params"], START, strict=True)):
                lines.append(
                    f"  WARNING: {package}'s fit left every physical parameter at its start"
                )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--previous-python",
        default=os.environ.get("HOMODYNE_PREVIOUS_PYTHON"),
        help="interpreter of the venv with homodyne 2.23.3 (default: $HOMODYNE_PREVIOUS_PYTHON)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--fit-rounds", type=int, help="rounds of the fit case (default: --rounds)")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per process (default 5)")
    parser.add_argument("--cases", nargs="*", help=f"subset of {[*KERNEL_CASES, FIT_CASE]}")
    parser.add_argument("--quick", action="store_true", help="23 × 200 and 3 × 200 (smoke test)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--package", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    for name in ("--n-phi", "--frames", "--fit-n-phi", "--fit-frames"):
        parser.add_argument(name, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    version, why = previous_version(args.previous_python)
    if version is None:
        print(f"previous package not available, comparison skipped: {why}.")
        print("Make its venv with:  <python3.12> -m venv /work/venv-prev && ")
        print("  /work/venv-prev/bin/pip install homodyne==2.23.3")
        print(
            "then pass --previous-python /work/venv-prev/bin/python (or set HOMODYNE_PREVIOUS_PYTHON)."
        )
        return
    if version != "2.23.3":
        print(f"note: {args.previous_python} has homodyne {version}, not 2.23.3")
    cases = args.cases or [*KERNEL_CASES, FIT_CASE]
    unknown = set(cases) - {*KERNEL_CASES, FIT_CASE}
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}")
    n_phi, frames, fit_n_phi, fit_frames = (23, 200, 3, 200) if args.quick else (23, 1000, 3, 1000)
    fit_rounds = args.rounds if args.fit_rounds is None else args.fit_rounds
    pythons = {"ours": sys.executable, "previous": args.previous_python}
    print(
        f"ours: {sys.executable} ({REPO});  previous: homodyne {version} under {args.previous_python}"
    )

    records = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="homodyne-previous-") as tmp:
        sizes = ["--n-phi", str(n_phi), "--frames", str(frames)]
        sizes += ["--fit-n-phi", str(fit_n_phi), "--fit-frames", str(fit_frames)]
        prep = run_worker(
            sys.executable, "ours", ["--worker", "prepare", "--dir", tmp, *sizes], 600
        )
        if "error" in prep:
            sys.exit(f"could not make the synthetic data: {prep['error']}")
        for round_ in range(max(args.rounds, fit_rounds)):
            order = ["previous", "ours"] if round_ % 2 == 0 else ["ours", "previous"]
            for case in cases:
                if round_ >= (fit_rounds if case == FIT_CASE else args.rounds):
                    continue
                for package in order:
                    argv = ["--worker", case, "--dir", tmp, "--calls", str(args.calls)]
                    r = run_worker(pythons[package], package, argv, 900)
                    r |= {"case": case, "package": package, "round": round_ + 1}
                    records.append(r)
                    if "error" in r:
                        shown = f"failed: {r['error']}"
                    elif case == FIT_CASE:
                        shown = f"fit {r['fit_s']:.2f} s (process {r['process_s']:.1f} s)"
                    else:
                        shown = f"{1e3 * r['s']:.1f} ms, first call {r['first_call_s']:.2f} s"
                        if "exported_error" in r:
                            shown += f"  [exported gradient_chi2 failed; timed {WORKAROUND}]"
                    print(f"round {round_ + 1}  {case:<12} {package:<8} {shown}", flush=True)
    total = time.perf_counter() - started
    load_after = os.getloadavg()

    rows = summarise(records, cases, f"{fit_n_phi} × {fit_frames}")
    print()
    print(
        f"{n_phi} angles × {frames} frames (fit: {fit_n_phi} × {fit_frames}); min–max over rounds;"
    )
    print("ratio = previous / ours within a round (> 1: ours faster)")
    width = max(len(r["call"]) for r in rows)
    print(f"{'call':<{width}} | {'ours':>14} | {'previous':>14} | {'ratio':>11}")
    print(f"{'-' * width}-|-{'-' * 14}-|-{'-' * 14}-|-{'-' * 11}")
    for r in rows:
        print(f"{r['call']:<{width}} | {r['ours']:>14} | {r['previous']:>14} | {r['ratio']:>11}")
    for r in rows:
        if r["note"]:
            print(f"note ({r['call']}): {r['note']}")
        for error in r["errors"]:
            print(f"FAILED ({r['call']}): {error}")
    print("agreement (same inputs):")
    print("\n".join(agreement(records)))
    print(
        f"total {total:.0f} s; load average (1, 5, 15 min) {load_before} before, {load_after} after"
    )

    envs = {}
    for r in records:
        if "homodyne_version" in r:
            envs.setdefault(
                r["package"],
                {
                    k: r[k]
                    for k in (
                        "homodyne_version",
                        "homodyne_file",
                        "python",
                        "jax",
                        "x64",
                        "devices",
                    )
                },
            )
    sys.path.insert(0, str(HERE))
    from _machine import machine

    path = HERE / "results" / "previous.json"
    path.parent.mkdir(exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    payload = {
        "machine": machine(),
        "commit": commit,
        "quick": args.quick,
        "sizes": {
            "n_phi": n_phi,
            "frames": frames,
            "fit_n_phi": fit_n_phi,
            "fit_frames": fit_frames,
        },
        "rounds": args.rounds,
        "fit_rounds": fit_rounds,
        "calls": args.calls,
        "packages": envs,
        "total_s": total,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "rows": rows,
        "records": records,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
