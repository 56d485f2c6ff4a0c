"""Shared test problems (small grids keep compilation cheap) and a counter of JAX traces."""

import collections
import contextlib
import dataclasses
from collections.abc import Iterator

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    params: tuple[float, ...]
    t: np.ndarray
    phi: np.ndarray
    q: float
    L: float
    dt: float
    contrast: float | np.ndarray = 0.4
    offset: float | np.ndarray = 1.0


CASES = [
    Case(  # the documented example's physics on a shorter grid
        "seed_like",
        (19231.0, 1.5, 0.1, 0.003, 0.8, 0.0, 0.0),
        np.linspace(0, 0.1, 24),
        np.array([0.0]),
        0.01,
        2e6,
        1e-3,
        0.5,
        1.0,
    ),
    Case(  # static, negative exponent, t starting at 0 (time floor active)
        "static_negative_alpha",
        (2.5e4, -1.2, 40.0),
        np.arange(20) * 0.05,
        np.array([0.0, 90.0]),
        0.0054,
        2e6,
        0.05,
    ),
    Case(  # strong shear: the phase runs over several zeros of sinc; several angles
        "strong_shear",
        (1.0e4, -0.4, 5.0, 0.8, -0.4, 0.05, 12.0),
        np.arange(30) * 0.1,
        np.array([0.0, 30.0, 78.0, 102.0, 135.0, 200.0]),
        0.0054,
        2e6,
        0.1,
        np.array([0.2, 0.3, 0.35, 0.4, 0.45, 0.5]),
        np.array([1.0, 1.01, 0.99, 1.0, 1.02, 0.98]),
    ),
    Case(  # rates below their floors (negative offsets); grid spacing differs from dt; late start
        "floored_rates",
        (300.0, 0.7, -1700.0, 2e-3, 1.3, -0.05, -7.5),
        10.0 + np.arange(16) * 0.25,
        np.array([-45.0, 10.0, 170.0]),
        0.02,
        1.5e6,
        0.1,
    ),
    Case(  # large decay: g1 reaches its floor and the exponent its clip
        "deep_decay",
        (9.0e4, 0.5, 1.0e4, 1e-4, 0.0, 0.0, 0.0),
        np.arange(18) * 1.0,
        np.array([45.0]),
        0.1,
        2e6,
        1.0,
    ),
]

CASE_IDS = [case.name for case in CASES]


def central_difference(f, x: float, h: float) -> float:
    """Fourth-order central difference of a scalar function (truncation error O(h⁴))."""
    return (-f(x + 2 * h) + 8 * f(x + h) - 8 * f(x - h) + f(x - 2 * h)) / (12 * h)


@contextlib.contextmanager
def traces() -> Iterator[collections.Counter]:
    """Count, by function name, what JAX traces inside the ``with`` block: every jitted function
    (``jax.jit``, ``eqx.filter_jit``, and each eager ``jnp`` operation's own small jit) reports each
    trace as an event; a trace is what precedes a compilation, and a cache hit traces nothing."""
    counted: collections.Counter = collections.Counter()

    def listener(event: str, duration: float, **kwargs) -> None:
        # jax._src.dispatch.JAXPR_TRACE_EVENT; if JAX renames it, counts that should be 1 read 0
        if event == "/jax/core/compile/jaxpr_trace_duration":
            counted[kwargs.get("fun_name")] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counted
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
