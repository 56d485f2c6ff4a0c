"""float64 whatever the import order, and float32 inputs never give float32 physics."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import numpy_reference as ref
import pytest
from conftest import assert_spec_close

from homodyne import HomodyneModel, LaminarFlowParams
from homodyne.core import jax_backend as jb


def _run(code: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=environment, timeout=300,
    )  # fmt: skip


def test_float64_when_jax_is_imported_first():
    out = _run(
        """
        import jax, jax.numpy as jnp
        before = jnp.zeros(1).dtype                      # jax alone: float32
        import numpy as np
        from homodyne.core import jax_backend as jb
        t = np.linspace(0, 0.1, 100)
        g2 = jb.compute_g2_scaled([19231.0, 1.5, 0.1, 0.003, 0.8, 0.0, 0.0], t, t, 0.0, 0.01, 2e6,
                                  0.5, 1.0, 0.001)
        print(before, g2.dtype, repr(float(g2[0, 0, 99])), jnp.zeros(1).dtype)
        """
    )
    assert out.returncode == 0, out.stderr
    before, dtype, value, after = out.stdout.split()
    assert (before, dtype, after) == ("float32", "float64", "float64")
    assert float(value) == 1.4964970819416634  # the reference value to the last bit


def test_opt_out_refuses_float32_instead_of_computing_it():
    out = _run(
        """
        import homodyne
        try:
            homodyne.HomodyneModel(q=0.01, dt=0.1, n_frames=4)
        except RuntimeError as error:
            print("refused:", error)
        """,
        HOMODYNE_DISABLE_X64="1",
    )
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "jax_enable_x64" in out.stdout


def test_float32_inputs_are_computed_in_float64():
    t32 = np.linspace(0, 0.1, 20, dtype=np.float32)
    p32 = np.array([19231.0, 1.5, 0.1, 0.003, 0.8, 0.0, 0.0], dtype=np.float32)
    q32, dt32 = np.float32(0.01), np.float32(0.001)
    with pytest.warns(UserWarning, match="float32 rounding"):  # said, not silent
        g2 = jb.compute_g2_scaled(p32, t32, t32, 0.0, q32, 2e6, 0.5, 1.0, dt32)
    assert g2.dtype == jnp.float64
    # exactly the float64 physics of the (float32-rounded) input values
    t64, p64 = t32.astype(np.float64), p32.astype(np.float64)
    expected = ref.g2(p64, t64, [0.0], float(q32), 2e6, 0.5, 1.0, float(dt32))
    assert_spec_close(g2, expected)
    with pytest.warns(UserWarning, match="float32"):
        model = HomodyneModel(q=q32, dt=dt32, t=jnp.asarray(t32))
    params = LaminarFlowParams.from_array(jnp.asarray(p32))
    assert model.t.dtype == jnp.float64 and params.D0.dtype == jnp.float64
    assert_spec_close(model.g2(params, 0.5, 1.0), expected)
