"""The ``homodyne`` command, run as a user would: in a subprocess, on temporary files."""

import json
import subprocess
import sys

import numpy as np
import pytest


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "homodyne", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sim.h5"
    out = run(
        "simulate",
        path,
        "--frames",
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
    out = run("fit", simulated, "--q", 0.0054, "--frames", "3:40", "--mode", "static", "--time-origin", 0.2, "--sigma", 2e-3,
              "--out", tmp_path / "res")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "homodyne fit (static): converged" in out.stdout
    assert "step    1" in out.stdout  # progress
    summary = json.loads((tmp_path / "res" / "fit.json").read_text())
    assert summary["inputs"]["frames"] == [3, 40] and summary["inputs"]["t_first"] == 0.2
    d0 = summary["parameters"]["D0"]
    assert abs(d0["value"] - 1.2e4) < 4 * d0["error"]  # the simulate default truth
    arrays = np.load(tmp_path / "res" / "fit.npz")
    assert arrays["data"].shape == (2, 38, 38)
    pngs = sorted(p.name for p in (tmp_path / "res").glob("*.png"))
    assert pngs == ["fit_c2_phi0.png", "fit_c2_phi1.png", "fit_g2_cuts.png", "fit_rates.png"]


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
        (("simulate", "NEW", "--frames", 2), "at least 6"),
        (("fit", "SIM", "--out", "NOTHDF"), "--out must be a directory"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(simulated, tmp_path, args, message):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    mapping = {"SIM": simulated, "NOTHDF": text, "NEW": tmp_path / "new.h5"}
    out = run(*(mapping.get(a, a) if isinstance(a, str) else a for a in args))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("homodyne: error:") and message in lines[0], (
        out.stderr
    )
    assert "Traceback" not in out.stderr


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
        "fit_c2_phi2.png",
    ):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
