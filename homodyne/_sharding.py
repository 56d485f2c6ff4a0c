"""Spreading work over all local JAX devices (jax.sharding), with no change in user code.

On one device (the usual CPU case) every function here is the identity. With several (GPUs, or
CPU devices from ``XLA_FLAGS=--xla_force_host_platform_device_count=n``):

- fits split their tiles of pairs between the devices (`Problem` sums them with `jax.shard_map`
  and `psum`), so each device holds and evaluates 1/n of the data;
- model evaluations constrain their (…, N, N) outputs to be split by rows (or by angles), and XLA
  partitions the elementwise computation accordingly;
- χ² of the functional API and its derivatives (`homodyne._chi2`) split their tiles of the (t1, t2)
  grid between the devices the same way as fits (the data replicated on each).
"""

import jax
import numpy as np
from jaxtyping import Array

from ._validate import is_traced

TILE_AXIS = "tiles"  # mesh axis along which tiles (fits) or rows (evaluations) are split


def device_count() -> int:
    return jax.local_device_count()


def mesh(n_devices: int) -> jax.sharding.Mesh:
    """A one-axis mesh over the first ``n_devices`` local devices."""
    return jax.sharding.Mesh(np.array(jax.local_devices()[:n_devices]), (TILE_AXIS,))


def shard_tiles(x: Array, n_shards: int) -> Array:
    """Place a tile-major array on the devices that will sum its tiles (no-op on one device)."""
    if n_shards == 1 or is_traced(x):
        return x
    spec = jax.sharding.PartitionSpec(TILE_AXIS)
    return jax.device_put(x, jax.sharding.NamedSharding(mesh(n_shards), spec))


def spread(x: Array) -> Array:
    """Inside jit: ask XLA to split an (…, N, N) result by rows, else by its leading axis, over the
    local devices, when that axis divides evenly (JAX requires it); otherwise leave it."""
    n = device_count()
    if n == 1:
        return x
    for axis in (x.ndim - 2, 0):
        if axis >= 0 and x.shape[axis] % n == 0:
            spec: list[str | None] = [None] * x.ndim
            spec[axis] = TILE_AXIS
            sharding = jax.sharding.NamedSharding(mesh(n), jax.sharding.PartitionSpec(*spec))
            return jax.lax.with_sharding_constraint(x, sharding)
    return x
