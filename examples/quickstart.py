"""The documented usage example: g2 for one angle, its gradient and the cache statistics, first
through the functional API (homodyne.core.jax_backend), then with HomodyneModel and eqx.filter_grad.

Run:  python examples/quickstart.py
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import homodyne
from homodyne.core import jax_backend as jb

# Laminar flow: D0 [Å²/s^(1+α)], alpha, D_offset [Å²/s], γ̇0 [s^-(1+β)], beta, γ̇_offset [1/s], φ0 [deg]
params = jnp.array([19231.0, 1.5, 0.1, 0.003, 0.8, 0.0, 0.0])
t = jnp.linspace(0.0, 0.1, 100)  # frame times [s]: where D(t) and γ̇(t) are evaluated
t1, t2 = jb.get_cached_meshgrid(t, t)  # ij meshgrid (a 1-D t works as well)
phi = jnp.array([0.0])  # detector angle [deg]
q, L, dt = 0.01, 2e6, 0.001  # 1/Å, Å, s (dt from configuration)
contrast, offset = 0.5, 1.0

# --- 1. the functional API ----------------------------------------------------------------------
g2 = jb.compute_g2_scaled(params, t1, t2, phi, q, L, contrast, offset, dt)
print(f"g2 shape {g2.shape}, dtype {g2.dtype}")
print(f"g2[0, 0, 99] = {float(g2[0, 0, 99]):.16f}   (diagonal {float(g2[0, 0, 0]):.16f})")

grad = jb.gradient_g2(params, t1, t2, phi, q, L, contrast, offset, dt)
print(f"gradient of sum(g2) w.r.t. the 7 parameters: shape {grad.shape}")
print(
    "  "
    + "  ".join(
        f"{n}={v:+.3e}" for n, v in zip(homodyne.LaminarFlowParams.names, grad, strict=True)
    )
)

jb.get_cached_meshgrid(t, t)  # the same grid again: served from the cache
print("meshgrid cache:", jb.get_cache_stats())

# --- 2. the same with the model object ----------------------------------------------------------
model = homodyne.HomodyneModel(q=q, dt=dt, t=t, phi=phi, L=L)
p = homodyne.LaminarFlowParams.from_array(params)
g2_model = model.g2(p, contrast, offset)
assert np.array_equal(g2_model, g2), "model and functional API disagree"
print(f"HomodyneModel gives the same g2 (max |diff| = {float(jnp.max(jnp.abs(g2_model - g2)))})")


def total_g2(p: homodyne.LaminarFlowParams) -> jax.Array:
    return jnp.sum(model.g2(p, contrast, offset))


grad_p = eqx.filter_grad(total_g2)(p)  # a LaminarFlowParams of derivatives
assert np.allclose(grad_p.to_array(), grad, rtol=1e-12)
print("eqx.filter_grad w.r.t. the typed parameters agrees:", f"d/dD0 = {float(grad_p.D0):+.6e}")

# derivatives with respect to the experiment itself: q, L, dt, the times and the angles are leaves
grad_model = eqx.filter_grad(lambda m: jnp.sum(m.g2(p, contrast, offset)))(model)
print(f"d sum(g2)/dq = {float(grad_model.q):+.6e} Å, d sum(g2)/dL = {float(grad_model.L):+.6e} 1/Å")

# many parameter sets at once
batch = homodyne.LaminarFlowParams.from_array(params * jnp.array([[1.0], [1.1], [0.9]]))
print(
    "vmapped over 3 parameter sets:", jax.vmap(lambda b: model.g2(b, contrast, offset))(batch).shape
)
