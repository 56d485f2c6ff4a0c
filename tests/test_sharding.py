"""Several local devices (CPU devices forced by XLA_FLAGS in a subprocess) give the single-device
numbers: fits split their tiles between the devices, evaluations split their rows."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

# Two fresh processes (one and two simulated devices) that each compile fits, their gradients and
# the functional API: 1.5 minutes of the fast suite's 10 on 2 cores, so this runs with -m slow
# (and on a machine with several devices, where it matters)
pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys
import equinox as eqx
import jax, jax.numpy as jnp, numpy as np
import homodyne
import homodyne._chi2
from homodyne._fit import _build
from homodyne._problem import reduced_normal_equations
from homodyne.core import jax_backend as jb

model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=40, phi=[0.0, 40.0, 85.0, 130.0])
truth = homodyne.LaminarFlowParams(1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0)
g2 = model.g2(truth, 0.3, 1.0)
clean = np.asarray(g2)
noise = np.triu(np.random.default_rng(0).normal(scale=1e-3, size=clean.shape), 1)
data = clean + noise + np.swapaxes(noise, 1, 2)
init = homodyne.LaminarFlowParams.from_array(truth.to_array() * 1.2)
problem, u0, *_ = _build(model, data, 1e-3, init)
h, g, chi2 = jax.jit(reduced_normal_equations)(problem, u0)
tight = homodyne.FitOptions(rtol=1e-12, atol=1e-12)
fit = homodyne.fit(model, data, sigma=1e-3, init=init, options=tight)
small = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=16, phi=[0.0, 60.0])
small_data = np.asarray(small.g2(truth, 0.3, 1.0)) + 1e-3 * np.cos(np.arange(16))[None, :, None]


def d0_of_q(q):  # implicit differentiation through the solver, tiles split between devices
    moved = eqx.tree_at(lambda m: m.q, small, q)
    return homodyne.fit(moved, small_data, sigma=1e-3, init=truth, options=tight).params.D0


dd0_dq = float(jax.grad(d0_of_q)(jnp.asarray(0.0054)))
t = np.asarray(model.t)
api = jb.compute_g2_scaled(truth.to_array(), t, t, np.asarray(model.phi), 0.0054, 2e6, 0.3, 1.0, 0.1)
chi2_args = (t, t, np.asarray(model.phi), 0.0054, 2e6, 0.3, 1.0, 0.1)
api_chi2 = float(jb.compute_chi_squared(truth.to_array() * 1.01, data, 1e-3, *chi2_args))
api_grad = np.asarray(jb.gradient_chi2(truth.to_array() * 1.01, data, 1e-3, *chi2_args))


def blocks_chi2(x):  # the API's χ² in 7 × 7 blocks: 21 tiles, the last block row overlapping
    return homodyne._chi2.chi2_in_tiles(
        model.wavevector_q_squared_half_dt, model.sinc_prefactor, model.t, model.phi,
        homodyne.LaminarFlowParams.from_array(x), jnp.full(4, 0.3), jnp.full(4, 1.0),
        jnp.asarray(data), jnp.asarray(1e-3), 4 * 7 * 7,
    )


x_off = truth.to_array() * 1.01
tiles_chi2 = float(jax.jit(blocks_chi2)(x_off))
tiles_grad = np.asarray(jax.jit(jax.grad(blocks_chi2))(x_off))
lowered = jax.jit(lambda d: jb.compute_chi_squared(truth.to_array(), d, 1e-3, *chi2_args)).lower(data)
print(json.dumps({
    "devices": jax.local_device_count(),
    "g2_devices": len(g2.sharding.device_set),
    "tile_devices": len(problem.data.sharding.device_set),
    "n_tiles": problem.data.shape[0],
    "g2": clean.tolist(), "api": np.asarray(api).tolist(),
    "h": np.asarray(h).tolist(), "g": np.asarray(g).tolist(), "chi2": float(chi2),
    "params": np.asarray(fit.params.to_array()).tolist(),
    "errors": np.asarray(fit.errors.to_array()).tolist(),
    "fit_chi2": float(fit.chi2), "converged": bool(fit.converged), "dd0_dq": dd0_dq,
    "api_chi2": api_chi2, "api_grad": api_grad.tolist(),
    "tiles_chi2": tiles_chi2, "tiles_grad": tiles_grad.tolist(),
    "chi2_split": lowered.as_text().count("manual_computation"),
}))
"""


def start(devices: int) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def result(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-2000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_and_two():
    # both processes at once: each mostly compiles, on one core, so together they take about
    # the time of one
    one, two = start(1), start(2)
    return result(one), result(two)


def test_work_is_split_between_the_devices(one_and_two):
    one, two = one_and_two
    assert one["devices"] == 1 and two["devices"] == 2
    assert two["g2_devices"] == 2 and two["tile_devices"] == 2
    assert two["n_tiles"] % 2 == 0
    # χ² of the functional API: its one scan of tiles runs split (shard_map), not on one device
    assert one["chi2_split"] == 0 and two["chi2_split"] == 1


def test_two_devices_give_the_single_device_numbers(one_and_two):
    one, two = one_and_two
    # elementwise evaluations: the same to a few ulp (XLA compiles each device's part separately)
    np.testing.assert_allclose(two["g2"], one["g2"], rtol=2e-15, atol=0)
    np.testing.assert_allclose(two["api"], one["api"], rtol=2e-15, atol=0)
    # sums over tiles: the same up to the order of summation
    np.testing.assert_allclose(two["chi2"], one["chi2"], rtol=1e-13)
    np.testing.assert_allclose(
        two["g"], one["g"], rtol=1e-10, atol=1e-12 * np.max(np.abs(one["g"]))
    )
    np.testing.assert_allclose(two["h"], one["h"], rtol=1e-12)
    np.testing.assert_allclose(two["api_chi2"], one["api_chi2"], rtol=1e-13)
    scale = np.max(np.abs(one["api_grad"]))
    np.testing.assert_allclose(two["api_grad"], one["api_grad"], rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(two["tiles_chi2"], one["tiles_chi2"], rtol=1e-13)
    np.testing.assert_allclose(two["tiles_chi2"], one["api_chi2"], rtol=1e-12)
    scale = np.max(np.abs(one["tiles_grad"]))
    np.testing.assert_allclose(two["tiles_grad"], one["tiles_grad"], rtol=1e-10, atol=1e-12 * scale)
    np.testing.assert_allclose(two["tiles_grad"], one["api_grad"], rtol=1e-9, atol=1e-11 * scale)
    # the fit: the same optimum, far inside its standard errors
    assert one["converged"] and two["converged"]
    np.testing.assert_allclose(two["fit_chi2"], one["fit_chi2"], rtol=1e-12)
    delta = np.abs(np.array(two["params"]) - np.array(one["params"]))
    assert np.all(delta <= 1e-6 * np.array(one["errors"]))
    # derivatives of the estimates through the solver
    np.testing.assert_allclose(two["dd0_dq"], one["dd0_dq"], rtol=1e-8)
