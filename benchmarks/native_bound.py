"""How far is χ² from what the CPU can do? homodyne's χ² against a hand-written C bound, same run.

`benchmarks/native/chi2_bound.c` evaluates χ² of the laminar-flow model over the upper triangle of
pairs with the same per-element arithmetic as `homodyne._chi2` (angle addition everywhere, which
loses digits where |Φ| is small: the package uses series there), in strips of rows, vectorised and
split between the cores by OpenMP. It is an experiment that bounds
what a native kernel could gain, not part of the package. This script builds it with the system C
compiler, checks its χ² against a NumPy re-derivation (small case) and against
`jax_backend.compute_chi_squared` (full size), and times, in one run:
- the read floor (jitted Σ data², as in `kernels.py`) and homodyne's χ²;
- the C kernel's full-grid layout written in JAX, with XLA's default vector width and with
  512-bit vectors preferred;
- the C kernel: χ² from the data, the same with software prefetching, the same arithmetic with no
  data read ("compute"), every pair of the full grid with rows streamed and no mirror read
  ("grid"), its own Σ data², and the derivatives of χ² that homodyne's gradient pass computes
  (with respect to ½q²Δ, the per-frame integrals C^D and C^γ, s and φ0), against
  `gradient_chi2`.

Run:  python benchmarks/native_bound.py [--quick]   (needs cc/gcc with OpenMP; writes
      benchmarks/results/native_bound.json)
"""

import argparse
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import save_results

import homodyne
from homodyne._chi2 import _walk, phase_tables
from homodyne._pairs import profiles
from homodyne.core import jax_backend as jb

SOURCE = pathlib.Path(__file__).parent / "native" / "chi2_bound.c"
READ = jax.jit(lambda d: jnp.sum(d * d))
PARAMS = np.array([1.0e4, -0.3, 10.0, 2.0e-3, 0.2, 1.0e-4, 5.0])
Q, L, DT, SIGMA, CONTRAST, OFFSET = 0.0054, 2e6, 0.1, 1e-3, 0.3, 1.0


def build(workdir: pathlib.Path) -> pathlib.Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("native_bound: no C compiler (set CC)")
    binary = workdir / "chi2_bound"
    flags = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fopenmp"]
    subprocess.run([compiler, *flags, str(SOURCE), "-o", str(binary), "-lm"], check=True)
    return binary


def problem(n_phi: int, n: int, seed: int = 0) -> dict:
    """The inputs of `kernels.py`'s case: data = g2 + noise, and the per-frame profiles."""
    phi = np.linspace(0.0, 180.0, n_phi, endpoint=False)
    model = homodyne.HomodyneModel(q=Q, dt=DT, n_frames=n, phi=phi)
    p = homodyne.LaminarFlowParams.from_array(PARAMS)
    t = np.asarray(model.t)
    data = np.asarray(model.g2(p, CONTRAST, 1.0)) + np.random.default_rng(seed).normal(
        scale=SIGMA, size=(n_phi, n, n)
    )
    a, s = 0.5 * Q**2 * DT, Q * L * DT / (2 * math.pi)
    c_d, c_g, _ = profiles(jnp.asarray(t), jnp.asarray(phi), jnp.asarray(s), p)
    assert c_g is not None
    angle = jnp.deg2rad(p.phi0 - phi)
    kappa = s * jnp.cos(angle)
    sin_t, cos_t = phase_tables(kappa, c_g)
    return {
        "t": t,
        "phi": phi,
        "a": a,
        "data": data,
        "c_d": np.asarray(c_d),
        "c_g": np.asarray(c_g),
        "sin": np.asarray(sin_t),
        "cos": np.asarray(cos_t),
        "kappa": np.asarray(kappa),
        "s": s,
        "phi0": float(p.phi0),
        "cos_k": np.asarray(jnp.cos(angle)),
        "lam": np.asarray(-s * jnp.sin(angle) * (jnp.pi / 180)),  # ∂κ/∂φ0
    }


def write_input(path: pathlib.Path, pb: dict) -> None:
    n_phi, n = pb["data"].shape[:2]
    with open(path, "wb") as f:
        np.array([n_phi, n], np.int64).tofile(f)
        np.array([pb["a"], 1 / SIGMA], np.float64).tofile(f)
        for key in ("data", "c_d", "c_g", "sin", "cos", "kappa"):
            np.ascontiguousarray(pb[key], np.float64).tofile(f)
        np.full(n_phi, CONTRAST).tofile(f)
        np.full(n_phi, OFFSET).tofile(f)
        np.ascontiguousarray(pb["cos_k"], np.float64).tofile(f)
        np.ascontiguousarray(pb["lam"], np.float64).tofile(f)
        np.array([pb["s"]], np.float64).tofile(f)


