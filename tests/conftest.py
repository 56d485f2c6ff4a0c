import json
import os
import pathlib
import sys

# pytest runs two worker processes (pyproject's addopts): on a GPU, neither may take most of its
# memory up front, which is JAX's default
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import numpy as np
import pytest

import homodyne  # noqa: F401  (enables float64 before any test builds an array)

# Strict dtype promotion: an implicit promotion between dtypes (an int with a float, float32 with
# float64) in homodyne or in a test raises a TypePromotionError instead of converting silently.
# Python scalars stay weakly typed and combine with any array, as in user code.
jax.config.update("jax_numpy_dtype_promotion", "strict")

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
