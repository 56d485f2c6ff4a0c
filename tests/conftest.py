import json
import pathlib
import sys

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