def numpy_chi2(pb: dict) -> float:
    """The C kernel's formula, re-derived on the full grid with NumPy (small sizes only)."""
    eps = 1e-12
    dd = pb["c_d"][:, None] - pb["c_d"][None, :]
    g1_d = np.exp(np.clip(-pb["a"] * np.sqrt(dd * dd + eps), -700.0, 0.0))
    # sin and cos of κ(C_j − C_i) from the tables, and the smoothing e = M − |ΔC|
    s, c = pb["sin"], pb["cos"]
    sd = s[:, None, :] * c[:, :, None] - c[:, None, :] * s[:, :, None]
    cd = c[:, None, :] * c[:, :, None] + s[:, None, :] * s[:, :, None]
    dg = pb["c_g"][None, :] - pb["c_g"][:, None]
    m = np.sqrt(dg * dg + eps)
    e = eps / (m + np.abs(dg))
    kap = pb["kappa"][:, None, None]
    k_inv = np.where(kap == 0, 0.0, 1 / np.where(kap == 0, 1.0, kap))
    sinc = sd * (np.sign(dg) / m) * (k_inv - kap * 0.5 * e * e) + cd * (e / m)
    g1 = np.maximum(g1_d * sinc * sinc, 1e-10)
    res = (pb["data"] - (OFFSET + CONTRAST * g1 * g1)) / SIGMA
    return float(np.sum(res * res))


def jax_grid(pb: dict, rows: int, vector_width: int | None = None):
    """The C kernel's "grid" variant in JAX: strips of ``rows`` rows × all columns, every pair,
    the sum of each strip as a matrix–vector product (as in `homodyne._chi2`)."""
    eps = 1e-12
    n_phi, n = pb["data"].shape[:2]
    assert n % rows == 0
    c_d, c_g = jnp.asarray(pb["c_d"]), jnp.asarray(pb["c_g"])
    sin_t, cos_t, kap = jnp.asarray(pb["sin"]), jnp.asarray(pb["cos"]), jnp.asarray(pb["kappa"])
    kap3 = kap[:, None, None]
    k_inv = jnp.where(kap3 == 0, 0.0, 1 / jnp.where(kap3 == 0, 1.0, kap3))

    def strip(data, i0):
        at = lambda v: jax.lax.dynamic_slice_in_dim(v, i0, rows, -1)  # noqa: E731
        cdr, cgr, sr, cr = at(c_d), at(c_g), at(sin_t), at(cos_t)
        up = jax.lax.dynamic_slice(data, (jnp.int32(0), i0, jnp.int32(0)), (n_phi, rows, n))
        dd = cdr[:, None] - c_d[None, :]
        g1_d = jnp.exp(jnp.clip(-pb["a"] * jnp.sqrt(dd * dd + eps), -700.0, 0.0))
        dg = c_g[None, :] - cgr[:, None]
        m = jnp.sqrt(dg * dg + eps)
        e = eps / (m + jnp.abs(dg))
        sd = sin_t[:, None, :] * cr[:, :, None] - cos_t[:, None, :] * sr[:, :, None]
        cd = cos_t[:, None, :] * cr[:, :, None] + sin_t[:, None, :] * sr[:, :, None]
        sinc = sd * (jnp.sign(dg) / m) * (k_inv - kap3 * 0.5 * e * e) + cd * (e / m)
        g1 = jnp.maximum(g1_d * sinc * sinc, 1e-10)
        res = (up - (OFFSET + CONTRAST * g1 * g1)) / SIGMA
        return jnp.sum((res * res).reshape(-1, n) @ jnp.ones(n))

    def total(data):
        starts = jnp.arange(0, n, rows, dtype=jnp.int32)
        return jax.lax.scan(lambda acc, i0: (acc + strip(data, i0), None), 0.0, starts)[0]

    options = None if vector_width is None else {"xla_cpu_prefer_vector_width": vector_width}
    return jax.jit(total, compiler_options=options)


def package_pairs(pb: dict) -> dict:
    """homodyne._chi2's derivative pass: ∂χ²/∂(a, C^D, C^γ, s, φ0) of the same problem."""
    n_phi = pb["data"].shape[0]
    shear = (jnp.asarray(pb["c_g"]), jnp.asarray(pb["s"]), jnp.asarray(pb["phi0"]), pb["phi"])
    return _walk(
        jnp.asarray(pb["a"]),
        jnp.asarray(pb["c_d"]),
        shear,
        jnp.full(n_phi, CONTRAST),
        jnp.full(n_phi, OFFSET),
        jnp.asarray(pb["data"]),
        jnp.full((1, 1, 1), SIGMA),
        "pairs",
    )


