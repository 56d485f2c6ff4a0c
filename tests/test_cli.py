"""The ``homodyne`` command, run as a user would: in a subprocess, on temporary files."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import COMPILE_CACHE, compile_cache_env


def run(*args, cwd=None, env=None):
    """``homodyne ARGS`` in a fresh process; without ``env``, with the test run's compilation cache
    (tests do not write into the user's cache directory)."""
    return subprocess.run(
        [sys.executable, "-m", "homodyne", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env if env is not None else compile_cache_env(),
    )


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sim.h5"
    out = run(
        "simulate",
        path,
        "--n-frames",
        40,
        "--phi",
        0,
        60,
        "--mode",
        "static",
        "--noise",
        2e-3,
        "--seed",
        3,
    )
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout
    return path


def test_info_lists_the_bins(simulated):
    out = run("info", simulated)
    assert out.returncode == 0, out.stderr
    assert "aps-new layout" in out.stdout and "dt = 0.1 s" in out.stdout
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert rows == [["1", "0.0054", "0", "40"], ["2", "0.0054", "60", "40"]]


def test_fit_writes_results_and_plots(simulated, tmp_path):
    # bytes: text mode would turn the progress line's carriage returns into newlines
    raw = subprocess.run(
        [sys.executable, "-m", "homodyne", "fit", str(simulated), "--q", "0.0054", "--frames",
         "3:40", "--mode", "static", "--time-origin", "0.2", "--sigma", "2e-3", "--out",
         str(tmp_path / "res"), "--progress"],
        capture_output=True, timeout=600, env=compile_cache_env(),
    )  # fmt: skip
    out = subprocess.CompletedProcess(
        raw.args, raw.returncode, raw.stdout.decode(), raw.stderr.decode()
    )
    assert out.returncode == 0, out.stderr
    assert "homodyne fit (static): converged" in out.stdout
    summary = json.loads((tmp_path / "res" / "fit.json").read_text())
    # progress: one updating line on stderr whose last count is the summary's
    line = out.stderr.rstrip("\n").split("\n")
    assert len(line) == 1 and line[0].startswith("\r  step    1"), out.stderr
    assert int(re.findall(r"step +(\d+)", line[0])[-1]) == summary["statistics"]["n_steps"]
    assert f"after {summary['statistics']['n_steps']} steps" in out.stdout
    assert summary["inputs"]["frames"] == [3, 40] and summary["inputs"]["time_origin"] == 0.2
    d0 = summary["parameters"]["D0"]
    assert abs(d0["value"] - 1.2e4) < 4 * d0["error"]  # the simulate default truth
    arrays = np.load(tmp_path / "res" / "fit.npz")
    assert arrays["data"].shape == (2, 38, 38)
    pngs = sorted(p.name for p in (tmp_path / "res").glob("*.png"))
    assert pngs == ["fit_c2_q0.0054_phi0.0.png", "fit_c2_q0.0054_phi60.0.png", "fit_g2_aged.png",
                    "fit_g2_cuts.png", "fit_rates.png"]  # fmt: skip


@pytest.mark.parametrize(
    "args, message",
    [
        (("fit", "/nonexistent/file.h5", "--q", 0.005), "no such file"),
        (("fit", "SIM", "--q", 0.05), "no bin at q = 0.05"),
        (("fit", "SIM", "--phi", 33), "no bin at φ = 33°"),
        (("fit", "SIM", "--frames", "30:10"), "not a window"),
        (("info", "NOTHDF"), "not an HDF5 file"),
        (("simulate", "SIM"), "exists"),
        (("simulate", "NEW", "--params", 1, 2), "needs 7 values"),
        (("simulate", "NEW", "--n-frames", 2), "at least 6"),
        (("fit", "SIM", "--out", "NOTHDF"), "--out must be a directory"),
        (("fit", "SIM", "--exclude-frames", "5-3"), "the range 5-3 runs backwards"),
        (("fit", "SIM", "--exclude-frames", "4,abc"), "got 'abc' in '4,abc'"),
        (("fit", "SIM", "--exclude-frames", "0,7"), "frame numbers start at 1"),
        (("fit", "SIM", "--mode", "static", "--exclude-frames", "2-39"), "leaves 2 of 40 frames"),
        (("fit", "SIM"), "2 bins: say which model to fit, --mode static"),
        (("fit", "SIM", "--mode", "static", "--bounds", "D0=1e3"), "NAME=LO:HI"),
        (
            ("fit", "SIM", "--mode", "static", "--bounds", "D0=1e3:x"),
            "value of D0 must be a number",
        ),
        (("fit", "SIM", "--mode", "static", "--bounds", "D1=1:2"), "unknown parameter 'D1'"),
        (("fit", "SIM", "--mode", "static", "--fixed", "beta=0"), "cannot fix ['beta']"),
        (("fit", "SIM", "--mode", "static", "--init", "D0=1e4"), "missing: alpha, D_offset"),
        (("fit", "SIM", "--mode", "static", "--max-steps", 0), "--max-steps must be at least 1"),
        (("fit", "SIM", "--mode", "static", "--time-origin", -1), "start at -1 s, before the"),
        (
            ("fit", "SIM", "--mode", "static", "--frames", "5:40", "--sample-age", -0.5),
            "start at -0.1 s",
        ),
        (("fit", "SIM", "SIM", "--exclude-frames", "3"), "--exclude-frames names one file's"),
        (("fit", "SIM", "--mode", "static", "--per-run", "D_offset"), "applies to several files"),
        (("fit", "SIM", "SIM", "--time-origin", 1, 2, 3), "one per file (2); got 3"),
        (("fit", "SIM", "SIM"), "2 files: say which model to fit"),
        (("fit", "SIM", "SIM", "--mode", "static", "--per-run", "beta"), "cannot fit ['beta']"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(simulated, tmp_path, args, message, capsys, monkeypatch):
    # the command's own main() in this process (each case fails before anything compiles; a new
    # process per case would spend its time importing JAX): the exit code and what it prints
    from homodyne._cli import main

    monkeypatch.setenv("HOMODYNE_COMPILE_CACHE_DIR", COMPILE_CACHE)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    mapping = {"SIM": simulated, "NOTHDF": text, "NEW": tmp_path / "new.h5"}
    code = main([str(mapping.get(a, a)) if isinstance(a, str) else str(a) for a in args])
    out = subprocess.CompletedProcess(args, code, *capsys.readouterr())
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("homodyne: error:") and message in lines[0], (
        out.stderr
    )
    assert "Traceback" not in out.stderr


def test_bad_input_in_a_fresh_process(simulated):
    out = run("fit", simulated)  # a real process: its exit code and its only line
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("homodyne: error: 2 bins: say which model to fit")


def test_version_and_a_closed_pipe():
    import homodyne

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"homodyne {homodyne.__version__}"
    # the reader of stdout goes away before the command writes (`homodyne info FILE | head -0`):
    # no traceback, no "Exception ignored" from the interpreter's last flush
    reader = subprocess.Popen(
        [sys.executable, "-m", "homodyne", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()
    err = reader.stderr.read()
    reader.stderr.close()
    assert reader.wait(timeout=60) in (0, 141) and err == "", err


def test_fit_options_and_an_earlier_result(simulated, tmp_path, capsys, monkeypatch):
    res = tmp_path / "res"
    # the simulated truth D0 = 1.2e4 lies above the upper bound given here
    first = run("fit", simulated, "--mode", "static", "--sigma", 2e-3, "--no-plots", "--out", res,
                "--fixed", "D_offset=50", "--bounds", "alpha=-1:0", "D0=1e2:5e3",
                "--init", "D0=3e3", "alpha=-0.5", "D_offset=50",
                "--frames", "5:40", "--sample-age", 1.0, "--max-steps", 40)  # fmt: skip
    assert first.returncode == 0, first.stderr
    summary = json.loads((res / "fit.json").read_text())
    assert summary["parameters"]["D_offset"]["value"] == 50.0
    assert summary["parameters"]["D_offset"]["error"] == 0.0
    assert summary["statistics"]["bounds"]["alpha"] == [-1.0, 0.0]
    assert summary["statistics"]["bounds"]["D0"] == [1e2, 5e3]
    assert "D_offset" not in summary["statistics"]["bounds"]  # held, not bounded
    # the bound that stopped D0 is named: summary, stderr, JSON
    assert re.search(
        r"D0 +\S+ +\S+ +\S+ +Å²/s\^\(1\+α\) +(AT|near) upper bound 5e\+03", first.stdout
    )
    assert re.search(
        r"homodyne: warning: D0 \((AT|near) upper bound 5e\+03\): the bound may have stopped",
        first.stderr,
    )
    assert "--bounds NAME=LO:HI" in first.stderr
    assert summary["statistics"]["near_bound"] == ["D0"]
    # the file's frame 1 is 1 s old, so frame 5 (the first analysed) is 1.4 s old at dt = 0.1 s
    assert summary["inputs"]["time_origin"] == pytest.approx(1.4, abs=1e-12)
    # an earlier result is never silently replaced (this process's main(): it stops before
    # loading anything) ...
    from homodyne._cli import _prepare_out, main

    monkeypatch.setenv("HOMODYNE_COMPILE_CACHE_DIR", COMPILE_CACHE)
    assert main(["fit", str(simulated), "--mode", "static", "--out", str(res)]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier result (fit.json" in err and "--overwrite" in err
    # ... and --overwrite removes every file of the earlier result once the new one is done,
    # so no plot of a bin the new fit does not have is left behind
    for name in ("fit_c2_q0.0054_phi60.0.png", "fit_rates.png", "fit_rings.json", "notes.txt"):
        (res / name).write_text("earlier")
    _prepare_out(res, overwrite=True, remove=False)  # checked before the fit: nothing removed
    assert (res / "fit.json").exists()
    _prepare_out(res, overwrite=True, remove=True)  # after it
    assert sorted(p.name for p in res.iterdir()) == ["notes.txt"]  # not ours: kept


@pytest.mark.slow  # 44 s; ring_consistency and joint rings run in test_fit's fast tests
def test_a_whole_file_of_several_rings_is_fitted_jointly(tmp_path):
    path = tmp_path / "rings.h5"
    made = run("simulate", path, "--q", 0.001, 0.0016, "--phi", 0, 90, "--n-frames", 24,
               "--mode", "static", "--params", 4e5, -0.4, 0, "--noise", 2e-3, "--seed", 5)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "4 bins × 24 frames, q = 0.001, 0.0016 1/Å" in made.stdout
    out = run("fit", path, "--mode", "static", "--sigma", 2e-3, "--out", tmp_path / "res")
    assert out.returncode == 0, out.stderr
    assert "q = 0.001 1/Å, φ = 0, 90°" in out.stdout and "q = 0.0016 1/Å, φ = 0, 90°" in out.stdout
    assert "contrast/offset at q = 0.0016 1/Å, φ = 90.0°" in out.stdout
    summary = json.loads((tmp_path / "res" / "fit.json").read_text())
    assert summary["inputs"]["q"] == [0.001, 0.001, 0.0016, 0.0016]
    d0 = summary["parameters"]["D0"]
    assert summary["statistics"]["converged"] and abs(d0["value"] - 4e5) < 4 * d0["error"]
    # each ring alone beside the joint fit: the consistency report, its JSON and its plot
    assert "consistency of 2 q rings with the joint fit" in out.stdout
    rings = json.loads((tmp_path / "res" / "fit_rings.json").read_text())
    assert [r["q"] for r in rings["rings"]] == [0.001, 0.0016]
    assert all(r["converged"] for r in rings["rings"]) and rings["chi2"] < 16
    assert abs(rings["slope"] - 2) < 4 * rings["slope_error"]  # simulated as diffusion
    assert (tmp_path / "res" / "fit_rings.png").stat().st_size > 0
    pngs = sorted(p.name for p in (tmp_path / "res").glob("fit_c2_*.png"))
    assert set(pngs) == {"fit_c2_q0.001_phi0.0.png", "fit_c2_q0.001_phi90.0.png",
                         "fit_c2_q0.0016_phi0.0.png", "fit_c2_q0.0016_phi90.0.png"}  # fmt: skip


def test_several_files_are_fitted_jointly(tmp_path, capsys, monkeypatch):
    # the same sample at two ages: 24 frames from 1 s, and 24 frames from 20 s (D_offset per
    # run); files written and the command's main() run in this process (no JAX import per step)
    import homodyne
    from homodyne._cli import main
    from homodyne.io import write_aps_file

    files = []
    for age, seed in ((1.0, 7), (20.0, 8)):
        model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=24, phi=0.0, time_origin=age)
        c2 = homodyne.simulate_c2(
            model, homodyne.StaticParams(2e4, -0.5, 1e3), noise=2e-3, seed=seed
        )
        files.append(
            write_aps_file(tmp_path / f"age{age:g}.h5", c2, q=[0.0054], phi=[0.0], frame_time=0.1)
        )
    res = tmp_path / "res"
    monkeypatch.setenv("HOMODYNE_COMPILE_CACHE_DIR", COMPILE_CACHE)
    code = main(["fit", *map(str, files), "--mode", "static", "--per-run", "D_offset",
                 "--sample-age", "1", "20", "--sigma", "2e-3", "--no-plots", "--out", str(res)])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "joint fit of 2 runs (static): converged" in out.out
    assert "D_offset[run 1]" in out.out and "t = 20–22.3 s" in out.out
    joint = json.loads((res / "fit_joint.json").read_text())
    assert joint["per_run"] == ["D_offset"] and joint["statistics"]["converged"]
    assert joint["covariance"]["names"][:4] == ["D0", "alpha", "D_offset[run 0]", "D_offset[run 1]"]
    late = json.loads((res / "fit_run1.json").read_text())
    assert late["inputs"]["time_origin"] == 20.0 and late["inputs"]["source"].endswith("age20.h5")
    d0 = late["parameters"]["D0"]
    assert abs(d0["value"] - 2e4) < 4 * d0["error"]


@pytest.mark.slow  # 33 s; the loader's masking (test_io) and masked fits (test_frame_mask) stay fast
def test_fit_masks_bad_frames_and_excludes_more(simulated, tmp_path):
    import shutil

    import h5py

    path = tmp_path / "glitch.h5"
    shutil.copy(simulated, path)
    with h5py.File(path, "r+") as f:  # frame 11 of the second bin: a detector glitch
        c2 = f["/xpcs/twotime/correlation_map/c2_00002"]
        upper = c2[()]
        upper[10, 10:] = upper[:11, 10] = np.nan
        c2[...] = upper
    out = run("fit", path, "--mode", "static", "--frames", "3:40", "--time-origin", 0.2,
              "--exclude-frames", "1,20-22",
              "--out", tmp_path / "res")  # fmt: skip
    assert out.returncode == 0, out.stderr
    notes = out.stderr.strip().splitlines()
    assert notes == [
        "homodyne: warning: 1 bad frame in the file (NaN/inf or all-zero rows) excluded: 11",
        "homodyne: note: --exclude-frames 1 outside the analysed frames 3–40: ignored",
    ], out.stderr
    assert "excluded frames: 11, 20–22 (4 of 38)" in out.stdout
    assert "frames: 4 of 38 excluded" in out.stdout and "converged" in out.stdout
    summary = json.loads((tmp_path / "res" / "fit.json").read_text())
    assert summary["inputs"]["excluded_frames"] == [11, 20, 21, 22]
    assert summary["statistics"]["frames_excluded"] == 4
    assert summary["statistics"]["dof"] == 2 * 34 * 33 // 2 - 3 - 4
    d0 = summary["parameters"]["D0"]
    assert abs(d0["value"] - 1.2e4) < 4 * d0["error"]
    arrays = np.load(tmp_path / "res" / "fit.npz")
    assert arrays["frame_mask"].sum() == 34 and np.isnan(arrays["residuals"][:, 8]).all()
    assert (tmp_path / "res" / "fit_c2_q0.0054_phi60.0.png").stat().st_size > 0


def test_simulate_reads_its_old_frame_count_option(tmp_path):
    # --frames is a window in `fit`; simulate's count is --n-frames, and its old --frames warns
    out = run("simulate", tmp_path / "new.h5", "--frames", 2)
    assert out.returncode == 2
    assert (
        "--frames N is now --n-frames N" in out.stderr
        and "--n-frames must be at least 6" in out.stderr
    )


def test_demo_runs_the_whole_path(tmp_path):
    out = run("demo", "--out", tmp_path / "demo")
    assert out.returncode == 0, out.stderr
    assert "converged" in out.stdout and f"all outputs are in {tmp_path / 'demo'}" in out.stdout
    for name in (
        "demo_twotime.h5",
        "fit.json",
        "fit.npz",
        "fit_rates.png",
        "fit_g2_cuts.png",
        "fit_g2_aged.png",
        "fit_c2_q0.0054_phi90.0.png",
    ):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name


# --- the persistent compilation cache ----------------------------------------------------------


@pytest.fixture(scope="module")
def twice(simulated, tmp_path_factory):
    """The same fit in two fresh processes sharing a new cache directory: the cache's keys after
    each run, and the keys that the second run read from the cache and missed in it."""
    tmp = tmp_path_factory.mktemp("cache")
    cache = tmp / "jax"
    # JAX logs each persistent-cache hit (with log_compiles) and miss (with explain_cache_misses)
    env = {**os.environ, "HOMODYNE_COMPILE_CACHE_DIR": str(cache), "JAX_LOG_COMPILES": "1",
           "JAX_EXPLAIN_CACHE_MISSES": "1"}  # fmt: skip
    env.pop("HOMODYNE_NO_COMPILE_CACHE", None)
    keys = []
    for i in range(2):
        out = run("fit", simulated, "--q", 0.0054, "--mode", "static", "--sigma", 2e-3,
                  "--no-plots", "--out", tmp / f"res{i}", env=env)  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        keys.append({p.name.removesuffix("-cache") for p in cache.glob("*-cache")})
    hits = set(
        re.findall(r"Persistent compilation cache hit for '.*?' with key '(.*?)'", out.stderr)
    )
    misses = set(re.findall(r"PERSISTENT COMPILATION CACHE MISS for '(.*?)'", out.stderr))
    return keys, hits, misses


def test_second_run_reads_compiled_code_from_the_cache(twice):
    keys, hits, _ = twice
    assert keys[0], "the first run wrote nothing into the cache"
    assert keys[1] == keys[0]  # the second run stored nothing new
    assert hits == keys[0]  # and read every entry back instead of compiling it


def test_second_run_compiles_nothing(twice):
    _, _, misses = twice
    assert not misses, misses
