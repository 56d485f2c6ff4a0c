"""The examples are runnable documentation: each must run as is."""

import functools
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@functools.cache
def run_example(path: pathlib.Path) -> subprocess.CompletedProcess:
    """The example's output, run once per test session in a fresh process (in its folder)."""
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=600, cwd=path.parent
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path):
    out = run_example(path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip()


def test_quickstart_prints_the_documented_numbers():
    out = run_example(next(p for p in EXAMPLES if p.name == "quickstart.py"))
    assert "g2[0, 0, 99] = 1.4964970819416634" in out.stdout
    assert "shape (7,)" in out.stdout
    assert "'hits': 1" in out.stdout