def gradient_agreement(c: dict, pb: dict) -> float:
    """Largest relative difference between the C kernel's derivatives and the package's, scaled
    by the largest entry of each."""
    ref = package_pairs(pb)
    worst = 0.0
    for key in ("a", "s", "phi0"):
        worst = max(worst, abs(c[key] - float(ref[key])) / abs(float(ref[key])))
    for key in ("c_d", "c_g"):
        mine, theirs = np.asarray(c[key]), np.asarray(ref[key])
        worst = max(worst, float(np.max(np.abs(mine - theirs)) / np.max(np.abs(theirs))))
    return worst


def timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def run_c(binary: pathlib.Path, pb: dict, workdir: pathlib.Path, repeats: int) -> dict:
    path = workdir / "input.bin"
    write_input(path, pb)
    out = subprocess.run([str(binary), str(path), str(repeats)], check=True, capture_output=True)
    path.unlink()
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small size only (smoke test)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        binary = build(workdir)

        small = problem(3, 60, seed=1)
        c_small = run_c(binary, small, workdir, 1)
        ref = numpy_chi2(small)
        checks = {f"C {v}": c_small[v]["value"] for v in ("full", "prefetch", "grid")}
        checks["JAX grid"] = float(jax_grid(small, 20)(jnp.asarray(small["data"])))
        for name, value in checks.items():
            rel = value / ref - 1
            print(f"check, 3 × 60, {name} against NumPy: rel. diff {rel:.1e}")
            if abs(rel) > 1e-12:
                sys.exit(f"native_bound: {name} disagrees with its NumPy re-derivation")
        # the gradient: the same derivatives as the package's pass (which uses series and direct
        # evaluation near the diagonal, where angle addition loses digits)
        rel = gradient_agreement(c_small["gradient"], small)
        print(f"check, 3 × 60, C gradient against homodyne's derivative pass: {rel:.1e}")
        if rel > 1e-6:
            sys.exit("native_bound: the C gradient disagrees with homodyne's")

        n_phi, n = (3, 300) if args.quick else (23, 1000)
        pb = problem(n_phi, n)
        data = jnp.asarray(pb["data"])
        chi2_args = (pb["t"], pb["t"], pb["phi"], Q, L, CONTRAST, OFFSET, DT)
        read_s = timed(lambda: READ(data), repeats)
        chi2_s = timed(lambda: jb.compute_chi_squared(PARAMS, data, SIGMA, *chi2_args), repeats)
        grad_s = timed(lambda: jb.gradient_chi2(PARAMS, data, SIGMA, *chi2_args), repeats)
        value = float(jb.compute_chi_squared(PARAMS, data, SIGMA, *chi2_args))
        strip_rows = 20 if n % 20 == 0 else 10
        grid_256, grid_512 = jax_grid(pb, strip_rows), jax_grid(pb, strip_rows, 512)
        grid_256_s = timed(lambda: grid_256(data), repeats)
        grid_512_s = timed(lambda: grid_512(data), repeats)
        c = run_c(binary, pb, workdir, repeats)

    agree = c["full"]["value"] / value - 1
    print(f"check, {n_phi} × {n}: C χ² / homodyne χ² − 1 = {agree:.1e}")
    grad_agree = gradient_agreement(c["gradient"], pb)
    print(f"check, {n_phi} × {n}: C gradient against homodyne's derivative pass: {grad_agree:.1e}")
    rows = [
        {"what": "read floor (jitted Σ data²)", "seconds": read_s},
        {"what": "homodyne compute_chi_squared", "seconds": chi2_s},
        {"what": "JAX: full grid, rows streamed", "seconds": grid_256_s},
        {"what": "JAX: the same, 512-bit vectors", "seconds": grid_512_s},
        {"what": "C: χ² from the data", "seconds": c["full"]["seconds"]},
        {"what": "C: the same, prefetching", "seconds": c["prefetch"]["seconds"]},
        {"what": "C: the arithmetic alone (no data)", "seconds": c["compute"]["seconds"]},
        {"what": "C: full grid, rows streamed", "seconds": c["grid"]["seconds"]},
        {"what": "C: Σ data² (OpenMP)", "seconds": c["read"]["seconds"]},
        {"what": "homodyne gradient_chi2", "seconds": grad_s},
        {"what": "C: its gradient, full grid", "seconds": c["gradient"]["seconds"]},
    ]
    for row in rows:
        row["over_read_floor"] = row["seconds"] / read_s
    print(f"\n{n_phi} × {n}, C with {c['threads']} threads")
    print(f"{'':36} {'ms':>7} {'× read floor':>13}")
    for row in rows:
        print(f"{row['what']:36} {1e3 * row['seconds']:>7.2f} {row['over_read_floor']:>13.2f}")
    rows.append({"what": "C χ² / homodyne χ² − 1", "value": agree, "n_phi": n_phi, "N": n})
    rows.append({"what": "C gradient against homodyne's, relative", "value": grad_agree})
    save_results("native_bound", rows, args.quick)


if __name__ == "__main__":
    main()
