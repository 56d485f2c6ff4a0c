import json
import os
import pathlib
import sys

# pytest runs two worker processes (pyproject's addopts): on a GPU, neither may take most of its
# memory up front, which is JAX's default
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import shutil
import tempfile

import jax
import numpy as np
import pytest

import homodyne  # noqa: F401  (enables float64 before any test builds an array)

# Strict dtype promotion: an implicit promotion between dtypes (an int with a float, float32 with
# float64) in homodyne or in a test raises a TypePromotionError instead of converting silently.
# Python scalars stay weakly typed and combine with any array, as in user code.
jax.config.update("jax_numpy_dtype_promotion", "strict")

# One persistent compilation cache for the whole run, empty at its start and removed at its end
# (the run never reads the user's cache, nor writes to it): what one process compiled, another
# loads. Most of the suite's time is compilation, and the same fit is compiled in several
# processes: both pytest workers, and every `homodyne` command and example run in a subprocess
# (which inherit these variables; `compile_cache_env` is the command line's).
CACHE_ENV = "HOMODYNE_TESTS_COMPILE_CACHE"
if not os.environ.get(CACHE_ENV):  # the first pytest process (the workers inherit it)
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="homodyne-tests-jax-")
    _CACHE_OWNER = True
else:
    _CACHE_OWNER = False
COMPILE_CACHE = os.environ[CACHE_ENV]
os.environ["JAX_COMPILATION_CACHE_DIR"] = COMPILE_CACHE  # for subprocesses running Python
jax.config.update("jax_compilation_cache_dir", COMPILE_CACHE)


def compile_cache_env() -> dict[str, str]:
    """The environment of a `homodyne` command in a test: the run's compilation cache."""
    env = {**os.environ, "HOMODYNE_COMPILE_CACHE_DIR": COMPILE_CACHE}
    env.pop("HOMODYNE_NO_COMPILE_CACHE", None)
    return env


def pytest_unconfigure(config):
    if _CACHE_OWNER:
        shutil.rmtree(COMPILE_CACHE, ignore_errors=True)


sys.path.insert(0, str(pathlib.Path(__file__).parent))

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"
SEED_JSON = SHARED / "seed_example.json"


@pytest.fixture(scope="session")
def seed_example() -> dict:
    if not SEED_JSON.exists():
        pytest.skip(f"reference file {SEED_JSON} is not present")
    return json.loads(SEED_JSON.read_text())


def assert_spec_close(actual, expected, rtol=1e-12, atol=1e-13):
    """SPEC §2's tolerance: 1e-12 relative plus 1e-13 absolute (next to zeros of sinc)."""
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


#: files that take longest, started first: pytest's two workers take whole files in the order they
#: are collected (``--dist loadfile --no-loadscope-reorder``; xdist would otherwise start the files
#: with the most tests first), and a long file started last would leave one worker idle
LONGEST_FIRST = (
    "test_sharding.py", "test_cli.py", "test_fit.py", "test_examples.py", "test_sample.py",
)  # fmt: skip


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: a file's tests keep their order
