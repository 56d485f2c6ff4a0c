"""Memory of loading and fitting a whole file: 23 bins × N frames, one subprocess per size.

A file in the newer APS layout (float32 upper triangles, as the correlator writes them) is written
from a memory map, one map at a time; then a fresh process loads it with
`homodyne.io.load_two_time` and fits it (`homodyne.fit`, static, automatic start, σ estimated).
Memory is the process's resident set: after the imports, its peak during loading, what the loaded
dataset holds, and its peak during the fit (`getrusage` maxima). With ``--float64`` the same fit
also runs on a float64 copy of the maps, in another process, as the loader returned them before
(the copy itself is counted, as it was then), up to 4000 frames.

Run:  python benchmarks/memory.py [--quick] [--sizes 2000 4000 10000] [--float64]
      (writes benchmarks/results/memory.json)
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from _machine import save_results

N_BINS = 23
SIZES = [2000, 4000, 10000]
QUICK = [400]
FLOAT64_UP_TO = 4000  # frames: --float64 compares only up to this size
TRUTH = (1e3, -0.2, 100.0)  # D0 [Å²/s^(1+α)], α, D_offset: g1² decays over ~300 frames at t ≈ 10 s


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024**3


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux


def write_file(path: str, n: int) -> float:
    """The file of 23 bins × n frames (model + Gaussian noise 2e-3), written map by map from a
    float32 memory map; seconds taken."""
    import numpy as np

    import homodyne
    from homodyne import io

    start = time.perf_counter()
    phi = np.linspace(0.0, 352.0, N_BINS)
    model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=n, phi=0.0, time_origin=1.0)
    clean = np.asarray(model.g2(homodyne.StaticParams(*TRUTH), 0.3, 1.0)[0], dtype=np.float32)
    maps = np.lib.format.open_memmap(path + ".npy", "w+", np.float32, (N_BINS, n, n))
    rng = np.random.default_rng(0)
    for k in range(N_BINS):
        maps[k] = clean + rng.normal(scale=2e-3, size=(n, n)).astype(np.float32)
    maps.flush()
    io.write_aps_file(path, maps, q=np.full(N_BINS, 0.0054), phi=phi, frame_time=0.1)
    del maps
    os.remove(path + ".npy")
    return time.perf_counter() - start


def run_case(path: str, float64: bool) -> dict:
    import numpy as np

    import homodyne
    from homodyne import io

    row: dict = {"imports_gb": rss_gb()}
    start = time.perf_counter()
    ds = io.load_two_time(path, time_origin=1.0)
    row["load_s"] = time.perf_counter() - start
    row["load_peak_gb"] = peak_gb()
    c2 = ds.c2.astype(np.float64) if float64 else ds.c2
    row["dtype"] = str(c2.dtype)
    row["dataset_gb"] = c2.nbytes / 1024**3
    row["after_load_gb"] = rss_gb()
    model = ds.model()
    start = time.perf_counter()
    result = homodyne.fit(model, c2, spec=homodyne.FitSpec(mode="static"))
    row["fit_s"] = time.perf_counter() - start
    row["fit_peak_gb"] = peak_gb()
    row["converged"] = bool(result.converged)
    row["n_steps"] = int(result.n_steps)
    row["estimates"] = [float(x) for x in result.params.to_array()]
    row["errors"] = [float(x) for x in result.errors.to_array()]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*")
    parser.add_argument("--float64", action="store_true", help="also fit a float64 copy")
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # path, float32|float64
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], args.case[1] == "float64")))
        return
    sizes = args.sizes or (QUICK if args.quick else SIZES)
    rows = []
    header = (
        f"{'bins × frames':>14} {'dtype':>8} {'data GB':>8} {'load s':>7} {'load peak':>10} "
        f"{'fit s':>7} {'fit peak GB':>12} {'conv':>5} {'D0':>9} {'alpha':>8}"
    )
    print(header)
    with tempfile.TemporaryDirectory(dir=os.environ.get("HOMODYNE_BENCH_DIR")) as tmp:
        for n in sizes:
            path = os.path.join(tmp, f"c2_{n}.h5")
            write_s = write_file(path, n)
            # the float64 copy of 23 × 10,000² values alone would take 18 GB: smaller sizes only
            both = args.float64 and n <= FLOAT64_UP_TO
            for kind in ("float32", "float64") if both else ("float32",):
                out = subprocess.run(
                    [sys.executable, __file__, "--case", path, kind],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(f"{N_BINS} × {n} {kind}: failed ({out.returncode})\n{out.stderr[-2000:]}")
                    rows.append({"n_bins": N_BINS, "n_frames": n, "kind": kind, "failed": True})
                    continue
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row.update(
                    n_bins=N_BINS,
                    n_frames=n,
                    write_s=write_s,
                    file_gb=os.path.getsize(path) / 1024**3,
                )
                rows.append(row)
                print(
                    f"{f'{N_BINS} × {n}':>14} {row['dtype']:>8} {row['dataset_gb']:>8.2f} "
                    f"{row['load_s']:>7.1f} {row['load_peak_gb']:>10.2f} {row['fit_s']:>7.1f} "
                    f"{row['fit_peak_gb']:>12.2f} {row['converged']!s:>5} "
                    f"{row['estimates'][0]:>9.4g} {row['estimates'][1]:>8.4f}",
                    flush=True,
                )
            os.remove(path)
    save_results("memory", rows, args.quick)


if __name__ == "__main__":
    main()
